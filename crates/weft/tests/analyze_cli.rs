//! `weft analyze` as a CI gate: Istio's message lines, JSON, exit codes,
//! thresholds and suppressions, through real files.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

mod common;

use std::process::{Command, Output};

fn analyze(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("analyze")
        .args(args)
        .output()
        .expect("weft runs")
}

const MESH: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: httpbin, namespace: default}
spec:
  hosts: ["*"]
  gateways: [httpbin-gateway-bogus]
  http: [{route: [{destination: {host: httpbin}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec: {hosts: [db.example.com], ports: [{number: 5432, name: tcp, protocol: TCP}], resolution: DNS}
"#;

#[test]
fn findings_print_in_istios_form_and_fail_the_run() {
    let dir = common::temp("analyze");
    let file = dir.join("mesh.yaml");
    std::fs::write(&file, MESH).expect("write");
    let path = file.to_str().unwrap_or_default();
    let out = analyze(&[path]);
    assert_eq!(out.status.code(), Some(79));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        vec![
            format!(
                r#"Error [IST0101] (VirtualService default/httpbin {path}:1) Referenced gateway not found: "httpbin-gateway-bogus""#
            ),
            format!(
                r#"Error [IST0101] (VirtualService default/httpbin {path}:1) Referenced host not found: "httpbin""#
            ),
            format!(
                "Warning [IST0134] (ServiceEntry default/db {path}:9) ServiceEntry addresses are required for this protocol."
            ),
            format!(
                "Warning [IST0132] (VirtualService default/httpbin {path}:1) one or more host [*] defined in VirtualService default/httpbin not found in Gateway default/httpbin-gateway-bogus."
            ),
        ]
    );

    let out = analyze(&["--output", "json", path]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json[2]["code"], "IST0134");
    assert_eq!(json[2]["level"], "Warning");
    assert_eq!(json[2]["origin"], "ServiceEntry default/db");
    assert_eq!(json[2]["source"], format!("{path}:9"));
    assert_eq!(
        json[2]["documentationUrl"],
        "https://istio.io/latest/docs/reference/config/analysis/ist0134/"
    );

    // Suppressed errors leave warnings: below the default threshold.
    let out = analyze(&["--suppress", "IST0101=VirtualService default/*", path]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    let out = analyze(&["--suppress", "IST0101=*", "--fail-on", "warning", path]);
    assert_eq!(out.status.code(), Some(79));

    // Schema errors are IST0106; unparseable input is exit 65.
    std::fs::write(
        &file,
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec: {host: r, trafficPolicy: {loadBalancer: {simple: FASTEST}}}\n",
    )
    .expect("write");
    let out = analyze(&[path]);
    assert_eq!(out.status.code(), Some(79));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("Error [IST0106] (DestinationRule default/r"),
        "{text}"
    );
    assert!(text.contains("Schema validation error: "), "{text}");
    std::fs::write(&file, "kind: [unclosed\n").expect("write");
    assert_eq!(analyze(&[path]).status.code(), Some(65));

    // Istio's validation warnings for dead rules have codes of their own.
    std::fs::write(
        &file,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [r.example.com]\n  http:\n  - match: [{uri: {exact: /a}}]\n    route: [{destination: {host: r.example.com}}]\n  - match: [{uri: {exact: /a}}]\n    route: [{destination: {host: r.example.com}}]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: r}\nspec: {hosts: [r.example.com], ports: [{number: 80, name: http, protocol: HTTP}], resolution: DNS}\n",
    )
    .expect("write");
    let out = analyze(&["--fail-on", "info", path]);
    assert_eq!(out.status.code(), Some(79));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        vec![
            format!(
                "Warning [IST0130] (VirtualService default/r {path}:9) VirtualService rule #1 not used (all matches used by prior rules)."
            ),
            format!(
                "Info [IST0131] (VirtualService default/r {path}:9) VirtualService rule #1 match #0 is not used (duplicate/overlapping match in rule #0)."
            ),
        ]
    );

    // The same resource in two files is no schema error.
    let twice = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec: {host: r}\n";
    std::fs::write(&file, twice).expect("write");
    std::fs::write(dir.join("again.yaml"), twice).expect("write");
    let out = analyze(&[dir.to_str().unwrap_or_default()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The demo's configuration is clean.
    let demo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo");
    let out = analyze(&[demo.to_str().unwrap_or_default()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Its readiness: every row but the gateway's TLS, which a laptop demo
    // without certificates cannot have.
    let out = analyze(&["--readiness", demo.to_str().unwrap_or_default()]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let marks: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with('✓') || l.starts_with('✗'))
        .collect();
    // The hygiene row holds where the checkout is a git work tree.
    let tracked = std::process::Command::new("git")
        .arg("-C")
        .arg(&demo)
        .args(["ls-files", "--error-unmatch", "--", "10-productpage.yaml"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !tracked {
        println!("examples/demo is not tracked by git here: the hygiene row is expected to fail");
    }
    let hygiene = if tracked {
        "✓ configuration in git, one API version per kind"
    } else {
        "✗ configuration in git, one API version per kind"
    };
    assert_eq!(
        marks,
        vec![
            "✓ mTLS everywhere (STRICT)",
            "✓ least-privilege authorization",
            "✗ traffic enters through a gateway with TLS",
            "✓ timeouts, retries and circuit breaking",
            "✓ egress controlled (REGISTRY_ONLY)",
            "✓ resources: requests, limits, autoscaling, disruption budgets",
            "✓ observability running (metrics, tracing)",
            hygiene,
        ],
        "{text}"
    );
    let out = analyze(&[
        "--readiness",
        "--fail-on",
        "warning",
        demo.to_str().unwrap_or_default(),
    ]);
    assert_eq!(out.status.code(), Some(79));
}

#[test]
fn sarif_output_locates_each_finding() {
    let dir = std::env::temp_dir().join(format!("weft-sarif-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("vs.yaml");
    std::fs::write(
        &file,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: reviews, namespace: default}\nspec:\n  hosts: [reviews]\n  http: [{route: [{destination: {host: reviews}}]}]\n",
    )
    .unwrap();
    let out = analyze(&["--output", "sarif", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(79));
    let log: serde_json::Value = serde_json::from_slice(&out.stdout).expect("SARIF is JSON");
    assert_eq!(log["version"], "2.1.0");
    let run = &log["runs"][0];
    assert_eq!(run["tool"]["driver"]["rules"][0]["id"], "IST0101");
    let result = &run["results"][0];
    assert_eq!(result["ruleId"], "IST0101");
    assert_eq!(result["level"], "error");
    assert_eq!(
        result["message"]["text"],
        "Referenced host not found: \"reviews\""
    );
    let location = &result["locations"][0]["physicalLocation"];
    assert_eq!(location["artifactLocation"]["uri"], file.to_str().unwrap());
    assert_eq!(location["region"]["startLine"], 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_gateway_credential_may_be_a_folder_beside_the_configuration() {
    let dir = std::env::temp_dir().join(format!("weft-cred-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("web-cred")).unwrap();
    std::fs::write(
        dir.join("gateway.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: ingressgateway, namespace: istio-system}\nspec: {address: 10.0.0.2, labels: {istio: ingressgateway}}\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: web, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [web.example.com], tls: {mode: SIMPLE, credentialName: web-cred}}]\n",
    )
    .unwrap();
    // Without the folder's certificate the credential is missing...
    let out = analyze(&[dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(79));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(r#"Referenced credentialName not found: "web-cred""#)
    );
    // ... and with it, found, whether the folder or a file is analyzed.
    write_credential(&dir, "web-cred");
    for input in [dir.clone(), dir.join("gateway.yaml")] {
        let out = analyze(&[input.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_credential_folder_that_does_not_parse_is_invalid() {
    let dir = std::env::temp_dir().join(format!("weft-badcred-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("web-cred")).unwrap();
    std::fs::write(
        dir.join("gateway.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: ingressgateway, namespace: istio-system}\nspec: {address: 10.0.0.2, labels: {istio: ingressgateway}}\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: web, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: [web.example.com], tls: {mode: SIMPLE, credentialName: web-cred}}]\n",
    )
    .unwrap();
    std::fs::write(dir.join("web-cred/tls.crt"), "not a certificate").unwrap();
    std::fs::write(dir.join("web-cred/tls.key"), "not a key").unwrap();
    let out = analyze(&[dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(79));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[IST0161] (Gateway istio-system/web")
            && text.contains(
                "The credential referenced by the Gateway web in namespace istio-system is invalid"
            ),
        "{text}"
    );
    // A real certificate and key make it valid.
    write_credential(&dir, "web-cred");
    let out = analyze(&[dir.join("gateway.yaml").to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A certificate and key from a CA made with `weft ca`, as the credential
/// folder `dir/name` (tls.crt, tls.key).
fn write_credential(dir: &std::path::Path, name: &str) {
    let weft = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (ca, issued) = (dir.join("ca"), dir.join("issued"));
    if !ca.join("ca-key.pem").exists() {
        weft(&["ca", "init", "--dir", ca.to_str().unwrap()]);
    }
    weft(&[
        "ca",
        "issue",
        "--dir",
        ca.to_str().unwrap(),
        "--spiffe-id",
        "spiffe://cluster.local/ns/istio-system/sa/web",
        "--out-dir",
        issued.to_str().unwrap(),
    ]);
    let folder = dir.join(name);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(issued.join("cert-chain.pem"), folder.join("tls.crt")).unwrap();
    std::fs::copy(issued.join("key.pem"), folder.join("tls.key")).unwrap();
}

#[test]
fn a_secret_without_a_usable_certificate_is_an_invalid_credential() {
    use base64::Engine;
    let dir = std::env::temp_dir().join(format!("weft-secrets-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // A certificate valid from a day ago for a year, and one that expired
    // yesterday, both self-signed.
    let day = std::time::Duration::from_secs(86_400);
    let now = std::time::SystemTime::now();
    let certificate = |from: std::time::SystemTime, to: std::time::SystemTime| {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["web.example.com".into()]).unwrap();
        params.not_before = from.into();
        params.not_after = to.into();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    };
    let (good_cert, good_key) = certificate(now - day, now + 365 * day);
    let (old_cert, old_key) = certificate(now - 30 * day, now - day);
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let indent = |s: &str| s.replace('\n', "\n    ");
    let gateway = |name: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: istio-system}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers: [{{port: {{number: 443, name: https, protocol: HTTPS}}, hosts: [{name}.example.com], tls: {{mode: SIMPLE, credentialName: {name}-cred}}}}]\n---\n"
        )
    };
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: ingressgateway, namespace: istio-system}}\nspec: {{address: 10.0.0.2, labels: {{istio: ingressgateway}}}}\n---\n{}{}{}{}\
apiVersion: v1\nkind: Secret\nmetadata: {{name: good-cred, namespace: istio-system}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n    {}\n  tls.key: |\n    {}\n---\n\
apiVersion: v1\nkind: Secret\nmetadata: {{name: generic-cred, namespace: istio-system}}\ndata: {{cert: {}, key: {}}}\n---\n\
apiVersion: v1\nkind: Secret\nmetadata: {{name: old-cred, namespace: istio-system}}\ndata: {{tls.crt: {}, tls.key: {}}}\n---\n\
apiVersion: v1\nkind: Secret\nmetadata: {{name: empty-cred, namespace: istio-system}}\ndata: {{ca.crt: {}}}\n",
        gateway("good"),
        gateway("generic"),
        gateway("old"),
        gateway("empty"),
        indent(&good_cert),
        indent(&good_key),
        b64(&good_cert),
        b64(&good_key),
        b64(&old_cert),
        b64(&old_key),
        b64(&good_cert),
    );
    std::fs::write(dir.join("mesh.yaml"), yaml).unwrap();
    let out = analyze(&["--output", "json", dir.join("mesh.yaml").to_str().unwrap()]);
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let invalid: Vec<&str> = found
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["code"] == "IST0161")
        .map(|m| m["origin"].as_str().unwrap())
        .collect();
    assert_eq!(
        invalid,
        ["Gateway istio-system/empty", "Gateway istio-system/old"],
        "{found:#}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_annotation_suppresses_schema_and_analyzer_codes_about_its_resource() {
    let dir = std::env::temp_dir().join(format!("weft-suppress-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("mesh.yaml");
    std::fs::write(
        &file,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: httpbin\n  annotations: {galley.istio.io/analyze-suppress: \"IST0101,IST0106,IST0132\"}\nspec:\n  hosts: [\"*\"]\n  gateways: [httpbin-gateway-bogus]\n  http: [{route: [{destination: {host: httpbin, port: {number: 0}}}]}]\n",
    )
    .unwrap();
    let out = analyze(&[file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("No validation issues"), "{text}");
    std::fs::write(
        &file,
        std::fs::read_to_string(&file)
            .unwrap()
            .replace("IST0101,", ""),
    )
    .unwrap();
    let out = analyze(&[file.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[IST0101]") && !text.contains("[IST0106]"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
