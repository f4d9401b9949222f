//! The ingress role: Gateway servers on their ports routing to the mesh
//! through HBONE; HTTP by Host, httpsRedirect, HTTPS with SIMPLE and
//! MUTUAL TLS from credential folders picked by SNI, TLS passthrough by
//! SNI, and Envoy's edge headers.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use common::{ca, get_full, https, leaf, policy, start, store_in};
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use weft_proxy::{Role, Sidecar};

const NET: u8 = 119;

fn gateway_yaml(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ingressgateway, namespace: istio-system}}
spec: {{address: 127.0.{NET}.10, serviceAccount: ingressgateway, labels: {{istio: ingressgateway, app: istio-ingressgateway}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: public, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: ["*/reviews.example.com"]
  - port: {{number: 8081, name: http-redirect, protocol: HTTP}}
    hosts: [secure.example.com]
    tls: {{httpsRedirect: true}}
  - port: {{number: 8443, name: https, protocol: HTTPS}}
    hosts: [secure.example.com]
    tls: {{mode: SIMPLE, credentialName: secure-cred}}
  - port: {{number: 8443, name: https-mtls, protocol: HTTPS}}
    hosts: [mtls.example.com]
    tls: {{mode: MUTUAL, serverCertificate: {d}/server.pem, privateKey: {d}/server-key.pem, caCertificates: {d}/client-ca.pem}}
  - port: {{number: 9443, name: tls, protocol: TLS}}
    hosts: [pass.example.com]
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews-public, namespace: default}}
spec:
  hosts: [reviews.example.com, secure.example.com, mtls.example.com]
  gateways: [istio-system/public]
  http:
  - route: [{{destination: {{host: reviews.default.svc.cluster.local, subset: v1}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: pass, namespace: default}}
spec:
  hosts: [pass.example.com]
  location: MESH_EXTERNAL
  ports: [{{number: 9443, name: tls, protocol: TLS, targetPort: 8443}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.{NET}.60}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: pass, namespace: default}}
spec:
  hosts: [pass.example.com]
  gateways: [istio-system/public]
  tls:
  - match: [{{port: 9443, sniHosts: [pass.example.com]}}]
    route: [{{destination: {{host: pass.example.com, port: {{number: 9443}}}}}}]
"#
    )
}

