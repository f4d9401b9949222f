//! MeshConfig, the mesh-wide settings: from its own YAML file
//! (`--mesh-config FILE`) or from the `mesh` key of the `istio` ConfigMap.
//!
//! As Istio does when it reads mesh config, fields weft does not know are
//! ignored; fields it knows must have the right type.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::common::{Duration, Labels};
use super::destination_rule::LocalityLoadBalancerSetting;
use super::sidecar::OutboundMode;
use super::virtual_service::HttpRetry;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    /// Default `cluster.local`.
    pub trust_domain: Option<String>,
    #[serde(default)]
    pub trust_domain_aliases: Vec<String>,
    /// Default `istio-system`: policies here apply mesh-wide.
    pub root_namespace: Option<String>,
    pub outbound_traffic_policy: Option<MeshOutboundTrafficPolicy>,
    pub inbound_traffic_policy: Option<MeshInboundTrafficPolicy>,
    pub path_normalization: Option<PathNormalization>,
    pub default_config: Option<ProxyConfig>,
    pub enable_tracing: Option<bool>,
    #[serde(default)]
    pub extension_providers: Vec<ExtensionProvider>,
    pub default_providers: Option<DefaultProviders>,
    pub access_log_file: Option<String>,
    pub access_log_format: Option<String>,
    pub access_log_encoding: Option<AccessLogEncoding>,
    pub enable_envoy_access_log_service: Option<bool>,
    pub disable_envoy_listener_log: Option<bool>,
    pub enable_auto_mtls: Option<bool>,
    pub connect_timeout: Option<Duration>,
    pub protocol_detection_timeout: Option<Duration>,
    pub dns_refresh_rate: Option<Duration>,
    pub tcp_keepalive: Option<super::destination_rule::TcpKeepalive>,
    pub h2_upgrade_policy: Option<super::destination_rule::H2UpgradePolicy>,
    #[serde(default)]
    pub default_service_export_to: Vec<String>,
    #[serde(default)]
    pub default_virtual_service_export_to: Vec<String>,
    #[serde(default)]
    pub default_destination_rule_export_to: Vec<String>,
    pub locality_lb_setting: Option<LocalityLoadBalancerSetting>,
    pub default_http_retry_policy: Option<HttpRetry>,
    #[serde(rename = "meshMTLS")]
    pub mesh_mtls: Option<TlsConfig>,
    pub tls_defaults: Option<TlsConfig>,
    pub ingress_class: Option<String>,
    pub ingress_service: Option<String>,
    pub ingress_selector: Option<String>,
    pub ingress_controller_mode: Option<String>,
    pub enable_prometheus_merge: Option<bool>,
    pub verify_certificate_at_client: Option<bool>,
    #[serde(default)]
    pub discovery_selectors: Vec<super::gateway_api::LabelSelector>,
    #[serde(default)]
    pub ca_certificates: Vec<CertificateData>,
    pub proxy_listen_port: Option<u32>,
    pub proxy_inbound_listen_port: Option<u32>,
    pub proxy_http_port: Option<u32>,
    pub inbound_cluster_stat_name: Option<String>,
    pub outbound_cluster_stat_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshOutboundTrafficPolicy {
    pub mode: Option<OutboundMode>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshInboundTrafficPolicy {
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathNormalization {
    pub normalization: Option<NormalizationType>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NormalizationType {
    Default,
    None,
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AccessLogEncoding {
    Text,
    Json,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsConfig {
    pub min_protocol_version: Option<String>,
    #[serde(default)]
    pub ecdh_curves: Vec<String>,
    #[serde(default)]
    pub cipher_suites: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertificateData {
    pub pem: Option<String>,
    pub spiffe_bundle_url: Option<String>,
    #[serde(default)]
    pub cert_signers: Vec<String>,
    #[serde(default)]
    pub trust_domains: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DefaultProviders {
    #[serde(default)]
    pub tracing: Vec<String>,
    #[serde(default)]
    pub metrics: Vec<String>,
    #[serde(default)]
    pub access_logging: Vec<String>,
}

/// A named provider; exactly one of the provider kinds is set.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProvider {
    #[serde(default)]
    pub name: String,
    pub envoy_ext_authz_http: Option<ExtAuthzHttp>,
    pub envoy_ext_authz_grpc: Option<ExtAuthzGrpc>,
    pub zipkin: Option<serde_json::Value>,
    pub lightstep: Option<serde_json::Value>,
    pub datadog: Option<serde_json::Value>,
    pub stackdriver: Option<serde_json::Value>,
    pub opencensus: Option<serde_json::Value>,
    pub skywalking: Option<serde_json::Value>,
    pub opentelemetry: Option<serde_json::Value>,
    pub prometheus: Option<serde_json::Value>,
    pub envoy_file_access_log: Option<serde_json::Value>,
    pub envoy_http_als: Option<serde_json::Value>,
    pub envoy_tcp_als: Option<serde_json::Value>,
    pub envoy_otel_als: Option<serde_json::Value>,
    pub sds: Option<serde_json::Value>,
}

impl ExtensionProvider {
    /// The provider kinds set on this entry, by field name.
    pub fn kinds(&self) -> Vec<&'static str> {
        let set = [
            ("envoyExtAuthzHttp", self.envoy_ext_authz_http.is_some()),
            ("envoyExtAuthzGrpc", self.envoy_ext_authz_grpc.is_some()),
            ("zipkin", self.zipkin.is_some()),
            ("lightstep", self.lightstep.is_some()),
            ("datadog", self.datadog.is_some()),
            ("stackdriver", self.stackdriver.is_some()),
            ("opencensus", self.opencensus.is_some()),
            ("skywalking", self.skywalking.is_some()),
            ("opentelemetry", self.opentelemetry.is_some()),
            ("prometheus", self.prometheus.is_some()),
            ("envoyFileAccessLog", self.envoy_file_access_log.is_some()),
            ("envoyHttpAls", self.envoy_http_als.is_some()),
            ("envoyTcpAls", self.envoy_tcp_als.is_some()),
            ("envoyOtelAls", self.envoy_otel_als.is_some()),
            ("sds", self.sds.is_some()),
        ];
        set.iter().filter(|(_, on)| *on).map(|(k, _)| *k).collect()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtAuthzHttp {
    #[serde(default)]
    pub service: String,
    pub port: Option<u32>,
    pub timeout: Option<Duration>,
    pub path_prefix: Option<String>,
    pub fail_open: Option<bool>,
    pub status_on_error: Option<String>,
    #[serde(default)]
    pub include_request_headers_in_check: Vec<String>,
    #[serde(default)]
    pub include_additional_headers_in_check: Labels,
    #[serde(default)]
    pub headers_to_upstream_on_allow: Vec<String>,
    #[serde(default)]
    pub headers_to_downstream_on_deny: Vec<String>,
    #[serde(default)]
    pub headers_to_downstream_on_allow: Vec<String>,
    pub include_request_body_in_check: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtAuthzGrpc {
    #[serde(default)]
    pub service: String,
    pub port: Option<u32>,
    pub timeout: Option<Duration>,
    pub fail_open: Option<bool>,
    pub status_on_error: Option<String>,
    pub include_request_body_in_check: Option<serde_json::Value>,
}

/// ProxyConfig, the per-proxy defaults under `defaultConfig`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyConfig {
    pub discovery_address: Option<String>,
    pub proxy_admin_port: Option<u32>,
    pub status_port: Option<u32>,
    pub concurrency: Option<i32>,
    pub drain_duration: Option<Duration>,
    pub termination_drain_duration: Option<Duration>,
    pub hold_application_until_proxy_starts: Option<bool>,
    #[serde(default)]
    pub proxy_metadata: BTreeMap<String, String>,
    pub tracing: Option<serde_json::Value>,
    pub gateway_topology: Option<serde_json::Value>,
    pub proxy_stats_matcher: Option<serde_json::Value>,
    pub image: Option<serde_json::Value>,
}
