//! rustls configurations for mesh mTLS: both sides present their SPIFFE
//! certificate from a [`CertStore`] and verify the peer's chain against the
//! trust bundle, its single SPIFFE URI SAN and its trust domain. TLS 1.3 is
//! offered first; TLS 1.2 only with ECDHE and AEAD suites.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::bundle::{TrustBundle, Usage, VerifyError};
use crate::cert::CertInfo;
use crate::spiffe::{SpiffeId, TrustDomains};
use crate::workload::CertStore;

/// The crypto weft speaks: ring, with strong suites only.
pub fn provider() -> Arc<CryptoProvider> {
    use rustls::crypto::ring::cipher_suite as cs;
    let base = rustls::crypto::ring::default_provider();
    Arc::new(CryptoProvider {
        cipher_suites: vec![
            cs::TLS13_AES_128_GCM_SHA256,
            cs::TLS13_AES_256_GCM_SHA384,
            cs::TLS13_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ],
        ..base
    })
}

// Each error's message carries its cause, which is therefore not chained
// as a source as well (a chain printer would say it twice).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Config(e)
    }
}

/// What a verifier accepts.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    pub bundle: Arc<TrustBundle>,
    pub trust_domains: TrustDomains,
    /// When not empty, the peer must be one of these identities.
    pub expected: Vec<SpiffeId>,
}

impl PeerPolicy {
    fn check(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        usage: Usage,
        now: UnixTime,
    ) -> Result<SpiffeId, rustls::Error> {
        let id = self
            .bundle
            .verify_svid(leaf, intermediates, usage, &self.trust_domains, now)
            .map_err(reject)?;
        // An expected identity in one of the mesh's trust domains matches
        // the same namespace and service account in any of them (Istio's
        // trustDomainAliases); the verifier has already checked that the
        // peer's own domain is one of them.
        let matches = |e: &SpiffeId| {
            *e == id
                || (self.trust_domains.allows(e.trust_domain())
                    && e.namespace() == id.namespace()
                    && e.service_account() == id.service_account())
        };
        if !self.expected.is_empty() && !self.expected.iter().any(matches) {
            let expected: Vec<String> = self.expected.iter().map(ToString::to_string).collect();
            return Err(reject(VerifyError::Identity(format!(
                "peer is {id}, expected {}",
                expected.join(" or ")
            ))));
        }
        Ok(id)
    }
}

fn reject(e: VerifyError) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(e),
    )))
}

/// Server side: mTLS required, the client's certificate verified.
pub fn server_config(
    store: Arc<CertStore>,
    policy: PeerPolicy,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TlsError> {
    server_config_with(store, policy, alpn, true)
}

/// Server side for the certificate service: a client without a certificate
/// yet may connect (it authenticates with a bootstrap token instead); a
/// certificate, when presented, must still verify.
pub fn server_config_optional_client(
    store: Arc<CertStore>,
    policy: PeerPolicy,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TlsError> {
    server_config_with(store, policy, alpn, false)
}

fn server_config_with(
    store: Arc<CertStore>,
    policy: PeerPolicy,
    alpn: &[&[u8]],
    mandatory: bool,
) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(SpiffeClientVerifier {
        policy,
        algs: provider.signature_verification_algorithms,
        mandatory,
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(store);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// Client side: presents the workload certificate, verifies the server's.
pub fn client_config(
    store: Arc<CertStore>,
    policy: PeerPolicy,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier = Arc::new(SpiffeServerVerifier {
        policy,
        algs: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(store);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The verified identity of the peer of a finished handshake.
pub fn peer_identity(conn: &rustls::CommonState) -> Option<SpiffeId> {
    let leaf = conn.peer_certificates()?.first()?;
    CertInfo::parse(leaf).ok()?.spiffe_id().ok()
}

#[derive(Debug)]
struct SpiffeServerVerifier {
    policy: PeerPolicy,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The SPIFFE ID, not the DNS name, is what identifies a mesh peer.
        self.policy
            .check(end_entity, intermediates, Usage::Server, now)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[derive(Debug)]
struct SpiffeClientVerifier {
    policy: PeerPolicy,
    algs: WebPkiSupportedAlgorithms,
    mandatory: bool,
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.policy
            .check(end_entity, intermediates, Usage::Client, now)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}
