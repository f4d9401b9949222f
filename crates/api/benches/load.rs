//! Load and validate 10,000 resources, against a baseline in the same run:
//! only tokenizing the same text with the YAML parser (the floor any YAML
//! loader pays). Prints milliseconds (best of N) and the ratio to the
//! baseline. Loading and validation use every core (the baseline one).
//! Run: `cargo bench -p weft-api --bench load`.

use std::time::{Duration, Instant};

use saphyr_parser::Parser;
use weft_api::{Loaded, validate};

const RESOURCES: usize = 10_000;
const RUNS: usize = 15;

/// A realistic mix: VirtualService, DestinationRule, AuthorizationPolicy,
/// ServiceEntry and Service, 2,000 of each.
fn corpus() -> String {
    let mut out = String::new();
    for i in 0..RESOURCES / 5 {
        out.push_str(&format!(
            r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews-{i}
  namespace: ns-{ns}
spec:
  hosts: [reviews-{i}.ns-{ns}.svc.cluster.local]
  http:
  - match:
    - headers:
        end-user: {{exact: jason}}
      uri: {{prefix: /api/v1}}
    fault: {{delay: {{fixedDelay: 7s, percentage: {{value: 10}}}}}}
    route:
    - destination: {{host: reviews-{i}, subset: v2}}
  - route:
    - destination: {{host: reviews-{i}, subset: v1}}
      weight: 90
    - destination: {{host: reviews-{i}, subset: v3}}
      weight: 10
    timeout: 2s
    retries: {{attempts: 3, perTryTimeout: 500ms, retryOn: "5xx,connect-failure"}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews-{i}
  namespace: ns-{ns}
spec:
  host: reviews-{i}
  trafficPolicy:
    connectionPool:
      tcp: {{maxConnections: 100, connectTimeout: 30ms}}
      http: {{http1MaxPendingRequests: 10, maxRequestsPerConnection: 10}}
    outlierDetection: {{consecutive5xxErrors: 7, interval: 5m, baseEjectionTime: 15m}}
  subsets:
  - name: v1
    labels: {{version: v1}}
  - name: v2
    labels: {{version: v2}}
  - name: v3
    labels: {{version: v3}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: reviews-{i}
  namespace: ns-{ns}
spec:
  selector:
    matchLabels: {{app: reviews-{i}}}
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/ns-{ns}/sa/productpage"]
    to:
    - operation:
        methods: [GET]
        paths: ["/api/{{*}}/reviews/{{**}}"]
    when:
    - key: request.headers[x-tenant]
      values: [gold, silver]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external-{i}
  namespace: ns-{ns}
spec:
  hosts: [api-{i}.example.com]
  ports:
  - {{number: 443, name: https, protocol: TLS}}
  resolution: DNS
  location: MESH_EXTERNAL
---
apiVersion: v1
kind: Service
metadata:
  name: reviews-{i}
  namespace: ns-{ns}
  labels: {{app: reviews-{i}}}
spec:
  selector: {{app: reviews-{i}}}
  ports:
  - {{name: http, port: 9080, targetPort: 9080}}
---
"#,
            ns = i % 50
        ));
    }
    out
}

fn best(mut f: impl FnMut()) -> Duration {
    (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .expect("at least one run")
}

fn main() {
    let text = corpus();
    let baseline = best(|| {
        let events = Parser::new_from_str(&text).count();
        assert!(events > RESOURCES);
    });
    let load = best(|| {
        let mut l = Loaded::default();
        l.add_text("bench.yaml", &text);
        l.check_duplicates();
        assert_eq!(l.resources.len(), RESOURCES);
    });
    let full = best(|| {
        let mut l = Loaded::default();
        l.add_text("bench.yaml", &text);
        l.check_duplicates();
        let found = validate(&l.resources, None);
        assert_eq!(
            l.errors() + found.iter().filter(|d| d.is_error()).count(),
            0
        );
    });
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let ratio = |d: Duration| d.as_secs_f64() / baseline.as_secs_f64();
    println!(
        "{RESOURCES} resources, {:.1} MiB of YAML, best of {RUNS} runs",
        text.len() as f64 / (1 << 20) as f64
    );
    println!(
        "baseline: YAML events only      {:>8.1} ms   1.00x",
        ms(baseline)
    );
    println!(
        "load (tree + typed resources)   {:>8.1} ms   {:.2}x",
        ms(load),
        ratio(load)
    );
    println!(
        "load + validate                 {:>8.1} ms   {:.2}x",
        ms(full),
        ratio(full)
    );
}
