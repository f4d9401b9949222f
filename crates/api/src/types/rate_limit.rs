//! Rate limits: weft's own `RateLimit` resource (`weft.dev/v1alpha1`), and
//! the one EnvoyFilter shape weft applies, Envoy's local rate limit as
//! Istio's rate-limit task configures it, read into the same terms.

use serde::Deserialize;

use super::common::{Duration, WorkloadSelector};
use super::envoy_filter::{ApplyTo, EnvoyFilter, PatchContext, PatchOperation};

/// `kind: RateLimit`: token buckets on the requests the selected proxies
/// route (a sidecar's calls out, a gateway's routes).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// The proxies that enforce it, in the resource's namespace (every
    /// namespace from the root namespace); none selects them all.
    pub selector: Option<WorkloadSelector>,
    #[serde(default)]
    pub limits: Vec<Limit>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limit {
    /// Request hosts it applies to (`*` patterns); none: every host.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// The VirtualService route (by `name`) it applies to; none: all.
    pub route: Option<String>,
    /// One bucket per value of: `remote.address`, `source.principal`, or
    /// `request.headers[NAME]`; none: one bucket for all.
    pub by: Option<String>,
    /// Requests allowed per `per`.
    pub requests: Option<u64>,
    pub per: Option<Duration>,
    /// The bucket's size (requests allowed at once); `requests` if unset.
    pub burst: Option<u64>,
    /// Shared by every proxy the resource selects, counted in Redis.
    pub shared: Option<Shared>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Shared {
    /// `HOST:PORT` of the Redis server.
    pub redis: Option<String>,
}

/// Where an EnvoyFilter's local rate limit applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitContext {
    /// Requests to the workload (SIDECAR_INBOUND).
    Inbound,
    /// The workload's calls (SIDECAR_OUTBOUND).
    Outbound,
    /// A gateway's routes (GATEWAY).
    Gateway,
    /// All of them (ANY, or no context).
    Any,
}

/// A token bucket from Envoy's LocalRateLimit configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalBucket {
    /// The index of the patch that configures it.
    pub patch: usize,
    pub context: LimitContext,
    /// The route configuration's virtual host: `inbound|http|PORT` names a
    /// port of the workload, `HOST:PORT` a host and port; none: all.
    pub vhost: Option<String>,
    /// The route's name; none (or action ANY): every route.
    pub route: Option<String>,
    pub max_tokens: u64,
    pub tokens_per_fill: u64,
    pub fill_interval: std::time::Duration,
    /// Fractions (per million) of requests checked, and of those limited.
    pub enabled: u32,
    pub enforced: u32,
    /// `response_headers_to_add` of limited responses.
    pub headers: Vec<(String, String)>,
}

const LOCAL: &str = "envoy.filters.http.local_ratelimit";
const LOCAL_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
const TYPED_STRUCT: &[&str] = &[
    "type.googleapis.com/udpa.type.v1.TypedStruct",
    "type.googleapis.com/xds.type.v3.TypedStruct",
];

