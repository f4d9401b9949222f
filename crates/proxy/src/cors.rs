//! A route's CORS policy, as Envoy's CORS filter applies it: a preflight
//! from an allowed origin is answered by the proxy; an actual request from
//! an allowed origin is forwarded and its response gets the CORS headers;
//! a preflight from another origin is forwarded to the app, or answered
//! without CORS headers when `unmatchedPreflights` is IGNORE.

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use weft_model::config::Cors;

use crate::http::{Body, full};

/// What the CORS policy makes of a request.
#[derive(Debug)]
pub enum Verdict<'a> {
    /// The proxy answers (a preflight).
    Answer(Response<Body>),
    /// Forward; when the origin is allowed, decorate the response.
    Forward(Option<(&'a Cors, HeaderValue)>),
}

/// Applies `cors` (a route's policy, if it has one) to `req`.
pub fn check<'a, B>(cors: Option<&'a Cors>, req: &Request<B>) -> Verdict<'a> {
    let Some(cors) = cors else {
        return Verdict::Forward(None);
    };
    let Some(origin) = req.headers().get(hyper::header::ORIGIN) else {
        return Verdict::Forward(None);
    };
    let allowed = origin.to_str().is_ok_and(|o| cors.allows(o));
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .get(hyper::header::ACCESS_CONTROL_REQUEST_METHOD)
            .is_some_and(|m| !m.is_empty());
    match (preflight, allowed) {
        (true, true) => {
            let mut resp = full(StatusCode::OK, "");
            let h = resp.headers_mut();
            allow(cors, origin.clone(), h);
            set(
                h,
                hyper::header::ACCESS_CONTROL_ALLOW_METHODS,
                &cors.allow_methods,
            );
            set(
                h,
                hyper::header::ACCESS_CONTROL_ALLOW_HEADERS,
                &cors.allow_headers,
            );
            if let Some(age) = cors.max_age {
                h.insert(
                    hyper::header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from(age),
                );
            }
            Verdict::Answer(resp)
        }
        (true, false) if !cors.forward_unmatched_preflights => {
            Verdict::Answer(full(StatusCode::OK, ""))
        }
        (_, true) => Verdict::Forward(Some((cors, origin.clone()))),
        (_, false) => Verdict::Forward(None),
    }
}

/// The CORS headers of a response to an allowed origin.
pub fn decorate(cors: &Cors, origin: HeaderValue, h: &mut HeaderMap) {
    allow(cors, origin, h);
    set(
        h,
        hyper::header::ACCESS_CONTROL_EXPOSE_HEADERS,
        &cors.expose_headers,
    );
}

/// The origin (echoed, as Envoy does) and whether credentials may go.
fn allow(cors: &Cors, origin: HeaderValue, h: &mut HeaderMap) {
    h.insert(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if cors.allow_credentials {
        h.insert(
            hyper::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

fn set(h: &mut HeaderMap, name: HeaderName, value: &str) {
    if value.is_empty() {
        return;
    }
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}
