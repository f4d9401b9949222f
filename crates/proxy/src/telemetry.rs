//! Per-request telemetry: Istio's metric labels for a finished request, a
//! response body that reports its size and duration when it ends, and the
//! facts the router leaves on a response for them.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use weft_identity::SpiffeId;
use weft_model::config::WorkloadInfo;

use crate::http::Body;
use crate::metrics::Labels;

/// The upstream a response came from, left on it by the router.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub address: Option<std::net::SocketAddr>,
    pub workload: Option<String>,
    pub namespace: String,
    pub identity: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// The service a request was routed to.
#[derive(Debug, Clone)]
pub struct DestService {
    pub host: String,
    pub namespace: Option<String>,
    pub cluster: String,
}

fn canonical(labels: &BTreeMap<String, String>, fallback: &str) -> (String, String) {
    let service = labels
        .get("service.istio.io/canonical-name")
        .or_else(|| labels.get("app.kubernetes.io/name"))
        .or_else(|| labels.get("app"))
        .cloned()
        .unwrap_or_else(|| fallback.to_string());
    let revision = labels
        .get("service.istio.io/canonical-revision")
        .or_else(|| labels.get("app.kubernetes.io/version"))
        .or_else(|| labels.get("version"))
        .cloned()
        .unwrap_or_else(|| "latest".into());
    (service, revision)
}

/// The `app` label, else the workload name.
fn app(me: &WorkloadInfo) -> String {
    me.labels
        .get("app")
        .cloned()
        .unwrap_or_else(|| me.name.clone())
}

fn or_unknown(v: Option<&String>) -> String {
    v.cloned().unwrap_or_else(|| "unknown".into())
}

/// Istio's labels, in Istio's order, for a request this proxy sent out
/// (`reporter="source"`).
pub fn outbound_labels(
    me: &WorkloadInfo,
    upstream: Option<&Upstream>,
    dest: Option<&DestService>,
    code: u16,
    flag: Option<&str>,
) -> Labels {
    let (src_svc, src_rev) = canonical(&me.labels, &me.name);
    let (dst_svc, dst_rev) = match upstream {
        Some(u) => canonical(&u.labels, u.workload.as_deref().unwrap_or("unknown")),
        None => ("unknown".into(), "latest".into()),
    };
    let host = dest.map_or("unknown".to_string(), |d| d.host.clone());
    let service_name = host.split('.').next().unwrap_or("unknown").to_string();
    vec![
        ("reporter", "source".into()),
        ("source_workload", me.name.clone()),
        ("source_canonical_service", src_svc),
        ("source_canonical_revision", src_rev),
        ("source_workload_namespace", me.namespace.clone()),
        ("source_principal", me.identity.clone()),
        ("source_app", app(me)),
        ("source_version", or_unknown(me.labels.get("version"))),
        ("source_cluster", "Kubernetes".into()),
        (
            "destination_workload",
            or_unknown(upstream.and_then(|u| u.workload.as_ref())),
        ),
        (
            "destination_workload_namespace",
            upstream.map_or("unknown".into(), |u| u.namespace.clone()),
        ),
        (
            "destination_principal",
            or_unknown(upstream.and_then(|u| u.identity.as_ref())),
        ),
        (
            "destination_app",
            or_unknown(upstream.and_then(|u| u.labels.get("app"))),
        ),
        (
            "destination_version",
            or_unknown(upstream.and_then(|u| u.labels.get("version"))),
        ),
        ("destination_service", host),
        ("destination_canonical_service", dst_svc),
        ("destination_canonical_revision", dst_rev),
        ("destination_service_name", service_name),
        (
            "destination_service_namespace",
            or_unknown(dest.and_then(|d| d.namespace.as_ref())),
        ),
        (
            "destination_cluster",
            if upstream.is_some() {
                "Kubernetes".into()
            } else {
                "unknown".into()
            },
        ),
        ("request_protocol", "http".into()),
        ("response_code", code.to_string()),
        ("grpc_response_status", String::new()),
        ("response_flags", flag.unwrap_or("-").to_string()),
        ("connection_security_policy", "unknown".into()),
    ]
}

