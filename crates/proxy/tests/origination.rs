//! TLS origination (DestinationRule `tls` SIMPLE and MUTUAL) toward a
//! stand-in external service with a CA of its own: the app speaks plain
//! HTTP to its sidecar, the stand-in sees TLS with the right SNI and, for
//! MUTUAL, the client certificate; a wrong CA, a wrong subjectAltName or a
//! missing file fails the request instead of sending it unverified.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

mod common;

use common::{ca, get, https, leaf, start, tls_through};
use hyper::StatusCode;

/// A ServiceEntry for `host` on port 80, sent to `target` (a stand-in's
/// TLS port), and a DestinationRule with `tls`.
fn external(host: &str, target: &str, tls: &str) -> String {
    let name = host.split('.').next().unwrap();
    let (ip, port) = target.split_once(':').unwrap();
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: default}}
spec:
  hosts: [{host}]
  location: MESH_EXTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: {port}}}]
  resolution: STATIC
  endpoints: [{{address: {ip}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}, namespace: default}}
spec:
  host: {host}
  trafficPolicy:
    tls: {tls}
---
"#
    )
}

#[tokio::test]
async fn simple_and_mutual_tls_origination_verify_the_server() {
    let dir = std::env::temp_dir().join(format!("weft-origination-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let server_ca = ca(&dir, "server");
    let _other_ca = ca(&dir, "other");
    let client_ca = ca(&dir, "client");
    let server = leaf(
        &dir,
        &server_ca,
        "server",
        &["api.example.com", "secure.example.com", "alias.example.com"],
    );
    leaf(&dir, &client_ca, "client", &["productpage.example"]);
    https("127.0.117.50:8443".parse().unwrap(), &server, None).await;
    https(
        "127.0.117.51:8443".parse().unwrap(),
        &server,
        Some(&client_ca.pem),
    )
    .await;
    let d = dir.display();
    let simple = format!("{{mode: SIMPLE, caCertificates: {d}/server-ca.pem}}");
    let yaml = [
        external("api.example.com", "127.0.117.50:8443", &simple),
        external(
            "secure.example.com",
            "127.0.117.51:8443",
            &format!(
                "{{mode: MUTUAL, caCertificates: {d}/server-ca.pem, clientCertificate: {d}/client.pem, privateKey: {d}/client-key.pem}}"
            ),
        ),
        external(
            "nocert.example.com",
            "127.0.117.51:8443",
            &format!("{{mode: SIMPLE, caCertificates: {d}/server-ca.pem, sni: secure.example.com}}"),
        ),
        external(
            "wrongca.example.com",
            "127.0.117.50:8443",
            &format!("{{mode: SIMPLE, caCertificates: {d}/other-ca.pem, sni: api.example.com}}"),
        ),
        external(
            "alias.example.com",
            "127.0.117.50:8443",
            &format!(
                "{{mode: SIMPLE, caCertificates: {d}/server-ca.pem, subjectAltNames: [api.example.com]}}"
            ),
        ),
        external(
            "wrongsan.example.com",
            "127.0.117.50:8443",
            &format!(
                "{{mode: SIMPLE, caCertificates: {d}/server-ca.pem, sni: api.example.com, subjectAltNames: [bank.example.com]}}"
            ),
        ),
        external(
            "nofile.example.com",
            "127.0.117.50:8443",
            &format!("{{mode: SIMPLE, caCertificates: {d}/missing.pem}}"),
        ),
    ]
    .concat();
    let m = start(117, &yaml).await;
    let client = m.client;
    let call = |host: &str| {
        let url = format!("http://{host}/x");
        async move { get(client, &url, None, &[]).await }
    };

    // SIMPLE: plain HTTP from the app, TLS with SNI to the server.
    let (status, body) = call("api.example.com").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "sni=api.example.com client-cert=false");
    // MUTUAL: the proxy presents the client certificate.
    let (status, body) = call("secure.example.com").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "sni=secure.example.com client-cert=true");
    // The same server refuses a client without one.
    let (status, body) = call("nocert.example.com").await;
    assert!(body.contains("CertificateRequired"), "{body}");
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // subjectAltNames replace the host in the name check.
    let (status, body) = call("alias.example.com").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A server the configured CA did not sign, or whose certificate lacks
    // the required name, gets nothing.
    let (status, body) = call("wrongca.example.com").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("certificate"), "{body}");
    let (status, body) = call("wrongsan.example.com").await;
    assert!(
        body.contains("not valid for name \"bank.example.com\""),
        "{body}"
    );
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // A missing file is named in the answer.
    let (status, body) = call("nofile.example.com").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body.contains("caCertificates") && body.contains("missing.pem"),
        "{body}"
    );
}

/// VirtualService `tls` routes at a sidecar: after CONNECT, the
/// ClientHello's SNI picks the backend; the TLS session is end to end.
#[tokio::test]
async fn tls_routes_pick_backends_by_sni() {
    let dir = std::env::temp_dir().join(format!("weft-tls-routes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let server_ca = ca(&dir, "server");
    let server = leaf(
        &dir,
        &server_ca,
        "server",
        &["shop.example.com", "admin.example.com"],
    );
    https("127.0.137.60:8443".parse().unwrap(), &server, None).await;
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: front, namespace: default}
spec:
  hosts: [shop.example.com, admin.example.com]
  location: MESH_EXTERNAL
  ports: [{number: 443, name: tls, protocol: TLS, targetPort: 8443}]
  resolution: STATIC
  endpoints: [{address: 127.0.137.60}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend-b, namespace: default}
spec:
  hosts: [backend-b.internal]
  location: MESH_EXTERNAL
  ports: [{number: 443, name: tls, protocol: TLS, targetPort: 8443}]
  resolution: STATIC
  endpoints: [{address: 127.0.137.61}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: front, namespace: default}
spec:
  hosts: [shop.example.com, admin.example.com]
  tls:
  - match: [{port: 443, sniHosts: [admin.example.com]}]
    route: [{destination: {host: backend-b.internal, port: {number: 443}}}]
  - match: [{port: 443, sniHosts: [shop.example.com]}]
    route: [{destination: {host: shop.example.com, port: {number: 443}}}]
"#;
    let m = start(137, yaml).await;
    let tunnel = |host: &'static str| tls_through(m.client, host, 443, &server_ca.pem);
    assert_eq!(
        tunnel("shop.example.com").await.unwrap(),
        "sni=shop.example.com client-cert=false"
    );
    // admin's route leads to a backend that is not there.
    assert!(tunnel("admin.example.com").await.is_err());
}
