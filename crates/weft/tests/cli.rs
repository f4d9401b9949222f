//! `weft` as a user runs it: real files, stdin, exit codes and output.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn weft(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weft runs");
    let mut input = child.stdin.take().expect("stdin");
    // A command that exits before reading (a usage error) closes the pipe.
    match input.write_all(stdin.unwrap_or("").as_bytes()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        r => r.expect("write stdin"),
    }
    drop(input);
    child.wait_with_output().expect("weft exits")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

const GOOD: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews, subset: v1}\n";
const BAD: &str = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: reviews\n  namespace: shop\nspec:\n  host: reviews\n  trafficPolicy:\n    outlierDetection:\n      interval: 10x\n";

#[test]
fn valid_config_exits_zero_with_a_summary() {
    let dir = temp_dir("good");
    std::fs::write(dir.join("vs.yaml"), GOOD).unwrap();
    let out = weft(&["validate", dir.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(
        stdout(&out),
        "1 resources in 1 files: 0 errors, 0 warnings\n"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn invalid_config_exits_one_naming_file_line_field_and_rule() {
    let dir = temp_dir("bad");
    let file = dir.join("dr.yaml");
    std::fs::write(&file, BAD).unwrap();
    let out = weft(&["validate", file.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let expected = format!(
        "{}:10:17: DestinationRule shop/reviews: spec.trafficPolicy.outlierDetection.interval: invalid duration `10x`: expected a number and unit such as 1.5s, 100ms or 1m30s\n0 resources in 1 files: 1 errors, 0 warnings\n",
        file.display()
    );
    assert_eq!(stdout(&out), expected);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn stdin_and_json_output() {
    let input = format!("{GOOD}---\n{BAD}");
    let out = weft(&["validate", "--output", "json", "-"], Some(&input));
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["resources"], 1);
    assert_eq!(json["errors"], 1);
    let d = &json["diagnostics"][0];
    assert_eq!(d["level"], "error");
    assert_eq!(d["file"], "-");
    assert_eq!(d["line"], 20);
    assert_eq!(d["resource"], "DestinationRule shop/reviews");
    assert_eq!(d["field"], "spec.trafficPolicy.outlierDetection.interval");
}

#[test]
fn warnings_do_not_fail_and_are_marked() {
    let warn = "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: f}\nspec:\n  configPatches:\n  - applyTo: HTTP_FILTER\n    patch: {operation: MERGE}\n";
    let out = weft(&["validate", "-"], Some(warn));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "-:5:3: EnvoyFilter default/f: spec: warning: weft does not run Envoy: this EnvoyFilter is loaded but has no effect (weft applies only the local rate limit of Istio's rate-limit task; here configPatches[0]: applyTo HTTP_FILTER with operation MERGE is not a local rate limit); see weft's RateLimit resource\n1 resources in 1 files: 0 errors, 1 warnings\n"
    );
}

#[test]
fn gateway_api_routes_that_cannot_be_served_are_warned_of() {
    let route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: web, namespace: shop}\nspec:\n  parentRefs: [{name: missing-gateway}]\n  rules: [{backendRefs: [{name: web, port: 80}]}]\n";
    let out = weft(&["validate", "-"], Some(route));
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains("-:1:1: HTTPRoute shop/web: warning: parent Gateway shop/missing-gateway not found; the route is not served there"),
        "{text}"
    );
    assert!(text.contains("0 errors, 2 warnings"), "{text}");
}

#[test]
fn mesh_config_file_is_checked() {
    let dir = temp_dir("mesh");
    let mesh = dir.join("mesh.yaml");
    std::fs::write(&mesh, "outboundTrafficPolicy:\n  mode: REGISTRY_ONLYY\n").unwrap();
    std::fs::write(dir.join("vs.yaml"), GOOD).unwrap();
    let out = weft(
        &[
            "validate",
            "--mesh-config",
            mesh.to_str().unwrap(),
            dir.join("vs.yaml").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("mesh.yaml:2:9: MeshConfig: outboundTrafficPolicy.mode: unknown value `REGISTRY_ONLYY`, expected one of: REGISTRY_ONLY, ALLOW_ANY"),
        "{}",
        stdout(&out)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn usage_and_io_errors_exit_two() {
    let out = weft(&["validate"], None);
    assert_eq!(out.status.code(), Some(2));
    let out = weft(&["validate", "/nonexistent/weft/config"], None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/weft/config"));
    // The cause is said once.
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    let out = weft(
        &["validate", "--mesh-config", "/nonexistent/mesh.yaml", "-"],
        Some(GOOD),
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reading mesh config: /nonexistent/mesh.yaml: No such file"),
        "{err}"
    );
    let out = weft(&["validate", "--output", "xml", "-"], Some(GOOD));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_on_every_subcommand_and_version() {
    let out = weft(&["--version"], None);
    assert_eq!(
        stdout(&out),
        format!("weft {}\n", env!("CARGO_PKG_VERSION"))
    );
    for sub in [
        "validate",
        "demo",
        "demo-app",
        "control-plane",
        "proxy",
        "status",
        "config-dump",
        "authz",
    ] {
        let out = weft(&[sub, "--help"], None);
        assert_eq!(out.status.code(), Some(0), "{sub}");
        assert!(
            stdout(&out).contains("Usage: weft"),
            "{sub}: {}",
            stdout(&out)
        );
    }
}

#[test]
fn demo_config_validates() {
    let examples = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo");
    let out = weft(&["validate", examples.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = weft(
        &[
            "demo",
            "--check",
            "--config-dir",
            examples.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("are valid"), "{}", stdout(&out));
}
