//! What a certificate says, read with x509-parser: the facts that
//! verification, `weft certs inspect` and `weft certs audit` need.

use std::time::{Duration, SystemTime};

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::public_key::PublicKey;

use crate::spiffe::{SpiffeId, TrustDomain};

/// The kind and strength of a public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// Bits of modulus.
    Rsa(usize),
    /// Bits of the curve.
    Ec(usize),
    Ed25519,
    Other,
}

impl std::fmt::Display for KeyKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyKind::Rsa(bits) => write!(f, "RSA {bits}"),
            KeyKind::Ec(256) => f.write_str("ECDSA P-256"),
            KeyKind::Ec(384) => f.write_str("ECDSA P-384"),
            KeyKind::Ec(bits) => write!(f, "EC {bits}"),
            KeyKind::Ed25519 => f.write_str("Ed25519"),
            KeyKind::Other => f.write_str("unknown"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct CertInfo {
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub is_ca: bool,
    /// URI SANs as written (possibly not SPIFFE IDs).
    pub uris: Vec<String>,
    /// DNS, IP and e-mail SANs, for display.
    pub other_sans: Vec<String>,
    pub key: KeyKind,
    /// DER SubjectPublicKeyInfo.
    pub spki: Vec<u8>,
    pub server_auth: bool,
    pub client_auth: bool,
}

impl CertInfo {
    pub fn parse(der: &CertificateDer<'_>) -> Result<CertInfo, String> {
        let cert = crate::ca::parse(der)?;
        let time = |t: x509_parser::time::ASN1Time| {
            let secs = t.timestamp();
            if secs >= 0 {
                SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
            } else {
                SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            }
        };
        let mut uris = Vec::new();
        let mut other_sans = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => uris.push((*u).to_string()),
                    GeneralName::DNSName(d) => other_sans.push(format!("DNS:{d}")),
                    GeneralName::IPAddress(ip) => other_sans.push(format!("IP:{ip:?}")),
                    GeneralName::RFC822Name(m) => other_sans.push(format!("email:{m}")),
                    other => other_sans.push(format!("{other:?}")),
                }
            }
        }
        let key = match cert.public_key().parsed() {
            Ok(PublicKey::RSA(rsa)) => KeyKind::Rsa(rsa.key_size()),
            Ok(PublicKey::EC(ec)) => KeyKind::Ec(ec.key_size()),
            _ if cert.public_key().algorithm.algorithm.to_id_string() == "1.3.101.112" => {
                KeyKind::Ed25519
            }
            _ => KeyKind::Other,
        };
        let eku = cert
            .extended_key_usage()
            .ok()
            .flatten()
            .map(|e| e.value.clone());
        Ok(CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            serial: cert.raw_serial_as_string(),
            not_before: time(cert.validity().not_before),
            not_after: time(cert.validity().not_after),
            is_ca: cert
                .basic_constraints()
                .ok()
                .flatten()
                .is_some_and(|b| b.value.ca),
            uris,
            other_sans,
            key,
            spki: cert.public_key().raw.to_vec(),
            server_auth: eku.as_ref().is_some_and(|e| e.server_auth || e.any),
            client_auth: eku.as_ref().is_some_and(|e| e.client_auth || e.any),
        })
    }

    /// The trust domain of a signing certificate's `spiffe://<td>` SAN.
    pub fn spiffe_trust_domain(&self) -> Option<TrustDomain> {
        self.uris
            .iter()
            .find_map(|u| u.strip_prefix("spiffe://").filter(|td| !td.contains('/')))
            .and_then(|td| TrustDomain::new(td).ok())
    }

    /// The one SPIFFE workload ID of a leaf, or why there is none.
    pub fn spiffe_id(&self) -> Result<SpiffeId, String> {
        match self.uris.as_slice() {
            [] => Err("certificate has no URI SAN (a SPIFFE ID is required)".into()),
            [one] => one.parse::<SpiffeId>().map_err(|e| format!("URI SAN: {e}")),
            many => Err(format!(
                "certificate has {} URI SANs; exactly one SPIFFE ID is allowed",
                many.len()
            )),
        }
    }

    pub fn lifetime(&self) -> Duration {
        self.not_after
            .duration_since(self.not_before)
            .unwrap_or_default()
    }
}
