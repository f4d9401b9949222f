//! Verification of peer certificates: every way a certificate can be wrong
//! gets a clear error; good chains, also through an intermediate, pass.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

mod common;

use std::time::{Duration, SystemTime};

use common::{Leaf, new_ca, sign_leaf, td};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls_pki_types::{CertificateDer, UnixTime};
use weft_identity::{Ca, SpiffeId, TrustDomains, Usage, WorkloadKey};

const ID: &str = "spiffe://cluster.local/ns/default/sa/reviews";

fn now() -> UnixTime {
    UnixTime::now()
}

fn check(ca: &Ca, leaf: &CertificateDer<'_>, usage: Usage) -> Result<SpiffeId, String> {
    let tds = TrustDomains::from(td("cluster.local"));
    ca.bundle()
        .verify_svid(leaf, &[], usage, &tds, now())
        .map_err(|e| e.to_string())
}

fn leaf(uris: &[&str]) -> Leaf {
    Leaf {
        uris: uris.iter().map(ToString::to_string).collect(),
        ..Leaf::default()
    }
}

#[test]
fn a_good_leaf_verifies_and_names_its_identity() {
    let (dir, ca) = new_ca("v-good");
    let cert = sign_leaf(&dir, leaf(&[ID]));
    assert_eq!(check(&ca, &cert, Usage::Client).unwrap().to_string(), ID);
    assert_eq!(check(&ca, &cert, Usage::Server).unwrap().to_string(), ID);
}

#[test]
fn each_defect_has_its_own_error() {
    let (dir, ca) = new_ca("v-bad");
    let t = SystemTime::now();
    let cases: Vec<(&str, Leaf, Usage, &str)> = vec![
        (
            "wrong trust domain",
            leaf(&["spiffe://evil.td/ns/default/sa/reviews"]),
            Usage::Client,
            "trust domain evil.td is not trusted (allowed: cluster.local)",
        ),
        (
            "expired",
            Leaf {
                not_before: Some(t - Duration::from_secs(7200)),
                not_after: Some(t - Duration::from_secs(3600)),
                ..leaf(&[ID])
            },
            Usage::Client,
            "certificate chain: certificate expired",
        ),
        (
            "not yet valid",
            Leaf {
                not_before: Some(t + Duration::from_secs(3600)),
                not_after: Some(t + Duration::from_secs(7200)),
                ..leaf(&[ID])
            },
            Usage::Client,
            "certificate chain: certificate is not valid for another",
        ),
        (
            "no SAN",
            leaf(&[]),
            Usage::Client,
            "certificate identity: certificate has no URI SAN (a SPIFFE ID is required)",
        ),
        (
            "two URI SANs",
            leaf(&[ID, "spiffe://cluster.local/ns/default/sa/ratings"]),
            Usage::Client,
            "certificate identity: certificate has 2 URI SANs; exactly one SPIFFE ID is allowed",
        ),
        (
            "SAN with NUL",
            leaf(&["spiffe://cluster.local/ns/default/sa/reviews\0x"]),
            Usage::Client,
            "certificate identity: URI SAN: character '\\0' in path segment",
        ),
        (
            "CA:TRUE leaf",
            Leaf {
                is_ca: true,
                ..leaf(&[ID])
            },
            Usage::Client,
            "certificate chain: a CA certificate (CA:TRUE) cannot identify a workload",
        ),
        (
            "no clientAuth on a client",
            Leaf {
                ekus: Some(vec![ExtendedKeyUsagePurpose::ServerAuth]),
                ..leaf(&[ID])
            },
            Usage::Client,
            "certificate chain: the certificate lacks the clientAuth extended key usage",
        ),
        (
            "no serverAuth on a server",
            Leaf {
                ekus: Some(vec![ExtendedKeyUsagePurpose::ClientAuth]),
                ..leaf(&[ID])
            },
            Usage::Server,
            "certificate chain: the certificate lacks the serverAuth extended key usage",
        ),
        (
            "not a workload ID",
            leaf(&["spiffe://cluster.local/workload/x"]),
            Usage::Client,
            "certificate identity: URI SAN: \"spiffe://cluster.local/workload/x\" is not a workload identity",
        ),
    ];
    for (name, l, usage, expected) in cases {
        let cert = sign_leaf(&dir, l);
        let err = check(&ca, &cert, usage).expect_err(name);
        assert!(
            err.starts_with(expected),
            "{name}: got {err:?}, expected it to start with {expected:?}"
        );
    }
}

