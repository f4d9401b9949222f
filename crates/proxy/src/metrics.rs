//! Istio's standard metrics, with Istio's names, label names and buckets,
//! so existing dashboards and alerts work: served on 15090 at
//! `/stats/prometheus`.

use std::sync::{Arc, RwLock};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Label name and value pairs in Istio's order.
pub type Labels = Vec<(&'static str, String)>;

/// Istio's request duration buckets, in milliseconds.
const DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];
/// Istio's request and response size buckets, in bytes.
const SIZE_BUCKETS: [f64; 9] = [
    1.0,
    10.0,
    100.0,
    1000.0,
    10000.0,
    100000.0,
    1000000.0,
    10000000.0,
    100000000.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn size_histogram() -> Histogram {
    Histogram::new(SIZE_BUCKETS)
}

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// The metrics of one label set, looked up once and then reused.
#[derive(Debug)]
pub struct RequestHandles {
    /// The label set these metrics carry.
    labels: Labels,
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

impl RequestHandles {
    /// One finished request.
    pub fn observe(&self, duration_ms: f64, request_bytes: u64, response_bytes: u64) {
        self.requests.inc();
        self.duration.observe(duration_ms);
        self.request_bytes.observe(request_bytes as f64);
        self.response_bytes.observe(response_bytes as f64);
    }
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Label sets already built, by a hash of what determines them: most
    /// requests skip building and hashing 25 labels four times.
    cache: RwLock<crate::FastMap<u64, Arc<RequestHandles>>>,
    /// Hashes what determines a label set into its cache key.
    keys: foldhash::fast::RandomState,
    requests: Family<Labels, Counter>,
    duration: HistogramFamily,
    request_bytes: HistogramFamily,
    response_bytes: HistogramFamily,
    tcp_opened: Family<Labels, Counter>,
    tcp_closed: Family<Labels, Counter>,
    tcp_sent: Family<Labels, Counter>,
    tcp_received: Family<Labels, Counter>,
    denials: Family<Labels, Counter>,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let requests = Family::<Labels, Counter>::default();
        let duration =
            HistogramFamily::new_with_constructor(duration_histogram as fn() -> Histogram);
        let request_bytes =
            HistogramFamily::new_with_constructor(size_histogram as fn() -> Histogram);
        let response_bytes =
            HistogramFamily::new_with_constructor(size_histogram as fn() -> Histogram);
        let tcp_opened = Family::<Labels, Counter>::default();
        let tcp_closed = Family::<Labels, Counter>::default();
        let tcp_sent = Family::<Labels, Counter>::default();
        let tcp_received = Family::<Labels, Counter>::default();
        let denials = Family::<Labels, Counter>::default();
        // Counters get their `_total` suffix from the encoder.
        registry.register("istio_requests", "Total requests", requests.clone());
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration",
            duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body size",
            request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body size",
            response_bytes.clone(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "TCP connections opened",
            tcp_opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "TCP connections closed",
            tcp_closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to the peer",
            tcp_sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from the peer",
            tcp_received.clone(),
        );
        registry.register(
            "weft_authorization_denials",
            "Requests and connections refused by authorization, by deciding policy",
            denials.clone(),
        );
        Arc::new(Metrics {
            registry,
            cache: RwLock::default(),
            keys: foldhash::fast::RandomState::default(),
            requests,
            duration,
            request_bytes,
            response_bytes,
            tcp_opened,
            tcp_closed,
            tcp_sent,
            tcp_received,
            denials,
        })
    }

    /// A request or connection authorization refused.
    pub fn denied(&self, policy: Option<&str>, protocol: &str) {
        let labels: Labels = vec![
            ("policy", policy.unwrap_or("none matched").to_string()),
            ("request_protocol", protocol.to_string()),
        ];
        self.denials.get_or_create(&labels).inc();
    }

    fn handles_for(&self, labels: &Labels) -> RequestHandles {
        RequestHandles {
            labels: labels.clone(),
            requests: self.requests.get_or_create(labels).clone(),
            duration: self.duration.get_or_create(labels).clone(),
            request_bytes: self.request_bytes.get_or_create(labels).clone(),
            response_bytes: self.response_bytes.get_or_create(labels).clone(),
        }
    }

    /// The cache key of what determines a label set.
    pub fn key(&self, what: impl std::hash::Hash) -> u64 {
        std::hash::BuildHasher::hash_one(&self.keys, what)
    }

    /// The metrics for the label set that `key` stands for, building the
    /// labels only the first time.
    pub fn cached(&self, key: u64, labels: impl FnOnce() -> Labels) -> Arc<RequestHandles> {
        if let Some(h) = self.cache.read().ok().and_then(|c| c.get(&key).cloned()) {
            return h;
        }
        let handles = Arc::new(self.handles_for(&labels()));
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(key, handles.clone());
        }
        handles
    }

    /// The metrics of `handles`' label set with the response flag and gRPC
    /// status of how the response ended, when they differ from what its
    /// head said.
    pub fn settled(
        &self,
        key: u64,
        handles: Arc<RequestHandles>,
        outcome: crate::telemetry::Outcome,
    ) -> Arc<RequestHandles> {
        self.cached(self.key((key, outcome)), || {
            let mut labels = handles.labels.clone();
            for (k, v) in &mut labels {
                match *k {
                    "response_flags" => *v = outcome.flag.unwrap_or("-").to_string(),
                    "grpc_response_status" => {
                        *v = outcome
                            .grpc_status
                            .map(|s| s.to_string())
                            .unwrap_or_default();
                    }
                    _ => {}
                }
            }
            labels
        })
    }

    /// Forgets cached label sets (the workload's own labels changed).
    pub fn forget_cached(&self) {
        if let Ok(mut cache) = self.cache.write() {
            cache.clear();
        }
    }

    pub fn tcp_opened(&self, labels: &Labels) {
        self.tcp_opened.get_or_create(labels).inc();
    }

    /// One finished connection with the bytes each way.
    pub fn tcp_closed(&self, labels: &Labels, sent: u64, received: u64) {
        self.tcp_closed.get_or_create(labels).inc();
        self.tcp_sent.get_or_create(labels).inc_by(sent);
        self.tcp_received.get_or_create(labels).inc_by(received);
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}
