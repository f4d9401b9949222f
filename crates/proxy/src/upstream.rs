//! Pooled connections to applications. A request to an in-mesh endpoint
//! rides an HBONE tunnel; the HTTP connection inside the tunnel is kept and
//! reused for the next request to the same endpoint, so a busy route pays
//! for one tunnel (and one connection to the app) rather than one per
//! request. HTTP/1.1 and HTTP/2 upstreams have a client each.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper::upgrade::Upgraded;
use hyper::{Request, Response, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{
    Connected, Connection, HttpConnector, capture_connection,
};
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
/// this proxy originated; counting its requests when its cluster limits
/// them (`maxRequestsPerConnection`).
pub struct Conn {
    stream: Stream,
    counted: bool,
}

enum Stream {
    Tunnel(Upgraded),
    Tcp(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.stream {
            Stream::Tunnel(_) => "Conn::Tunnel",
            Stream::Tcp(_) => "Conn::Tcp",
            Stream::Tls(_) => "Conn::Tls",
        })
    }
}

/// Calls `$f` on whichever stream a [`Conn`] holds.
macro_rules! each_conn {
    ($conn:expr, $s:ident => $f:expr) => {
        match &mut $conn.stream {
            Stream::Tunnel($s) => $f,
            Stream::Tcp($s) => $f,
            Stream::Tls($s) => {
                let $s = &mut **$s;
                $f
            }
        }
    };
}

/// How many requests a pooled connection has carried; in the extensions of
/// each of its responses.
#[derive(Debug, Clone, Default)]
struct Uses(Arc<AtomicU32>);

impl Connection for Conn {
    fn connected(&self) -> Connected {
        // Called once per connection: each gets its own count.
        if self.counted {
            Connected::new().extra(Uses::default())
        } else {
            Connected::new()
        }
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
    /// `maxRequestsPerConnection` above 1: connections count their requests.
    count_uses: bool,
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
        self.open_addr(addr).await
    }

    /// A connection to endpoint `addr` within the connect timeout.
    async fn open_addr(self, addr: SocketAddr) -> std::io::Result<Conn> {
        let limit = self.connect_timeout;
        tokio::time::timeout(limit, self.open_now(addr))
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connect timeout after {limit:?}"),
                ))
            })
    }

    fn conn(&self, stream: Stream) -> Conn {
        Conn {
            stream,
            counted: self.count_uses,
        }
    }

    async fn open_now(self, addr: SocketAddr) -> std::io::Result<Conn> {
        if let Some(o) = &self.originate {
            let tls = o
                .originator
                .connect(&o.settings, o.protocol, &o.host, addr)
                .await?;
            return Ok(self.conn(Stream::Tls(Box::new(TokioIo::new(tls)))));
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
                Ok(self.conn(Stream::Tunnel(tunnel)))
            }
            None => {
                let tcp = TcpStream::connect(addr).await?;
                let _ = tcp.set_nodelay(true);
                Ok(self.conn(Stream::Tcp(TokioIo::new(tcp))))
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
        Box::pin(self.clone().open(uri))
    }
}

/// A pooled HTTP client to applications.
#[derive(Debug, Clone)]
pub enum UpstreamClient {
    /// hyper-util's pool, keyed by the URI's authority: the endpoint; and
    /// how many requests a connection may carry, when limited above 1.
    Http1(Arc<Client<Connector, Body>>, Option<u32>),
    /// One multiplexed connection per endpoint, so that requests keep
    /// their own `:authority` (the service's host, not the endpoint).
    Http2(Arc<H2Pool>),
}

/// Why a request got no response.
pub type SendError = Box<dyn std::error::Error + Send + Sync>;

/// The largest response head weft's HTTP/2 clients take, as Envoy's
/// default `max_response_headers_kb` (60 KiB); a larger one resets the
/// stream (LR).
pub const MAX_RESPONSE_HEADERS: u32 = 60 * 1024;

