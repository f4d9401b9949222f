//! The outbound listener (15001): the application's HTTP proxy. It takes
//! absolute-form requests (`curl -x`), CONNECT, and origin-form requests
//! routed by their Host header as Envoy's outbound listener does; routes
//! them by the compiled VirtualServices; and sends them to an endpoint,
//! through HBONE when the endpoint is in the mesh.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HOST, HeaderValue, LOCATION};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use weft_model::ProxyConfig;
use weft_model::config::{
    Cluster, ClusterEndpoint, OutboundService, RequestView, RouteAction, WeightedCluster,
};

use crate::hbone::{HBONE_PORT, Pool};
use crate::http::{Body, flagged, full};

/// What the outbound listener works with: the current config (swapped as a
/// whole on reload) and the HBONE pool.
#[derive(Debug)]
pub struct Outbound {
    pub config: Arc<ArcSwap<ProxyConfig>>,
    pub pool: Pool,
    /// Drives round robin and weighted picks.
    counter: AtomicU64,
}

impl Outbound {
    pub fn new(config: Arc<ArcSwap<ProxyConfig>>, pool: Pool) -> Outbound {
        Outbound {
            config,
            pool,
            counter: AtomicU64::new(0),
        }
    }
}

/// Serves the outbound listener until the task is dropped.
pub async fn serve(listener: TcpListener, outbound: Arc<Outbound>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let outbound = outbound.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let outbound = outbound.clone();
                async move { Ok::<_, hyper::Error>(handle(&outbound, req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .with_upgrades()
                .await;
        });
    }
}

/// Where a request is going: host without port, and port.
fn destination(req: &Request<Incoming>) -> Option<(String, u16)> {
    let authority = match req.uri().authority() {
        Some(a) => a.as_str().to_string(),
        None => req.headers().get(HOST)?.to_str().ok()?.to_string(),
    };
    let default_port = if req.uri().scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse() {
            Ok(p) => (h.to_string(), p),
            Err(_) => (authority.clone(), default_port),
        },
        _ => (authority.clone(), default_port),
    };
    Some((
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase(),
        port,
    ))
}

async fn handle(outbound: &Outbound, req: Request<Incoming>) -> Response<Body> {
    let Some((host, port)) = destination(&req) else {
        return full(
            StatusCode::BAD_REQUEST,
            "no Host header and no absolute URI\n",
        );
    };
    let config = outbound.config.load_full();
    let Some(service) = config
        .outbound
        .iter()
        .find(|s| u32::from(port) == s.port && s.answers_to(&host))
    else {
        return flagged(
            StatusCode::BAD_GATEWAY,
            "NR",
            &format!("no service {host}:{port} in the mesh registry"),
        );
    };
    if req.method() == Method::CONNECT {
        return connect(outbound, &config, service, req).await;
    }
    let headers = req.headers().clone();
    let lookup = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let authority = format!("{host}:{port}");
    let view = RequestView {
        method: req.method().as_str(),
        scheme: req.uri().scheme_str().unwrap_or("http"),
        authority: &authority,
        path: &path,
        port: u32::from(port),
        headers: &lookup,
    };
    let Some(route) = service.route(&view) else {
        return flagged(
            StatusCode::NOT_FOUND,
            "NR",
            &format!("no route matches in {}", service.host),
        );
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
    let timeout = route.timeout;
    let Some(cluster) = pick_cluster(outbound, weighted).and_then(|name| config.clusters.get(name))
    else {
        return flagged(StatusCode::SERVICE_UNAVAILABLE, "NC", "no cluster");
    };
    let forward = forward(outbound, cluster, req, &host, port);
    match timeout {
        Some(t) => match tokio::time::timeout(t, forward).await {
            Ok(resp) => resp,
            Err(_) => flagged(
                StatusCode::GATEWAY_TIMEOUT,
                "UT",
                "upstream request timeout",
            ),
        },
        None => forward.await,
    }
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

/// A cluster by weight (weights are relative, as in Istio).
fn pick_cluster<'a>(outbound: &Outbound, weighted: &'a [WeightedCluster]) -> Option<&'a str> {
    let total: u64 = weighted.iter().map(|w| u64::from(w.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut r = mix(outbound.counter.fetch_add(1, Ordering::Relaxed)) % total;
    for w in weighted {
        if r < u64::from(w.weight) {
            return Some(&w.cluster);
        }
        r -= u64::from(w.weight);
    }
    None
}

/// Round robin over the cluster's endpoints.
fn pick_endpoint<'a>(outbound: &Outbound, cluster: &'a Cluster) -> Option<&'a ClusterEndpoint> {
    if cluster.endpoints.is_empty() {
        return None;
    }
    let i = outbound.counter.fetch_add(1, Ordering::Relaxed) as usize % cluster.endpoints.len();
    cluster.endpoints.get(i)
}

