//! An ingress gateway under load of hosts and clients: forty HTTPS hosts on
//! one port, each with its own certificate picked by SNI; a certificate
//! renewed on disk served from the next handshake while open connections
//! go on; HTTP/2 and gRPC (trailers and all) through the gateway; and the
//! gateway's limits on connections and requests in flight.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{ca, leaf, policy, start, store_in};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use weft_proxy::gateway::Limits;
use weft_proxy::{Options, Role, Sidecar};

const NET: u8 = 145;
const HOSTS: usize = 40;

fn at(host: u8, port: u16) -> SocketAddr {
    format!("127.0.{NET}.{host}:{port}").parse().unwrap()
}

fn yaml() -> String {
    let servers: String = (0..HOSTS)
        .map(|i| {
            format!(
                "  - port: {{number: 8443, name: https-{i}, protocol: HTTPS}}\n    hosts: [host{i}.example.com]\n    tls: {{mode: SIMPLE, credentialName: cred{i}}}\n"
            )
        })
        .collect();
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ingressgateway, namespace: istio-system}}
spec: {{address: 127.0.{NET}.10, serviceAccount: ingressgateway, labels: {{istio: ingressgateway}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ingressgateway-limited, namespace: istio-system}}
spec: {{address: 127.0.{NET}.11, serviceAccount: ingressgateway, labels: {{istio: ingressgateway}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: grpc-echo, namespace: default}}
spec: {{address: 127.0.{NET}.33, serviceAccount: grpc-echo, labels: {{app: grpc-echo}}, ports: {{grpc: 9093}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: grpc-echo, namespace: default}}
spec:
  hosts: [grpc-echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 9090, name: grpc, protocol: GRPC}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: grpc-echo}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: front, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: ["*"]
{servers}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: front, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [istio-system/front]
  http:
  - match: [{{authority: {{exact: grpc.example.com}}}}]
    route: [{{destination: {{host: grpc-echo.default.svc.cluster.local, port: {{number: 9090}}}}}}]
  - route: [{{destination: {{host: reviews.default.svc.cluster.local, subset: v1}}}}]
"#
    )
}

/// `tls.crt` and `tls.key` of credential `cred`, a leaf for `host` from
/// `issuer`.
fn credential(dir: &Path, issuer: &common::TestCa, cred: &str, host: &str) {
    let (cert, key) = leaf(dir, issuer, cred, &[host]);
    let folder = dir.join(cred);
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("tls.crt"), cert).unwrap();
    std::fs::write(folder.join("tls.key"), key).unwrap();
}

/// A TLS session to `addr` for `name`, trusting `roots` only, offering
/// `alpn`.
async fn tls(
    addr: SocketAddr,
    name: &str,
    roots: &str,
    alpn: &[&[u8]],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let mut store = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(roots.as_bytes()) {
        store.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(weft_identity::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())
}

type H1 = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn h1<S>(io: S) -> H1
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get(sender: &mut H1, host: &str, path: &str) -> Result<(StatusCode, String), String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let req = Request::get(path)
        .header("host", host)
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// An h2c application answering gRPC with a message and trailers.
async fn grpc_echo(addr: SocketAddr) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let mut trailers = hyper::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        let body =
                            format!("hi {} from {:?}", req.uri().path(), req.uri().authority());
                        let mut resp = Response::new(
                            Full::new(Bytes::from(body))
                                .map_err(|never| match never {})
                                .with_trailers(async move { Some(Ok(trailers)) }),
                        );
                        resp.headers_mut()
                            .insert("content-type", "application/grpc".parse().unwrap());
                        Ok::<_, std::convert::Infallible>(resp)
                    });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
}

