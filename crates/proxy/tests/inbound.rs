//! The inbound side of a sidecar: plaintext on 15006 only where
//! PeerAuthentication allows it, WebSocket upgrades and opaque TCP through
//! HBONE, each counted by the destination proxy.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Mesh, get, mesh, policy, start, store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::{Ports, Sidecar};

/// The labelled samples of `name` in the Prometheus text of `ip`'s proxy.
async fn metric(ip: IpAddr, name: &str) -> Vec<String> {
    let (_, text) = get(
        SocketAddr::new(ip, 15090),
        "/stats/prometheus",
        Some("x"),
        &[],
    )
    .await;
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .map(str::to_string)
        .collect()
}

/// Sends `request` on a fresh connection to `addr` and reads until the
/// peer closes (or two seconds pass).
async fn exchange(addr: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut buf)).await;
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn plaintext_reaches_only_ports_that_peer_authentication_leaves_open() {
    let m = start(
        115,
        r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews-v1-permissive, namespace: default}
spec:
  selector: {matchLabels: {version: v1}}
  mtls: {mode: PERMISSIVE}
"#,
    )
    .await;
    let request = "GET /plain HTTP/1.1\r\nHost: reviews\r\nConnection: close\r\n\r\n";
    // reviews-v1 is PERMISSIVE: plaintext reaches the app.
    let answer = exchange("127.0.115.31:15006".parse().unwrap(), request).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("v1 reviews /plain"), "{answer}");
    // reviews-v2 has no policy: weft is STRICT, the connection is closed
    // before anything reaches the app.
    let answer = exchange("127.0.115.32:15006".parse().unwrap(), request).await;
    assert_eq!(answer, "");
    assert_eq!(m.hits["v2"].load(Ordering::SeqCst), 0);
    // The plaintext request is counted as such.
    let v1: IpAddr = "127.0.115.31".parse().unwrap();
    let samples = metric(v1, "istio_requests_total").await;
    assert_eq!(samples.len(), 1, "{samples:?}");
    assert!(
        samples[0].contains("connection_security_policy=\"none\""),
        "{samples:?}"
    );
    assert!(samples[0].contains("source_principal=\"unknown\""));
    assert!(samples[0].contains("reporter=\"destination\""));
    // Through the mesh, both still answer over mTLS.
    for _ in 0..4 {
        let (status, _) = get(m.client, common::URL, None, &[]).await;
        assert_eq!(status, hyper::StatusCode::OK);
    }
    assert!(m.hits["v2"].load(Ordering::SeqCst) > 0);
}

/// A stand-in that upgrades to WebSocket and then echoes, or (for plain
/// TCP) echoes from the first byte.
async fn echo(addr: SocketAddr, upgrade: bool) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                if upgrade {
                    let mut head = Vec::new();
                    while !head.ends_with(b"\r\n\r\n") {
                        let n = tcp.read(&mut buf).await.unwrap();
                        if n == 0 {
                            return;
                        }
                        head.extend_from_slice(&buf[..n]);
                    }
                    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                    if !head.contains("upgrade: websocket") {
                        let _ = tcp
                            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                            .await;
                        return;
                    }
                    tcp.write_all(
                        b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
                    )
                    .await
                    .unwrap();
                }
                loop {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if tcp.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
}

const CHAT_AND_DB: &str = r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: chat, namespace: default}
spec: {address: 127.0.116.41, serviceAccount: chat, labels: {app: chat}, ports: {http-ws: 9090}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: chat, namespace: default}
spec:
  hosts: [chat.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9090, name: http-ws, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: chat}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: db, namespace: default}
spec: {address: 127.0.116.42, serviceAccount: db, labels: {app: db}, ports: {tcp-db: 9091}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: default}
spec:
  hosts: [db.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 9091, name: tcp-db, protocol: TCP}]
  resolution: STATIC
  workloadSelector: {labels: {app: db}}
"#;

/// The sidecars of chat and db beside the common mesh.
async fn chat_and_db(m: &Mesh) -> Vec<Sidecar> {
    chat_and_db_from(m, CHAT_AND_DB).await
}

/// The sidecars of chat and db, compiled from `extra` beside the mesh.
async fn chat_and_db_from(m: &Mesh, extra: &str) -> Vec<Sidecar> {
    let yaml = mesh(m.net, extra);
    let mut sidecars = Vec::new();
    for name in ["chat", "db"] {
        let config = common::compile(&yaml, "default", name);
        sidecars.push(
            Sidecar::start(
                config,
                store(&m.ca, name),
                policy(&m.ca),
                Ports::default(),
                None,
            )
            .await
            .unwrap(),
        );
    }
    sidecars
}

