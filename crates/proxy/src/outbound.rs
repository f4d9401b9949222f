//! The outbound listener (15001): the application's HTTP proxy. It takes
//! absolute-form requests (`curl -x`), CONNECT, and origin-form requests
//! routed by their Host header as Envoy's outbound listener does; routes
//! them by the compiled VirtualServices; and sends them to an endpoint,
//! through HBONE when the endpoint is in the mesh.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use arc_swap::ArcSwap;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HOST, HeaderValue, LOCATION};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use weft_model::ProxyConfig;
use weft_model::authz::RequestAuth;
use weft_model::config::{
    Cluster, ClusterEndpoint, HttpRoute, Ops, OutboundPolicy, OutboundService, RequestView, Retry,
    RouteAction, WeightedCluster, host_matches,
};
use weft_model::policy::{HashKey, LbPolicy, UpstreamTls};

use crate::balance::{Outcome, Tracker};
use crate::cors;
use crate::dns::Dns;
use crate::framing::StrictHeads;
use crate::hbone::{HBONE_PORT, Pool};
use crate::http::{Body, ResponseFlag, flagged, full};
use crate::metrics::Metrics;
use crate::origination::Originator;
use crate::ratelimit::{self, Decision, Limiter};
use crate::telemetry::{
    AccessLog, DestService, Observation, baggage, outbound_labels, outbound_tcp_labels,
    request_protocol,
};
use crate::upgrade;
use crate::upstream::Clients;

/// Not a standard header, so named once rather than parsed per request.
const PROXY_CONNECTION: http::HeaderName = http::HeaderName::from_static("proxy-connection");

/// What the outbound listener works with: the current config (swapped as a
/// whole on reload) and the HBONE pool.
#[derive(Debug)]
pub struct Outbound {
    pub config: Arc<ArcSwap<ProxyConfig>>,
    /// Requests in flight and endpoint health, by cluster.
    pub tracker: Tracker,
    pub pool: Arc<Pool>,
    /// Pooled HTTP connections to applications, inside HBONE tunnels.
    pub clients: Clients,
    pub metrics: Arc<Metrics>,
    /// Where access-log lines go, when access logging is on.
    pub access_log: Option<AccessLog>,
    /// Resolves clusters' DNS endpoints.
    pub dns: Dns,
    /// Rate limits' buckets.
    pub limiter: Limiter,
    /// Drives weighted picks and percentages (mixed into random bits).
    counter: AtomicU64,
    /// Round robin over endpoints, on a counter of its own so that other
    /// picks do not skew it.
    round_robin: AtomicU64,
}

impl Outbound {
    pub fn new(
        config: Arc<ArcSwap<ProxyConfig>>,
        pool: Pool,
        metrics: Arc<Metrics>,
        access_log: Option<AccessLog>,
        dns: Dns,
        originator: Originator,
    ) -> Outbound {
        let pool = Arc::new(pool);
        Outbound {
            tracker: Tracker::default(),
            clients: Clients::new(pool.clone(), config.clone(), originator),
            config,
            pool,
            metrics,
            access_log,
            dns,
            limiter: Limiter::default(),
            counter: AtomicU64::new(0),
            round_robin: AtomicU64::new(0),
        }
    }
}

/// Serves the outbound listener until the task is dropped.
pub async fn serve(listener: TcpListener, outbound: Arc<Outbound>) {
    crate::http::serve_each(listener, move |tcp, peer| {
        let outbound = outbound.clone();
        async move {
            // A redirected connection is for its original destination:
            // HTTP when that is an HTTP port of a service, else TCP.
            let original = crate::capture::original_destination(&tcp);
            if let Some(dst) = original {
                if !captured_http(&outbound, dst) {
                    captured_tcp(&outbound, tcp, dst).await;
                    return;
                }
            }
            let service = service_fn(move |mut req: Request<Incoming>| {
                let outbound = outbound.clone();
                if let Some(dst) = original {
                    req.extensions_mut().insert(OriginalDst(dst));
                }
                async move {
                    Ok::<_, hyper::Error>(observed(&outbound, req, peer, Listener::Outbound).await)
                }
            });
            // HTTP/1.1, or HTTP/2 with prior knowledge (h2c, as gRPC
            // clients speak to a proxy).
            let builder = auto::Builder::new(TokioExecutor::new());
            let server = builder
                .serve_connection_with_upgrades(TokioIo::new(StrictHeads::new(tcp)), service);
            let _ = crate::upstream::serving(server).await;
        }
    })
    .await;
}

/// The destination a captured connection was meant for.
#[derive(Debug, Clone, Copy)]
struct OriginalDst(SocketAddr);

/// The service whose `addresses` (its virtual IP) and port a captured
/// connection was meant for.
fn service_at(config: &ProxyConfig, dst: SocketAddr) -> Option<&OutboundService> {
    config
        .outbound
        .iter()
        .find(|s| s.port == u32::from(dst.port()) && s.has_address(dst.ip()))
}

/// Whether a connection captured for `dst` speaks HTTP: it goes to an
/// HTTP port of a service.
fn captured_http(outbound: &Outbound, dst: SocketAddr) -> bool {
    service_at(&outbound.config.load(), dst).is_some_and(|s| s.protocol.is_http())
}

