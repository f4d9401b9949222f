//! A loaded resource: its kind, metadata, typed spec, and where it came from.

use std::fmt;
use std::sync::Arc;

use crate::types::common::ObjectMeta;
use crate::types::{
    destination_rule, envoy_filter, gateway, gateway_api, kube, rate_limit, security,
    service_entry, sidecar, telemetry, virtual_service,
};
use crate::yaml::{Node, Pos};

pub const NETWORKING: &str = "networking.istio.io";
pub const SECURITY: &str = "security.istio.io";
pub const TELEMETRY: &str = "telemetry.istio.io";
pub const GATEWAY_API: &str = "gateway.networking.k8s.io";
/// The core Kubernetes group, written without a group in `apiVersion: v1`.
pub const CORE: &str = "";
pub const APPS: &str = "apps";
pub const AUTOSCALING: &str = "autoscaling";
pub const POLICY: &str = "policy";
pub const ADMISSION: &str = "admissionregistration.k8s.io";
/// weft's own resources.
pub const WEFT: &str = "weft.dev";

/// One kind weft reads, and the API versions it is served in.
#[derive(Debug, PartialEq, Eq)]
pub struct KindInfo {
    pub group: &'static str,
    pub kind: &'static str,
    pub versions: &'static [&'static str],
    pub namespaced: bool,
    /// Istio and Gateway API objects refuse unknown fields; Kubernetes
    /// workload objects have far more fields than the mesh reads.
    pub strict: bool,
}

const ISTIO_NET: &[&str] = &["v1", "v1beta1", "v1alpha3"];
const ISTIO_SEC: &[&str] = &["v1", "v1beta1"];

macro_rules! kind {
    ($group:expr, $kind:literal, $versions:expr, $namespaced:expr, $strict:expr) => {
        KindInfo {
            group: $group,
            kind: $kind,
            versions: $versions,
            namespaced: $namespaced,
            strict: $strict,
        }
    };
}

/// Every kind weft models.
pub static KINDS: &[KindInfo] = &[
    kind!(NETWORKING, "VirtualService", ISTIO_NET, true, true),
    kind!(NETWORKING, "DestinationRule", ISTIO_NET, true, true),
    kind!(NETWORKING, "Gateway", ISTIO_NET, true, true),
    kind!(NETWORKING, "ServiceEntry", ISTIO_NET, true, true),
    kind!(NETWORKING, "Sidecar", ISTIO_NET, true, true),
    kind!(NETWORKING, "WorkloadEntry", ISTIO_NET, true, true),
    kind!(NETWORKING, "WorkloadGroup", ISTIO_NET, true, true),
    kind!(NETWORKING, "EnvoyFilter", &["v1alpha3"], true, true),
    kind!(SECURITY, "PeerAuthentication", ISTIO_SEC, true, true),
    kind!(SECURITY, "AuthorizationPolicy", ISTIO_SEC, true, true),
    kind!(SECURITY, "RequestAuthentication", ISTIO_SEC, true, true),
    kind!(TELEMETRY, "Telemetry", &["v1", "v1alpha1"], true, true),
    kind!(GATEWAY_API, "Gateway", &["v1", "v1beta1"], true, true),
    kind!(GATEWAY_API, "HTTPRoute", &["v1", "v1beta1"], true, true),
    kind!(GATEWAY_API, "GRPCRoute", &["v1", "v1alpha2"], true, true),
    kind!(GATEWAY_API, "TCPRoute", &["v1", "v1alpha2"], true, true),
    kind!(
        GATEWAY_API,
        "TLSRoute",
        &["v1", "v1alpha2", "v1alpha3"],
        true,
        true
    ),
    kind!(
        GATEWAY_API,
        "ReferenceGrant",
        &["v1", "v1beta1", "v1alpha2"],
        true,
        true
    ),
    kind!(WEFT, "RateLimit", &["v1alpha1"], true, true),
    kind!(CORE, "Namespace", &["v1"], false, false),
    kind!(CORE, "Service", &["v1"], true, false),
    kind!(CORE, "ServiceAccount", &["v1"], true, false),
    kind!(CORE, "Secret", &["v1"], true, false),
    kind!(CORE, "Pod", &["v1"], true, false),
    kind!(CORE, "ConfigMap", &["v1"], true, false),
    kind!(APPS, "Deployment", &["v1"], true, false),
    kind!(
        AUTOSCALING,
        "HorizontalPodAutoscaler",
        &["v2", "v1"],
        true,
        false
    ),
    kind!(POLICY, "PodDisruptionBudget", &["v1"], true, false),
    kind!(
        ADMISSION,
        "MutatingWebhookConfiguration",
        &["v1"],
        false,
        false
    ),
    kind!(
        ADMISSION,
        "ValidatingWebhookConfiguration",
        &["v1"],
        false,
        false
    ),
];

