//! A cluster's traffic policy, merged as Istio merges a DestinationRule:
//! the host-level policy, overridden field by field by its port-level
//! settings, then by the subset's policy and the subset's port-level
//! settings.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_api::types::destination_rule::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRule,
    LoadBalancerSettings, OutlierDetection, SimpleLb, TrafficPolicy,
};

/// How endpoints are picked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Random,
    /// Always the same endpoint for the same key.
    ConsistentHash(HashKey),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HashKey {
    Header(String),
    Cookie(String),
    SourceIp,
    QueryParameter(String),
}

/// Circuit-breaking limits; `None` is Istio's "no limit".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PoolLimits {
    pub max_connections: Option<u32>,
    pub http1_max_pending_requests: Option<u32>,
    pub http2_max_requests: Option<u32>,
    pub max_requests_per_connection: Option<u32>,
    pub max_retries: Option<u32>,
    #[serde(with = "crate::wire::opt_duration")]
    pub connect_timeout: Option<Duration>,
    /// Pooled connections idle this long are closed.
    #[serde(with = "crate::wire::opt_duration")]
    pub idle_timeout: Option<Duration>,
}

impl PoolLimits {
    /// Requests a cluster may have in flight before overflowing (503 UO).
    /// With HTTP/1.1 a connection carries one request at a time, so the
    /// bound is connections plus pending requests, and only when both are
    /// limited (either alone unlimited means requests wait); HTTP/2
    /// requests are bounded on their own.
    pub fn max_active(&self) -> Option<u64> {
        let h1 = match (self.max_connections, self.http1_max_pending_requests) {
            (Some(c), Some(p)) => Some(u64::from(c) + u64::from(p)),
            _ => None,
        };
        match (h1, self.http2_max_requests) {
            (Some(a), Some(b)) => Some(a.min(u64::from(b))),
            (a, b) => a.or(b.map(u64::from)),
        }
    }
}

/// Passive health checking: eject endpoints that keep failing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outlier {
    pub consecutive_5xx: Option<u32>,
    pub consecutive_gateway_errors: Option<u32>,
    #[serde(with = "crate::wire::duration")]
    pub interval: Duration,
    #[serde(with = "crate::wire::duration")]
    pub base_ejection_time: Duration,
    pub max_ejection_percent: u32,
    pub min_health_percent: u32,
}

/// How the proxy secures connections to a cluster's endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamTls {
    /// `ISTIO_MUTUAL` or unset: HBONE (mesh mTLS) to in-mesh endpoints,
    /// plaintext to the rest.
    #[default]
    Mesh,
    /// `DISABLE`: plaintext, even to in-mesh endpoints.
    Disable,
    /// `SIMPLE` or `MUTUAL`: TLS originated by this proxy.
    Originate(Origination),
}

/// TLS origination settings, file paths as the DestinationRule gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origination {
    /// MUTUAL: present `client_certificate` with `private_key`.
    pub mutual: bool,
    pub client_certificate: Option<String>,
    pub private_key: Option<String>,
    /// Roots to verify the server with; the system's when unset.
    pub ca_certificates: Option<String>,
    /// Names the server certificate must carry; the SNI when empty.
    pub subject_alt_names: Vec<String>,
    pub sni: Option<String>,
    pub insecure_skip_verify: bool,
    /// A folder of `tls.crt`, `tls.key` and `ca.crt` for what is not set
    /// above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterPolicy {
    pub lb: LbPolicy,
    pub pool: PoolLimits,
    pub outlier: Option<Outlier>,
    pub tls: UpstreamTls,
}

impl Default for ClusterPolicy {
    fn default() -> Self {
        ClusterPolicy {
            lb: LbPolicy::LeastRequest,
            pool: PoolLimits::default(),
            outlier: None,
            tls: UpstreamTls::Mesh,
        }
    }
}

/// The pieces of a policy that merge, as options.
#[derive(Default, Clone)]
struct Parts<'a> {
    lb: Option<&'a LoadBalancerSettings>,
    pool: Option<&'a ConnectionPoolSettings>,
    outlier: Option<&'a OutlierDetection>,
    tls: Option<&'a ClientTlsSettings>,
}

impl<'a> Parts<'a> {
    fn overlay(mut self, other: Parts<'a>) -> Self {
        self.lb = other.lb.or(self.lb);
        self.pool = other.pool.or(self.pool);
        self.outlier = other.outlier.or(self.outlier);
        self.tls = other.tls.or(self.tls);
        self
    }

    fn policy(self, port: u32, p: Option<&'a TrafficPolicy>) -> Self {
        let Some(p) = p else { return self };
        let mut out = self.overlay(Parts {
            lb: p.load_balancer.as_ref(),
            pool: p.connection_pool.as_ref(),
            outlier: p.outlier_detection.as_ref(),
            tls: p.tls.as_ref(),
        });
        if let Some(pl) = p
            .port_level_settings
            .iter()
            .find(|pl| pl.port.and_then(|x| x.number) == Some(port))
        {
            out = out.overlay(Parts {
                lb: pl.load_balancer.as_ref(),
                pool: pl.connection_pool.as_ref(),
                outlier: pl.outlier_detection.as_ref(),
                tls: pl.tls.as_ref(),
            });
        }
        out
    }
}

