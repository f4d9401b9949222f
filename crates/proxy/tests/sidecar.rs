//! Sidecars on their own 127.0.x.y addresses, talking HBONE to each other,
//! in front of small stand-in applications: routing, weights, subsets,
//! direct responses, timeouts, unknown hosts, health and config dump, and
//! the rule that 15008 serves nobody without a mesh certificate.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use common::{Mesh, URL, get, get_full, mesh, policy, start, store};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_identity::{Ca, CertStore, TrustDomain};
use weft_proxy::{Ports, Sidecar};

#[tokio::test]
async fn requests_reach_the_app_through_hbone_by_absolute_uri_or_host_header() {
    let m = start(101, "").await;
    let (status, body) = get(m.client, URL, None, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.ends_with(" reviews.default.svc.cluster.local:9080 /books?id=1"),
        "{body}"
    );
    // Origin-form with a short Host, as `wrk -H Host:` sends it.
    let (status, body) = get(m.client, "/x", Some("reviews:9080"), &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.ends_with(" reviews:9080 /x"), "{body}");
    let total = m.hits["v1"].load(Ordering::SeqCst) + m.hits["v2"].load(Ordering::SeqCst);
    assert_eq!(total, 2);
    // Unknown hosts are not forwarded anywhere.
    let (status, body) = get(m.client, "http://evil.example.com/", None, &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(
        body.contains("no service evil.example.com:80 in the mesh registry"),
        "{body}"
    );
}

#[tokio::test]
async fn weights_split_traffic_and_headers_pick_subsets() {
    let m = start(
        102,
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /static}}]
    directResponse: {status: 503, body: {string: "static is down"}}
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}
"#,
    )
    .await;
    let n = 400;
    for _ in 0..n {
        let (status, _) = get(m.client, URL, None, &[]).await;
        assert_eq!(status, StatusCode::OK);
    }
    let v2 = m.hits["v2"].load(Ordering::SeqCst);
    // 20% of 400 = 80; the standard deviation is 8: allow four of them.
    assert!((48..=112).contains(&v2), "v2 got {v2} of {n}");
    for _ in 0..20 {
        let (_, body) = get(m.client, URL, None, &[("end-user", "jason")]).await;
        assert!(body.starts_with("v2 "), "{body}");
    }
    let (status, body) = get(
        m.client,
        "http://reviews.default.svc.cluster.local:9080/static/a.css",
        None,
        &[],
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "static is down")
    );
}

#[tokio::test]
async fn route_timeouts_answer_504() {
    let m = start(
        103,
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews}}]
    timeout: 100ms