/// A captured connection that is not HTTP: to the TCP route of the service
/// at its destination; to the destination itself under ALLOW_ANY; else
/// closed and counted.
async fn captured_tcp(outbound: &Arc<Outbound>, mut client: TcpStream, dst: SocketAddr) {
    let config = outbound.config.load_full();
    match service_at(&config, dst) {
        Some(s) => match open_tcp_route(outbound, &config, s, &s.host).await {
            Ok((mut up, cluster, ep)) => relay(outbound, cluster, &ep, &mut client, &mut up).await,
            Err(refused) => tracing::debug!(
                "captured connection to {dst} ({}): {:?}",
                s.host,
                refused.extensions().get::<ResponseFlag>()
            ),
        },
        None if config.outbound_policy == OutboundPolicy::AllowAny => {
            if let Ok(mut up) = TcpStream::connect(dst).await {
                let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            }
        }
        None => {
            tracing::debug!("captured connection to {dst}: no service there (REGISTRY_ONLY)");
            black_hole(outbound, &config, true);
        }
    }
}

/// Handles a request and records it in Istio's metrics when its response
/// body has been sent.
pub(crate) async fn observed(
    outbound: &Arc<Outbound>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    listener: Listener,
) -> Response<Body> {
    let mut routed = Routed::default();
    if req.method() == Method::CONNECT {
        return handle(outbound, req, peer, listener, &mut routed).await;
    }
    crate::trace::propagate(req.headers_mut());
    let observation = Observation::begin(&req, peer, outbound.access_log.as_ref());
    let protocol = request_protocol(req.headers());
    let resp = handle(outbound, req, peer, listener, &mut routed).await;
    let flag = resp.extensions().get::<ResponseFlag>().map(|f| f.0);
    let upstream = routed.upstream.as_deref();
    let dest = routed.dest.as_ref();
    let status = resp.status().as_u16();
    // What decides the labels: the upstream, the service, code and flag.
    let key = outbound.metrics.key((
        "outbound",
        protocol,
        upstream.map(|u| u.address),
        dest.map(DestService::host),
        status,
        flag,
    ));
    let handles = outbound.metrics.cached(key, || {
        outbound_labels(
            &outbound.config.load().workload,
            upstream,
            dest,
            protocol,
            status,
            flag,
        )
    });
    observation.finish(resp, outbound.metrics.clone(), (key, handles), || {
        (
            upstream.map(|u| u.address.to_string()),
            dest.map(|d| d.cluster().to_string()),
        )
    })
}

/// Where [`handle`] sent a request, for its metrics and log line: the
/// service and the endpoint that answered.
#[derive(Default)]
struct Routed {
    dest: Option<DestService>,
    upstream: Option<Arc<ClusterEndpoint>>,
}

/// The authority as the client wrote it: an absolute URI's (or HTTP/2's
/// `:authority`), else the Host header.
fn asked_authority<B>(req: &Request<B>) -> Option<&str> {
    match req.uri().authority() {
        Some(a) => Some(a.as_str()),
        None => req.headers().get(HOST)?.to_str().ok(),
    }
}

/// Where a request is going: host without port, and port.
fn destination(req: &Request<Incoming>) -> Option<(String, u16)> {
    let authority = asked_authority(req)?;
    let default_port = if req.uri().scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse() {
            Ok(p) => (h, p),
            Err(_) => (authority, default_port),
        },
        _ => (authority, default_port),
    };
    Some((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase(),
        port,
    ))
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Listener {
    /// The application's outbound proxy (15001): routed by destination.
    Outbound,
    /// A gateway port: routed by the Host among the servers on the port.
    Gateway { port: u16, https: bool },
}

