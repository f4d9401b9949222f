//! AuthorizationPolicy field by field, through real proxies: each row of
//! the table is a policy on namespace foo and the requests that must pass
//! or be refused, sent over HTTP/1.1 and HTTP/2 to httpbin and as TCP to
//! tcp-echo, by foo/sleep and bar/other through their sidecars (mTLS over
//! HBONE) and by a plaintext client on the workloads' 15006 (foo is
//! PERMISSIVE). JWT fields (requestPrincipals, request.auth.*) are driven
//! by the JWT and authentication-task tests.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{compile, policy, store_in};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use weft_proxy::{Ports, Sidecar};

const NET: u8 = 148;

fn mesh(policy: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: sleep, namespace: foo}}
spec: {{address: 127.0.{NET}.21, serviceAccount: sleep, labels: {{app: sleep}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: other, namespace: bar}}
spec: {{address: 127.0.{NET}.22, serviceAccount: other, labels: {{app: other}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: httpbin, namespace: foo}}
spec: {{address: 127.0.{NET}.31, serviceAccount: httpbin, labels: {{app: httpbin}}, ports: {{http: 8000}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: httpbin, namespace: foo}}
spec:
  hosts: [httpbin.foo.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 8000, name: http, protocol: HTTP}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: httpbin}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: tcp-echo, namespace: foo}}
spec: {{address: 127.0.{NET}.41, serviceAccount: tcp-echo, labels: {{app: tcp-echo}}, ports: {{tcp: 9000}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: tcp-echo, namespace: foo}}
spec:
  hosts: [tcp-echo.foo.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 9000, name: tcp, protocol: TCP}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: tcp-echo}}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: default, namespace: foo}}
spec: {{mtls: {{mode: PERMISSIVE}}}}
---
{policy}
"#
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// foo/sleep, through its sidecar.
    Sleep,
    /// bar/other, through its sidecar.
    Other,
    /// A plaintext client at 127.0.NET.50, straight to 15006.
    Plain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    H1,
    H2,
    Tcp,
}

/// One request of a row: who, how, what, and whether it must pass.
struct Case {
    caller: Caller,
    proto: Proto,
    method: &'static str,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    allowed: bool,
}

use Caller::{Other, Plain, Sleep};
use Proto::{H1, H2, Tcp};

/// Shorthands: `ok(who, proto)` must pass a GET /get, `no` must not.
fn ok(caller: Caller, proto: Proto) -> Case {
    Case {
        caller,
        proto,
        method: "GET",
        path: "/get",
        headers: &[],
        allowed: true,
    }
}

fn no(caller: Caller, proto: Proto) -> Case {
    Case {
        allowed: false,
        ..ok(caller, proto)
    }
}

impl Case {
    fn at(self, method: &'static str, path: &'static str) -> Case {
        Case {
            method,
            path,
            ..self
        }
    }

    fn with(self, headers: &'static [(&'static str, &'static str)]) -> Case {
        Case { headers, ..self }
    }
}

/// Every caller over HTTP/1.1 and HTTP/2 (plaintext: HTTP/1.1).
fn http_all(allowed: [bool; 3]) -> Vec<Case> {
    let mut out = Vec::new();
    for (caller, allowed) in [Sleep, Other, Plain].into_iter().zip(allowed) {
        for proto in [H1, H2] {
            if caller == Plain && proto == H2 {
                continue;
            }
            out.push(Case {
                allowed,
                ..ok(caller, proto)
            });
        }
    }
    out
}

/// Every caller over TCP.
fn tcp_all(allowed: [bool; 3]) -> Vec<Case> {
    [Sleep, Other, Plain]
        .into_iter()
        .zip(allowed)
        .map(|(caller, allowed)| Case {
            allowed,
            ..ok(caller, Tcp)
        })
        .collect()
}

/// Both: the same verdicts over HTTP and TCP (fields TCP carries).
fn both(allowed: [bool; 3]) -> Vec<Case> {
    let mut v = http_all(allowed);
    v.extend(tcp_all(allowed));
    v
}