impl EnvoyFilter {
    /// The local rate limit this EnvoyFilter configures, in the shapes of
    /// Istio's rate-limit task: an HTTP_FILTER inserting
    /// `envoy.filters.http.local_ratelimit` with a token bucket (for the
    /// whole listener), optionally with HTTP_ROUTE patches merging a
    /// per-route token bucket in `typed_per_filter_config`. Anything else
    /// is `Err` with what weft cannot apply.
    pub fn local_rate_limit(&self) -> Result<Vec<LocalBucket>, String> {
        let mut buckets = Vec::new();
        let mut filter = false;
        for (i, p) in self.config_patches.iter().enumerate() {
            let at = format!("configPatches[{i}]");
            let patch = p.patch.as_ref().ok_or(format!("{at}: no patch"))?;
            let value = patch.value.as_ref();
            let m = p.r#match.as_ref();
            let context = match m.and_then(|m| m.context) {
                None | Some(PatchContext::Any) => LimitContext::Any,
                Some(PatchContext::SidecarInbound) => LimitContext::Inbound,
                Some(PatchContext::SidecarOutbound) => LimitContext::Outbound,
                Some(PatchContext::Gateway) => LimitContext::Gateway,
                Some(PatchContext::Waypoint) => {
                    return Err(format!("{at}: context WAYPOINT (weft has no waypoints)"));
                }
            };
            match (p.apply_to, patch.operation) {
                (
                    Some(ApplyTo::HttpFilter),
                    Some(
                        PatchOperation::InsertBefore
                        | PatchOperation::InsertAfter
                        | PatchOperation::InsertFirst
                        | PatchOperation::Add,
                    ),
                ) => {
                    let value = value.ok_or(format!("{at}: the patch has no value"))?;
                    if value.get("name").and_then(|n| n.as_str()) != Some(LOCAL) {
                        return Err(format!(
                            "{at}: the HTTP filter is {}, not {LOCAL}",
                            value
                                .get("name")
                                .and_then(|n| n.as_str())
                                .unwrap_or("unnamed")
                        ));
                    }
                    filter = true;
                    let config = local_config(value.get("typed_config"))
                        .map_err(|e| format!("{at}: {e}"))?;
                    if let Some(b) = bucket(config).map_err(|e| format!("{at}: {e}"))? {
                        buckets.push(LocalBucket {
                            patch: i,
                            context,
                            vhost: None,
                            route: None,
                            ..b
                        });
                    }
                }
                (Some(ApplyTo::HttpRoute), Some(PatchOperation::Merge)) => {
                    let per_route = value
                        .and_then(|v| v.get("typed_per_filter_config"))
                        .and_then(|c| c.get(LOCAL))
                        .ok_or(format!(
                            "{at}: the route patch has no typed_per_filter_config for {LOCAL}"
                        ))?;
                    let config = local_config(Some(per_route)).map_err(|e| format!("{at}: {e}"))?;
                    let b = bucket(config)
                        .map_err(|e| format!("{at}: {e}"))?
                        .ok_or(format!(
                            "{at}: the route's local rate limit has no token_bucket"
                        ))?;
                    let vhost = m
                        .and_then(|m| m.route_configuration.as_ref())
                        .and_then(|r| r.vhost.as_ref());
                    let route = vhost
                        .and_then(|v| v.route.as_ref())
                        .and_then(|r| r.name.clone());
                    buckets.push(LocalBucket {
                        patch: i,
                        context,
                        vhost: vhost.and_then(|v| v.name.clone()).filter(|n| !n.is_empty()),
                        route,
                        ..b
                    });
                }
                (apply, op) => {
                    return Err(format!(
                        "{at}: applyTo {} with operation {} is not a local rate limit",
                        screaming(apply),
                        screaming(op)
                    ));
                }
            }
        }
        if !filter {
            return Err(format!("no HTTP_FILTER patch inserts {LOCAL}"));
        }
        Ok(buckets)
    }
}