async fn handle(
    outbound: &Arc<Outbound>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    listener: Listener,
    routed: &mut Routed,
) -> Response<Body> {
    // Routed by the name without its final dot, as it is authorized.
    crate::http::strip_host_dot(&mut req);
    let Some((host, mut port)) = destination(&req) else {
        return full(
            StatusCode::BAD_REQUEST,
            "no Host header and no absolute URI\n",
        );
    };
    let original = req.extensions().get::<OriginalDst>().map(|d| d.0);
    if let Some(dst) = original {
        // A captured request went to this port, whatever its Host says.
        port = dst.port();
    }
    let config = outbound.config.load_full();
    let service = match listener {
        Listener::Outbound => {
            // A service of that name, else one whose `addresses` hold the
            // destination address, else the most specific wildcard host
            // (`*.wikipedia.org`) that covers it.
            let on_port = || config.outbound.iter().filter(|s| u32::from(port) == s.port);
            let ip = host.parse::<std::net::IpAddr>().ok();
            on_port()
                .find(|s| s.answers_to(&host, &config.workload.namespace))
                .or_else(|| on_port().find(|s| ip.is_some_and(|ip| s.has_address(ip))))
                .or_else(|| original.and_then(|dst| service_at(&config, dst)))
                .or_else(|| {
                    on_port()
                        .filter(|s| s.host.starts_with('*') && host_matches(&s.host, &host))
                        .max_by_key(|s| s.host.len())
                })
        }
        Listener::Gateway { port: at, https } => {
            port = at;
            let found = config
                .gateway
                .iter()
                .find(|p| p.port == u32::from(at))
                .and_then(|p| p.vhost(&host));
            if let Some((server, _)) = found {
                if server.https_redirect && !https {
                    return to_https(&req, &host);
                }
            }
            found.map(|(_, vhost)| vhost)
        }
    };
    let Some(service) = service else {
        if matches!(listener, Listener::Outbound)
            && config.outbound_policy == OutboundPolicy::AllowAny
        {
            routed.dest = Some(DestService::passthrough());
            return Box::pin(passthrough(outbound, req, &host, port)).await;
        }
        // Envoy's answers: a gateway without a virtual host for the name
        // says 404, the outbound listener 502.
        return match listener {
            Listener::Gateway { .. } => flagged(
                StatusCode::NOT_FOUND,
                "NR",
                &format!("no gateway server routes {host} on port {port}"),
            ),
            Listener::Outbound => {
                black_hole(outbound, &config, req.method() == Method::CONNECT);
                routed.dest = Some(DestService::black_hole());
                flagged(
                    StatusCode::BAD_GATEWAY,
                    "NR",
                    &format!("no service {host}:{port} in the mesh registry"),
                )
            }
        };
    };
    if req.method() == Method::CONNECT {
        return Box::pin(connect(outbound, &config, service, req, &host)).await;
    }
    // Routes match the normalized path, and it is what goes upstream.
    if let Err(e) = crate::http::normalize_request(&mut req, config.path_normalization) {
        return full(StatusCode::BAD_REQUEST, format!("{e}\n"));
    }
    // Matching borrows the request; the route found borrows the config.
    // `authority` matches the authority as the client sent it, as Envoy's
    // does.
    let authority: std::borrow::Cow<str> =
        asked_authority(&req).map_or_else(|| format!("{host}:{port}").into(), Into::into);
    let (route, prefix) = {
        let headers = req.headers();
        let lookup = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let view = RequestView {
            method: req.method().as_str(),
            scheme: req.uri().scheme_str().unwrap_or("http"),
            authority: &authority,
            path: req.uri().path_and_query().map_or("/", |p| p.as_str()),
            port: u32::from(port),
            headers: &lookup,
            auth: req.extensions().get::<RequestAuth>(),
        };
        let Some(route) = service.route(&view) else {
            return flagged(
                StatusCode::NOT_FOUND,
                "NR",
                &format!("no route matches in {}", service.host),
            );
        };
        (route, route.matched_prefix(&view).map(str::to_string))
    };
    let limits = if config.rate_limits.is_empty() {
        None
    } else {
        let client = req.extensions().get::<Caller>();
        let asked = ratelimit::Request {
            side: ratelimit::Side::Routed,
            host: &host,
            route: route.name.as_deref(),
            remote: client.and_then(|c| c.remote).or(Some(peer.ip())),
            principal: client.and_then(|c| c.principal.as_deref()),
            headers: req.headers(),
        };
        match Box::pin(outbound.limiter.check(&config.rate_limits, &asked)).await {
            Decision::Limited(resp) => return resp,
            passed => Some(passed),
        }
    };
    // CORS runs before faults, as Envoy orders its filters.
    let cors_origin = match cors::check(route.cors.as_ref(), &req) {
        cors::Verdict::Answer(resp) => return resp,
        cors::Verdict::Forward(allowed) => allowed,
    };
    let weighted = match &route.action {
        RouteAction::DirectResponse { status, body } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return full(status, body.clone().unwrap_or_default());
        }
        RouteAction::Redirect {
            uri,
            authority: to_authority,
            scheme,
            port: to_port,
            code,
        } => {
            return redirect(
                &req,
                &host,
                port,
                uri,
                to_authority,
                scheme,
                *to_port,
                *code,
            );
        }
        RouteAction::Forward(w) => w,
    };
    // Faults come first, as Envoy's fault filter runs before the router.
    let mut delayed = false;
    if let Some(fault) = &route.fault {
        if let Some((delay, pct)) = &fault.delay {
            if chance(outbound, *pct) {
                tokio::time::sleep(delay.0).await;
                delayed = true;
            }
        }
        if let Some((status, pct)) = fault.abort {
            if chance(outbound, pct) {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                return flagged(status, "FI", "fault filter abort");
            }
        }
    }
    let Some(chosen) = pick_cluster(outbound, weighted) else {
        return flagged(StatusCode::SERVICE_UNAVAILABLE, "NC", "no cluster");
    };
    let Some(resolved) = find_cluster(outbound, &config, &chosen.cluster, &host).await else {
        return flagged(StatusCode::SERVICE_UNAVAILABLE, "NC", "no cluster");
    };
    let cluster = &*resolved;
    // Circuit breaking: a cluster at its limit answers at once.
    let Some(_admitted) = outbound.tracker.admit(cluster) else {
        return flagged(
            StatusCode::SERVICE_UNAVAILABLE,
            "UO",
            "upstream overflow: connection pool limit reached",
        );
    };
    let downstream_upgrade = upgrade::requested(&mut req);
    let (mut parts, body) = req.into_parts();
    if let Some(key) = hash_key(&cluster.policy.lb, &parts, peer) {
        parts.extensions.insert(LbKey(key));
    }
    prepare(&mut parts, route, chosen, prefix.as_deref(), &host, port);
    // A request that may be sent more than once (retries, mirror) is
    // buffered; others stream.
    let replay = route.retries.attempts > 0 || route.mirror.is_some();
    let body = if replay {
        match http_body_util::Limited::new(body, REPLAY_LIMIT)
            .collect()
            .await
        {
            Ok(b) => Replay::Buffered(b.to_bytes()),
            Err(_) => {
                return full(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large to retry or mirror\n",
                );
            }
        }
    } else {
        Replay::Streaming(body)
    };
    if let (Some(mirror), Replay::Buffered(bytes)) = (&route.mirror, &body) {
        if chance(outbound, mirror.percent) {
            if let Some(mc) = find_cluster(outbound, &config, &mirror.cluster, &host).await {
                Box::pin(shadow(outbound, mc.shared(), &parts, bytes.clone())).await;
            }
        }
    }
    let attempts = async {
        let mut resp = send_with_retries(
            outbound,
            cluster,
            &route.retries,
            &parts,
            body,
            &mut routed.upstream,
        )
        .await;
        upgrade::bridge(downstream_upgrade, &mut resp);
        apply_ops(resp.headers_mut(), &route.headers.response);
        apply_ops(resp.headers_mut(), &chosen.headers.response);
        if let Some((policy, origin)) = cors_origin {
            cors::decorate(policy, origin, resp.headers_mut());
        }
        resp
    };
    let mut resp = match route.timeout {
        Some(t) => match tokio::time::timeout(t, attempts).await {
            Ok(resp) => resp,
            Err(_) => flagged(
                StatusCode::GATEWAY_TIMEOUT,
                "UT",
                "upstream request timeout",
            ),
        },
        None => attempts.await,
    };
    if delayed && resp.extensions().get::<ResponseFlag>().is_none() {
        resp.extensions_mut().insert(ResponseFlag("DI"));
    }
    routed.dest = Some(DestService::Cluster(resolved.shared()));
    if let Some(passed) = limits {
        passed.decorate(&mut resp);
    }
    resp
}

