//! weft's control plane: watches a folder of Istio YAML, validates each
//! change as a whole (a set that fails keeps the last good one in force),
//! compiles every connected proxy's configuration with `weft-model` and
//! pushes it over the `weft.mesh.v1` stream, beside the certificate
//! service, on one mTLS port. Stateless apart from the CA key.

pub mod metrics;
pub mod server;
pub mod source;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Response, StatusCode};
use tokio::net::TcpListener;
use weft_identity::service::{self, CertService, ServiceError};
use weft_identity::tls::PeerPolicy;
use weft_identity::{Ca, CertStore, SpiffeId, TrustDomain};
use weft_protocol::istio_ca::istio_certificate_service_server::IstioCertificateServiceServer;
use weft_protocol::mesh::config_service_server::ConfigServiceServer;

pub use server::{ControlPlane, Service};
pub use source::Folder;

/// istiod's ports: the mTLS gRPC port proxies connect to, and monitoring.
pub const GRPC_PORT: u16 = 15012;
pub const MONITORING_PORT: u16 = 15014;

/// The control plane's own identity, which proxies expect of it.
pub fn identity(trust_domain: &TrustDomain) -> SpiffeId {
    SpiffeId::new(trust_domain.clone(), "istio-system", "weft-control-plane")
        .unwrap_or_else(|_| unreachable!("a valid namespace and service account"))
}

/// Serves the configuration stream, status, config dumps and the
/// certificate service on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    control: Arc<ControlPlane>,
    ca: Arc<Ca>,
    store: Arc<CertStore>,
    policy: PeerPolicy,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServiceError> {
    let (incoming, accept) = service::tls_incoming(listener, store, policy)?;
    let result = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .add_service(IstioCertificateServiceServer::new(CertService::new(ca)))
        .add_service(ConfigServiceServer::new(Service(control)))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    accept.abort();
    result.map_err(|e| ServiceError::Transport(e.to_string()))
}

/// The monitoring port: `/metrics` (Prometheus) and `/ready`.
pub async fn serve_monitoring(listener: TcpListener, control: Arc<ControlPlane>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let control = control.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let (status, body) = match req.uri().path() {
                    "/metrics" => (StatusCode::OK, control.metrics.encode()),
                    "/ready" => (StatusCode::OK, "ready\n".to_string()),
                    _ => (
                        StatusCode::NOT_FOUND,
                        "try /metrics or /ready\n".to_string(),
                    ),
                };
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                *resp.status_mut() = status;
                std::future::ready(Ok::<_, std::convert::Infallible>(resp))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// Where `weft status` and `weft config-dump` find the control plane.
pub fn parse_url(url: &str) -> Result<SocketAddr, String> {
    let rest = url.strip_prefix("https://").unwrap_or(url);
    let rest = rest.trim_end_matches('/');
    rest.parse().map_err(|_| {
        format!("{url:?}: expected https://IP:PORT (e.g. https://127.0.0.1:{GRPC_PORT})")
    })
}