"#,
    )
    .await;
    let started = std::time::Instant::now();
    let (status, body) = get(
        m.client,
        "http://reviews.default.svc.cluster.local:9080/slow",
        None,
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(started.elapsed() < Duration::from_millis(450));
    let (status, _) = get(m.client, URL, None, &[]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn hbone_serves_nobody_without_a_mesh_certificate() {
    let m = start(104, "").await;
    let hbone: SocketAddr = format!("127.0.{}.31:15008", m.net).parse().unwrap();
    // Plaintext HTTP/1 CONNECT to 15008: no TLS, nothing reaches the app.
    let mut tcp = TcpStream::connect(hbone).await.unwrap();
    tcp.write_all(
        format!(
            "CONNECT 127.0.{}.31:9081 HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
            m.net
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut buf)).await;
    assert!(
        !String::from_utf8_lossy(&buf).contains("v1 "),
        "plaintext must not reach the app"
    );
    // TLS without a client certificate: refused at the handshake.
    let no_cert = CertStore::new();
    let pool = weft_proxy::hbone::Pool::new(no_cert, policy(&m.ca));
    let target: SocketAddr = format!("127.0.{}.31:9081", m.net).parse().unwrap();
    let err = pool
        .connect(
            hbone,
            "spiffe://cluster.local/ns/default/sa/reviews",
            target,
            "",
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("mTLS") || err.to_string().contains("HTTP/2"),
        "{err}"
    );
    // A proxy with a certificate from another mesh: refused too.
    let dir = std::env::temp_dir().join(format!("weft-proxy-other-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let other = Arc::new(
        Ca::init(
            &dir,
            &TrustDomain::new("cluster.local").unwrap(),
            SystemTime::now(),
        )
        .unwrap(),
    );
    let pool = weft_proxy::hbone::Pool::new(store(&other, "productpage"), policy(&m.ca));
    assert!(
        pool.connect(
            hbone,
            "spiffe://cluster.local/ns/default/sa/reviews",
            target,
            ""
        )
        .await
        .is_err()
    );
    // A mesh peer may only reach this workload's own ports.
    let pool = weft_proxy::hbone::Pool::new(store(&m.ca, "productpage"), policy(&m.ca));
    let elsewhere: SocketAddr = format!("127.0.{}.32:9082", m.net).parse().unwrap();
    let err = pool
        .connect(
            hbone,
            "spiffe://cluster.local/ns/default/sa/reviews",
            elsewhere,
            "",
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the destination proxy refused the tunnel: 403 Forbidden"
    );
    assert_eq!(
        m.hits["v1"].load(Ordering::SeqCst) + m.hits["v2"].load(Ordering::SeqCst),
        0
    );
    // ...and with a valid certificate the tunnel works and is TLS 1.3.
    assert!(
        pool.connect(
            hbone,
            "spiffe://cluster.local/ns/default/sa/reviews",
            target,
            ""
        )
        .await
        .is_ok()
    );
}

#[tokio::test]
async fn health_and_config_dump() {
    let m = start(105, "").await;
    let ip: IpAddr = format!("127.0.{}.21", m.net).parse().unwrap();
    let (status, body) = get(SocketAddr::new(ip, 15021), "/healthz/ready", Some("x"), &[]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ready\n"));
    let (status, body) = get(SocketAddr::new(ip, 15000), "/config_dump", Some("x"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        dump["workload"]["identity"],
        "spiffe://cluster.local/ns/default/sa/productpage"
    );
    assert!(
        dump["clusters"]["outbound|9080||reviews.default.svc.cluster.local"]["endpoints"]
            .is_array()
    );
    let (status, body) = get(SocketAddr::new(ip, 15000), "/clusters", Some("x"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    let clusters: serde_json::Value = serde_json::from_str(&body).unwrap();
    let reviews = clusters
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "outbound|9080||reviews.default.svc.cluster.local")
        .unwrap();
    assert_eq!(reviews["endpoints"][0]["ejected"], false);
    assert_eq!(
        reviews["endpoints"][0]["identity"],
        "spiffe://cluster.local/ns/default/sa/reviews"
    );
    assert_eq!(get(m.client, URL, None, &[]).await.0, StatusCode::OK);
    let (status, body) = get(SocketAddr::new(ip, 15000), "/stats", Some("x"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("# TYPE istio_requests counter"), "{body}");
}

fn hits(m: &Mesh, v: &str) -> usize {
    m.hits[v].load(Ordering::SeqCst)
}

const R: &str = "http://reviews.default.svc.cluster.local:9080";

#[tokio::test]
async fn retries_are_counted_at_the_upstream() {
    let m = start(
        106,
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /status/500}}]
    route: [{destination: {host: reviews, subset: v2}}]
    retries: {attempts: 0}
  - route: [{destination: {host: reviews, subset: v1}}]
    retries: {attempts: 3, retryOn: 5xx}
"#,
    )
    .await;
    let (status, _) = get(m.client, &format!("{R}/status/503"), None, &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(hits(&m, "v1"), 4, "one try and three retries");
    let (status, _) = get(m.client, &format!("{R}/status/200"), None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(hits(&m, "v1"), 5);
    let (status, _) = get(m.client, &format!("{R}/status/500"), None, &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(hits(&m, "v2"), 1, "attempts: 0 turns retries off");
}

#[tokio::test]
async fn faults_abort_and_delay_at_their_percentages() {
    let m = start(
        107,
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /half}}]
    fault: {abort: {httpStatus: 500, percentage: {value: 50}}}
    route: [{destination: {host: reviews, subset: v1}}]
    retries: {attempts: 0}
  - fault: {delay: {fixedDelay: 200ms}}
    route: [{destination: {host: reviews, subset: v2}}]
"#,
    )
    .await;
    let (status, _) = get(m.client, &format!("{R}/"), None, &[("end-user", "jason")]).await;
    assert_eq!(status, StatusCode::IM_A_TEAPOT);
    assert_eq!(
        hits(&m, "v1"),
        0,
        "an aborted request never reaches the app"
    );
    let n = 400;
    let mut aborted = 0;
    for _ in 0..n {
        if get(m.client, &format!("{R}/half"), None, &[]).await.0
            == StatusCode::INTERNAL_SERVER_ERROR
        {
            aborted += 1;
        }
    }
    // 50% of 400 = 200; the standard deviation is 10: allow four of them.
    assert!((160..=240).contains(&aborted), "{aborted} of {n} aborted");
    assert_eq!(hits(&m, "v1"), n - aborted);
    let started = std::time::Instant::now();
    let (status, _) = get(m.client, &format!("{R}/"), None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "the delay applies"
    );
    // The access log flags injected aborts (FI) and delays (DI).
    let mut log = m.log.lock().await;
    let mut flags = std::collections::BTreeSet::new();
    while let Ok(line) = log.try_recv() {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        flags.insert(v["response_flags"].as_str().unwrap().to_string());
    }
    assert!(flags.contains("FI") && flags.contains("DI"), "{flags:?}");
}

#[tokio::test]
async fn headers_rewrites_and_mirrors() {
    let m = start(
        108,
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /old}}]
    rewrite: {uri: /headers/new, authority: books.internal}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /v1/}}]
    rewrite: {uriRegexRewrite: {match: "^/v1/([a-z]+)/([0-9]+)$", rewrite: '/headers/\2/\1$'}}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /mirror}}]
    route: [{destination: {host: reviews, subset: v1}}]
    mirror: {host: reviews, subset: v2}
    mirrorPercentage: {value: 100}
  - headers:
      request: {set: {x-route: "yes"}, remove: [x-secret]}
      response: {add: {x-served-by: weft}}
    route:
    - destination: {host: reviews, subset: v1}
      headers: {request: {add: {x-subset: v1}}}
