//! RequestAuthentication: JWTs found where the rules say (by default
//! `Authorization: Bearer` or `?access_token=`) are validated against the
//! issuer's keys (inline `jwks`, or `jwksUri` fetched, cached and refreshed
//! every 20 minutes as Istio does). A request without a token goes on
//! without a request principal, for AuthorizationPolicy to decide; a token
//! that is invalid, expired, from an unknown issuer, or whose keys cannot
//! be fetched gets 401: there is never a fallback key. Signatures are
//! checked by the `jsonwebtoken` crate (ring), never by hand.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::HeaderValue;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use tokio::net::TcpStream;
use weft_model::Protocol;
use weft_model::authz::RequestAuth;
use weft_model::jwt::JwtRule;
use weft_model::policy::Origination;

use crate::origination::Originator;

/// How long fetched keys are used before they are fetched again.
const REFRESH: Duration = Duration::from_secs(20 * 60);
/// A key set larger than this is refused.
const MAX_JWKS: usize = 1 << 20;

/// Validates tokens; keeps fetched key sets.
#[derive(Debug, Default)]
pub struct Authenticator {
    fetched: RwLock<HashMap<String, (Instant, Arc<JwkSet>)>>,
    /// Inline key sets, parsed, by their text.
    inline: RwLock<HashMap<String, Arc<JwkSet>>>,
    originator: Originator,
}

impl Authenticator {
    /// Finds and validates the request's token. `Ok(None)`: no token;
    /// `Err`: the reason for a 401. On success the token header is removed
    /// unless `forwardOriginalToken`, and the configured outputs are set.
    pub async fn authenticate<B>(
        &self,
        rules: &[JwtRule],
        req: &mut Request<B>,
    ) -> Result<Option<RequestAuth>, String> {
        let Some((token, rule_at, header)) = find_token(rules, req) else {
            return Ok(None);
        };
        let iss = unverified_issuer(&token).ok_or("Jwt is not in a valid format")?;
        let rule = rules
            .iter()
            .find(|r| r.issuer == iss)
            .ok_or("Jwt issuer is not configured")?;
        let keys = self.keys(rule).await?;
        let auth = validate(&token, rule, &keys)?;
        if !rules[rule_at].forward_original_token {
            if let Some(name) = header {
                req.headers_mut().remove(name.as_str());
            }
        }
        if let Some(name) = &rule.output_payload_to_header {
            if let Some(payload) = token.split('.').nth(1) {
                if let Ok(v) = HeaderValue::from_str(payload) {
                    if let Ok(n) = hyper::header::HeaderName::from_bytes(name.as_bytes()) {
                        req.headers_mut().insert(n, v);
                    }
                }
            }
        }
        for (claim, name) in &rule.output_claim_to_headers {
            let key = format!("request.auth.claims[{claim}]");
            if let Some(value) = auth.values(&key).first() {
                if let (Ok(n), Ok(v)) = (
                    hyper::header::HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    req.headers_mut().insert(n, v);
                }
            }
        }
        Ok(Some(auth))
    }

    /// The issuer's keys: inline, or fetched (and cached).
    async fn keys(&self, rule: &JwtRule) -> Result<Arc<JwkSet>, String> {
        if let Some(inline) = &rule.jwks {
            // Parsed once per key set, not per request.
            if let Some(set) = self.inline.read().ok().and_then(|m| m.get(inline).cloned()) {
                return Ok(set);
            }
            let set: Arc<JwkSet> = serde_json::from_str(inline)
                .map(Arc::new)
                .map_err(|e| format!("Jwks doesn't have valid keys: {e}"))?;
            if let Ok(mut m) = self.inline.write() {
                m.insert(inline.clone(), set.clone());
            }
            return Ok(set);
        }
        let uri = rule
            .jwks_uri
            .as_ref()
            .ok_or("Jwks remote fetch is failed: no jwks or jwksUri")?;
        if let Some((at, set)) = self.fetched.read().ok().and_then(|m| m.get(uri).cloned()) {
            if at.elapsed() < REFRESH {
                return Ok(set);
            }
        }
        let set = Arc::new(
            tokio::time::timeout(Duration::from_secs(5), self.fetch(uri))
                .await
                .map_err(|_| format!("Jwks remote fetch is failed: {uri}: timed out"))?
                .map_err(|e| format!("Jwks remote fetch is failed: {uri}: {e}"))?,
        );
        if let Ok(mut m) = self.fetched.write() {
            m.insert(uri.clone(), (Instant::now(), set.clone()));
        }
        Ok(set)
    }

