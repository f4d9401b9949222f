use super::*;

fn load(text: &str) -> Loaded {
    let mut l = Loaded::default();
    l.add_text("t.yaml", text);
    l.check_duplicates();
    l
}

fn messages(l: &Loaded) -> Vec<String> {
    l.diagnostics.iter().map(ToString::to_string).collect()
}

#[test]
fn namespace_defaults_and_origin() {
    let l = load(
        "apiVersion: networking.istio.io/v1beta1\nkind: ServiceEntry\nmetadata: {name: a}\nspec: {hosts: [a.com]}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
    );
    assert!(l.diagnostics.is_empty(), "{:?}", messages(&l));
    assert_eq!(l.resources[0].origin(), "ServiceEntry default/a");
    assert_eq!(l.resources[0].api_version, "networking.istio.io/v1beta1");
    assert_eq!(l.resources[1].origin(), "Namespace shop");
    assert_eq!(l.resources[1].source.pos.line, 6);
}

#[test]
fn lists_are_unpacked() {
    let l = load(
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ServiceAccount\n  metadata: {name: a}\n- apiVersion: v1\n  kind: ServiceAccount\n  metadata: {name: b}\n",
    );
    assert_eq!(l.resources.len(), 2);
    assert_eq!(l.resources[1].source.pos.line, 7);
}

#[test]
fn duplicates_name_both_places() {
    let l = load(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a, namespace: default}\n",
    );
    assert_eq!(
        messages(&l),
        vec!["t.yaml:5:1: ServiceAccount default/a: defined twice; first at t.yaml:1:1"]
    );
    // Istio's Gateway and the Gateway API's may share a name.
    let l = load(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {}\n",
    );
    assert!(l.diagnostics.is_empty(), "{:?}", messages(&l));
}

#[test]
fn unmodeled_kinds_are_skipped_with_a_note() {
    let l = load(
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {name: x}\nspec: {}\n---\napiVersion: v1\nkind: LimitRange\nmetadata: {name: s}\n",
    );
    assert!(l.resources.is_empty());
    assert!(l.diagnostics.iter().all(|d| d.level == Level::Note));
    assert_eq!(
        messages(&l)[1],
        "t.yaml:6:1: LimitRange s: skipped (v1): not a kind weft reads"
    );
}

#[test]
fn envelope_errors() {
    let l = load("kind: VirtualService\nmetadata: {name: a}\n");
    assert_eq!(messages(&l), vec!["t.yaml:1:1: apiVersion: required"]);
    let l = load("apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: a}\n");
    assert_eq!(
        messages(&l),
        vec![
            "t.yaml:1:13: apiVersion: networking.istio.io/v2 does not serve VirtualService; use networking.istio.io/v1 or networking.istio.io/v1beta1 or networking.istio.io/v1alpha3"
        ]
    );
    let l = load(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: a}\nspec: {}\nextra: 1\n",
    );
    assert_eq!(
        messages(&l),
        vec!["t.yaml:5:1: PeerAuthentication default/a: extra: unknown field `extra`"]
    );
    let l = load("- a\n- b\n");
    assert_eq!(
        messages(&l),
        vec![
            "t.yaml:1:1: expected a Kubernetes object (a mapping with apiVersion and kind), found a list"
        ]
    );
    let l = load("apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n");
    assert_eq!(
        messages(&l),
        vec!["t.yaml:3:11: ConfigMap default/: metadata.name: required"]
    );
}

#[test]
fn mesh_config_from_the_istio_configmap_keeps_lines() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: |\n    trustDomain: example.org\n    outboundTrafficPolicy:\n      mode: REGISTRY_ONLY\n";
    let l = load(text);
    let mesh = l.mesh.as_ref().expect("mesh config");
    assert_eq!(mesh.config.trust_domain.as_deref(), Some("example.org"));
    let bad = text.replace("REGISTRY_ONLY", "BLOCK_ALL");
    let l = load(&bad);
    assert!(l.mesh.is_none());
    assert_eq!(
        messages(&l),
        vec![
            "t.yaml:8:13: ConfigMap istio-system/istio (data.mesh): outboundTrafficPolicy.mode: unknown value `BLOCK_ALL`, expected one of: REGISTRY_ONLY, ALLOW_ANY"
        ]
    );
}

