//! `weft ca`, `weft token` and `weft certs` as an operator uses them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn weft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .output()
        .expect("weft runs")
}

fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr)
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-idcli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn init_issue_inspect_and_a_clean_audit() {
    let dir = temp("flow");
    let ca = dir.join("ca");
    let out = weft(&["ca", "init", "--dir", s(&ca)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let again = weft(&["ca", "init", "--dir", s(&ca)]);
    assert_eq!(again.status.code(), Some(2));
    assert!(
        text(&again).contains("a CA already exists here (ca-cert.pem); refusing to overwrite it")
    );

    let vm = dir.join("vm");
    let out = weft(&[
        "ca",
        "issue",
        "--dir",
        s(&ca),
        "--spiffe-id",
        "spiffe://cluster.local/ns/default/sa/vm-1",
        "--out-dir",
        s(&vm),
        "--ttl",
        "12h",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let inspect = weft(&["certs", "inspect", s(&vm.join("cert-chain.pem"))]);
    let t = text(&inspect);
    assert!(
        t.contains("SANs:       URI:spiffe://cluster.local/ns/default/sa/vm-1"),
        "{t}"
    );
    assert!(t.contains("Key:        ECDSA P-256"), "{t}");
    assert!(t.contains("Remaining:  11h"), "{t}");
    assert!(t.contains("Usage:      serverAuth, clientAuth"), "{t}");
    let audit = weft(&["certs", "audit", s(&vm)]);
    assert_eq!(audit.status.code(), Some(0), "{}", text(&audit));
    assert!(text(&audit).ends_with("0 findings\n"));

    let token = weft(&[
        "token",
        "issue",
        "--ca-dir",
        s(&ca),
        "--workload",
        "default/reviews",
        "--ttl",
        "30m",
    ]);
    assert_eq!(token.status.code(), Some(0), "{}", text(&token));
    assert!(String::from_utf8_lossy(&token.stdout).starts_with("weft1."));
    let bad = weft(&[
        "token",
        "issue",
        "--ca-dir",
        s(&ca),
        "--workload",
        "reviews",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad).contains("--workload \"reviews\": expected NAMESPACE/NAME"),
        "{}",
        text(&bad)
    );
    // A missing CA names the file and says why, once.
    let missing = weft(&[
        "token",
        "issue",
        "--ca-dir",
        "/nonexistent/weft-ca",
        "--workload",
        "default/reviews",
    ]);
    assert_eq!(missing.status.code(), Some(2));
    let t = text(&missing);
    assert!(
        t.contains("/nonexistent/weft-ca/ca-cert.pem: No such file"),
        "{t}"
    );
    assert_eq!(t.matches("No such file").count(), 1, "{t}");
}

#[test]
fn audit_reports_expiry_trust_domain_and_broken_chains() {
    let dir = temp("audit");
    let ours = dir.join("ours");
    let theirs = dir.join("theirs");
    assert!(weft(&["ca", "init", "--dir", s(&ours)]).status.success());
    assert!(
        weft(&[
            "ca",
            "init",
            "--dir",
            s(&theirs),
            "--trust-domain",
            "other.td"
        ])
        .status
        .success()
    );
    // A certificate from another trust domain, about to expire.
    let certs = dir.join("certs");
    let out = weft(&[
        "ca",
        "issue",
        "--dir",
        s(&theirs),
        "--spiffe-id",
        "spiffe://other.td/ns/a/sa/b",
        "--out-dir",
        s(&certs),
        "--ttl",
        "10s",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let audit = weft(&[
        "certs",
        "audit",
        s(&certs),
        "--root",
        s(&ours.join("root-cert.pem")),
    ]);
    assert_eq!(audit.status.code(), Some(1));
    let t = text(&audit);
    let cert = certs.join("cert-chain.pem");
    let cert = cert.display();
    assert!(
        t.contains(&format!("{cert}: certificate 0: expires in")),
        "{t}"
    );
    assert!(t.contains("within the last quarter of its"), "{t}");
    assert!(
        t.contains(&format!(
            "{cert}: certificate 0: wrong trust domain: other.td (expected cluster.local)"
        )),
        "{t}"
    );
    assert!(
        t.contains(&format!(
            "{cert}: certificate 0: broken chain: certificate chain: not issued by a trusted root"
        )),
        "{t}"
    );
}

#[test]
fn audit_reports_weak_keys_and_extra_sans() {
    let has_openssl = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_openssl {
        eprintln!("SKIPPED: the openssl command is not installed (CI installs Debian's openssl)");
        return;
    }
    let dir = temp("weak");
    let made = Command::new("openssl")
        .current_dir(&dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:1024",
            "-nodes",
            "-keyout",
            "weak-key.pem",
            "-out",
            "weak.pem",
            "-days",
            "30",
            "-subj",
            "/CN=weak",
            "-addext",
            "subjectAltName=URI:spiffe://cluster.local/ns/a/sa/b,DNS:b.a.svc",
            "-addext",
            "basicConstraints=critical,CA:FALSE",
        ])
        .output()
        .expect("openssl runs");
    assert!(made.status.success(), "{}", text(&made));
    let audit = weft(&["certs", "audit", s(&dir)]);
    assert_eq!(audit.status.code(), Some(1));
    let t = text(&audit);
    let weak = dir.join("weak.pem");
    assert!(
        t.contains(&format!(
            "{}: weak key: RSA 1024 (at least 2048)",
            weak.display()
        )),
        "{t}"
    );
    assert!(t.contains(&format!("{}: extra SANs: spiffe://cluster.local/ns/a/sa/b, DNS:b.a.svc (exactly one SPIFFE URI expected)", weak.display())), "{t}");
}