/// REGISTRY_ONLY refused a destination: a refused tunnel is counted as
/// Envoy counts connections to its BlackHoleCluster (a refused request is
/// counted with its response).
fn black_hole(outbound: &Outbound, config: &ProxyConfig, tunnel: bool) {
    if !tunnel {
        return;
    }
    let none = ClusterEndpoint {
        address: SocketAddr::from(([0, 0, 0, 0], 0)),
        identity: None,
        weight: 0,
        workload: None,
        namespace: "unknown".into(),
        labels: std::collections::BTreeMap::new(),
    };
    let mut labels = outbound_tcp_labels(&config.workload, &none, &DestService::black_hole());
    for (k, v) in &mut labels {
        if *k == "response_flags" {
            *v = "NR".into();
        }
    }
    outbound.metrics.tcp_opened(&labels);
    outbound.metrics.tcp_closed(&labels, 0, 0);
}

/// Who sent a request a gateway routes, as far as it knows: the mesh
/// identity of an HBONE caller, and the client by X-Forwarded-For.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub principal: Option<String>,
    pub remote: Option<std::net::IpAddr>,
}

/// A gateway server's `httpsRedirect`: 301 to the same host and path
/// over HTTPS.
fn to_https(req: &Request<Incoming>, host: &str) -> Response<Body> {
    let path = req
        .uri()
        .path_and_query()
        .map_or("/".into(), |p| p.to_string());
    let mut resp = full(StatusCode::MOVED_PERMANENTLY, "");
    if let Ok(v) = HeaderValue::from_str(&format!("https://{host}{path}")) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

#[allow(clippy::too_many_arguments)]
fn redirect(
    req: &Request<Incoming>,
    host: &str,
    port: u16,
    uri: &Option<String>,
    authority: &Option<String>,
    scheme: &Option<String>,
    to_port: Option<u32>,
    code: u16,
) -> Response<Body> {
    let scheme = scheme.clone().unwrap_or_else(|| "http".into());
    let host = authority.clone().unwrap_or_else(|| host.to_string());
    let port = to_port.map_or(port, |p| u16::try_from(p).unwrap_or(port));
    let path = uri.clone().unwrap_or_else(|| {
        req.uri()
            .path_and_query()
            .map_or("/".into(), |p| p.to_string())
    });
    let default = (scheme == "http" && port == 80) || (scheme == "https" && port == 443);
    let location = if default {
        format!("{scheme}://{host}{path}")
    } else {
        format!("{scheme}://{host}:{port}{path}")
    };
    let mut resp = full(
        StatusCode::from_u16(code).unwrap_or(StatusCode::MOVED_PERMANENTLY),
        "",
    );
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(LOCATION, v);
    }
    resp
}

/// The consistent-hash key of a request.
#[derive(Debug, Clone, Copy)]
struct LbKey(u64);

/// The consistent-hash key the cluster's policy asks for, when the request
/// has it.
fn hash_key(lb: &LbPolicy, parts: &http::request::Parts, peer: SocketAddr) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let LbPolicy::ConsistentHash(key) = lb else {
        return None;
    };
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match key {
        HashKey::Header(name) => parts.headers.get(name.as_str())?.as_bytes().hash(&mut h),
        HashKey::Cookie(name) => {
            let value = parts
                .headers
                .get_all(hyper::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|c| c.trim().split_once('='))
                .find(|(k, _)| k == name)?
                .1;
            value.hash(&mut h);
        }
        HashKey::SourceIp => peer.ip().hash(&mut h),
        HashKey::QueryParameter(name) => {
            let query = parts.uri.query()?;
            let value = query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k == name)?
                .1;
            value.hash(&mut h);
        }
    }
    Some(h.finish())
}

/// Requests bodies above this are not buffered for retries or mirroring.
const REPLAY_LIMIT: usize = 4 << 20;

enum Replay {
    Buffered(Bytes),
    Streaming(Incoming),
}

