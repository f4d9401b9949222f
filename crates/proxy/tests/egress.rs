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
use weft_proxy::{Options, Role, Sidecar};

const EGRESS: &str = "../../../shared/corpus/docs-examples/tasks/traffic-management/egress";

fn at(net: u8, host: u8, port: u16) -> SocketAddr {
    format!("127.0.{net}.{host}:{port}").parse().unwrap()
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
fn mesh(net: u8, task_yaml: &[String]) -> String {
    let base = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: sleep, namespace: default}}
spec: {{address: 127.0.{net}.2, serviceAccount: sleep, labels: {{app: sleep}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: istio-egressgateway, namespace: istio-system}}
spec:
  address: 127.0.{net}.3
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
  - {{number: 3306, name: tcp, protocol: TCP}}
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

/// The sleep client's sidecar and the egress gateway on 127.0.NET.2 and
/// .3, both asking the DNS stand-in on .53:5353; the stand-ins' files
/// (and the gateway's credentials) in `dir`.
struct Egress {
    net: u8,
    sleep: Sidecar,
    gateway: Sidecar,
    dns: DnsStandIn,
    dir: std::path::PathBuf,
}

impl Egress {
    /// `None` (and the reason printed) where ports 80 and 443, which the
    /// tasks name, cannot be bound.
    async fn start(net: u8, task_yaml: &[String]) -> Option<Egress> {
        if let Err(e) = std::net::TcpListener::bind(at(net, 50, 80)) {
            eprintln!(
                "skipped: binding {} failed ({e}); the egress tasks need ports 80 and 443 (root)",
                at(net, 50, 80)
            );
            return None;
        }
        let dir = std::env::temp_dir().join(format!("weft-egress-{net}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dns = DnsStandIn::default();
        dns.serve(at(net, 53, 5353)).await;
        let yaml = mesh(net, task_yaml);
        let mesh_ca = common::test_ca(&format!("egress-{net}"));
        let start = |role: Role, ns: &'static str, name: &'static str, sa: &'static str| {
            let config = common::compile(&yaml, ns, name);
            let (store, policy) = (store_in(&mesh_ca, ns, sa), policy(&mesh_ca));
            let options = Options {
                dns: Dns::servers(&[at(net, 53, 5353)]),
                credentials: dir.clone(),
                // Where no CA is named, the stand-ins' CA is "the system's".
                system_roots: Some(dir.join("site-ca.pem")),
                ..Options::default()
            };
            async move {
                Sidecar::start_as(role, config, store, policy, options)
                    .await
                    .unwrap()
            }
        };
        Some(Egress {
            net,
            sleep: start(Role::Sidecar, "default", "sleep", "sleep").await,
            gateway: start(
                Role::Egress,
                "istio-system",
                "istio-egressgateway",
                "istio-egressgateway-service-account",
            )
            .await,
            dns,
            dir,
        })
    }

    fn update(&self, task_yaml: &[String]) {
        let yaml = mesh(self.net, task_yaml);
        self.sleep
            .update(common::compile(&yaml, "default", "sleep"));
        self.gateway.update(common::compile(
            &yaml,
            "istio-system",
            "istio-egressgateway",
        ));
    }

    fn client(&self) -> SocketAddr {
        self.sleep.outbound_addr()
    }

    /// Prometheus text of the sidecar (2) or the gateway (3).
    async fn metrics(&self, host: u8) -> String {
        get_full(
            at(self.net, host, 15090),
            "/stats/prometheus",
            Some("x"),
            &[],
        )
        .await
        .2
    }

    /// An address of this test's network, as DNS answers it.
    fn ip(&self, host: u8) -> String {
        format!("127.0.{}.{host}", self.net)
    }
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
    // Step one of the task: only the ServiceEntry.
    let Some(e) = Egress::start(140, &[task("egress-gateway-02.yaml")]).await else {
        return;
    };
    let site_ca = ca(&e.dir, "site");
    let cert = leaf(&e.dir, &site_ca, "cnn", &["edition.cnn.com"]);
    let hits: Arc<HashMap<&'static str, AtomicUsize>> = Arc::new(
        [
            ("cnn", AtomicUsize::new(0)),
            ("cnn-moved", AtomicUsize::new(0)),
        ]
        .into(),
    );
    app(at(e.net, 50, 80), "cnn", hits.clone()).await;
    app(at(e.net, 51, 80), "cnn-moved", hits.clone()).await;
    https(at(e.net, 50, 443), &cert, None).await;
    e.dns.set("edition.cnn.com", &e.ip(50), 300);
    let client = e.client();
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
    e.update(&[
        task("egress-gateway-02.yaml"),
        task("egress-gateway-03.yaml"),
        task("egress-gateway-05.yaml"),
    ]);
    let (status, body) = cnn("/headers").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The gateway is the edge: it added the client it saw, the sidecar.
    assert!(body.contains("x-forwarded-for: "), "{body}");
    let (status, _) = cnn("/politics").await;
    assert_eq!(status, StatusCode::OK);
    // Both hops show in the metrics: the sidecar sent to the gateway, the
    // gateway to the site.
    let sleep = e.metrics(2).await;
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
    let gw = e.metrics(3).await;
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
    assert_eq!(e.dns.asked("edition.cnn.com"), 2);

    // Nothing reaches the gateway's servers but HBONE with a mesh
    // certificate: no plain port 80 on its address.
    assert!(
        tokio::net::TcpStream::connect(at(e.net, 3, 80))
            .await
            .is_err()
    );

    // TLS through the egress gateway, passed through by SNI.
    e.update(&[
        task("egress-gateway-07.yaml"),
        task("egress-gateway-08.yaml"),
    ]);
    let body = tls_through(client, "edition.cnn.com", 443, &site_ca.pem)
        .await
        .unwrap();
    assert_eq!(body, "sni=edition.cnn.com client-cert=false");
    let gw = e.metrics(3).await;
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
    e.update(&[task("egress-gateway-02.yaml"), ttl_entry.to_string()]);
    e.dns.set("short-ttl.example.com", &e.ip(50), 2);
    let short = || async move { get(client, "http://short-ttl.example.com/", None, &[]).await };
    let (_, body) = short().await;
    assert!(body.starts_with("cnn short-ttl.example.com"), "{body}");
    e.dns.set("short-ttl.example.com", &e.ip(51), 2);
    let (_, body) = short().await;
    assert!(body.starts_with("cnn short-ttl.example.com"), "{body}");
    assert_eq!(e.dns.asked("short-ttl.example.com"), 1);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (_, body) = short().await;
    assert!(
        body.starts_with("cnn-moved short-ttl.example.com"),
        "{body}"
    );
    assert_eq!(e.dns.asked("short-ttl.example.com"), 2);
    // When DNS stops answering, the last answer stays in use.
    e.dns
        .records
        .write()
        .unwrap()
        .remove("short-ttl.example.com");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (status, body) = short().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(e.dns.asked("short-ttl.example.com") > 2);
}

/// The TLS tasks: origination at the sidecar (SIMPLE, the site verified by
/// the system's roots), at the egress gateway (SIMPLE, and MUTUAL with a
/// `credentialName` folder), and wildcard hosts passed through to the
/// client's own destination or through the gateway.
#[tokio::test]
async fn egress_tls_tasks() {
    let Some(e) = Egress::start(141, &[]).await else {
        return;
    };
    let site_ca = ca(&e.dir, "site");
    let client_ca = ca(&e.dir, "client");
    let cnn = leaf(&e.dir, &site_ca, "cnn", &["edition.cnn.com"]);
    let wiki = leaf(&e.dir, &site_ca, "wiki", &["*.wikipedia.org"]);
    let nginx = leaf(
        &e.dir,
        &site_ca,
        "nginx",
        &["my-nginx.mesh-external.svc.cluster.local"],
    );
    https(at(e.net, 50, 443), &cnn, None).await;
    https(at(e.net, 60, 443), &wiki, None).await;
    https(at(e.net, 61, 443), &wiki, None).await;
    https(at(e.net, 70, 443), &nginx, Some(&client_ca.pem)).await;
    e.dns.set("edition.cnn.com", &e.ip(50), 300);
    e.dns.set("en.wikipedia.org", &e.ip(60), 300);
    e.dns.set("www.wikipedia.org", &e.ip(61), 300);
    e.dns
        .set("my-nginx.mesh-external.svc.cluster.local", &e.ip(70), 300);
    // The client credential, as the task's Secret holds it.
    let credential = e.dir.join("client-credential");
    std::fs::create_dir_all(&credential).unwrap();
    let client_cert = leaf(&e.dir, &client_ca, "client", &["curl.default"]);
    std::fs::write(credential.join("tls.crt"), &client_cert.0).unwrap();
    std::fs::write(credential.join("tls.key"), &client_cert.1).unwrap();
    std::fs::write(credential.join("ca.crt"), &site_ca.pem).unwrap();
    let client = e.client();
    let get_cnn = || async move { get(client, "http://edition.cnn.com/politics", None, &[]).await };

    // TLS origination at the sidecar: plain HTTP from the app to port 80,
    // HTTPS to the site's 443.
    e.update(&[task("egress-tls-origination-02.yaml")]);
    let (status, body) = get_cnn().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "sni=edition.cnn.com client-cert=false");

    // TLS origination at the egress gateway: the sidecar sends HTTP
    // through HBONE to the gateway's ISTIO_MUTUAL server, the gateway
    // originates TLS to the site.
    e.update(&[
        task("egress-gateway-tls-origination-01.yaml"),
        task("egress-gateway-tls-origination-02.yaml"),
        task("egress-gateway-tls-origination-04.yaml"),
        task("egress-gateway-tls-origination-06.yaml"),
    ]);
    let (status, body) = get_cnn().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "sni=edition.cnn.com client-cert=false");
    let gw = e.metrics(3).await;
    assert_eq!(
        sample(
            &gw,
            "istio_requests_total",
            &[
                "destination_service=\"edition.cnn.com\"",
                "response_code=\"200\""
            ]
        ),
        1,
        "{gw}"
    );

    // Mutual TLS origination at the gateway with the client credential.
    // The stand-in for the task's nginx Service, with the ports the
    // mutual-TLS origination task gives it.
    let nginx_entry = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: my-nginx, namespace: mesh-external}