/// An enum value as Istio's YAML spells it (`HTTP_FILTER`).
fn screaming<T: std::fmt::Debug>(v: Option<T>) -> String {
    let Some(v) = v else {
        return "unset".into();
    };
    let mut out = String::new();
    for (i, c) in format!("{v:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// The LocalRateLimit message inside `typed_config`: directly, or as the
/// `value` of a TypedStruct.
fn local_config(typed: Option<&serde_json::Value>) -> Result<Option<&serde_json::Value>, String> {
    let Some(typed) = typed else {
        return Ok(None);
    };
    let ty = typed.get("@type").and_then(|t| t.as_str()).unwrap_or("");
    if ty == LOCAL_TYPE {
        return Ok(Some(typed));
    }
    if TYPED_STRUCT.contains(&ty) {
        let url = typed.get("type_url").and_then(|t| t.as_str()).unwrap_or("");
        if url != LOCAL_TYPE {
            return Err(format!("typed_config is a {url:?}, not LocalRateLimit"));
        }
        return Ok(typed.get("value"));
    }
    Err(format!(
        "typed_config of @type {ty:?} is not LocalRateLimit"
    ))
}

/// The token bucket of a LocalRateLimit message, if it has one; fields
/// weft cannot honour are refused by name.
fn bucket(config: Option<&serde_json::Value>) -> Result<Option<LocalBucket>, String> {
    let Some(config) = config else {
        return Ok(None);
    };
    let known = [
        "stat_prefix",
        "token_bucket",
        "filter_enabled",
        "filter_enforced",
        "response_headers_to_add",
        "local_rate_limit_per_downstream_connection",
        "enable_x_ratelimit_headers",
    ];
    if let Some(obj) = config.as_object() {
        if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(format!("LocalRateLimit field {k} is not supported"));
        }
        if obj
            .get("local_rate_limit_per_downstream_connection")
            .is_some_and(|v| v.as_bool() == Some(true))
        {
            return Err("local_rate_limit_per_downstream_connection: true is not supported".into());
        }
    }
    let Some(tb) = config.get("token_bucket") else {
        return Ok(None);
    };
    let number = |k: &str| -> Result<Option<u64>, String> {
        match tb.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                .map(Some)
                .ok_or(format!("token_bucket.{k} must be a whole number")),
        }
    };
    let max_tokens = number("max_tokens")?
        .filter(|n| *n > 0)
        .ok_or("token_bucket.max_tokens must be at least 1")?;
    let tokens_per_fill = number("tokens_per_fill")?.unwrap_or(1).max(1);
    let fill_interval = tb
        .get("fill_interval")
        .and_then(|v| v.as_str())
        .ok_or("token_bucket.fill_interval is required")
        .and_then(|s| {
            Duration::parse(s).map_err(|_| "token_bucket.fill_interval is not a duration")
        })?
        .0;
    if fill_interval < std::time::Duration::from_millis(50) {
        return Err("token_bucket.fill_interval must be at least 50ms, as Envoy requires".into());
    }
    let headers = config
        .get("response_headers_to_add")
        .and_then(|v| v.as_array())
        .into_iter()
        .flatten()
        .filter_map(|h| {
            let h = h.get("header")?;
            Some((
                h.get("key")?.as_str()?.to_ascii_lowercase(),
                h.get("value")?.as_str()?.to_string(),
            ))
        })
        .collect();
    Ok(Some(LocalBucket {
        patch: 0,
        context: LimitContext::Any,
        vhost: None,
        route: None,
        max_tokens,
        tokens_per_fill,
        fill_interval,
        enabled: fraction(config.get("filter_enabled"))?,
        enforced: fraction(config.get("filter_enforced"))?,
        headers,
    }))
}

/// A runtime fractional percent's default, per million. Unset is 0, as
/// in Envoy: a local rate limit without `filter_enabled` and
/// `filter_enforced` limits nothing.
fn fraction(v: Option<&serde_json::Value>) -> Result<u32, String> {
    let Some(d) = v.and_then(|v| v.get("default_value")) else {
        return Ok(0);
    };
    let numerator = d.get("numerator").and_then(|n| n.as_u64()).unwrap_or(0);
    let scale = match d
        .get("denominator")
        .and_then(|n| n.as_str())
        .unwrap_or("HUNDRED")
    {
        "HUNDRED" => 10_000,
        "TEN_THOUSAND" => 100,
        "MILLION" => 1,
        other => {
            return Err(format!(
                "denominator {other} is not HUNDRED, TEN_THOUSAND or MILLION"
            ));
        }
    };
    Ok(u32::try_from((numerator * scale).min(1_000_000)).unwrap_or(1_000_000))
}
