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

use crate::authorize::Connection;
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
    conn: &Connection<'_>,
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
    if provider.grpc {
        let asked = ask_grpc(outbound, config, provider, req, conn);
        return match tokio::time::timeout(provider.timeout, asked).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(why)) => failed(why),
            Err(_) => failed("timed out".into()),
        };
    }
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

/// A connection to an endpoint of the provider's service, through the
/// mesh when it is in it.
async fn connect(
    outbound: &Outbound,
    config: &ProxyConfig,
    provider: &ExtAuthz,
) -> Result<Box<dyn outbound::Io>, String> {
    let service = config
        .outbound
        .iter()
        .find(|s| {
            s.port == u32::from(provider.port)
                && s.answers_to(&provider.service, &config.workload.namespace)
        })
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
        .ok_or("no cluster for the service")?;
    let cluster = outbound::find_cluster(outbound, config, &cluster.cluster, &service.host)
        .await
        .ok_or("no cluster for the service")?;
    let ep = outbound::pick_endpoint(outbound, &cluster).ok_or("no endpoint")?;
    outbound::open(outbound, &cluster, ep).await
}

/// Sends the HTTP check request.
async fn ask<B>(
    outbound: &Outbound,
    config: &ProxyConfig,
    provider: &ExtAuthz,
    req: &Request<B>,
) -> Result<Response<hyper::body::Incoming>, String> {
    let stream = connect(outbound, config, provider).await?;
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

/// The gRPC check: `envoy.service.auth.v3.Authorization/Check` with the
/// request's attributes; status OK allows (with the headers the answer
/// adds), any other status denies with the answer's HTTP status, headers
/// and body (403 when it gives none).
async fn ask_grpc<B>(
    outbound: &Outbound,
    config: &ProxyConfig,
    provider: &ExtAuthz,
    req: &Request<B>,
    conn: &Connection<'_>,
) -> Result<Result<Vec<(HeaderName, hyper::header::HeaderValue)>, Box<Response<Body>>>, String> {
    use prost::Message;
    use weft_protocol::ext_authz as pb;
    let peer = |principal: Option<&str>, addr: std::net::SocketAddr| pb::attribute_context::Peer {
        address: Some(pb::Address {
            socket_address: Some(pb::SocketAddress {
                address: addr.ip().to_string(),
                port_value: u32::from(addr.port()),
            }),
        }),
        principal: principal.unwrap_or_default().to_string(),
        ..Default::default()
    };
    let mut headers = std::collections::HashMap::<String, String>::new();
    for (name, value) in req.headers() {
        let value = value.to_str().unwrap_or_default();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push(',');
                v.push_str(value);
            })
            .or_insert_with(|| value.to_string());
    }
    let header = |name: &str| headers.get(name).cloned().unwrap_or_default();
    let message = pb::CheckRequest {
        attributes: Some(pb::AttributeContext {
            source: Some(peer(conn.principal, conn.source)),
            destination: Some(peer(None, conn.destination)),
            request: Some(pb::attribute_context::Request {
                http: Some(pb::attribute_context::HttpRequest {
                    id: header("x-request-id"),
                    method: req.method().to_string(),
                    path: req
                        .uri()
                        .path_and_query()
                        .map_or("/".into(), |p| p.to_string()),
                    host: header("host"),
                    scheme: "http".into(),
                    size: -1,
                    protocol: format!("{:?}", req.version()),
                    headers: headers.clone(),
                }),
            }),
            context_extensions: Default::default(),
        }),
    }
    .encode_to_vec();
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0);
    framed.extend_from_slice(
        &u32::try_from(message.len())
            .map_err(|e| e.to_string())?
            .to_be_bytes(),
    );
    framed.extend_from_slice(&message);
    let stream = connect(outbound, config, provider).await?;
    let (mut sender, h2) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .map_err(|e| e.to_string())?;
    tokio::spawn(h2);
    let call = Request::post(format!(
        "http://{}:{}/envoy.service.auth.v3.Authorization/Check",
        provider.service, provider.port
    ))
    .header(hyper::header::CONTENT_TYPE, "application/grpc")
    .header("te", "trailers")
    .body(http_body_util::Full::new(bytes::Bytes::from(framed)))
    .map_err(|e| e.to_string())?;
    let resp = sender.send_request(call).await.map_err(|e| e.to_string())?;
    let collected = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let grpc_status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("0")
        .to_string();
    if grpc_status != "0" {
        return Err(format!("grpc-status {grpc_status}"));
    }
    let body = collected.to_bytes();
    let payload = body.get(5..).ok_or("short gRPC answer")?;
    let answer = pb::CheckResponse::decode(payload).map_err(|e| e.to_string())?;
    let options =
        |opts: &[pb::HeaderValueOption]| -> Vec<(HeaderName, hyper::header::HeaderValue)> {
            opts.iter()
                .filter_map(|o| {
                    let h = o.header.as_ref()?;
                    Some((
                        HeaderName::from_bytes(h.key.as_bytes()).ok()?,
                        hyper::header::HeaderValue::from_str(&h.value).ok()?,
                    ))
                })
                .collect()
        };
    if answer.status.as_ref().map_or(0, |s| s.code) == 0 {
        let add = match &answer.http_response {
            Some(pb::check_response::HttpResponse::OkResponse(ok)) => options(&ok.headers),
            _ => Vec::new(),
        };
        return Ok(Ok(add));
    }
    let (status, headers, body) = match answer.http_response {
        Some(pb::check_response::HttpResponse::DeniedResponse(d)) => (
            d.status.map_or(403, |s| s.code),
            options(&d.headers),
            d.body,
        ),
        _ => (403, Vec::new(), String::new()),
    };
    let status = u16::try_from(status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::FORBIDDEN);
    let mut denied = full(status, body);
    for (name, value) in headers {
        denied.headers_mut().insert(name, value);
    }
    denied
        .extensions_mut()
        .insert(crate::http::ResponseFlag("UAEX"));
    Ok(Err(Box::new(denied)))
}
