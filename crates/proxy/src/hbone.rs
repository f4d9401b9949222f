//! HBONE: mutual TLS to the destination proxy's port 15008 carrying HTTP/2
//! CONNECT streams whose authority is the destination `ip:port`, as Istio
//! ambient does. One TLS connection per (destination proxy, identity) is
//! shared by all streams to it.

use std::net::{IpAddr, SocketAddr};
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
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Mutex;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weft_identity::tls::{self, PeerPolicy};
use weft_identity::{CertStore, SpiffeId};

use crate::gateway::{self, Gateway};
use crate::http::{Body, empty, full};
use crate::inbound::{Inbound, Refused};
use crate::telemetry::PeerMeta;

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
    conns: Mutex<crate::FastMap<PoolKey, SendRequest<Empty<Bytes>>>>,
    /// The workload's address, which connections leave from when it is
    /// this host's: the peer then sees it as `source.ip`, as a pod's
    /// peers see the pod's address.
    source: Option<IpAddr>,
}

/// A destination proxy and the identity it must prove.
type PoolKey = (SocketAddr, String);

impl Pool {
    pub fn new(store: Arc<CertStore>, policy: PeerPolicy) -> Pool {
        Pool {
            store,
            policy,
            conns: Mutex::default(),
            source: None,
        }
    }

    /// Connections leave from `address` (the workload's) where they can.
    pub fn from_address(self, address: IpAddr) -> Pool {
        Pool {
            source: Some(address),
            ..self
        }
    }

    /// A tunnel to `target` through the proxy at `proxy`, which must prove
    /// it is `identity`.
    /// `baggage` tells the destination proxy about this workload, for
    /// its metrics.
    pub async fn connect(
        &self,
        proxy: SocketAddr,
        identity: &str,
        target: SocketAddr,
        baggage: &str,
    ) -> Result<Upgraded, HboneError> {
        let mut sender = self.sender(proxy, identity).await?;
        let req = Request::builder()
            .method(Method::CONNECT)
            .uri(target.to_string())
            .header("baggage", baggage)
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
        let tcp = connect_from(self.source, proxy)
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

/// Connects to `to` from address `from` when this host has it; from
/// whatever address the route gives otherwise.
async fn connect_from(from: Option<IpAddr>, to: SocketAddr) -> std::io::Result<TcpStream> {
    let Some(ip) = from.filter(|ip| ip.is_ipv4() == to.is_ipv4() && !ip.is_unspecified()) else {
        return TcpStream::connect(to).await;
    };
    let socket = if ip.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if socket.bind(SocketAddr::new(ip, 0)).is_err() {
        return TcpStream::connect(to).await;
    }
    match socket.connect(to).await {
        Ok(tcp) => Ok(tcp),
        // The address cannot reach this destination (a loopback address
        // toward another host): leave from the route's.
        Err(e)
            if e.kind() == std::io::ErrorKind::InvalidInput
                || e.raw_os_error() == Some(nix::libc::ENETUNREACH)
                || e.raw_os_error() == Some(nix::libc::EADDRNOTAVAIL) =>
        {
            TcpStream::connect(to).await
        }
        Err(e) => Err(e),
    }
}

/// What the streams of inbound HBONE reach.
#[derive(Debug, Clone)]
pub enum Tunnels {
    /// A sidecar's workload: its application's ports.
    Workload(Arc<Inbound>),
    /// An egress gateway: the ports of its Gateway servers.
    Gateway(Arc<Gateway>),
}

/// Serves inbound HBONE on `listener`: only peers with a valid mesh
/// certificate get a TLS session, and only CONNECTs to this workload's own
/// ports are opened; the stream inside is served by `inbound`.
pub async fn serve(
    listener: TcpListener,
    store: Arc<CertStore>,
    policy: PeerPolicy,
    inbound: Tunnels,
) -> Result<(), HboneError> {
    let config =
        tls::server_config(store, policy, &[b"h2"]).map_err(|e| HboneError::Tls(e.to_string()))?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    crate::http::serve_each(listener, move |tcp, downstream| {
        let acceptor = acceptor.clone();
        let inbound = inbound.clone();
        async move {
            // A peer without a valid certificate ends here.
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(e) => {
                    tracing::debug!("HBONE from {downstream} refused at the handshake: {e}");
                    return;
                }
            };
            let peer = tls::peer_identity(tls.get_ref().1).map(|p| p.to_string());
            let service =
                service_fn(move |req| tunnel(req, peer.clone(), inbound.clone(), downstream));
            let _ = server_h2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        }
    })
    .await;
    Ok(())
}

async fn tunnel(
    req: Request<hyper::body::Incoming>,
    peer: Option<String>,
    tunnels: Tunnels,
    downstream: SocketAddr,
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
    let inbound = match tunnels {
        Tunnels::Workload(inbound) => inbound,
        Tunnels::Gateway(gateway) => {
            if !gateway.serves(target) {
                let e = Refused::NotServed(target);
                return Ok(full(StatusCode::FORBIDDEN, format!("{e}\n")));
            }
            tokio::spawn(async move {
                if let Ok(up) = hyper::upgrade::on(req).await {
                    let from = crate::gateway::Client {
                        addr: downstream,
                        principal: peer,
                    };
                    gateway::connection(&gateway, TokioIo::new(up), from, target.port()).await;
                }
            });
            return Ok(Response::new(empty()));
        }
    };
    let accepted = match inbound.accept(target, peer.as_deref(), downstream).await {
        Ok(a) => a,
        Err(e @ (Refused::NotServed(_) | Refused::Denied(_))) => {
            return Ok(full(StatusCode::FORBIDDEN, format!("{e}\n")));
        }
        Err(e @ Refused::App { .. }) => {
            return Ok(full(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")));
        }
    };
    let baggage = req
        .headers()
        .get("baggage")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let peer = PeerMeta::new(peer, baggage.as_deref());
    tokio::spawn(async move {
        if let Ok(up) = hyper::upgrade::on(req).await {
            inbound
                .serve(accepted, TokioIo::new(up), target, peer, downstream)
                .await;
        }
    });
    Ok(Response::new(empty()))
}