"#,
    )
    .await;
    let (status, resp_headers, body) = get_full(
        m.client,
        &format!("{R}/headers"),
        None,
        &[("x-secret", "s3cret"), ("x-route", "no")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\nx-route: yes"), "{body}");
    assert!(body.contains("\nx-subset: v1"), "{body}");
    assert!(!body.contains("s3cret"), "{body}");
    assert_eq!(resp_headers.get("x-served-by").unwrap(), "weft");
    let (_, body) = get(m.client, &format!("{R}/old/page?x=1"), None, &[]).await;
    assert!(
        body.starts_with("v1 books.internal /headers/new/page?x=1"),
        "{body}"
    );
    // Capture groups are `\N` in Istio's rewrite, `$` is literal; the query stays.
    let (_, body) = get(m.client, &format!("{R}/v1/books/42?x=1"), None, &[]).await;
    assert!(
        body.starts_with("v1 reviews.default.svc.cluster.local:9080 /headers/42/books$?x=1"),
        "{body}"
    );
    let (status, body) = get(m.client, &format!("{R}/mirror"), None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("v1 "), "{body}");
    // The copy arrives at v2, its answer dropped.
    let start = std::time::Instant::now();
    while hits(&m, "v2") == 0 && start.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(hits(&m, "v2"), 1, "the mirrored copy arrived");
}

/// Istio's label names on `istio_requests_total`, in Istio's order.
const ISTIO_REQUEST_LABELS: [&str; 25] = [
    "reporter",
    "source_workload",
    "source_canonical_service",
    "source_canonical_revision",
    "source_workload_namespace",
    "source_principal",
    "source_app",
    "source_version",
    "source_cluster",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_app",
    "destination_version",
    "destination_service",
    "destination_canonical_service",
    "destination_canonical_revision",
    "destination_service_name",
    "destination_service_namespace",
    "destination_cluster",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

/// `name{k="v",...} value` lines of a Prometheus text exposition.
fn samples(text: &str, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .map(|l| {
            let (head, value) = l.rsplit_once(' ').unwrap();
            let inner = head[name.len() + 1..head.len() - 1].to_string();
            let labels = inner
                .split("\",")
                .map(|kv| {
                    let (k, v) = kv.split_once("=\"").unwrap();
                    (k.to_string(), v.trim_end_matches('"').to_string())
                })
                .collect();
            (labels, value.parse().unwrap())
        })
        .collect()
}

#[tokio::test]
async fn prometheus_metrics_have_istios_names_and_labels() {
    let m = start(109, "").await;
    for _ in 0..3 {
        assert_eq!(get(m.client, URL, None, &[]).await.0, StatusCode::OK);
    }
    assert_eq!(
        get(m.client, "http://unknown.example.com/", None, &[])
            .await
            .0,
        StatusCode::BAD_GATEWAY
    );
    let ip: IpAddr = format!("127.0.{}.21", m.net).parse().unwrap();
    let (status, text) = get(
        SocketAddr::new(ip, 15090),
        "/stats/prometheus",
        Some("x"),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let requests = samples(&text, "istio_requests_total");
    assert!(!requests.is_empty(), "{text}");
    for (labels, _) in &requests {
        let names: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ISTIO_REQUEST_LABELS);
    }
    let ok: f64 = requests
        .iter()
        .filter(|(l, _)| l.iter().any(|(k, v)| k == "response_code" && v == "200"))
        .map(|(l, v)| {
            let get = |name: &str| {
                l.iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
                    .unwrap()
            };
            assert_eq!(get("reporter"), "source");
            assert_eq!(get("source_workload"), "productpage");
            assert_eq!(
                get("source_principal"),
                "spiffe://cluster.local/ns/default/sa/productpage"
            );
            assert_eq!(
                get("destination_service"),
                "reviews.default.svc.cluster.local"
            );
            assert_eq!(get("destination_service_name"), "reviews");
            assert_eq!(
                get("destination_principal"),
                "spiffe://cluster.local/ns/default/sa/reviews"
            );
            assert_eq!(get("destination_app"), "reviews");
            assert!(get("destination_version") == "v1" || get("destination_version") == "v2");
            assert_eq!(get("response_flags"), "-");
            *v
        })
        .sum();
    assert_eq!(ok, 3.0);
    let nr = requests
        .iter()
        .find(|(l, _)| l.iter().any(|(k, v)| k == "response_flags" && v == "NR"))
        .expect("the unknown host is counted with flag NR");
    assert!(nr.0.iter().any(|(k, v)| k == "response_code" && v == "502"));
    // Histograms with Istio's buckets.
    assert!(
        text.contains("istio_request_duration_milliseconds_bucket{"),
        "{text}"
    );
    assert!(text.contains("le=\"0.5\""));
    assert!(text.contains("le=\"3600000.0\""));
    assert!(text.contains("istio_response_bytes_bucket{"));
    // The destination proxies parse the HTTP inside the tunnels and count
    // each request with reporter="destination": the source's principal
    // from its certificate, its workload from the CONNECT's baggage.
    let mut served = 0.0;
    for host in [31, 32] {
        let ip: IpAddr = format!("127.0.{}.{host}", m.net).parse().unwrap();
        let (_, text) = get(
            SocketAddr::new(ip, 15090),
            "/stats/prometheus",
            Some("x"),
            &[],
        )
        .await;
        for (labels, v) in samples(&text, "istio_requests_total") {
            let names: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(names, ISTIO_REQUEST_LABELS);
            let get = |name: &str| {
                labels
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
                    .unwrap()
            };
            assert_eq!(get("reporter"), "destination");
            assert_eq!(get("source_workload"), "productpage");
            assert_eq!(get("source_workload_namespace"), "default");
            assert_eq!(
                get("source_principal"),
                "spiffe://cluster.local/ns/default/sa/productpage"
            );
            assert_eq!(get("connection_security_policy"), "mutual_tls");
            assert_eq!(
                get("destination_service"),
                "reviews.default.svc.cluster.local"
            );
            assert_eq!(get("destination_app"), "reviews");
            assert_eq!(get("response_code"), "200");
            served += v;
        }
    }
    assert_eq!(served, 3.0, "each request counted once by its destination");
}

#[tokio::test]
async fn access_log_lines_and_trace_context() {
    let m = start(110, "").await;
    let (status, body) = get(
        m.client,
        &format!("{R}/headers"),
        None,
        &[("user-agent", "curl/8")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The app sees a request ID and trace context the proxy created.
    let seen = |body: &str, name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("{name} missing in {body}"))
            .to_string()
    };
    let header = |name: &str| seen(&body, name);
    let request_id = header("x-request-id");
    assert_eq!(request_id.len(), 36);
    let traceparent = header("traceparent");
    assert!(traceparent.starts_with("00-"));
    assert_eq!(header("x-b3-traceid"), traceparent[3..35]);
    assert_eq!(header("x-b3-spanid"), traceparent[36..52]);
    assert_eq!(
        get(m.client, "http://nowhere.example.com/x", None, &[])
            .await
            .0,
        StatusCode::BAD_GATEWAY
    );
    // The log holds both sides; the client's lines name outbound clusters.
    let mut log = m.log.lock().await;
    let mut lines = Vec::new();
    while lines.len() < 3 {
        lines.push(serde_json::from_str::<serde_json::Value>(&log.recv().await.unwrap()).unwrap());
    }
    let side = |prefix: &str| -> Vec<&serde_json::Value> {
        lines
            .iter()
            .filter(|l| {
                l["upstream_cluster"]
                    .as_str()
                    .is_none_or(|c| c.starts_with(prefix) || c == "BlackHoleCluster")
            })
            .collect()
    };
    let (outbound, inbound) = (side("outbound|"), side("inbound|"));
    let first = outbound[0];
    assert_eq!(first["response_code"], 200);
    assert_eq!(first["response_flags"], "-");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/headers");
    assert_eq!(first["user_agent"], "curl/8");
    assert_eq!(first["x_request_id"], request_id.as_str());
    assert_eq!(
        first["upstream_cluster"],
        "outbound|9080||reviews.default.svc.cluster.local"
    );
    assert!(
        first["upstream_host"]
            .as_str()
            .unwrap()
            .starts_with("127.0.110.3")
    );
    let second = outbound[1];
    assert_eq!(second["response_code"], 502);
    assert_eq!(second["upstream_cluster"], "BlackHoleCluster");
    // The server's proxy logged the same request, by the same ID.
    assert_eq!(inbound[0]["x_request_id"], request_id.as_str());
    assert_eq!(inbound[0]["response_code"], 200);
    assert!(
        inbound[0]["upstream_cluster"]
            .as_str()
            .unwrap()
            .starts_with("inbound|908")
    );
    assert_eq!(second["response_flags"], "NR");
    // A caller's context crosses both proxies unchanged (they report no
    // spans, so the app's span is the caller's child), and B3 names the
    // same trace and span.
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (_, body) = get(
        m.client,
        &format!("{R}/headers"),
        None,
        &[("traceparent", tp), ("x-request-id", "caller-id")],
    )
    .await;
    let header = |name: &str| seen(&body, name);
    assert_eq!(header("traceparent"), tp);
    assert_eq!(header("x-request-id"), "caller-id");
    assert_eq!(header("x-b3-traceid"), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(header("x-b3-spanid"), "00f067aa0ba902b7");
    assert_eq!(header("x-b3-sampled"), "1");
}

/// A body of one data frame and then trailers, as a gRPC server sends.
struct WithTrailers(Option<Bytes>, Option<hyper::HeaderMap>);

impl hyper::body::Body for WithTrailers {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if let Some(data) = self.0.take() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(data))));
        }
        std::task::Poll::Ready(self.1.take().map(|t| Ok(hyper::body::Frame::trailers(t))))
    }
}

