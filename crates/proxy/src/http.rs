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
/// path; a request already normal is left untouched. The host is the
/// caller's to strip first (`strip_host_dot`).
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

/// `example.com.` is `example.com` written as an absolute name: the Host
/// (and an absolute URI's authority) lose the final dot before routing and
/// authorization, so that a policy on `example.com` cannot be stepped
/// around by adding it.
pub(crate) fn strip_host_dot<B>(req: &mut hyper::Request<B>) {
    fn stripped(authority: &str) -> Option<String> {
        // Most names have no dot to strip: none at the end, none before a port.
        let b = authority.as_bytes();
        let dot_before_port = memchr::memrchr(b':', b).is_some_and(|i| i > 0 && b[i - 1] == b'.');
        if b.last() != Some(&b'.') && !dot_before_port {
            return None;
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !p.contains(']') && !h.ends_with(':') => (h, Some(p)),
            _ => (authority, None),
        };
        let host = host.strip_suffix('.').filter(|h| !h.is_empty())?;
        Some(match port {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        })
    }
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(stripped);
    if let Some(v) = host.and_then(|h| hyper::header::HeaderValue::from_str(&h).ok()) {
        req.headers_mut().insert(hyper::header::HOST, v);
    }
    if let Some(authority) = req.uri().authority().and_then(|a| stripped(a.as_str())) {
        let mut parts = req.uri().clone().into_parts();
        parts.authority = authority.parse().ok();
        if let Ok(uri) = hyper::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_final_dot_leaves_the_host() {
        let host = |h: &str| {
            let mut req = hyper::Request::builder()
                .uri(format!("http://{h}/x"))
                .header("host", h)
                .body(())
                .unwrap();
            super::strip_host_dot(&mut req);
            (
                req.headers()["host"].to_str().unwrap().to_string(),
                req.uri().authority().unwrap().to_string(),
            )
        };
        for (given, want) in [
            ("admin.example.com.", "admin.example.com"),
            ("admin.example.com.:8080", "admin.example.com:8080"),
            ("admin.example.com", "admin.example.com"),
            ("admin.example.com:8080", "admin.example.com:8080"),
            ("[::1]:80", "[::1]:80"),
            ("10.0.0.1", "10.0.0.1"),
        ] {
            assert_eq!(host(given), (want.to_string(), want.to_string()), "{given}");
        }
    }
}