/// The policy of (DestinationRule, port, subset); Istio's defaults without one
/// (weft, like Istio, balances by least request).
///
/// `rule` gives the host-level policy; `subset_rule` the rule defining
/// `subset` (they differ when several rules for one host are merged).
pub fn cluster_policy(
    rule: Option<&DestinationRule>,
    subset_rule: Option<&DestinationRule>,
    port: u32,
    subset: Option<&str>,
) -> ClusterPolicy {
    if rule.is_none() && subset_rule.is_none() {
        return ClusterPolicy::default();
    }
    let subset_policy = subset
        .and_then(|s| subset_rule.and_then(|r| r.subsets.iter().find(|x| x.name == s)))
        .and_then(|s| s.traffic_policy.as_ref());
    let parts = Parts::default()
        .policy(port, rule.and_then(|r| r.traffic_policy.as_ref()))
        .policy(port, subset_policy);
    ClusterPolicy {
        lb: parts.lb.map_or(LbPolicy::LeastRequest, lb),
        pool: parts.pool.map(pool).unwrap_or_default(),
        outlier: parts.outlier.map(outlier),
        tls: parts.tls.map_or(UpstreamTls::Mesh, tls),
    }
}

fn tls(t: &ClientTlsSettings) -> UpstreamTls {
    match t.mode {
        None | Some(ClientTlsMode::IstioMutual) => UpstreamTls::Mesh,
        Some(ClientTlsMode::Disable) => UpstreamTls::Disable,
        Some(mode @ (ClientTlsMode::Simple | ClientTlsMode::Mutual)) => {
            UpstreamTls::Originate(Origination {
                mutual: mode == ClientTlsMode::Mutual,
                client_certificate: t.client_certificate.clone(),
                private_key: t.private_key.clone(),
                ca_certificates: t.ca_certificates.clone(),
                subject_alt_names: t.subject_alt_names.clone(),
                sni: t.sni.clone(),
                insecure_skip_verify: t.insecure_skip_verify == Some(true),
                credential_name: t.credential_name.clone(),
            })
        }
    }
}

fn lb(l: &LoadBalancerSettings) -> LbPolicy {
    if let Some(ch) = &l.consistent_hash {
        if let Some(h) = &ch.http_header_name {
            return LbPolicy::ConsistentHash(HashKey::Header(h.to_ascii_lowercase()));
        }
        if let Some(c) = &ch.http_cookie {
            return LbPolicy::ConsistentHash(HashKey::Cookie(c.name.clone()));
        }
        if ch.use_source_ip == Some(true) {
            return LbPolicy::ConsistentHash(HashKey::SourceIp);
        }
        if let Some(q) = &ch.http_query_parameter_name {
            return LbPolicy::ConsistentHash(HashKey::QueryParameter(q.clone()));
        }
    }
    match l.simple {
        Some(SimpleLb::RoundRobin) => LbPolicy::RoundRobin,
        Some(SimpleLb::Random) => LbPolicy::Random,
        _ => LbPolicy::LeastRequest,
    }
}

fn pool(p: &ConnectionPoolSettings) -> PoolLimits {
    let positive = |v: Option<i32>| v.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0);
    PoolLimits {
        max_connections: p.tcp.as_ref().and_then(|t| positive(t.max_connections)),
        connect_timeout: p.tcp.as_ref().and_then(|t| t.connect_timeout.map(|d| d.0)),
        http1_max_pending_requests: p
            .http
            .as_ref()
            .and_then(|h| positive(h.http1_max_pending_requests)),
        http2_max_requests: p.http.as_ref().and_then(|h| positive(h.http2_max_requests)),
        max_requests_per_connection: p
            .http
            .as_ref()
            .and_then(|h| positive(h.max_requests_per_connection)),
        max_retries: p.http.as_ref().and_then(|h| positive(h.max_retries)),
        idle_timeout: p.http.as_ref().and_then(|h| h.idle_timeout.map(|d| d.0)),
    }
}

fn outlier(o: &OutlierDetection) -> Outlier {
    // Istio's defaults: 5 consecutive errors, every 10s, ejected for 30s,
    // at most 10% of the endpoints.
    let consecutive_5xx = o
        .consecutive_5xx_errors
        .or(o.consecutive_errors.and_then(|e| u32::try_from(e).ok()))
        .or(if o.consecutive_gateway_errors.is_none() {
            Some(5)
        } else {
            None
        })
        .filter(|v| *v > 0);
    Outlier {
        consecutive_5xx,
        consecutive_gateway_errors: o.consecutive_gateway_errors.filter(|v| *v > 0),
        interval: o.interval.map_or(Duration::from_secs(10), |d| d.0),
        base_ejection_time: o
            .base_ejection_time
            .map_or(Duration::from_secs(30), |d| d.0),
        max_ejection_percent: o
            .max_ejection_percent
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(10),
        min_health_percent: o
            .min_health_percent
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_needs_both_http1_limits_or_an_http2_limit() {
        let limits = |c, p, h2| PoolLimits {
            max_connections: c,
            http1_max_pending_requests: p,
            http2_max_requests: h2,
            ..PoolLimits::default()
        };
        assert_eq!(limits(Some(1), Some(1), None).max_active(), Some(2));
        assert_eq!(limits(Some(1), None, None).max_active(), None);
        assert_eq!(limits(None, Some(1), None).max_active(), None);
        assert_eq!(limits(None, None, Some(3)).max_active(), Some(3));
        assert_eq!(limits(Some(10), Some(10), Some(3)).max_active(), Some(3));
    }
}
