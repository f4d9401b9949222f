//! The service registry: which services exist, on which ports, and which
//! workloads serve them. Built from ServiceEntry and WorkloadEntry (the
//! control plane will add Kubernetes Services and live proxies).

use std::collections::{BTreeMap, HashMap};
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

/// An endpoint known by a DNS name (a ServiceEntry of resolution DNS or
/// DNS_ROUND_ROBIN): the proxy resolves it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NamedEndpoint {
    pub name: String,
    /// Port name to port, overriding the service port.
    pub ports: BTreeMap<String, u32>,
    pub labels: BTreeMap<String, String>,
    pub weight: u32,
}

/// A service: one host, its ports and endpoints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Service {
    pub host: String,
    pub namespace: String,
    pub ports: Vec<ServicePort>,
    pub endpoints: Vec<Endpoint>,
    /// Endpoints by DNS name. A DNS ServiceEntry without endpoints has its
    /// host here.
    pub named: Vec<NamedEndpoint>,
    /// The ServiceEntry's virtual addresses and CIDR blocks (or the one
    /// auto-allocated, see [`auto_allocate`]).
    pub addresses: Vec<String>,
    /// `addresses` holds an auto-allocated address.
    pub auto_address: bool,
    /// The ServiceEntry's `subjectAltNames`: the identities its endpoints
    /// prove in the mesh when they are not WorkloadEntries.
    pub subject_alt_names: Vec<String>,
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
    /// Indexes into `services` by host, and into `workloads` by namespace
    /// and name.
    #[serde(skip)]
    by_host: HashMap<String, Vec<usize>>,
    #[serde(skip)]
    by_name: HashMap<(String, String), usize>,
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
        let mut in_namespace: HashMap<&str, Vec<&Workload>> = HashMap::new();
        for w in &workloads {
            in_namespace
                .entry(w.namespace.as_str())
                .or_default()
                .push(w);
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
                for w in in_namespace
                    .get(ns.as_str())
                    .into_iter()
                    .flatten()
                    .filter(|w| selects(&sel.labels, &w.labels))
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
            let by_dns = matches!(
                se.resolution,
                Some(Resolution::Dns | Resolution::DnsRoundRobin)
            );
            // Under DNS resolution an endpoint's address may be a name.
            let named: Vec<NamedEndpoint> = se
                .endpoints
                .iter()
                .filter(|_| by_dns)
                .filter_map(|e| {
                    let name = e.address.as_deref()?;
                    (name.parse::<IpAddr>().is_err()).then(|| NamedEndpoint {
                        name: name.to_string(),
                        ports: e.ports.clone(),
                        labels: e.labels.clone(),
                        weight: e.weight.unwrap_or(1),
                    })
                })
                .collect();
            let by_host = by_dns && se.endpoints.is_empty() && se.workload_selector.is_none();
            for host in &se.hosts {
                let named = if by_host {
                    vec![NamedEndpoint {
                        name: host.clone(),
                        ports: BTreeMap::new(),
                        labels: BTreeMap::new(),
                        weight: 1,
                    }]
                } else {
                    named.clone()
                };
                services.push(Service {
                    host: host.clone(),
                    namespace: ns.clone(),
                    ports: ports.clone(),
                    endpoints: endpoints.clone(),
                    named,
                    addresses: se.addresses.clone(),
                    auto_address: false,
                    subject_alt_names: se.subject_alt_names.clone(),
                    mesh_internal: se.location == Some(Location::MeshInternal),
                    resolution,
                    export_to: se.export_to.clone(),
                });
            }
        }
        services.extend(resources.iter().filter_map(external_name));
        Registry::new(services, workloads)
    }

    /// A registry of these services and workloads, indexed.
    pub fn new(mut services: Vec<Service>, workloads: Vec<Workload>) -> Registry {
        auto_allocate(&mut services);
        let mut by_host: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, s) in services.iter().enumerate() {
            by_host.entry(s.host.clone()).or_default().push(i);
        }
        let by_name = workloads
            .iter()
            .enumerate()
            .map(|(i, w)| ((w.namespace.clone(), w.name.clone()), i))
            .collect();
        Registry {
            services,
            workloads,
            by_host,
            by_name,
        }
    }

    /// The services (one per ServiceEntry) of `host`.
    pub fn services_of<'a>(&'a self, host: &str) -> impl Iterator<Item = &'a Service> + 'a {
        self.by_host
            .get(host)
            .into_iter()
            .flatten()
            .filter_map(|i| self.services.get(*i))
    }

    pub fn workload(&self, namespace: &str, name: &str) -> Option<&Workload> {
        let i = self
            .by_name
            .get(&(namespace.to_string(), name.to_string()))?;
        self.workloads.get(*i)
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
        self.services_of(host).next()
    }
}

