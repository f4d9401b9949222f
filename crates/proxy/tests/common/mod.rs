//! Shared by the proxy integration tests: certificates for a workload,
//! the peer policy of a test mesh, an HTTP/1.1 client, and a small mesh
//! (productpage calling reviews v1 and v2) with stand-in apps.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use weft_identity::tls::PeerPolicy;
use weft_identity::{Ca, CertStore, LocalSigner, Rotator, SpiffeId, TrustDomain, TrustDomains};
use weft_proxy::{Ports, Sidecar};

/// A certificate for service account `sa` of namespace default.
pub fn store(ca: &Arc<Ca>, sa: &str) -> Arc<CertStore> {
    store_in(ca, "default", sa)
}

/// A certificate for service account `sa` of namespace `ns`.
pub fn store_in(ca: &Arc<Ca>, ns: &str, sa: &str) -> Arc<CertStore> {
    let id: SpiffeId = format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")
        .parse()
        .unwrap();
    let s = CertStore::new();
    Rotator::new(
        s.clone(),
        LocalSigner {
            ca: ca.clone(),
            id: id.clone(),
        },
        id,
        Duration::from_secs(3600),
    )
    .tick(SystemTime::now())
    .unwrap();
    s
}

pub fn policy(ca: &Ca) -> PeerPolicy {
    PeerPolicy {
        bundle: Arc::new(ca.bundle().clone()),
        trust_domains: TrustDomains::from(TrustDomain::new("cluster.local").unwrap()),
        expected: Vec::new(),
    }
}

/// One HTTP/1.1 request through `proxy`; `target` is an absolute URI or a
/// path (then `host` gives the Host header).
pub async fn get(
    proxy: SocketAddr,
    target: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let (status, _, body) = get_full(proxy, target, host, headers).await;
    (status, body)
}

pub async fn get_full(
    proxy: SocketAddr,
    target: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
) -> (StatusCode, hyper::HeaderMap, String) {
    request(proxy, "GET", target, host, headers).await
}

/// One HTTP/1.1 request with `method` through `proxy`.
pub async fn request(
    proxy: SocketAddr,
    method: &str,
    target: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
) -> (StatusCode, hyper::HeaderMap, String) {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(target);
    if let Some(h) = host {
        req = req.header("host", h);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let resp_headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        resp_headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

/// The mesh of a test, on addresses 127.0.NET.x.
pub fn mesh(net: u8, extra: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: productpage, namespace: default}}
spec: {{address: 127.0.{net}.21, serviceAccount: productpage, labels: {{app: productpage}}, ports: {{http: 9080}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-v1, namespace: default}}
spec: {{address: 127.0.{net}.31, serviceAccount: reviews, labels: {{app: reviews, version: v1}}, ports: {{http: 9081}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: reviews-v2, namespace: default}}
spec: {{address: 127.0.{net}.32, serviceAccount: reviews, labels: {{app: reviews, version: v2}}, ports: {{http: 9082}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 9080, name: http, protocol: HTTP}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: reviews}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: default}}
spec:
  host: reviews
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
{extra}
"#
    )
}

pub struct Mesh {
    pub sidecars: Vec<Sidecar>,
    /// Access-log lines of every sidecar.
    pub log: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<String>>,
    /// Requests each stand-in app received, by version.
    pub hits: Arc<HashMap<&'static str, AtomicUsize>>,
    pub client: SocketAddr,
    pub ca: Arc<Ca>,
    pub net: u8,
}

