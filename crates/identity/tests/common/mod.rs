//! Shared by the identity integration tests: temporary CA directories and
//! a way to sign arbitrary (also deliberately bad) leaves with a CA's key.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test
#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType};
use rustls_pki_types::CertificateDer;
use weft_identity::{Ca, TrustDomain};

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-id-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

pub fn td(s: &str) -> TrustDomain {
    TrustDomain::new(s).expect("trust domain")
}

/// A fresh self-signed CA for cluster.local in a temp dir.
pub fn new_ca(name: &str) -> (PathBuf, Ca) {
    let dir = temp_dir(name).join("ca");
    let ca = Ca::init(&dir, &td("cluster.local"), SystemTime::now()).expect("ca init");
    (dir, ca)
}

/// How a hand-made leaf deviates from a good one.
#[derive(Default)]
pub struct Leaf {
    pub uris: Vec<String>,
    pub not_before: Option<SystemTime>,
    pub not_after: Option<SystemTime>,
    pub is_ca: bool,
    pub ekus: Option<Vec<ExtendedKeyUsagePurpose>>,
}

/// Signs `leaf` with the CA in `dir`; returns the leaf DER.
pub fn sign_leaf(dir: &std::path::Path, leaf: Leaf) -> CertificateDer<'static> {
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(dir.join("ca-key.pem")).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(dir.join("ca-cert.pem")).unwrap(),
        ca_key,
    )
    .unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = leaf
        .uris
        .iter()
        .map(|u| SanType::URI(rcgen::string::Ia5String::try_from(u.as_str()).unwrap()))
        .collect();
    let now = SystemTime::now();
    params.not_before = leaf
        .not_before
        .unwrap_or(now - Duration::from_secs(60))
        .into();
    params.not_after = leaf
        .not_after
        .unwrap_or(now + Duration::from_secs(3600))
        .into();
    params.is_ca = if leaf.is_ca {
        IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
    } else {
        IsCa::ExplicitNoCa
    };
    params.extended_key_usages = leaf.ekus.unwrap_or(vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ]);
    params.signed_by(&key, &issuer).unwrap().der().clone()
}

pub fn openssl() -> Option<&'static str> {
    let ok = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Some("openssl")
    } else {
        eprintln!("SKIPPED: the openssl command is not installed (CI installs Debian's openssl)");
        None
    }
}
