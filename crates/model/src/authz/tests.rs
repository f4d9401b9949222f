use std::net::SocketAddr;

use super::*;

const WORKLOAD: &str = "app: reviews, version: v1";

/// The policies of `yaml` for workload reviews (namespace default).
fn policies(yaml: &str) -> Authz {
    let mut l = weft_api::Loaded::default();
    l.add_text("policies.yaml", yaml);
    assert_eq!(l.errors(), 0, "{:?}", l.diagnostics);
    let found = weft_api::validate(&l.resources, None);
    assert!(found.iter().all(|d| !d.is_error()), "{found:?}");
    let labels: BTreeMap<String, String> = WORKLOAD
        .split(", ")
        .map(|kv| {
            let (k, v) = kv.split_once(": ").unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    Authz::for_workload(
        &l.resources,
        &crate::Mesh::new("cluster.local"),
        "default",
        &labels,
    )
}

fn policy(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n---\n"
    )
}

/// A request to reviews: `from` a service account of namespace default
/// (or another `ns/sa`, or `-` for plaintext), `method path`, headers.
struct Req {
    from: &'static str,
    source_ip: &'static str,
    http: Option<(&'static str, &'static str, &'static str)>,
    headers: Vec<(&'static str, &'static str)>,
}

fn http(from: &'static str, method: &'static str, path: &'static str) -> Req {
    Req {
        from,
        source_ip: "10.1.2.3",
        http: Some((method, "reviews.default.svc.cluster.local:9080", path)),
        headers: Vec::new(),
    }
}

fn tcp(from: &'static str) -> Req {
    Req {
        from,
        source_ip: "10.1.2.3",
        http: None,
        headers: Vec::new(),
    }
}

impl Req {
    fn allowed(&self, authz: &Authz) -> bool {
        self.decide(authz).allowed
    }

    fn decide(&self, authz: &Authz) -> Decision {
        let principal = match self.from {
            "-" => None,
            f if f.contains('/') => {
                let (ns, sa) = f.split_once('/').unwrap();
                Some(format!("spiffe://cluster.local/ns/{ns}/sa/{sa}"))
            }
            sa => Some(format!("spiffe://cluster.local/ns/default/sa/{sa}")),
        };
        let headers = |name: &str| -> Vec<&str> {
            self.headers
                .iter()
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| *v)
                .collect()
        };
        let destination: SocketAddr = "10.9.9.9:9080".parse().unwrap();
        let req = Request {
            principal: principal.as_deref(),
            source_ip: self.source_ip.parse().ok(),
            remote_ip: None,
            destination,
            sni: None,
            http: self.http.map(|(method, host, path)| HttpRequest {
                method,
                host,
                path,
                headers: &headers,
                auth: None,
            }),
        };
        authz.evaluate(&req)
    }

    fn header(mut self, k: &'static str, v: &'static str) -> Req {
        self.headers.push((k, v));
        self
    }
}

#[test]
fn no_policy_allows_and_an_empty_allow_allows_nothing() {
    assert!(http("productpage", "GET", "/").allowed(&policies("")));
    let none = policies(&policy("default", "allow-nothing", "{}"));
    assert!(!http("productpage", "GET", "/").allowed(&none));
    assert!(!tcp("productpage").allowed(&none));
}

#[test]
fn allow_rules_need_every_part_to_match() {
    let p = policies(&policy(
        "default",
        "reviews-get",
        r#"
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/productpage"]}}]
    to: [{operation: {methods: [GET], paths: ["/reviews/*"]}}]"#,
    ));
    assert!(http("productpage", "GET", "/reviews/1").allowed(&p));
    assert!(!http("productpage", "POST", "/reviews/1").allowed(&p));
    assert!(!http("productpage", "GET", "/admin").allowed(&p));
    assert!(!http("ratings", "GET", "/reviews/1").allowed(&p));
    assert!(
        !http("-", "GET", "/reviews/1").allowed(&p),
        "plaintext has no principal"
    );
    let d = http("productpage", "GET", "/reviews/1").decide(&p);
    assert_eq!(
        (d.policy.as_deref(), d.rule),
        (Some("default/reviews-get"), Some(0))
    );
}

#[test]
fn deny_comes_before_allow_and_not_fields_catch_plaintext() {
    let p = policies(&format!(
        "{}{}",
        policy("default", "allow-all", "{rules: [{}]}"),
        policy(
            "default",
            "deny-outsiders",
            "{action: DENY, rules: [{from: [{source: {notNamespaces: [default]}}]}]}"
        )
    ));
    assert!(http("productpage", "GET", "/").allowed(&p));
    assert!(!http("other/sleep", "GET", "/").allowed(&p));
    let d = http("-", "GET", "/").decide(&p);
    assert!(!d.allowed, "plaintext is not in namespace default");
    assert_eq!(d.policy.as_deref(), Some("default/deny-outsiders"));
}

#[test]
fn http_only_fields_against_tcp_fail_closed() {
    // DENY: the HTTP field is dropped, so the rule denies all TCP.
    let deny = policies(&policy(
        "default",
        "deny-post",
        "{action: DENY, rules: [{to: [{operation: {methods: [POST]}}]}]}",
    ));
    assert!(!tcp("productpage").allowed(&deny));
    assert!(http("productpage", "GET", "/").allowed(&deny));
    // ALLOW: a rule with an HTTP field never matches TCP.
    let allow = policies(&policy(
        "default",
        "allow-get",
        "{rules: [{to: [{operation: {methods: [GET]}}]}]}",
    ));
    assert!(!tcp("productpage").allowed(&allow));
    assert!(http("productpage", "GET", "/").allowed(&allow));
    let ports = policies(&policy(
        "default",
        "allow-port",
        "{rules: [{to: [{operation: {ports: [\"9080\"]}}]}]}",
    ));
    assert!(tcp("productpage").allowed(&ports), "ports apply to TCP");
}

#[test]
fn values_paths_hosts_and_blocks() {
    let p = policies(&policy(
        "default",
        "forms",
        r#"
  rules:
  - to: [{operation: {paths: ["/api/{*}/items", "/files/{**}", "*.css", "/exact"]}}]
  - to: [{operation: {hosts: ["Shop.Example.com"]}}]
  - from: [{source: {ipBlocks: ["192.168.0.0/16"], notIpBlocks: ["192.168.7.0/24"]}}]
  - from: [{source: {principals: ["*/sa/trusted"]}}]"#,
    ));
    assert!(http("x", "GET", "/api/v1/items").allowed(&p));
    assert!(
        !http("x", "GET", "/api/v1/v2/items").allowed(&p),
        "{{*}} is one segment"
    );
    assert!(http("x", "GET", "/files/a/b/c").allowed(&p));
    assert!(http("x", "GET", "/static/site.css").allowed(&p));
    assert!(http("x", "GET", "/exact").allowed(&p));
    assert!(!http("x", "GET", "/exact/more").allowed(&p));
    let host = |h: &'static str| Req {
        http: Some(("GET", h, "/nothing")),
        ..http("x", "GET", "/")
    };
    assert!(host("shop.example.com").allowed(&p), "hosts ignore case");
    assert!(host("SHOP.example.com:8080").allowed(&p), "and any port");
    assert!(!host("shop.example.com.evil:80").allowed(&p));
    let from_ip = |ip: &'static str| Req {
        source_ip: ip,
        ..http("x", "GET", "/nothing")
    };
    assert!(from_ip("192.168.1.1").allowed(&p));
    assert!(!from_ip("192.168.7.1").allowed(&p));
    assert!(!from_ip("10.0.0.1").allowed(&p));
    assert!(http("trusted", "GET", "/nothing").allowed(&p));
}

