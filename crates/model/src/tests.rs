use std::collections::BTreeMap;

use super::*;
use crate::config::{RequestView, RouteAction};

const MESH: &str = r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: productpage, namespace: default}
spec: {address: 127.0.0.21, serviceAccount: productpage, labels: {app: productpage}, ports: {http: 9080}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 127.0.0.31, serviceAccount: reviews, labels: {app: reviews, version: v1}, ports: {http: 9081}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v2, namespace: default}
spec: {address: 127.0.0.32, serviceAccount: reviews, labels: {app: reviews, version: v2}, ports: {http: 9082}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: productpage, namespace: default}
spec:
  hosts: [productpage.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: productpage}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
"#;

fn load(extra: &str) -> Vec<weft_api::Resource> {
    let mut l = weft_api::Loaded::default();
    l.add_text("mesh.yaml", &format!("{MESH}---\n{extra}"));
    assert_eq!(l.errors(), 0, "{:?}", l.diagnostics);
    let found = weft_api::validate(&l.resources, None);
    assert!(found.iter().all(|d| !d.is_error()), "{found:?}");
    l.resources
}

fn config(extra: &str) -> ProxyConfig {
    let resources = load(extra);
    let registry = Registry::from_resources(&resources);
    compile(
        &resources,
        &registry,
        "default",
        "productpage",
        &crate::Mesh::new("cluster.local"),
    )
    .unwrap()
}

fn view<'a>(
    path: &'a str,
    headers: &'a (dyn Fn(&str) -> Option<&'a str> + Sync),
) -> RequestView<'a> {
    RequestView {
        auth: None,
        method: "GET",
        scheme: "http",
        authority: "reviews:9080",
        path,
        port: 9080,
        headers,
    }
}

fn forward(action: &RouteAction) -> Vec<(String, u32)> {
    match action {
        RouteAction::Forward(w) => w.iter().map(|w| (w.cluster.clone(), w.weight)).collect(),
        other => panic!("not a forward: {other:?}"),
    }
}

#[test]
fn the_workload_and_its_identity() {
    let c = config("");
    assert_eq!(
        c.workload.identity,
        "spiffe://cluster.local/ns/default/sa/productpage"
    );
    assert_eq!(c.workload.address.to_string(), "127.0.0.21");
    assert_eq!(c.inbound.len(), 1);
    assert_eq!(c.inbound[0].port, 9080);
}

#[test]
fn without_a_virtual_service_traffic_goes_to_every_endpoint() {
    let c = config("");
    let svc = c
        .outbound
        .iter()
        .find(|s| s.host == "reviews.default.svc.cluster.local")
        .unwrap();
    assert!(
        svc.answers_to("reviews", "default")
            && svc.answers_to("Reviews.default", "default")
            && svc.answers_to("reviews.default.svc", "other")
            && !svc.answers_to("reviews", "other")
            && !svc.answers_to("reviews.default.svcx", "default")
    );
    let no_headers = |_: &str| None;
    let route = svc.route(&view("/", &no_headers)).unwrap();
    assert_eq!(
        forward(&route.action),
        vec![(
            "outbound|9080||reviews.default.svc.cluster.local".to_string(),
            100
        )]
    );
    let cluster = &c.clusters["outbound|9080||reviews.default.svc.cluster.local"];
    let addrs: Vec<String> = cluster
        .endpoints
        .iter()
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(
        addrs,
        vec!["127.0.0.31:9081", "127.0.0.32:9082"],
        "the workload's port for the service port name"
    );
    assert_eq!(
        cluster.endpoints[0].identity.as_deref(),
        Some("spiffe://cluster.local/ns/default/sa/reviews")
    );
}

#[test]
fn weighted_subsets_and_first_match_wins() {
    let c = config(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match:
    - headers: {end-user: {exact: jason}}
    route:
    - destination: {host: reviews, subset: v2}
  - match:
    - uri: {regex: "/api/v[0-9]+/.*"}
      ignoreUriCase: true
    route:
    - destination: {host: reviews, subset: v1}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: 90
    - destination: {host: reviews, subset: v2}
      weight: 10
"#,
    );
    let svc = c
        .outbound
        .iter()
        .find(|s| s.host == "reviews.default.svc.cluster.local")
        .unwrap();
    let jason: BTreeMap<&str, &str> = [("end-user", "jason")].into();
    let jason = |k: &str| jason.get(k).copied();
    let none = |_: &str| None;
    let r = svc.route(&view("/", &jason)).unwrap();
    assert_eq!(
        forward(&r.action),
        vec![(
            "outbound|9080|v2|reviews.default.svc.cluster.local".into(),
            100
        )]
    );
    let r = svc.route(&view("/api/v2/books?x=1", &none)).unwrap();
    assert_eq!(r.name.as_deref(), Some("route-1"));
    let r = svc.route(&view("/API/v2/x", &none)).unwrap();
    assert_eq!(
        r.name.as_deref(),
        Some("route-2"),
        "regex is case-sensitive even with ignoreUriCase"
    );
    let r = svc.route(&view("/other", &none)).unwrap();
    assert_eq!(
        forward(&r.action),
        vec![
            (
                "outbound|9080|v1|reviews.default.svc.cluster.local".into(),
                90
            ),
            (
                "outbound|9080|v2|reviews.default.svc.cluster.local".into(),
                10
            )
        ]
    );
    let v1: Vec<String> = c.clusters["outbound|9080|v1|reviews.default.svc.cluster.local"]
        .endpoints
        .iter()
        .map(|e| e.address.to_string())
        .collect();
    assert_eq!(v1, vec!["127.0.0.31:9081"]);
}