#[tokio::test]
async fn grpc_over_h2c_keeps_trailers_end_to_end() {
    let m = start(111, "").await;
    let net = m.net;
    let _server = one_more_service(&m, "grpc-echo", 33, ("grpc", 9093), (9090, "GRPC")).await;
    // An h2c app that answers with a message and grpc-status trailers.
    let listener = TcpListener::bind(format!("127.0.{net}.33:9093"))
        .await
        .unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        assert_eq!(req.version(), hyper::Version::HTTP_2);
                        let mut trailers = hyper::HeaderMap::new();
                        let path = req.uri().path().to_string();
                        let (status, message) = if path.ends_with("/Missing") {
                            ("5", "not found")
                        } else {
                            ("0", "ok")
                        };
                        trailers.insert("grpc-status", status.parse().unwrap());
                        trailers.insert("grpc-message", message.parse().unwrap());
                        let mut resp = Response::new(WithTrailers(
                            Some(Bytes::from(format!("hi {path}"))),
                            Some(trailers),
                        ));
                        resp.headers_mut()
                            .insert("content-type", "application/grpc".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(resp)
                    });
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
            });
        }
    });
    // The client speaks HTTP/2 with prior knowledge to its sidecar.
    let tcp = TcpStream::connect(m.client).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method("POST")
        .uri("http://grpc-echo.default.svc.cluster.local:9090/echo.Echo/Say")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers arrive");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "ok");
    assert_eq!(collected.to_bytes(), "hi /echo.Echo/Say");
    let req = Request::builder()
        .method("POST")
        .uri("http://grpc-echo.default.svc.cluster.local:9090/echo.Echo/Missing")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let collected = resp.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "5");
    // Both proxies count them as gRPC, labelled with the status of their
    // trailers.
    for (ip, reporter) in [
        (m.client.ip(), "source"),
        (format!("127.0.{net}.33").parse().unwrap(), "destination"),
    ] {
        for status in ["0", "5"] {
            let labels = [
                ("reporter", reporter),
                ("request_protocol", "grpc"),
                ("grpc_response_status", status),
            ];
            assert!(counted_with(ip, &labels).await, "{reporter} {status}");
        }
    }
}

#[tokio::test]
async fn pool_overflow_answers_503_uo() {
    let m = start(
        112,
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-limits, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {http1MaxPendingRequests: 1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews.default.svc.cluster.local}}]
    retries: {attempts: 0}
