//! The trust bundle (one or more roots, so that roots can be rotated) and
//! verification of SPIFFE workload certificates against it.

use std::time::SystemTime;

use rustls_pki_types::{CertificateDer, TrustAnchor, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use crate::cert::CertInfo;
use crate::spiffe::{SpiffeId, TrustDomains};

/// Which side of a handshake a certificate is verified for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// The peer is a server: serverAuth EKU required.
    Server,
    /// The peer is a client: clientAuth EKU required.
    Client,
}

/// Why a peer certificate is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("certificate chain: {0}")]
    Chain(String),
    #[error("certificate identity: {0}")]
    Identity(String),
    #[error("trust domain {got} is not trusted (allowed: {allowed})")]
    TrustDomain { got: String, allowed: String },
}

/// The signature algorithms a mesh certificate may use.
pub(crate) static ALGORITHMS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
];

#[derive(Debug, Clone)]
pub struct TrustBundle {
    roots: Vec<CertificateDer<'static>>,
    anchors: Vec<TrustAnchor<'static>>,
}

impl TrustBundle {
    /// A bundle of `roots`; certificates that are not usable as trust
    /// anchors are dropped.
    pub fn new(roots: Vec<CertificateDer<'static>>) -> TrustBundle {
        let anchors = roots
            .iter()
            .filter_map(|r| {
                webpki::anchor_from_trusted_cert(r)
                    .ok()
                    .map(|a| a.to_owned())
            })
            .collect();
        TrustBundle { roots, anchors }
    }

    /// Reads a bundle from PEM text.
    pub fn from_pem(pem: &[u8], what: &str) -> Result<TrustBundle, crate::pem::PemError> {
        Ok(TrustBundle::new(crate::pem::certificates(pem, what)?))
    }

    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    pub fn to_pem(&self) -> String {
        crate::pem::encode(&self.roots)
    }

    /// Verifies a workload certificate: the chain up to a root in this
    /// bundle, its validity at `now`, the EKU for `usage`, CA:FALSE, and
    /// exactly one URI SAN that is a SPIFFE ID in an allowed trust domain.
    pub fn verify_svid(
        &self,
        leaf: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        usage: Usage,
        allowed: &TrustDomains,
        now: UnixTime,
    ) -> Result<SpiffeId, VerifyError> {
        let ee =
            EndEntityCert::try_from(leaf).map_err(|e| VerifyError::Chain(describe(&e, usage)))?;
        let key_usage = match usage {
            Usage::Server => KeyUsage::server_auth(),
            Usage::Client => KeyUsage::client_auth(),
        };
        ee.verify_for_usage(
            ALGORITHMS,
            &self.anchors,
            intermediates,
            now,
            key_usage,
            None,
            None,
        )
        .map_err(|e| VerifyError::Chain(describe(&e, usage)))?;
        let info = CertInfo::parse(leaf).map_err(VerifyError::Chain)?;
        let id = info.spiffe_id().map_err(VerifyError::Identity)?;
        if !allowed.allows(id.trust_domain()) {
            return Err(VerifyError::TrustDomain {
                got: id.trust_domain().to_string(),
                allowed: allowed.primary().to_string(),
            });
        }
        Ok(id)
    }

    /// Checks that a CA's signing certificate leads to a root of this
    /// bundle through `chain`, every link signed by the next and valid now.
    pub(crate) fn verify_ca_chain(
        &self,
        cert: &CertificateDer<'_>,
        chain: &[CertificateDer<'_>],
        now: SystemTime,
    ) -> Result<(), String> {
        let mut links: Vec<&CertificateDer<'_>> = vec![cert];
        links.extend(chain);
        for (i, der) in links.iter().enumerate() {
            let c = crate::ca::parse(der)?;
            let info = CertInfo::parse(der)?;
            if now > info.not_after {
                return Err(format!(
                    "certificate {i} of the chain ({}) expired",
                    info.subject
                ));
            }
            let signer = match links.get(i + 1) {
                Some(next) => Some(*next),
                None => self.roots.iter().find(|r| {
                    crate::ca::parse(r)
                        .is_ok_and(|root| c.verify_signature(Some(root.public_key())).is_ok())
                }),
            };
            let Some(signer) = signer else {
                return Err(format!(
                    "{} is not signed by any root in {}",
                    info.subject,
                    crate::ca::ROOT_CERT
                ));
            };
            let s = crate::ca::parse(signer)?;
            c.verify_signature(Some(s.public_key()))
                .map_err(|_| format!("{} is not signed by {}", info.subject, s.subject()))?;
        }
        Ok(())
    }
}

fn describe(e: &webpki::Error, usage: Usage) -> String {
    use webpki::Error as E;
    match e {
        E::CertExpired { time, not_after } => format!(
            "certificate expired {}s ago",
            time.as_secs().saturating_sub(not_after.as_secs())
        ),
        E::CertNotValidYet { time, not_before } => format!(
            "certificate is not valid for another {}s",
            not_before.as_secs().saturating_sub(time.as_secs())
        ),
        E::UnknownIssuer => "not issued by a trusted root (unknown issuer)".into(),
        E::CaUsedAsEndEntity => "a CA certificate (CA:TRUE) cannot identify a workload".into(),
        #[allow(deprecated)]
        E::RequiredEkuNotFound | E::RequiredEkuNotFoundContext(_) => match usage {
            Usage::Server => "the certificate lacks the serverAuth extended key usage".into(),
            Usage::Client => "the certificate lacks the clientAuth extended key usage".into(),
        },
        E::BadDer | E::BadDerTime => "malformed certificate".into(),
        E::InvalidSignatureForPublicKey => {
            "not issued by a trusted root (a root has the issuer's name but its signature does not verify)".into()
        }
        other => format!("{other:?}"),
    }
}