/// The first address of Istio's DNS auto-allocation range, 240.240.0.0/16.
const AUTO_RANGE: u32 = u32::from_be_bytes([240, 240, 0, 0]);

/// Istio's DNS auto-allocation: a service without `addresses` (and not a
/// wildcard) gets a virtual address of its own in 240.240.0.0/16, picked
/// from a hash of its host (probing past collisions in host order), so a
/// transparently captured workload can call it by a name its resolver maps
/// to that address. Every ServiceEntry of a host gets the same address.
pub fn auto_allocate(services: &mut [Service]) {
    let mut hosts: Vec<String> = services
        .iter()
        .filter(|s| s.addresses.is_empty() && !s.host.starts_with('*'))
        .map(|s| s.host.clone())
        .collect();
    hosts.sort();
    hosts.dedup();
    let mut taken = std::collections::HashSet::new();
    let mut assigned: HashMap<String, String> = HashMap::new();
    for host in hosts {
        // FNV-1a: stable across builds and platforms.
        let mut h: u32 = 0x811c_9dc5;
        for b in host.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        let mut slot = h % 0xfffe;
        while !taken.insert(slot) {
            slot = (slot + 1) % 0xfffe;
        }
        let ip = std::net::Ipv4Addr::from(AUTO_RANGE + 1 + slot);
        assigned.insert(host, ip.to_string());
    }
    for s in services.iter_mut().filter(|s| s.addresses.is_empty()) {
        if let Some(ip) = assigned.get(&s.host) {
            s.addresses.push(ip.clone());
            s.auto_address = true;
        }
    }
}

/// A Kubernetes Service of type ExternalName: its cluster name, resolved
/// by DNS to the external name, as Istio registers it.
fn external_name(r: &Resource) -> Option<Service> {
    let Spec::Service(svc) = &r.spec else {
        return None;
    };
    if svc.r#type.as_deref() != Some("ExternalName") {
        return None;
    }
    let name = svc.external_name.clone()?;
    let ns = r.namespace().to_string();
    Some(Service {
        host: format!("{}.{ns}.svc.cluster.local", r.name),
        ports: svc
            .ports
            .iter()
            .map(|p| {
                let pname = p.name.clone().unwrap_or_default();
                ServicePort {
                    number: p.port.unwrap_or(0),
                    protocol: Protocol::of_port(p.app_protocol.as_deref(), &pname),
                    name: pname,
                    target_port: None,
                }
            })
            .collect(),
        endpoints: Vec::new(),
        named: vec![NamedEndpoint {
            name,
            ports: BTreeMap::new(),
            labels: BTreeMap::new(),
            weight: 1,
        }],
        mesh_internal: true,
        resolution: "DNS",
        export_to: Vec::new(),
        addresses: Vec::new(),
        auto_address: false,
        subject_alt_names: Vec::new(),
        namespace: ns,
    })
}

/// Whether every label of `selector` is on `labels` (an empty selector
/// selects everything).
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Whether a security policy of namespace `policy_ns` applies to a proxy
/// of namespace `ns` with `labels`. Without target references: policies of
/// its namespace or the root namespace whose selector (if any) matches. With
/// them, as Istio attaches them: a Gateway API Gateway of the policy's own
/// namespace (the proxy serving it carries its name in
/// [`GATEWAY_NAME_LABEL`](crate::gateway_api::GATEWAY_NAME_LABEL)), or a
/// GatewayClass from the root namespace. References to Services and
/// ServiceEntries are for waypoints, which weft does not run: they attach
/// to no proxy here, as they attach to no sidecar in Istio.
pub fn policy_applies(
    policy_ns: &str,
    root_ns: &str,
    selector: Option<&BTreeMap<String, String>>,
    targets: &[&weft_api::types::common::PolicyTargetReference],
    ns: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    use crate::gateway_api::{GATEWAY_CLASS_LABEL, GATEWAY_NAME_LABEL};
    if targets.is_empty() {
        let scoped = policy_ns == ns || policy_ns == root_ns;
        return scoped && selector.is_none_or(|s| selects(s, labels));
    }
    targets.iter().any(|t| {
        let group_ok = t.group.as_deref() == Some("gateway.networking.k8s.io");
        let name = t.name.as_deref().unwrap_or_default();
        let target_ns = t.namespace.as_deref().unwrap_or(policy_ns);
        match t.kind.as_deref() {
            Some("Gateway") => {
                group_ok
                    && target_ns == policy_ns
                    && policy_ns == ns
                    && labels.get(GATEWAY_NAME_LABEL).is_some_and(|g| g == name)
            }
            Some("GatewayClass") => {
                group_ok
                    && policy_ns == root_ns
                    && labels.get(GATEWAY_CLASS_LABEL).is_some_and(|c| c == name)
            }
            _ => false,
        }
    })
}
