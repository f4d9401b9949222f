//! RequestAuthentication through real sidecars: tokens signed with a key of
//! the test's own, keys inline or fetched from a JWKS server on loopback;
//! valid tokens give a request principal and claims to AuthorizationPolicy,
//! bad ones get 401, and keys that cannot be fetched refuse every token.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

mod common;

use std::net::SocketAddr;

use common::{ISSUER, get, jwks_server, now, signer, start, token};
use hyper::StatusCode;

fn policies(jwks_field: &str) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: default}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  jwtRules:
  - issuer: {ISSUER}
    {jwks_field}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: require-jwt, namespace: default}}
spec:
  selector: {{matchLabels: {{app: reviews}}}}
  rules:
  - to: [{{operation: {{paths: ["/public"]}}}}]
  - from: [{{source: {{requestPrincipals: ["{ISSUER}/alice"]}}}}]
    to: [{{operation: {{paths: ["/headers"]}}}}]
  - from: [{{source: {{requestPrincipals: ["*"]}}}}]
    to: [{{operation: {{paths: ["/group1"]}}}}]
    when: [{{key: "request.auth.claims[groups]", values: [group1]}}]
"#
    )
}

const R: &str = "http://reviews.default.svc.cluster.local:9080";

async fn call(client: SocketAddr, path: &str, token: Option<&str>) -> (StatusCode, String) {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = bearer
        .as_deref()
        .map(|b| vec![("authorization", b)])
        .unwrap_or_default();
    get(client, &format!("{R}{path}"), None, &headers).await
}

#[tokio::test]
async fn tokens_decide_with_inline_keys() {
    let s = signer("k1");
    let m = start(129, &policies(&format!("jwks: '{}'", s.jwks))).await;
    let alice = token(
        &s,
        "k1",
        serde_json::json!({"iss": ISSUER, "sub": "alice", "exp": now() + 3600, "groups": ["group1", "group2"]}),
    );
    let bob = token(
        &s,
        "k1",
        serde_json::json!({"iss": ISSUER, "sub": "bob", "exp": now() + 3600, "groups": "group3"}),
    );
    // Without a token: no request principal; policies decide.
    assert_eq!(call(m.client, "/public", None).await.0, StatusCode::OK);
    assert_eq!(
        call(m.client, "/headers", None).await.0,
        StatusCode::FORBIDDEN
    );
    // Alice's valid token: her principal and claims decide; the app does
    // not see the token (forwardOriginalToken is false).
    let (status, body) = call(m.client, "/headers", Some(&alice)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        !body.to_ascii_lowercase().contains("authorization:"),
        "{body}"
    );
    assert_eq!(
        call(m.client, "/group1", Some(&alice)).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(m.client, "/group1", Some(&bob)).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(m.client, "/headers", Some(&bob)).await.0,
        StatusCode::FORBIDDEN
    );
    // Bad tokens: 401, whatever the policies say.
    let expired = token(
        &s,
        "k1",
        serde_json::json!({"iss": ISSUER, "sub": "alice", "exp": now() - 3600}),
    );
    let (status, body) = call(m.client, "/public", Some(&expired)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, "Jwt is expired")
    );
    let forged = token(
        &signer("k1"),
        "k1",
        serde_json::json!({"iss": ISSUER, "sub": "alice", "exp": now() + 3600}),
    );
    let (status, body) = call(m.client, "/public", Some(&forged)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, "Jwt verification fails")
    );
    let stranger = token(
        &s,
        "k1",
        serde_json::json!({"iss": "someone@else", "sub": "alice", "exp": now() + 3600}),
    );
    let (status, body) = call(m.client, "/public", Some(&stranger)).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::UNAUTHORIZED, "Jwt issuer is not configured")
    );
    let (status, _) = call(m.client, "/public", Some("not.a.jwt")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn keys_are_fetched_and_unreachable_keys_refuse_tokens() {
    let s = signer("k2");
    jwks_server("127.0.130.70:8080".parse().unwrap(), s.jwks.clone()).await;
    let m = start(
        130,
        &policies("jwksUri: http://127.0.130.70:8080/.well-known/jwks.json"),
    )
    .await;
    let alice = token(
        &s,
        "k2",
        serde_json::json!({"iss": ISSUER, "sub": "alice", "exp": now() + 3600}),
    );
    let (status, body) = call(m.client, "/headers", Some(&alice)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // A JWKS that cannot be fetched: no fallback key, the token is refused.
    let m = start(
        131,
        &policies("jwksUri: http://127.0.131.70:8080/jwks.json"),
    )
    .await;
    let (status, body) = call(m.client, "/headers", Some(&alice)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(body.starts_with("Jwks remote fetch is failed"), "{body}");
    // Without a token the request still goes to the policies.
    assert_eq!(call(m.client, "/public", None).await.0, StatusCode::OK);
}