#[test]
fn matches_on_method_query_absent_headers_and_port() {
    let c = config(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: posts
    match: [{method: {exact: POST}}]
    directResponse: {status: 405}
  - name: debug
    match: [{queryParams: {debug: {exact: "1"}}}]
    directResponse: {status: 418, body: {string: teapot}}
  - name: anonymous
    match: [{withoutHeaders: {authorization: {}}}]
    redirect: {uri: /login}
  - name: other-port
    match: [{port: 9999}]
    directResponse: {status: 500}
  - route: [{destination: {host: reviews}}]
"#,
    );
    let svc = c
        .outbound
        .iter()
        .find(|s| s.host == "reviews.default.svc.cluster.local")
        .unwrap();
    assert!(
        svc.routes
            .iter()
            .all(|r| r.name.as_deref() != Some("other-port")),
        "routes for other ports are dropped"
    );
    let auth = |k: &str| (k == "authorization").then_some("Bearer x");
    let none = |_: &str| None;
    let mut post = view("/", &auth);
    post.method = "POST";
    assert_eq!(svc.route(&post).unwrap().name.as_deref(), Some("posts"));
    assert_eq!(
        svc.route(&view("/?a=2&debug=1", &auth))
            .unwrap()
            .name
            .as_deref(),
        Some("debug")
    );
    assert_eq!(
        svc.route(&view("/?debug=10", &auth))
            .unwrap()
            .name
            .as_deref(),
        Some("route-4")
    );
    assert_eq!(
        svc.route(&view("/", &none)).unwrap().name.as_deref(),
        Some("anonymous")
    );
    assert_eq!(
        svc.route(&view("/", &auth)).unwrap().name.as_deref(),
        Some("route-4")
    );
}

#[test]
fn unknown_destinations_and_undefined_subsets_have_no_endpoints() {
    let c = config(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews, subset: v9}
      weight: 50
    - destination: {host: nowhere.example.com, port: {number: 80}}
      weight: 50
"#,
    );
    let v9 = &c.clusters["outbound|9080|v9|reviews.default.svc.cluster.local"];
    assert!(v9.endpoints.is_empty() && !v9.missing);
    let nowhere = &c.clusters["outbound|80||nowhere.example.com"];
    assert!(nowhere.missing);
    // The compiled config is serializable for /config_dump.
    let json = serde_json::to_string(&c).unwrap();
    assert!(json.contains("\"identity\":\"spiffe://cluster.local/ns/default/sa/productpage\""));
}

#[test]
fn a_proxy_without_a_workload_entry_is_an_error() {
    let resources = load("");
    let registry = Registry::from_resources(&resources);
    let err = compile(
        &resources,
        &registry,
        "default",
        "ghost",
        &crate::Mesh::new("cluster.local"),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "no WorkloadEntry default/ghost with an IP address: the proxy needs one to know its address, labels and service account"
    );
}

#[test]
fn short_names_expand_like_istio() {
    assert_eq!(
        compile::expand("reviews", "prod"),
        "reviews.prod.svc.cluster.local"
    );
    assert_eq!(
        compile::expand("reviews.prod", "x"),
        "reviews.prod.svc.cluster.local"
    );
    assert_eq!(compile::expand("api.example.com", "x"), "api.example.com");
    assert_eq!(compile::expand("*.example.com", "x"), "*.example.com");
}

#[test]
fn regex_rewrites_take_istio_capture_syntax() {
    assert_eq!(compile::substitution(r"/\2/x/\1"), "/${2}/x/${1}");
    assert_eq!(compile::substitution("/a$b"), "/a$$b");
    assert_eq!(compile::substitution(r"/a\\1\q"), r"/a\1\q");
    assert_eq!(compile::substitution(r"end\"), r"end\");
    let re = regex::Regex::new("^/([a-z]+)/([0-9]+)$").unwrap();
    let to = compile::substitution(r"/\2$/\1");
    assert_eq!(re.replace_all("/books/42", to.as_str()), "/42$/books");
}

#[test]
fn traffic_policies_merge_host_port_and_subset_as_istio_does() {
    use crate::policy::{HashKey, LbPolicy};
    let resources = {
        let mut l = weft_api::Loaded::default();
        let text = MESH.replace(
            "  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n",
            r#"  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    connectionPool: {tcp: {maxConnections: 10}, http: {http1MaxPendingRequests: 5}}
    outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 2s}
    portLevelSettings:
    - port: {number: 9080}
      connectionPool: {tcp: {maxConnections: 1}}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      loadBalancer: {consistentHash: {httpHeaderName: X-User}}
  - {name: v2, labels: {version: v2}}
"#,
        );
        l.add_text("mesh.yaml", &text);
        assert_eq!(l.errors(), 0, "{:?}", l.diagnostics);
        l.resources
    };
    let registry = Registry::from_resources(&resources);
    let c = compile(
        &resources,
        &registry,
        "default",
        "productpage",
        &crate::Mesh::new("cluster.local"),
    )
    .unwrap();
    let all = &c.clusters["outbound|9080||reviews.default.svc.cluster.local"].policy;
    assert_eq!(all.lb, LbPolicy::RoundRobin);
    // Port-level settings replace the host's connection pool as a whole.
    assert_eq!(
        all.pool.max_connections,
        Some(1),
        "port level overrides the host level"
    );
    assert_eq!(all.pool.http1_max_pending_requests, None);
    let outlier = all.outlier.as_ref().unwrap();
    assert_eq!(outlier.consecutive_5xx, Some(3));
    assert_eq!(
        outlier.base_ejection_time,
        std::time::Duration::from_secs(2)
    );
    assert_eq!(outlier.max_ejection_percent, 10, "Istio's default");
    // The v1 cluster exists once a route names it; compile one that does.
    let mut extra = resources.clone();
    let mut vs = weft_api::Loaded::default();
    vs.add_text("vs.yaml", "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: default}\nspec:\n  hosts: [reviews]\n  http:\n  - route: [{destination: {host: reviews, subset: v1}}]\n");
    extra.extend(vs.resources);
    let c = compile(
        &extra,
        &registry,
        "default",
        "productpage",
        &crate::Mesh::new("cluster.local"),
    )
    .unwrap();
    let v1 = &c.clusters["outbound|9080|v1|reviews.default.svc.cluster.local"].policy;
    assert_eq!(
        v1.lb,
        LbPolicy::ConsistentHash(HashKey::Header("x-user".into())),
        "the subset overrides"
    );
    assert_eq!(
        v1.pool.max_connections,
        Some(1),
        "what the subset does not set is inherited"
    );
}

fn inbound_mtls(extra: &str, root: &str) -> crate::peer_auth::Mtls {
    let resources = load(extra);
    let registry = Registry::from_resources(&resources);
    let mut mesh = crate::Mesh::new("cluster.local");
    mesh.root_namespace = root.into();
    let c = compile(&resources, &registry, "default", "productpage", &mesh).unwrap();
    c.inbound[0].mtls
}

fn pa(ns: &str, name: &str, body: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {body}\n---\n"
    )
}

