//! Rules for `networking.istio.io` resources, one file per kind, and
//! the checks several of them share.

use std::collections::{BTreeMap, HashSet};

use super::{
    Cx, Protocol, check_duration, check_export_to, check_labels, check_selector_labels, duration,
    fqdn, header_name, ip_subnet, is_dns1123_label, namespace_slash_host, percent, percentage,
    port_name, port_number, protocol, regex, wildcard_domain,
};
use crate::path::Path;
use crate::resource::Resource;
use crate::types::destination_rule::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRule, H2UpgradePolicy,
    LoadBalancerSettings, OutlierDetection, TrafficPolicy,
};
use crate::types::envoy_filter::EnvoyFilter;
use crate::types::gateway::{Gateway, Port, ServerTlsMode, ServerTlsSettings, TlsProtocol};
use crate::types::service_entry::{Resolution, ServiceEntry, WorkloadEntry, WorkloadGroup};
use crate::types::sidecar::{CaptureMode, OutboundMode, Sidecar};
use crate::types::virtual_service::{
    Destination, HeaderOperations, Headers, HttpMatchRequest, HttpRoute, HttpRouteDestination,
    RouteDestination, StringMatch, VirtualService,
};

mod destination_rule;
mod gateway;
mod service_entry;
mod sidecar;
mod virtual_service;

pub(crate) use destination_rule::{connection_pool, destination_rule};
pub(crate) use gateway::{gateway, server_tls};
pub(crate) use service_entry::{service_entry, workload_entry, workload_group};
pub(crate) use sidecar::sidecar;
pub(crate) use virtual_service::virtual_service;

pub(crate) fn destination(cx: &mut Cx, at: &Path<'_>, d: &Destination) {
    let host = at.field("host");
    if d.host == "*" {
        cx.err(&host, format!("invalid destination host {}", d.host));
    } else {
        cx.check(&host, wildcard_domain(&d.host));
    }
    if let Some(subset) = &d.subset {
        cx.check(&at.field("subset"), subset_name(subset));
    }
    if let Some(port) = &d.port {
        cx.check(
            &at.field("port").field("number"),
            port_number(port.number.unwrap_or(0)),
        );
    }
}

pub(crate) fn subset_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("subset name cannot be empty".into());
    }
    if !is_dns1123_label(name) {
        return Err(format!("subset name is invalid: {name}"));
    }
    Ok(())
}

pub(crate) fn unix_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        return Err("unix address must not be empty".into());
    }
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(format!("{addr} is not an absolute path to a file"));
    }
    Ok(())
}

pub(crate) fn envoy_filter(cx: &mut Cx, ef: &EnvoyFilter) {
    let spec = Path::Root;
    let spec = spec.field("spec");
    if ef.workload_selector.is_some() && !ef.target_refs.is_empty() {
        cx.err(
            &spec,
            "only one of targetRefs or workloadSelector can be set",
        );
    }
    let patches = spec.field("configPatches");
    for (i, p) in ef.config_patches.iter().enumerate() {
        let at = patches.index(i);
        if p.apply_to.is_none() {
            cx.err(&at.field("applyTo"), "Envoy filter: missing applyTo");
        }
        match &p.patch {
            None => cx.err(&at.field("patch"), "Envoy filter: missing patch"),
            Some(patch) if patch.operation.is_none() => cx.err(
                &at.field("patch").field("operation"),
                "Envoy filter: missing patch operation",
            ),
            Some(_) => {}
        }
    }
    if let Err(why) = ef.local_rate_limit() {
        cx.warn(
            &spec,
            format!(
                "weft does not run Envoy: this EnvoyFilter is loaded but has no effect (weft applies only the local rate limit of Istio's rate-limit task; here {why}); see weft's RateLimit resource"
            ),
        );
    }
}

pub(crate) fn is_http_method(m: &str) -> bool {
    matches!(
        m,
        "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH"
    )
}