#[tokio::test]
async fn websocket_and_tcp_pass_through_hbone() {
    let m = start(116, CHAT_AND_DB).await;
    let _sidecars = chat_and_db(&m).await;
    echo("127.0.116.41:9090".parse().unwrap(), true).await;
    echo("127.0.116.42:9091".parse().unwrap(), false).await;

    // WebSocket: the upgrade crosses both proxies, then bytes flow.
    let (mut ws, head) = request_head(
        m.client,
        b"GET http://chat.default.svc.cluster.local:9090/ws HTTP/1.1\r\nhost: chat.default.svc.cluster.local:9090\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut buf = [0u8; 1024];
    for frame in ["ping", "pong and more"] {
        ws.write_all(frame.as_bytes()).await.unwrap();
        let n = ws.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], frame.as_bytes());
    }
    drop(ws);

    // Opaque TCP: CONNECT through the outbound listener, HBONE to db.
    let mut tcp = connect_to_db(m.client).await;
    tcp.write_all(b"hello").await.unwrap();
    let n = tcp.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"hello");
    drop(tcp);

    // db's proxy counted the connection as TCP with the source's identity
    // and workload; its bytes arrive once the connection has closed.
    let db: IpAddr = "127.0.116.42".parse().unwrap();
    let mut received = Vec::new();
    for _ in 0..50 {
        received = metric(db, "istio_tcp_received_bytes_total").await;
        if !received.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(received.len(), 1, "{received:?}");
    let line = &received[0];
    assert!(line.ends_with(" 5"), "{line}");
    for label in [
        "reporter=\"destination\"",
        "source_workload=\"productpage\"",
        "source_principal=\"spiffe://cluster.local/ns/default/sa/productpage\"",
        "destination_workload=\"db\"",
        "destination_service=\"db.default.svc.cluster.local\"",
        "request_protocol=\"tcp\"",
        "connection_security_policy=\"mutual_tls\"",
    ] {
        assert!(line.contains(label), "{label} missing in {line}");
    }

    // More than the HTTP/2 windows hold (2 MiB a stream, 5 MiB a
    // connection) each way, then a half close: every byte comes back in
    // order, then the end of the stream.
    let tcp = connect_to_db(m.client).await;
    let (mut rx, mut tx) = tcp.into_split();
    let sent: Vec<u8> = (0..12u32 << 20).map(|i| (i % 251) as u8).collect();
    let writer = {
        let sent = sent.clone();
        tokio::spawn(async move {
            tx.write_all(&sent).await.unwrap();
            tx.shutdown().await.unwrap();
            tx
        })
    };
    let mut back = Vec::with_capacity(sent.len());
    tokio::time::timeout(Duration::from_secs(30), rx.read_to_end(&mut back))
        .await
        .expect("the echo ends after the half close")
        .unwrap();
    assert_eq!(back.len(), sent.len());
    assert!(back == sent, "bytes came back changed or out of order");
    drop(writer.await.unwrap());
}

/// A stream to db's TCP port, opened with CONNECT through the outbound
/// listener at `client`.
async fn connect_to_db(client: SocketAddr) -> TcpStream {
    let (tcp, head) = request_head(
        client,
        b"CONNECT db.default.svc.cluster.local:9091 HTTP/1.1\r\nhost: db.default.svc.cluster.local:9091\r\n\r\n",
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tcp
}

/// Sends `request` to `client` and reads the response head, a byte at a
/// time so that nothing after it is taken: the stream and the head.
async fn request_head(client: SocketAddr, request: &[u8]) -> (TcpStream, String) {
    let mut tcp = TcpStream::connect(client).await.unwrap();
    tcp.write_all(request).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tcp.read(&mut byte).await.unwrap();
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&head));
        head.extend_from_slice(&byte[..n]);
    }
    (tcp, String::from_utf8_lossy(&head).into_owned())
}

/// Authorization on the destination's proxy, after normalization.
#[tokio::test]
async fn authorization_policies_decide_at_the_destination() {
    let net = 124;
    let policies = format!(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: allow-nothing, namespace: default}}