    async fn fetch(&self, uri: &str) -> Result<JwkSet, String> {
        let parsed: Uri = uri.parse().map_err(|e| format!("{e}"))?;
        let host = parsed.host().ok_or("no host")?.to_string();
        let https = parsed.scheme_str() == Some("https");
        let port = parsed.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addr: SocketAddr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| e.to_string())?
            .next()
            .ok_or("no address")?;
        let path = parsed.path_and_query().map_or("/", |p| p.as_str());
        let req = Request::get(path)
            .header(hyper::header::HOST, host.as_str())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let body = if https {
            let settings = Origination {
                sni: Some(host.clone()),
                ..Origination::default()
            };
            let tls = self
                .originator
                .connect(&settings, Protocol::Http, &host, addr)
                .await
                .map_err(|e| e.to_string())?;
            get(TokioIo::new(tls), req).await?
        } else {
            let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
            get(TokioIo::new(tcp), req).await?
        };
        serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))
    }
}

async fn get<I>(io: I, req: Request<Empty<Bytes>>) -> Result<Bytes, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    Limited::new(resp.into_body(), MAX_JWKS)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| e.to_string())
}

/// The first token in a rule's locations: the token, the index of its rule
/// and the header it came in (to remove).
fn find_token<B>(rules: &[JwtRule], req: &Request<B>) -> Option<(String, usize, Option<String>)> {
    for (i, rule) in rules.iter().enumerate() {
        for (name, prefix) in &rule.from_headers {
            for v in req.headers().get_all(name.as_str()) {
                if let Some(t) = v
                    .to_str()
                    .ok()
                    .and_then(|v| v.strip_prefix(prefix.as_str()))
                {
                    return Some((t.trim().to_string(), i, Some(name.clone())));
                }
            }
        }
        let query = req.uri().query().unwrap_or("");
        for param in &rule.from_params {
            let found = query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k == param);
            if let Some((_, v)) = found {
                return Some((v.to_string(), i, None));
            }
        }
        for cookie in &rule.from_cookies {
            let found = req
                .headers()
                .get_all(hyper::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|c| c.trim().split_once('='))
                .find(|(k, _)| k == cookie);
            if let Some((_, v)) = found {
                return Some((v.to_string(), i, None));
            }
        }
    }
    None
}

/// The `iss` of a token's payload, read before verification only to pick
/// the rule (and so the keys) to verify it with.
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_string)
}

fn validate(token: &str, rule: &JwtRule, keys: &JwkSet) -> Result<RequestAuth, String> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| "Jwt is not in a valid format")?;
    let candidates: Vec<_> = keys
        .keys
        .iter()
        .filter(|k| header.kid.is_none() || k.common.key_id == header.kid)
        .collect();
    if candidates.is_empty() {
        return Err("Jwks doesn't have key to match kid or alg from Jwt".into());
    }
    let mut validation = Validation::new(header.alg);
    validation.set_issuer(&[rule.issuer.as_str()]);
    if rule.audiences.is_empty() {
        validation.validate_aud = false;
    } else {
        validation.set_audience(&rule.audiences);
    }
    // `exp` and `nbf` are checked when present, with Envoy's 60 s skew.
    validation.required_spec_claims = HashSet::new();
    validation.validate_nbf = true;
    validation.leeway = 60;
    let mut last = String::from("Jwt verification fails");
    for jwk in candidates {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        match jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation) {
            Ok(data) => return Ok(auth(data.claims)),
            Err(e) => {
                last = match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => "Jwt is expired".into(),
                    jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
                        "Jwt not yet valid".into()
                    }
                    jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                        "Audiences in Jwt are not allowed".into()
                    }
                    _ => "Jwt verification fails".into(),
                }
            }
        }
    }
    Err(last)
}

fn auth(claims: serde_json::Value) -> RequestAuth {
    let text = |k: &str| claims.get(k).and_then(|v| v.as_str()).map(str::to_string);
    let audiences = match claims.get("aud") {
        Some(serde_json::Value::String(a)) => vec![a.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    };
    RequestAuth {
        principal: format!(
            "{}/{}",
            text("iss").unwrap_or_default(),
            text("sub").unwrap_or_default()
        ),
        audiences,
        presenter: text("azp"),
        claims,
    }
}
