//! Typed models of the resources weft reads. Field names and defaults follow
//! Istio's API reference; `Option` marks a field Istio leaves unset, and
//! each default is noted where the proxy will apply it.

pub mod common;
pub mod destination_rule;
pub mod envoy_filter;
pub mod gateway;
pub mod gateway_api;
pub mod kube;
pub mod mesh;
pub mod rate_limit;
pub mod security;
pub mod service_entry;
pub mod sidecar;
pub mod telemetry;
pub mod virtual_service;
