//! Pooled connections to applications. A request to an in-mesh endpoint
//! rides an HBONE tunnel; the HTTP connection inside the tunnel is kept and
//! reused for the next request to the same endpoint, so a busy route pays
//! for one tunnel (and one connection to the app) rather than one per
//! request. HTTP/1.1 and HTTP/2 upstreams have a client each.
//!
//! An HTTP/1.1 connection in use is driven by the task that serves the
//! downstream connection whose request it carries ([`serving`]), so a
//! request and its response cross no other task on their way through the
//! proxy; between requests it waits, unpolled, in its pool.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2::SendRequest};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use weft_model::config::Cluster;
use weft_model::policy::{Origination, UpstreamTls};
use weft_model::{Protocol, ProxyConfig};

use crate::hbone::{HBONE_PORT, Pool, Tunnel};
use crate::http::Body;
use crate::origination::Originator;
use crate::telemetry::baggage;

/// A connection to an application: through a tunnel, direct, or over TLS
/// this proxy originated.
pub enum Conn {
    Tunnel(TokioIo<Tunnel>),
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

    async fn open_now(self, addr: SocketAddr) -> std::io::Result<Conn> {
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
                Ok(Conn::Tunnel(TokioIo::new(tunnel)))
            }
            None => {
                let tcp = TcpStream::connect(addr).await?;
                let _ = tcp.set_nodelay(true);
                Ok(Conn::Tcp(TokioIo::new(tcp)))
            }
        }
    }
}

/// A pooled HTTP client to applications.
#[derive(Debug, Clone)]
pub enum UpstreamClient {
    /// Idle connections per endpoint, each carrying one request at a time.
    Http1(Arc<H1Pool>),
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
    // The pools: a connect or handshake error is an io::Error; a request
    // on an open connection fails as hyper's.
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
        let path = |req: &Request<Body>| {
            req.uri()
                .path_and_query()
                .map_or("/".to_string(), |p| p.to_string())
        };
        match self {
            UpstreamClient::Http1(pool) => {
                // HTTP/1.1 to an origin server: the path alone.
                if req.uri().authority().is_some() {
                    *req.uri_mut() = path(&req).parse()?;
                }
                *req.version_mut() = http::Version::HTTP_11;
                pool.send(addr, req).await
            }
            UpstreamClient::Http2(pool) => {
                // HTTP/2 carries the Host as :authority.
                let authority = match req.headers_mut().remove(hyper::header::HOST) {
                    Some(h) => h.to_str()?.to_string(),
                    None => addr.to_string(),
                };
                *req.uri_mut() = format!("http://{authority}{}", path(&req)).parse()?;
                *req.version_mut() = http::Version::HTTP_2;
                // Boxed: its future is three times HTTP/1.1's, and would
                // size every request's.
                Box::pin(pool.send(addr, req)).await
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
    conns: RwLock<crate::FastMap<SocketAddr, Pooled>>,
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
        if let Some(idle) = idle_timeout {
            sweep(&pool, idle, move |p| p.close_idle(idle));
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
            let io = Box::pin(self.connector.clone().open_addr(addr)).await?;
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
    dedicated: RwLock<crate::FastMap<String, (ClientSettings, UpstreamClient)>>,
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
        };
        let mut direct = HttpConnector::new();
        direct.set_nodelay(true);
        direct.set_connect_timeout(Some(CONNECT_TIMEOUT));
        Clients {
            http1: client(connector.clone(), false, None),
            http2: client(connector.clone(), true, None),
            passthrough: Client::builder(TokioExecutor::new()).build(direct),
            originator: Arc::new(originator),
            dedicated: RwLock::default(),
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
    let idle = settings.and_then(|s| s.idle_timeout);
    if h2 {
        return UpstreamClient::Http2(H2Pool::start(connector, max_requests, idle));
    }
    UpstreamClient::Http1(H1Pool::start(connector, max_requests, idle))
}

/// Runs `close_idle` on `pool` every half `idle` in a task of its own, for
/// as long as the pool lives (when there is a runtime to run it).
fn sweep<P: Send + Sync + 'static>(
    pool: &Arc<P>,
    idle: Duration,
    close_idle: impl Fn(&P) + Send + 'static,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = Arc::downgrade(pool);
    runtime.spawn(async move {
        let mut tick = tokio::time::interval((idle / 2).max(Duration::from_millis(10)));
        loop {
            tick.tick().await;
            let Some(pool) = weak.upgrade() else { return };
            close_idle(&pool);
        }
    });
}

/// How long an HTTP/1.1 connection waits idle in its pool unless the
/// cluster's `idleTimeout` says otherwise.
const H1_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// HTTP/1.1 connections to endpoints. A request takes an idle connection
/// (the one most recently used) or opens one; the connection comes back
/// when its response is done, unless the peer closed it, it was upgraded,
/// or it has carried `maxRequestsPerConnection` requests.
#[derive(Debug)]
pub struct H1Pool {
    connector: Connector,
    max_requests: Option<u32>,
    idle_timeout: Duration,
    /// Idle connections per endpoint, the most recently used last. The
    /// lock is held only to push or pop; a connection future is `Send`
    /// but not `Sync`, so a mutex it is, as in hyper-util's pool.
    #[allow(clippy::disallowed_types)]
    idle: std::sync::Mutex<crate::FastMap<SocketAddr, Vec<Idle>>>,
}

/// An HTTP/1.1 connection: the handle requests go through, the connection
/// future that does its I/O, and how many requests it has carried.
struct H1Conn {
    sender: http1::SendRequest<Body>,
    conn: ConnFuture,
    uses: u32,
}

/// A future that drives one connection until it ends.
pub type ConnFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

impl std::fmt::Debug for H1Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "H1Conn({} uses)", self.uses)
    }
}

