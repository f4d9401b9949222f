//! Rate limits through real proxies: the local rate limit of Istio's
//! rate-limit task from the corpus EnvoyFilters (on productpage's inbound
//! side), weft's RateLimit resource on a sidecar's calls (a steady flood
//! gets through at the configured rate, within 5%; buckets per header
//! value), and a limit shared by two gateway replicas through Redis.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{app, get_full, policy, store_in};
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use weft_proxy::{Options, Role, Sidecar};

const TASK: &str = "../../../shared/corpus/docs-examples/tasks/policy-enforcement/rate-limit";

fn at(net: u8, host: u8, port: u16) -> SocketAddr {
    format!("127.0.{net}.{host}:{port}").parse().unwrap()
}

fn task(file: &str) -> String {
    let path = format!("{}/{TASK}/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// sleep (.2) calls productpage (.21, its app on 9080); two ingress
/// gateway replicas (.10, .11) route to productpage too.
fn mesh(net: u8, extra: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: sleep, namespace: default}}
spec: {{address: 127.0.{net}.2, serviceAccount: sleep, labels: {{app: sleep}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: productpage, namespace: default}}
spec: {{address: 127.0.{net}.21, serviceAccount: productpage, labels: {{app: productpage}}, ports: {{http: 9080}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: productpage, namespace: default}}
spec:
  hosts: [productpage.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: productpage}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ingressgateway-a, namespace: istio-system}}
spec: {{address: 127.0.{net}.10, serviceAccount: ingressgateway, labels: {{istio: ingressgateway}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ingressgateway-b, namespace: istio-system}}
spec: {{address: 127.0.{net}.11, serviceAccount: ingressgateway, labels: {{istio: ingressgateway}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: shop, namespace: default}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 8080, name: http, protocol: HTTP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shop, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [shop]
  http: [{{route: [{{destination: {{host: productpage, port: {{number: 9080}}}}}}]}}]
---
{extra}
"#
    )
}

struct Mesh {
    net: u8,
    ca: Arc<weft_identity::Ca>,
    proxies: Vec<Sidecar>,
}

impl Mesh {
    async fn start(net: u8, extra: &str, gateways: bool) -> Mesh {
        let yaml = mesh(net, extra);
        let ca = common::test_ca(&format!("ratelimit-{net}"));
        let hits: Arc<HashMap<&'static str, AtomicUsize>> =
            Arc::new([("productpage", AtomicUsize::new(0))].into());
        app(at(net, 21, 9080), "productpage", hits).await;
        let mut m = Mesh {
            net,
            ca,
            proxies: Vec::new(),
        };
        m.start_proxy(&yaml, Role::Sidecar, "default", "sleep", "sleep")
            .await;
        m.start_proxy(
            &yaml,
            Role::Sidecar,
            "default",
            "productpage",
            "productpage",
        )
        .await;
        if gateways {
            for name in ["ingressgateway-a", "ingressgateway-b"] {
                m.start_proxy(&yaml, Role::Ingress, "istio-system", name, "ingressgateway")
                    .await;
            }
        }
        m
    }

    async fn start_proxy(&mut self, yaml: &str, role: Role, ns: &str, name: &str, sa: &str) {
        let config = common::compile(yaml, ns, name);
        let proxy = Sidecar::start_as(
            role,
            config,
            store_in(&self.ca, ns, sa),
            policy(&self.ca),
            Options::default(),
        )
        .await
        .unwrap();
        self.proxies.push(proxy);
    }

    fn update(&self, extra: &str) {
        let yaml = mesh(self.net, extra);
        for (proxy, (ns, name)) in self.proxies.iter().zip([
            ("default", "sleep"),
            ("default", "productpage"),
            ("istio-system", "ingressgateway-a"),
            ("istio-system", "ingressgateway-b"),
        ]) {
            proxy.update(common::compile(&yaml, ns, name));
        }
    }
}

/// A kept-alive HTTP/1.1 connection to `addr`.
async fn connection(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// One GET on `sender`: status and headers.
async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, hyper::HeaderMap) {
    sender.ready().await.unwrap();
    let mut req = hyper::Request::get(uri).header("host", "productpage:9080");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let _ = resp.into_body().collect().await;
    (status, headers)
}

const PAGE: &str = "http://productpage.default.svc.cluster.local:9080/productpage";

#[tokio::test]
async fn local_rate_limits_of_istios_task_and_weft_rate_limits() {
    // The task's first local rate limit: 4 requests a minute at
    // productpage's inbound side, for every client.
    let m = Mesh::start(143, &task("rate-limit-05.yaml"), false).await;
    let mut sleep = connection(at(143, 2, 15001)).await;
    for i in 0..4 {
        let (status, h) = send(&mut sleep, PAGE, &[]).await;
        assert_eq!(status, StatusCode::OK, "request {i}");
        assert_eq!(h["x-ratelimit-remaining"], (3 - i).to_string());
    }
    let (status, h) = send(&mut sleep, PAGE, &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(h["x-local-rate-limit"], "true");
    assert_eq!(h["x-ratelimit-limit"], "4, 4;w=60");
    let metrics = get_full(at(143, 21, 15090), "/stats/prometheus", Some("x"), &[])
        .await
        .2;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total{")
                && l.contains("reporter=\"destination\"")
                && l.contains("response_code=\"429\"")
                && l.contains("response_flags=\"RL\"")),
        "{metrics}"
    );

    // The task's second form: the filter enabled, the bucket per route of
    // the inbound port's virtual host. A new configuration, new buckets.
    m.update(&task("rate-limit-06.yaml"));
    let statuses: Vec<u16> = {
        let mut out = Vec::new();
        for _ in 0..6 {
            out.push(send(&mut sleep, PAGE, &[]).await.0.as_u16());
        }
        out
    };
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);

    // weft's RateLimit on sleep's own calls: 100 a second in fills of 5
    // every 50 ms, 5 at once. A flood for two seconds gets through at the
    // rate: the first 5, then 100 a second.
    m.update(
        r#"
apiVersion: weft.dev/v1alpha1
kind: RateLimit
metadata: {name: calls, namespace: default}
spec:
  selector: {matchLabels: {app: sleep}}
  limits:
  - {hosts: [productpage.default.svc.cluster.local], requests: 5, per: 50ms}
"#,
    );
    let began = Instant::now();
    let (mut passed, mut limited) = (0u64, 0u64);
    while began.elapsed() < Duration::from_secs(2) {
        let (status, h) = send(&mut sleep, PAGE, &[]).await;
        match status {
            StatusCode::OK => passed += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                assert_eq!(h["x-ratelimit-remaining"], "0");
            }
            other => panic!("unexpected {other}"),
        }
    }
    let took = began.elapsed().as_secs_f64();
    let expected = 5.0 + 100.0 * took;
    let off = (passed as f64 - expected).abs() / expected;
    println!("{passed} passed, {limited} limited in {took:.2} s: {expected:.0} expected");
    assert!(limited > passed, "the flood was not over the limit");
    assert!(off <= 0.05, "{passed} passed, {expected:.0} expected");

    // Buckets per value of a header: one user's flood leaves another's
    // requests alone.
    m.update(
        r#"
apiVersion: weft.dev/v1alpha1
kind: RateLimit
metadata: {name: per-user, namespace: default}
spec:
  selector: {matchLabels: {app: sleep}}
  limits:
  - {by: "request.headers[x-user]", requests: 2, per: 1m}
"#,
    );
    let mut statuses = Vec::new();
    for user in ["ann", "ann", "ann", "bob", "bob", "bob"] {
        statuses.push(send(&mut sleep, PAGE, &[("x-user", user)]).await.0.as_u16());
    }
    assert_eq!(statuses, [200, 200, 429, 200, 200, 429]);
    // A request without the header has no bucket of that limit.
    assert_eq!(send(&mut sleep, PAGE, &[]).await.0, StatusCode::OK);
}