/// Whether this request falls in `pct` percent.
fn chance(outbound: &Outbound, pct: f64) -> bool {
    if pct >= 100.0 {
        return true;
    }
    let r = mix(outbound.counter.fetch_add(1, Ordering::Relaxed)) % 1_000_000;
    (r as f64) < pct * 10_000.0
}

/// The request as the upstream sees it: origin-form, rewritten, with the
/// route's and the destination's header changes.
fn prepare(
    parts: &mut http::request::Parts,
    route: &HttpRoute,
    chosen: &WeightedCluster,
    prefix: Option<&str>,
    host: &str,
    port: u16,
) {
    if !parts.headers.contains_key(HOST) {
        // The authority as the client wrote it (an HTTP/2 :authority, an
        // absolute URI), else the destination.
        let value = match parts.uri.authority() {
            Some(a) => a.as_str().to_string(),
            None if port == 80 => host.to_string(),
            None => format!("{host}:{port}"),
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            parts.headers.insert(HOST, v);
        }
    }
    if let Some(rw) = &route.rewrite {
        let path = parts
            .uri
            .path_and_query()
            .map_or("/".to_string(), |p| p.to_string());
        let (p, q) = match path.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (path.clone(), None),
        };
        let mut p = p;
        if let Some(to) = &rw.uri {
            p = match prefix {
                Some(prefix) if p.starts_with(prefix) => format!("{to}{}", &p[prefix.len()..]),
                _ => to.clone(),
            };
        } else if let Some((re, to)) = &rw.uri_regex {
            p = re.replace_all(&p, to.as_str()).into_owned();
        }
        let path = match q {
            Some(q) => format!("{p}?{q}"),
            None => p,
        };
        if let Some(a) = &rw.authority {
            if let Ok(v) = HeaderValue::from_str(a) {
                parts.headers.insert(HOST, v);
            }
        }
        if let Ok(uri) = path.parse::<Uri>() {
            parts.uri = uri;
        }
    } else if parts.uri.scheme().is_some() || parts.uri.path_and_query().is_none() {
        // Absolute-form to origin-form; an origin-form URI stays as it is.
        parts.uri = parts
            .uri
            .path_and_query()
            .cloned()
            .map_or_else(|| Uri::from_static("/"), Uri::from);
    }
    parts.headers.remove(PROXY_CONNECTION);
    apply_ops(&mut parts.headers, &route.headers.request);
    apply_ops(&mut parts.headers, &chosen.headers.request);
}

fn apply_ops(headers: &mut http::HeaderMap, ops: &Ops) {
    for name in &ops.remove {
        headers.remove(name.as_str());
    }
    for (name, value) in &ops.set {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    for (name, value) in &ops.add {
        if let (Ok(n), Ok(v)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(n, v);
        }
    }
}

/// A cluster by weight (weights are relative, as in Istio).
pub(crate) fn pick_cluster<'a>(
    outbound: &Outbound,
    weighted: &'a [WeightedCluster],
) -> Option<&'a WeightedCluster> {
    let total: u64 = weighted.iter().map(|w| u64::from(w.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut r = mix(outbound.counter.fetch_add(1, Ordering::Relaxed)) % total;
    for w in weighted {
        if r < u64::from(w.weight) {
            return Some(w);
        }
        r -= u64::from(w.weight);
    }
    None
}

/// Cluster `name` with the endpoints it finds by DNS, `asked` being the
/// host the client asked for (the destination of a resolution-NONE
/// ServiceEntry). A name that does not resolve adds no endpoint.
pub(crate) async fn find_cluster<'a>(
    outbound: &Outbound,
    config: &'a ProxyConfig,
    name: &str,
    asked: &str,
) -> Option<Found<'a>> {
    let cluster = config.clusters.get(name)?;
    if cluster.dns.is_none() {
        return Some(Found::Config(cluster));
    }
    // Resolving is the rare case: its future is kept out of the request's.
    Some(Found::Resolved(Arc::new(
        Box::pin(resolve(outbound, cluster, asked)).await,
    )))
}

/// A cluster [`find_cluster`] found: the config's own, or a copy with the
/// endpoints its DNS names resolved to. Two words, where a `Cow` would
/// hold a whole `Cluster` in every request's future.
pub(crate) enum Found<'a> {
    Config(&'a Arc<Cluster>),
    Resolved(Arc<Cluster>),
}

impl Found<'_> {
    /// The cluster, shared.
    pub(crate) fn shared(&self) -> Arc<Cluster> {
        match self {
            Found::Config(c) => Arc::clone(c),
            Found::Resolved(c) => Arc::clone(c),
        }
    }
}

impl std::ops::Deref for Found<'_> {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        match self {
            Found::Config(c) => c,
            Found::Resolved(c) => c,
        }
    }
}

/// `cluster` with the endpoints its DNS names resolve to.
async fn resolve(outbound: &Outbound, cluster: &Cluster, asked: &str) -> Cluster {
    let Some(dns) = &cluster.dns else {
        return cluster.clone();
    };
    let no_labels = BTreeMap::new();
    let original = dns
        .original
        .then_some((asked, dns.port, 1, &no_labels))
        .into_iter();
    let names = dns
        .names
        .iter()
        .map(|n| (n.name.as_str(), n.port, n.weight, &n.labels))
        .chain(original);
    let mut resolved = cluster.clone();
    for (name, port, weight, labels) in names {
        let addrs = match outbound.dns.lookup(name).await {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!("{}: {e}", cluster.name);
                continue;
            }
        };
        let take = if dns.first_only { 1 } else { addrs.len() };
        resolved.endpoints.extend(addrs.iter().take(take).map(|ip| {
            Arc::new(ClusterEndpoint {
                address: SocketAddr::new(*ip, port),
                identity: None,
                weight,
                workload: None,
                namespace: dns.namespace.clone(),
                labels: labels.clone(),
            })
        }));
    }
    resolved
}

