//! Per-request telemetry: Istio's metric labels for a finished request, a
//! response body that reports its size and duration when it ends, and the
//! facts the router leaves on a response for them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::HeaderName;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::{Request, Response};
use weft_identity::SpiffeId;
use weft_model::config::{Cluster, ClusterEndpoint, WorkloadInfo};

use crate::http::{Body, ResponseFlag};
use crate::metrics::{Labels, Metrics, RequestHandles};

/// The service a request was routed to: its cluster (shared with the
/// configuration), or one of Envoy's clusters of a name only.
#[derive(Debug, Clone)]
pub enum DestService {
    Cluster(Arc<Cluster>),
    Named(&'static str),
}

impl DestService {
    /// Where Envoy sends what REGISTRY_ONLY refuses.
    pub fn black_hole() -> DestService {
        DestService::Named("BlackHoleCluster")
    }

    /// Where Envoy sends what is not in the registry, when ALLOW_ANY.
    pub fn passthrough() -> DestService {
        DestService::Named("PassthroughCluster")
    }

    pub fn host(&self) -> &str {
        match self {
            DestService::Cluster(c) => &c.host,
            DestService::Named(n) => n,
        }
    }

    pub fn namespace(&self) -> Option<&str> {
        match self {
            DestService::Cluster(c) => c.service_namespace.as_deref(),
            DestService::Named(_) => None,
        }
    }

    pub fn cluster(&self) -> &str {
        match self {
            DestService::Cluster(c) => &c.name,
            DestService::Named(n) => n,
        }
    }
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

/// Istio's `request_protocol` of a request: `grpc` by its content type,
/// else `http`.
pub fn request_protocol(headers: &hyper::HeaderMap) -> &'static str {
    let grpc = headers
        .get(hyper::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc { "grpc" } else { "http" }
}

/// Istio's labels, in Istio's order, for a request this proxy sent out
/// (`reporter="source"`).
pub fn outbound_labels(
    me: &WorkloadInfo,
    upstream: Option<&ClusterEndpoint>,
    dest: Option<&DestService>,
    protocol: &str,
    code: u16,
    flag: Option<&str>,
) -> Labels {
    let (src_svc, src_rev) = canonical(&me.labels, &me.name);
    let (dst_svc, dst_rev) = match upstream {
        Some(u) => canonical(&u.labels, u.workload.as_deref().unwrap_or("unknown")),
        None => ("unknown".into(), "latest".into()),
    };
    let host = dest.map_or("unknown", DestService::host).to_string();
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
            dest.and_then(DestService::namespace)
                .unwrap_or("unknown")
                .to_string(),
        ),
        (
            "destination_cluster",
            if upstream.is_some() {
                "Kubernetes".into()
            } else {
                "unknown".into()
            },
        ),
        ("request_protocol", protocol.into()),
        ("response_code", code.to_string()),
        ("grpc_response_status", String::new()),
        ("response_flags", flag.unwrap_or("-").to_string()),
        ("connection_security_policy", "unknown".into()),
    ]
}

/// Labels for a connection this proxy opened (`reporter="source"`): TCP
/// metrics have no response code.
pub fn outbound_tcp_labels(
    me: &WorkloadInfo,
    upstream: &ClusterEndpoint,
    dest: &DestService,
) -> Labels {
    let mut labels = outbound_labels(me, Some(upstream), Some(dest), "tcp", 0, None);
    labels.retain(|(k, _)| !matches!(*k, "response_code" | "grpc_response_status"));
    labels
}

/// Who is on the other end of an inbound connection: its SPIFFE ID from
/// the mTLS handshake (none over plaintext) and, for telemetry only, what
/// its proxy says of its workload in the HBONE CONNECT's `baggage` header.
/// Nothing that decides access is taken from the baggage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PeerMeta {
    pub principal: Option<String>,
    pub workload: Option<String>,
    pub canonical_service: Option<String>,
    pub canonical_revision: Option<String>,
}

impl PeerMeta {
    /// Reads the W3C baggage keys Istio's ambient proxies send
    /// (`k8s.<kind>.name`, `service.name`, `service.version`).
    pub fn new(principal: Option<String>, baggage: Option<&str>) -> PeerMeta {
        let mut meta = PeerMeta {
            principal,
            ..PeerMeta::default()
        };
        for item in baggage.into_iter().flat_map(|b| b.split(',')) {
            let Some((k, v)) = item.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim().to_string());
            match k {
                "service.name" => meta.canonical_service = Some(v),
                "service.version" => meta.canonical_revision = Some(v),
                "k8s.cluster.name" | "k8s.namespace.name" => {}
                _ if k.starts_with("k8s.") && k.ends_with(".name") => meta.workload = Some(v),
                _ => {}
            }
        }
        meta
    }
}

/// What this proxy tells the destination proxy about its workload, in the
/// `baggage` header of each HBONE CONNECT.
pub fn baggage(me: &WorkloadInfo) -> String {
    let (service, revision) = canonical(&me.labels, &me.name);
    format!(
        "k8s.cluster.name=Kubernetes,k8s.namespace.name={},k8s.deployment.name={},service.name={service},service.version={revision}",
        me.namespace, me.name
    )
}