/// A Redis server for the test on `addr`, without persistence.
struct RedisServer(Child);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_shared_limit_holds_across_two_gateway_replicas() {
    let redis = at(144, 6, 6379);
    let server = Command::new("redis-server")
        .args([
            "--bind",
            &redis.ip().to_string(),
            "--port",
            &redis.port().to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(server) = server else {
        eprintln!("skipped: redis-server is not installed (.ci/run installs it)");
        return;
    };
    let _server = RedisServer(server);
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(redis).await.is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 30 requests a minute for all clients together, counted in Redis by
    // both gateway replicas.
    let limit = format!(
        r#"
apiVersion: weft.dev/v1alpha1
kind: RateLimit
metadata: {{name: front-door, namespace: istio-system}}
spec:
  selector: {{matchLabels: {{istio: ingressgateway}}}}
  limits:
  - {{requests: 30, per: 1m, shared: {{redis: "{redis}"}}}}
"#
    );
    let _m = Mesh::start(144, &limit, true).await;
    let mut a = connection(at(144, 10, 8080)).await;
    let mut b = connection(at(144, 11, 8080)).await;
    let mut passed = [0, 0];
    let mut limited = 0;
    for i in 0..60 {
        let conn = if i % 2 == 0 { &mut a } else { &mut b };
        match send(conn, "/productpage", &[]).await.0 {
            StatusCode::OK => passed[i % 2] += 1,
            StatusCode::TOO_MANY_REQUESTS => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    // Each replica alone would have let 30 through; together they let 30
    // through (or, when the minute turned during the test, 30 more).
    let total = passed[0] + passed[1];
    assert!(
        total == 30 || (total > 30 && total <= 60 && limited > 0),
        "{passed:?} passed, {limited} limited"
    );
    assert!(passed[0] > 0 && passed[1] > 0, "{passed:?}");
    assert_eq!(total + limited, 60);
}