/// A stand-in app: answers `<version> <host> <path>`, half a second late
/// for paths under `/slow`.
pub async fn app(
    addr: SocketAddr,
    version: &'static str,
    hits: Arc<HashMap<&'static str, AtomicUsize>>,
) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let hits = hits.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let hits = hits.clone();
                    async move {
                        hits[version].fetch_add(1, Ordering::SeqCst);
                        if req.uri().path().starts_with("/slow") {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        let host = req
                            .headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("")
                            .to_string();
                        let mut body = format!("{version} {host} {}", req.uri());
                        if req.uri().path().starts_with("/headers") {
                            for (k, v) in req.headers() {
                                body.push_str(&format!("\n{k}: {}", v.to_str().unwrap_or("")));
                            }
                        }
                        let mut resp = Response::new(Full::new(Bytes::from(body)));
                        if let Some(code) = req.uri().path().strip_prefix("/status/") {
                            *resp.status_mut() =
                                StatusCode::from_u16(code.parse().unwrap_or(500)).unwrap();
                        }
                        Ok::<_, hyper::Error>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
}

/// A CA of trust domain cluster.local in a fresh folder named by `name`.
pub fn test_ca(name: &str) -> Arc<Ca> {
    let dir = std::env::temp_dir().join(format!("weft-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    Arc::new(
        Ca::init(
            &dir,
            &TrustDomain::new("cluster.local").unwrap(),
            SystemTime::now(),
        )
        .unwrap(),
    )
}

/// The configuration of workload `ns/name` compiled from `yaml`, which
/// must load and validate without errors.
pub fn compile(yaml: &str, ns: &str, name: &str) -> weft_model::ProxyConfig {
    compile_with(yaml, ns, name, &weft_model::Mesh::new("cluster.local"))
}

/// [`compile`] with mesh-wide settings.
pub fn compile_with(
    yaml: &str,
    ns: &str,
    name: &str,
    mesh: &weft_model::Mesh,
) -> weft_model::ProxyConfig {
    let mut loaded = weft_api::Loaded::default();
    loaded.add_text("mesh.yaml", yaml);
    assert_eq!(loaded.errors(), 0, "{:?}", loaded.diagnostics);
    let found = weft_api::validate(&loaded.resources, None);
    assert!(found.iter().all(|d| !d.is_error()), "{found:?}");
    let mut resources = loaded.resources;
    let gateway_api = weft_model::gateway_api::translate(&resources);
    assert!(
        gateway_api.warnings.is_empty(),
        "{:?}",
        gateway_api.warnings
    );
    resources.extend(gateway_api.resources);
    let registry = weft_model::Registry::from_resources(&resources);
    weft_model::compile(&resources, &registry, ns, name, mesh).unwrap()
}

pub async fn start(net: u8, extra: &str) -> Mesh {
    let ca = test_ca(&format!("proxy-{net}"));
    let yaml = mesh(net, extra);
    let hits: Arc<HashMap<&'static str, AtomicUsize>> =
        Arc::new([("v1", AtomicUsize::new(0)), ("v2", AtomicUsize::new(0))].into());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let log = Some(tx);
    let mut sidecars = Vec::new();
    for (name, sa) in [
        ("productpage", "productpage"),
        ("reviews-v1", "reviews"),
        ("reviews-v2", "reviews"),
    ] {
        let config = compile(&yaml, "default", name);
        sidecars.push(
            Sidecar::start(
                config,
                store(&ca, sa),
                policy(&ca),
                Ports::default(),
                log.clone(),
            )
            .await
            .unwrap(),
        );
    }
    app(
        format!("127.0.{net}.31:9081").parse().unwrap(),
        "v1",
        hits.clone(),
    )
    .await;
    app(
        format!("127.0.{net}.32:9082").parse().unwrap(),
        "v2",
        hits.clone(),
    )
    .await;
    Mesh {
        client: sidecars[0].outbound_addr(),
        sidecars,
        log: tokio::sync::Mutex::new(rx),
        hits,
        ca,
        net,
    }
}

pub const URL: &str = "http://reviews.default.svc.cluster.local:9080/books?id=1";

/// A CA written as `<name>-ca.pem`, able to sign leaves.
pub struct TestCa {
    pub issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

pub fn ca(dir: &Path, name: &str) -> TestCa {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(dir.join(format!("{name}-ca.pem")), cert.pem()).unwrap();
    TestCa {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A leaf for `names`, written as `<file>.pem` and `<file>-key.pem`.
pub fn leaf(dir: &Path, ca: &TestCa, file: &str, names: &[&str]) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{file}-key.pem")), key.serialize_pem()).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// An HTTPS stand-in answering `sni=<name> client-cert=<bool>`; with
/// `client_ca` it requires a client certificate from that CA.
pub async fn https(addr: SocketAddr, cert: &(String, String), client_ca: Option<&str>) {
    let provider = weft_identity::tls::provider();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.0.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(cert.1.as_bytes()).unwrap();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(pem) => {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .unwrap(),
            )
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let (_, conn) = tls.get_ref();
                let answer = format!(
                    "sni={} client-cert={}",
                    conn.server_name().unwrap_or("-"),
                    conn.peer_certificates().is_some()
                );
                let svc = hyper::service::service_fn(move |_req| {
                    let answer = answer.clone();
                    async move { Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(answer)))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
}

/// An HTTP/2 (prior knowledge, h2c) connection to `proxy`, as gRPC clients
/// and h2c-speaking apps open one.
pub async fn h2(proxy: SocketAddr) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

/// One GET of absolute `url` on an HTTP/2 connection.
pub async fn h2_get(
    sender: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    h2_request(sender, "GET", url, headers).await
}

/// One request with `method` on an HTTP/2 connection.
pub async fn h2_request(
    sender: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    sender.ready().await.unwrap();
    let resp = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

pub const ISSUER: &str = "testing@secure.istio.io";

/// A signing key and its public JWK set.
pub struct Signer {
    pub key: EncodingKey,
    pub jwks: String,
}

pub fn signer(kid: &str) -> Signer {
    let pair = rcgen::KeyPair::generate().unwrap();
    let raw = pair.public_key_raw();
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = format!(
        r#"{{"keys":[{{"kty":"EC","crv":"P-256","alg":"ES256","kid":"{kid}","x":"{}","y":"{}"}}]}}"#,
        b64(&raw[1..33]),
        b64(&raw[33..65])
    );
    Signer {
        key: EncodingKey::from_ec_der(&pair.serialize_der()),
        jwks,
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn token(s: &Signer, kid: &str, claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, &claims, &s.key).unwrap()
}

/// A JWKS server answering `body` on every path.
pub async fn jwks_server(addr: SocketAddr, body: String) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let body = body.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let body = body.clone();
                    async move { Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(body)))) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
}

/// Through `proxy`'s CONNECT to `host:port`, a TLS session verified
/// against `roots` (PEM) with SNI `host`, and one GET of `/`: the body.
pub async fn tls_through(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    roots: &str,
) -> Result<String, String> {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut tcp,
        format!("CONNECT {host}:{port} HTTP/1.1\r\nhost: {host}:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::io::AsyncReadExt::read(&mut tcp, &mut buf)
        .await
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    if !head.starts_with("HTTP/1.1 200") {
        return Err(head);
    }
    let mut store = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(roots.as_bytes()) {
        store.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(weft_identity::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(host.to_string()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("/")
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// A DNS server over UDP for tests: A records from a table the test may
/// change, with their TTL, and a count of the A questions asked per name
/// (other questions get an empty answer).
#[derive(Clone, Default)]
pub struct DnsStandIn {
    pub records: Arc<std::sync::RwLock<HashMap<String, (std::net::Ipv4Addr, u32)>>>,
    pub asked: Arc<std::sync::RwLock<HashMap<String, usize>>>,
}

impl DnsStandIn {
    pub fn set(&self, name: &str, ip: &str, ttl: u32) {
        self.records
            .write()
            .unwrap()
            .insert(name.to_string(), (ip.parse().unwrap(), ttl));
    }

    pub fn asked(&self, name: &str) -> usize {
        self.asked.read().unwrap().get(name).copied().unwrap_or(0)
    }

    /// Answers on `addr` until the test ends.
    pub async fn serve(&self, addr: SocketAddr) {
        use hickory_proto::op::Message;
        use hickory_proto::rr::rdata::A;
        use hickory_proto::rr::{RData, Record, RecordType};
        let socket = tokio::net::UdpSocket::bind(addr).await.unwrap();
        let this = self.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1500];
            loop {
                let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                    return;
                };
                let Ok(query) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let mut answer = Message::response(query.metadata.id, query.metadata.op_code);
                answer.metadata.recursion_available = true;
                for q in &query.queries {
                    answer.add_query(q.clone());
                    if q.query_type() != RecordType::A {
                        continue;
                    }
                    let name = q.name().to_ascii().trim_end_matches('.').to_lowercase();
                    *this.asked.write().unwrap().entry(name.clone()).or_default() += 1;
                    let record = this.records.read().unwrap().get(&name).copied();
                    if let Some((ip, ttl)) = record {
                        answer.add_answer(Record::from_rdata(
                            q.name().clone(),
                            ttl,
                            RData::A(A(ip)),
                        ));
                    }
                }
                if let Ok(bytes) = answer.to_vec() {
                    let _ = socket.send_to(&bytes, from).await;
                }
            }
        });
    }
}