#[derive(Debug)]
struct Idle {
    conn: H1Conn,
    since: Instant,
}

impl H1Pool {
    /// A pool, and a task that closes connections idle longer than
    /// `idle_timeout` (90 s by default) for as long as the pool lives.
    fn start(
        connector: Connector,
        max_requests: Option<u32>,
        idle_timeout: Option<Duration>,
    ) -> Arc<H1Pool> {
        let idle = idle_timeout.unwrap_or(H1_IDLE_TIMEOUT);
        let pool = Arc::new(H1Pool {
            connector,
            max_requests,
            idle_timeout: idle,
            idle: Default::default(),
        });
        sweep(&pool, idle, H1Pool::close_idle);
        pool
    }

    /// Drops the connections idle longer than the timeout.
    fn close_idle(&self) {
        let limit = self.idle_timeout;
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|_, list| {
                list.retain(|i| i.since.elapsed() < limit);
                !list.is_empty()
            });
        }
    }

    /// An idle connection to `addr`, within its idle timeout. One its
    /// peer closed meanwhile is found out when its connection is next
    /// polled, before the request is written: the request comes back
    /// unsent (see [`H1Pool::send`]).
    fn checkout(&self, addr: SocketAddr) -> Option<H1Conn> {
        loop {
            let Idle { conn, since } = self.idle.lock().ok()?.get_mut(&addr)?.pop()?;
            if since.elapsed() < self.idle_timeout && conn.sender.is_ready() {
                return Some(conn);
            }
        }
    }

    fn put_back(&self, addr: SocketAddr, conn: H1Conn) {
        if let Ok(mut idle) = self.idle.lock() {
            idle.entry(addr).or_default().push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    async fn open(&self, addr: SocketAddr) -> Result<H1Conn, SendError> {
        let io = self.connector.clone().open_addr(addr).await?;
        let (sender, conn) = http1::handshake(io)
            .await
            // Not connected yet: a connect failure, not a reset.
            .map_err(std::io::Error::other)?;
        Ok(H1Conn {
            sender,
            conn: Box::pin(async move { drop(conn.with_upgrades().await) }),
            uses: 0,
        })
    }

    /// Sends `req` to `addr` on an idle connection, or a new one. A
    /// request an idle connection could not take (its peer closed it
    /// meanwhile) is sent again, on another.
    async fn send(
        self: &Arc<Self>,
        addr: SocketAddr,
        mut req: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        loop {
            let (mut conn, reused) = match self.checkout(addr) {
                Some(c) => (c, true),
                None => (Box::pin(self.open(addr)).await?, false),
            };
            conn.uses += 1;
            let sent = conn.sender.try_send_request(req);
            let again = self.max_requests.is_none_or(|n| conn.uses < n);
            drive(Lease {
                pool: if again {
                    Arc::downgrade(self)
                } else {
                    Weak::new()
                },
                addr,
                conn: Some(conn),
            });
            match sent.await {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(e.into_error().into()),
                },
            }
        }
    }
}