/// Round robin over the cluster's endpoints.
pub(crate) fn pick_endpoint<'a>(
    outbound: &Outbound,
    cluster: &'a Cluster,
) -> Option<&'a Arc<ClusterEndpoint>> {
    if cluster.endpoints.is_empty() {
        return None;
    }
    let i = outbound.round_robin.fetch_add(1, Ordering::Relaxed) as usize % cluster.endpoints.len();
    cluster.endpoints.get(i)
}

/// SplitMix64: spreads a counter into uniform bits (weighted picks, chances).
pub(crate) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stream to the endpoint: through HBONE to its proxy when it is in the
/// mesh, over TLS when the cluster originates it, else directly.
pub(crate) async fn open(
    outbound: &Outbound,
    cluster: &Cluster,
    ep: &ClusterEndpoint,
) -> Result<Box<dyn Io>, String> {
    let limit = cluster
        .policy
        .pool
        .connect_timeout
        .unwrap_or(crate::upstream::CONNECT_TIMEOUT);
    tokio::time::timeout(limit, open_within(outbound, cluster, ep))
        .await
        .unwrap_or_else(|_| Err(format!("connect timeout after {limit:?}")))
}

async fn open_within(
    outbound: &Outbound,
    cluster: &Cluster,
    ep: &ClusterEndpoint,
) -> Result<Box<dyn Io>, String> {
    if let UpstreamTls::Originate(settings) = &cluster.policy.tls {
        let tls = outbound
            .clients
            .originator
            .connect(settings, cluster.protocol, &cluster.host, ep.address)
            .await
            .map_err(|e| format!("TLS to {}: {e}", ep.address))?;
        return Ok(Box::new(tls));
    }
    match &ep.identity {
        Some(identity) => {
            let proxy = SocketAddr::new(ep.address.ip(), HBONE_PORT);
            let up = outbound
                .pool
                .connect(
                    proxy,
                    identity,
                    ep.address,
                    &baggage(&outbound.config.load().workload),
                )
                .await
                .map_err(|e| e.to_string())?;
            Ok(Box::new(up))
        }
        None => {
            let tcp = TcpStream::connect(ep.address)
                .await
                .map_err(|e| format!("connect {}: {e}", ep.address))?;
            let _ = tcp.set_nodelay(true);
            Ok(Box::new(tcp))
        }
    }
}

pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Why one attempt failed before a response came back.
enum Failure {
    /// No endpoint, or the cluster's host is unknown: not retried.
    Final(Box<Response<Body>>),
    /// Could not connect (Envoy's UF), or the connection ended or the
    /// stream was reset before a response (UC, UR, LR, UPE, with their
    /// status): retried when the policy says so.
    Connect(String, StatusCode, &'static str),
    /// No answer within the retry policy's `perTryTimeout`.
    PerTryTimeout,
}

/// One attempt on one endpoint; an endpoint that answers is left in
/// `upstream`.
async fn send_once(
    outbound: &Outbound,
    cluster: &Cluster,
    parts: &http::request::Parts,
    body: Body,
    upstream: &mut Option<Arc<ClusterEndpoint>>,
) -> Result<Response<Incoming>, Failure> {
    *upstream = None;
    if cluster.missing {
        return Err(Failure::Final(Box::new(flagged(
            StatusCode::SERVICE_UNAVAILABLE,
            "NC",
            &format!("no cluster for {}", cluster.host),
        ))));
    }
    let key = parts.extensions.get::<LbKey>().map(|k| k.0);
    let random = mix(outbound.counter.fetch_add(1, Ordering::Relaxed));
    let Some((ep, picked)) = outbound.tracker.pick(cluster, key, random) else {
        return Err(Failure::Final(Box::new(flagged(
            StatusCode::SERVICE_UNAVAILABLE,
            "UH",
            &format!("no healthy upstream in {}", cluster.name),
        ))));
    };
    // The downstream request's extensions stay behind.
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    // HTTP/2 to HTTP/2 and gRPC apps: gRPC keeps its trailers end to end.
    let client = outbound.clients.for_cluster(cluster);
    let resp = match client.request(ep.address, req).await {
        Ok(resp) => {
            outbound
                .tracker
                .report(cluster, &picked, Outcome::Status(resp.status().as_u16()));
            resp
        }
        Err(e) => {
            outbound
                .tracker
                .report(cluster, &picked, Outcome::ConnectFailure);
            let (status, flag) = if crate::upstream::before_connected(&*e) {
                (StatusCode::SERVICE_UNAVAILABLE, "UF")
            } else {
                crate::upstream::after_connected(&*e)
            };
            // `{:#}` prints the error with every cause behind it.
            return Err(Failure::Connect(
                format!("upstream: {:#}", anyhow::Error::from_boxed(e)),
                status,
                flag,
            ));
        }
    };
    *upstream = Some(ep.clone());
    Ok(resp)
}

/// Istio's retry loop: up to `attempts` more tries on the failures and
/// statuses `retry_on` names, each within `per_try_timeout`. The endpoint
/// that answered is left in `upstream`.
async fn send_with_retries(
    outbound: &Outbound,
    cluster: &Cluster,
    retry: &Retry,
    parts: &http::request::Parts,
    body: Replay,
    upstream: &mut Option<Arc<ClusterEndpoint>>,
) -> Response<Body> {
    // A streamed body can be sent once only: no retries.
    let (mut streaming, bytes, attempts) = match body {
        Replay::Streaming(b) => (Some(b), Bytes::new(), 0),
        Replay::Buffered(b) => (None, b, retry.attempts),
    };
    let mut tries = 0u32;
    // Held from the decision to retry until the next decision.
    let mut retrying: Option<crate::balance::Retrying> = None;
    loop {
        let body = match streaming.take() {
            Some(b) => b.boxed(),
            None => http_body_util::Full::new(bytes.clone())
                .map_err(|never| match never {})
                .boxed(),
        };
        let attempt = send_once(outbound, cluster, parts, body, upstream);
        let result = match retry.per_try_timeout {
            Some(t) => tokio::time::timeout(t, attempt)
                .await
                .unwrap_or(Err(Failure::PerTryTimeout)),
            None => attempt.await,
        };
        // Envoy treats a per-try timeout as a 504 from the upstream.
        let wanted = tries < attempts
            && match &result {
                Ok(resp) => retry.on_status(resp.status().as_u16()),
                Err(Failure::Final(_)) => false,
                Err(Failure::Connect(..)) => retry.on_connect_failure(),
                Err(Failure::PerTryTimeout) => retry.on_status(504),
            };
        // maxRetries bounds the retries in flight across the cluster; this
        // request's previous retry is over.
        drop(retrying.take());
        let budget = if wanted {
            outbound.tracker.admit_retry(cluster)
        } else {
            None
        };
        if budget.is_none() {
            return match result {
                Ok(resp) => resp.map(|b| b.boxed()),
                Err(Failure::Final(resp)) => *resp,
                Err(Failure::Connect(e, status, flag)) => flagged(
                    status,
                    if tries > 0 { "URX" } else { flag },
                    &format!("upstream connect error or disconnect before headers: {e}"),
                ),
                Err(Failure::PerTryTimeout) => flagged(
                    StatusCode::GATEWAY_TIMEOUT,
                    "UT",
                    "upstream request timeout",
                ),
            };
        }
        retrying = budget;
        tries += 1;
        // Envoy's default back-off: 25 ms base, jittered.
        let backoff = Duration::from_millis(25 * u64::from(tries) + mix(u64::from(tries)) % 25);
        tokio::time::sleep(backoff).await;
    }
}

/// A copy of the request to the mirror cluster; its answer is dropped.
/// Envoy appends `-shadow` to the authority of mirrored requests.
async fn shadow(
    outbound: &Outbound,
    cluster: Arc<Cluster>,
    parts: &http::request::Parts,
    body: Bytes,
) {
    let mut parts = parts.clone();
    if let Some(host) = parts.headers.get(HOST).and_then(|h| h.to_str().ok()) {
        let shadowed = match host.rsplit_once(':') {
            Some((h, p)) => format!("{h}-shadow:{p}"),
            None => format!("{host}-shadow"),
        };
        if let Ok(v) = HeaderValue::from_str(&shadowed) {
            parts.headers.insert(HOST, v);
        }
    }
    let body = http_body_util::Full::new(body)
        .map_err(|never| match never {})
        .boxed();
    let Some(ep) = pick_endpoint(outbound, &cluster).cloned() else {
        return;
    };
    let Ok(stream) = open(outbound, &cluster, &ep).await else {
        return;
    };
    tokio::spawn(async move {
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
        else {
            return;
        };
        tokio::spawn(conn);
        let _ = sender.send_request(Request::from_parts(parts, body)).await;
    });
}

/// CONNECT through the outbound listener: a TCP tunnel to an endpoint of
/// the service.
async fn connect(
    outbound: &Arc<Outbound>,
    config: &ProxyConfig,
    service: &OutboundService,
    req: Request<Incoming>,
    host: &str,
) -> Response<Body> {
    if !service.tls.is_empty() {
        return connect_by_sni(outbound, service, req, host);
    }
    let (mut stream, cluster, ep) = match open_tcp_route(outbound, config, service, host).await {
        Ok(opened) => opened,
        Err(refused) => return refused,
    };
    let outbound = outbound.clone();
    tokio::spawn(async move {
        if let Ok(up) = hyper::upgrade::on(req).await {
            relay(&outbound, cluster, &ep, &mut TokioIo::new(up), &mut stream).await;
        }
    });
    full(StatusCode::OK, "")
}

/// A stream to an endpoint of `service`'s TCP route (its default HTTP
/// route for an HTTP port), with the cluster and endpoint it went to; or
/// the answer to give instead.
pub(crate) async fn open_tcp_route(
    outbound: &Outbound,
    config: &ProxyConfig,
    service: &OutboundService,
    host: &str,
) -> Result<(Box<dyn Io>, Arc<Cluster>, Arc<ClusterEndpoint>), Response<Body>> {
    let weighted = if service.tcp.is_empty() {
        match service
            .routes
            .iter()
            .find(|r| r.matches.is_empty())
            .map(|r| &r.action)
        {
            Some(RouteAction::Forward(w)) => w.clone(),
            _ => Vec::new(),
        }
    } else {
        service.tcp.clone()
    };
    let no_cluster = || flagged(StatusCode::SERVICE_UNAVAILABLE, "NC", "no cluster");
    let chosen = pick_cluster(outbound, &weighted).ok_or_else(no_cluster)?;
    let cluster = find_cluster(outbound, config, &chosen.cluster, host)
        .await
        .ok_or_else(no_cluster)?;
    let ep = pick_endpoint(outbound, &cluster)
        .ok_or_else(|| flagged(StatusCode::SERVICE_UNAVAILABLE, "UH", "no healthy upstream"))?
        .clone();
    let stream = open(outbound, &cluster, &ep).await.map_err(|e| {
        flagged(
            StatusCode::SERVICE_UNAVAILABLE,
            "UF",
            &format!("upstream connect error: {e}"),
        )
    })?;
    Ok((stream, cluster.shared(), ep))
}

/// Bytes both ways between a client and the stream opened to endpoint
/// `ep` of `cluster`, counted in Istio's TCP metrics (`reporter="source"`).
pub(crate) async fn relay<A, B>(
    outbound: &Outbound,
    cluster: Arc<Cluster>,
    ep: &Arc<ClusterEndpoint>,
    client: &mut A,
    upstream: &mut B,
) where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let dest = DestService::Cluster(cluster);
    let labels = {
        let config = outbound.config.load();
        outbound_tcp_labels(&config.workload, ep, &dest)
    };
    outbound.metrics.tcp_opened(&labels);
    let (sent, received) = tokio::io::copy_bidirectional(client, upstream)
        .await
        .unwrap_or((0, 0));
    outbound.metrics.tcp_closed(&labels, sent, received);
}