/// A GET over TLS to `addr` with SNI `name`, trusting `roots`, presenting
/// `client` when given; the status and body, or the handshake error.
async fn get_tls(
    addr: SocketAddr,
    name: &str,
    roots: &str,
    client: Option<(String, String)>,
) -> Result<(StatusCode, String), String> {
    let mut store = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(roots.as_bytes()) {
        store.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(weft_identity::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store);
    let mut config = match client {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("/headers")
        .header("host", name)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test]
async fn an_ingress_gateway_serves_its_servers_into_the_mesh() {
    let dir = std::env::temp_dir().join(format!("weft-gateway-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("secure-cred")).unwrap();
    let server_ca = ca(&dir, "server");
    let client_ca = ca(&dir, "client");
    let server = leaf(
        &dir,
        &server_ca,
        "server",
        &["secure.example.com", "mtls.example.com", "pass.example.com"],
    );
    std::fs::write(dir.join("secure-cred/tls.crt"), &server.0).unwrap();
    std::fs::write(dir.join("secure-cred/tls.key"), &server.1).unwrap();
    let client = leaf(&dir, &client_ca, "client", &["client.example"]);
    https(
        format!("127.0.{NET}.60:8443").parse().unwrap(),
        &server,
        None,
    )
    .await;

    let yaml = gateway_yaml(&dir);
    let m = start(NET, &yaml).await;
    let compile = |extra: &str| {
        let yaml = common::mesh(NET, &format!("{yaml}---\n{extra}"));
        common::compile(&yaml, "istio-system", "ingressgateway")
    };
    let config = compile("");
    let gateway = Sidecar::start_as(
        Role::Ingress,
        config,
        store_in(&m.ca, "istio-system", "ingressgateway"),
        policy(&m.ca),
        weft_proxy::Options {
            credentials: dir.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let ip: IpAddr = format!("127.0.{NET}.10").parse().unwrap();
    let at = |port: u16| SocketAddr::new(ip, port);

    // HTTP by Host, into the mesh over HBONE, with Envoy's edge headers.
    let (status, _, body) = get_full(
        at(8080),
        "/headers",
        Some("reviews.example.com"),
        &[
            ("x-forwarded-client-cert", "By=spoofed"),
            ("x-forwarded-for", "203.0.113.7"),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body.starts_with("v1 reviews.example.com /headers"),
        "{body}"
    );
    assert!(
        body.contains("\nx-forwarded-for: 203.0.113.7, 127.0.0.1"),
        "{body}"
    );
    assert!(body.contains("\nx-forwarded-proto: http"), "{body}");
    assert!(!body.contains("x-forwarded-client-cert"), "{body}");
    assert!(body.contains("\nx-request-id: "), "{body}");
    // Ambiguous framing, the start of request smuggling, gets 400 at the
    // edge.
    let mut tcp = TcpStream::connect(at(8080)).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut tcp,
        b"POST /x HTTP/1.1\r\nHost: reviews.example.com\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut answer)
        .await
        .unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 400"), "{answer:?}");
    // A host no server routes: 404, as Envoy's gateway answers.
    let (status, _, _) = get_full(at(8080), "/", Some("nobody.example.com"), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // httpsRedirect.
    let (status, headers, _) = get_full(at(8081), "/a?b=1", Some("secure.example.com"), &[]).await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(headers["location"], "https://secure.example.com/a?b=1");
    // HTTPS, SIMPLE, certificate from the credential folder.
    let (status, body) = get_tls(at(8443), "secure.example.com", &server_ca.pem, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("\nx-forwarded-proto: https"), "{body}");
    // MUTUAL on the same port, chosen by SNI: no client certificate, no
    // request; with one, through.
    assert!(
        get_tls(at(8443), "mtls.example.com", &server_ca.pem, None)
            .await
            .is_err()
    );
    let client2 = client.clone();
    let (status, _) = get_tls(at(8443), "mtls.example.com", &server_ca.pem, Some(client))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    // PASSTHROUGH: the TLS session is the backend's own.
    let (status, body) = get_tls(at(9443), "pass.example.com", &server_ca.pem, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "sni=pass.example.com client-cert=false");
    // The mesh hop carried the gateway's identity.
    let (_, _, text) = get_full(
        SocketAddr::new(format!("127.0.{NET}.31").parse().unwrap(), 15090),
        "/stats/prometheus",
        Some("x"),
        &[],
    )
    .await;
    assert!(
        text.contains(
            "source_principal=\"spiffe://cluster.local/ns/istio-system/sa/ingressgateway\""
        ),
        "{text}"
    );

    // Istio's ingress authorization task: an ALLOW on the client's address
    // at the gateway. Ours is 127.0.0.1, not in the page's blocks...
    let task = |n: &str| {
        let path = format!(
            "{}/../../../shared/corpus/docs-examples/tasks/security/authorization/authz-ingress/authz-ingress-{n}.yaml",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    gateway.update(compile(&task("03")));
    let (status, _, body) = get_full(at(8080), "/", Some("reviews.example.com"), &[]).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::FORBIDDEN, "RBAC: access denied")
    );
    // ... until it is added, as the page does with $CLIENT_IP.
    gateway.update(compile(&task("07").replace("$CLIENT_IP", "127.0.0.1")));
    let (status, _, _) = get_full(at(8080), "/", Some("reviews.example.com"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    // remoteIpBlocks: the client by X-Forwarded-For, trusted only as far
    // as numTrustedProxies says. Without trusted proxies, a client's own
    // X-Forwarded-For claim is not believed.
    let claim = [("x-forwarded-for", "5.6.7.8")];
    gateway.update(compile(&task("04")));
    let (status, _, _) = get_full(at(8080), "/", Some("reviews.example.com"), &claim).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let mut trusting = weft_model::Mesh::new("cluster.local");
    trusting.num_trusted_proxies = 1;
    let yaml_04 = common::mesh(NET, &format!("{yaml}---\n{}", task("04")));
    gateway.update(common::compile_with(
        &yaml_04,
        "istio-system",
        "ingressgateway",
        &trusting,
    ));
    let (status, _, _) = get_full(at(8080), "/", Some("reviews.example.com"), &claim).await;
    assert_eq!(status, StatusCode::OK, "one trusted proxy said 5.6.7.8");
    let (status, _, _) = get_full(at(8080), "/", Some("reviews.example.com"), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // connection.sni: the name the client asked for at the HTTPS server.
    gateway.update(compile(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: by-sni, namespace: istio-system}\nspec:\n  action: DENY\n  rules: [{when: [{key: connection.sni, values: [secure.example.com]}]}]\n",
    ));
    let (status, body) = get_tls(at(8443), "secure.example.com", &server_ca.pem, None)
        .await
        .unwrap();
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = get_tls(at(8443), "mtls.example.com", &server_ca.pem, Some(client2))
        .await
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get_full(at(8080), "/", Some("reviews.example.com"), &[]).await;
    assert_eq!(status, StatusCode::OK, "no TLS, no server name");
}
