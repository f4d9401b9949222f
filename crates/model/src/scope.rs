//! What one proxy may see: services, VirtualServices and DestinationRules
//! exported to its namespace (`exportTo`, with MeshConfig's defaults),
//! narrowed by the egress hosts of the Sidecar resource that applies to it.
//! A proxy's configuration then grows with what it may reach, not with the
//! whole mesh.

use weft_api::types::sidecar::Sidecar;
use weft_api::{Resource, Spec};

use crate::compile::Mesh;
use crate::registry::{Service, Workload, selects};

/// MeshConfig's `default*ExportTo`; empty is Istio's `*`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportDefaults {
    pub service: Vec<String>,
    pub virtual_service: Vec<String>,
    pub destination_rule: Vec<String>,
}

#[derive(Debug)]
pub(crate) struct Scope<'a> {
    proxy_namespace: &'a str,
    defaults: &'a ExportDefaults,
    /// The applicable Sidecar's egress hosts as (namespace, host), its
    /// `.` resolved; `None` without a Sidecar (Istio's `*/*`).
    egress: Option<Vec<(String, String)>>,
}

/// The Sidecar resource that applies to `w`, as Istio picks it: one in the
/// workload's namespace whose selector matches, else that namespace's
/// Sidecar without a selector, else the root namespace's.
pub(crate) fn sidecar_for<'a>(
    resources: &'a [Resource],
    mesh: &Mesh,
    w: &Workload,
) -> Option<(&'a Resource, &'a Sidecar)> {
    let mut best: Option<(u8, &Resource, &Sidecar)> = None;
    for r in resources {
        let Spec::Sidecar(sc) = &r.spec else {
            continue;
        };
        let rank = match &sc.workload_selector {
            Some(sel) if r.namespace() == w.namespace && selects(&sel.labels, &w.labels) => 0,
            Some(_) => continue,
            None if r.namespace() == w.namespace => 1,
            None if r.namespace() == mesh.root_namespace => 2,
            None => continue,
        };
        if best.is_none_or(|(b, ..)| rank < b) {
            best = Some((rank, r, sc));
        }
    }
    best.map(|(_, r, sc)| (r, sc))
}

impl<'a> Scope<'a> {
    pub(crate) fn new(resources: &[Resource], mesh: &'a Mesh, w: &'a Workload) -> Scope<'a> {
        let egress = sidecar_for(resources, mesh, w)
            .filter(|(_, sc)| !sc.egress.is_empty())
            .map(|(r, sc)| {
                sc.egress
                    .iter()
                    .flat_map(|l| &l.hosts)
                    .filter_map(|h| {
                        let (ns, host) = h.split_once('/')?;
                        let ns = if ns == "." { r.namespace() } else { ns };
                        Some((ns.to_string(), host.to_ascii_lowercase()))
                    })
                    .collect()
            });
        Scope {
            proxy_namespace: &w.namespace,
            defaults: &mesh.export_defaults,
            egress,
        }
    }

    /// Whether `exportTo` (or the default) of a resource in `namespace`
    /// lets this proxy's namespace see it.
    fn exported(&self, export_to: &[String], default: &[String], namespace: &str) -> bool {
        let list = if export_to.is_empty() {
            default
        } else {
            export_to
        };
        if list.is_empty() {
            return true;
        }
        list.iter().any(|e| match e.as_str() {
            "*" => true,
            "." => namespace == self.proxy_namespace,
            "~" => false,
            ns => ns == self.proxy_namespace,
        })
    }

    /// Whether the Sidecar's egress hosts take `host` of `namespace`.
    fn egress_allows(&self, namespace: &str, host: &str) -> bool {
        let Some(egress) = &self.egress else {
            return true;
        };
        egress.iter().any(|(ns, pattern)| {
            let ns_ok = match ns.as_str() {
                "*" => true,
                "~" => false,
                ns => ns == namespace,
            };
            ns_ok && host_pattern(pattern, host)
        })
    }

    pub(crate) fn service(&self, s: &Service) -> bool {
        self.exported(&s.export_to, &self.defaults.service, &s.namespace)
            && self.egress_allows(&s.namespace, &s.host)
    }

    /// VirtualServices and DestinationRules: exportTo only (the hosts they
    /// name are scoped through the services).
    pub(crate) fn config(&self, r: &Resource) -> bool {
        match &r.spec {
            Spec::VirtualService(v) => {
                self.exported(&v.export_to, &self.defaults.virtual_service, r.namespace())
            }
            Spec::DestinationRule(d) => {
                self.exported(&d.export_to, &self.defaults.destination_rule, r.namespace())
            }
            _ => true,
        }
    }
}

/// `*`, `*.suffix` or an exact host, case-insensitive.
fn host_pattern(pattern: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    match pattern.strip_prefix('*') {
        Some("") => true,
        Some(suffix) => host.ends_with(suffix),
        None => pattern == host,
    }
}
