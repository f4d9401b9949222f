//! The mesh certificate authority, kept in one directory in Istio's plug-in
//! layout:
//!
//! | file | content |
//! | --- | --- |
//! | `ca-cert.pem` | the signing certificate |
//! | `ca-key.pem` | its PKCS#8 private key, mode 0600 |
//! | `root-cert.pem` | the trust bundle: one or more roots |
//! | `cert-chain.pem` | from the signing certificate up to (not including) the root |
//!
//! `Ca::init` makes a self-signed ECDSA P-256 root in that layout. A CA made
//! elsewhere (an intermediate under an organisation's root, RSA ≥ 2048 or
//! ECDSA) is loaded as is and its chain served with every leaf.
//!
//! The CA signs whatever identity its caller was authenticated as: the
//! subject, SANs and extensions of a CSR are ignored, only its public key
//! (and the CSR's own signature) is used.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::bundle::TrustBundle;
use crate::cert::{CertInfo, KeyKind};
use crate::pem;
use crate::spiffe::{SpiffeId, TrustDomain};

pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const ROOT_CERT: &str = "root-cert.pem";
pub const CERT_CHAIN: &str = "cert-chain.pem";

/// Leaf lifetime when the caller asks for none: 24 hours.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest leaf lifetime the CA grants: 7 days.
pub const MAX_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// A self-signed root lives ten years.
const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Leaves are backdated this much for clocks that run behind.
const BACKDATE: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{dir}: a CA already exists here ({file}); refusing to overwrite it")]
    Exists { dir: PathBuf, file: &'static str },
    #[error(transparent)]
    Pem(#[from] pem::PemError),
    #[error(
        "{file}: {detail}; the key must be PKCS#8 (-----BEGIN PRIVATE KEY-----): convert with `openssl pkcs8 -topk8 -nocrypt -in {file}`"
    )]
    Key { file: String, detail: String },
    #[error("{file}: {detail}")]
    Certificate { file: String, detail: String },
    #[error("CSR: {0}")]
    Csr(String),
    #[error("signing: {0}")]
    Sign(String),
    #[error("identity {id} is not in this CA's trust domain {trust_domain}")]
    ForeignTrustDomain { id: String, trust_domain: String },
}

