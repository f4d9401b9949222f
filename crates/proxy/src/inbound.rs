//! The inbound side: streams that reached this workload, over HBONE (15008,
//! mTLS, the peer known by its SPIFFE ID) or in plaintext (15006, only to
//! ports whose PeerAuthentication mode allows it). HTTP ports are parsed:
//! each request is forwarded to the application over a pooled connection
//! and counted in Istio's metrics with `reporter="destination"`. Other
//! ports pass through as TCP.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use weft_model::authz;
use weft_model::config::InboundPort;
use weft_model::{Protocol, ProxyConfig};

use crate::authorize;
use crate::framing::StrictHeads;
use crate::http::{Body, ResponseFlag, flagged};
use crate::jwt::Authenticator;
use crate::metrics::Metrics;
use crate::outbound::Outbound;
use crate::ratelimit;
use crate::telemetry::{AccessLog, Observation, PeerMeta, inbound_labels, request_protocol};
use crate::upgrade;
use crate::upstream::ConnFuture;

/// The port plaintext inbound traffic arrives on.
pub const PLAINTEXT_PORT: u16 = 15006;

/// What the inbound listeners share.
#[derive(Debug)]
pub struct Inbound {
    pub config: Arc<ArcSwap<ProxyConfig>>,
    pub metrics: Arc<Metrics>,
    pub access_log: Option<AccessLog>,
    /// RequestAuthentication's JWT validation and fetched keys.
    authenticator: Authenticator,
    /// This proxy's way out, for ext_authz checks.
    outbound: Arc<Outbound>,
}

/// A stream accepted for one of this workload's ports.
#[derive(Debug)]
pub enum Accepted {
    /// HTTP, served request by request.
    Http(InboundPort),
    /// TCP, already connected to the application.
    Tcp(InboundPort, TcpStream),
}

/// Why a stream was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0} is not served by this workload")]
    NotServed(SocketAddr),
    #[error("connect {target}: {cause}")]
    App {
        target: SocketAddr,
        cause: std::io::Error,
    },
    #[error("RBAC: access denied ({0})")]
    Denied(String),
}

impl Inbound {
    pub fn new(
        config: Arc<ArcSwap<ProxyConfig>>,
        metrics: Arc<Metrics>,
        access_log: Option<AccessLog>,
        outbound: Arc<Outbound>,
    ) -> Inbound {
        Inbound {
            config,
            metrics,
            access_log,
            authenticator: Authenticator::default(),
            outbound,
        }
    }

    /// The port of this workload that `target` names.
    pub fn port(&self, target: SocketAddr) -> Option<InboundPort> {
        let config = self.config.load();
        if target.ip() != config.workload.address {
            return None;
        }
        config
            .inbound
            .iter()
            .find(|p| p.port == u32::from(target.port()))
            .cloned()
    }

    /// Accepts a stream from `principal` (none over plaintext) at
    /// `source` to `target`: its port must be one of this workload's; a
    /// TCP port's connection must be authorized and its application must
    /// take it. HTTP is authorized request by request.
    pub async fn accept(
        &self,
        target: SocketAddr,
        principal: Option<&str>,
        source: SocketAddr,
    ) -> Result<Accepted, Refused> {
        let port = self.port(target).ok_or(Refused::NotServed(target))?;
        if port.protocol.is_http() {
            return Ok(Accepted::Http(port));
        }
        let decision = self.config.load().authz.evaluate(&authz::Request {
            principal,
            source_ip: Some(source.ip()),
            remote_ip: None,
            destination: target,
            sni: None,
            http: None,
        });
        if !decision.allowed {
            let by = authorize::denied(&self.metrics, &decision, "tcp", source);
            return Err(Refused::Denied(by));
        }
        let app = TcpStream::connect(target)
            .await
            .map_err(|cause| Refused::App { target, cause })?;
        let _ = app.set_nodelay(true);
        Ok(Accepted::Tcp(port, app))
    }