impl KindInfo {
    pub fn find(group: &str, kind: &str) -> Option<&'static KindInfo> {
        KINDS.iter().find(|k| k.group == group && k.kind == kind)
    }

    /// Whether the group is one of the mesh APIs weft models (for
    /// "unsupported kind" notes).
    pub fn known_group(group: &str) -> bool {
        KINDS.iter().any(|k| k.group == group && k.strict)
    }
}

/// The typed content of a resource.
#[derive(Debug, Clone, PartialEq)]
#[expect(
    clippy::large_enum_variant,
    reason = "resources are built once and kept; boxing would only add a pointer chase"
)]
pub enum Spec {
    VirtualService(virtual_service::VirtualService),
    DestinationRule(destination_rule::DestinationRule),
    Gateway(gateway::Gateway),
    ServiceEntry(service_entry::ServiceEntry),
    Sidecar(sidecar::Sidecar),
    WorkloadEntry(service_entry::WorkloadEntry),
    WorkloadGroup(service_entry::WorkloadGroup),
    EnvoyFilter(envoy_filter::EnvoyFilter),
    PeerAuthentication(security::PeerAuthentication),
    AuthorizationPolicy(security::AuthorizationPolicy),
    RequestAuthentication(security::RequestAuthentication),
    Telemetry(telemetry::Telemetry),
    KubeGateway(gateway_api::Gateway),
    HttpRoute(gateway_api::HttpRoute),
    GrpcRoute(gateway_api::GrpcRoute),
    TcpRoute(gateway_api::L4Route),
    TlsRoute(gateway_api::L4Route),
    ReferenceGrant(gateway_api::ReferenceGrant),
    RateLimit(rate_limit::RateLimit),
    Namespace,
    Service(kube::ServiceSpec),
    ServiceAccount,
    /// A gateway's `credentialName`.
    Secret(kube::SecretData),
    Pod(kube::PodSpec),
    Deployment(kube::DeploymentSpec),
    HorizontalPodAutoscaler(kube::HpaSpec),
    PodDisruptionBudget(kube::PdbSpec),
    ConfigMap(kube::ConfigMapData),
    /// Its `webhooks`.
    MutatingWebhookConfiguration(Vec<kube::Webhook>),
    /// Its `webhooks`.
    ValidatingWebhookConfiguration(Vec<kube::Webhook>),
}

/// Where a resource was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The file as the user named it, or `-` for standard input.
    pub file: Arc<str>,
    pub pos: Pos,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.pos)
    }
}

/// One resource as loaded.
#[derive(Debug, Clone)]
pub struct Resource {
    pub kind: &'static KindInfo,
    pub api_version: String,
    pub meta: ObjectMeta,
    pub name: String,
    /// `None` for cluster-scoped kinds; `default` when a namespaced resource
    /// names none.
    pub namespace: Option<String>,
    pub spec: Spec,
    pub source: Source,
    /// The document the resource came from, to find a field's position.
    pub node: Arc<Node>,
}

impl Resource {
    /// `Kind namespace/name`, as Istio's messages name a resource.
    pub fn origin(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind.kind, self.name),
            None => format!("{} {}", self.kind.kind, self.name),
        }
    }

    pub fn namespace(&self) -> &str {
        self.namespace.as_deref().unwrap_or("")
    }
}
