//! TLS originated by the proxy (DestinationRule `tls.mode` SIMPLE or
//! MUTUAL): the application speaks plain HTTP or TCP, the proxy speaks TLS
//! to the endpoint. The server is verified against `caCertificates` (the
//! system's roots when unset) and must carry one of `subjectAltNames` (the
//! SNI name when that list is empty), unless `insecureSkipVerify`; MUTUAL
//! presents `clientCertificate` with `privateKey`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use weft_model::Protocol;
use weft_model::policy::Origination;

/// Where Debian keeps the system's trusted roots.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

#[derive(Debug, Clone, thiserror::Error)]
pub enum OriginationError {
    #[error("{field} {path}: {cause}")]
    File {
        field: &'static str,
        path: String,
        cause: String,
    },
    #[error("tls.mode MUTUAL needs clientCertificate and privateKey")]
    MissingClientCert,
    #[error("TLS configuration: {0}")]
    Config(String),
    #[error("invalid SNI {0:?}")]
    Sni(String),
}

/// Client configurations built from DestinationRule settings, kept so that
/// files are read once per setting.
#[derive(Debug)]
pub struct Originator {
    configs: RwLock<HashMap<(Origination, bool), Arc<ClientConfig>>>,
    /// Where `credentialName` folders are.
    credentials: PathBuf,
    /// The roots for servers whose DestinationRule names no CA.
    system_roots: PathBuf,
}

impl Default for Originator {
    fn default() -> Self {
        Originator::new(PathBuf::new(), None)
    }
}

impl Originator {
    /// An originator reading `credentialName` folders in `credentials`,
    /// trusting `system_roots` (else `SSL_CERT_FILE`, else the system's
    /// bundle) where a DestinationRule names no CA.
    pub fn new(credentials: PathBuf, system_roots: Option<PathBuf>) -> Originator {
        let system_roots = system_roots
            .or_else(|| std::env::var_os("SSL_CERT_FILE").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(SYSTEM_ROOTS));
        Originator {
            configs: RwLock::default(),
            credentials,
            system_roots,
        }
    }

    /// The client configuration for `o`; `h2` offers HTTP/2 by ALPN.
    pub fn config(&self, o: &Origination, h2: bool) -> Result<Arc<ClientConfig>, OriginationError> {
        let key = (o.clone(), h2);
        if let Some(c) = self.configs.read().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(c);
        }
        let roots = self.system_roots.to_string_lossy();
        let config = Arc::new(build(&self.files(o), h2, &roots)?);
        if let Ok(mut m) = self.configs.write() {
            m.insert(key, config.clone());
        }
        Ok(config)
    }

    /// A TLS connection to `addr` for a cluster of `host` speaking
    /// `protocol`.
    pub async fn connect(
        &self,
        o: &Origination,
        protocol: Protocol,
        host: &str,
        addr: SocketAddr,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let h2 = matches!(protocol, Protocol::Http2 | Protocol::Grpc);
        let config = self.config(o, h2).map_err(std::io::Error::other)?;
        let sni = o.sni.as_deref().unwrap_or(host);
        let name = ServerName::try_from(sni.to_string())
            .map_err(|_| std::io::Error::other(OriginationError::Sni(sni.into())))?;
        let tcp = TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        TlsConnector::from(config).connect(name, tcp).await
    }
}

/// The files of credential `name` in `dir`, as the Kubernetes secret of
/// that name would hold them: `tls.crt`, `tls.key`, and `ca.crt` in the
/// folder or, as Istio also reads it, in `<name>-cacert`.
#[derive(Debug)]
pub(crate) struct Credential {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// None when neither folder has a `ca.crt`.
    pub ca: Option<PathBuf>,
}

impl Credential {
    pub(crate) fn in_dir(dir: &Path, name: &str) -> Credential {
        let folder = dir.join(name);
        let ca = [
            folder.join("ca.crt"),
            dir.join(format!("{name}-cacert")).join("ca.crt"),
        ]
        .into_iter()
        .find(|p| p.exists());
        Credential {
            cert: folder.join("tls.crt"),
            key: folder.join("tls.key"),
            ca,
        }
    }
}

impl Originator {
    /// `o` with the files of its `credentialName` folder where it names
    /// none of its own; with no CA at all, the system's roots apply.
    fn files(&self, o: &Origination) -> Origination {
        let mut o = o.clone();
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        if let Some(name) = &o.credential_name {
            let cred = Credential::in_dir(&self.credentials, name);
            o.client_certificate.get_or_insert_with(|| path(cred.cert));
            o.private_key.get_or_insert_with(|| path(cred.key));
            if o.ca_certificates.is_none() {
                o.ca_certificates = cred.ca.map(path);
            }
        }
        o
    }
}

fn read(field: &'static str, path: &str) -> Result<Vec<u8>, OriginationError> {
    std::fs::read(path).map_err(|e| OriginationError::File {
        field,
        path: path.into(),
        cause: e.to_string(),
    })
}

fn certs(
    field: &'static str,
    path: &str,
) -> Result<Vec<CertificateDer<'static>>, OriginationError> {
    let pem = read(field, path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| OriginationError::File {
            field,
            path: path.into(),
            cause: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(OriginationError::File {
            field,
            path: path.into(),
            cause: "no PEM certificate in it".into(),
        });
    }
    Ok(certs)
}

fn build(o: &Origination, h2: bool, system_roots: &str) -> Result<ClientConfig, OriginationError> {
    let provider = weft_identity::tls::provider();
    let algs = provider.signature_verification_algorithms;
    let inner = if o.insecure_skip_verify {
        None
    } else {
        let (field, path) = match &o.ca_certificates {
            Some(p) => ("caCertificates", p.as_str()),
            None => ("system roots", system_roots),
        };
        let mut roots = RootCertStore::empty();
        for cert in certs(field, path)? {
            roots
                .add(cert)
                .map_err(|e| OriginationError::Config(e.to_string()))?;
        }
        Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| OriginationError::Config(e.to_string()))?,
        )
    };
    let names = o
        .subject_alt_names
        .iter()
        .map(|n| {
            ServerName::try_from(n.clone())
                .map_err(|_| OriginationError::Config(format!("subjectAltNames: invalid {n:?}")))
        })
        .collect::<Result<_, _>>()?;
    let verifier = Arc::new(Verifier { inner, names, algs });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| OriginationError::Config(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = if o.mutual {
        let (Some(cert), Some(key)) = (&o.client_certificate, &o.private_key) else {
            return Err(OriginationError::MissingClientCert);
        };
        let chain = certs("clientCertificate", cert)?;
        let key = PrivateKeyDer::from_pem_slice(&read("privateKey", key)?).map_err(|e| {
            OriginationError::File {
                field: "privateKey",
                path: key.clone(),
                cause: e.to_string(),
            }
        })?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| OriginationError::Config(e.to_string()))?
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = if h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(config)
}

/// Verifies the chain with webpki, and the name against the
/// subjectAltNames when given, else against the SNI. Without an inner
/// verifier (`insecureSkipVerify`) any certificate is accepted, but the
/// handshake signatures are still checked.
#[derive(Debug)]
struct Verifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    names: Vec<ServerName<'static>>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else {
            return Ok(ServerCertVerified::assertion());
        };
        if self.names.is_empty() {
            return inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        }
        let mut last = None;
        for name in &self.names {
            match inner.verify_server_cert(end_entity, intermediates, name, ocsp, now) {
                Ok(v) => return Ok(v),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(rustls::Error::General("no subjectAltNames".into())))
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