    /// Serves `io`, a stream from `peer` (at `downstream`) to `target`.
    pub async fn serve<I>(
        self: Arc<Self>,
        accepted: Accepted,
        mut io: I,
        target: SocketAddr,
        peer: PeerMeta,
        downstream: SocketAddr,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let port = match accepted {
            Accepted::Tcp(port, mut app) => {
                let labels = {
                    let config = self.config.load();
                    inbound_labels(
                        &config.workload,
                        port.service.as_deref(),
                        &peer,
                        "tcp",
                        None,
                    )
                };
                self.metrics.tcp_opened(&labels);
                let (sent, received) = tokio::io::copy_bidirectional(&mut io, &mut app)
                    .await
                    .map_or((0, 0), |(to_app, to_peer)| (to_peer, to_app));
                self.metrics.tcp_closed(&labels, sent, received);
                return;
            }
            Accepted::Http(port) => Arc::new(port),
        };
        let peer = Arc::new(peer);
        let app = Arc::new(AppConn {
            target,
            h2: matches!(port.protocol, Protocol::Http2 | Protocol::Grpc),
            sender: tokio::sync::Mutex::new(None),
        });
        let service = service_fn(move |req| {
            let (this, port, peer, app) = (self.clone(), port.clone(), peer.clone(), app.clone());
            async move { Ok::<_, hyper::Error>(this.request(req, &app, &port, &peer, downstream).await) }
        });
        let builder = auto::Builder::new(TokioExecutor::new());
        let server =
            builder.serve_connection_with_upgrades(TokioIo::new(StrictHeads::new(io)), service);
        // The app connection is driven here, beside the stream it serves;
        // when the stream ends, the app connection closes (or hands itself
        // over to an upgrade) in a task of its own.
        let _ = crate::upstream::serving(server).await;
    }

    /// One HTTP request to the application, authorized and observed.
    /// The request to the application, unless a rate limit on this port
    /// refuses it.
    async fn limited_forward(
        &self,
        req: Request<Incoming>,
        app: &AppConn,
        port: &InboundPort,
        peer: &PeerMeta,
        downstream: SocketAddr,
    ) -> Response<Body> {
        let config = self.config.load();
        if config.rate_limits.is_empty() {
            return forward(req, app).await;
        }
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.rsplit_once(':').map_or(h, |(h, _)| h).to_string())
            .unwrap_or_default();
        let asked = ratelimit::Request {
            side: ratelimit::Side::Inbound { port: port.port },
            host: &host,
            route: None,
            remote: Some(downstream.ip()),
            principal: peer.principal.as_deref(),
            headers: req.headers(),
        };
        match Box::pin(self.outbound.limiter.check(&config.rate_limits, &asked)).await {
            ratelimit::Decision::Limited(resp) => resp,
            passed => {
                let mut resp = forward(req, app).await;
                passed.decorate(&mut resp);
                resp
            }
        }
    }

    async fn request(
        &self,
        mut req: Request<Incoming>,
        app: &AppConn,
        port: &InboundPort,
        peer: &PeerMeta,
        downstream: SocketAddr,
    ) -> Response<Body> {
        crate::trace::propagate(req.headers_mut());
        let observation = Observation::begin(&req, downstream, self.access_log.as_ref());
        let protocol = request_protocol(req.headers());
        let refused = authorize::refuse_http(
            &self.config.load_full(),
            &self.outbound,
            &self.authenticator,
            &mut req,
            authorize::Connection {
                principal: peer.principal.as_deref(),
                source: downstream,
                remote: None,
                destination: app.target,
                sni: None,
            },
        )
        .await;
        let resp = match refused {
            None => self.limited_forward(req, app, port, peer, downstream).await,
            Some(refused) => refused,
        };
        let flag = resp.extensions().get::<ResponseFlag>().map(|f| f.0);
        let status = resp.status().as_u16();
        let key = self
            .metrics
            .key(("inbound", peer, port.port, protocol, status, flag));
        let handles = self.metrics.cached(key, || {
            inbound_labels(
                &self.config.load().workload,
                port.service.as_deref(),
                peer,
                protocol,
                Some((status, flag)),
            )
        });
        observation.finish(resp, self.metrics.clone(), (key, handles), || {
            (
                Some(app.target.to_string()),
                Some(format!("inbound|{}||", port.port)),
            )
        })
    }
}

/// Sends `req` to the application, passing an upgrade (WebSocket) on.
async fn forward(mut req: Request<Incoming>, app: &AppConn) -> Response<Body> {
    *req.version_mut() = if app.h2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    };
    if app.h2 && req.uri().authority().is_none() {
        // HTTP/2 needs the scheme and authority of an absolute URI: the
        // request's own (its Host, from an HTTP/1.1 client), else the
        // application's address.
        let path = req
            .uri()
            .path_and_query()
            .map_or("/".to_string(), |p| p.to_string());
        let authority = match req.headers_mut().remove(hyper::header::HOST) {
            Some(h) => h.to_str().unwrap_or_default().to_string(),
            None => app.target.to_string(),
        };
        if let Ok(uri) = format!("http://{authority}{path}").parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    let downstream_upgrade = upgrade::requested(&mut req);
    match app.send(req.map(|b| b.boxed())).await {
        Ok(mut resp) => {
            upgrade::bridge(downstream_upgrade, &mut resp);
            resp.map(|b| b.boxed())
        }
        Err(AppError::Connect(e)) => flagged(
            StatusCode::SERVICE_UNAVAILABLE,
            "UF",
            &format!("upstream connect error: {e}"),
        ),
        Err(AppError::Terminated(e, status, flag)) => flagged(
            status,
            flag,
            &format!("upstream disconnect or reset before headers: {e}"),
        ),
    }
}

