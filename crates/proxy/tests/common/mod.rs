//! Shared by the proxy integration tests: certificates for a workload,
//! the peer policy of a test mesh, and an HTTP/1.1 client.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use weft_identity::tls::PeerPolicy;
use weft_identity::{Ca, CertStore, LocalSigner, Rotator, SpiffeId, TrustDomain, TrustDomains};

/// A certificate for service account `sa` of namespace default.
pub fn store(ca: &Arc<Ca>, sa: &str) -> Arc<CertStore> {
    let id: SpiffeId = format!("spiffe://cluster.local/ns/default/sa/{sa}")
        .parse()
        .unwrap();
    let s = CertStore::new();
    Rotator::new(
        s.clone(),
        LocalSigner {
            ca: ca.clone(),
            id: id.clone(),
        },
        id,
        Duration::from_secs(3600),
    )
    .tick(SystemTime::now())
    .unwrap();
    s
}

pub fn policy(ca: &Ca) -> PeerPolicy {
    PeerPolicy {
        bundle: Arc::new(ca.bundle().clone()),
        trust_domains: TrustDomains::from(TrustDomain::new("cluster.local").unwrap()),
        expected: Vec::new(),
    }
}

/// One HTTP/1.1 request through `proxy`; `target` is an absolute URI or a
/// path (then `host` gives the Host header).
pub async fn get(
    proxy: SocketAddr,
    target: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let (status, _, body) = get_full(proxy, target, host, headers).await;
    (status, body)
}

pub async fn get_full(
    proxy: SocketAddr,
    target: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
) -> (StatusCode, hyper::HeaderMap, String) {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder().uri(target);
    if let Some(h) = host {
        req = req.header("host", h);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let resp_headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        resp_headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}
