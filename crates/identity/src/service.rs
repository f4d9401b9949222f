//! The certificate service: gRPC `istio.v1.auth.IstioCertificateService/
//! CreateCertificate`, wire-compatible with Istio's, served over TLS.
//!
//! The caller is authenticated by a bootstrap token (`authorization: Bearer
//! weft1...`) or by its current mesh certificate; the certificate is issued
//! for that identity, whatever the CSR asks for.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};
use weft_protocol::istio_ca::istio_certificate_service_client::IstioCertificateServiceClient;
use weft_protocol::istio_ca::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use weft_protocol::istio_ca::{IstioCertificateRequest, IstioCertificateResponse};

use crate::ca::Ca;
use crate::spiffe::SpiffeId;
use crate::tls::{self, PeerPolicy};
use crate::workload::CertStore;

/// The gRPC service over a CA.
#[derive(Debug, Clone)]
pub struct CertService {
    ca: Arc<Ca>,
}

impl CertService {
    pub fn new(ca: Arc<Ca>) -> CertService {
        CertService { ca }
    }

    /// Who is asking: a valid bootstrap token wins, else the verified mesh
    /// certificate of the connection.
    fn caller<T>(&self, req: &Request<T>) -> Result<SpiffeId, Status> {
        if let Some(value) = req.metadata().get("authorization") {
            let value = value
                .to_str()
                .map_err(|_| Status::unauthenticated("authorization header is not text"))?;
            let token = value
                .strip_prefix("Bearer ")
                .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
            return crate::token::verify(token, self.ca.certificate(), SystemTime::now())
                .map_err(|e| Status::unauthenticated(format!("bootstrap token refused: {e}")));
        }
        req.extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.identity.clone())
            .ok_or_else(|| Status::unauthenticated("no credentials: present a mesh certificate or a bootstrap token (weft token issue)"))
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CertService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let id = self.caller(&request)?;
        let req = request.into_inner();
        let csr =
            CertificateSigningRequestDer::from_pem_slice(req.csr.as_bytes()).map_err(|e| {
                Status::invalid_argument(format!("csr: not a PEM certificate request: {e}"))
            })?;
        let ttl = u64::try_from(req.validity_duration)
            .ok()
            .filter(|s| *s > 0)
            .map(Duration::from_secs);
        let chain = self
            .ca
            .sign_csr(csr.as_ref(), &id, ttl, SystemTime::now())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let mut cert_chain: Vec<String> = chain.iter().map(|c| crate::pem::encode_one(c)).collect();
        // Istio ends the chain with the root.
        if let Some(root) = self.ca.bundle().roots().first() {
            if chain.last() != Some(root) {
                cert_chain.push(crate::pem::encode_one(root));
            }
        }
        Ok(Response::new(IstioCertificateResponse { cert_chain }))
    }
}

/// What a service learns about a TLS connection.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// The verified SPIFFE ID, when the client presented a certificate.
    pub identity: Option<SpiffeId>,
}

/// A server-side TLS connection that tells tonic who is on the other end.
#[derive(Debug)]
pub struct TlsConn(pub tokio_rustls::server::TlsStream<TcpStream>);

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        let (tcp, conn) = self.0.get_ref();
        PeerInfo {
            remote: tcp.peer_addr().ok(),
            identity: tls::peer_identity(conn),
        }
    }
}

impl tokio::io::AsyncRead for TlsConn {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for TlsConn {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Accepted TLS connections, as tonic's `serve_with_incoming` takes them.
pub type Incoming = tokio_stream::wrappers::ReceiverStream<Result<TlsConn, std::io::Error>>;

/// TLS connections accepted on `listener`, for a tonic server: handshakes
/// run beside the accept loop, so a slow client holds up nobody, and a
/// failed handshake is that client's problem only. `store` holds the
/// server's own certificate; clients may come without one. The accept loop
/// ends when the returned task is aborted.
pub fn tls_incoming(
    listener: TcpListener,
    store: Arc<CertStore>,
    policy: PeerPolicy,
) -> Result<(Incoming, tokio::task::JoinHandle<()>), tls::TlsError> {
    let config = tls::server_config_optional_client(store, policy, &[b"h2"])?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<TlsConn, std::io::Error>>(64);
    let accept = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    let _ = tx.send(Ok(TlsConn(tls))).await;
                }
            });
        }
    });
    Ok((tokio_stream::wrappers::ReceiverStream::new(rx), accept))
}

/// Serves the certificate service on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    service: CertService,
    store: Arc<CertStore>,
    policy: PeerPolicy,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServiceError> {
    let (incoming, accept) = tls_incoming(listener, store, policy)?;
    let result = tonic::transport::Server::builder()
        .add_service(IstioCertificateServiceServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    accept.abort();
    result.map_err(|e| ServiceError::Transport(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("certificate service: {0}")]
    Transport(String),
    #[error("certificate service refused: {0}")]
    Refused(String),
    #[error("certificate service answer: {0}")]
    Answer(String),
}

/// A gRPC channel to the control plane at `addr` over mTLS: the client
/// presents the certificate in `store` (when it has one) and verifies the
/// server's against `policy`. The channel reconnects by itself.
pub async fn channel(
    addr: SocketAddr,
    store: Arc<CertStore>,
    policy: PeerPolicy,
) -> Result<tonic::transport::Channel, ServiceError> {
    let config = Arc::new(tls::client_config(store, policy, &[b"h2"])?);
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let config = config.clone();
        async move {
            let tcp = TcpStream::connect(addr).await?;
            let name = ServerName::try_from("weft-control-plane").map_err(std::io::Error::other)?;
            let tls = TlsConnector::from(config).connect(name, tcp).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    tonic::transport::Endpoint::from_static("http://weft-control-plane")
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        .connect_with_connector(connector)
        .await
        .map_err(|e| ServiceError::Transport(format!("{:#}", anyhow::Error::new(e))))
}

/// Asks the certificate service at `addr` for a certificate for `csr`,
/// authenticating with `token` or, without one, with the certificate in
/// `store`. The service's own certificate is verified against `policy`.
pub async fn request_certificate(
    addr: SocketAddr,
    store: Arc<CertStore>,
    policy: PeerPolicy,
    token: Option<&str>,
    csr_der: &[u8],
    ttl: Duration,
) -> Result<Vec<CertificateDer<'static>>, ServiceError> {
    let mut client = IstioCertificateServiceClient::new(channel(addr, store, policy).await?);
    let csr = crate::pem::block("CERTIFICATE REQUEST", csr_der);
    let mut request = Request::new(IstioCertificateRequest {
        csr,
        validity_duration: i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX),
        metadata: None,
    });
    if let Some(token) = token {
        let value = format!("Bearer {}", token.trim())
            .parse()
            .map_err(|_| ServiceError::Refused("the token is not valid header text".into()))?;
        request.metadata_mut().insert("authorization", value);
    }
    let response = client
        .create_certificate(request)
        .await
        .map_err(|s| ServiceError::Refused(format!("{:?}: {}", s.code(), s.message())))?;
    let mut chain = Vec::new();
    for pem in response.into_inner().cert_chain {
        chain.extend(
            crate::pem::certificates(pem.as_bytes(), "cert_chain")
                .map_err(|e| ServiceError::Answer(e.to_string()))?,
        );
    }
    // The workload keeps the leaf and intermediates; the root is in its bundle.
    if chain.len() > 1 {
        chain.pop();
    }
    Ok(chain)
}