/// The application connection behind one inbound stream, opened on first
/// use and again after the application closes it. Its connection future
/// goes to the task serving the stream, so a request crosses no other task
/// between the stream and the application.
struct AppConn {
    target: SocketAddr,
    h2: bool,
    sender: tokio::sync::Mutex<Option<AppSender>>,
}

/// Why the application did not answer: Envoy's UF, or its UC when the
/// connection was open and ended before a response.
enum AppError {
    Connect(String),
    /// The connection ended or the stream was reset before a response:
    /// the detail, and Envoy's status and flag for it.
    Terminated(String, StatusCode, &'static str),
}

enum AppSender {
    H1(hyper::client::conn::http1::SendRequest<Body>),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

impl AppConn {
    async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, AppError> {
        let mut sender = self.sender.lock().await;
        let usable = match sender.as_mut() {
            Some(AppSender::H1(s)) => s.ready().await.is_ok(),
            Some(AppSender::H2(s)) => s.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            // Boxed: opening is rare, and its future would size every
            // request's.
            *sender = Some(Box::pin(self.open()).await.map_err(AppError::Connect)?);
        }
        let result = match sender.as_mut() {
            // HTTP/1.1 carries one request at a time: the lock is held
            // until the response head is in.
            Some(AppSender::H1(s)) => s.send_request(req).await,
            Some(AppSender::H2(s)) => {
                let mut s = s.clone();
                drop(sender);
                s.send_request(req).await
            }
            None => {
                return Err(AppError::Connect("no connection to the application".into()));
            }
        };
        result.map_err(|e| {
            let (status, flag) = crate::upstream::after_connected(&e);
            AppError::Terminated(format!("{:#}", anyhow::Error::new(e)), status, flag)
        })
    }

    async fn open(&self) -> Result<AppSender, String> {
        let target = self.target;
        let tcp = TcpStream::connect(target)
            .await
            .map_err(|e| format!("connect {target}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let io = TokioIo::new(tcp);
        let (sender, conn): (AppSender, ConnFuture) = if self.h2 {
            let (s, c) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .max_header_list_size(crate::upstream::MAX_RESPONSE_HEADERS)
                .handshake(io)
                .await
                .map_err(|e| format!("HTTP/2 to {target}: {e}"))?;
            (AppSender::H2(s), Box::pin(async move { drop(c.await) }))
        } else {
            let (s, c) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("HTTP/1.1 to {target}: {e}"))?;
            (
                AppSender::H1(s),
                Box::pin(async move { drop(c.with_upgrades().await) }),
            )
        };
        crate::upstream::drive_conn(conn);
        Ok(sender)
    }
}

/// Serves plaintext inbound traffic on `listener` (15006). Without
/// transparent capture there is no original destination to read, so a
/// connection goes to the workload's only port; a workload with several
/// ports is reached in plaintext only through capture (the demo's
/// `--netns` mode). Ports in STRICT mode refuse plaintext: the connection
/// is closed before any byte reaches the application.
pub async fn serve_plaintext(listener: TcpListener, inbound: Arc<Inbound>) {
    crate::http::serve_each(listener, move |tcp, downstream| {
        let inbound = inbound.clone();
        async move {
            let original = crate::capture::original_destination(&tcp);
            let Some(target) = original.or_else(|| plaintext_target(&inbound)) else {
                tracing::debug!(
                    "plaintext from {downstream} closed: no original destination and several ports"
                );
                return;
            };
            match inbound.port(target) {
                Some(p) if p.mtls.allows_plaintext() => {}
                _ => {
                    tracing::debug!(
                        "plaintext from {downstream} to {target} closed: mTLS is STRICT"
                    );
                    return;
                }
            }
            let accepted = match inbound.accept(target, None, downstream).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::debug!("plaintext from {downstream} closed: {e}");
                    return;
                }
            };
            inbound
                .serve(accepted, tcp, target, PeerMeta::default(), downstream)
                .await;
        }
    })
    .await;
}

/// Where a plaintext connection goes: the workload's only port.
fn plaintext_target(inbound: &Inbound) -> Option<SocketAddr> {
    let config = inbound.config.load();
    match config.inbound.as_slice() {
        [only] => Some(SocketAddr::new(
            config.workload.address,
            u16::try_from(only.port).ok()?,
        )),
        _ => None,
    }
}