/// CONNECT to a service with TLS routes: once the tunnel is up, the
/// ClientHello's SNI picks the route (VirtualService `tls`, `sniHosts`),
/// and the hello is replayed to the endpoint chosen. A hello that matches
/// no route (and no `tcp` route to fall back on) closes the tunnel.
fn connect_by_sni(
    outbound: &Arc<Outbound>,
    service: &OutboundService,
    req: Request<Incoming>,
    host: &str,
) -> Response<Body> {
    let (outbound, tls, tcp) = (outbound.clone(), service.tls.clone(), service.tcp.clone());
    let asked = host.to_string();
    tokio::spawn(async move {
        let Ok(up) = hyper::upgrade::on(req).await else {
            return;
        };
        let mut up = TokioIo::new(up);
        let Some((sni, hello)) = crate::sni::sniff(&mut up).await else {
            return;
        };
        let route = tls
            .iter()
            .find(|r| {
                sni.as_deref()
                    .is_some_and(|n| r.sni_hosts.iter().any(|h| host_matches(h, n)))
            })
            .map_or(&tcp, |r| &r.route);
        let config = outbound.config.load_full();
        let asked = sni.as_deref().unwrap_or(&asked);
        let chosen = pick_cluster(&outbound, route);
        let Some(cluster) = chosen.map(|w| find_cluster(&outbound, &config, &w.cluster, asked))
        else {
            tracing::debug!("TLS CONNECT: no route for SNI {sni:?}");
            return;
        };
        let Some(cluster) = cluster.await else {
            return;
        };
        let Some(ep) = pick_endpoint(&outbound, &cluster) else {
            return;
        };
        match open(&outbound, &cluster, ep).await {
            Ok(mut stream) => {
                // The hello read to route goes first, then both ways.
                if tokio::io::AsyncWriteExt::write_all(&mut stream, &hello)
                    .await
                    .is_ok()
                {
                    relay(&outbound, cluster.shared(), ep, &mut up, &mut stream).await;
                }
            }
            Err(e) => tracing::debug!("TLS CONNECT to {}: {e}", ep.address),
        }
    });
    full(StatusCode::OK, "")
}

/// ALLOW_ANY: a host the registry does not know goes straight where the
/// client asked (Istio's PassthroughCluster), by name or address.
async fn passthrough(
    outbound: &Arc<Outbound>,
    mut req: Request<Incoming>,
    host: &str,
    port: u16,
) -> Response<Body> {
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    if req.method() == Method::CONNECT {
        match TcpStream::connect(target.as_str()).await {
            Ok(mut stream) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    if let Ok(up) = hyper::upgrade::on(req).await {
                        let mut up = TokioIo::new(up);
                        let _ = tokio::io::copy_bidirectional(&mut up, &mut stream).await;
                    }
                });
                full(StatusCode::OK, "")
            }
            Err(e) => flagged(
                StatusCode::SERVICE_UNAVAILABLE,
                "UF",
                &format!("upstream connect error: {target}: {e}"),
            ),
        }
    } else {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/".to_string(), |p| p.to_string());
        match format!("http://{target}{path}").parse::<Uri>() {
            Ok(uri) => *req.uri_mut() = uri,
            Err(_) => return full(StatusCode::BAD_REQUEST, "bad request target\n"),
        }
        *req.version_mut() = http::Version::HTTP_11;
        req.headers_mut().remove(PROXY_CONNECTION);
        let downstream_upgrade = upgrade::requested(&mut req);
        match outbound
            .clients
            .passthrough
            .request(req.map(|b| b.boxed()))
            .await
        {
            Ok(mut resp) => {
                upgrade::bridge(downstream_upgrade, &mut resp);
                resp.map(|b| b.boxed())
            }
            Err(e) => flagged(
                StatusCode::SERVICE_UNAVAILABLE,
                "UF",
                &format!("upstream connect error: {:#}", anyhow::Error::new(e)),
            ),
        }
    }
}
