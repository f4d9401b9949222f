//! Rate limits compiled for one proxy: weft's `RateLimit` resources that
//! select it, and the local rate limit of EnvoyFilters that select it (the
//! shape of Istio's rate-limit task), as token buckets the proxy keeps.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_api::types::rate_limit::LimitContext;
use weft_api::{Resource, Spec};

use crate::config::host_matches;
use crate::registry::selects;

/// One token bucket (per key value): `max_tokens` at most, refilled with
/// `tokens_per_fill` every `fill_interval`; a request takes one token,
/// and without one gets 429.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    /// `Kind namespace/name` and the limit's index, for logs.
    pub name: String,
    pub at: LimitAt,
    /// Request hosts it applies to; empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// The route (by name) it applies to; none: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    pub key: LimitKey,
    pub max_tokens: u64,
    pub tokens_per_fill: u64,
    #[serde(with = "crate::wire::duration")]
    pub fill_interval: Duration,
    /// Per million requests: checked, and of those, refused when over.
    pub enabled: u32,
    pub enforced: u32,
    /// Added to limited responses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// Counted in this Redis (`HOST:PORT`), shared by every proxy the
    /// limit selects; otherwise counted by this proxy alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shared: Option<String>,
}

/// Which requests a limit sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitAt {
    /// Requests to the workload, on `port` or any.
    Inbound { port: Option<u32> },
    /// What the proxy routes: a sidecar's calls, a gateway's requests.
    Routed,
    /// Both.
    Any,
}

/// What tells one bucket from another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKey {
    /// One bucket.
    None,
    RemoteAddress,
    SourcePrincipal,
    Header(String),
}

impl RateLimit {
    /// Whether the limit applies to a request for `host` (no port) that
    /// took route `route`.
    pub fn applies(&self, host: &str, route: Option<&str>) -> bool {
        (self.hosts.is_empty() || self.hosts.iter().any(|h| host_matches(h, host)))
            && self.route.as_deref().is_none_or(|r| route == Some(r))
    }
}

/// The limits for workload `labels` of `namespace`.
pub fn for_workload(
    resources: &[Resource],
    root_namespace: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<RateLimit> {
    let mut out = Vec::new();
    for r in resources {
        let ns = r.namespace();
        if ns != namespace && ns != root_namespace {
            continue;
        }
        let origin = format!("{} {ns}/{}", r.kind.kind, r.name);
        match &r.spec {
            Spec::RateLimit(rl)
                if rl
                    .selector
                    .as_ref()
                    .is_none_or(|s| selects(&s.match_labels, labels)) =>
            {
                for (i, l) in rl.limits.iter().enumerate() {
                    let (Some(requests), Some(per)) = (l.requests, &l.per) else {
                        continue;
                    };
                    let key = match l.by.as_deref() {
                        None => LimitKey::None,
                        Some("remote.address") => LimitKey::RemoteAddress,
                        Some("source.principal") => LimitKey::SourcePrincipal,
                        Some(h) => LimitKey::Header(
                            h.trim_start_matches("request.headers[")
                                .trim_end_matches(']')
                                .to_ascii_lowercase(),
                        ),
                    };
                    out.push(RateLimit {
                        name: format!("{origin} limits[{i}]"),
                        at: LimitAt::Routed,
                        hosts: l.hosts.clone(),
                        route: l.route.clone(),
                        key,
                        max_tokens: l.burst.unwrap_or(requests),
                        tokens_per_fill: requests,
                        fill_interval: per.0,
                        enabled: 1_000_000,
                        enforced: 1_000_000,
                        headers: Vec::new(),
                        shared: l.shared.as_ref().and_then(|s| s.redis.clone()),
                    });
                }
            }
            Spec::EnvoyFilter(ef)
                if ef
                    .workload_selector
                    .as_ref()
                    .is_none_or(|s| selects(&s.labels, labels))
                    && ef.target_refs.is_empty() =>
            {
                // Anything else was reported unsupported at load.
                let Ok(buckets) = ef.local_rate_limit() else {
                    continue;
                };
                for b in buckets {
                    let (port, host) = vhost(b.vhost.as_deref());
                    let at = match b.context {
                        LimitContext::Inbound => LimitAt::Inbound { port },
                        LimitContext::Outbound | LimitContext::Gateway => LimitAt::Routed,
                        LimitContext::Any => LimitAt::Any,
                    };
                    out.push(RateLimit {
                        name: format!("{origin} configPatches[{}]", b.patch),
                        at,
                        hosts: host.into_iter().collect(),
                        route: b.route,
                        key: LimitKey::None,
                        max_tokens: b.max_tokens,
                        tokens_per_fill: b.tokens_per_fill,
                        fill_interval: b.fill_interval,
                        enabled: b.enabled,
                        enforced: b.enforced,
                        headers: b.headers,
                        shared: None,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

/// Envoy's virtual host names as Istio makes them: `inbound|http|PORT`
/// for a sidecar's inbound port, `HOST:PORT` for an outbound or gateway
/// host (`*:PORT` for any host).
fn vhost(name: Option<&str>) -> (Option<u32>, Option<String>) {
    let Some(name) = name else {
        return (None, None);
    };
    if let Some(port) = name.strip_prefix("inbound|http|") {
        return (port.parse().ok(), None);
    }
    match name.rsplit_once(':') {
        Some((host, port)) => (
            port.parse().ok(),
            Some(host.to_string()).filter(|h| h != "*"),
        ),
        None => (None, Some(name.to_string())),
    }
}