#[test]
fn when_conditions_and_headers_value_by_value() {
    let p = policies(&policy(
        "default",
        "token",
        r#"
  rules:
  - when:
    - {key: "request.headers[x-token]", values: ["abc*"], notValues: ["abc-revoked"]}
    - {key: source.namespace, values: [default]}"#,
    ));
    let with = |values: &[&'static str]| {
        let mut r = http("x", "GET", "/");
        for v in values {
            r = r.header("x-token", v);
        }
        r
    };
    assert!(with(&["abc1"]).allowed(&p));
    assert!(with(&["nope", "abc1"]).allowed(&p), "any value may match");
    assert!(
        !with(&["abc1", "abc-revoked"]).allowed(&p),
        "no value may be excluded"
    );
    assert!(!with(&[]).allowed(&p));
    assert!(!with(&["abc1"]).allowed(&policies(&policy(
        "default",
        "ns",
        "{rules: [{when: [{key: source.namespace, values: [other]}]}]}"
    ))));
}

#[test]
fn what_weft_cannot_evaluate_fails_closed() {
    let key = "experimental.envoy.filters.network.mysql_proxy[db.table]";
    let allow = policies(&policy(
        "default",
        "odd-allow",
        &format!("{{rules: [{{when: [{{key: \"{key}\", values: [\"[update]\"]}}]}}]}}"),
    ));
    assert!(!http("x", "GET", "/").allowed(&allow));
    let deny = policies(&policy(
        "default",
        "odd-deny",
        &format!(
            "{{action: DENY, rules: [{{when: [{{key: \"{key}\", values: [\"[update]\"]}}]}}]}}"
        ),
    ));
    assert!(!http("x", "GET", "/").allowed(&deny));
    let custom = policies(&policy(
        "default",
        "ext",
        "{action: CUSTOM, provider: {name: opa}, rules: [{to: [{operation: {paths: [\"/admin*\"]}}]}]}",
    ));
    let d = http("x", "GET", "/admin/x").decide(&custom);
    assert!(!d.allowed && d.reason.contains("CUSTOM"), "{d:?}");
    assert!(http("x", "GET", "/public").allowed(&custom));
}