spec: {{}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: reviews-readers, namespace: default}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  rules:
  - from: [{{source: {{principals: ["cluster.local/ns/default/sa/productpage"]}}}}]
    to: [{{operation: {{methods: [GET], paths: ["/books*", "/admin*"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: no-admin, namespace: default}}
spec:
  action: DENY
  rules:
  - to: [{{operation: {{paths: ["/admin*"]}}}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: db-from-ratings, namespace: default}}
spec:
  selector: {{matchLabels: {{app: db}}}}
  rules:
  - from: [{{source: {{principals: ["cluster.local/ns/default/sa/ratings"]}}}}]
---
{}"#,
        CHAT_AND_DB.replace("127.0.116.", &format!("127.0.{net}."))
    );
    let m = start(net, &policies).await;
    let _sidecars = chat_and_db_from(&m, &policies).await;
    echo(format!("127.0.{net}.42:9091").parse().unwrap(), false).await;
    let url = |path: &str| format!("http://reviews.default.svc.cluster.local:9080{path}");
    let (status, body) = get(m.client, &url("/books/1"), None, &[]).await;
    assert_eq!(status, hyper::StatusCode::OK, "{body}");
    let (status, _, _) = common::request(m.client, "POST", &url("/books/1"), None, &[]).await;
    assert_eq!(status, hyper::StatusCode::FORBIDDEN, "only GET is allowed");
    let before = m.hits["v1"].load(Ordering::SeqCst) + m.hits["v2"].load(Ordering::SeqCst);
    // The DENY wins over the ALLOW, also for paths that only reach /admin
    // after normalization.
    for path in [
        "/admin",
        "/books/../admin",
        "/books/%2e%2e/admin",
        "/books\\..\\admin",
    ] {
        let (status, body) = get(m.client, &url(path), None, &[]).await;
        assert_eq!(status, hyper::StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body, "RBAC: access denied");
    }
    let after = m.hits["v1"].load(Ordering::SeqCst) + m.hits["v2"].load(Ordering::SeqCst);
    assert_eq!(before, after, "denied requests never reach the app");
    // The app receives the normalized path.
    let (_, body) = get(m.client, &url("/books/x/../2"), None, &[]).await;
    assert!(body.ends_with(" /books/2"), "{body}");
    // The same decisions for an app that speaks HTTP/2 to its sidecar.
    let mut h2 = common::h2(m.client).await;
    for (method, path, expect) in [
        ("GET", "/books/1", 200),
        ("POST", "/books/1", 403),
        ("GET", "/admin", 403),
        ("GET", "/books/%2e%2e/admin", 403),
    ] {
        let (status, body) = common::h2_request(&mut h2, method, &url(path), &[]).await;
        assert_eq!(status.as_u16(), expect, "HTTP/2 {method} {path}: {body}");
    }

    // TCP: db admits only ratings, and the namespace-wide DENY on paths
    // loses its HTTP field against TCP and so denies every connection, as
    // Istio documents: productpage's tunnel is refused.
    let mut tcp = TcpStream::connect(m.client).await.unwrap();
    tcp.write_all(b"CONNECT db.default.svc.cluster.local:9091 HTTP/1.1\r\nhost: db.default.svc.cluster.local:9091\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tcp.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    // Both refusals are counted with the policy that decided.
    let db: IpAddr = format!("127.0.{net}.42").parse().unwrap();
    let denied = metric(db, "weft_authorization_denials_total").await;
    assert!(
        denied
            .iter()
            .any(|l| l.contains("request_protocol=\"tcp\"") && l.contains("default/no-admin")),
        "{denied:?}"
    );
    let mut denied = Vec::new();
    for host in [31, 32] {
        let reviews: IpAddr = format!("127.0.{net}.{host}").parse().unwrap();
        denied.extend(metric(reviews, "weft_authorization_denials_total").await);
    }
    assert!(
        denied
            .iter()
            .any(|l| l.contains("policy=\"default/no-admin\"")),
        "{denied:?}"
    );
}

/// Malformed requests get 400 at the first proxy and never reach an app.
#[tokio::test]
async fn malformed_requests_get_400_and_reach_no_app() {
    let m = start(128, "").await;
    let host = "reviews.default.svc.cluster.local:9080";
    for (what, request) in [
        (
            "two Content-Lengths",
            format!(
                "POST /x HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"
            ),
        ),
        (
            "two equal Content-Lengths",
            format!(
                "POST /x HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc"
            ),
        ),
        (
            "Content-Length with Transfer-Encoding",
            format!(
                "POST /x HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
        ),
        (
            "Transfer-Encoding with Content-Length, behind a clean request",
            format!(
                "GET /ok HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\n\r\nhiPOST /x HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"
            ),
        ),
        (
            "two Host headers",
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nHost: admin.example\r\n\r\n"),
        ),
        (
            "a NUL in the path",
            format!("GET /a%00b HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        ),
        (
            "a bad header name",
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nBad Header: x\r\n\r\n"),
        ),
        (
            "an obs-fold header",
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-A: one\r\n two\r\n\r\n"),
        ),
    ] {
        let before = m.hits["v1"].load(Ordering::SeqCst) + m.hits["v2"].load(Ordering::SeqCst);
        let answer = exchange(m.client, &request).await;
        let after = m.hits["v1"].load(Ordering::SeqCst) + m.hits["v2"].load(Ordering::SeqCst);
        if what.contains("behind a clean request") {
            // The first request is served; the second is refused.
            assert!(answer.starts_with("HTTP/1.1 200"), "{what}: {answer:?}");
            assert!(answer.contains("HTTP/1.1 400"), "{what}: {answer:?}");
            assert_eq!(after - before, 1, "{what}");
        } else {
            assert!(answer.starts_with("HTTP/1.1 400"), "{what}: {answer:?}");
            assert_eq!(after, before, "{what}");
        }
    }
}

/// An HTTP app that counts the connections it accepts.
async fn counting_app(addr: SocketAddr) -> Arc<AtomicUsize> {
    let accepted = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind(addr).await.unwrap();
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, hyper::Error>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"ok"),
                    )))
                });
                // HTTP/1.1, or HTTP/2 with prior knowledge.
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .await;
            });
        }
    });
    accepted
}