/// Labels for a request or connection this proxy accepted
/// (`reporter="destination"`). `response` is the status and flag of an
/// HTTP request; TCP metrics have neither label.
pub fn inbound_labels(
    me: &WorkloadInfo,
    service: Option<&str>,
    peer: &PeerMeta,
    protocol: &str,
    response: Option<(u16, Option<&str>)>,
) -> Labels {
    let (svc, rev) = canonical(&me.labels, &me.name);
    let peer_ns = peer
        .principal
        .as_deref()
        .and_then(|p| p.parse::<SpiffeId>().ok())
        .map_or_else(|| "unknown".into(), |id| id.namespace().to_string());
    let known = |v: &Option<String>| or_unknown(v.as_ref());
    let mut labels = vec![
        ("reporter", "destination".into()),
        ("source_workload", known(&peer.workload)),
        ("source_canonical_service", known(&peer.canonical_service)),
        (
            "source_canonical_revision",
            peer.canonical_revision
                .clone()
                .unwrap_or_else(|| "latest".into()),
        ),
        ("source_workload_namespace", peer_ns),
        ("source_principal", known(&peer.principal)),
        ("source_app", known(&peer.canonical_service)),
        ("source_version", known(&peer.canonical_revision)),
        (
            "source_cluster",
            if peer.workload.is_some() {
                "Kubernetes".into()
            } else {
                "unknown".into()
            },
        ),
        ("destination_workload", me.name.clone()),
        ("destination_workload_namespace", me.namespace.clone()),
        ("destination_principal", me.identity.clone()),
        ("destination_app", app(me)),
        ("destination_version", or_unknown(me.labels.get("version"))),
        (
            "destination_service",
            service.unwrap_or("unknown").to_string(),
        ),
        ("destination_canonical_service", svc),
        ("destination_canonical_revision", rev),
        (
            "destination_service_name",
            service
                .and_then(|s| s.split('.').next())
                .unwrap_or("unknown")
                .to_string(),
        ),
        ("destination_service_namespace", me.namespace.clone()),
        ("destination_cluster", "Kubernetes".into()),
        ("request_protocol", protocol.into()),
    ];
    let mut flag = "-";
    if let Some((code, f)) = response {
        labels.push(("response_code", code.to_string()));
        labels.push(("grpc_response_status", String::new()));
        flag = f.unwrap_or("-");
    }
    labels.push(("response_flags", flag.into()));
    let security = if peer.principal.is_some() {
        "mutual_tls"
    } else {
        "none"
    };
    labels.push(("connection_security_policy", security.into()));
    labels
}

/// A request on its way through a listener: what its metrics and access-log
/// line need, taken before it is answered.
#[derive(Debug)]
pub struct Observation {
    started: Instant,
    request_bytes: u64,
    log: Option<(AccessLog, AccessEntry)>,
}

impl Observation {
    /// Starts observing `req` from `downstream`. With the access log off,
    /// nothing is copied for it.
    pub fn begin<B>(
        req: &Request<B>,
        downstream: SocketAddr,
        access_log: Option<&AccessLog>,
    ) -> Observation {
        let header = |name: HeaderName| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let request_bytes: u64 = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        let log = access_log.map(|log| {
            let entry = AccessEntry {
                start_time: SystemTime::now(),
                method: req.method().to_string(),
                path: req
                    .uri()
                    .path_and_query()
                    .map_or("/".into(), |p| p.to_string()),
                protocol: format!("{:?}", req.version()),
                authority: req
                    .uri()
                    .authority()
                    .map(|a| a.to_string())
                    .or_else(|| header(http::header::HOST)),
                user_agent: header(http::header::USER_AGENT),
                request_id: header(crate::trace::X_REQUEST_ID).unwrap_or_default(),
                downstream,
                bytes_received: request_bytes,
            };
            (log.clone(), entry)
        });
        Observation {
            started: Instant::now(),
            request_bytes,
            log,
        }
    }

    /// Records the request (and logs it) when the response body has been
    /// sent: under `handles`, the metrics its head decided (cached in
    /// `metrics` under `key`), or under the same labels with the flag of
    /// an unfinished body (UC, DC) and the gRPC status of its trailers.
    /// `upstream` names the upstream host and cluster, asked only when
    /// there is an access log.
    pub fn finish(
        self,
        resp: Response<Body>,
        metrics: Arc<Metrics>,
        (key, handles): (u64, Arc<RequestHandles>),
        upstream: impl FnOnce() -> (Option<String>, Option<String>),
    ) -> Response<Body> {
        let (parts, body) = resp.into_parts();
        let flag = parts.extensions.get::<ResponseFlag>().map(|f| f.0);
        let status = parts.status.as_u16();
        // A trailers-only gRPC answer has its status in the head. Only a
        // gRPC head (its content type says so) is asked, as Envoy's gRPC
        // statistics do: other heads cost no lookup of a custom name.
        let grpc = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|t| t.as_bytes().starts_with(b"application/grpc"));
        let head_grpc = grpc.then(|| grpc_status(&parts.headers)).flatten();
        let Observation {
            started,
            request_bytes,
            log,
        } = self;
        let log = log.map(|(log, entry)| (log, entry, upstream()));
        let body = Counted::new(body, move |response_bytes, ending, trailer_grpc| {
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            let outcome = Outcome {
                flag: flag.or(ending.flag()),
                grpc_status: trailer_grpc.or(head_grpc),
            };
            let handles = if outcome.flag == flag && outcome.grpc_status.is_none() {
                handles
            } else {
                metrics.settled(key, handles, outcome)
            };
            handles.observe(ms, request_bytes, response_bytes);
            if let Some((log, entry, (upstream_host, cluster))) = log {
                let _ = log.send(entry.line(
                    status,
                    outcome.flag,
                    response_bytes,
                    ms,
                    upstream_host,
                    cluster,
                ));
            }
        });
        Response::from_parts(parts, BodyExt::boxed(body))
    }
}