#[test]
fn peer_authentication_follows_istios_precedence_and_defaults_to_strict() {
    use crate::peer_auth::Mtls::*;
    let root = "istio-system";
    assert_eq!(inbound_mtls("", root), Strict, "no policy: STRICT");
    let mesh = pa(root, "mesh", "{mtls: {mode: PERMISSIVE}}");
    assert_eq!(inbound_mtls(&mesh, root), Permissive);
    assert_eq!(
        inbound_mtls(&mesh, "elsewhere"),
        Strict,
        "a policy outside the root namespace is not mesh-wide"
    );
    let ns_strict = pa("default", "ns", "{mtls: {mode: STRICT}}");
    assert_eq!(inbound_mtls(&format!("{mesh}{ns_strict}"), root), Strict);
    let ns_unset = pa("default", "ns", "{mtls: {mode: UNSET}}");
    assert_eq!(
        inbound_mtls(&format!("{mesh}{ns_unset}"), root),
        Permissive,
        "UNSET inherits"
    );
    let workload = pa(
        "default",
        "pp",
        "{selector: {matchLabels: {app: productpage}}, mtls: {mode: DISABLE}}",
    );
    assert_eq!(
        inbound_mtls(&format!("{mesh}{ns_strict}{workload}"), root),
        Disable
    );
    let other = pa(
        "default",
        "pp",
        "{selector: {matchLabels: {app: reviews}}, mtls: {mode: DISABLE}}",
    );
    assert_eq!(
        inbound_mtls(&format!("{mesh}{ns_strict}{other}"), root),
        Strict,
        "a selector that does not match does not apply"
    );
    let port = pa(
        "default",
        "pp",
        "{selector: {matchLabels: {app: productpage}}, mtls: {mode: STRICT}, portLevelMtls: {9080: {mode: PERMISSIVE}}}",
    );
    assert_eq!(inbound_mtls(&port, root), Permissive, "port level wins");
    let port_unset = pa(
        "default",
        "pp",
        "{selector: {matchLabels: {app: productpage}}, mtls: {mode: PERMISSIVE}, portLevelMtls: {9080: {mode: UNSET}}}",
    );
    assert_eq!(
        inbound_mtls(&format!("{ns_strict}{port_unset}"), root),
        Permissive,
        "an UNSET port inherits the workload's mode"
    );
}

#[test]
fn inbound_ports_take_protocol_and_service_from_the_service_that_targets_them() {
    let c = config("");
    let p = &c.inbound[0];
    assert_eq!((p.port, p.name.as_str()), (9080, "http"));
    assert_eq!(p.protocol, crate::Protocol::Http);
    assert_eq!(
        p.service.as_deref(),
        Some("productpage.default.svc.cluster.local")
    );
}

#[test]
fn destination_rule_tls_merges_by_port_and_subset_and_decides_hbone() {
    use crate::policy::UpstreamTls;
    let c = config(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-tls, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    tls: {mode: DISABLE}
    portLevelSettings:
    - port: {number: 9080}
      tls: {mode: SIMPLE, sni: reviews.example}
  subsets:
  - name: v1-mesh
    labels: {version: v1}
    trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {x-mesh: {exact: "1"}}}]
    route: [{destination: {host: reviews, subset: v1-mesh}}]
  - route: [{destination: {host: reviews}}]
"#,
    );
    let all = &c.clusters["outbound|9080||reviews.default.svc.cluster.local"];
    let UpstreamTls::Originate(o) = &all.policy.tls else {
        panic!("port level wins over host level: {:?}", all.policy.tls);
    };
    assert_eq!(o.sni.as_deref(), Some("reviews.example"));
    assert!(!o.mutual);
    // Originated TLS goes straight to the endpoint, not through HBONE.
    assert!(all.endpoints.iter().all(|e| e.identity.is_none()));
    let v1 = &c.clusters["outbound|9080|v1-mesh|reviews.default.svc.cluster.local"];
    assert_eq!(v1.policy.tls, UpstreamTls::Mesh, "subset wins");
    assert!(v1.endpoints.iter().all(|e| e.identity.is_some()));
    // Only mesh clusters' endpoints are HBONE targets.
    let v1_addr: std::net::SocketAddr = "127.0.0.31:9081".parse().unwrap();
    let v2_addr: std::net::SocketAddr = "127.0.0.32:9082".parse().unwrap();
    assert!(c.identities.contains_key(&v1_addr));
    assert!(!c.identities.contains_key(&v2_addr));
}

/// The subset each of `paths` (with `headers`) is routed to.
fn routed(c: &ProxyConfig, path: &str, headers: &[(&str, &str)]) -> Option<String> {
    let svc = c
        .outbound
        .iter()
        .find(|s| s.host == "reviews.default.svc.cluster.local")
        .unwrap();
    let lookup = |name: &str| headers.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let route = svc.route(&view(path, &lookup))?;
    match &route.action {
        RouteAction::Forward(w) => Some(w[0].cluster.clone()),
        _ => None,
    }
}