fn rows() -> Vec<(&'static str, &'static str, Vec<Case>)> {
    let src = |s: &str| format!("{{rules: [{{from: [{{source: {{{s}}}}}]}}]}}");
    let to = |s: &str| format!("{{rules: [{{to: [{{operation: {{{s}}}}}]}}]}}");
    let when = |s: &str| format!("{{rules: [{{when: [{s}]}}]}}");
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let mut hosts_other = http_all([false; 3]);
    hosts_other.extend(tcp_all([false; 3]));
    vec![
        ("no policy allows all", "", both([true; 3])),
        ("spec {} allows nothing", "{}", both([false; 3])),
        (
            "principals, exact",
            leak(src(r#"principals: ["cluster.local/ns/foo/sa/sleep"]"#)),
            both([true, false, false]),
        ),
        (
            "principals, prefix",
            leak(src(r#"principals: ["cluster.local/ns/bar/*"]"#)),
            both([false, true, false]),
        ),
        (
            "principals, suffix",
            leak(src(r#"principals: ["*/sa/other"]"#)),
            both([false, true, false]),
        ),
        (
            "principals, any: every mesh caller, no plaintext",
            leak(src(r#"principals: ["*"]"#)),
            both([true, true, false]),
        ),
        (
            "notPrincipals: plaintext has no principal to exclude",
            leak(src(r#"notPrincipals: ["cluster.local/ns/foo/sa/sleep"]"#)),
            both([false, true, true]),
        ),
        (
            "namespaces",
            leak(src("namespaces: [bar]")),
            both([false, true, false]),
        ),
        (
            "DENY notNamespaces catches plaintext",
            "{action: DENY, rules: [{from: [{source: {notNamespaces: [foo]}}]}]}",
            both([true, false, false]),
        ),
        (
            "serviceAccounts",
            leak(src(r#"serviceAccounts: ["foo/sleep"]"#)),
            both([true, false, false]),
        ),
        (
            "notServiceAccounts",
            leak(src(r#"notServiceAccounts: ["foo/sleep"]"#)),
            both([false, true, true]),
        ),
        (
            "ipBlocks: the caller's own address",
            leak(src(&format!(r#"ipBlocks: ["127.0.{NET}.21"]"#))),
            both([true, false, false]),
        ),
        (
            "ipBlocks, CIDR, and notIpBlocks",
            leak(src(&format!(
                r#"ipBlocks: ["127.0.{NET}.0/24"], notIpBlocks: ["127.0.{NET}.22/32"]"#
            ))),
            both([true, false, true]),
        ),
        (
            "remoteIpBlocks: without trusted proxies, the peer",
            leak(src(&format!(r#"remoteIpBlocks: ["127.0.{NET}.50"]"#))),
            both([false, false, true]),
        ),
        (
            "notRemoteIpBlocks",
            leak(src(&format!(r#"notRemoteIpBlocks: ["127.0.{NET}.50"]"#))),
            both([true, true, false]),
        ),
        (
            "hosts, any case; an ALLOW on an HTTP field never matches TCP",
            leak(to(r#"hosts: ["HTTPBIN.foo.svc.cluster.local"]"#)),
            {
                let mut v = http_all([true; 3]);
                v.extend(tcp_all([false; 3]));
                v
            },
        ),
        (
            "hosts, suffix: of the whole authority, port included",
            leak(to(r#"hosts: ["*.FOO.svc.cluster.local:8000"]"#)),
            http_all([true; 3]),
        ),
        (
            "hosts, suffix without the port: no match, as in Istio",
            leak(to(r#"hosts: ["*.foo.svc.cluster.local"]"#)),
            http_all([false; 3]),
        ),
        (
            "hosts of another service",
            leak(to(r#"hosts: ["ratings.foo.svc.cluster.local"]"#)),
            hosts_other,
        ),
        (
            "notHosts",
            leak(to(r#"notHosts: ["httpbin.foo.svc.cluster.local:8000"]"#)),
            http_all([false; 3]),
        ),
        ("ports apply to TCP too", leak(to(r#"ports: ["9000"]"#)), {
            let mut v = http_all([false; 3]);
            v.extend(tcp_all([true; 3]));
            v
        }),
        ("notPorts", leak(to(r#"notPorts: ["9000"]"#)), {
            let mut v = http_all([true; 3]);
            v.extend(tcp_all([false; 3]));
            v
        }),
        (
            "methods",
            leak(to("methods: [GET]")),
            vec![
                ok(Sleep, H1),
                ok(Sleep, H2),
                ok(Plain, H1),
                no(Sleep, H1).at("POST", "/post"),
                no(Sleep, H2).at("POST", "/post"),
                no(Sleep, Tcp),
            ],
        ),
        (
            "DENY methods: the HTTP field is dropped for TCP, which is denied",
            "{action: DENY, rules: [{to: [{operation: {methods: [POST]}}]}]}",
            vec![
                ok(Sleep, H1),
                ok(Other, H2),
                no(Sleep, H1).at("POST", "/post"),
                no(Plain, H1).at("POST", "/post"),
                no(Sleep, H2).at("POST", "/post"),
                no(Sleep, Tcp),
                no(Plain, Tcp),
            ],
        ),
        (
            "notMethods",
            leak(to("notMethods: [POST]")),
            vec![
                ok(Sleep, H1),
                no(Sleep, H1).at("POST", "/post"),
                no(Other, H2).at("POST", "/post"),
            ],
        ),
        (
            "paths: exact, prefix, suffix, templates",
            leak(to(
                r#"paths: ["/status/200", "/headers/*", "*.json", "/api/{*}/items", "/files/{**}"]"#,
            )),
            vec![
                ok(Sleep, H1).at("GET", "/status/200"),
                no(Sleep, H1).at("GET", "/status/2000"),
                ok(Sleep, H2).at("GET", "/headers/x/y"),
                ok(Other, H1).at("GET", "/data/a.json"),
                ok(Plain, H1).at("GET", "/api/v1/items"),
                no(Plain, H1).at("GET", "/api/v1/v2/items"),
                ok(Sleep, H2).at("GET", "/files/a/b/c"),
                no(Sleep, H1).at("GET", "/admin"),
                // The query is not part of the path.
                ok(Sleep, H1).at("GET", "/status/200?x=/admin"),
                // Normalized before the match: dot segments and %2F-free.
                ok(Sleep, H1).at("GET", "/admin/../status/200"),
                no(Sleep, Tcp),
            ],
        ),
        (
            "DENY notPaths",
            "{action: DENY, rules: [{to: [{operation: {notPaths: [\"/public/*\"]}}]}]}",
            vec![
                ok(Sleep, H1).at("GET", "/public/a"),
                no(Sleep, H2).at("GET", "/private"),
                no(Plain, H1).at("GET", "/public/../private"),
            ],
        ),
        (
            "when request.headers: values and notValues, value by value",
            r#"{rules: [{when: [{key: "request.headers[x-token]", values: ["abc*"], notValues: ["abc-revoked"]}]}]}"#,
            vec![
                ok(Sleep, H1).with(&[("x-token", "abc1")]),
                ok(Sleep, H2).with(&[("x-token", "abc1")]),
                ok(Plain, H1).with(&[("x-token", "nope"), ("x-token", "abc2")]),
                no(Sleep, H1).with(&[("x-token", "abc1"), ("x-token", "abc-revoked")]),
                no(Other, H2).with(&[("x-token", "nope")]),
                no(Sleep, H1),
                no(Sleep, Tcp),
            ],
        ),
        (
            "when source.ip",
            leak(when(&format!(
                r#"{{key: source.ip, values: ["127.0.{NET}.22"]}}"#
            ))),
            both([false, true, false]),
        ),
        (
            "when remote.ip, notValues",
            leak(when(&format!(
                r#"{{key: remote.ip, notValues: ["127.0.{NET}.50"]}}"#
            ))),
            both([true, true, false]),
        ),
        (
            "when source.namespace",
            leak(when("{key: source.namespace, values: [foo]}")),
            both([true, false, false]),
        ),
        (
            "when source.principal",
            leak(when(
                r#"{key: source.principal, values: ["cluster.local/ns/bar/sa/other"]}"#,
            )),
            both([false, true, false]),
        ),
        (
            "when destination.ip",
            leak(when(&format!(
                r#"{{key: destination.ip, values: ["127.0.{NET}.41"]}}"#
            ))),
            {
                let mut v = http_all([false; 3]);
                v.extend(tcp_all([true; 3]));
                v
            },
        ),
        (
            "when destination.port",
            leak(when(r#"{key: destination.port, values: ["8000"]}"#)),
            {
                let mut v = http_all([true; 3]);
                v.extend(tcp_all([false; 3]));
                v
            },
        ),
        (
            "a when key weft cannot evaluate fails closed",
            r#"{rules: [{when: [{key: "experimental.envoy.filters.network.mysql_proxy[db.table]", values: [x]}]}]}"#,
            both([false; 3]),
        ),
        (
            "dry-run policies are not enforced",
            "DRY-RUN",
            both([true; 3]),
        ),
    ]
}

/// The policy text of a row: `spec` as AuthorizationPolicy foo/p.
fn policy_yaml(spec: &str) -> String {
    match spec {
        "" => String::new(),
        "DRY-RUN" => "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  namespace: foo\n  annotations: {istio.io/dry-run: \"true\"}\nspec: {}\n".into(),
        spec => format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: foo}}\nspec: {spec}\n"
        ),
    }
}

fn ip(host: u8) -> IpAddr {
    format!("127.0.{NET}.{host}").parse().unwrap()
}

/// A stand-in httpbin: 200 to every request.
async fn httpbin(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, hyper::Error>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from_static(b"ok"),
                    )))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                .await;
            });
        }
    });
}

async fn echo(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
}

/// A TCP connection from the plaintext client's address.
async fn plain_connect(to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip(50), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Whether `ping` comes back through `tcp`.
async fn echoes(mut tcp: TcpStream) -> bool {
    if tcp.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), tcp.read_exact(&mut buf)).await,
        Ok(Ok(_)) if &buf == b"ping"
    )
}

/// Sends one case; whether it passed (2xx over HTTP, an echo over TCP).
async fn send(case: &Case) -> bool {
    let url = format!("http://httpbin.foo.svc.cluster.local:8000{}", case.path);
    let proxy = match case.caller {
        Sleep => SocketAddr::new(ip(21), 15001),
        Other => SocketAddr::new(ip(22), 15001),
        Plain => SocketAddr::new(ip(31), 15006),
    };
    match (case.caller, case.proto) {
        (Plain, Tcp) => echoes(plain_connect(SocketAddr::new(ip(41), 15006)).await).await,
        (_, Tcp) => {
            let mut tcp = TcpStream::connect(proxy).await.unwrap();
            let authority = "tcp-echo.foo.svc.cluster.local:9000";
            tcp.write_all(
                format!("CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut buf = vec![0u8; 1024];
            let n = tcp.read(&mut buf).await.unwrap_or(0);
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200") && echoes(tcp).await
        }
        (Plain, _) => {
            let tcp = plain_connect(proxy).await;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            let mut req = hyper::Request::builder()
                .method(case.method)
                .uri(case.path)
                .header("host", "httpbin.foo.svc.cluster.local:8000");
            for (k, v) in case.headers {
                req = req.header(*k, *v);
            }
            let resp = sender
                .send_request(
                    req.body(http_body_util::Empty::<bytes::Bytes>::new())
                        .unwrap(),
                )
                .await
                .unwrap();
            resp.status().is_success()
        }
        (_, H1) => common::request(proxy, case.method, &url, None, case.headers)
            .await
            .0
            .is_success(),
        (_, H2) => {
            let mut sender = common::h2(proxy).await;
            common::h2_request(&mut sender, case.method, &url, case.headers)
                .await
                .0
                .is_success()
        }
    }
}

#[tokio::test]
async fn every_field_form_through_real_proxies_over_http1_http2_and_tcp() {
    let ca = common::test_ca("authz-table");
    let mut sidecars = Vec::new();
    for (ns, name) in [
        ("foo", "sleep"),
        ("bar", "other"),
        ("foo", "httpbin"),
        ("foo", "tcp-echo"),
    ] {
        let sidecar = Sidecar::start(
            compile(&mesh(""), ns, name),
            store_in(&ca, ns, name),
            policy(&ca),
            Ports::default(),
            None,
        )
        .await
        .unwrap();
        sidecars.push((ns, name, sidecar));
    }
    httpbin(SocketAddr::new(ip(31), 8000)).await;
    echo(SocketAddr::new(ip(41), 9000)).await;
    let mut failures = Vec::new();
    let mut sent = 0;
    for (row, spec, cases) in rows() {
        let yaml = mesh(&policy_yaml(spec));
        for (ns, name, sidecar) in &sidecars {
            sidecar.update(compile(&yaml, ns, name));
        }
        for case in &cases {
            sent += 1;
            let passed = send(case).await;
            if passed != case.allowed {
                failures.push(format!(
                    "{row}: {:?} {:?} {} {} {:?}: {} (expected {})",
                    case.caller,
                    case.proto,
                    case.method,
                    case.path,
                    case.headers,
                    if passed { "passed" } else { "refused" },
                    if case.allowed { "to pass" } else { "a refusal" },
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(sent > 150, "{sent} requests");

    // A host written as an absolute name (`name.`) is the same host: a
    // DENY on it holds, at the destination and through the source.
    let yaml = mesh(&policy_yaml(
        r#"{action: DENY, rules: [{to: [{operation: {hosts: ["httpbin.foo.svc.cluster.local"]}}]}]}"#,
    ));
    for (ns, name, sidecar) in &sidecars {
        sidecar.update(compile(&yaml, ns, name));
    }
    let dotted = "httpbin.foo.svc.cluster.local.:8000";
    let tcp = plain_connect(SocketAddr::new(ip(31), 15006)).await;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::builder()
        .uri("/get")
        .header("host", dotted)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), hyper::StatusCode::FORBIDDEN);
    let (status, _, _) = common::request(
        SocketAddr::new(ip(21), 15001),
        "GET",
        &format!("http://{dotted}/get"),
        None,
        &[],
    )
    .await;
    assert_eq!(status, hyper::StatusCode::FORBIDDEN);
    // An absolute URI names the target; a Host header claiming another
    // host does not get the request past the DENY.
    for target in [
        "http://httpbin.foo.svc.cluster.local:8000/get",
        // Userinfo is no part of the host.
        "http://user@httpbin.foo.svc.cluster.local:8000/get",
    ] {
        let mut tcp = plain_connect(SocketAddr::new(ip(31), 15006)).await;
        tcp.write_all(
            format!("GET {target} HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut answer)).await;
        assert!(
            answer.starts_with(b"HTTP/1.1 403"),
            "{target}: {}",
            String::from_utf8_lossy(&answer)
        );
    }
}
