//! HBONE: mutual TLS to the destination proxy's port 15008 carrying HTTP/2
//! CONNECT streams whose authority is the destination `ip:port`, as Istio
//! ambient does. One TLS connection per (destination proxy, identity) is
//! shared by all streams to it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::client::conn::http2::SendRequest;
use hyper::server::conn::http2 as server_h2;
use hyper::service::service_fn;
use hyper::upgrade::Upgraded;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls_pki_types::ServerName;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weft_identity::tls::{self, PeerPolicy};
use weft_identity::{CertStore, SpiffeId};

use crate::http::{Body, empty, full};
use crate::metrics::{Labels, Metrics};

/// The port HBONE listens on.
pub const HBONE_PORT: u16 = 15008;

#[derive(Debug, thiserror::Error)]
pub enum HboneError {
    #[error("connect to {addr}: {cause}")]
    Connect {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error(
        "mTLS handshake with {addr}: {cause} (is the peer a mesh proxy with a certificate from this mesh's CA?)"
    )]
    Handshake {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("HTTP/2 with {addr}: {cause}")]
    H2 {
        addr: SocketAddr,
        cause: hyper::Error,
    },
    #[error("the destination proxy refused the tunnel: {0}")]
    Refused(StatusCode),
    #[error("invalid identity {0:?}")]
    Identity(String),
    #[error("TLS configuration: {0}")]
    Tls(String),
}

/// Pooled HBONE connections to other proxies.
#[derive(Debug)]
pub struct Pool {
    store: Arc<CertStore>,
    policy: PeerPolicy,
    /// Connection setup takes this lock; requests on an established
    /// connection only clone its sender.
    conns: Mutex<HashMap<PoolKey, SendRequest<Empty<Bytes>>>>,
}

/// A destination proxy and the identity it must prove.
type PoolKey = (SocketAddr, String);

impl Pool {
    pub fn new(store: Arc<CertStore>, policy: PeerPolicy) -> Pool {
        Pool {
            store,
            policy,
            conns: Mutex::new(HashMap::new()),
        }
    }

    /// A tunnel to `target` through the proxy at `proxy`, which must prove
    /// it is `identity`.
    pub async fn connect(
        &self,
        proxy: SocketAddr,
        identity: &str,
        target: SocketAddr,
    ) -> Result<Upgraded, HboneError> {
        let mut sender = self.sender(proxy, identity).await?;
        let req = Request::builder()
            .method(Method::CONNECT)
            .uri(target.to_string())
            .body(Empty::new())
            .map_err(|e| HboneError::Tls(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|cause| HboneError::H2 { addr: proxy, cause })?;
        if resp.status() != StatusCode::OK {
            return Err(HboneError::Refused(resp.status()));
        }
        hyper::upgrade::on(resp)
            .await
            .map_err(|cause| HboneError::H2 { addr: proxy, cause })
    }

    async fn sender(
        &self,
        proxy: SocketAddr,
        identity: &str,
    ) -> Result<SendRequest<Empty<Bytes>>, HboneError> {
        let key = (proxy, identity.to_string());
        let mut conns = self.conns.lock().await;
        if let Some(s) = conns.get(&key) {
            if !s.is_closed() {
                return Ok(s.clone());
            }
        }
        let expected: SpiffeId = identity
            .parse()
            .map_err(|_| HboneError::Identity(identity.into()))?;
        let mut policy = self.policy.clone();
        policy.expected = vec![expected];
        let config = tls::client_config(self.store.clone(), policy, &[b"h2"])
            .map_err(|e| HboneError::Tls(e.to_string()))?;
        let tcp = TcpStream::connect(proxy)
            .await
            .map_err(|cause| HboneError::Connect { addr: proxy, cause })?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from("hbone").map_err(|e| HboneError::Tls(e.to_string()))?;
        let tls = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|cause| HboneError::Handshake { addr: proxy, cause })?;
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|cause| HboneError::H2 { addr: proxy, cause })?;
        tokio::spawn(conn);
        conns.insert(key, sender.clone());
        Ok(sender)
    }
}

/// Serves inbound HBONE on `listener`: only peers with a valid mesh
/// certificate get a TLS session, and only CONNECTs to `allowed` targets
/// (this workload's ports) are opened.
pub async fn serve(
    listener: TcpListener,
    store: Arc<CertStore>,
    policy: PeerPolicy,
    allowed: Arc<dyn Fn(SocketAddr) -> bool + Send + Sync>,
    telemetry: Inbound,
) -> Result<(), HboneError> {
    let config =
        tls::server_config(store, policy, &[b"h2"]).map_err(|e| HboneError::Tls(e.to_string()))?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let allowed = allowed.clone();
        let telemetry = telemetry.clone();
        tokio::spawn(async move {
            let _ = tcp.set_nodelay(true);
            // A peer without a valid certificate ends here.
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let peer = tls::peer_identity(tls.get_ref().1);
            let service = service_fn(move |req| {
                tunnel(req, peer.clone(), allowed.clone(), telemetry.clone())
            });
            let _ = server_h2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

/// Inbound telemetry: the metrics and how to label a peer's connection.
#[derive(Clone)]
pub struct Inbound {
    pub metrics: Arc<Metrics>,
    pub labels: LabelPeer,
}

/// Labels for a connection from a peer (its SPIFFE ID, when it has one).
pub type LabelPeer = Arc<dyn Fn(Option<&str>) -> Labels + Send + Sync>;

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inbound")
    }
}

async fn tunnel(
    req: Request<hyper::body::Incoming>,
    peer: Option<SpiffeId>,
    allowed: Arc<dyn Fn(SocketAddr) -> bool + Send + Sync>,
    telemetry: Inbound,
) -> Result<Response<Body>, hyper::Error> {
    if req.method() != Method::CONNECT {
        return Ok(full(
            StatusCode::METHOD_NOT_ALLOWED,
            "HBONE accepts CONNECT only\n",
        ));
    }
    let Some(target) = req
        .uri()
        .authority()
        .and_then(|a| a.as_str().parse::<SocketAddr>().ok())
    else {
        return Ok(full(
            StatusCode::BAD_REQUEST,
            "CONNECT authority must be ip:port\n",
        ));
    };
    if !allowed(target) {
        return Ok(full(
            StatusCode::FORBIDDEN,
            format!("{target} is not served by this workload\n"),
        ));
    }
    let upstream = match TcpStream::connect(target).await {
        Ok(s) => s,
        Err(e) => {
            return Ok(full(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("connect {target}: {e}\n"),
            ));
        }
    };
    let _ = upstream.set_nodelay(true);
    let labels = (telemetry.labels)(peer.map(|p| p.to_string()).as_deref());
    telemetry.metrics.tcp_opened(&labels);
    tokio::spawn(async move {
        let (mut sent, mut received) = (0, 0);
        if let Ok(up) = hyper::upgrade::on(req).await {
            let mut up = TokioIo::new(up);
            let mut upstream = upstream;
            if let Ok((to_app, to_peer)) =
                tokio::io::copy_bidirectional(&mut up, &mut upstream).await
            {
                (sent, received) = (to_peer, to_app);
            }
        }
        telemetry.metrics.tcp_closed(&labels, sent, received);
    });
    Ok(Response::new(empty()))
}
