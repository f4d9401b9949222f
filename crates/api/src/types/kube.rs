//! The Kubernetes kinds the mesh reads: Namespace, Service, ServiceAccount,
//! Deployment, Pod and ConfigMap. Only the fields the mesh uses are typed;
//! the rest of each object is accepted and ignored, as a controller would.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use super::common::{Labels, ObjectMeta};

/// Kubernetes' `IntOrString` (target ports, resource quantities).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntOrString {
    Int(i64),
    String(String),
}

impl<'de> Deserialize<'de> for IntOrString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = IntOrString;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an integer or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<IntOrString, E> {
                Ok(IntOrString::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<IntOrString, E> {
                i64::try_from(v)
                    .map(IntOrString::Int)
                    .map_err(|_| E::custom("integer out of range"))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<IntOrString, E> {
                Ok(IntOrString::String(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(default)]
    pub selector: Labels,
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    pub r#type: Option<String>,
    #[serde(rename = "clusterIP")]
    pub cluster_ip: Option<String>,
    #[serde(default, rename = "clusterIPs")]
    pub cluster_ips: Vec<String>,
    pub external_name: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    pub name: Option<String>,
    pub port: Option<u32>,
    pub target_port: Option<IntOrString>,
    pub protocol: Option<String>,
    pub app_protocol: Option<String>,
    pub node_port: Option<u32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSpec {
    pub replicas: Option<i32>,
    pub selector: Option<super::gateway_api::LabelSelector>,
    pub template: Option<PodTemplateSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateSpec {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: Option<PodSpec>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    pub service_account_name: Option<String>,
    /// Deprecated alias of `serviceAccountName`.
    pub service_account: Option<String>,
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub init_containers: Vec<Container>,
    pub security_context: Option<SecurityContext>,
    pub host_network: Option<bool>,
}

/// The part of a pod's or container's `securityContext` the mesh reads.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    pub run_as_user: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default)]
    pub name: String,
    pub image: Option<String>,
    #[serde(default)]
    pub ports: Vec<ContainerPort>,
    pub resources: Option<Resources>,
    pub security_context: Option<SecurityContext>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    pub name: Option<String>,
    pub container_port: Option<u32>,
    pub protocol: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Resources {
    #[serde(default)]
    pub requests: BTreeMap<String, IntOrString>,
    #[serde(default)]
    pub limits: BTreeMap<String, IntOrString>,
}

/// A ConfigMap's string data; the `istio` ConfigMap holds MeshConfig under
/// its `mesh` key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfigMapData {
    pub data: BTreeMap<String, String>,
}

/// A Secret's keys: `data` as written (base64), `stringData` in clear.
/// Gateways read TLS credentials from them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecretData {
    pub data: BTreeMap<String, String>,
    pub string_data: BTreeMap<String, String>,
}

/// `autoscaling` HorizontalPodAutoscaler: what it scales.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HpaSpec {
    pub scale_target_ref: Option<ScaleTarget>,
    pub min_replicas: Option<i32>,
    pub max_replicas: Option<i32>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTarget {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
}

/// `policy` PodDisruptionBudget: the pods it keeps available.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PdbSpec {
    pub selector: Option<super::gateway_api::LabelSelector>,
}

/// `admissionregistration.k8s.io` MutatingWebhookConfiguration: the
/// injector's webhooks, which `weft analyze` checks as Istio does.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    #[serde(default)]
    pub name: String,
    pub client_config: Option<WebhookClientConfig>,
    pub namespace_selector: Option<super::gateway_api::LabelSelector>,
    pub object_selector: Option<super::gateway_api::LabelSelector>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookClientConfig {
    pub service: Option<WebhookService>,
    pub url: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookService {
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub name: String,
}
