//! Istio's egress tasks (`../shared/corpus/docs-examples/tasks/
//! traffic-management/egress/`), their Istio-API YAML as published, against
//! stand-ins for the external hosts on 127.0.140.x. A DNS stand-in answers
//! for those hosts, so the ServiceEntries keep their `resolution: DNS`.
//! REGISTRY_ONLY blocks what no ServiceEntry opens; the egress gateway's
//! path is taken for HTTP and for TLS passed through by SNI, as its metrics
//! and the stand-in's view show; the gateway takes no connection from
//! outside the mesh; DNS answers are kept for their TTL.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use common::{DnsStandIn, app, ca, get, get_full, https, leaf, policy, store_in, tls_through};
use hyper::StatusCode;
use weft_proxy::dns::Dns;
use weft_proxy::{Ports, Role, Sidecar};

const NET: u8 = 140;
const EGRESS: &str = "../../../shared/corpus/docs-examples/tasks/traffic-management/egress";

fn at(host: u8, port: u16) -> SocketAddr {
    format!("127.0.{NET}.{host}:{port}").parse().unwrap()
}

/// A file of the egress tasks.
fn task(file: &str) -> String {
    let dir = file.rsplit_once('-').unwrap().0;
    let path = format!("{}/{EGRESS}/{dir}/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The sleep client, the egress gateway (a workload labelled as Istio's
/// chart labels it, behind the Service its chart creates), as a cluster
/// would have them, then the task's YAML.
fn mesh(task_yaml: &[String]) -> String {
    let base = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: sleep, namespace: default}}
spec: {{address: 127.0.{NET}.2, serviceAccount: sleep, labels: {{app: sleep}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: istio-egressgateway, namespace: istio-system}}
spec:
  address: 127.0.{NET}.3
  serviceAccount: istio-egressgateway-service-account
  labels: {{istio: egressgateway, app: istio-egressgateway}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: istio-egressgateway, namespace: istio-system}}
spec:
  hosts: [istio-egressgateway.istio-system.svc.cluster.local]
  location: MESH_INTERNAL
  ports:
  - {{number: 80, name: http2, protocol: HTTP2}}
  - {{number: 443, name: https, protocol: TLS}}
  resolution: STATIC
  workloadSelector: {{labels: {{istio: egressgateway}}}}
---
"#
    );
    let mut out = base;
    for t in task_yaml {
        out.push_str(t);
        out.push_str("\n---\n");
    }
    out
}

struct Proxies {
    sleep: Sidecar,
    gateway: Sidecar,
}

impl Proxies {
    fn update(&self, yaml: &str) {
        self.sleep.update(common::compile(yaml, "default", "sleep"));
        self.gateway
            .update(common::compile(yaml, "istio-system", "istio-egressgateway"));
    }
}

/// Prometheus text of the proxy at `ip`.
async fn metrics(host: u8) -> String {
    get_full(at(host, 15090), "/stats/prometheus", Some("x"), &[])
        .await
        .2
}