#[tokio::test]
async fn a_gateway_serves_many_hosts_renews_certificates_and_keeps_its_limits() {
    let m = start(NET, &yaml()).await;
    let dir = std::env::temp_dir().join(format!("weft-hardening-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let first_ca = ca(&dir, "first");
    for i in 0..HOSTS {
        credential(
            &dir,
            &first_ca,
            &format!("cred{i}"),
            &format!("host{i}.example.com"),
        );
    }
    let all = common::mesh(NET, &yaml());
    let gateway = |name: &'static str, limits: Limits| {
        let config = common::compile(&all, "istio-system", name);
        let (store, policy) = (
            store_in(&m.ca, "istio-system", "ingressgateway"),
            policy(&m.ca),
        );
        let credentials = dir.clone();
        async move {
            let options = Options {
                credentials,
                limits,
                ..Options::default()
            };
            Sidecar::start_as(Role::Ingress, config, store, policy, options)
                .await
                .unwrap()
        }
    };
    let _open = gateway("ingressgateway", Limits::default()).await;
    let _limited = gateway(
        "ingressgateway-limited",
        Limits {
            max_connections: Some(2),
            max_requests: Some(1),
        },
    )
    .await;
    let _echo = Sidecar::start(
        common::compile(&all, "default", "grpc-echo"),
        store_in(&m.ca, "default", "grpc-echo"),
        policy(&m.ca),
        weft_proxy::Ports::default(),
        None,
    )
    .await
    .unwrap();
    grpc_echo(at(33, 9093)).await;

    // Every host gets its own certificate: the handshake verifies the name.
    for i in 0..HOSTS {
        let host = format!("host{i}.example.com");
        let session = tls(at(10, 8443), &host, &first_ca.pem, &[b"http/1.1"])
            .await
            .unwrap_or_else(|e| panic!("{host}: {e}"));
        let (status, body) = get(&mut h1(session).await, &host, "/").await.unwrap();
        assert_eq!(status, StatusCode::OK, "{host}: {body}");
        assert!(body.starts_with("v1 "), "{body}");
    }

    // HTTP/2, offered by ALPN, through to the mesh.
    let session = tls(
        at(10, 8443),
        "host7.example.com",
        &first_ca.pem,
        &[b"h2", b"http/1.1"],
    )
    .await
    .unwrap();
    assert_eq!(session.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(session))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://host7.example.com/h2")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // gRPC through the gateway: the trailers arrive, and the application
    // sees the host the client asked for.
    let req = Request::post("http://grpc.example.com/echo.Echo/Say")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
        .unwrap();
    let tcp = TcpStream::connect(at(10, 8080)).await.unwrap();
    let (mut grpc, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = grpc.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    let body = collected.to_bytes();
    let trailers = trailers.unwrap_or_else(|| panic!("no trailers: {body:?}"));
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(body, "hi /echo.Echo/Say from Some(grpc.example.com)");

    // A renewed certificate on disk is served from the next handshake; a
    // connection open before it goes on.
    let session = tls(
        at(10, 8443),
        "host0.example.com",
        &first_ca.pem,
        &[b"http/1.1"],
    )
    .await
    .unwrap();
    let mut before = h1(session).await;
    assert_eq!(
        get(&mut before, "host0.example.com", "/").await.unwrap().0,
        StatusCode::OK
    );
    let second_ca = ca(&dir, "second");
    tokio::time::sleep(Duration::from_millis(20)).await;
    credential(&dir, &second_ca, "cred0", "host0.example.com");
    let renewed = tls(
        at(10, 8443),
        "host0.example.com",
        &second_ca.pem,
        &[b"http/1.1"],
    )
    .await;
    assert!(renewed.is_ok(), "{renewed:?}");
    let stale = tls(
        at(10, 8443),
        "host0.example.com",
        &first_ca.pem,
        &[b"http/1.1"],
    )
    .await;
    assert!(stale.is_err(), "the old certificate is still served");
    assert_eq!(
        get(&mut before, "host0.example.com", "/").await.unwrap().0,
        StatusCode::OK
    );

    // The limited replica: one request in flight, two connections.
    let mut a = h1(TcpStream::connect(at(11, 8080)).await.unwrap()).await;
    let mut b = h1(TcpStream::connect(at(11, 8080)).await.unwrap()).await;
    let slow = tokio::spawn(async move { get(&mut a, "shop", "/slow").await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = get(&mut b, "shop", "/").await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("overloaded"), "{body}");
    let mut c = h1(TcpStream::connect(at(11, 8080)).await.unwrap()).await;
    assert!(
        get(&mut c, "shop", "/").await.is_err(),
        "a third connection is served"
    );
    assert_eq!(slow.await.unwrap().unwrap().0, StatusCode::OK);
    // With the slow request done, the second connection is served again.
    assert_eq!(get(&mut b, "shop", "/").await.unwrap().0, StatusCode::OK);
}