spec:
  hosts: [my-nginx.mesh-external.svc.cluster.local]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 443, name: https, protocol: HTTPS}
  resolution: DNS
"#;
    e.update(&[
        nginx_entry.to_string(),
        task("egress-gateway-tls-origination-08.yaml"),
        task("egress-gateway-tls-origination-10.yaml"),
        task("egress-gateway-tls-origination-12.yaml"),
    ]);
    let (status, body) = get(
        client,
        "http://my-nginx.mesh-external.svc.cluster.local/",
        None,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        "sni=my-nginx.mesh-external.svc.cluster.local client-cert=true"
    );

    // Wildcard hosts: resolution NONE sends each name to its own address.
    e.update(&[task("wildcard-egress-hosts-01.yaml")]);
    let body = tls_through(client, "en.wikipedia.org", 443, &site_ca.pem)
        .await
        .unwrap();
    assert_eq!(body, "sni=en.wikipedia.org client-cert=false");
    // A name outside the wildcard is not in the registry.
    assert!(
        tls_through(client, "edition.cnn.com", 443, &site_ca.pem)
            .await
            .unwrap_err()
            .contains("502")
    );
    // Through the egress gateway, every *.wikipedia.org name goes to
    // www.wikipedia.org's address, its SNI untouched.
    e.update(&[
        task("wildcard-egress-hosts-01.yaml"),
        task("wildcard-egress-hosts-02.yaml"),
        task("wildcard-egress-hosts-04.yaml"),
    ]);
    let body = tls_through(client, "en.wikipedia.org", 443, &site_ca.pem)
        .await
        .unwrap();
    assert_eq!(body, "sni=en.wikipedia.org client-cert=false");
    assert_eq!(e.dns.asked("www.wikipedia.org"), 1);
}

