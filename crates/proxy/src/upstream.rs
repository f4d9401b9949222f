//! Pooled connections to applications. A request to an in-mesh endpoint
//! rides an HBONE tunnel; the HTTP connection inside the tunnel is kept and
//! reused for the next request to the same endpoint, so a busy route pays
//! for one tunnel (and one connection to the app) rather than one per
//! request. HTTP/1.1 and HTTP/2 upstreams have a client each.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::Uri;
use hyper::upgrade::Upgraded;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use weft_model::config::Cluster;
use weft_model::policy::{Origination, UpstreamTls};
use weft_model::{Protocol, ProxyConfig};

use crate::hbone::{HBONE_PORT, Pool};
use crate::http::Body;
use crate::origination::Originator;
use crate::telemetry::baggage;

/// A connection to an application: through a tunnel, direct, or over TLS
/// this proxy originated.
pub enum Conn {
    Tunnel(Upgraded),
    Tcp(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Conn::Tunnel(_) => "Conn::Tunnel",
            Conn::Tcp(_) => "Conn::Tcp",
            Conn::Tls(_) => "Conn::Tls",
        })
    }
}

/// Calls `$f` on whichever stream a [`Conn`] holds.
macro_rules! each_conn {
    ($conn:expr, $s:ident => $f:expr) => {
        match $conn {
            Conn::Tunnel($s) => $f,
            Conn::Tcp($s) => $f,
            Conn::Tls($s) => {
                let $s = &mut **$s;
                $f
            }
        }
    };
}

impl Connection for Conn {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        each_conn!(self.get_mut(), t => Pin::new(t).poll_read(cx, buf))
    }
}

impl hyper::rt::Write for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        each_conn!(self.get_mut(), t => Pin::new(t).poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each_conn!(self.get_mut(), t => Pin::new(t).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        each_conn!(self.get_mut(), t => Pin::new(t).poll_shutdown(cx))
    }
}

/// Opens connections for the pooled clients: the URI's authority is the
/// endpoint `ip:port`. A mesh connector asks the current configuration
/// whether the endpoint is in the mesh (and as whom); an originating one
/// speaks TLS with its cluster's settings.
#[derive(Clone, Debug)]
pub struct Connector {
    pool: Arc<Pool>,
    config: Arc<ArcSwap<ProxyConfig>>,
    originate: Option<Originate>,
    connect_timeout: Duration,
}

/// Istio's default `connectTimeout`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What an originating connector needs: the settings, and the cluster's
/// host and protocol (for SNI and ALPN).
#[derive(Clone, Debug)]
struct Originate {
    originator: Arc<Originator>,
    settings: Origination,
    host: String,
    protocol: Protocol,
}

impl Connector {
    fn identity(&self, addr: SocketAddr) -> Option<String> {
        self.config.load().identities.get(&addr).cloned()
    }

    async fn open(self, uri: Uri) -> std::io::Result<Conn> {
        let addr: SocketAddr = uri
            .authority()
            .and_then(|a| a.as_str().parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("endpoint {uri} is not ip:port")))?;
        if let Some(o) = &self.originate {
            let tls = o
                .originator
                .connect(&o.settings, o.protocol, &o.host, addr)
                .await?;
            return Ok(Conn::Tls(Box::new(TokioIo::new(tls))));
        }
        match self.identity(addr) {
            Some(identity) => {
                let proxy = SocketAddr::new(addr.ip(), HBONE_PORT);
                let baggage = baggage(&self.config.load().workload);
                let tunnel = self
                    .pool
                    .connect(proxy, &identity, addr, &baggage)
                    .await
                    .map_err(std::io::Error::other)?;
                Ok(Conn::Tunnel(tunnel))
            }
            None => {
                let tcp = TcpStream::connect(addr).await?;
                let _ = tcp.set_nodelay(true);
                Ok(Conn::Tcp(TokioIo::new(tcp)))
            }
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = Conn;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Conn, std::io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let limit = this.connect_timeout;
            tokio::time::timeout(limit, this.open(uri))
                .await
                .unwrap_or_else(|_| {
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("connect timeout after {limit:?}"),
                    ))
                })
        })
    }
}