"#,
    )
    .await;
    // Six slow requests at once: two fit (one connection, one pending).
    let client = m.client;
    let tasks: Vec<_> = (0..6)
        .map(|_| tokio::spawn(async move { get(client, &format!("{R}/slow"), None, &[]).await }))
        .collect();
    let mut ok = 0;
    let mut overflow = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(body.contains("upstream overflow"), "{body}");
                overflow += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, overflow), (2, 4));
    // Once the slow ones are done, the cluster takes requests again.
    assert_eq!(get(m.client, URL, None, &[]).await.0, StatusCode::OK);
}

#[tokio::test]
async fn an_ejected_endpoint_receives_nothing_for_base_ejection_time() {
    let m = start(
        113,
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-outlier, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    loadBalancer: {simple: ROUND_ROBIN}
    outlierDetection: {consecutive5xxErrors: 2, interval: 1s, baseEjectionTime: 1s, maxEjectionPercent: 50}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews.default.svc.cluster.local}}]
    retries: {attempts: 0}
"#,
    )
    .await;
    // Both endpoints answer /status/503 with a 503.
    let before = (hits(&m, "v1"), hits(&m, "v2"));
    for _ in 0..4 {
        get(m.client, &format!("{R}/status/503"), None, &[]).await;
    }
    // Round robin: two each, both reach two consecutive 5xx; only one may be
    // ejected (50% of 2).
    assert_eq!(
        (hits(&m, "v1") - before.0, hits(&m, "v2") - before.1),
        (2, 2)
    );
    let before = (hits(&m, "v1"), hits(&m, "v2"));
    for _ in 0..10 {
        assert_eq!(get(m.client, URL, None, &[]).await.0, StatusCode::OK);
    }
    let got = (hits(&m, "v1") - before.0, hits(&m, "v2") - before.1);
    assert!(
        got == (0, 10) || got == (10, 0),
        "one endpoint is ejected and gets nothing: {got:?}"
    );
    // After baseEjectionTime it is back.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = (hits(&m, "v1"), hits(&m, "v2"));
    for _ in 0..10 {
        assert_eq!(get(m.client, URL, None, &[]).await.0, StatusCode::OK);
    }
    assert_eq!(
        (hits(&m, "v1") - before.0, hits(&m, "v2") - before.1),
        (5, 5)
    );
}

#[tokio::test]
async fn consistent_hash_keeps_a_user_on_one_endpoint() {
    let m = start(
        114,
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-sticky, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy:
    loadBalancer: {consistentHash: {httpHeaderName: x-user}}
"#,
    )
    .await;
    let mut seen = std::collections::HashSet::new();
    for user in [
        "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi",
    ] {
        let mut versions = std::collections::HashSet::new();
        for _ in 0..5 {
            let (_, body) = get(m.client, URL, None, &[("x-user", user)]).await;
            versions.insert(body[..2].to_string());
        }
        assert_eq!(
            versions.len(),
            1,
            "{user} moved between endpoints: {versions:?}"
        );
        seen.extend(versions);
    }
    assert_eq!(seen.len(), 2, "eight users land on both endpoints");
}

#[tokio::test]
async fn cors_preflights_are_answered_and_responses_decorated() {
    let m = start(
        118,
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /strict}}]
    corsPolicy:
      allowOrigins: [{exact: "https://shop.example"}]
      unmatchedPreflights: IGNORE
    route: [{destination: {host: reviews, subset: v1}}]
  - corsPolicy:
      allowOrigins: [{exact: "https://shop.example"}, {regex: "https://.*\\.partner\\.example"}]
      allowMethods: [GET, POST]
      allowHeaders: [x-custom]
      exposeHeaders: [x-trace]
      maxAge: 24h
      allowCredentials: true
    route: [{destination: {host: reviews, subset: v1}}]
"#,
    )
    .await;
    let preflight = |origin: &'static str, path: &'static str| {
        let client = m.client;
        async move {
            common::request(
                client,
                "OPTIONS",
                &format!("http://reviews.default.svc.cluster.local:9080{path}"),
                None,
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                ],
            )
            .await
        }
    };
    // An allowed origin's preflight is answered by the proxy.
    let (status, h, _) = preflight("https://shop.example", "/api").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["access-control-allow-origin"], "https://shop.example");
    assert_eq!(h["access-control-allow-methods"], "GET,POST");
    assert_eq!(h["access-control-allow-headers"], "x-custom");
    assert_eq!(h["access-control-max-age"], "86400");
    assert_eq!(h["access-control-allow-credentials"], "true");
    assert_eq!(hits(&m, "v1"), 0);
    // Another origin's preflight goes on to the app (FORWARD, the default).
    let (status, h, body) = preflight("https://evil.example", "/api").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("v1 "), "{body}");
    assert!(!h.contains_key("access-control-allow-origin"));
    assert_eq!(hits(&m, "v1"), 1);
    // ...or is answered without CORS headers where it is IGNOREd.
    let (status, h, body) = preflight("https://evil.example", "/strict").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    assert!(!h.contains_key("access-control-allow-origin"));
    assert_eq!(hits(&m, "v1"), 1);
    // Actual requests from an allowed origin (here by regex) are decorated.
    let (status, h, _) = get_full(
        m.client,
        URL,
        None,
        &[("origin", "https://app.partner.example")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        h["access-control-allow-origin"],
        "https://app.partner.example"
    );
    assert_eq!(h["access-control-expose-headers"], "x-trace");
    let (_, h, _) = get_full(m.client, URL, None, &[("origin", "https://evil.example")]).await;
    assert!(!h.contains_key("access-control-allow-origin"));
}

/// Timeouts measured on tokio's paused clock: the stand-in's half-second
/// sleep and the proxy's timers run on virtual time, so the test checks
/// exact budgets without waiting for them.
#[tokio::test(start_paused = true)]
async fn timeouts_and_per_try_timeouts_under_paused_time() {
    let m = start(
        121,
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{uri: {prefix: /slow/route}}]
    timeout: 200ms
    retries: {attempts: 0}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /slow/try}}]
    retries: {attempts: 2, perTryTimeout: 100ms, retryOn: 5xx}
    route: [{destination: {host: reviews, subset: v1}}]
  - timeout: 200ms
    route: [{destination: {host: reviews, subset: v1}}]
