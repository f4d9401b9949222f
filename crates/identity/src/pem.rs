//! Reading and writing PEM: certificates, chains and bundles.

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("{what}: no certificate found (expected -----BEGIN CERTIFICATE-----)")]
    Empty { what: String },
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
}

/// Every certificate in `pem`, in order; `what` names the input in errors.
pub fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Invalid {
            what: what.into(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PemError::Empty { what: what.into() });
    }
    Ok(certs)
}

/// Certificates as concatenated PEM blocks.
pub fn encode(certs: &[CertificateDer<'_>]) -> String {
    certs.iter().map(|c| encode_one(c)).collect()
}

pub fn encode_one(cert: &CertificateDer<'_>) -> String {
    block("CERTIFICATE", cert.as_ref())
}

/// One PEM block: `-----BEGIN {label}-----`, base64 in lines of 64.
pub fn block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