#[test]
fn delegate_routes_merge_into_their_root_as_in_istio() {
    let c = config(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-root, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: api
    match: [{uri: {prefix: /api}}]
    timeout: 3s
    delegate: {name: reviews-api, namespace: team}
  - route: [{destination: {host: reviews, subset: v1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews-api, namespace: team}
spec:
  http:
  - name: v2
    match: [{uri: {prefix: /api/v2}}]
    route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]
  - name: outside
    match: [{uri: {prefix: /other}}]
    route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]
  - name: rest
    route: [{destination: {host: reviews.default.svc.cluster.local, subset: v1}}]
"#,
    );
    let v1 = "outbound|9080|v1|reviews.default.svc.cluster.local";
    let v2 = "outbound|9080|v2|reviews.default.svc.cluster.local";
    assert_eq!(routed(&c, "/api/v2/books", &[]).as_deref(), Some(v2));
    assert_eq!(routed(&c, "/api/v1", &[]).as_deref(), Some(v1));
    // A delegate match outside the root's is dropped, not widened.
    assert_eq!(routed(&c, "/other", &[]).as_deref(), Some(v1));
    let svc = c
        .outbound
        .iter()
        .find(|s| s.host == "reviews.default.svc.cluster.local")
        .unwrap();
    let names: Vec<&str> = svc
        .routes
        .iter()
        .filter_map(|r| r.name.as_deref())
        .collect();
    assert_eq!(names, ["api-v2", "api-rest", "route-2"]);
    // The root's timeout applies where the delegate sets none.
    assert_eq!(
        svc.routes[0].timeout,
        Some(std::time::Duration::from_secs(3))
    );
}

#[test]
fn source_labels_namespace_and_gateways_decide_which_matches_a_proxy_has() {
    let c = config(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{sourceLabels: {app: ratings}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{sourceNamespace: other}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{gateways: [some-gateway]}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{sourceLabels: {app: productpage}, headers: {x-v2: {exact: "1"}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews, subset: v1}}]
"#,
    );
    let v1 = "outbound|9080|v1|reviews.default.svc.cluster.local";
    let v2 = "outbound|9080|v2|reviews.default.svc.cluster.local";
    // productpage is not ratings, not in namespace other, not a gateway.
    assert_eq!(routed(&c, "/", &[]).as_deref(), Some(v1));
    assert_eq!(routed(&c, "/", &[("x-v2", "1")]).as_deref(), Some(v2));
}

#[test]
fn a_compiled_config_survives_its_json_form() {
    let c = config(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {regex: "/v[0-9]+/.*"}, headers: {end-user: {exact: jason}}}]
    rewrite: {uriRegexRewrite: {match: "^/v([0-9]+)/(.*)", rewrite: "/\\2?v=\\1"}}
    fault: {delay: {fixedDelay: 1.5s, percentage: {value: 50}}}
    timeout: 2.5s
    retries: {attempts: 3, perTryTimeout: 250ms, retryOn: 5xx}
    corsPolicy: {allowOrigins: [{regex: "https://.*\\.example"}], allowMethods: [GET]}
    route: [{destination: {host: reviews, subset: v2}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 90}
    - {destination: {host: reviews, subset: v2}, weight: 10}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-policy, namespace: other}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    connectionPool: {tcp: {maxConnections: 10, connectTimeout: 300ms}, http: {idleTimeout: 90s}}
    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 30s}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow, namespace: default}