"#,
    )
    .await;
    let url = |path: &str| format!("http://reviews.default.svc.cluster.local:9080{path}");
    let ms = |t: tokio::time::Instant| t.elapsed().as_millis();

    // A fast answer within a route timeout is not cut short.
    let (status, body) = get(m.client, &url("/fast"), None, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The route timeout: 504 UT after exactly its budget.
    let t = tokio::time::Instant::now();
    let (status, body) = get(m.client, &url("/slow/route"), None, &[]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!((200..250).contains(&ms(t)), "{} ms", ms(t));
    assert_eq!(hits(&m, "v1"), 2);

    // perTryTimeout: three tries of 100 ms each, with Envoy's 25 ms-based
    // jittered back-off between them, then 504 UT.
    let t = tokio::time::Instant::now();
    let (status, body) = get(m.client, &url("/slow/try"), None, &[]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(body.contains("upstream request timeout"), "{body}");
    assert_eq!(hits(&m, "v1"), 5, "one try and two retries reach the app");
    assert!((375..450).contains(&ms(t)), "{} ms", ms(t));
}

/// The routing features over HTTP/2 from the app (h2c, one multiplexed
/// connection): weights, header-picked subsets, direct responses, faults,
/// retries counted at the upstream, and timeouts.
#[tokio::test]
async fn routing_over_http2_from_the_app() {
    let m = start(
        122,
        r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - match: [{uri: {prefix: /static}}]
    directResponse: {status: 503, body: {string: "static is down"}}
  - match: [{uri: {prefix: /fault}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /status}}]
    retries: {attempts: 2, retryOn: 5xx}
    route: [{destination: {host: reviews, subset: v1}}]
  - match: [{uri: {prefix: /slow}}]
    timeout: 100ms
    route: [{destination: {host: reviews, subset: v1}}]
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v2}, weight: 20}
"#,
    )
    .await;
    let mut h2 = common::h2(m.client).await;
    let n = 400;
    for _ in 0..n {
        let (status, body) = common::h2_get(&mut h2, URL, &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let v2 = hits(&m, "v2");
    // 20% of 400 = 80, standard deviation 8: allow four of them.
    assert!((48..=112).contains(&v2), "v2 got {v2} of {n}");
    let (_, body) = common::h2_get(&mut h2, URL, &[("end-user", "jason")]).await;
    assert!(body.starts_with("v2 "), "{body}");
    let (status, body) = common::h2_get(&mut h2, &format!("{R}/static/a.css"), &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "static is down")
    );
    let before = hits(&m, "v1");
    let (status, _) = common::h2_get(&mut h2, &format!("{R}/fault"), &[]).await;
    assert_eq!(status.as_u16(), 418);
    assert_eq!(hits(&m, "v1"), before, "an abort never reaches the app");
    let (status, _) = common::h2_get(&mut h2, &format!("{R}/status/503"), &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(hits(&m, "v1"), before + 3, "one try and two retries");
    let (status, _) = common::h2_get(&mut h2, &format!("{R}/slow"), &[]).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
}

/// Connection pool limits on tokio's paused clock: `connectTimeout` gives
/// up on an endpoint that never completes the handshake, and `maxRetries`
/// bounds the retries in flight across the cluster.
#[tokio::test(start_paused = true)]
async fn connect_timeout_and_max_retries() {
    let m = start(
        123,
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: blackhole, namespace: default}
spec:
  hosts: [blackhole.example.com]
  location: MESH_EXTERNAL
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 127.0.123.70}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: blackhole, namespace: default}
spec:
  host: blackhole.example.com
  trafficPolicy: {connectionPool: {tcp: {connectTimeout: 300ms}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - route: [{destination: {host: reviews, subset: v1}}]
    retries: {attempts: 3, retryOn: 5xx}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews-pool, namespace: default}
spec:
  host: reviews.default.svc.cluster.local
  trafficPolicy: {connectionPool: {http: {maxRetries: 1}}}
"#,
    )
    .await;
    // A listener whose accept queue is full: new handshakes never finish.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.123.70:80".parse().unwrap()).unwrap();
    let _full = socket.listen(1).unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        if let Ok(Ok(c)) = tokio::time::timeout(
            Duration::from_millis(50),
            s.connect("127.0.123.70:80".parse().unwrap()),
        )
        .await
        {
            fillers.push(c);
        }
    }
    let t = tokio::time::Instant::now();
    let (status, body) = get(m.client, "http://blackhole.example.com/", None, &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("connect timeout after 300ms"), "{body}");
    // Istio's default retries (two, on connect failure) try it three times.
    let ms = t.elapsed().as_millis();
    assert!((900..1100).contains(&ms), "{ms} ms");

    // Two requests that would each retry three times: with maxRetries 1
    // only one retries at a time; the other ends with its first answer.
    let url = format!("{R}/status/503");
    let (a, b) = tokio::join!(
        get(m.client, &url, None, &[]),
        get(m.client, &url, None, &[])
    );
    assert_eq!(
        (a.0, b.0),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            StatusCode::SERVICE_UNAVAILABLE
        )
    );
    assert_eq!(
        hits(&m, "v1"),
        5,
        "4 tries for one request, 1 for the other"
    );
}

