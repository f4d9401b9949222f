//! CUSTOM authorization through an HTTP ext_authz service (MeshConfig's
//! `envoyExtAuthzHttp`), as Envoy's ext_authz filter asks it: the same
//! method, the path under `pathPrefix`, Host and the configured headers,
//! no body. A 2xx allows (and `headersToUpstreamOnAllow` go on to the app);
//! any other answer is passed back to the client with
//! `headersToDownstreamOnDeny`; a service that cannot be reached or does
//! not answer in time gives `statusOnError` (403), unless `failOpen`.

use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::HeaderName;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use weft_model::ProxyConfig;
use weft_model::authz::ExtAuthz;
use weft_model::config::RouteAction;

use crate::http::{Body, flagged, full};
use crate::outbound::{self, Outbound};

/// The largest check answer body passed back to a denied client.
const MAX_BODY: usize = 64 * 1024;

/// Asks `provider` about `req`. `Ok`: allowed, with the headers to add to
/// the request; `Err`: the answer for the client.
pub async fn check<B>(
    outbound: &Outbound,
    config: &ProxyConfig,
    provider: &ExtAuthz,
    req: &Request<B>,
) -> Result<Vec<(HeaderName, hyper::header::HeaderValue)>, Box<Response<Body>>> {
    let failed = |why: String| {
        tracing::warn!("ext_authz {}: {why}", provider.name);
        if provider.fail_open {
            Ok(Vec::new())
        } else {
            let status =
                StatusCode::from_u16(provider.status_on_error).unwrap_or(StatusCode::FORBIDDEN);
            Err(Box::new(flagged(status, "UAEX", "ext_authz check failed")))
        }
    };
    let answer = tokio::time::timeout(provider.timeout, ask(outbound, config, provider, req)).await;
    let resp = match answer {
        Ok(Ok(resp)) => resp,
        Ok(Err(why)) => return failed(why),
        Err(_) => return failed("timed out".into()),
    };
    let (parts, body) = resp.into_parts();
    let pick = |names: &[String]| -> Vec<(HeaderName, hyper::header::HeaderValue)> {
        names
            .iter()
            .filter_map(|n| {
                let name = HeaderName::from_bytes(n.as_bytes()).ok()?;
                let value = parts.headers.get(&name)?.clone();
                Some((name, value))
            })
            .collect()
    };
    if parts.status.is_success() {
        return Ok(pick(&provider.headers_to_upstream_on_allow));
    }
    let body = Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut denied = full(parts.status, body);
    for (name, value) in pick(&provider.headers_to_downstream_on_deny) {
        denied.headers_mut().insert(name, value);
    }
    denied
        .extensions_mut()
        .insert(crate::http::ResponseFlag("UAEX"));
    Err(Box::new(denied))
}

/// Sends the check request to an endpoint of the provider's service.
async fn ask<B>(
    outbound: &Outbound,
    config: &ProxyConfig,
    provider: &ExtAuthz,
    req: &Request<B>,
) -> Result<Response<hyper::body::Incoming>, String> {
    let service = config
        .outbound
        .iter()
        .find(|s| s.port == u32::from(provider.port) && s.answers_to(&provider.service))
        .ok_or_else(|| {
            format!(
                "no service {}:{} in the registry",
                provider.service, provider.port
            )
        })?;
    let cluster = service
        .routes
        .iter()
        .find_map(|r| match &r.action {
            RouteAction::Forward(w) => outbound::pick_cluster(outbound, w),
            _ => None,
        })
        .and_then(|w| config.clusters.get(&w.cluster))
        .ok_or("no cluster for the service")?;
    let ep = outbound::pick_endpoint(outbound, cluster).ok_or("no endpoint")?;
    let stream = outbound::open(outbound, cluster, ep).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut check = Request::builder()
        .method(req.method().clone())
        .uri(format!("{}{path}", provider.path_prefix))
        .header(hyper::header::CONTENT_LENGTH, "0");
    if let Some(host) = req.headers().get(hyper::header::HOST) {
        check = check.header(hyper::header::HOST, host.clone());
    }
    for name in &provider.include_request_headers {
        for value in req.headers().get_all(name.as_str()) {
            check = check.header(name.as_str(), value.clone());
        }
    }
    for (name, value) in &provider.include_additional_headers {
        check = check.header(name.as_str(), value.as_str());
    }
    let check = check
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    sender.send_request(check).await.map_err(|e| e.to_string())
}