/// A connection carrying a request: driven until its response is done,
/// then back to its pool (when `pool` is still there).
struct Lease {
    pool: Weak<H1Pool>,
    addr: SocketAddr,
    conn: Option<H1Conn>,
}

impl Future for Lease {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(c) = this.conn.as_mut() else {
            return Poll::Ready(());
        };
        if c.conn.as_mut().poll(cx).is_ready() {
            // Closed, failed or upgraded: not reusable.
            this.conn = None;
            return Poll::Ready(());
        }
        // The connection asks for its next request once the last response
        // is done.
        match c.sender.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(ready) => {
                if let (Ok(()), Some(pool), Some(c)) =
                    (ready, this.pool.upgrade(), this.conn.take())
                {
                    pool.put_back(this.addr, c);
                }
                this.conn = None;
                Poll::Ready(())
            }
        }
    }
}

/// What [`serving`] drives beside the downstream connection: a leased
/// pooled connection, or a connection of the downstream connection's own
/// (the inbound side's to its application).
enum Driven {
    Lease(Lease),
    Conn(ConnFuture),
}

impl Future for Driven {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.get_mut() {
            Driven::Lease(l) => Pin::new(l).poll(cx),
            Driven::Conn(c) => c.as_mut().poll(cx),
        }
    }
}

tokio::task_local! {
    /// Connections waiting to be driven by the task serving the downstream
    /// connection, when it offers to ([`serving`]).
    static DRIVER: std::cell::RefCell<Vec<Driven>>;
}

/// Drives `lease` in the task serving the request's downstream connection,
/// else in a task of its own (HTTP/2 streams, mirrored copies).
fn drive(lease: Lease) {
    drive_in_serving(Driven::Lease(lease));
}

/// Drives `conn` in the task serving the current downstream connection,
/// else in a task of its own.
pub fn drive_conn(conn: ConnFuture) {
    drive_in_serving(Driven::Conn(conn));
}

fn drive_in_serving(driven: Driven) {
    let mut driven = Some(driven);
    let _ = DRIVER.try_with(|all| {
        if let (Some(d), Ok(mut all)) = (driven.take(), all.try_borrow_mut()) {
            all.push(d);
        }
    });
    if let Some(d) = driven {
        tokio::spawn(d);
    }
}

/// What [`serving`] shares with the wakers it polls with: which of its
/// futures asked to be polled again (bit 0 the server, bit `1 + i` the
/// connection in slot `i`; slots past 62 share bit 63), and the task's
/// waker. A wake while it is polling (a lease handing its response over to
/// the server, in the same task) only asks for another round within that
/// poll; any other goes to the task. A wake of the running task would put
/// it at the back of the run queue, and on a multi-threaded runtime wake an
/// idle worker to steal it.
struct Relay {
    polling: AtomicBool,
    woken: AtomicU64,
    task: RwLock<Waker>,
}

/// The waker of one of [`serving`]'s futures.
struct Wakes {
    relay: Arc<Relay>,
    bit: u64,
}

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.relay.woken.fetch_or(self.bit, Ordering::SeqCst);
        if !self.relay.polling.load(Ordering::SeqCst) {
            if let Ok(task) = self.relay.task.read() {
                task.wake_by_ref();
            }
        }
    }
}

impl Relay {
    fn waker(self: &Arc<Self>, bit: u64) -> Waker {
        Waker::from(Arc::new(Wakes {
            relay: self.clone(),
            bit,
        }))
    }
}

/// The bit slot `i`'s wakes set in [`Relay::woken`].
fn slot_bit(i: usize) -> u64 {
    1 << (i + 1).min(63)
}

/// A slot for a connection [`serving`] drives: the connection while it
/// runs, and a waker kept for the next one.
struct Slot {
    driven: Option<Driven>,
    waker: Waker,
}

/// Rounds within one poll of [`serving`] before it yields to other tasks
/// (a request and its response take two or three).
const ROUNDS: usize = 8;