/// outboundTrafficPolicy: REGISTRY_ONLY (weft's default) refuses a host the
/// registry does not know; a Sidecar resource with ALLOW_ANY lets it pass
/// straight through, for HTTP and CONNECT, counted as PassthroughCluster.
#[tokio::test]
async fn outbound_traffic_policy_decides_unknown_hosts() {
    let m = start(139, "").await;
    let outside = "http://127.0.139.80:8080/anything";
    common::app("127.0.139.80:8080".parse().unwrap(), "v1", m.hits.clone()).await;
    let (status, body) = get(m.client, outside, None, &[]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(hits(&m, "v1"), 0);
    let allow_any = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: default}\nspec:\n  outboundTrafficPolicy: {mode: ALLOW_ANY}\n";
    m.sidecars[0].update(common::compile(
        &mesh(139, allow_any),
        "default",
        "productpage",
    ));
    let (status, body) = get(m.client, outside, None, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("v1 127.0.139.80:8080 /anything"), "{body}");
    // CONNECT passes through too.
    let mut tcp = TcpStream::connect(m.client).await.unwrap();
    tcp.write_all(b"CONNECT 127.0.139.80:8080 HTTP/1.1\r\nhost: 127.0.139.80:8080\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    tcp.write_all(b"GET /tunnel HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    assert!(String::from_utf8_lossy(&answer).ends_with("v1 x /tunnel"));
    // Registry hosts still follow their routes.
    assert_eq!(get(m.client, URL, None, &[]).await.0, StatusCode::OK);
    let (_, text) = get(
        SocketAddr::new(m.client.ip(), 15090),
        "/stats/prometheus",
        Some("x"),
        &[],
    )
    .await;
    assert!(
        text.contains("destination_service=\"PassthroughCluster\""),
        "{text}"
    );
}

/// A MESH_INTERNAL ServiceEntry whose endpoints are addresses, not
/// WorkloadEntries: `subjectAltNames` names the identity they prove, and a
/// proxy with another identity is refused at the handshake.
#[tokio::test]
async fn service_entry_subject_alt_names_name_the_endpoints_identity() {
    let entry = |name: &str, at: &str, san: &str| {
        format!(
            r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.example.internal]
  location: MESH_INTERNAL
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {at}}}]
  subjectAltNames: ["{san}"]
---
"#
        )
    };
    // reviews v1 and v2, by address; both run as reviews.
    let extra = entry(
        "right",
        "127.0.146.31, ports: {http: 9081}",
        "spiffe://cluster.local/ns/default/sa/reviews",
    ) + &entry(
        "wrong",
        "127.0.146.32, ports: {http: 9082}",
        "spiffe://cluster.local/ns/default/sa/ratings",
    );
    let m = start(146, &extra).await;
    let (status, body) = get(m.client, "http://right.example.internal:9080/x", None, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("v1 "), "{body}");
    let (status, body) = get(m.client, "http://wrong.example.internal:9080/x", None, &[]).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("ratings"), "{body}");
}

/// A response body cut short upstream is counted with Envoy's UC flag by
/// both proxies, and one the client walks away from with DC by its own; an
/// answer that does not parse is 502 UPE.
#[tokio::test]
async fn bodies_cut_short_are_labelled_uc_and_dc() {
    let m = start(149, "").await;
    let net = m.net;
    let _server = one_more_service(&m, "flaky", 35, ("http", 9095), (9095, "HTTP")).await;
    // /cut promises 100 bytes and closes after 10; /slow sends 10 bytes
    // and then waits; /reset closes without an answer; /garbled answers
    // with a status line that does not parse.
    let listener = TcpListener::bind(format!("127.0.{net}.35:9095"))
        .await
        .unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = tcp.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                if head.starts_with("GET /reset") {
                    return;
                }
                if head.starts_with("GET /garbled") {
                    let _ = tcp.write_all(b"HTTP/1.1 two hundred\r\n\r\n").await;
                    return;
                }
                let _ = tcp
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789")
                    .await;
                if head.starts_with("GET /slow") {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            });
        }
    });
    let counted_as = |ip, reporter, code, flag| counted(ip, reporter, "flaky", code, flag);
    let send = |path: &'static str| {
        send_via(
            m.client,
            format!("http://flaky.default.svc.cluster.local:9095{path}"),
        )
    };
    let resp = send("/cut").await;
    assert!(resp.into_body().collect().await.is_err(), "the body is cut");
    let flaky_ip: IpAddr = format!("127.0.{net}.35").parse().unwrap();
    assert!(counted_as(m.client.ip(), "source", "200", "UC").await);
    assert!(counted_as(flaky_ip, "destination", "200", "UC").await);
    // Closed before any answer: 503 UC at the proxy that saw it (Envoy's
    // "upstream connect error or disconnect/reset before headers").
    let resp = send("/reset").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(counted_as(flaky_ip, "destination", "503", "UC").await);
    // An answer that does not parse: 502 UPE.
    let resp = send("/garbled").await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    assert!(counted_as(flaky_ip, "destination", "502", "UPE").await);
    // The client reads the head and the first bytes, then goes away.
    let mut resp = send("/slow").await;
    let first = resp.body_mut().frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(resp);
    assert!(counted_as(m.client.ip(), "source", "200", "DC").await);
}

/// Whether the proxy at `ip` has counted a request to service `name`
/// (default namespace) with this reporter, response code and flag.
async fn counted(ip: IpAddr, reporter: &str, name: &str, code: &str, flag: &str) -> bool {
    let service = format!("{name}.default.svc.cluster.local");
    counted_with(
        ip,
        &[
            ("reporter", reporter),
            ("destination_service", &service),
            ("response_flags", flag),
            ("response_code", code),
        ],
    )
    .await
}