#[test]
fn another_root_is_unknown() {
    let (dir, _) = new_ca("v-root-a");
    let (_, other) = new_ca("v-root-b");
    let cert = sign_leaf(&dir, leaf(&[ID]));
    // Both roots are named alike, so this is a signature failure rather
    // than an unknown name; either way it is not a trusted root.
    let err = check(&other, &cert, Usage::Client).unwrap_err();
    assert!(
        err.starts_with("certificate chain: not issued by a trusted root"),
        "{err}"
    );
}

#[test]
fn trust_domain_aliases_are_accepted() {
    let (dir, ca) = new_ca("v-alias");
    let cert = sign_leaf(&dir, leaf(&["spiffe://old.td/ns/default/sa/reviews"]));
    let tds = TrustDomains::new(td("cluster.local"), vec![td("old.td")]);
    let id = ca
        .bundle()
        .verify_svid(&cert, &[], Usage::Client, &tds, now())
        .unwrap();
    assert_eq!(id.trust_domain().as_str(), "old.td");
}

/// An organisation root, and under it an intermediate in Istio's plug-in
/// layout, made with rcgen: `cert-chain.pem` is intermediate then root.
pub(crate) fn plugged_in_ca(name: &str) -> std::path::PathBuf {
    let dir = common::temp_dir(name).join("ca");
    std::fs::create_dir_all(&dir).unwrap();
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut root = CertificateParams::default();
    root.distinguished_name
        .push(DnType::CommonName, "Example Corp Root");
    root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root_cert = root.self_signed(&root_key).unwrap();
    let int_key = KeyPair::generate().unwrap();
    let mut int = CertificateParams::default();
    int.distinguished_name
        .push(DnType::CommonName, "Example Corp mesh intermediate");
    int.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    int.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let int_cert = int
        .signed_by(&int_key, &Issuer::new(root, &root_key))
        .unwrap();
    std::fs::write(dir.join("ca-cert.pem"), int_cert.pem()).unwrap();
    std::fs::write(dir.join("ca-key.pem"), int_key.serialize_pem()).unwrap();
    std::fs::write(dir.join("root-cert.pem"), root_cert.pem()).unwrap();
    std::fs::write(
        dir.join("cert-chain.pem"),
        int_cert.pem() + &root_cert.pem(),
    )
    .unwrap();
    dir
}

#[test]
fn chains_through_an_intermediate_verify() {
    let dir = plugged_in_ca("v-int");
    let ca = Ca::load(&dir, Some(&td("cluster.local"))).unwrap();
    let key = WorkloadKey::generate().unwrap();
    let id: SpiffeId = ID.parse().unwrap();
    let chain = ca
        .sign_csr(&key.csr(&id).unwrap(), &id, None, SystemTime::now())
        .unwrap();
    assert_eq!(
        chain.len(),
        2,
        "leaf and intermediate; the root stays in the bundle"
    );
    let tds = TrustDomains::from(td("cluster.local"));
    let got = ca
        .bundle()
        .verify_svid(&chain[0], &chain[1..], Usage::Server, &tds, now())
        .unwrap();
    assert_eq!(got, id);
    // Without the intermediate the leaf does not chain.
    assert!(
        ca.bundle()
            .verify_svid(&chain[0], &[], Usage::Server, &tds, now())
            .is_err()
    );
}

#[test]
fn a_bundle_with_two_roots_trusts_both_during_root_rotation() {
    let (old_dir, old) = new_ca("v-rot-old");
    let (new_dir, new) = new_ca("v-rot-new");
    let pem = old.bundle().to_pem() + &new.bundle().to_pem();
    let both = weft_identity::TrustBundle::from_pem(pem.as_bytes(), "root-cert.pem").unwrap();
    assert_eq!(both.roots().len(), 2);
    let tds = TrustDomains::from(td("cluster.local"));
    for dir in [&old_dir, &new_dir] {
        let cert = sign_leaf(dir, leaf(&[ID]));
        assert!(
            both.verify_svid(&cert, &[], Usage::Client, &tds, now())
                .is_ok()
        );
    }
    // A CA directory whose root-cert.pem holds both roots loads and signs.
    std::fs::write(new_dir.join("root-cert.pem"), &pem).unwrap();
    let ca = Ca::load(&new_dir, None).unwrap();
    assert_eq!(ca.bundle().roots().len(), 2);
}