/// Egress control (ServiceEntries open HTTP and HTTPS hosts, a
/// VirtualService sets a timeout) and the HTTP-proxy task (a ServiceEntry
/// by address and CIDR for a company proxy, reached by TCP).
#[tokio::test]
async fn egress_control_and_http_proxy_tasks() {
    let Some(e) = Egress::start(142, &[]).await else {
        return;
    };
    let site_ca = ca(&e.dir, "site");
    let google = leaf(&e.dir, &site_ca, "google", &["www.google.com"]);
    let hits: Arc<HashMap<&'static str, AtomicUsize>> = Arc::new(
        [
            ("httpbin", AtomicUsize::new(0)),
            ("proxy", AtomicUsize::new(0)),
        ]
        .into(),
    );
    app(at(e.net, 50, 80), "httpbin", hits.clone()).await;
    https(at(e.net, 60, 443), &google, None).await;
    app(at(e.net, 80, 3128), "proxy", hits.clone()).await;
    e.dns.set("httpbin.org", &e.ip(50), 300);
    e.dns.set("www.google.com", &e.ip(60), 300);
    let client = e.client();
    let httpbin = || async move { get(client, "http://httpbin.org/slow", None, &[]).await };
    let google = || tls_through(client, "www.google.com", 443, &site_ca.pem);
    // A CONNECT to the company proxy's address, and a request through it.
    let proxy_ip = e.ip(80);
    let company_proxy = || {
        let proxy_ip = proxy_ip.clone();
        async move {
            let mut tcp = tokio::net::TcpStream::connect(client).await.unwrap();
            let ask = format!(
                "CONNECT {0}:3128 HTTP/1.1\r\nhost: {0}:3128\r\n\r\nGET /via HTTP/1.1\r\nhost: en.wikipedia.org\r\nconnection: close\r\n\r\n",
                proxy_ip
            );
            tokio::io::AsyncWriteExt::write_all(&mut tcp, ask.as_bytes())
                .await
                .unwrap();
            let mut out = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut out).await;
            String::from_utf8_lossy(&out).into_owned()
        }
    };

    // REGISTRY_ONLY: nothing is open yet.
    assert_eq!(httpbin().await.0, StatusCode::BAD_GATEWAY);
    assert!(google().await.unwrap_err().contains("502"));
    assert!(company_proxy().await.starts_with("HTTP/1.1 502"));
    // Both kinds of refusal are counted.
    let sleep = e.metrics(2).await;
    assert_eq!(
        sample(
            &sleep,
            "istio_tcp_connections_opened_total",
            &[
                "destination_service=\"BlackHoleCluster\"",
                "response_flags=\"NR\""
            ]
        ),
        2,
        "{sleep}"
    );
    assert_eq!(
        sample(
            &sleep,
            "istio_requests_total",
            &[
                "destination_service=\"BlackHoleCluster\"",
                "response_code=\"502\"",
                "response_flags=\"NR\""
            ]
        ),
        // httpbin's, and the GET sent after the refused CONNECT.
        2,
        "{sleep}"
    );

    let http_proxy = task("http-proxy-02.yaml")
        .replace("$PROXY_IP", &e.ip(80))
        .replace("$PROXY_PORT", "3128");
    e.update(&[
        task("egress-control-02.yaml"),
        task("egress-control-03.yaml"),
        task("egress-control-04.yaml"),
        http_proxy,
    ]);
    let (status, body) = httpbin().await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("httpbin httpbin.org /slow"), "{body}");
    assert_eq!(
        google().await.unwrap(),
        "sni=www.google.com client-cert=false"
    );
    let answer = company_proxy().await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("proxy en.wikipedia.org /via"), "{answer}");
    // A Kubernetes ExternalName Service for the external host, and the
    // task's DestinationRule, which turns off mTLS toward it.
    e.update(&[
        task("egress-kubernetes-services-01.yaml"),
        task("egress-kubernetes-services-02.yaml"),
    ]);
    for url in [
        "http://my-httpbin.default.svc.cluster.local/headers",
        "http://my-httpbin/headers",
    ] {
        let (status, body) = get(client, url, None, &[]).await;
        assert_eq!(status, StatusCode::OK, "{url}: {body}");
        assert!(body.starts_with("httpbin my-httpbin"), "{body}");
    }

    // Plain TCP through the egress gateway (a database outside), by the
    // pattern of Istio's egress-gateway task for TCP services.
    let echo = tokio::net::TcpListener::bind(at(e.net, 90, 3306))
        .await
        .unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = echo.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    e.dns.set("db.example.com", &e.ip(90), 300);
    let tcp_egress = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.example.com]
  ports: [{number: 3306, name: tcp, protocol: TCP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: istio-egressgateway}
spec:
  selector: {istio: egressgateway}
  servers:
  - port: {number: 3306, name: tcp, protocol: TCP}
    hosts: [db.example.com]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: egressgateway-for-db}