/// How a request turned out, once its response has been sent: Envoy's
/// response flag and the gRPC status, which label its metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Outcome {
    pub flag: Option<&'static str>,
    pub grpc_status: Option<u32>,
}

/// The `grpc-status` of a gRPC answer's head or trailers.
fn grpc_status(headers: &hyper::HeaderMap) -> Option<u32> {
    headers
        .get(const { HeaderName::from_static("grpc-status") })?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How a response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Sent to the end.
    Complete,
    /// The upstream connection failed mid-body (Envoy's UC).
    UpstreamReset,
    /// The downstream went away before the end (Envoy's DC).
    DownstreamGone,
}

impl Ending {
    /// Envoy's response flag for an ending that is not complete.
    pub fn flag(self) -> Option<&'static str> {
        match self {
            Ending::Complete => None,
            Ending::UpstreamReset => Some("UC"),
            Ending::DownstreamGone => Some("DC"),
        }
    }
}

/// A response body that counts what passes and, when it ends or is
/// dropped, records the request: it calls `done` with the bytes sent, how
/// the body ended and the gRPC status of its trailers.
pub struct Counted<F: FnOnce(u64, Ending, Option<u32>)> {
    inner: Body,
    bytes: u64,
    /// The gRPC status of the trailers, when they carried one.
    grpc_status: Option<u32>,
    done: Option<F>,
}

impl<F: FnOnce(u64, Ending, Option<u32>)> std::fmt::Debug for Counted<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counted")
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

impl<F: FnOnce(u64, Ending, Option<u32>)> Counted<F> {
    pub fn new(inner: Body, done: F) -> Counted<F> {
        Counted {
            inner,
            bytes: 0,
            grpc_status: None,
            done: Some(done),
        }
    }

    fn finish(&mut self, ending: Ending) {
        if let Some(done) = self.done.take() {
            done(self.bytes, ending, self.grpc_status);
        }
    }
}

impl<F: FnOnce(u64, Ending, Option<u32>)> Drop for Counted<F> {
    fn drop(&mut self) {
        // Dropped before its end was sent: the downstream is gone. (A body
        // that knows it has ended is not polled again.)
        let ending = if self.inner.is_end_stream() {
            Ending::Complete
        } else {
            Ending::DownstreamGone
        };
        self.finish(ending);
    }
}

impl<F: FnOnce(u64, Ending, Option<u32>) + Unpin> HttpBody for Counted<F> {
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
                } else if let Some(trailers) = frame.trailers_ref() {
                    self.grpc_status = grpc_status(trailers);
                }
            }
            Poll::Ready(Some(Err(_))) => self.finish(Ending::UpstreamReset),
            Poll::Ready(None) => self.finish(Ending::Complete),
            Poll::Pending => {}
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

    #[tokio::test]
    async fn a_counted_body_says_how_it_ended() {
        use http_body_util::BodyExt;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let counted = |tx: tokio::sync::mpsc::UnboundedSender<(u64, Ending)>| {
            let resp = crate::http::full(hyper::StatusCode::OK, "hello");
            Counted::new(resp.into_body(), move |bytes, ending, _| {
                let _ = tx.send((bytes, ending));
            })
        };
        let body = counted(tx.clone()).collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello");
        assert_eq!(rx.recv().await, Some((5, Ending::Complete)));
        drop(counted(tx));
        assert_eq!(rx.recv().await, Some((0, Ending::DownstreamGone)));
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
        let tcp = |p: Option<&str>| {
            inbound_labels(
                &me,
                None,
                &PeerMeta::new(p.map(str::to_string), None),
                "tcp",
                None,
            )
        };
        let l = tcp(Some(peer));
        assert_eq!(label(&l, "source_workload_namespace"), "shop");
        assert_eq!(label(&l, "source_principal"), peer);
        assert_eq!(label(&l, "destination_app"), "reviews-v1");
        assert_eq!(label(&l, "destination_version"), "v1");
        let l = tcp(Some("not-a-spiffe-id"));
        assert_eq!(label(&l, "source_workload_namespace"), "unknown");
        let l = tcp(None);
        assert_eq!(label(&l, "source_workload_namespace"), "unknown");
        assert_eq!(label(&l, "source_principal"), "unknown");
    }
}