/// Whether the proxy at `ip` has an `istio_requests_total` series with
/// these label values; polled for up to 2 s.
async fn counted_with(ip: IpAddr, labels: &[(&str, &str)]) -> bool {
    for _ in 0..100 {
        let text = get_full(
            SocketAddr::new(ip, 15090),
            "/stats/prometheus",
            Some("x"),
            &[],
        )
        .await
        .2;
        if text.lines().any(|l| {
            l.starts_with("istio_requests_total{")
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        }) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// A GET of `url` through the outbound listener at `client`, over HTTP/1.1.
async fn send_via(client: SocketAddr, url: String) -> Response<hyper::body::Incoming> {
    let tcp = TcpStream::connect(client).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(url)
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    sender.send_request(req).await.unwrap()
}

/// An application that resets its HTTP/2 stream gets Envoy's UR, one whose
/// response head is over 60 KiB gets LR (weft's codec resets the stream).
#[tokio::test]
async fn upstream_stream_resets_get_ur_and_lr() {
    let m = start(154, "").await;
    let net = m.net;
    let _h2 = one_more_service(&m, "resetting", 36, ("http2", 9096), (9096, "HTTP2")).await;
    let h2_app = TcpListener::bind(format!("127.0.{net}.36:9096"))
        .await
        .unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = h2_app.accept().await.unwrap();
            tokio::spawn(async move {
                let Ok(mut conn) = h2::server::handshake(tcp).await else {
                    return;
                };
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    if req.uri().path() == "/reset" {
                        respond.send_reset(h2::Reason::INTERNAL_ERROR);
                        continue;
                    }
                    let mut resp = Response::builder().status(200);
                    for i in 0..80 {
                        resp = resp.header(format!("x-filler-{i}"), "f".repeat(1000));
                    }
                    let _ = respond.send_response(resp.body(()).unwrap(), true);
                }
            });
        }
    });
    let url = |name: &str, port: u16, path: &str| {
        format!("http://{name}.default.svc.cluster.local:{port}{path}")
    };
    let ip = |host: u8| -> IpAddr { format!("127.0.{net}.{host}").parse().unwrap() };
    let resp = send_via(m.client, url("resetting", 9096, "/reset")).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(counted(ip(36), "destination", "resetting", "503", "UR").await);
    let resp = send_via(m.client, url("resetting", 9096, "/big")).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(counted(ip(36), "destination", "resetting", "503", "LR").await);
}

/// Adds service `name` to the mesh of `m`: its workload at 127.0.net.`host`
/// with port `(name, number)`, its ServiceEntry port `(number, protocol)`
/// and its own sidecar; the client's sidecar learns of it. The sidecar is
/// returned to be kept alive.
async fn one_more_service(
    m: &Mesh,
    name: &str,
    host: u8,
    (port_name, port): (&str, u16),
    (service_port, protocol): (u16, &str),
) -> Sidecar {
    let net = m.net;
    let yaml = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: default}}
spec: {{address: 127.0.{net}.{host}, serviceAccount: {name}, labels: {{app: {name}}}, ports: {{{port_name}: {port}}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: {service_port}, name: {port_name}, protocol: {protocol}}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: {name}}}}}
"#
    );
    let all = mesh(net, "") + &yaml;
    let compiled = |workload: &str| common::compile(&all, "default", workload);
    m.sidecars[0].update(compiled("productpage"));
    Sidecar::start(
        compiled(name),
        store(&m.ca, name),
        policy(&m.ca),
        Ports::default(),
        None,
    )
    .await
    .unwrap()
}

/// A pooled connection the upstream closed while it sat idle is not used
/// again, even without retries: the next request opens a new one and
/// succeeds; one still open is reused.
#[tokio::test]
async fn idle_connections_the_upstream_closed_are_not_reused() {
    let net = 155;
    let external = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: closer, namespace: default}}
spec:
  hosts: [closer.example.com]
  location: MESH_EXTERNAL
  ports: [{{number: 9097, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.{net}.37}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: closer, namespace: default}}
spec:
  hosts: [closer.example.com]
  http: [{{route: [{{destination: {{host: closer.example.com}}}}], retries: {{attempts: 0}}}}]
"#
    );
    let m = start(net, &external).await;
    // Answers every request on a keep-alive connection and closes the
    // connection when it has been idle for 100 ms, without saying so.
    let listener = TcpListener::bind(format!("127.0.{net}.37:9097"))
        .await
        .unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                while let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(100), tcp.read(&mut buf)).await
                {
                    if n == 0 {
                        return;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if tcp.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let url = "http://closer.example.com:9097/";
    assert_eq!(get(m.client, url, None, &[]).await.0, StatusCode::OK);
    assert_eq!(get(m.client, url, None, &[]).await.0, StatusCode::OK);
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "reused while open");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(m.client, url, None, &[]).await.0, StatusCode::OK);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "closed while idle: a new connection"
    );
}

/// On a multi-threaded runtime, where wakes come from other threads while
/// a connection's task is running, every request of many keep-alive
/// connections at once is answered (a lost wake would leave one hanging).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_keep_alive_connections_on_a_multi_threaded_runtime() {
    let m = start(156, "").await;
    let mut clients = Vec::new();
    for _ in 0..16 {
        let proxy = m.client;
        clients.push(tokio::spawn(async move {
            let tcp = TcpStream::connect(proxy).await.unwrap();
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(conn);
            for _ in 0..25 {
                let req = Request::builder()
                    .uri(URL)
                    .body(http_body_util::Empty::<Bytes>::new())
                    .unwrap();
                let resp = sender.send_request(req).await.unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
                resp.into_body().collect().await.unwrap();
            }
        }));
    }
    tokio::time::timeout(Duration::from_secs(20), async {
        for c in clients {
            c.await.unwrap();
        }
    })
    .await
    .expect("every request answered");
    assert_eq!(hits(&m, "v1") + hits(&m, "v2"), 400);
}