spec:
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/*"], ipBlocks: [10.0.0.0/8]}}]
    to: [{operation: {paths: ["/api/{*}/items/{**}"], methods: [GET]}}]
    when: [{key: "request.auth.claims[groups]", values: [admin]}]
"#,
    );
    let json = c.to_json();
    // In sections, as the control plane pushes it: one per cluster.
    let sections = crate::sections::Sections::of(c.clone());
    assert!(
        sections
            .0
            .keys()
            .any(|k| k.starts_with("clusters/outbound|9080|v2|"))
    );
    let back = sections.config().expect("reassembles");
    assert_eq!(back.to_json(), json);
    assert_eq!(back.identities, c.identities);
    assert!(!back.identities.is_empty());
    // What only the regexes and durations carry survives too.
    let reviews = back
        .outbound
        .iter()
        .find(|s| s.host.starts_with("reviews."));
    let route = &reviews.expect("reviews is reachable").routes[0];
    assert_eq!(route.timeout, Some(std::time::Duration::from_millis(2500)));
    assert!(json.contains(r#""timeout":"2500ms""#), "{json}");
    let headers = |h: &str| (h == "end-user").then_some("jason");
    assert!(
        route
            .matches
            .iter()
            .any(|m| m.matches(&view("/v2/x", &headers)))
    );
    assert!(
        !route
            .matches
            .iter()
            .any(|m| m.matches(&view("/vx/x", &headers)))
    );
    let mut broken = sections.clone();
    broken.insert("workload".into(), b"1".to_vec());
    assert!(broken.config().is_err());
    assert_eq!(
        sections.version(),
        crate::sections::Sections::of(back.clone()).version()
    );
    let mut fewer = sections.clone();
    let gone = fewer
        .0
        .keys()
        .find(|k| k.contains("|v1|"))
        .cloned()
        .expect("v1");
    fewer.0.remove(&gone);
    fewer.insert("num_trusted_proxies".into(), b"2".to_vec());
    let (changed, removed) = sections.diff(&fewer);
    let changed: Vec<(&str, &[u8])> = changed.iter().map(|(n, s)| (*n, &*s.json)).collect();
    assert_eq!(changed, vec![("num_trusted_proxies", b"2".as_slice())]);
    assert_eq!(removed, vec![gone]);
    assert_ne!(fewer.version(), sections.version());
    assert_eq!(fewer.config().expect("still whole").num_trusted_proxies, 2);
}

/// `n` ServiceEntries in namespace `ns`, `extra` added to each spec.
fn entries(ns: &str, n: usize, extra: &str) -> String {
    (0..n)
        .map(|i| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc{i}, namespace: {ns}}}\nspec: {{hosts: [svc{i}.{ns}.example], ports: [{{number: 80, name: http, protocol: HTTP}}], resolution: STATIC, endpoints: [{{address: 10.0.0.{}}}]{extra}}}\n---\n",
                i % 250 + 1
            )
        })
        .collect()
}

fn hosts(c: &ProxyConfig) -> Vec<&str> {
    c.outbound.iter().map(|s| s.host.as_str()).collect()
}

#[test]
fn export_to_and_sidecar_egress_hosts_scope_what_a_proxy_sees() {
    // exportTo ".": only its own namespace sees it; "default" names ours.
    let c = config(&format!(
        "{}{}",
        entries("other", 1, ", exportTo: [.]"),
        entries("third", 1, ", exportTo: [default]")
    ));
    let seen = hosts(&c);
    assert!(!seen.contains(&"svc0.other.example"), "{seen:?}");
    assert!(seen.contains(&"svc0.third.example"), "{seen:?}");

    // A VirtualService exported only to its own namespace does not route
    // this proxy's traffic.
    let c = config(
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: other}
spec:
  hosts: [reviews.default.svc.cluster.local]
  exportTo: [.]
  http: [{route: [{destination: {host: reviews.default.svc.cluster.local, subset: v2}}]}]
"#,
    );
    let reviews = c.outbound.iter().find(|s| s.host.starts_with("reviews."));
    let route = &reviews.expect("reviews").routes[0];
    assert_eq!(route.name.as_deref(), Some("default"));

    // The Sidecar's egress hosts narrow the rest: with `./*` the proxy's
    // configuration does not grow with other namespaces.
    let sidecar = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  egress: [{hosts: ["./*", "third/svc1.third.example"]}]
---
"#;
    let small = config(&format!("{sidecar}{}", entries("third", 3, "")));
    let large = config(&format!(
        "{sidecar}{}{}",
        entries("third", 3, ""),
        entries("other", 400, "")
    ));
    assert_eq!(hosts(&small), hosts(&large));
    assert_eq!(small.clusters.len(), large.clusters.len());
    assert!(hosts(&small).contains(&"svc1.third.example"));
    assert!(!hosts(&small).contains(&"svc0.third.example"));
    assert!(hosts(&small).contains(&"reviews.default.svc.cluster.local"));
    // A route to a host out of scope has no endpoints (503 NC), as in Istio.
    let c = config(&format!(
        "{sidecar}{}apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r, namespace: default}}\nspec: {{hosts: [reviews], http: [{{route: [{{destination: {{host: svc0.other.example, port: {{number: 80}}}}}}]}}]}}\n",
        entries("other", 1, "")
    ));
    let cluster = &c.clusters["outbound|80||svc0.other.example"];
    assert!(cluster.missing && cluster.endpoints.is_empty());

    // MeshConfig's defaultServiceExportTo applies where exportTo is unset.
    let resources = load(&entries("other", 2, ""));
    let registry = Registry::from_resources(&resources);
    let mut mesh = crate::Mesh::new("cluster.local");
    mesh.export_defaults.service = vec![".".into()];
    let c = compile(&resources, &registry, "default", "productpage", &mesh).unwrap();
    assert!(!hosts(&c).iter().any(|h| h.ends_with(".other.example")));
    assert!(hosts(&c).contains(&"reviews.default.svc.cluster.local"));
}

#[test]
fn workloads_of_one_traffic_key_share_the_traffic_part_exactly() {
    use crate::sections::{Layered, Sections};
    let extra = r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews-v3, namespace: default}
spec: {address: 127.0.0.33, serviceAccount: reviews, labels: {app: reviews, version: v3}, ports: {http: 9083}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{sourceLabels: {version: v2}}]
    route: [{destination: {host: reviews, subset: v1}}]
  - route: [{destination: {host: reviews, subset: v2}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: v1-only, namespace: default}
spec:
  selector: {matchLabels: {version: v1}}
  rules: [{from: [{source: {principals: [x]}}]}]
"#;
    let resources = load(extra);
    let registry = Registry::from_resources(&resources);
    let mesh = crate::Mesh::new("cluster.local");
    let key = |name: &str| {
        let w = registry.workload("default", name).expect("workload");
        crate::traffic_key(&resources, &mesh, w)
    };
    // Only sourceLabels {version: v2} tells them apart: v1 and v3 share a
    // key, v2 does not.
    assert_eq!(key("reviews-v1"), key("reviews-v3"));
    assert_ne!(key("reviews-v1"), key("reviews-v2"));
    let full =
        |name: &str| Sections::of(compile(&resources, &registry, "default", name, &mesh).unwrap());
    let own = |name: &str| {
        Sections::of(crate::compile_own(&resources, &registry, "default", name, &mesh).unwrap())
            .part(false)
    };
    // v3's configuration from v1's traffic part and its own part is v3's.
    let traffic = full("reviews-v1").part(true);
    let layered = Layered {
        traffic_hash: traffic.part_hash(true),
        traffic: std::sync::Arc::new(traffic),
        own: own("reviews-v3"),
    };
    let v3 = full("reviews-v3");
    assert_eq!(layered.flatten(), v3);
    assert_eq!(layered.version(), v3.version());
    assert_eq!(
        layered.flatten().config().unwrap().to_json(),
        v3.config().unwrap().to_json()
    );
    // The policies differ per workload and stay in the own part.
    assert_ne!(
        own("reviews-v1").0.get("authz"),
        own("reviews-v3").0.get("authz")
    );
    // A recompiled traffic part keeps the old copies of what is unchanged.
    let mut again = full("reviews-v1").part(true);
    again.reuse(&layered.traffic);
    assert!(
        again
            .0
            .iter()
            .all(|(n, s)| std::sync::Arc::ptr_eq(&s.json, &layered.traffic.0[n].json))
    );
    // The diff of two layers sharing the traffic part is the own part's.
    let v1 = Layered {
        traffic: layered.traffic.clone(),
        traffic_hash: layered.traffic_hash,
        own: own("reviews-v1"),
    };
    let (changed, removed) = v1.diff(&layered);
    assert!(removed.is_empty());
    assert!(changed.iter().all(|(n, _)| !crate::sections::is_traffic(n)));
    assert!(changed.iter().any(|(n, _)| *n == "workload"));
}

#[test]
fn namespaces_share_a_traffic_part_until_something_scopes_by_namespace() {
    let other = "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: x, namespace: other}\nspec: {address: 127.0.0.41, serviceAccount: x, labels: {app: x}, ports: {http: 9000}}\n";
    let keys = |extra: &str| {
        let resources = load(&format!("{other}---\n{extra}"));
        let registry = Registry::from_resources(&resources);
        let mesh = crate::Mesh::new("cluster.local");
        let key = |ns: &str, name: &str| {
            crate::traffic_key(
                &resources,
                &mesh,
                registry.workload(ns, name).expect("workload"),
            )
        };
        let same = key("default", "productpage") == key("other", "x");
        // And the shared traffic part answers each client's short names.
        let c = compile(&resources, &registry, "other", "x", &mesh).unwrap();
        let reviews = c.outbound.iter().find(|s| s.host.starts_with("reviews."));
        let reviews = reviews.expect("reviews");
        assert!(
            reviews.answers_to("reviews", "default") && !reviews.answers_to("reviews", "other")
        );
        same
    };
    assert!(keys(""));
    assert!(!keys(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: other}\nspec: {egress: [{hosts: [\"*/*\"]}]}\n"
    ));
    assert!(!keys(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r, namespace: default}\nspec: {host: reviews, exportTo: [.]}\n"
    ));
    assert!(keys(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r, namespace: default}\nspec: {host: reviews, exportTo: [\"*\"]}\n"
    ));
}

