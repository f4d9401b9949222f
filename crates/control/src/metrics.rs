//! The control plane's own metrics, with istiod's names where it has one,
//! served on the monitoring port (15014) at `/metrics`.

use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// istiod's buckets for push and convergence times, in seconds.
const SECONDS: [f64; 13] = [
    0.01, 0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

type ByType = Family<Vec<(&'static str, &'static str)>, Counter>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `pilot_xds`: proxies connected now.
    pub connected: Gauge<i64, AtomicI64>,
    /// `pilot_xds_pushes{type}`: pushes sent.
    pub pushes: ByType,
    /// `pilot_xds_push_time`: compile and send of one push.
    pub push_time: Histogram,
    /// `pilot_proxy_convergence_time`: from a configuration change to the
    /// proxy's acknowledgement.
    pub convergence: Histogram,
    /// `pilot_total_xds_rejects{type}`: pushes proxies refused (NACKs).
    pub rejects: ByType,
    /// `weft_config_validation_failures_total`: changes refused as a whole
    /// because the set did not validate.
    pub validation_failures: Counter,
    /// `weft_config_reloads_total`: changes accepted and served.
    pub reloads: Counter,
}

/// The `type` label of weft's one kind of push.
pub const CONFIG: [(&str, &str); 1] = [("type", "config")];

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let connected = Gauge::<i64, AtomicI64>::default();
        let pushes = ByType::default();
        let push_time = Histogram::new(SECONDS);
        let convergence = Histogram::new(SECONDS);
        let rejects = ByType::default();
        let validation_failures = Counter::default();
        let reloads = Counter::default();
        registry.register("pilot_xds", "Proxies connected", connected.clone());
        registry.register("pilot_xds_pushes", "Pushes sent", pushes.clone());
        registry.register(
            "pilot_xds_push_time",
            "Seconds to compile and send one push",
            push_time.clone(),
        );
        registry.register(
            "pilot_proxy_convergence_time",
            "Seconds from a configuration change to the proxy's acknowledgement",
            convergence.clone(),
        );
        registry.register(
            "pilot_total_xds_rejects",
            "Pushes proxies refused",
            rejects.clone(),
        );
        registry.register(
            "weft_config_validation_failures",
            "Configuration changes refused because the set did not validate",
            validation_failures.clone(),
        );
        registry.register(
            "weft_config_reloads",
            "Configuration changes accepted and served",
            reloads.clone(),
        );
        Metrics {
            registry,
            connected,
            pushes,
            push_time,
            convergence,
            rejects,
            validation_failures,
            reloads,
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