/// A loaded CA, ready to sign.
pub struct Ca {
    /// The signing certificate's name and key identifier, with its key.
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
    /// Intermediates between the signing certificate and a root.
    chain: Vec<CertificateDer<'static>>,
    bundle: TrustBundle,
    trust_domain: TrustDomain,
    not_after: SystemTime,
    max_ttl: Duration,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("trust_domain", &self.trust_domain)
            .field("chain", &self.chain.len())
            .field("roots", &self.bundle.roots().len())
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Creates a self-signed ECDSA P-256 root in `dir`; refuses to touch a
    /// directory that already holds any of the four files.
    pub fn init(dir: &Path, trust_domain: &TrustDomain, now: SystemTime) -> Result<Ca, CaError> {
        for file in [CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN] {
            if dir.join(file).exists() {
                return Err(CaError::Exists {
                    dir: dir.into(),
                    file,
                });
            }
        }
        std::fs::create_dir_all(dir).map_err(|cause| CaError::Io {
            path: dir.into(),
            cause,
        })?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, trust_domain.as_str());
        dn.push(DnType::CommonName, "weft root CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.subject_alt_names = vec![SanType::URI(ia5(&trust_domain.id())?)];
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + ROOT_TTL).into();
        params.serial_number = Some(random_serial()?);
        let cert = params
            .self_signed(&key)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let pem = cert.pem();
        write(dir, CA_CERT, pem.as_bytes(), 0o644)?;
        write(dir, ROOT_CERT, pem.as_bytes(), 0o644)?;
        write(dir, CERT_CHAIN, pem.as_bytes(), 0o644)?;
        write(dir, CA_KEY, key.serialize_pem().as_bytes(), 0o600)?;
        Ca::load(dir, Some(trust_domain))
    }

    /// Loads the CA in `dir`. The trust domain is the one in the signing
    /// certificate's SPIFFE URI SAN, else `trust_domain`, else
    /// `cluster.local`.
    pub fn load(dir: &Path, trust_domain: Option<&TrustDomain>) -> Result<Ca, CaError> {
        let read = |file: &str| {
            std::fs::read(dir.join(file)).map_err(|cause| CaError::Io {
                path: dir.join(file),
                cause,
            })
        };
        let cert_pem = read(CA_CERT)?;
        let key_pem = String::from_utf8(read(CA_KEY)?).map_err(|_| CaError::Key {
            file: CA_KEY.into(),
            detail: "not PEM text".into(),
        })?;
        let roots = pem::certificates(&read(ROOT_CERT)?, ROOT_CERT)?;
        let cert = pem::certificates(&cert_pem, CA_CERT)?.remove(0);
        let chain_file = pem::certificates(&read(CERT_CHAIN)?, CERT_CHAIN)?;
        let info = CertInfo::parse(&cert).map_err(|detail| CaError::Certificate {
            file: CA_CERT.into(),
            detail,
        })?;
        if !info.is_ca {
            return Err(CaError::Certificate {
                file: CA_CERT.into(),
                detail: "not a CA certificate (basicConstraints CA:TRUE is missing)".into(),
            });
        }
        if let KeyKind::Rsa(bits) = info.key {
            if bits < 2048 {
                return Err(CaError::Certificate {
                    file: CA_CERT.into(),
                    detail: format!("RSA key of {bits} bits is too weak: at least 2048 required"),
                });
            }
        }
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::Key {
            file: CA_KEY.into(),
            detail: e.to_string(),
        })?;
        if info.spki != rcgen::PublicKeyData::subject_public_key_info(&key) {
            return Err(CaError::Key {
                file: CA_KEY.into(),
                detail: format!("this key does not belong to the certificate in {CA_CERT}"),
            });
        }
        // cert-chain.pem may start with the signing certificate and end with
        // the root; what is served is what lies strictly between.
        let chain: Vec<_> = chain_file
            .into_iter()
            .filter(|c| *c != cert && !roots.contains(c))
            .collect();
        let bundle = TrustBundle::new(roots);
        bundle
            .verify_ca_chain(&cert, &chain, SystemTime::now())
            .map_err(|detail| CaError::Certificate {
                file: CA_CERT.into(),
                detail,
            })?;
        let trust_domain = match info.spiffe_trust_domain() {
            Some(td) => td,
            None => trust_domain
                .cloned()
                .unwrap_or_else(|| TrustDomain::new("cluster.local").expect("valid")),
        };
        let issuer = Issuer::from_ca_cert_der(&cert, key).map_err(|e| CaError::Certificate {
            file: CA_CERT.into(),
            detail: e.to_string(),
        })?;
        Ok(Ca {
            issuer,
            cert,
            chain,
            bundle,
            trust_domain,
            not_after: info.not_after,
            max_ttl: MAX_TTL,
        })
    }

    /// Caps the lifetime of the leaves this CA signs.
    pub fn with_max_ttl(mut self, max_ttl: Duration) -> Ca {
        self.max_ttl = max_ttl;
        self
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub fn bundle(&self) -> &TrustBundle {
        &self.bundle
    }

    /// Signs a certificate for `id`, which the caller was authenticated as,
    /// with the public key of `csr`; nothing else in the CSR is used.
    /// Returns the chain: the leaf, the signing certificate, intermediates.
    pub fn sign_csr(
        &self,
        csr: &[u8],
        id: &SpiffeId,
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<Vec<CertificateDer<'static>>, CaError> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr))
                .map_err(|e| CaError::Csr(e.to_string()))?;
        self.sign_key(&csr.public_key, id, ttl, now)
    }

    /// As [`Ca::sign_csr`], for a public key the caller already holds.
    pub fn sign_key(
        &self,
        public_key: &impl rcgen::PublicKeyData,
        id: &SpiffeId,
        ttl: Option<Duration>,
        now: SystemTime,
    ) -> Result<Vec<CertificateDer<'static>>, CaError> {
        if id.trust_domain() != &self.trust_domain {
            return Err(CaError::ForeignTrustDomain {
                id: id.to_string(),
                trust_domain: self.trust_domain.to_string(),
            });
        }
        let ttl = ttl.unwrap_or(DEFAULT_TTL).min(self.max_ttl);
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(ia5(&id.to_string())?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if is_rsa(public_key) {
            params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + ttl).min(self.not_after).into();
        let leaf = params
            .signed_by(public_key, &self.issuer)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        let mut chain = vec![leaf.der().clone(), self.cert.clone()];
        chain.extend(self.chain.iter().cloned());
        Ok(chain)
    }

    /// Signs `message` with the CA key (bootstrap tokens).
    pub(crate) fn sign_message(&self, message: &[u8]) -> Result<Vec<u8>, CaError> {
        rcgen::SigningKey::sign(self.issuer.key(), message)
            .map_err(|e| CaError::Sign(e.to_string()))
    }

    /// The signing certificate (tokens are verified against it).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.cert
    }
}

/// Writes what `weft ca issue` hands a VM: `cert-chain.pem` (leaf first,
/// then intermediates), `key.pem` (mode 0600) and `root-cert.pem`.
pub fn write_issued(
    out: &Path,
    chain: &[CertificateDer<'_>],
    key_pem: &str,
    bundle: &TrustBundle,
) -> Result<(), CaError> {
    std::fs::create_dir_all(out).map_err(|cause| CaError::Io {
        path: out.into(),
        cause,
    })?;
    for file in [CERT_CHAIN, "key.pem", ROOT_CERT] {
        let path = out.join(file);
        if path.exists() {
            std::fs::remove_file(&path).map_err(|cause| CaError::Io { path, cause })?;
        }
    }
    write(out, CERT_CHAIN, pem::encode(chain).as_bytes(), 0o644)?;
    write(out, "key.pem", key_pem.as_bytes(), 0o600)?;
    write(out, ROOT_CERT, bundle.to_pem().as_bytes(), 0o644)
}

fn is_rsa(key: &impl rcgen::PublicKeyData) -> bool {
    matches!(key.algorithm(), a if a == &rcgen::PKCS_RSA_SHA256 || a == &rcgen::PKCS_RSA_SHA384 || a == &rcgen::PKCS_RSA_SHA512)
}

fn ia5(s: &str) -> Result<rcgen::string::Ia5String, CaError> {
    rcgen::string::Ia5String::try_from(s).map_err(|e| CaError::Sign(e.to_string()))
}

/// 128 random bits, positive.
fn random_serial() -> Result<SerialNumber, CaError> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| CaError::Sign("no randomness".into()))?;
    bytes[0] &= 0x7f;
    Ok(SerialNumber::from_slice(&bytes))
}

fn write(dir: &Path, file: &str, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(file);
    let io = |cause| CaError::Io {
        path: path.clone(),
        cause,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .map_err(io)?;
    f.write_all(bytes).map_err(io)
}

/// Parses one certificate, for callers outside this module.
pub(crate) fn parse<'a>(cert: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, String> {
    X509Certificate::from_der(cert)
        .map(|(_, c)| c)
        .map_err(|e| format!("not an X.509 certificate: {e}"))
}
