//! Authorization where a request enters a workload or a gateway: the path
//! is normalized (and sent on normalized), then the workload's compiled
//! AuthorizationPolicies decide; a denial is logged with the deciding
//! policy and counted.

use std::net::{IpAddr, SocketAddr};

use hyper::{Request, Response, StatusCode};
use weft_model::ProxyConfig;
use weft_model::authz::{self, Decision};

use crate::ext_authz;
use crate::http::{Body, full};
use crate::jwt::Authenticator;
use crate::metrics::Metrics;
use crate::outbound::Outbound;

/// Logs and counts a denial; the deciding policy, for the refusal.
pub fn denied(
    metrics: &Metrics,
    decision: &Decision,
    protocol: &str,
    source: SocketAddr,
) -> String {
    let by = decision
        .policy
        .as_deref()
        .unwrap_or("no ALLOW policy matched");
    tracing::info!(
        "authorization denied {protocol} from {source}: {} ({by}, rule {:?})",
        decision.reason,
        decision.rule
    );
    metrics.denied(decision.policy.as_deref(), protocol);
    by.to_string()
}

/// Where a request came from and went to.
#[derive(Debug, Clone, Copy)]
pub struct Connection<'a> {
    /// The peer's SPIFFE ID (none over plaintext or at a gateway).
    pub principal: Option<&'a str>,
    pub source: SocketAddr,
    /// The original client, when trusted proxies say who it is.
    pub remote: Option<IpAddr>,
    pub destination: SocketAddr,
    /// The server name the client asked for in its TLS handshake, where
    /// the proxy terminated it (a gateway's HTTPS servers).
    pub sni: Option<&'a str>,
}

/// Normalizes the path of `req` from `principal` at `source` to
/// `destination`, authenticates its JWT and authorizes it; the answer when
/// it may not go on.
pub async fn refuse_http<B>(
    config: &ProxyConfig,
    outbound: &Outbound,
    authenticator: &Authenticator,
    req: &mut Request<B>,
    conn: Connection<'_>,
) -> Option<Response<Body>> {
    let Connection {
        principal,
        source,
        remote,
        destination,
        sni,
    } = conn;
    // Authorized by the name without its final dot, as it is routed.
    crate::http::strip_host_dot(req);
    if let Err(e) = crate::http::normalize_request(req, config.path_normalization) {
        return Some(full(StatusCode::BAD_REQUEST, format!("{e}\n")));
    }
    // Nothing to decide: no policy and no token rule for this workload.
    if config.authz.policies.is_empty() && config.jwt.is_empty() {
        return None;
    }
    // Boxed, as the provider call below: the rare, large futures stay out
    // of every request's future.
    let auth = match Box::pin(authenticator.authenticate(&config.jwt, req)).await {
        Ok(auth) => auth,
        Err(reason) => {
            tracing::info!("authentication refused a request from {source}: {reason}");
            let mut resp = full(StatusCode::UNAUTHORIZED, reason);
            resp.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer"),
            );
            return Some(resp);
        }
    };
    let headers = req.headers();
    let values = |name: &str| -> Vec<&str> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    };
    // An absolute URI's authority is the target and Host is ignored (RFC
    // 9112), as routing does: a policy must see the host the request goes
    // to, whatever Host claims.
    // Userinfo (`user@`) is no part of the host.
    let authority = req.uri().authority().map(|a| a.as_str());
    let host = authority
        .map(|a| a.rsplit_once('@').map_or(a, |(_, host)| host))
        .or_else(|| {
            headers
                .get(hyper::header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let decision = config.authz.evaluate(&authz::Request {
        principal,
        source_ip: Some(source.ip()),
        remote_ip: remote,
        destination,
        sni,
        http: Some(authz::HttpRequest {
            method: req.method().as_str(),
            host,
            path: req.uri().path(),
            headers: &values,
            auth: auth.as_ref(),
        }),
    });
    for note in &decision.notes {
        tracing::info!("authorization: {note}");
    }
    // CUSTOM: the provider is asked first, as Envoy's ext_authz filter
    // runs before RBAC; its denial is the answer.
    if let Some((policy, provider)) = &decision.ask {
        match Box::pin(ext_authz::check(outbound, config, provider, req, &conn)).await {
            Ok(headers) => {
                for (name, value) in headers {
                    req.headers_mut().insert(name, value);
                }
            }
            Err(resp) => {
                tracing::info!("authorization denied http from {source}: CUSTOM policy {policy}");
                outbound.metrics.denied(Some(policy), "http");
                return Some(*resp);
            }
        }
    }
    if decision.allowed {
        // Routing may match on the token's claims (`@request.auth.claims`).
        if let Some(auth) = auth {
            req.extensions_mut().insert(auth);
        }
        return None;
    }
    denied(&outbound.metrics, &decision, "http", source);
    Some(full(StatusCode::FORBIDDEN, "RBAC: access denied"))
}