/// Labels for a connection this proxy accepted over HBONE
/// (`reporter="destination"`): the peer is known by its SPIFFE ID.
pub fn inbound_tcp_labels(me: &WorkloadInfo, peer: Option<&str>) -> Labels {
    let (svc, rev) = canonical(&me.labels, &me.name);
    let peer_ns = peer
        .and_then(|p| p.parse::<SpiffeId>().ok())
        .map_or_else(|| "unknown".into(), |id| id.namespace().to_string());
    vec![
        ("reporter", "destination".into()),
        ("source_workload", "unknown".into()),
        ("source_canonical_service", "unknown".into()),
        ("source_canonical_revision", "latest".into()),
        ("source_workload_namespace", peer_ns),
        ("source_principal", peer.unwrap_or("unknown").to_string()),
        ("source_app", "unknown".into()),
        ("source_version", "unknown".into()),
        ("source_cluster", "unknown".into()),
        ("destination_workload", me.name.clone()),
        ("destination_workload_namespace", me.namespace.clone()),
        ("destination_principal", me.identity.clone()),
        ("destination_app", app(me)),
        ("destination_version", or_unknown(me.labels.get("version"))),
        ("destination_service", "unknown".into()),
        ("destination_canonical_service", svc),
        ("destination_canonical_revision", rev),
        ("destination_service_name", "unknown".into()),
        ("destination_service_namespace", me.namespace.clone()),
        ("destination_cluster", "Kubernetes".into()),
        ("request_protocol", "tcp".into()),
        ("response_flags", "-".into()),
        ("connection_security_policy", "mutual_tls".into()),
    ]
}

/// A response body that counts what passes and, when it ends or is
/// dropped, records the request.
pub struct Counted {
    inner: Body,
    bytes: u64,
    done: Option<Box<dyn FnOnce(u64) + Send + Sync>>,
}

impl std::fmt::Debug for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counted")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl Counted {
    pub fn new(inner: Body, done: impl FnOnce(u64) + Send + Sync + 'static) -> Counted {
        Counted {
            inner,
            bytes: 0,
            done: Some(Box::new(done)),
        }
    }

    fn finish(&mut self) {
        if let Some(done) = self.done.take() {
            done(self.bytes);
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.finish();
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => self.finish(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where access-log lines go: one JSON object per request.
pub type AccessLog = tokio::sync::mpsc::UnboundedSender<String>;

/// What the access log records about a request before it is answered.
#[derive(Debug)]
pub struct AccessEntry {
    pub start_time: std::time::SystemTime,
    pub method: String,
    pub path: String,
    pub protocol: String,
    pub authority: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: String,
    pub downstream: std::net::SocketAddr,
    pub bytes_received: u64,
}

impl AccessEntry {
    /// The JSON line, with Envoy's field names and response flags.
    pub fn line(
        &self,
        code: u16,
        flag: Option<&str>,
        bytes_sent: u64,
        duration_ms: f64,
        upstream_host: Option<String>,
        upstream_cluster: Option<String>,
    ) -> String {
        let start = self
            .start_time
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        serde_json::json!({
            "start_time": start,
            "method": self.method,
            "path": self.path,
            "protocol": self.protocol,
            "response_code": code,
            "response_flags": flag.unwrap_or("-"),
            "bytes_received": self.bytes_received,
            "bytes_sent": bytes_sent,
            "duration": duration_ms.round() as u64,
            "authority": self.authority,
            "user_agent": self.user_agent,
            "x_request_id": self.request_id,
            "downstream_remote_address": self.downstream.to_string(),
            "upstream_host": upstream_host,
            "upstream_cluster": upstream_cluster,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn label<'a>(labels: &'a Labels, name: &str) -> &'a str {
        labels
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .unwrap()
    }

    #[test]
    fn inbound_labels_name_the_peer_namespace_from_its_spiffe_id() {
        let me = WorkloadInfo {
            namespace: "default".into(),
            name: "reviews-v1".into(),
            address: "127.0.0.1".parse().unwrap(),
            service_account: "reviews".into(),
            identity: "spiffe://cluster.local/ns/default/sa/reviews".into(),
            labels: [("version".to_string(), "v1".to_string())].into(),
        };
        let peer = "spiffe://cluster.local/ns/shop/sa/productpage";
        let l = inbound_tcp_labels(&me, Some(peer));
        assert_eq!(label(&l, "source_workload_namespace"), "shop");
        assert_eq!(label(&l, "source_principal"), peer);
        assert_eq!(label(&l, "destination_app"), "reviews-v1");
        assert_eq!(label(&l, "destination_version"), "v1");
        let l = inbound_tcp_labels(&me, Some("not-a-spiffe-id"));
        assert_eq!(label(&l, "source_workload_namespace"), "unknown");
        let l = inbound_tcp_labels(&me, None);
        assert_eq!(label(&l, "source_workload_namespace"), "unknown");
        assert_eq!(label(&l, "source_principal"), "unknown");
    }
}
