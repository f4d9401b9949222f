//! The CA: its directory, what it signs, and what it refuses.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use common::{new_ca, td};
use weft_identity::ca::{self, CaError};
use weft_identity::{Ca, CertInfo, SpiffeId, WorkloadKey};

fn id(s: &str) -> SpiffeId {
    s.parse().expect("valid SPIFFE ID")
}

#[test]
fn init_writes_istio_layout_with_a_private_key_and_refuses_to_overwrite() {
    let (dir, ca) = new_ca("init");
    for f in [ca::CA_CERT, ca::CA_KEY, ca::ROOT_CERT, ca::CERT_CHAIN] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let mode = std::fs::metadata(dir.join(ca::CA_KEY))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(ca.trust_domain().as_str(), "cluster.local");
    let err = Ca::init(&dir, &td("cluster.local"), SystemTime::now()).unwrap_err();
    assert!(matches!(err, CaError::Exists { .. }), "{err}");
    assert!(
        err.to_string()
            .ends_with("a CA already exists here (ca-cert.pem); refusing to overwrite it"),
        "{err}"
    );
    let root = CertInfo::parse(&ca.bundle().roots()[0]).unwrap();
    assert!(root.is_ca);
    assert_eq!(root.key.to_string(), "ECDSA P-256");
    assert_eq!(root.uris, vec!["spiffe://cluster.local"]);
    // Loading again finds the trust domain in the root.
    let again = Ca::load(&dir, None).unwrap();
    assert_eq!(again.trust_domain().as_str(), "cluster.local");
}

#[test]
fn the_identity_comes_from_the_caller_not_the_csr() {
    let (_, ca) = new_ca("csr");
    let key = WorkloadKey::generate().unwrap();
    let csr = key
        .csr(&id("spiffe://cluster.local/ns/istio-system/sa/istiod"))
        .unwrap();
    let now = SystemTime::now();
    let chain = ca
        .sign_csr(
            &csr,
            &id("spiffe://cluster.local/ns/default/sa/reviews"),
            None,
            now,
        )
        .unwrap();
    assert_eq!(chain.len(), 2, "leaf then the signing certificate");
    let leaf = CertInfo::parse(&chain[0]).unwrap();
    assert_eq!(
        leaf.uris,
        vec!["spiffe://cluster.local/ns/default/sa/reviews"]
    );
    assert!(leaf.other_sans.is_empty());
    assert!(!leaf.is_ca);
    assert!(leaf.server_auth && leaf.client_auth);
    assert_eq!(leaf.subject, "");
    let life = leaf.not_after.duration_since(now).unwrap();
    assert!(
        life <= Duration::from_secs(24 * 3600) && life > Duration::from_secs(24 * 3600 - 5),
        "{life:?}"
    );
    assert_eq!(
        leaf.spki,
        rcgen::PublicKeyData::subject_public_key_info(key.public_key())
    );
}

#[test]
fn lifetimes_are_capped_and_foreign_trust_domains_refused() {
    let (_, ca) = new_ca("cap");
    let ca = ca.with_max_ttl(Duration::from_secs(3600));
    let key = WorkloadKey::generate().unwrap();
    let csr = key.csr(&id("spiffe://cluster.local/ns/a/sa/b")).unwrap();
    let now = SystemTime::now();
    let chain = ca
        .sign_csr(
            &csr,
            &id("spiffe://cluster.local/ns/a/sa/b"),
            Some(Duration::from_secs(86400 * 365)),
            now,
        )
        .unwrap();
    let leaf = CertInfo::parse(&chain[0]).unwrap();
    assert!(leaf.not_after <= now + Duration::from_secs(3600));
    let err = ca
        .sign_csr(&csr, &id("spiffe://other.td/ns/a/sa/b"), None, now)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "identity spiffe://other.td/ns/a/sa/b is not in this CA's trust domain cluster.local"
    );
    let err = ca
        .sign_csr(
            b"not a csr",
            &id("spiffe://cluster.local/ns/a/sa/b"),
            None,
            now,
        )
        .unwrap_err();
    assert!(err.to_string().starts_with("CSR: "), "{err}");
}

#[test]
fn rsa_csrs_get_key_encipherment() {
    let (_, ca) = new_ca("rsa");
    // ring cannot generate RSA keys; openssl makes one (PKCS#8).
    let Some(openssl) = common::openssl() else {
        return;
    };
    let out = std::process::Command::new(openssl)
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = rcgen::KeyPair::from_pem(&String::from_utf8(out.stdout).unwrap()).unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap();
    let chain = ca
        .sign_csr(
            csr.der(),
            &id("spiffe://cluster.local/ns/a/sa/b"),
            None,
            SystemTime::now(),
        )
        .unwrap();
    let der = &chain[0];
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let ku = cert.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment());
}

#[test]
fn a_broken_ca_directory_gets_a_clear_error() {
    let (dir, _) = new_ca("broken");
    std::fs::write(
        dir.join(ca::CA_KEY),
        "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIA==\n-----END EC PRIVATE KEY-----\n",
    )
    .unwrap();
    let err = Ca::load(&dir, None).unwrap_err().to_string();
    assert!(err.starts_with("ca-key.pem: "), "{err}");
    assert!(err.contains("openssl pkcs8 -topk8"), "{err}");
    let (other, _) = new_ca("broken-other");
    std::fs::copy(other.join(ca::CA_KEY), dir.join(ca::CA_KEY)).unwrap();
    let err = Ca::load(&dir, None).unwrap_err().to_string();
    assert!(
        err.contains("this key does not belong to the certificate in ca-cert.pem"),
        "{err}"
    );
    std::fs::remove_file(dir.join(ca::ROOT_CERT)).unwrap();
    let err = Ca::load(&dir, None).unwrap_err().to_string();
    assert!(err.contains("root-cert.pem"), "{err}");
}
