//! `weft authz check`: the proxies' authorization, asked from the command
//! line against a folder of YAML.

use std::path::PathBuf;
use std::process::Command;

const MESH: &str = r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 127.0.0.31, serviceAccount: reviews, labels: {app: reviews}, ports: {http: 9080}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: default}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-readers, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/productpage"]}}]
    to: [{operation: {methods: [GET]}}]
    when: [{key: "request.headers[x-tenant]", notValues: [blocked]}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: default}
spec:
  jwtRules:
  - issuer: testing@secure.istio.io
    jwks: '{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}'
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ["/admin*"]}}]
"#;

fn mesh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-authz-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("mesh.yaml"), MESH).expect("write");
    dir
}

/// Runs `weft authz check` with `args`; (exit code, stdout + stderr).
fn check(dir: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["authz", "check", "--mesh-dir"])
        .arg(dir)
        .args(["--to", "default/reviews-v1"])
        .args(args)
        .output()
        .expect("weft runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn decisions_name_the_policy_and_rule_and_exit_by_outcome() {
    let dir = mesh_dir("decisions");
    let pp = "spiffe://cluster.local/ns/default/sa/productpage";
    let (code, out) = check(&dir, &["--from", pp, "GET", "/books/1"]);
    assert_eq!(
        (code, out.trim()),
        (0, "ALLOW (default/reviews-readers, rule 0)")
    );
    let (code, out) = check(&dir, &["--from", pp, "POST", "/books/1"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("DENY 403 (no ALLOW policy matched)"), "{out}");
    // Normalized first, as the proxy does: the DENY catches it.
    let (code, out) = check(&dir, &["--from", pp, "GET", "/books/%2e%2e/admin"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("path normalized to /admin"), "{out}");
    assert!(out.contains("DENY 403 (default/no-admin, rule 0)"), "{out}");
    let (code, out) = check(
        &dir,
        &[
            "--from",
            pp,
            "--header",
            "X-Tenant: blocked",
            "GET",
            "/books",
        ],
    );
    assert_eq!(code, 1, "{out}");
    let (code, out) = check(&dir, &["--plaintext", "GET", "/books"]);
    assert_eq!(code, 1, "plaintext has no principal: {out}");
    // A token is validated as the proxy would: a bad one is a 401.
    let (code, out) = check(&dir, &["--from", pp, "--jwt", "not.a.jwt", "GET", "/books"]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("DENY 401: Jwt is not in a valid format"),
        "{out}"
    );
    let (code, out) = check(&dir, &["--from", pp, "GET", "/a%00b"]);
    assert_eq!(code, 1);
    assert!(out.contains("DENY 400"), "{out}");
    // MeshConfig's pathNormalization is honoured: with MERGE_SLASHES,
    // `//admin` is `/admin`; with the default BASE it is not.
    let (code, _) = check(&dir, &["--from", pp, "GET", "//admin"]);
    assert_eq!(code, 0);
    let mesh_config = dir.with_extension("meshconfig.yaml");
    std::fs::write(
        &mesh_config,
        "pathNormalization: {normalization: MERGE_SLASHES}\n",
    )
    .expect("write");
    let mc = mesh_config.to_str().unwrap_or_default();
    let (code, out) = check(&dir, &["--mesh-config", mc, "--from", pp, "GET", "//admin"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("default/no-admin"), "{out}");
}

#[test]
fn usage_errors_exit_2() {
    let dir = mesh_dir("usage");
    for args in [
        &["GET", "/"][..],
        &["--from", "not-an-id", "GET", "/"],
        &["--plaintext", "--header", "no colon", "GET", "/"],
    ] {
        let (code, out) = check(&dir, args);
        assert_eq!(code, 2, "{args:?}: {out}");
    }
}
