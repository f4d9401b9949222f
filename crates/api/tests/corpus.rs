//! Compatibility with real Istio configuration: every resource in
//! `../shared/corpus` (Istio's samples, the istio.io docs, the API reference
//! examples and Istio's own valid test data) loads and validates without
//! error, one file at a time as a user would apply it; every block that is
//! not YAML as published fails with a syntax error naming its line.

use std::path::{Path, PathBuf};

use weft_api::{Level, Loaded, validate};

/// Files that are invalid upstream, with the reason.
const KNOWN_INVALID: &[(&str, &str)] = &[
    (
        "api-reference-examples/networking/v1alpha3/virtual_service-09.yaml",
        "namespace `nsA` is not a DNS-1123 label (upper case)",
    ),
    (
        "api-reference-examples/networking/v1alpha3/virtual_service-10.yaml",
        "namespace `nsB` is not a DNS-1123 label (upper case)",
    ),
    (
        "docs-examples/concepts/traffic-management/traffic-management-05.yaml",
        "an excerpt: a VirtualService with no http, tcp or tls routes",
    ),
    (
        "docs-examples/ops/best-practices/traffic-management/traffic-management-06.yaml",
        "an excerpt: the name `myapp-...` and the routes are elided",
    ),
    (
        "docs-examples/ops/common-problems/upgrade-issues/upgrade-issues-02.yaml",
        "`mode` placed beside `match` instead of inside it (not in the schema)",
    ),
    (
        "docs-examples/ops/configuration/mesh/configuration-scoping/configuration-scoping-02.yaml",
        "an excerpt: `spec: ...`",
    ),
    (
        "docs-examples/tasks/observability/distributed-tracing/telemetry-api/telemetry-api-04.yaml",
        "metadata fields are not indented under `metadata`",
    ),
    (
        "docs-examples/tasks/traffic-management/ingress/gateway-api/gateway-api-03.yaml",
        "an excerpt: a Gateway without listeners",
    ),
    (
        "samples/multicluster/expose-istiod-https.yaml",
        "placeholder host `ISTIOD-HOST.DOMAIN` to be replaced by the user",
    ),
    (
        "docs-examples/ops/common-problems/security-issues/security-issues-01.yaml",
        "Hugo shortcode `{{< github_file >}}` in jwksUri",
    ),
    (
        "docs-examples/tasks/security/authentication/authn-policy/authn-policy-06.yaml",
        "Hugo shortcode `{{< github_file >}}` in jwksUri",
    ),
    (
        "docs-examples/tasks/security/authentication/authn-policy/authn-policy-07.yaml",
        "Hugo shortcode `{{< github_file >}}` in jwksUri",
    ),
    (
        "docs-examples/tasks/security/authentication/claim-to-header/claim-to-header-01.yaml",
        "Hugo shortcode `{{< github_file >}}` in jwksUri",
    ),
    (
        "docs-examples/tasks/security/authentication/jwt-route/jwt-route-01.yaml",
        "Hugo shortcode `{{< github_file >}}` in jwksUri",
    ),
    (
        "docs-examples/tasks/security/authorization/authz-jwt/authz-jwt-01.yaml",
        "Hugo shortcode `{{< github_file >}}` in jwksUri",
    ),
];

fn corpus() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    assert!(
        dir.join("README.md").is_file(),
        "the Istio corpus is missing: expected ../shared/corpus beside the repository (looked in {})",
        dir.display()
    );
    dir
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("readable corpus")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) && !p.ends_with("MANIFEST.json")
        {
            out.push(p);
        }
    }
}

/// `$INGRESS_HOST`, `${INGRESS_DOMAIN}`: substituted by the shell before
/// the user applies the file.
fn has_shell_variable(text: &str) -> bool {
    let b = text.as_bytes();
    b.windows(2)
        .any(|w| w[0] == b'$' && (w[1].is_ascii_uppercase() || w[1] == b'{'))
}

fn load_one(path: &Path) -> Loaded {
    let mut loaded = Loaded::from_paths(&[path]).expect("readable file");
    let found = validate(&loaded.resources, None);
    loaded.diagnostics.extend(found);
    loaded
}