/// `maxRequestsPerConnection: 1` turns connection reuse off; without it
/// requests share one pooled connection.
#[tokio::test]
async fn max_requests_per_connection_one_reuses_nothing() {
    let net = 136;
    let chat = CHAT_AND_DB.replace("127.0.116.", &format!("127.0.{net}."));
    let no_reuse = format!(
        "{chat}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: chat, namespace: default}}\nspec:\n  host: chat.default.svc.cluster.local\n  trafficPolicy: {{connectionPool: {{http: {{maxRequestsPerConnection: 1}}}}}}\n"
    );
    let m = start(net, &chat).await;
    let _sidecars = chat_and_db_from(&m, &chat).await;
    let accepted = counting_app(format!("127.0.{net}.41:9090").parse().unwrap()).await;
    let url = "http://chat.default.svc.cluster.local:9090/";
    for _ in 0..5 {
        assert_eq!(get(m.client, url, None, &[]).await.0, hyper::StatusCode::OK);
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "one pooled connection");
    m.sidecars[0].update(common::compile(
        &mesh(net, &no_reuse),
        "default",
        "productpage",
    ));
    for _ in 0..5 {
        assert_eq!(get(m.client, url, None, &[]).await.0, hyper::StatusCode::OK);
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        6,
        "a connection per request"
    );
}

/// `maxRequestsPerConnection: N` retires a pooled connection after N
/// requests, to HTTP/1.1 and to HTTP/2 upstreams.
#[tokio::test]
async fn max_requests_per_connection_retires_connections_after_n() {
    for (net, protocol, limit, expected) in [(150, "HTTP", 2, 4), (151, "HTTP2", 3, 3)] {
        let chat = CHAT_AND_DB
            .replace("127.0.116.", &format!("127.0.{net}."))
            .replace(
                "name: http-ws, protocol: HTTP}",
                &format!("name: http-ws, protocol: {protocol}}}"),
            );
        let limited = format!(
            "{chat}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: chat, namespace: default}}\nspec:\n  host: chat.default.svc.cluster.local\n  trafficPolicy: {{connectionPool: {{http: {{maxRequestsPerConnection: {limit}}}}}}}\n"
        );
        let m = start(net, &limited).await;
        let _sidecars = chat_and_db_from(&m, &limited).await;
        let accepted = counting_app(format!("127.0.{net}.41:9090").parse().unwrap()).await;
        let url = "http://chat.default.svc.cluster.local:9090/";
        for _ in 0..7 {
            assert_eq!(get(m.client, url, None, &[]).await.0, hyper::StatusCode::OK);
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            expected,
            "{protocol}: 7 requests, {limit} per connection"
        );
    }
}

/// `idleTimeout` closes a pooled connection left unused that long, to
/// HTTP/1.1 and to HTTP/2 upstreams; one in use is kept.
#[tokio::test]
async fn idle_timeout_retires_unused_connections() {
    for (net, protocol) in [(152, "HTTP"), (153, "HTTP2")] {
        let chat = CHAT_AND_DB
            .replace("127.0.116.", &format!("127.0.{net}."))
            .replace(
                "name: http-ws, protocol: HTTP}",
                &format!("name: http-ws, protocol: {protocol}}}"),
            );
        let idle = format!(
            "{chat}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: chat, namespace: default}}\nspec:\n  host: chat.default.svc.cluster.local\n  trafficPolicy: {{connectionPool: {{http: {{idleTimeout: 300ms}}}}}}\n"
        );
        let m = start(net, &idle).await;
        let _sidecars = chat_and_db_from(&m, &idle).await;
        let accepted = counting_app(format!("127.0.{net}.41:9090").parse().unwrap()).await;
        let url = "http://chat.default.svc.cluster.local:9090/";
        for _ in 0..3 {
            assert_eq!(get(m.client, url, None, &[]).await.0, hyper::StatusCode::OK);
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "{protocol}: in use, kept"
        );
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        assert_eq!(get(m.client, url, None, &[]).await.0, hyper::StatusCode::OK);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            2,
            "{protocol}: idle past the timeout, a new connection"
        );
    }
}