#[test]
fn dns_endpoints_follow_the_resolution() {
    let c = config(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: by-host, namespace: default}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: by-endpoint, namespace: default}
spec:
  hosts: [db.example.com]
  ports: [{number: 5432, name: tcp, protocol: TCP, targetPort: 6432}]
  resolution: DNS
  endpoints:
  - {address: eu.db.example.com, labels: {region: eu}}
  - {address: us.db.example.com, labels: {region: us}, ports: {tcp: 7432}}
  - {address: 10.0.0.9}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db, namespace: default}
spec:
  host: db.example.com
  subsets: [{name: us, labels: {region: us}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db, namespace: default}
spec:
  hosts: [db.example.com]
  tcp: [{route: [{destination: {host: db.example.com, subset: us}}]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: round-robin, namespace: default}
spec:
  hosts: [rr.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS_ROUND_ROBIN
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: anything, namespace: default}
spec:
  hosts: ["*.wikipedia.org"]
  ports: [{number: 443, name: tls, protocol: TLS}]
  location: MESH_EXTERNAL
  resolution: NONE
"#,
    );
    let dns = |name: &str| c.clusters[name].dns.clone();
    // The host itself, every address it resolves to.
    let d = dns("outbound|443||api.example.com").unwrap();
    assert!(!d.first_only && !d.original);
    assert_eq!(d.names.len(), 1);
    assert_eq!(
        (d.names[0].name.as_str(), d.names[0].port),
        ("api.example.com", 443)
    );
    // The first address only for DNS_ROUND_ROBIN.
    assert!(dns("outbound|80||rr.example.com").unwrap().first_only);
    // Named endpoints of the subset, with their own ports (the IP
    // endpoint, a plain one, is not in the subset).
    let d = dns("outbound|5432|us|db.example.com").unwrap();
    assert!(!d.first_only);
    assert_eq!(d.names.len(), 1);
    assert_eq!(
        (d.names[0].name.as_str(), d.names[0].port),
        ("us.db.example.com", 7432)
    );
    assert!(
        c.clusters["outbound|5432|us|db.example.com"]
            .endpoints
            .is_empty()
    );
    // Resolution NONE: the client's own destination.
    let d = dns("outbound|443||*.wikipedia.org").unwrap();
    assert!(d.original && d.names.is_empty());
    assert_eq!(d.port, 443);
    // STATIC services resolve nothing.
    assert!(dns("outbound|9080||reviews.default.svc.cluster.local").is_none());
}

#[test]
fn services_without_addresses_get_one_auto_allocated() {
    let resources = load(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: fixed, namespace: default}
spec:
  hosts: [fixed.example.com]
  addresses: [10.0.0.7]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild, namespace: default}
spec:
  hosts: ["*.example.org"]
  ports: [{number: 443, name: tls, protocol: TLS}]
"#,
    );
    let r = Registry::from_resources(&resources);
    let address = |host: &str| {
        r.service(host)
            .map(|s| s.addresses.clone())
            .unwrap_or_default()
    };
    let reviews = address("reviews.default.svc.cluster.local");
    let productpage = address("productpage.default.svc.cluster.local");
    assert_eq!(reviews.len(), 1);
    assert!(reviews[0].starts_with("240.240."), "{reviews:?}");
    assert_ne!(reviews, productpage);
    // The same inputs give the same addresses, on every proxy.
    assert_eq!(
        address("reviews.default.svc.cluster.local"),
        Registry::from_resources(&resources)
            .service("reviews.default.svc.cluster.local")
            .map(|s| s.addresses.clone())
            .unwrap_or_default()
    );
    // Given addresses stay; wildcards get none.
    assert_eq!(address("fixed.example.com"), ["10.0.0.7"]);
    assert!(address("*.example.org").is_empty());
}

/// Compiles productpage's configuration with the Gateway API resources in
/// `extra` translated; the translation's warnings beside it.
fn config_gateway_api(extra: &str) -> (ProxyConfig, Vec<weft_api::Diagnostic>) {
    let versions = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews-v1, namespace: default}