#[test]
fn every_corpus_resource_validates() {
    let root = corpus();
    let mut paths = Vec::new();
    for dir in [
        "samples",
        "api-reference-examples",
        "extra/tests-testdata-config",
        "docs-examples",
    ] {
        files(&root.join(dir), &mut paths);
    }
    let mut failures = Vec::new();
    let (mut checked, mut resources) = (0, 0);
    for path in &paths {
        let rel = path
            .strip_prefix(&root)
            .expect("under corpus")
            .to_string_lossy()
            .replace('\\', "/");
        if rel.split('/').any(|c| c.starts_with('_')) {
            continue;
        }
        let text = std::fs::read_to_string(path).expect("utf-8");
        if has_shell_variable(&text) {
            continue;
        }
        let loaded = load_one(path);
        let errors: Vec<String> = loaded
            .diagnostics
            .iter()
            .filter(|d| d.level == Level::Error)
            .map(ToString::to_string)
            .collect();
        let known = KNOWN_INVALID.iter().find(|(p, _)| *p == rel);
        match (known, errors.is_empty()) {
            (None, false) => failures.push(errors.join("\n")),
            (Some((p, why)), true) => {
                failures.push(format!("{p} is listed as invalid ({why}) but validates"))
            }
            _ => {}
        }
        checked += 1;
        resources += loaded.resources.len();
    }
    assert!(checked > 500, "only {checked} corpus files checked");
    assert!(resources > 600, "only {resources} resources loaded");
    assert!(
        failures.is_empty(),
        "{} corpus files fail:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn unparseable_blocks_fail_with_their_line() {
    let root = corpus();
    let mut paths = Vec::new();
    files(&root, &mut paths);
    let unparseable: Vec<_> = paths
        .iter()
        .filter(|p| p.components().any(|c| c.as_os_str() == "_unparseable"))
        .collect();
    assert!(
        unparseable.len() >= 10,
        "expected the corpus's unparseable blocks, found {}",
        unparseable.len()
    );
    for path in unparseable {
        let loaded = load_one(path);
        let syntax: Vec<_> = loaded
            .diagnostics
            .iter()
            .filter(|d| d.message.starts_with("YAML syntax error"))
            .collect();
        assert_eq!(
            syntax.len(),
            1,
            "{}: {:?}",
            path.display(),
            loaded.diagnostics
        );
        let d = syntax[0];
        assert!(d.pos.line > 1, "{}: no line in {d}", path.display());
        assert!(
            d.to_string()
                .starts_with(&format!("{}:{}:", path.display(), d.pos.line))
        );
        assert!(loaded.resources.is_empty());
    }
}

#[test]
fn the_whole_corpus_loads_without_panicking() {
    // Including Gateway API conversion inputs that are invalid on purpose,
    // meshconfig fragments and IstioOperator snippets.
    let root = corpus();
    let mut paths = Vec::new();
    files(&root, &mut paths);
    for path in paths {
        let loaded = load_one(&path);
        for d in &loaded.diagnostics {
            assert!(d.pos.line > 0 || d.file.as_ref() == "mesh config", "{d}");
        }
    }
}

/// A value for every property of an OpenAPI schema: the "maximal" object.
fn maximal(schema: &serde_json::Value) -> serde_json::Value {
    use serde_json::{Value, json};
    if let Some(first) = schema.get("enum").and_then(|e| e.get(0)) {
        return first.clone();
    }
    if schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        return json!(1);
    }
    match schema.get("type").and_then(Value::as_str) {
        Some("string") if schema.get("format").and_then(Value::as_str) == Some("byte") => {
            json!("eA==")
        }
        // A string that also parses as a duration, so Duration fields load.
        Some("string") => json!("1s"),
        Some("integer") => json!(1),
        Some("number") => json!(1.5),
        Some("boolean") => json!(true),
        Some("array") => json!([maximal(schema.get("items").unwrap_or(&Value::Null))]),
        _ => {
            let mut out = serde_json::Map::new();
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    // The schema lists deprecated snake_case spellings beside
                    // their camelCase twins; both at once is a duplicate.
                    let camel = weft_api::path::snake_to_camel(k);
                    if k.contains('_') && props.contains_key(&camel) {
                        continue;
                    }
                    out.insert(k.clone(), maximal(v));
                }
            } else if let Some(ap) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                out.insert("k".into(), maximal(ap));
            }
            Value::Object(out)
        }
    }
}

/// Every field of every served version of Istio's CRDs (and the Gateway API
/// kinds weft reads) is known to weft's types: an object with every property
/// set loads without an "unknown field" or type error.
#[test]
fn every_crd_field_is_modeled() {
    let root = corpus();
    let mut checked = 0;
    for file in ["crds/istio_crd-all.gen.yaml", "crds/gateway-api-crd.yaml"] {
        let text = std::fs::read_to_string(root.join(file)).expect("crd file");
        let docs = weft_api::yaml::parse_stream(&text).expect("crds parse");
        for doc in docs.into_iter().filter_map(|d| d.root) {
            let crd: serde_json::Value =
                weft_api::de::from_node(&doc, &weft_api::path::Path::Root).expect("crd as json");
            if crd["kind"] != "CustomResourceDefinition" {
                continue;
            }
            let group = crd["spec"]["group"].as_str().unwrap_or_default();
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
            if weft_api::KindInfo::find(group, kind).is_none() {
                continue;
            }
            for version in crd["spec"]["versions"].as_array().into_iter().flatten() {
                let v = version["name"].as_str().unwrap_or_default();
                let spec = maximal(&version["schema"]["openAPIV3Schema"]["properties"]["spec"]);
                let object = serde_json::json!({
                    "apiVersion": format!("{group}/{v}"),
                    "kind": kind,
                    "metadata": {"name": "maximal"},
                    "spec": spec,
                });
                let mut loaded = Loaded::default();
                loaded.add_text(&format!("{kind}.{v}.json"), &object.to_string());
                let errors: Vec<String> = loaded
                    .diagnostics
                    .iter()
                    .filter(|d| d.is_error())
                    .map(ToString::to_string)
                    .collect();
                let served =
                    weft_api::KindInfo::find(group, kind).is_some_and(|k| k.versions.contains(&v));
                if served {
                    assert!(errors.is_empty(), "{kind} {v}: {errors:#?}");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 30, "only {checked} kind versions checked");
}