/// Serves one downstream connection (`server`) and, in the same task, the
/// upstream connections its requests lease or open ([`drive_conn`]).
/// Each round polls only the futures woken since the last; those still
/// running when the server ends finish in a task of their own.
pub async fn serving<F: Future>(server: F) -> F::Output {
    let mut server = std::pin::pin!(server);
    let mut slots: Vec<Slot> = Vec::new();
    let relay = Arc::new(Relay {
        polling: AtomicBool::new(false),
        // The first poll polls the server.
        woken: AtomicU64::new(1),
        task: RwLock::new(Waker::noop().clone()),
    });
    let server_waker = relay.waker(1);
    let out = DRIVER
        .scope(
            std::cell::RefCell::new(Vec::new()),
            std::future::poll_fn(|cx| {
                // The task's waker rarely changes: write it only then.
                if !relay.task.read().is_ok_and(|t| t.will_wake(cx.waker())) {
                    if let Ok(mut task) = relay.task.write() {
                        task.clone_from(cx.waker());
                    }
                }
                for _ in 0..ROUNDS {
                    relay.polling.store(true, Ordering::SeqCst);
                    let mut woken = relay.woken.swap(0, Ordering::SeqCst);
                    let mut done = Poll::Pending;
                    if woken & 1 != 0 {
                        done = server
                            .as_mut()
                            .poll(&mut Context::from_waker(&server_waker));
                        // Connections the server woke (asking for a
                        // response's body) are polled in this round too;
                        // a wake of the server waits for the next.
                        woken |= relay.woken.fetch_and(1, Ordering::SeqCst) & !1;
                    }
                    // New connections take free slots, and a first poll.
                    let _ = DRIVER.try_with(|new| {
                        for d in new.borrow_mut().drain(..) {
                            let i = match slots.iter().position(|s| s.driven.is_none()) {
                                Some(i) => i,
                                None => {
                                    let waker = relay.waker(slot_bit(slots.len()));
                                    slots.push(Slot {
                                        driven: None,
                                        waker,
                                    });
                                    slots.len() - 1
                                }
                            };
                            slots[i].driven = Some(d);
                            woken |= slot_bit(i);
                        }
                    });
                    for (i, slot) in slots.iter_mut().enumerate() {
                        if woken & slot_bit(i) == 0 {
                            continue;
                        }
                        if let Some(d) = slot.driven.as_mut() {
                            let mut cx = Context::from_waker(&slot.waker);
                            if Pin::new(d).poll(&mut cx).is_ready() {
                                slot.driven = None;
                            }
                        }
                    }
                    relay.polling.store(false, Ordering::SeqCst);
                    if done.is_ready() {
                        return done;
                    }
                    // Another round for what woke meanwhile, and for
                    // connections those polls handed over.
                    let handed = DRIVER.try_with(|new| !new.borrow().is_empty());
                    if relay.woken.load(Ordering::SeqCst) == 0 && handed != Ok(true) {
                        return Poll::Pending;
                    }
                }
                cx.waker().wake_by_ref();
                Poll::Pending
            }),
        )
        .await;
    for d in slots.into_iter().filter_map(|s| s.driven) {
        tokio::spawn(d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections handed to `serving` run in its task, each polled when
    /// it is woken, also past the 62 that have a wake bit of their own,
    /// and those still running when the server ends finish in tasks of
    /// their own.
    #[tokio::test]
    async fn serving_drives_each_connection_when_woken() {
        let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel();
        let mut gates = Vec::new();
        for i in 0..70 {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            gates.push(tx);
            let done = done_tx.clone();
            go_tx
                .send(Box::pin(async move {
                    if rx.await.is_ok() {
                        let _ = done.send(i);
                    }
                }) as ConnFuture)
                .unwrap_or_else(|_| unreachable!());
        }
        let server = async move {
            while let Ok(conn) = go_rx.try_recv() {
                drive_conn(conn);
            }
            // Opened from another task, in reverse order, one at a time;
            // the last (slot 0) after the server has ended.
            let last = gates.remove(0);
            tokio::spawn(async move {
                for gate in gates.into_iter().rev() {
                    let _ = gate.send(());
                    tokio::task::yield_now().await;
                }
            });
            let mut seen = Vec::new();
            while seen.len() < 69 {
                seen.push(done_rx.recv().await.unwrap_or(usize::MAX));
            }
            (seen, last, done_rx)
        };
        let (seen, last, mut done_rx) =
            tokio::time::timeout(Duration::from_secs(10), serving(server))
                .await
                .unwrap_or_else(|_| panic!("a woken connection was not polled"));
        assert_eq!(seen, (1..70).rev().collect::<Vec<_>>());
        let _ = last.send(());
        let after = tokio::time::timeout(Duration::from_secs(10), done_rx.recv()).await;
        assert_eq!(after.ok().flatten(), Some(0));
    }
}