/// A pooled HTTP client to applications.
pub type UpstreamClient = Client<Connector, Body>;

/// The pooled clients of one proxy.
#[derive(Debug)]
pub struct Clients {
    pub http1: UpstreamClient,
    pub http2: UpstreamClient,
    /// ALLOW_ANY: hosts outside the registry, by name or address.
    pub passthrough: Client<HttpConnector, Body>,
    pub originator: Arc<Originator>,
    /// Clusters with TLS origination or connection timeouts have clients
    /// (and pools) of their own, rebuilt when their settings change.
    dedicated: RwLock<HashMap<String, (ClientSettings, UpstreamClient)>>,
    mesh: Connector,
}

impl Clients {
    pub fn new(pool: Arc<Pool>, config: Arc<ArcSwap<ProxyConfig>>) -> Clients {
        let connector = Connector {
            pool,
            config,
            originate: None,
            connect_timeout: CONNECT_TIMEOUT,
        };
        let mut direct = HttpConnector::new();
        direct.set_nodelay(true);
        direct.set_connect_timeout(Some(CONNECT_TIMEOUT));
        Clients {
            http1: client(connector.clone(), false, None),
            http2: client(connector.clone(), true, None),
            passthrough: Client::builder(TokioExecutor::new()).build(direct),
            originator: Arc::new(Originator::default()),
            dedicated: RwLock::new(HashMap::new()),
            mesh: connector,
        }
    }

    /// The client for requests to `cluster`: the shared ones, or one of
    /// the cluster's own when it originates TLS or sets connection
    /// timeouts (a pool is configured as a whole).
    pub fn for_cluster(&self, cluster: &Cluster) -> UpstreamClient {
        let h2 = matches!(cluster.protocol, Protocol::Http2 | Protocol::Grpc);
        let pool = &cluster.policy.pool;
        let settings = ClientSettings {
            tls: cluster.policy.tls.clone(),
            connect_timeout: pool.connect_timeout,
            idle_timeout: pool.idle_timeout,
            no_reuse: pool.max_requests_per_connection == Some(1),
        };
        if settings == ClientSettings::default() {
            return if h2 { &self.http2 } else { &self.http1 }.clone();
        }
        if let Some((s, c)) = self
            .dedicated
            .read()
            .ok()
            .and_then(|m| m.get(&cluster.name).cloned())
        {
            if s == settings {
                return c;
            }
        }
        let originate = match &settings.tls {
            UpstreamTls::Originate(o) => Some(Originate {
                originator: self.originator.clone(),
                settings: o.clone(),
                host: cluster.host.clone(),
                protocol: cluster.protocol,
            }),
            _ => None,
        };
        let connector = Connector {
            originate,
            connect_timeout: settings.connect_timeout.unwrap_or(CONNECT_TIMEOUT),
            ..self.mesh.clone()
        };
        let c = client(connector, h2, Some(&settings));
        if let Ok(mut m) = self.dedicated.write() {
            m.insert(cluster.name.clone(), (settings, c.clone()));
        }
        c
    }
}

/// What makes a cluster's client its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ClientSettings {
    tls: UpstreamTls,
    connect_timeout: Option<Duration>,
    idle_timeout: Option<Duration>,
    /// `maxRequestsPerConnection: 1`: no connection is reused.
    no_reuse: bool,
}

fn client(connector: Connector, h2: bool, settings: Option<&ClientSettings>) -> UpstreamClient {
    let mut b = Client::builder(TokioExecutor::new());
    b.http2_only(h2);
    if let Some(idle) = settings.and_then(|s| s.idle_timeout) {
        b.pool_idle_timeout(idle);
    }
    if settings.is_some_and(|s| s.no_reuse) {
        b.pool_max_idle_per_host(0);
    }
    b.build(connector)
}