spec:
  host: istio-egressgateway.istio-system.svc.cluster.local
  subsets: [{name: db}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db-through-egress-gateway}
spec:
  hosts: [db.example.com]
  gateways: [mesh, istio-egressgateway]
  tcp:
  - match: [{gateways: [mesh], port: 3306}]
    route: [{destination: {host: istio-egressgateway.istio-system.svc.cluster.local, subset: db, port: {number: 3306}}}]
  - match: [{gateways: [istio-egressgateway], port: 3306}]
    route: [{destination: {host: db.example.com, port: {number: 3306}}}]
"#;
    e.update(&[tcp_egress.to_string()]);
    let mut tcp = tokio::net::TcpStream::connect(client).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut tcp,
        b"CONNECT db.example.com:3306 HTTP/1.1\r\nhost: db.example.com:3306\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = [0u8; 128];
    let n = tokio::io::AsyncReadExt::read(&mut tcp, &mut head)
        .await
        .unwrap();
    assert!(head[..n].starts_with(b"HTTP/1.1 200"));
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"SELECT 1")
        .await
        .unwrap();
    let mut echoed = [0u8; 8];
    tokio::io::AsyncReadExt::read_exact(&mut tcp, &mut echoed)
        .await
        .unwrap();
    assert_eq!(&echoed, b"SELECT 1");
    drop(tcp);
    let gw = e.metrics(3).await;
    assert_eq!(
        sample(
            &gw,
            "istio_tcp_connections_opened_total",
            &["destination_service=\"db.example.com\""]
        ),
        1,
        "{gw}"
    );

    // The tunnel is counted as TCP to the proxy's ServiceEntry.
    let sleep = e.metrics(2).await;
    assert_eq!(
        sample(
            &sleep,
            "istio_tcp_connections_closed_total",
            &["destination_service=\"my-company-proxy.com\""]
        ),
        1,
        "{sleep}"
    );
}