/// SplitMix64: spreads a counter into uniform bits for weighted picks.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stream to the endpoint: through HBONE to its proxy when it is in the
/// mesh, else directly.
async fn open(outbound: &Outbound, ep: &ClusterEndpoint) -> Result<Box<dyn Io>, String> {
    match &ep.identity {
        Some(identity) => {
            let proxy = SocketAddr::new(ep.address.ip(), HBONE_PORT);
            let up = outbound
                .pool
                .connect(proxy, identity, ep.address)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Box::new(TokioIo::new(up)))
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

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

async fn forward(
    outbound: &Outbound,
    cluster: &Cluster,
    mut req: Request<Incoming>,
    host: &str,
    port: u16,
) -> Response<Body> {
    if cluster.missing {
        return flagged(
            StatusCode::SERVICE_UNAVAILABLE,
            "NC",
            &format!("no cluster for {}", cluster.host),
        );
    }
    let Some(ep) = pick_endpoint(outbound, cluster) else {
        return flagged(
            StatusCode::SERVICE_UNAVAILABLE,
            "UH",
            &format!("no healthy upstream in {}", cluster.name),
        );
    };
    let stream = match open(outbound, ep).await {
        Ok(s) => s,
        Err(e) => {
            return flagged(
                StatusCode::SERVICE_UNAVAILABLE,
                "UF",
                &format!("upstream connect error: {e}"),
            );
        }
    };
    // The upstream gets an origin-form request with the Host it was sent to.
    let path = req
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    if let Ok(uri) = path.parse::<Uri>() {
        *req.uri_mut() = uri;
    }
    if !req.headers().contains_key(HOST) {
        let value = if port == 80 {
            host.to_string()
        } else {
            format!("{host}:{port}")
        };
        if let Ok(v) = HeaderValue::from_str(&value) {
            req.headers_mut().insert(HOST, v);
        }
    }
    req.headers_mut().remove("proxy-connection");
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => {
            return flagged(
                StatusCode::SERVICE_UNAVAILABLE,
                "UF",
                &format!("upstream handshake: {e}"),
            );
        }
    };
    tokio::spawn(conn);
    match sender.send_request(req).await {
        Ok(resp) => resp.map(|b| b.boxed()),
        Err(e) => flagged(
            StatusCode::SERVICE_UNAVAILABLE,
            "UC",
            &format!("upstream connection closed: {e}"),
        ),
    }
}

/// CONNECT through the outbound listener: a TCP tunnel to an endpoint of
/// the service.
async fn connect(
    outbound: &Outbound,
    config: &ProxyConfig,
    service: &OutboundService,
    req: Request<Incoming>,
) -> Response<Body> {
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
    let Some(cluster) = pick_cluster(outbound, &weighted).and_then(|n| config.clusters.get(n))
    else {
        return flagged(StatusCode::SERVICE_UNAVAILABLE, "NC", "no cluster");
    };
    let Some(ep) = pick_endpoint(outbound, cluster) else {
        return flagged(StatusCode::SERVICE_UNAVAILABLE, "UH", "no healthy upstream");
    };
    let mut stream = match open(outbound, ep).await {
        Ok(s) => s,
        Err(e) => {
            return flagged(
                StatusCode::SERVICE_UNAVAILABLE,
                "UF",
                &format!("upstream connect error: {e}"),
            );
        }
    };
    tokio::spawn(async move {
        if let Ok(up) = hyper::upgrade::on(req).await {
            let mut up = TokioIo::new(up);
            let _ = tokio::io::copy_bidirectional(&mut up, &mut stream).await;
        }
    });
    full(StatusCode::OK, "")
}
