//! The service registry: which services exist, on which ports, and which
//! workloads serve them. Built from ServiceEntry and WorkloadEntry (the
//! control plane will add Kubernetes Services and live proxies).

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;
use weft_api::types::service_entry::{Location, Resolution};
use weft_api::{Resource, Spec};

use crate::protocol::Protocol;

/// A workload: one instance of an application with its sidecar.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub address: IpAddr,
    pub labels: BTreeMap<String, String>,
    pub service_account: String,
    /// Port name to the port the application listens on.
    pub ports: BTreeMap<String, u32>,
}

/// One port of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServicePort {
    pub number: u32,
    pub name: String,
    pub protocol: Protocol,
    /// The workload port when it differs and the endpoint does not say.
    pub target_port: Option<u32>,
}

/// Where a service's traffic can go.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Endpoint {
    pub address: IpAddr,
    /// Port name to workload port, overriding the service port.
    pub ports: BTreeMap<String, u32>,
    pub labels: BTreeMap<String, String>,
    /// Service account of the workload behind the endpoint, when in the mesh.
    pub service_account: Option<String>,
    pub namespace: String,
    /// The workload's name, when the endpoint is a WorkloadEntry.
    pub workload: Option<String>,
    pub weight: u32,
}

/// A service: one host, its ports and endpoints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub host: String,
    pub namespace: String,
    pub ports: Vec<ServicePort>,
    pub endpoints: Vec<Endpoint>,
    pub mesh_internal: bool,
    pub resolution: &'static str,
    /// The ServiceEntry's `exportTo`; empty is MeshConfig's default.
    pub export_to: Vec<String>,
}

impl Service {
    pub fn port(&self, number: u32) -> Option<&ServicePort> {
        self.ports.iter().find(|p| p.number == number)
    }
}

/// Everything the mesh knows about services and workloads.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Registry {
    pub services: Vec<Service>,
    pub workloads: Vec<Workload>,
}

impl Registry {
    /// The registry the resources describe. Resources must have been
    /// validated; what cannot be used (an unparsable address) is skipped.
    pub fn from_resources(resources: &[Resource]) -> Registry {
        let mut workloads = Vec::new();
        for r in resources {
            if let Spec::WorkloadEntry(we) = &r.spec {
                let Some(address) = we.address.as_deref().and_then(|a| a.parse().ok()) else {
                    continue;
                };
                workloads.push(Workload {
                    namespace: r.namespace().to_string(),
                    name: r.name.clone(),
                    address,
                    labels: we.labels.clone(),
                    service_account: we
                        .service_account
                        .clone()
                        .unwrap_or_else(|| "default".into()),
                    ports: we.ports.clone(),
                });
            }
        }
        let mut services = Vec::new();
        for r in resources {
            let Spec::ServiceEntry(se) = &r.spec else {
                continue;
            };
            let ns = r.namespace().to_string();
            let ports: Vec<ServicePort> = se
                .ports
                .iter()
                .map(|p| {
                    let name = p.name.clone().unwrap_or_default();
                    ServicePort {
                        number: p.number.unwrap_or(0),
                        protocol: Protocol::of_port(p.protocol.as_deref(), &name),
                        name,
                        target_port: p.target_port,
                    }
                })
                .collect();
            let mut endpoints: Vec<Endpoint> = se
                .endpoints
                .iter()
                .filter_map(|e| {
                    Some(Endpoint {
                        address: e.address.as_deref()?.parse().ok()?,
                        ports: e.ports.clone(),
                        labels: e.labels.clone(),
                        service_account: e.service_account.clone(),
                        namespace: ns.clone(),
                        workload: None,
                        weight: e.weight.unwrap_or(1),
                    })
                })
                .collect();
            if let Some(sel) = &se.workload_selector {
                for w in workloads
                    .iter()
                    .filter(|w| w.namespace == ns && selects(&sel.labels, &w.labels))
                {
                    endpoints.push(Endpoint {
                        address: w.address,
                        ports: w.ports.clone(),
                        labels: w.labels.clone(),
                        service_account: Some(w.service_account.clone()),
                        namespace: w.namespace.clone(),
                        workload: Some(w.name.clone()),
                        weight: 1,
                    });
                }
            }
            let resolution = match se.resolution.unwrap_or(Resolution::None) {
                Resolution::None => "NONE",
                Resolution::Static => "STATIC",
                Resolution::Dns => "DNS",
                Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
                Resolution::DynamicDns => "DYNAMIC_DNS",
            };
            for host in &se.hosts {
                services.push(Service {
                    host: host.clone(),
                    namespace: ns.clone(),
                    ports: ports.clone(),
                    endpoints: endpoints.clone(),
                    mesh_internal: se.location == Some(Location::MeshInternal),
                    resolution,
                    export_to: se.export_to.clone(),
                });
            }
        }
        Registry {
            services,
            workloads,
        }
    }

    pub fn workload(&self, namespace: &str, name: &str) -> Option<&Workload> {
        self.workloads
            .iter()
            .find(|w| w.namespace == namespace && w.name == name)
    }

    /// The service (and its port) that sends traffic to workload `w`'s
    /// port `name` (number `port`): the service port of that name, else the
    /// one whose target port or number is `port`.
    pub fn serving(&self, w: &Workload, name: &str, port: u32) -> Option<(&Service, &ServicePort)> {
        let mine =
            |e: &Endpoint| e.namespace == w.namespace && e.workload.as_deref() == Some(&*w.name);
        let services = || {
            self.services
                .iter()
                .filter(|s| s.endpoints.iter().any(mine))
        };
        let by_name = services().find_map(|s| Some((s, s.ports.iter().find(|p| p.name == name)?)));
        by_name.or_else(|| {
            services().find_map(|s| {
                let p = s
                    .ports
                    .iter()
                    .find(|p| p.target_port.unwrap_or(p.number) == port)?;
                Some((s, p))
            })
        })
    }

    pub fn service(&self, host: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.host == host)
    }
}

/// Whether every label of `selector` is on `labels` (an empty selector
/// selects everything).
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}