/// The value of the first sample of `metric` whose labels include all of
/// `labels`, or 0.
fn sample(text: &str, metric: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn egress_gateway_tasks_with_a_dns_stand_in() {
    // The stand-ins listen on the ports the tasks name (80, 443).
    let probe = std::net::TcpListener::bind(at(50, 80));
    if let Err(e) = probe {
        eprintln!(
            "skipped: binding {} failed ({e}); the egress tasks need ports 80 and 443 (root)",
            at(50, 80)
        );
        return;
    }
    drop(probe);
    let dir = std::env::temp_dir().join(format!("weft-egress-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let site_ca = ca(&dir, "cnn");
    let cert = leaf(&dir, &site_ca, "cnn", &["edition.cnn.com"]);
    let hits: Arc<HashMap<&'static str, AtomicUsize>> = Arc::new(
        [
            ("cnn", AtomicUsize::new(0)),
            ("cnn-moved", AtomicUsize::new(0)),
        ]
        .into(),
    );
    app(at(50, 80), "cnn", hits.clone()).await;
    app(at(51, 80), "cnn-moved", hits.clone()).await;
    https(at(50, 443), &cert, None).await;
    let dns = DnsStandIn::default();
    dns.set("edition.cnn.com", &format!("127.0.{NET}.50"), 300);
    dns.serve(at(53, 5353)).await;

    // Step one of the task: only the ServiceEntry.
    let yaml = mesh(&[task("egress-gateway-02.yaml")]);
    let mesh_ca = common::test_ca("egress");
    let start = |role: Role, ns: &'static str, name: &'static str, sa: &'static str| {
        let config = common::compile(&yaml, ns, name);
        let (store, policy) = (store_in(&mesh_ca, ns, sa), policy(&mesh_ca));
        async move {
            let dns = Dns::servers(&[at(53, 5353)]);
            Sidecar::start_as(role, config, store, policy, Ports::default(), None, dns)
                .await
                .unwrap()
        }
    };
    let proxies = Proxies {
        sleep: start(Role::Sidecar, "default", "sleep", "sleep").await,
        gateway: start(
            Role::Egress {
                credentials: dir.clone(),
            },
            "istio-system",
            "istio-egressgateway",
            "istio-egressgateway-service-account",
        )
        .await,
    };
    let client = proxies.sleep.outbound_addr();
    let cnn = |path: &'static str| async move {
        get(client, &format!("http://edition.cnn.com{path}"), None, &[]).await
    };

    // The ServiceEntry opens the host, found by DNS; anything else is
    // blocked (weft's REGISTRY_ONLY default).
    let (status, body) = cnn("/headers").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("cnn edition.cnn.com /headers"), "{body}");
    assert!(!body.contains("x-forwarded-for"), "{body}");
    let (status, _) = get(client, "http://www.example.org/", None, &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);

    // The egress gateway: Gateway, DestinationRule and VirtualService as
    // the task applies them.
    let yaml = mesh(&[
        task("egress-gateway-02.yaml"),
        task("egress-gateway-03.yaml"),
        task("egress-gateway-05.yaml"),
    ]);
    proxies.update(&yaml);
    let (status, body) = cnn("/headers").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The gateway is the edge: it added the client it saw, the sidecar.
    assert!(body.contains("x-forwarded-for: "), "{body}");
    let (status, _) = cnn("/politics").await;
    assert_eq!(status, StatusCode::OK);
    // Both hops show in the metrics: the sidecar sent to the gateway, the
    // gateway to the site, with the sidecar's identity as its source.
    let sleep = metrics(2).await;
    assert_eq!(
        sample(
            &sleep,
            "istio_requests_total",
            &[
                "reporter=\"source\"",
                "destination_service=\"istio-egressgateway.istio-system.svc.cluster.local\"",
                "response_code=\"200\"",
            ]
        ),
        2,
        "{sleep}"
    );
    let gw = metrics(3).await;
    assert_eq!(
        sample(
            &gw,
            "istio_requests_total",
            &[
                "source_workload=\"istio-egressgateway\"",
                "destination_service=\"edition.cnn.com\"",
                "response_code=\"200\"",
            ]
        ),
        2,
        "{gw}"
    );
    // One DNS question per proxy answered them all (TTL 300 s): the
    // sidecar's before the gateway was in the path, the gateway's since.
    assert_eq!(dns.asked("edition.cnn.com"), 2);

    // Nothing reaches the gateway's servers but HBONE with a mesh
    // certificate: no plain port 80 on its address.
    assert!(tokio::net::TcpStream::connect(at(3, 80)).await.is_err());

    // TLS through the egress gateway, passed through by SNI.
    let yaml = mesh(&[
        task("egress-gateway-07.yaml"),
        task("egress-gateway-08.yaml"),
    ]);
    proxies.update(&yaml);
    let body = tls_through(client, "edition.cnn.com", 443, &site_ca.pem)
        .await
        .unwrap();
    assert_eq!(body, "sni=edition.cnn.com client-cert=false");
    let gw = metrics(3).await;
    assert_eq!(
        sample(
            &gw,
            "istio_tcp_connections_opened_total",
            &["destination_service=\"edition.cnn.com\""]
        ),
        1,
        "{gw}"
    );

    // DNS answers are kept for their TTL: a changed answer is taken up
    // once the TTL has run out, not before.
    let ttl_entry = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: short-ttl}
spec:
  hosts: [short-ttl.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
"#;
    let yaml = mesh(&[task("egress-gateway-02.yaml"), ttl_entry.to_string()]);
    proxies.update(&yaml);
    dns.set("short-ttl.example.com", &format!("127.0.{NET}.50"), 2);
    let short = |path: &'static str| async move {
        get(
            client,
            &format!("http://short-ttl.example.com{path}"),
            None,
            &[],
        )
        .await
    };
    let (_, body) = short("/").await;
    assert!(body.starts_with("cnn short-ttl.example.com"), "{body}");
    dns.set("short-ttl.example.com", &format!("127.0.{NET}.51"), 2);
    let (_, body) = short("/").await;
    assert!(body.starts_with("cnn short-ttl.example.com"), "{body}");
    assert_eq!(dns.asked("short-ttl.example.com"), 1);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (_, body) = short("/").await;
    assert!(
        body.starts_with("cnn-moved short-ttl.example.com"),
        "{body}"
    );
    assert_eq!(dns.asked("short-ttl.example.com"), 2);
    // When DNS stops answering, the last answer stays in use.
    dns.records.write().unwrap().remove("short-ttl.example.com");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (status, body) = short("/").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the last answer stays while DNS fails: {body}"
    );
}