spec:
  hosts: [reviews-v1.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: reviews, version: v1}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews-v2, namespace: default}
spec:
  hosts: [reviews-v2.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: reviews, version: v2}}
---
"#;
    let mut resources = load(&format!("{versions}{extra}"));
    let t = gateway_api::translate(&resources);
    resources.extend(t.resources);
    let registry = Registry::from_resources(&resources);
    let mesh = crate::Mesh::new("cluster.local");
    let c = compile(&resources, &registry, "default", "productpage", &mesh).unwrap();
    (c, t.warnings)
}

fn reviews_route(c: &ProxyConfig, path: &str, user: Option<&'static str>) -> RouteAction {
    let svc = c
        .outbound
        .iter()
        .find(|s| s.host == "reviews.default.svc.cluster.local")
        .unwrap();
    let headers = move |name: &str| if name == "end-user" { user } else { None };
    svc.route(&view(path, &headers)).unwrap().action.clone()
}

const V1: &str = "outbound|9080||reviews-v1.default.svc.cluster.local";
const V2: &str = "outbound|9080||reviews-v2.default.svc.cluster.local";

#[test]
fn gateway_api_mesh_routes_from_the_request_routing_task() {
    let text = std::fs::read_to_string(format!(
        "{}/../../../shared/corpus/docs-examples/tasks/traffic-management/request-routing/request-routing-02.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .replacen("metadata:\n", "metadata:\n  namespace: default\n", 1);
    let (c, warnings) = config_gateway_api(&text);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        forward(&reviews_route(&c, "/", Some("jason"))),
        vec![(V2.into(), 100)]
    );
    assert_eq!(
        forward(&reviews_route(&c, "/", None)),
        vec![(V1.into(), 100)]
    );
}

#[test]
fn gateway_api_precedence_segments_and_weights() {
    // Rules in the wrong order on purpose: the Gateway API orders them
    // by exact path, then the longest prefix, then headers.
    let (c, warnings) = config_gateway_api(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules:
  - backendRefs: [{name: reviews-v1, port: 9080, weight: 3}, {name: reviews-v2, port: 9080, weight: 1}]
  - matches: [{path: {type: PathPrefix, value: /api}}]
    backendRefs: [{name: reviews-v1, port: 9080}]
  - matches: [{path: {type: PathPrefix, value: /api/v2/}}]
    backendRefs: [{name: reviews-v2, port: 9080}]
  - matches: [{path: {type: Exact, value: /api/v2}}, {path: {value: /api}, headers: [{name: End-User, value: jason}]}]
    backendRefs: [{name: reviews-v2, port: 9080}]
"#,
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    let v1 = vec![(V1.to_string(), 100)];
    let v2 = vec![(V2.to_string(), 100)];
    assert_eq!(
        forward(&reviews_route(&c, "/", None)),
        vec![(V1.into(), 75), (V2.into(), 25)]
    );
    assert_eq!(forward(&reviews_route(&c, "/api", None)), v1);
    assert_eq!(forward(&reviews_route(&c, "/api/x", None)), v1);
    // A prefix matches whole segments.
    assert_eq!(forward(&reviews_route(&c, "/apix", None))[0].1, 75);
    assert_eq!(forward(&reviews_route(&c, "/api/v2", None)), v2);
    assert_eq!(forward(&reviews_route(&c, "/api/v2/x", None)), v2);
    // A header match outranks the same prefix without one.
    assert_eq!(forward(&reviews_route(&c, "/api/x", Some("jason"))), v2);
}

#[test]
fn gateway_api_rules_that_cannot_be_served_answer_500() {
    let (c, warnings) = config_gateway_api(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: default}
spec:
  parentRefs: [{kind: Service, group: "", name: reviews}]
  rules:
  - matches: [{path: {value: /other-ns}}]
    backendRefs: [{name: ratings, namespace: other, port: 9080}]
  - matches: [{path: {value: /missing}}]
    backendRefs: [{name: nowhere, port: 9080}]
  - matches: [{path: {value: /ext}}]
    filters: [{type: ExtensionRef, extensionRef: {group: x.io, kind: Auth, name: a}}]
    backendRefs: [{name: reviews-v1, port: 9080}]
    timeouts: {request: 1s}
    retry: {attempts: 2}
  - backendRefs: [{name: reviews-v1, port: 9080}]
"#,
    );
    for path in ["/other-ns", "/missing", "/ext"] {
        assert!(
            matches!(
                reviews_route(&c, path, None),
                RouteAction::DirectResponse { status: 500, .. }
            ),
            "{path}"
        );
    }
    assert_eq!(
        forward(&reviews_route(&c, "/", None)),
        vec![(V1.into(), 100)]
    );
    assert_eq!(warnings.len(), 3, "{warnings:?}");
    assert!(
        warnings[0].message.contains("no ReferenceGrant in other"),
        "{warnings:?}"
    );
    assert!(
        warnings[1].message.contains("nowhere not found"),
        "{warnings:?}"
    );
    assert!(
        warnings[2]
            .message
            .contains("filter ExtensionRef is not supported"),
        "{warnings:?}"
    );
}

#[test]
fn gateway_api_reference_grants_and_allowed_routes() {
    let other = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ratings, namespace: other}
spec:
  hosts: [ratings.other.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.0.40}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: reviews, namespace: default}
spec:
  parentRefs: [{kind: Service, group: "", name: reviews}]
  rules:
  - backendRefs: [{name: ratings, namespace: other, port: 9080}]
"#;
    let grant = r#"
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: from-default, namespace: other}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
  to: [{group: "", kind: Service}]