#[test]
fn mesh_config_file() {
    let m = load_mesh_config("mesh.yaml", "rootNamespace: mesh-root\ndefaultConfig:\n  proxyMetadata: {A: b}\nunknownFutureField: 1\n").unwrap();
    assert_eq!(m.config.root_namespace.as_deref(), Some("mesh-root"));
    let e = load_mesh_config("mesh.yaml", "enableTracing: maybe\n").unwrap_err();
    assert_eq!(
        e[0].to_string(),
        "mesh.yaml:1:16: MeshConfig: enableTracing: expected true or false, found string `maybe`"
    );
}

#[test]
fn folders_are_walked_sorted_skipping_hidden_entries() {
    let dir = std::env::temp_dir().join(format!("weft-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    let sa = |n: &str| format!("apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: {n}}}\n");
    std::fs::write(dir.join("b.yaml"), sa("b")).unwrap();
    std::fs::write(dir.join("sub/a.yml"), sa("a")).unwrap();
    std::fs::write(
        dir.join("c.json"),
        "{\"apiVersion\": \"v1\", \"kind\": \"ServiceAccount\", \"metadata\": {\"name\": \"c\"}}",
    )
    .unwrap();
    std::fs::write(dir.join(".git/x.yaml"), "not: [valid").unwrap();
    std::fs::write(dir.join("notes.txt"), "ignored").unwrap();
    let l = Loaded::from_paths(&[&dir]).unwrap();
    let names: Vec<&str> = l.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec!["b", "c", "a"]);
    assert_eq!(l.files, 3);
    let missing = Loaded::from_paths(&[dir.join("nope")]).unwrap_err();
    assert!(missing.to_string().contains("nope"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn non_utf8_input_is_an_error_with_position() {
    let dir = std::env::temp_dir().join(format!("weft-utf8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bin.yaml");
    std::fs::write(&file, b"a: 1\nb: \xff\n").unwrap();
    let l = Loaded::from_paths(&[&file]).unwrap();
    assert_eq!(
        messages(&l),
        vec![format!("{}:2:4: not UTF-8 text", file.display())]
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A stream large enough to be loaded in parallel pieces.
fn big_stream(n: usize) -> String {
    (0..n)
        .map(|i| {
            format!(
                "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r{i}\nspec:\n  host: r{i}\n  subsets:\n  - name: v1\n    labels: {{version: v1}}\n"
            )
        })
        .collect()
}

#[test]
fn large_streams_load_in_pieces_with_the_same_result() {
    let text = big_stream(4000);
    assert!(
        yaml::split_documents(&text, 2).len() == 2,
        "the stream should be cut"
    );
    let mut parallel = Loaded::default();
    parallel.add_text("big.yaml", &text);
    assert_eq!(parallel.resources.len(), 4000);
    assert_eq!(parallel.files, 1);
    // Every resource is where the whole-stream parser puts it.
    let whole = yaml::parse_stream(&text).unwrap();
    for (r, doc) in parallel.resources.iter().zip(&whole) {
        assert_eq!(r.source.pos, doc.root.as_ref().unwrap().pos, "{}", r.name);
    }
    assert_eq!(parallel.resources[3999].name, "r3999");
    assert_eq!(parallel.resources[3999].source.pos.line, 3999 * 10 + 2);
}

#[test]
fn a_syntax_error_in_any_piece_loads_nothing_from_that_text() {
    let mut text = big_stream(4000);
    text.push_str("---\napiVersion: v1\nkind: [unclosed\n");
    let lines = text.lines().count();
    let mut l = Loaded::default();
    l.add_texts(&[
        ("big.yaml", &text),
        (
            "small.yaml",
            "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: a}\n",
        ),
    ]);
    assert_eq!(l.resources.len(), 1, "only small.yaml loads");
    assert_eq!(l.diagnostics.len(), 1);
    let d = &l.diagnostics[0];
    assert!(d.message.starts_with("YAML syntax error"), "{d}");
    assert!(
        d.pos.line as usize >= lines - 1,
        "{d} should point at the end ({lines} lines)"
    );
    assert_eq!(l.files, 2);
}