#[test]
fn dry_run_and_audit_report_without_enforcing() {
    let p = policies(&format!(
        "{}{}",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: try-deny, namespace: default, annotations: {istio.io/dry-run: \"true\"}}\nspec: {action: DENY, rules: [{}]}\n---\n",
        policy("default", "audit", "{action: AUDIT, rules: [{}]}")
    ));
    let d = http("x", "GET", "/").decide(&p);
    assert!(d.allowed);
    assert_eq!(d.notes.len(), 2, "{:?}", d.notes);
    assert!(d.notes[0].contains("dry-run") && d.notes[0].contains("default/try-deny"));
}

#[test]
fn scope_is_the_workload_its_namespace_and_the_root_namespace() {
    let p = policies(&format!(
        "{}{}{}{}{}",
        policy(
            "istio-system",
            "mesh",
            "{action: DENY, rules: [{to: [{operation: {paths: [\"/mesh\"]}}]}]}"
        ),
        policy(
            "istio-system",
            "mesh-selected",
            "{selector: {matchLabels: {app: reviews}}, action: DENY, rules: [{to: [{operation: {paths: [\"/root-selected\"]}}]}]}"
        ),
        policy(
            "default",
            "other-app",
            "{selector: {matchLabels: {app: ratings}}, action: DENY, rules: [{}]}"
        ),
        policy("other", "other-ns", "{action: DENY, rules: [{}]}"),
        policy(
            "default",
            "gateway-only",
            "{targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: gw}], action: DENY, rules: [{}]}"
        ),
    ));
    assert!(!http("x", "GET", "/mesh").allowed(&p));
    assert!(!http("x", "GET", "/root-selected").allowed(&p));
    assert!(http("x", "GET", "/elsewhere").allowed(&p));
    assert_eq!(p.policies.len(), 2);
}

/// Istio's own authorization builder inputs (from its test data in the
/// corpus) all load, compile for the workload they select, and evaluate
/// HTTP and TCP requests.
#[test]
fn istios_builder_inputs_load_compile_and_evaluate() {
    let root = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/corpus/extra/authz-builder-inputs"
    );
    let labels: BTreeMap<String, String> = [("app", "httpbin"), ("version", "v1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut files = 0;
    for kind in ["http", "tcp"] {
        let mut entries: Vec<_> = std::fs::read_dir(format!("{root}/{kind}"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for path in entries {
            let text = std::fs::read_to_string(&path).unwrap();
            let mut l = weft_api::Loaded::default();
            l.add_text(&path.display().to_string(), &text);
            assert_eq!(l.errors(), 0, "{}: {:?}", path.display(), l.diagnostics);
            let authz = Authz::for_workload(
                &l.resources,
                &crate::Mesh::new("cluster.local"),
                "foo",
                &labels,
            );
            let policies = l
                .resources
                .iter()
                .filter(|r| matches!(r.spec, Spec::AuthorizationPolicy(_)))
                .count();
            assert_eq!(authz.policies.len(), policies, "{}", path.display());
            let headers = |_: &str| vec!["header"];
            for http in [
                Some(HttpRequest {
                    method: "GET",
                    host: "exact.com",
                    path: "/exact",
                    headers: &headers,
                    auth: None,
                }),
                None,
            ] {
                let d = authz.evaluate(&Request {
                    principal: Some("spiffe://cluster.local/ns/ns/sa/sleep"),
                    source_ip: "10.10.10.10".parse().ok(),
                    remote_ip: None,
                    destination: "10.0.0.1:80".parse().unwrap(),
                    sni: None,
                    http,
                });
                // Whatever the verdict, a CUSTOM policy that matched denied.
                if d.reason.contains("CUSTOM") {
                    assert!(!d.allowed);
                }
            }
            files += 1;
        }
    }
    assert_eq!(files, 27);
}

/// Istio's authz-td-migration task: with `old-td` an alias of the mesh's
/// new trust domain, a policy naming `old-td/...` admits the same workload
/// under the new domain, and nothing else.
#[test]
fn trust_domain_aliases_carry_principals_across_a_migration() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/corpus/docs-examples/tasks/security/authorization/authz-td-migration/authz-td-migration-01.yaml"
    );
    let mut l = weft_api::Loaded::default();
    l.add_text(path, &std::fs::read_to_string(path).unwrap());
    assert_eq!(l.errors(), 0, "{:?}", l.diagnostics);
    let labels: BTreeMap<String, String> = [("app".to_string(), "httpbin".to_string())].into();
    let mut mesh = crate::Mesh::new("new-td");
    let without = Authz::for_workload(&l.resources, &mesh, "default", &labels);
    mesh.trust_domain_aliases = vec!["old-td".into()];
    let with = Authz::for_workload(&l.resources, &mesh, "default", &labels);
    let ask = |authz: &Authz, principal: &str| {
        let none = |_: &str| Vec::new();
        authz
            .evaluate(&Request {
                principal: Some(principal),
                source_ip: None,
                remote_ip: None,
                destination: "10.0.0.1:8000".parse().unwrap(),
                sni: None,
                http: Some(HttpRequest {
                    method: "GET",
                    host: "httpbin.default:8000",
                    path: "/ip",
                    headers: &none,
                    auth: None,
                }),
            })
            .allowed
    };
    let migrated = "spiffe://new-td/ns/curl-allow/sa/curl";
    assert!(!ask(&without, migrated));
    assert!(ask(&with, migrated));
    assert!(ask(&with, "spiffe://old-td/ns/curl-allow/sa/curl"));
    assert!(!ask(&with, "spiffe://new-td/ns/default/sa/curl"));
    assert!(!ask(&with, "spiffe://elsewhere/ns/curl-allow/sa/curl"));
}
