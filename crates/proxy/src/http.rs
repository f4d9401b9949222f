//! Bodies and small responses shared by the listeners.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Response, StatusCode};

/// Every response body the proxy sends: streamed from upstream or local.
pub type Body = BoxBody<Bytes, hyper::Error>;

pub fn full(status: StatusCode, text: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(text.into()).map_err(never).boxed());
    *resp.status_mut() = status;
    resp
}

pub fn empty() -> Body {
    Empty::new().map_err(never).boxed()
}

/// A local answer with Envoy's response flag, as Envoy's sidecar gives it.
pub fn flagged(status: StatusCode, flag: &'static str, text: &str) -> Response<Body> {
    let mut resp = full(status, format!("{text}\n"));
    resp.extensions_mut().insert(ResponseFlag(flag));
    resp
}

/// Envoy's response flag for a request the proxy answered itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseFlag(pub &'static str);

fn never(e: Infallible) -> hyper::Error {
    match e {}
}

/// Normalizes the request's path in place (MeshConfig `pathNormalization`),
/// so that routing, authorization and the application all see the same
/// path; a request already normal is left untouched.
pub fn normalize_request<B>(
    req: &mut hyper::Request<B>,
    mode: weft_model::normalize::Normalization,
) -> Result<(), weft_model::normalize::NormalizeError> {
    let raw = req.uri().path_and_query().map_or("/", |p| p.as_str());
    if weft_model::normalize::is_normal(raw, mode) {
        return Ok(());
    }
    let target = weft_model::normalize::normalize(raw, mode)?;
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = target.to_uri_string().parse().ok();
    if let Ok(uri) = hyper::Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    Ok(())
}

/// Accepts connections on `listener` until the task is dropped; each,
/// with TCP_NODELAY set, is handled by `handle` on a task of its own.
pub async fn serve_each<F, Fut>(listener: tokio::net::TcpListener, handle: F)
where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(handle(tcp, peer));
    }
}
