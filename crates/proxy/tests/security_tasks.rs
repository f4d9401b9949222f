//! Istio's authorization tasks, with their own policy files from
//! `../shared/corpus/docs-examples/tasks/security/authorization/`, applied
//! step by step as the pages apply them and checked with the pages' own
//! requests through real sidecars: sleep calls httpbin and tcp-echo in
//! namespace foo.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use common::{policy, request, store_in};
use http_body_util::Full;
use hyper::{Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::{Ports, Sidecar};

const TASKS: &str = "../../../shared/corpus/docs-examples/tasks/security/authorization";

fn mesh(net: u8) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: sleep, namespace: foo}}
spec: {{address: 127.0.{net}.21, serviceAccount: sleep, labels: {{app: sleep}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: httpbin, namespace: foo}}
spec: {{address: 127.0.{net}.31, serviceAccount: httpbin, labels: {{app: httpbin}}, ports: {{http: 8000}}}}
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
spec: {{address: 127.0.{net}.41, serviceAccount: tcp-echo, labels: {{app: tcp-echo}}, ports: {{tcp-a: 9000, tcp-b: 9001, tcp-c: 9002}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: tcp-echo, namespace: foo}}
spec:
  hosts: [tcp-echo.foo.svc.cluster.local]
  location: MESH_INTERNAL
  ports:
  - {{number: 9000, name: tcp-a, protocol: TCP}}
  - {{number: 9001, name: tcp-b, protocol: TCP}}
  - {{number: 9002, name: tcp-c, protocol: TCP}}
  resolution: STATIC
  workloadSelector: {{labels: {{app: tcp-echo}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ext-authz, namespace: foo}}
spec: {{address: 127.0.{net}.51, serviceAccount: ext-authz, labels: {{app: ext-authz}}, ports: {{http: 8000, grpc: 9000}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: ext-authz, namespace: foo}}
spec:
  hosts: [ext-authz.foo.svc.cluster.local]
  location: MESH_INTERNAL
  ports:
  - {{number: 8000, name: http, protocol: HTTP}}
  - {{number: 9000, name: grpc, protocol: GRPC}}
  resolution: STATIC
  workloadSelector: {{labels: {{app: ext-authz}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ingressgateway, namespace: istio-system}}
spec: {{address: 127.0.{net}.10, serviceAccount: ingressgateway, labels: {{istio: ingressgateway}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: httpbin-gateway, namespace: foo}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: ["*"]
"#
    )
}

/// The three sidecars, and the policies applied so far by name.
struct Task {
    net: u8,
    sidecars: BTreeMap<&'static str, Sidecar>,
    policies: BTreeMap<String, String>,
    mesh: weft_model::Mesh,
    ca: std::sync::Arc<weft_identity::Ca>,
}

impl Task {
    async fn start(net: u8) -> Task {
        let ca = common::test_ca(&format!("tasks-{net}"));
        let mut task = Task {
            net,
            sidecars: BTreeMap::new(),
            policies: BTreeMap::new(),
            mesh: weft_model::Mesh::new("cluster.local"),
            ca: ca.clone(),
        };
        for name in ["sleep", "httpbin", "tcp-echo", "ext-authz"] {
            let sidecar = Sidecar::start(
                task.compile(name),
                store_in(&ca, "foo", name),
                policy(&ca),
                Ports::default(),
                None,
            )
            .await
            .unwrap();
            task.sidecars.insert(name, sidecar);
        }
        httpbin(format!("127.0.{net}.31:8000").parse().unwrap()).await;
        for port in [9000, 9001, 9002] {
            echo(format!("127.0.{net}.41:{port}").parse().unwrap()).await;
        }
        ext_authz(format!("127.0.{net}.51:8000").parse().unwrap()).await;
        ext_authz_grpc(format!("127.0.{net}.51:9000").parse().unwrap());
        task
    }

    fn compile(&self, name: &str) -> weft_model::ProxyConfig {
        self.compile_in("foo", name)
    }

    fn compile_in(&self, ns: &str, name: &str) -> weft_model::ProxyConfig {
        let mut yaml = mesh(self.net);
        for text in self.policies.values() {
            yaml.push_str("\n---\n");
            yaml.push_str(text);
        }
        common::compile_with(&yaml, ns, name, &self.mesh)
    }

    /// Applies a task file, replacing the policy of the same name, as
    /// `kubectl apply` does.
    fn apply(&mut self, file: &str) {
        self.apply_in(file, None);
    }

    /// Applies a file from the authentication tasks, its JWKS link (a
    /// Hugo placeholder on the page) pointing at `jwks`.
    fn apply_authn(&mut self, file: &str, jwks: &str) {
        let path = format!(
            "{}/../../../shared/corpus/docs-examples/tasks/security/authentication/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("{{< github_file >}}", jwks);
        self.policies.insert(file.to_string(), text);
        self.update();
    }

    fn update(&self) {
        for (name, sidecar) in &self.sidecars {
            if *name == "ingressgateway" {
                sidecar.update(self.compile_in("istio-system", name));
            } else {
                sidecar.update(self.compile(name));
            }
        }
    }

    /// Applies a file of any task folder (under docs-examples/tasks),
    /// after `edit`; its resources go to foo when they name no namespace.
    fn apply_other(&mut self, file: &str, edit: impl Fn(String) -> String) {
        let path = format!(
            "{}/../../../shared/corpus/docs-examples/tasks/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let mut text = edit(text);
        if !text.contains("namespace:") {
            text = text.replace("metadata:\n", "metadata:\n  namespace: foo\n");
        }
        self.policies.insert(file.to_string(), text);
        self.update();
    }

    /// `kubectl apply -n NS`: a file without a namespace goes to `ns`.
    fn apply_in(&mut self, file: &str, ns: Option<&str>) {
        let path = format!("{}/{TASKS}/{file}", env!("CARGO_MANIFEST_DIR"));
        let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        if let Some(ns) = ns {
            assert!(!text.contains("namespace:"), "{file} names its namespace");
            text = text.replacen("metadata:\n", &format!("metadata:\n  namespace: {ns}\n"), 1);
        }
        let name = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("name: "))
            .unwrap()
            .trim_matches('"')
            .to_string();
        self.policies.insert(name, text);
        self.update();
    }

    /// The ingress gateway (istio-system/ingressgateway) beside the
    /// sidecars, serving httpbin-gateway on 8080.
    async fn start_gateway(&mut self) {
        self.start_gateway_as("istio-system", "ingressgateway")
            .await;
    }

    async fn start_gateway_as(&mut self, ns: &str, name: &'static str) {
        let gateway = Sidecar::start_as(
            weft_proxy::Role::Ingress,
            self.compile_in(ns, name),
            store_in(&self.ca, ns, name),
            policy(&self.ca),
            weft_proxy::Options::default(),
        )
        .await
        .unwrap();
        self.sidecars.insert(name, gateway);
    }

    fn client(&self) -> SocketAddr {
        self.sidecars["sleep"].outbound_addr()
    }

    /// `curl http://httpbin.foo:8000<path> -X <method> [-H header]`.
    async fn curl(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> StatusCode {
        let url = format!("http://httpbin.foo.svc.cluster.local:8000{path}");
        request(self.client(), method, &url, None, headers).await.0
    }

    /// `echo hello | nc tcp-echo 900x`: whether the echo came back.
    async fn nc(&self, port: u16) -> bool {
        let mut tcp = TcpStream::connect(self.client()).await.unwrap();
        let authority = format!("tcp-echo.foo.svc.cluster.local:{port}");
        tcp.write_all(
            format!("CONNECT {authority} HTTP/1.1\r\nhost: {authority}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = tcp.read(&mut buf).await.unwrap();
        if !String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200") {
            return false;
        }
        tcp.write_all(b"hello").await.unwrap();
        let n = tcp.read(&mut buf).await.unwrap_or(0);
        &buf[..n] == b"hello"
    }
}

/// A stand-in httpbin: 200 for every method and path.
async fn httpbin(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        // Like httpbin, /headers shows the request's headers.
                        let mut body = format!("{} {}", req.method(), req.uri());
                        if req.uri().path() == "/headers" {
                            for (k, v) in req.headers() {
                                body.push_str(&format!("\n{k}: {}", v.to_str().unwrap_or("")));
                            }
                        }
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(body))))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
}

/// A stand-in for Istio's sample ext-authz server: allows a request whose
/// `x-ext-authz` header is `allow`, and says so to the app.
async fn ext_authz(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let allow = req
                            .headers()
                            .get("x-ext-authz")
                            .is_some_and(|v| v == "allow");
                        let mut resp = if allow {
                            Response::new(Full::new(Bytes::new()))
                        } else {
                            let mut r = Response::new(Full::new(Bytes::from(
                                "denied by ext_authz for not found header `x-ext-authz: allow` in the request",
                            )));
                            *r.status_mut() = StatusCode::FORBIDDEN;
                            r
                        };
                        resp.headers_mut().insert(
                            "x-ext-authz-check-result",
                            if allow { "allowed" } else { "denied" }.parse().unwrap(),
                        );
                        Ok::<_, hyper::Error>(resp)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
}

/// The same stand-in over gRPC (`envoy.service.auth.v3.Authorization`).
fn ext_authz_grpc(addr: SocketAddr) {
    use weft_protocol::ext_authz as pb;
    struct Sample;
    #[tonic::async_trait]
    impl pb::authorization_server::Authorization for Sample {
        async fn check(
            &self,
            request: tonic::Request<pb::CheckRequest>,
        ) -> Result<tonic::Response<pb::CheckResponse>, tonic::Status> {
            let http = request
                .into_inner()
                .attributes
                .and_then(|a| a.request)
                .and_then(|r| r.http)
                .unwrap_or_default();
            let allow = http
                .headers
                .get("x-ext-authz")
                .is_some_and(|v| v == "allow");
            let header = |v: &str| pb::HeaderValueOption {
                header: Some(pb::HeaderValue {
                    key: "x-ext-authz-check-result".into(),
                    value: v.into(),
                }),
            };
            let response = if allow {
                pb::CheckResponse {
                    status: Some(pb::RpcStatus::default()),
                    http_response: Some(pb::check_response::HttpResponse::OkResponse(
                        pb::OkHttpResponse {
                            headers: vec![header("allowed")],
                            ..Default::default()
                        },
                    )),
                }
            } else {
                pb::CheckResponse {
                    status: Some(pb::RpcStatus {
                        code: 7,
                        message: "denied".into(),
                    }),
                    http_response: Some(pb::check_response::HttpResponse::DeniedResponse(
                        pb::DeniedHttpResponse {
                            status: Some(pb::HttpStatus { code: 403 }),
                            headers: vec![header("denied")],
                            body: "denied by ext_authz for not found header `x-ext-authz: allow` in the request".into(),
                        },
                    )),
                }
            };
            Ok(tonic::Response::new(response))
        }
    }
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::authorization_server::AuthorizationServer::new(Sample))
            .serve(addr),
    );
}

/// A stand-in tcp-echo.
async fn echo(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n) = tcp.read(&mut buf).await {
                    if n == 0 || tcp.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
}

#[tokio::test]
async fn authz_deny_task() {
    let mut t = Task::start(125).await;
    assert_eq!(t.curl("GET", "/get", &[]).await, StatusCode::OK);
    t.apply("authz-deny/authz-deny-01.yaml");
    assert_eq!(t.curl("GET", "/get", &[]).await, StatusCode::FORBIDDEN);
    assert_eq!(t.curl("POST", "/post", &[]).await, StatusCode::OK);
    t.apply("authz-deny/authz-deny-02.yaml");
    let admin = [("x-token", "admin")];
    let guest = [("x-token", "guest")];
    assert_eq!(t.curl("GET", "/get", &admin).await, StatusCode::OK);
    assert_eq!(t.curl("GET", "/get", &guest).await, StatusCode::FORBIDDEN);
    t.apply("authz-deny/authz-deny-03.yaml");
    assert_eq!(t.curl("GET", "/ip", &admin).await, StatusCode::OK);
    assert_eq!(t.curl("GET", "/get", &admin).await, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn authz_tcp_task() {
    let mut t = Task::start(126).await;
    for port in [9000, 9001, 9002] {
        assert!(t.nc(port).await, "{port} before any policy");
    }
    t.apply("authz-tcp/authz-tcp-01.yaml");
    assert!(t.nc(9000).await && t.nc(9001).await);
    assert!(!t.nc(9002).await, "9002 is not in the ALLOW policy");
    // An ALLOW rule with an HTTP-only field never matches TCP.
    t.apply("authz-tcp/authz-tcp-02.yaml");
    assert!(!t.nc(9000).await);
    // A DENY rule with an HTTP-only field denies all TCP.
    t.apply("authz-tcp/authz-tcp-03.yaml");
    assert!(!t.nc(9000).await);
    // ... on the ports it names.
    t.apply("authz-tcp/authz-tcp-04.yaml");
    assert!(!t.nc(9000).await);
    assert!(t.nc(9001).await);
}

#[tokio::test]
async fn authz_dry_run_task() {
    let mut t = Task::start(127).await;
    t.apply_in("authz-dry-run/authz-dry-run-01.yaml", Some("foo"));
    // A dry-run DENY is evaluated and logged, never enforced.
    assert_eq!(t.curl("GET", "/headers", &[]).await, StatusCode::OK);
    assert_eq!(
        t.sidecars["httpbin"].config().authz.policies[0].name,
        "foo/deny-path-headers"
    );
}

#[tokio::test]
async fn authz_custom_task() {
    let mut t = Task::start(132).await;
    // The page's MeshConfig: its extension providers.
    let fragment = std::fs::read_to_string(format!(
        "{}/../../../shared/corpus/docs-examples/_meshconfig-fragments/tasks/security/authorization/authz-custom-02.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mesh_text: String = fragment
        .split_once("mesh: |-\n")
        .unwrap()
        .1
        .lines()
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    let source = weft_api::load_mesh_config("mesh.yaml", &mesh_text).unwrap();
    t.mesh.ext_authz = weft_model::authz::ext_authz_providers(&source.config);
    // The page's policy, with its gRPC authorizer, then with the HTTP one
    // it offers as the alternative.
    t.apply_in("authz-custom/authz-custom-04.yaml", Some("foo"));
    let url = "http://httpbin.foo.svc.cluster.local:8000";
    for provider in ["sample-ext-authz-grpc", "sample-ext-authz-http"] {
        let text = t.policies["ext-authz"]
            .replace("sample-ext-authz-grpc", provider)
            .replace("sample-ext-authz-http", provider);
        t.policies.insert("ext-authz".into(), text);
        for (name, sidecar) in &t.sidecars {
            sidecar.update(t.compile(name));
        }
        let headers = |v| [("x-ext-authz", v)];
        let (status, _, body) = request(
            t.client(),
            "GET",
            &format!("{url}/headers"),
            None,
            &headers("deny"),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{provider}: {body}");
        assert_eq!(
            body,
            "denied by ext_authz for not found header `x-ext-authz: allow` in the request"
        );
        // httpbin's proxy counts the denial with Envoy's UAEX flag.
        let metrics = common::get(
            SocketAddr::new(format!("127.0.{}.31", t.net).parse().unwrap(), 15090),
            "/stats/prometheus",
            Some("x"),
            &[],
        )
        .await
        .1;
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("istio_requests_total{")
                    && l.contains("reporter=\"destination\"")
                    && l.contains("response_code=\"403\"")
                    && l.contains("response_flags=\"UAEX\"")),
            "{metrics}"
        );
        let (status, _, body) = request(
            t.client(),
            "GET",
            &format!("{url}/headers"),
            None,
            &headers("allow"),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{provider}: {body}");
        // The gRPC answer's headers go on to the app.
        if provider.ends_with("grpc") {
            assert!(body.contains("x-ext-authz-check-result: allowed"), "{body}");
        }
    }
    let (status, _, body) = request(
        t.client(),
        "GET",
        &format!("{url}/headers"),
        None,
        &[("x-ext-authz", "deny")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body,
        "denied by ext_authz for not found header `x-ext-authz: allow` in the request"
    );
    let (status, _, _) = request(
        t.client(),
        "GET",
        &format!("{url}/headers"),
        None,
        &[("x-ext-authz", "allow")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = request(
        t.client(),
        "GET",
        &format!("{url}/ip"),
        None,
        &[("x-ext-authz", "deny")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "/ip is not sent to the authorizer");
    // An authorizer that cannot be reached fails closed (failOpen false).
    t.mesh
        .ext_authz
        .get_mut("sample-ext-authz-http")
        .unwrap()
        .port = 8001;
    for (name, sidecar) in &t.sidecars {
        sidecar.update(t.compile(name));
    }
    let (status, _, _) = request(
        t.client(),
        "GET",
        &format!("{url}/headers"),
        None,
        &[("x-ext-authz", "allow")],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// Istio's authn-policy task: PeerAuthentication at mesh, namespace,
/// workload and port level, with sleep in foo (a sidecar, so mTLS) and a
/// legacy client without one, whose plaintext reaches httpbin's 15006 as
/// capture would send it. Weft's default is STRICT where Istio's is
/// PERMISSIVE, so the test first applies a mesh-wide PERMISSIVE policy to
/// start where the page starts.
#[tokio::test]
async fn authn_policy_task() {
    let net = 133;
    let base = format!(
        r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: sleep, namespace: foo}}
spec: {{address: 127.0.{net}.21, serviceAccount: sleep, labels: {{app: sleep}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: httpbin, namespace: foo}}
spec: {{address: 127.0.{net}.31, serviceAccount: httpbin, labels: {{app: httpbin}}, ports: {{http: 8080}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: httpbin, namespace: bar}}
spec: {{address: 127.0.{net}.41, serviceAccount: httpbin, labels: {{app: httpbin}}, ports: {{http: 8080}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: httpbin, namespace: foo}}
spec:
  hosts: [httpbin.foo.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 8000, name: http, protocol: HTTP, targetPort: 8080}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: httpbin}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: httpbin, namespace: bar}}
spec:
  hosts: [httpbin.bar.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 8000, name: http, protocol: HTTP, targetPort: 8080}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: httpbin}}}}
"#
    );
    // Istio's behaviour without a mesh-wide policy, as one: the page's
    // mesh-wide STRICT, of the same name, replaces it.
    let permissive = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: PERMISSIVE}}\n";
    let ca = common::test_ca("authn-policy");
    let workloads = [("foo", "sleep"), ("foo", "httpbin"), ("bar", "httpbin")];
    let mut sidecars = Vec::new();
    for (ns, name) in workloads {
        sidecars.push(
            Sidecar::start(
                common::compile(&base, ns, name),
                store_in(&ca, ns, name),
                policy(&ca),
                Ports::default(),
                None,
            )
            .await
            .unwrap(),
        );
    }
    httpbin(format!("127.0.{net}.31:8080").parse().unwrap()).await;
    httpbin(format!("127.0.{net}.41:8080").parse().unwrap()).await;
    // Sets the policies in force: the page's files, plus PERMISSIVE as the
    // mesh-wide default unless a file replaces it.
    let set = |files: &[&str], mesh_default: bool| {
        let mut yaml = base.clone();
        if mesh_default {
            yaml.push_str("\n---\n");
            yaml.push_str(permissive);
        }
        for file in files {
            // `folder/file` or `folder/file@namespace` (`kubectl apply -n`).
            let (file, ns) = file.split_once('@').unwrap_or((file, ""));
            let path = format!(
                "{}/../../../shared/corpus/docs-examples/tasks/security/authentication/{file}",
                env!("CARGO_MANIFEST_DIR")
            );
            let mut text = std::fs::read_to_string(&path).unwrap();
            if !ns.is_empty() {
                text = text.replacen("metadata:\n", &format!("metadata:\n  namespace: {ns}\n"), 1);
            }
            yaml.push_str("\n---\n");
            yaml.push_str(&text);
        }
        for (sidecar, (ns, name)) in sidecars.iter().zip(workloads) {
            sidecar.update(common::compile(&yaml, ns, name));
        }
    };
    set(&[], true);
    let client = SocketAddr::new(format!("127.0.{net}.21").parse().unwrap(), 15001);
    // sleep.foo has a sidecar: mTLS, always through.
    let from_sleep = |ns: &'static str| async move {
        let url = format!("http://httpbin.{ns}.svc.cluster.local:8000/ip");
        request(client, "GET", &url, None, &[]).await.0 == StatusCode::OK
    };
    // legacy has none: plaintext, arriving at the destination's 15006.
    let from_legacy = |host: u8| async move {
        let addr: SocketAddr = format!("127.0.{net}.{host}:15006").parse().unwrap();
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /ip HTTP/1.1\r\nHost: httpbin\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut buf = Vec::new();
        let _ = tcp.read_to_end(&mut buf).await;
        buf.starts_with(b"HTTP/1.1 200")
    };
    let (foo, bar) = (31, 41);
    let everyone = |expect_foo: bool, expect_bar: bool| async move {
        assert!(from_sleep("foo").await && from_sleep("bar").await);
        assert_eq!(from_legacy(foo).await, expect_foo, "legacy to httpbin.foo");
        assert_eq!(from_legacy(bar).await, expect_bar, "legacy to httpbin.bar");
    };
    everyone(true, true).await;
    // Mesh-wide STRICT.
    set(&["authn-policy/authn-policy-01.yaml"], false);
    everyone(false, false).await;
    // Namespace foo STRICT only.
    set(&["authn-policy/authn-policy-02.yaml"], true);
    everyone(false, true).await;
    // httpbin.bar STRICT, ...
    set(
        &[
            "authn-policy/authn-policy-02.yaml",
            "authn-policy/authn-policy-03.yaml",
        ],
        true,
    );
    everyone(false, false).await;
    // ... except its port 8080.
    set(
        &[
            "authn-policy/authn-policy-02.yaml",
            "authn-policy/authn-policy-04.yaml",
        ],
        true,
    );
    everyone(false, true).await;
    // A workload policy overrides its namespace's.
    set(
        &[
            "authn-policy/authn-policy-02.yaml",
            "authn-policy/authn-policy-04.yaml",
            "authn-policy/authn-policy-05.yaml",
        ],
        true,
    );
    everyone(true, true).await;
    // Istio's mtls-migration task: STRICT for namespace foo, then for the
    // whole mesh (its file applied in the root namespace).
    set(&["mtls-migration/mtls-migration-01.yaml@foo"], true);
    everyone(false, true).await;
    set(
        &["mtls-migration/mtls-migration-02.yaml@istio-system"],
        false,
    );
    everyone(false, false).await;
}

/// Istio's jwt-route and claim-to-header tasks: the ingress gateway
/// validates the token and routes on its claims; httpbin's sidecar copies a
/// claim into a header for the app. The pages' key set is served locally
/// and the tokens are signed with its key.
#[tokio::test]
async fn jwt_route_and_claim_to_header_tasks() {
    let net = 134;
    let mut t = Task::start(net).await;
    let s = common::signer("k");
    common::jwks_server(
        format!("127.0.{net}.70:8080").parse().unwrap(),
        s.jwks.clone(),
    )
    .await;
    let jwks = format!("http://127.0.{net}.70:8080");
    t.start_gateway().await;
    t.apply_authn("jwt-route/jwt-route-01.yaml", &jwks);
    t.apply_authn("jwt-route/jwt-route-02.yaml", &jwks);
    t.apply_authn("claim-to-header/claim-to-header-01.yaml", &jwks);
    let claims = |groups: serde_json::Value| {
        serde_json::json!({"iss": common::ISSUER, "sub": "testing@secure.istio.io",
            "exp": common::now() + 3600, "groups": groups, "foo": "bar"})
    };
    let group1 = common::token(&s, "k", claims(serde_json::json!(["group1", "group2"])));
    let other = common::token(&s, "k", claims(serde_json::json!(["group3"])));
    let gw = SocketAddr::new(format!("127.0.{net}.10").parse().unwrap(), 8080);
    let call = |token: Option<String>| async move {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| vec![("authorization", b)])
            .unwrap_or_default();
        request(gw, "GET", "/headers", Some("httpbin.example.com"), &headers).await
    };
    // The route needs the claim: no token, or the wrong group, finds none.
    assert_eq!(call(None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(call(Some(other)).await.0, StatusCode::NOT_FOUND);
    let (status, _, body) = call(Some(group1.clone())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        call(Some("bad.token.here".into())).await.0,
        StatusCode::UNAUTHORIZED
    );
    // From sleep, httpbin's own RequestAuthentication copies claim foo.
    let url = "http://httpbin.foo.svc.cluster.local:8000/headers";
    let bearer = format!("Bearer {group1}");
    let (status, _, body) =
        request(t.client(), "GET", url, None, &[("authorization", &bearer)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("x-jwt-claim-foo: bar"), "{body}");
}

/// Istio's authz-jwt task, its RequestAuthentication for httpbin: a bad
/// token is refused, no token is let through (policies decide), a valid
/// one passes.
#[tokio::test]
async fn authz_jwt_task() {
    let net = 135;
    let mut t = Task::start(net).await;
    let s = common::signer("k");
    common::jwks_server(
        format!("127.0.{net}.70:8080").parse().unwrap(),
        s.jwks.clone(),
    )
    .await;
    let path = format!(
        "{}/{TASKS}/authz-jwt/authz-jwt-01.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "{{< github_file >}}",
        &format!("http://127.0.{net}.70:8080"),
    );
    t.policies.insert("jwt-example".into(), text);
    t.update();
    let valid = common::token(
        &s,
        "k",
        serde_json::json!({"iss": common::ISSUER, "sub": "testing@secure.istio.io", "exp": common::now() + 3600}),
    );
    let url = "http://httpbin.foo.svc.cluster.local:8000/headers";
    let client = t.client();
    let call = |token: Option<&str>| {
        let bearer = token.map(|t| format!("Bearer {t}"));
        async move {
            let headers: Vec<(&str, &str)> = bearer
                .as_deref()
                .map(|b| vec![("authorization", b)])
                .unwrap_or_default();
            request(client, "GET", url, None, &headers).await.0
        }
    };
    assert_eq!(call(Some("invalidToken")).await, StatusCode::UNAUTHORIZED);
    assert_eq!(call(None).await, StatusCode::OK);
    assert_eq!(call(Some(&valid)).await, StatusCode::OK);
}

/// Istio's authn-policy task at the ingress: its RequestAuthentication,
/// then a DENY for requests without a request principal, then the same
/// DENY for /headers only; httpbin behind the sample's VirtualService.
#[tokio::test]
async fn authn_policy_task_at_the_ingress() {
    let net = 138;
    let mut t = Task::start(net).await;
    t.start_gateway().await;
    let s = common::signer("k");
    common::jwks_server(
        format!("127.0.{net}.70:8080").parse().unwrap(),
        s.jwks.clone(),
    )
    .await;
    let jwks = format!("http://127.0.{net}.70:8080");
    // The sample's VirtualService (its Gateway is the test's, on 8080).
    let sample = std::fs::read_to_string(format!(
        "{}/../../../shared/corpus/samples/httpbin/httpbin-gateway.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let vs = sample
        .split("---")
        .find(|d| d.contains("kind: VirtualService"))
        .unwrap();
    t.policies.insert(
        "sample-vs".into(),
        vs.replacen("metadata:\n", "metadata:\n  namespace: foo\n", 1),
    );
    t.apply_authn("authn-policy/authn-policy-06.yaml", &jwks);
    let valid = common::token(
        &s,
        "k",
        serde_json::json!({"iss": common::ISSUER, "sub": "testing@secure.istio.io", "exp": common::now() + 3600}),
    );
    let gw = SocketAddr::new(format!("127.0.{net}.10").parse().unwrap(), 8080);
    let call = |path: &'static str, token: Option<String>| async move {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| vec![("authorization", b)])
            .unwrap_or_default();
        request(gw, "GET", path, Some("httpbin.example.com"), &headers)
            .await
            .0
    };
    assert_eq!(call("/headers", None).await, StatusCode::OK);
    assert_eq!(
        call("/headers", Some("deadbeef".into())).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(call("/headers", Some(valid.clone())).await, StatusCode::OK);
    // A request principal becomes required.
    t.apply_authn("authn-policy/authn-policy-08.yaml", &jwks);
    assert_eq!(call("/headers", None).await, StatusCode::FORBIDDEN);
    assert_eq!(call("/headers", Some(valid.clone())).await, StatusCode::OK);
    // ... for /headers only (the same policy name, replaced).
    t.policies.remove("authn-policy/authn-policy-08.yaml");
    t.apply_authn("authn-policy/authn-policy-10.yaml", &jwks);
    assert_eq!(call("/headers", None).await, StatusCode::FORBIDDEN);
    assert_eq!(call("/ip", None).await, StatusCode::OK);
    assert_eq!(call("/headers", Some(valid)).await, StatusCode::OK);
}

/// The Gateway API tabs of Istio's ingress and security tasks: the
/// Gateway and HTTPRoute of ingress-control, served by the proxy Istio
/// would deploy for the Gateway (labelled with its name, in its
/// namespace), then authz-ingress and authn-policy policies attached to
/// that Gateway by targetRef. The sidecars take none of those policies.
#[tokio::test]
async fn gateway_api_ingress_with_policies_attached_by_target_ref() {
    let net = 147;
    let mut t = Task::start(net).await;
    t.policies.insert(
        "gateway-workload".into(),
        format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: httpbin-gateway-istio, namespace: foo}}\nspec: {{address: 127.0.{net}.11, serviceAccount: httpbin-gateway-istio, labels: {{gateway.networking.k8s.io/gateway-name: httpbin-gateway}}}}\n"
        ),
    );
    // The page's listener is on port 80; the test's on 8080.
    t.apply_other(
        "traffic-management/ingress/ingress-control/ingress-control-06.yaml",
        |text| text.replace("port: 80\n", "port: 8080\n"),
    );
    t.start_gateway_as("foo", "httpbin-gateway-istio").await;
    let gw = SocketAddr::new(format!("127.0.{net}.11").parse().unwrap(), 8080);
    let call = |path: &'static str, token: Option<String>| async move {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = bearer
            .as_deref()
            .map(|b| vec![("authorization", b)])
            .unwrap_or_default();
        request(gw, "GET", path, Some("httpbin.example.com"), &headers)
            .await
            .0
    };
    // PathPrefix /headers: the path and what is under it, not /headersx.
    assert_eq!(call("/headers", None).await, StatusCode::OK);
    assert_eq!(call("/headers/x", None).await, StatusCode::OK);
    assert_eq!(call("/headersx", None).await, StatusCode::NOT_FOUND);
    assert_eq!(call("/ip", None).await, StatusCode::NOT_FOUND);

    // authz-ingress: an ALLOW for blocks the client is not in...
    let tasks = "security/authorization/authz-ingress";
    t.apply_other(&format!("{tasks}/authz-ingress-05.yaml"), |x| x);
    assert_eq!(call("/headers", None).await, StatusCode::FORBIDDEN);
    // ... applies to the gateway only: sleep still reaches httpbin.
    assert_eq!(t.curl("GET", "/headers", &[]).await, StatusCode::OK);
    // ... until the client's address is in it.
    t.policies.remove(&format!("{tasks}/authz-ingress-05.yaml"));
    t.apply_other(&format!("{tasks}/authz-ingress-09.yaml"), |x| {
        x.replace("$CLIENT_IP", "127.0.0.1")
    });
    assert_eq!(call("/headers", None).await, StatusCode::OK);
    // A DENY of the client's address.
    t.policies.remove(&format!("{tasks}/authz-ingress-09.yaml"));
    t.apply_other(&format!("{tasks}/authz-ingress-13.yaml"), |x| {
        x.replace("$CLIENT_IP", "127.0.0.1")
    });
    assert_eq!(call("/headers", None).await, StatusCode::FORBIDDEN);
    t.policies.remove(&format!("{tasks}/authz-ingress-13.yaml"));
    // The same three steps with remoteIpBlocks: with no trusted proxy in
    // front of the gateway, the remote address is the peer's.
    t.apply_other(&format!("{tasks}/authz-ingress-06.yaml"), |x| x);
    assert_eq!(call("/headers", None).await, StatusCode::FORBIDDEN);
    t.policies.remove(&format!("{tasks}/authz-ingress-06.yaml"));
    t.apply_other(&format!("{tasks}/authz-ingress-10.yaml"), |x| {
        x.replace("$CLIENT_IP", "127.0.0.1")
    });
    assert_eq!(call("/headers", None).await, StatusCode::OK);
    t.policies.remove(&format!("{tasks}/authz-ingress-10.yaml"));
    t.apply_other(&format!("{tasks}/authz-ingress-14.yaml"), |x| {
        x.replace("$CLIENT_IP", "127.0.0.1")
    });
    assert_eq!(call("/headers", None).await, StatusCode::FORBIDDEN);
    t.policies.remove(&format!("{tasks}/authz-ingress-14.yaml"));
    t.update();
    assert_eq!(call("/headers", None).await, StatusCode::OK);

    // authn-policy: a RequestAuthentication for the gateway, then a DENY
    // of requests without a principal, then the same for /headers only.
    let s = common::signer("k");
    common::jwks_server(
        format!("127.0.{net}.70:8080").parse().unwrap(),
        s.jwks.clone(),
    )
    .await;
    let jwks = format!("http://127.0.{net}.70:8080");
    let valid = common::token(
        &s,
        "k",
        serde_json::json!({"iss": common::ISSUER, "sub": "testing@secure.istio.io", "exp": common::now() + 3600}),
    );
    let with_jwks = |x: String| x.replace("{{< github_file >}}", &jwks);
    t.apply_other(
        "security/authentication/authn-policy/authn-policy-07.yaml",
        with_jwks,
    );
    assert_eq!(call("/headers", None).await, StatusCode::OK);
    assert_eq!(
        call("/headers", Some("deadbeef".into())).await,
        StatusCode::UNAUTHORIZED
    );
    // The sidecar has no RequestAuthentication: a bad token is not its
    // business.
    let bad = [("authorization", "Bearer deadbeef")];
    assert_eq!(t.curl("GET", "/headers", &bad).await, StatusCode::OK);
    t.apply_other(
        "security/authentication/authn-policy/authn-policy-09.yaml",
        |x| x,
    );
    assert_eq!(call("/headers", None).await, StatusCode::FORBIDDEN);
    assert_eq!(call("/headers", Some(valid.clone())).await, StatusCode::OK);
    t.policies
        .remove("security/authentication/authn-policy/authn-policy-09.yaml");
    t.apply_other(
        "security/authentication/authn-policy/authn-policy-11.yaml",
        |x| x,
    );
    assert_eq!(call("/headers", None).await, StatusCode::FORBIDDEN);
    assert_eq!(call("/headers", Some(valid)).await, StatusCode::OK);
}