/// Envoy's status and response flag for a request that failed on an open
/// connection before its response began: UPE (502) when the upstream's
/// response could not be parsed, UR when the upstream reset the HTTP/2
/// stream, LR when weft's own codec reset it (a response head over
/// [`MAX_RESPONSE_HEADERS`], a malformed frame), UC when the connection
/// ended.
pub fn after_connected(e: &(dyn std::error::Error + 'static)) -> (http::StatusCode, &'static str) {
    let mut cause = Some(e);
    while let Some(err) = cause {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            if h2.is_reset() {
                let flag = if h2.is_remote() { "UR" } else { "LR" };
                return (http::StatusCode::SERVICE_UNAVAILABLE, flag);
            }
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_status() || h.is_parse_too_large() {
                return (http::StatusCode::BAD_GATEWAY, "UPE");
            }
        }
        cause = err.source();
    }
    (http::StatusCode::SERVICE_UNAVAILABLE, "UC")
}

/// Whether a request failed before its connection was up (Envoy's UF),
/// rather than on an open connection that ended (UC).
pub fn before_connected(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(e) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
        return e.is_connect();
    }
    // H2Pool: a connect or handshake error is an io::Error or comes from
    // the handshake; a request on an open connection fails as hyper's.
    e.downcast_ref::<hyper::Error>().is_none()
}

impl UpstreamClient {
    /// Sends `req` to endpoint `addr`; the request's Host header names the
    /// service, its URI only the path.
    pub async fn request(
        &self,
        addr: SocketAddr,
        mut req: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/".to_string(), |p| p.to_string());
        match self {
            UpstreamClient::Http1(client, limit) => {
                *req.uri_mut() = format!("http://{addr}{path}").parse()?;
                *req.version_mut() = http::Version::HTTP_11;
                let Some(limit) = limit else {
                    return Ok(client.request(req).await?);
                };
                let captured = capture_connection(&mut req);
                let resp = client.request(req).await?;
                let uses = resp
                    .extensions()
                    .get::<Uses>()
                    .map(|u| u.0.fetch_add(1, Ordering::Relaxed) + 1);
                if uses.is_some_and(|n| n >= *limit) {
                    // Not pooled again once this response is done.
                    if let Some(c) = captured.connection_metadata().as_ref() {
                        c.poison();
                    }
                }
                Ok(resp)
            }
            UpstreamClient::Http2(pool) => {
                // HTTP/2 carries the Host as :authority.
                let authority = match req.headers_mut().remove(hyper::header::HOST) {
                    Some(h) => h.to_str()?.to_string(),
                    None => addr.to_string(),
                };
                *req.uri_mut() = format!("http://{authority}{path}").parse()?;
                *req.version_mut() = http::Version::HTTP_2;
                pool.send(addr, req).await
            }
        }
    }
}

/// HTTP/2 connections to endpoints, one each, opened by `connector`.
#[derive(Debug)]
pub struct H2Pool {
    connector: Connector,
    /// `maxRequestsPerConnection`: how many requests a connection takes.
    max_requests: Option<u32>,
    /// What `Pooled::last_used` counts from.
    epoch: std::time::Instant,
    /// Each endpoint's connection.
    conns: RwLock<HashMap<SocketAddr, Pooled>>,
}

/// A pooled HTTP/2 connection, the requests it has taken and when it last
/// took one (milliseconds from the pool's epoch).
#[derive(Debug, Clone)]
struct Pooled {
    sender: SendRequest<Body>,
    uses: Arc<AtomicU32>,
    last_used: Arc<std::sync::atomic::AtomicU64>,
}

