//! Any path through the normalizer, and any path pattern through the
//! authorization matcher: nothing may panic, and a normalized path is
//! absolute, free of dot segments and normalizes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_model::authz::{Authz, HttpRequest, Request};
use weft_model::normalize::{Normalization, normalize};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pattern, path) = text.split_once('\n').unwrap_or((text, "/"));
    for mode in [
        Normalization::Base,
        Normalization::MergeSlashes,
        Normalization::DecodeAndMergeSlashes,
    ] {
        if let Ok(t) = normalize(path, mode) {
            assert!(t.path.starts_with('/'));
            assert!(!t.path.split('/').any(|s| s == "." || s == ".."));
            assert_eq!(normalize(&t.path, mode).map(|n| n.path), Ok(t.path.clone()));
        }
    }
    let _ = normalize(path, Normalization::None);
    // The pattern as a path, host, header value and IP block of a policy.
    let Ok(quoted) = serde_json_string(pattern) else {
        return;
    };
    let yaml = format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: default}}\nspec:\n  rules:\n  - to: [{{operation: {{paths: [{quoted}], hosts: [{quoted}]}}}}]\n    from: [{{source: {{ipBlocks: [{quoted}]}}}}]\n    when: [{{key: \"request.headers[x]\", values: [{quoted}]}}]\n"
    );
    let mut loaded = weft_api::Loaded::default();
    loaded.add_text("fuzz.yaml", &yaml);
    let authz = Authz::for_workload(&loaded.resources, &weft_model::Mesh::new("cluster.local"), "default", &Default::default());
    let headers = |_: &str| vec![path];
    let _ = authz.evaluate(&Request {
        principal: Some("spiffe://cluster.local/ns/default/sa/x"),
        source_ip: "10.0.0.1".parse().ok(),
        remote_ip: None,
        destination: "10.0.0.2:80".parse().expect("address"),
        sni: None,
        http: Some(HttpRequest {
            method: "GET",
            host: path,
            path,
            headers: &headers,
            auth: None,
        }),
    });
});

/// A YAML double-quoted scalar for `s` (JSON's escaping is valid YAML).
fn serde_json_string(s: &str) -> Result<String, ()> {
    if s.chars().any(|c| c.is_control()) {
        return Err(());
    }
    Ok(format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")))
}