"#;
    let (c, _) = config_gateway_api(other);
    assert!(matches!(
        reviews_route(&c, "/", None),
        RouteAction::DirectResponse { status: 500, .. }
    ));
    let (c, warnings) = config_gateway_api(&format!("{other}{grant}"));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        forward(&reviews_route(&c, "/", None)),
        vec![(
            "outbound|9080||ratings.other.svc.cluster.local".to_string(),
            100
        )]
    );

    // A Gateway takes routes of its own namespace unless it says otherwise.
    let gateway = |from: &str| {
        format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: infra}}
spec:
  gatewayClassName: istio
  listeners:
  - {{name: http, port: 8080, protocol: HTTP, hostname: "*.example.com", allowedRoutes: {{namespaces: {{from: {from}}}}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web, namespace: default}}
spec:
  parentRefs: [{{name: gw, namespace: infra}}]
  hostnames: [reviews.example.com, reviews.example.org]
  rules: [{{backendRefs: [{{name: reviews, port: 9080}}]}}]
"#
        )
    };
    let resources = load(&gateway("Same"));
    let t = gateway_api::translate(&resources);
    assert!(
        t.warnings.iter().any(|w| w
            .message
            .contains("no listener of Gateway infra/gw accepts")),
        "{:?}",
        t.warnings
    );
    assert!(!t.resources.iter().any(|r| r.kind.kind == "VirtualService"));
    let resources = load(&gateway("All"));
    let t = gateway_api::translate(&resources);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let vs: Vec<_> = t
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            weft_api::Spec::VirtualService(v) => Some(v),
            _ => None,
        })
        .collect();
    assert_eq!(vs.len(), 1);
    // The listener's wildcard leaves the route's one matching name.
    assert_eq!(vs[0].hosts, ["reviews.example.com"]);
    assert_eq!(
        vs[0].gateways,
        ["infra/gw-istio-autogenerated-k8s-gateway-http"]
    );
}

/// Every Gateway API example of the corpus (Istio's docs and the inputs
/// of its conversion tests) translates into resources that pass weft's
/// own validation: a translation never produces what it cannot serve.
#[test]
fn gateway_api_corpus_translates_into_valid_resources() {
    let root = format!("{}/../../../shared/corpus", env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in [
        "docs-examples",
        "extra/gateway-api-conversion-inputs",
        "samples",
    ] {
        files.extend(weft_api::load::walk(std::path::Path::new(&format!("{root}/{dir}"))).unwrap());
    }
    let mut routes = 0;
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        if !text.contains("gateway.networking.k8s.io") || text.contains('$') || text.contains("{{")
        {
            continue;
        }
        let mut l = weft_api::Loaded::default();
        l.add_text(&f.display().to_string(), &text);
        let t = gateway_api::translate(&l.resources);
        routes += l
            .resources
            .iter()
            .filter(|r| matches!(r.spec, weft_api::Spec::HttpRoute(_)))
            .count();
        for w in &t.warnings {
            assert!(!w.message.contains("translation is invalid"), "{w}");
        }
    }
    assert!(routes > 50, "only {routes} HTTPRoutes found");
}

/// TLS passthrough and TCP listeners of a Gateway API Gateway, with their
/// TLSRoute and TCPRoute, compiled for the proxy serving the Gateway.
#[test]
fn gateway_api_tls_and_tcp_routes_reach_the_gateway_proxy() {
    let mut resources = load(
        r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: edge-istio, namespace: default}
spec: {address: 127.0.0.9, labels: {gateway.networking.k8s.io/gateway-name: edge}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: default}
spec:
  gatewayClassName: istio
  listeners:
  - {name: tls, port: 8443, protocol: TLS, hostname: "*.example.com", tls: {mode: Passthrough}}
  - {name: tcp, port: 9000, protocol: TCP}
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata: {name: reviews-tls, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: tls}]
  hostnames: [reviews.example.com]
  rules: [{backendRefs: [{name: reviews, port: 9080}]}]
---
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: reviews-tcp, namespace: default}
spec:
  parentRefs: [{name: edge, sectionName: tcp}]
  rules: [{backendRefs: [{name: reviews, port: 9080}]}]
"#,
    );
    let t = gateway_api::translate(&resources);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    resources.extend(t.resources);
    let registry = Registry::from_resources(&resources);
    let mesh = crate::Mesh::new("cluster.local");
    let c = compile(&resources, &registry, "default", "edge-istio", &mesh).unwrap();
    let port = |n: u32| c.gateway.iter().find(|p| p.port == n).unwrap();
    let reviews = "outbound|9080||reviews.default.svc.cluster.local";
    let tls = &port(8443).servers[0];
    assert_eq!(tls.sni_routes.len(), 1);
    assert_eq!(tls.sni_routes[0].sni_hosts, ["reviews.example.com"]);
    assert_eq!(tls.sni_routes[0].route[0].cluster, reviews);
    let tcp = &port(9000).servers[0];
    assert_eq!(tcp.tcp[0].cluster, reviews);
}

#[test]
fn gateway_api_grpc_routes_match_service_and_method() {
    let (c, warnings) = config_gateway_api(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: reviews, namespace: default}
spec:
  parentRefs: [{group: "", kind: Service, name: reviews, port: 9080}]
  rules:
  - matches: [{method: {service: shop.Reviews}}]
    backendRefs: [{name: reviews-v1, port: 9080}]
  - matches: [{method: {service: shop.Reviews, method: Write}}]
    backendRefs: [{name: reviews-v2, port: 9080}]
"#,
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    let v1 = vec![(V1.to_string(), 100)];
    let v2 = vec![(V2.to_string(), 100)];
    // The exact method outranks the service prefix written before it.
    assert_eq!(forward(&reviews_route(&c, "/shop.Reviews/Write", None)), v2);
    assert_eq!(forward(&reviews_route(&c, "/shop.Reviews/Read", None)), v1);
    let reviews = c
        .outbound
        .iter()
        .find(|s| s.host == "reviews.default.svc.cluster.local")
        .unwrap();
    assert!(reviews.route(&view("/other.Svc/Read", &|_| None)).is_none());
}
