//! Debian's `openssl verify` accepts the chains weft issues, for its own
//! self-signed CA and for CAs an organisation makes with openssl (an RSA or
//! ECDSA intermediate under an RSA or ECDSA root).

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

mod common;

use std::path::Path;
use std::process::Command;
use std::time::SystemTime;

use common::{new_ca, openssl, td};
use weft_identity::{Ca, SpiffeId, WorkloadKey, ca};

fn run(openssl: &str, dir: &Path, args: &[&str]) {
    let out = Command::new(openssl)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issues a leaf for `id` into `out` the way `weft ca issue` does, then asks
/// openssl to verify it.
fn issue_and_verify(openssl: &str, ca: &Ca, out: &Path) {
    let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/vm-1".parse().unwrap();
    let key = WorkloadKey::generate().unwrap();
    let chain = ca
        .sign_csr(&key.csr(&id).unwrap(), &id, None, SystemTime::now())
        .unwrap();
    ca::write_issued(out, &chain, &key.private_key_pem(), ca.bundle()).unwrap();
    let verify = Command::new(openssl)
        .current_dir(out)
        .args([
            "verify",
            "-CAfile",
            "root-cert.pem",
            "-untrusted",
            "cert-chain.pem",
            "cert-chain.pem",
        ])
        .output()
        .expect("openssl verify runs");
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success(),
        "openssl verify refused: {stdout}{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert_eq!(stdout.trim(), "cert-chain.pem: OK");
    // And openssl reads the SAN weft wrote.
    let text = Command::new(openssl)
        .current_dir(out)
        .args([
            "x509",
            "-in",
            "cert-chain.pem",
            "-noout",
            "-ext",
            "subjectAltName,extendedKeyUsage,basicConstraints",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("URI:spiffe://cluster.local/ns/default/sa/vm-1"),
        "{text}"
    );
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert!(text.contains("CA:FALSE"), "{text}");
}

#[test]
fn openssl_accepts_chains_from_the_self_signed_ca() {
    let Some(openssl) = openssl() else { return };
    let (dir, ca) = new_ca("ossl-self");
    issue_and_verify(openssl, &ca, &dir.join("../issued"));
}

fn plugged_in(
    openssl: &str,
    name: &str,
    root_alg: &[&str],
    int_alg: &[&str],
) -> std::path::PathBuf {
    let dir = common::temp_dir(name).join("ca");
    std::fs::create_dir_all(&dir).unwrap();
    let mut genroot = vec!["genpkey"];
    genroot.extend(root_alg);
    genroot.extend(["-out", "root-key.pem"]);
    run(openssl, &dir, &genroot);
    run(
        openssl,
        &dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            "root-key.pem",
            "-subj",
            "/O=Example Corp/CN=Example Corp Root",
            "-days",
            "3650",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "root-cert.pem",
        ],
    );
    let mut genint = vec!["genpkey"];
    genint.extend(int_alg);
    genint.extend(["-out", "ca-key.pem"]);
    run(openssl, &dir, &genint);
    run(
        openssl,
        &dir,
        &[
            "req",
            "-new",
            "-key",
            "ca-key.pem",
            "-subj",
            "/O=Example Corp/CN=Mesh Intermediate",
            "-out",
            "ca.csr",
        ],
    );
    std::fs::write(dir.join("ext.cnf"), "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\n").unwrap();
    run(
        openssl,
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "ca.csr",
            "-CA",
            "root-cert.pem",
            "-CAkey",
            "root-key.pem",
            "-CAcreateserial",
            "-days",
            "365",
            "-sha256",
            "-extfile",
            "ext.cnf",
            "-out",
            "ca-cert.pem",
        ],
    );
    let chain = std::fs::read_to_string(dir.join("ca-cert.pem")).unwrap()
        + &std::fs::read_to_string(dir.join("root-cert.pem")).unwrap();
    std::fs::write(dir.join("cert-chain.pem"), chain).unwrap();
    dir
}

#[test]
fn openssl_accepts_chains_from_a_plugged_in_ecdsa_intermediate_under_an_rsa_root() {
    let Some(openssl) = openssl() else { return };
    let dir = plugged_in(
        openssl,
        "ossl-plug-ec",
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:3072"],
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    );
    let ca = Ca::load(&dir, Some(&td("cluster.local"))).unwrap();
    issue_and_verify(openssl, &ca, &dir.join("../issued"));
}

#[test]
fn openssl_accepts_chains_from_a_plugged_in_rsa_intermediate_under_an_ecdsa_root() {
    let Some(openssl) = openssl() else { return };
    let dir = plugged_in(
        openssl,
        "ossl-plug-rsa",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
    );
    let ca = Ca::load(&dir, Some(&td("cluster.local"))).unwrap();
    issue_and_verify(openssl, &ca, &dir.join("../issued"));
}

#[test]
fn weak_rsa_intermediates_are_refused() {
    let Some(openssl) = openssl() else { return };
    let dir = plugged_in(
        openssl,
        "ossl-weak",
        &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
    );
    let err = Ca::load(&dir, None).unwrap_err().to_string();
    assert_eq!(
        err,
        "ca-cert.pem: RSA key of 1024 bits is too weak: at least 2048 required"
    );
}
