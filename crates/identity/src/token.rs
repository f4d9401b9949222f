//! Bootstrap tokens: how a workload without a mesh certificate proves who it
//! is to the certificate service. A token is signed by the CA key and names
//! one identity; it expires.
//!
//! Format: `weft1.<claims>.<signature>`, both parts base64url (no padding);
//! the claims are JSON `{"sub": "<spiffe id>", "iat": secs, "exp": secs,
//! "jti": "<random>"}` and the signature covers `weft1.<claims>`.

use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::ca::{Ca, CaError};
use crate::spiffe::SpiffeId;

const PREFIX: &str = "weft1";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: expected weft1.<claims>.<signature>")]
    Malformed,
    #[error("token signature does not verify against the CA")]
    Signature,
    #[error("token expired {0}s ago")]
    Expired(u64),
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token subject: {0}")]
    Subject(String),
    #[error("CA certificate: {0}")]
    Ca(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: u64,
    exp: u64,
    jti: String,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A token for `id`, valid for `ttl` from `now`.
pub fn issue(ca: &Ca, id: &SpiffeId, ttl: Duration, now: SystemTime) -> Result<String, CaError> {
    let mut nonce = [0u8; 12];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| CaError::Sign("no randomness".into()))?;
    let claims = Claims {
        sub: id.to_string(),
        iat: secs(now),
        exp: secs(now + ttl),
        jti: B64.encode(nonce),
    };
    let body = serde_json::to_vec(&claims).map_err(|e| CaError::Sign(e.to_string()))?;
    let signed = format!("{PREFIX}.{}", B64.encode(body));
    let signature = ca.sign_message(signed.as_bytes())?;
    Ok(format!("{signed}.{}", B64.encode(signature)))
}

/// The identity a token names, if `ca_cert` signed it and it is valid at
/// `now`.
pub fn verify(
    token: &str,
    ca_cert: &CertificateDer<'_>,
    now: SystemTime,
) -> Result<SpiffeId, TokenError> {
    let token = token.trim();
    let (signed, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let (prefix, body) = signed.split_once('.').ok_or(TokenError::Malformed)?;
    if prefix != PREFIX {
        return Err(TokenError::Malformed);
    }
    let signature = B64.decode(signature).map_err(|_| TokenError::Malformed)?;
    let cert = crate::ca::parse(ca_cert).map_err(TokenError::Ca)?;
    let spki = cert.public_key();
    let algorithm: &dyn ring::signature::VerificationAlgorithm = match spki.parsed() {
        Ok(x509_parser::public_key::PublicKey::EC(ec)) if ec.key_size() == 384 => {
            &ring::signature::ECDSA_P384_SHA384_ASN1
        }
        Ok(x509_parser::public_key::PublicKey::EC(_)) => &ring::signature::ECDSA_P256_SHA256_ASN1,
        Ok(x509_parser::public_key::PublicKey::RSA(_)) => {
            &ring::signature::RSA_PKCS1_2048_8192_SHA256
        }
        _ => &ring::signature::ED25519,
    };
    ring::signature::UnparsedPublicKey::new(algorithm, &spki.subject_public_key.data)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| TokenError::Signature)?;
    let claims: Claims = B64
        .decode(body)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(TokenError::Malformed)?;
    let now = secs(now);
    if now >= claims.exp {
        return Err(TokenError::Expired(now - claims.exp));
    }
    // A little slack for clocks that run behind the issuer's.
    if claims.iat > now + 60 {
        return Err(TokenError::NotYetValid);
    }
    claims
        .sub
        .parse()
        .map_err(|e: crate::spiffe::SpiffeError| TokenError::Subject(e.to_string()))
}