impl H2Pool {
    /// A pool; with an idle timeout (`idleTimeout`), a task drops the
    /// pool's hold on connections unused that long, which then close once
    /// their streams are done, for as long as the pool lives.
    fn start(
        connector: Connector,
        max_requests: Option<u32>,
        idle_timeout: Option<Duration>,
    ) -> Arc<H2Pool> {
        let pool = Arc::new(H2Pool {
            connector,
            max_requests,
            epoch: std::time::Instant::now(),
            conns: RwLock::default(),
        });
        if let (Some(idle), Ok(runtime)) = (idle_timeout, tokio::runtime::Handle::try_current()) {
            let weak = Arc::downgrade(&pool);
            runtime.spawn(async move {
                let mut tick = tokio::time::interval((idle / 2).max(Duration::from_millis(10)));
                loop {
                    tick.tick().await;
                    let Some(pool) = weak.upgrade() else { return };
                    pool.close_idle(idle);
                }
            });
        }
        pool
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Drops the pool's hold on connections unused for `idle`.
    fn close_idle(&self, idle: Duration) {
        let now = self.now_ms();
        let idle = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        if let Ok(mut c) = self.conns.write() {
            c.retain(|_, p| now.saturating_sub(p.last_used.load(Ordering::Relaxed)) < idle);
        }
    }

    async fn send(
        &self,
        addr: SocketAddr,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        let limit = self.max_requests;
        let pooled = self
            .conns
            .read()
            .ok()
            .and_then(|c| c.get(&addr).filter(|p| !p.sender.is_closed()).cloned());
        let mut sender = None;
        if let Some(p) = pooled {
            p.last_used.store(self.now_ms(), Ordering::Relaxed);
            let n = p.uses.fetch_add(1, Ordering::Relaxed) + 1;
            if limit.is_none_or(|l| n <= l) {
                sender = Some(p.sender);
            }
            if limit.is_some_and(|l| n >= l) {
                // Its last request: the next one opens a new connection.
                if let Ok(mut c) = self.conns.write() {
                    if c.get(&addr).is_some_and(|q| Arc::ptr_eq(&q.uses, &p.uses)) {
                        c.remove(&addr);
                    }
                }
            }
        }
        if sender.is_none() {
            let io = self.connector.clone().open_addr(addr).await?;
            let (s, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .max_header_list_size(MAX_RESPONSE_HEADERS)
                .handshake(io)
                .await
                // Not connected yet: a connect failure, not a reset.
                .map_err(std::io::Error::other)?;
            tokio::spawn(conn);
            if limit != Some(1) {
                if let Ok(mut c) = self.conns.write() {
                    c.insert(
                        addr,
                        Pooled {
                            sender: s.clone(),
                            uses: Arc::new(AtomicU32::new(1)),
                            last_used: Arc::new(self.now_ms().into()),
                        },
                    );
                }
            }
            sender = Some(s);
        }
        let Some(mut sender) = sender else {
            return Err("no connection".into());
        };
        sender.ready().await?;
        Ok(sender.send_request(req).await?)
    }
}

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
    pub fn new(
        pool: Arc<Pool>,
        config: Arc<ArcSwap<ProxyConfig>>,
        originator: Originator,
    ) -> Clients {
        let connector = Connector {
            pool,
            config,
            originate: None,
            connect_timeout: CONNECT_TIMEOUT,
            count_uses: false,
        };
        let mut direct = HttpConnector::new();
        direct.set_nodelay(true);
        direct.set_connect_timeout(Some(CONNECT_TIMEOUT));
        Clients {
            http1: client(connector.clone(), false, None),
            http2: client(connector.clone(), true, None),
            passthrough: Client::builder(TokioExecutor::new()).build(direct),
            originator: Arc::new(originator),
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
            max_requests: pool.max_requests_per_connection,
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
    /// `maxRequestsPerConnection`: 1 reuses no connection.
    max_requests: Option<u32>,
}

fn client(connector: Connector, h2: bool, settings: Option<&ClientSettings>) -> UpstreamClient {
    let max_requests = settings.and_then(|s| s.max_requests);
    if h2 {
        let idle = settings.and_then(|s| s.idle_timeout);
        return UpstreamClient::Http2(H2Pool::start(connector, max_requests, idle));
    }
    let mut b = Client::builder(TokioExecutor::new());
    if let Some(idle) = settings.and_then(|s| s.idle_timeout) {
        b.pool_idle_timeout(idle);
    }
    if max_requests == Some(1) {
        b.pool_max_idle_per_host(0);
    }
    let counted = max_requests.filter(|&n| n > 1);
    let connector = Connector {
        count_uses: counted.is_some(),
        ..connector
    };
    UpstreamClient::Http1(Arc::new(b.build(connector)), counted)
}
