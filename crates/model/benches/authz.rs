//! Authorization decisions per second for one workload, in a mesh that
//! holds only its own policies (the baseline) and in one that also holds
//! 1,000 policies for other workloads and namespaces: a workload compiles
//! only the policies that apply to it, so unrelated policies must not slow
//! its decisions. Also times compiling one workload's policies out of the
//! 1,000. Best of N rounds; ratios to the baseline.
//! Run: `cargo bench -p weft-model --bench authz`.

use std::collections::BTreeMap;
use std::time::Instant;

use weft_model::authz::{Authz, HttpRequest, Request};

const DECISIONS: u32 = 200_000;
const ROUNDS: usize = 7;

/// The workload's own policies: an allow-nothing baseline, one ALLOW with
/// principals, methods and paths, and a DENY on a header.
const OWN: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: shop}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews-readers, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/productpage", "cluster.local/ns/shop/sa/ratings"]}}]
    to: [{operation: {methods: [GET, HEAD], paths: ["/reviews/*", "/health"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-debug, namespace: shop}
spec:
  action: DENY
  rules:
  - when: [{key: "request.headers[x-debug]", values: ["*"]}]
"#;

fn unrelated(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        out.push_str(&format!(
            r#"---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: app-{i}, namespace: team-{ns}}}
spec:
  selector: {{matchLabels: {{app: app-{i}}}}}
  rules:
  - from: [{{source: {{principals: ["cluster.local/ns/team-{ns}/sa/caller-{i}"]}}}}]
    to: [{{operation: {{methods: [GET], paths: ["/api/{i}/*"]}}}}]
"#,
            ns = i % 50
        ));
    }
    out
}

fn load(yaml: &str) -> Vec<weft_api::Resource> {
    let mut l = weft_api::Loaded::default();
    l.add_text("bench.yaml", yaml);
    assert_eq!(l.errors(), 0);
    l.resources
}

fn labels() -> BTreeMap<String, String> {
    [("app".to_string(), "reviews".to_string())].into()
}

fn compile(resources: &[weft_api::Resource]) -> Authz {
    Authz::for_workload(
        resources,
        &weft_model::Mesh::new("cluster.local"),
        "shop",
        &labels(),
    )
}

/// Decisions per second over a mix of allowed and denied requests.
fn decide(authz: &Authz) -> f64 {
    let paths = ["/reviews/1", "/reviews/2", "/admin", "/health"];
    let principals = [
        "spiffe://cluster.local/ns/shop/sa/productpage",
        "spiffe://cluster.local/ns/other/sa/sleep",
    ];
    let none = |_: &str| Vec::new();
    let start = Instant::now();
    let mut allowed = 0u32;
    for i in 0..DECISIONS {
        let d = authz.evaluate(&Request {
            principal: Some(principals[(i % 2) as usize]),
            source_ip: "10.0.0.1".parse().ok(),
            remote_ip: None,
            destination: "10.0.0.2:9080".parse().expect("address"),
            sni: None,
            http: Some(HttpRequest {
                method: "GET",
                host: "reviews.shop.svc.cluster.local:9080",
                path: paths[(i % 4) as usize],
                headers: &none,
                auth: None,
            }),
        });
        allowed += u32::from(d.allowed);
    }
    assert!(allowed > 0 && allowed < DECISIONS);
    f64::from(DECISIONS) / start.elapsed().as_secs_f64()
}

fn main() {
    let own = load(OWN);
    let crowded = load(&format!("{OWN}{}", unrelated(1_000)));
    let (a, b) = (compile(&own), compile(&crowded));
    assert_eq!(a.policies.len(), b.policies.len());
    // Interleaved rounds, the best of each.
    let mut base = f64::MIN;
    let mut with = f64::MIN;
    for _ in 0..ROUNDS {
        base = base.max(decide(&a));
        with = with.max(decide(&b));
    }
    let compile_ms = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            let _ = compile(&crowded);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .fold(f64::MAX, f64::min);
    println!("| case | decisions/s | vs. baseline |");
    println!("| --- | --- | --- |");
    println!("| baseline: the workload's 3 policies only | {base:.0} | 1.00x |");
    println!(
        "| the same among 1,000 unrelated policies | {with:.0} | {:.2}x |",
        with / base
    );
    println!("compiling the workload's policies out of 1,003: {compile_ms:.3} ms");
}
