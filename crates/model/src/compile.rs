//! Resources + registry -> one proxy's configuration. Pure: no I/O, no
//! clock; the same inputs give the same output.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use weft_api::types::destination_rule::DestinationRule;
use weft_api::types::virtual_service::{self as vs, VirtualService};
use weft_api::{Resource, Spec};

use crate::authz::Authz;
use crate::config::{
    Cluster, ClusterEndpoint, Cors, DnsEndpoints, DnsName, Fault, FaultDelay, HeaderMatch,
    HeaderOps, HttpRoute, InboundPort, Mirror, Ops, OutboundPolicy, OutboundService, ProxyConfig,
    RequestMatch, Retry, Rewrite, RouteAction, StrMatch, WeightedCluster, WorkloadInfo,
    cluster_name, host_matches,
};
use crate::normalize::Normalization;
use crate::peer_auth::PeerPolicies;
use crate::policy::UpstreamTls;
use crate::protocol::Protocol;
use crate::registry::{Registry, Service, Workload, selects};
use crate::scope::Scope;

/// The mesh's DNS suffix for Kubernetes-style short names.
const CLUSTER_DOMAIN: &str = "svc.cluster.local";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    #[error(
        "no WorkloadEntry {0} with an IP address: the proxy needs one to know its address, labels and service account"
    )]
    NoWorkload(String),
    /// A bug: the compile could not finish.
    #[error("internal error: {0}")]
    Internal(String),
}

/// The mesh-wide settings a compile needs (from MeshConfig and the CA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mesh {
    pub trust_domain: String,
    /// MeshConfig `trustDomainAliases`.
    pub trust_domain_aliases: Vec<String>,
    /// Where mesh-wide policies live (MeshConfig `rootNamespace`).
    pub root_namespace: String,
    /// MeshConfig `pathNormalization`.
    pub path_normalization: Normalization,
    /// MeshConfig's HTTP ext_authz providers, for CUSTOM policies.
    pub ext_authz: BTreeMap<String, crate::authz::ExtAuthz>,
    /// MeshConfig `outboundTrafficPolicy.mode`; unset is REGISTRY_ONLY
    /// (Istio's default is ALLOW_ANY).
    pub outbound_policy: Option<OutboundPolicy>,
    /// `defaultConfig.gatewayTopology.numTrustedProxies`: how many proxies
    /// in front of a gateway are trusted to append to X-Forwarded-For.
    pub num_trusted_proxies: u32,
    /// MeshConfig's default `exportTo` of each kind.
    pub export_defaults: crate::scope::ExportDefaults,
}

impl Mesh {
    /// Istio's defaults: root namespace `istio-system`, BASE normalization.
    pub fn new(trust_domain: &str) -> Mesh {
        Mesh {
            trust_domain: trust_domain.to_string(),
            trust_domain_aliases: Vec::new(),
            root_namespace: "istio-system".into(),
            path_normalization: Normalization::Base,
            ext_authz: BTreeMap::new(),
            num_trusted_proxies: 0,
            outbound_policy: None,
            export_defaults: crate::scope::ExportDefaults::default(),
        }
    }

    /// The settings MeshConfig gives, over Istio's defaults.
    pub fn from_config(
        trust_domain: &str,
        config: Option<&weft_api::types::mesh::MeshConfig>,
    ) -> Mesh {
        use weft_api::types::mesh::NormalizationType as T;
        use weft_api::types::sidecar::OutboundMode;
        let mut mesh = Mesh::new(trust_domain);
        let Some(m) = config else {
            return mesh;
        };
        if let Some(root) = &m.root_namespace {
            mesh.root_namespace = root.clone();
        }
        if let Some(n) = m.path_normalization.as_ref().and_then(|p| p.normalization) {
            mesh.path_normalization = match n {
                T::Default | T::Base => Normalization::Base,
                T::None => Normalization::None,
                T::MergeSlashes => Normalization::MergeSlashes,
                T::DecodeAndMergeSlashes => Normalization::DecodeAndMergeSlashes,
            };
        }
        mesh.ext_authz = crate::authz::ext_authz_providers(m);
        mesh.outbound_policy =
            m.outbound_traffic_policy
                .as_ref()
                .and_then(|p| p.mode)
                .map(|mode| match mode {
                    OutboundMode::AllowAny => OutboundPolicy::AllowAny,
                    OutboundMode::RegistryOnly => OutboundPolicy::RegistryOnly,
                });
        mesh.num_trusted_proxies = m
            .default_config
            .as_ref()
            .and_then(|d| d.gateway_topology.as_ref())
            .and_then(|g| g.get("numTrustedProxies"))
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0);
        mesh.trust_domain_aliases = m.trust_domain_aliases.clone();
        mesh.export_defaults = crate::scope::ExportDefaults {
            service: m.default_service_export_to.clone(),
            virtual_service: m.default_virtual_service_export_to.clone(),
            destination_rule: m.default_destination_rule_export_to.clone(),
        };
        mesh
    }
}

/// Compiles the configuration of the sidecar of workload `namespace/name`.
pub fn compile(
    resources: &[Resource],
    registry: &Registry,
    namespace: &str,
    name: &str,
    mesh: &Mesh,
) -> Result<ProxyConfig, CompileError> {
    let mut config = compile_own(resources, registry, namespace, name, mesh)?;
    let w = workload(registry, namespace, name)?;
    let traffic = compile_traffic(resources, registry, w, mesh);
    config.identities = crate::config::index_identities(&traffic.clusters);
    config.outbound = traffic.outbound;
    config.clusters = traffic.clusters;
    config.gateway = traffic.gateway;
    config.outbound_policy = traffic.outbound_policy;
    Ok(config)
}

fn workload<'a>(
    registry: &'a Registry,
    ns: &str,
    name: &str,
) -> Result<&'a Workload, CompileError> {
    registry
        .workload(ns, name)
        .ok_or_else(|| CompileError::NoWorkload(format!("{ns}/{name}")))
}

/// What the traffic part of a configuration (outbound services, clusters,
/// gateway servers, outbound policy) depends on besides the resources: for
/// each Sidecar and Gateway selector and each route's `sourceLabels`,
/// whether it selects the workload; and the workload's namespace, when
/// anything scopes by namespace (a Sidecar, an `exportTo` other than `*`,
/// MeshConfig's export defaults, a `sourceNamespace` match). Workloads
/// with one key have the same traffic part, which a control plane
/// compiles once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrafficKey {
    /// Empty when no configuration depends on it.
    pub namespace: String,
    pub selected: Vec<bool>,
}

pub fn traffic_key(resources: &[Resource], mesh: &Mesh, w: &Workload) -> TrafficKey {
    TrafficSelectors::of(resources, mesh).key(w)
}

/// The label selectors a [`TrafficKey`] tests, and whether namespaces
/// matter, gathered once per set of resources.
#[derive(Debug, Clone, Default)]
pub struct TrafficSelectors {
    selectors: Vec<BTreeMap<String, String>>,
    namespaced: bool,
}

/// Whether an `exportTo` limits who sees a resource.
fn scoped(export_to: &[String]) -> bool {
    export_to.iter().any(|e| e != "*")
}

impl TrafficSelectors {
    pub fn of(resources: &[Resource], mesh: &Mesh) -> TrafficSelectors {
        let d = &mesh.export_defaults;
        let mut namespaced =
            scoped(&d.service) || scoped(&d.virtual_service) || scoped(&d.destination_rule);
        let mut all = Vec::new();
        let mut test = |labels: &BTreeMap<String, String>| all.push(labels.clone());
        for r in resources {
            match &r.spec {
                Spec::Sidecar(sc) => {
                    namespaced = true;
                    sc.workload_selector.iter().for_each(|s| test(&s.labels));
                }
                Spec::ServiceEntry(se) => namespaced |= scoped(&se.export_to),
                Spec::DestinationRule(dr) => namespaced |= scoped(&dr.export_to),
                Spec::Gateway(g) => test(&g.selector),
                Spec::VirtualService(v) => {
                    let http = v.http.iter().flat_map(|h| &h.r#match);
                    namespaced |=
                        scoped(&v.export_to) || http.clone().any(|m| m.source_namespace.is_some());
                    http.for_each(|m| test(&m.source_labels));
                    v.tcp
                        .iter()
                        .flat_map(|t| &t.r#match)
                        .for_each(|m| test(&m.source_labels));
                    v.tls
                        .iter()
                        .flat_map(|t| &t.r#match)
                        .for_each(|m| test(&m.source_labels));
                }
                _ => {}
            }
        }
        TrafficSelectors {
            selectors: all,
            namespaced,
        }
    }

    pub fn key(&self, w: &Workload) -> TrafficKey {
        TrafficKey {
            namespace: if self.namespaced {
                w.namespace.clone()
            } else {
                String::new()
            },
            selected: self
                .selectors
                .iter()
                .map(|s| selects(s, &w.labels))
                .collect(),
        }
    }
}

/// A configuration's traffic part.
struct Traffic {
    outbound: Vec<OutboundService>,
    clusters: crate::config::Clusters,
    gateway: Vec<crate::config::GatewayPort>,
    outbound_policy: OutboundPolicy,
}

/// The configuration of `namespace/name` without its traffic part
/// (outbound services, clusters and gateway servers empty; the outbound
/// policy at its default): what differs between workloads of one
/// [`TrafficKey`]. Of `resources` it reads only PeerAuthentications,
/// AuthorizationPolicies and RequestAuthentications.
pub fn compile_own(
    resources: &[Resource],
    registry: &Registry,
    namespace: &str,
    name: &str,
    mesh: &Mesh,
) -> Result<ProxyConfig, CompileError> {
    let trust_domain = mesh.trust_domain.as_str();
    let w = workload(registry, namespace, name)?;
    let peer_policies = PeerPolicies::of(resources, &mesh.root_namespace, &w.namespace, &w.labels);
    let inbound = w
        .ports
        .iter()
        .map(|(name, port)| {
            let service = registry.serving(w, name, *port);
            InboundPort {
                port: *port,
                name: name.clone(),
                protocol: service
                    .map_or_else(|| Protocol::of_port(None, name), |(_, p)| p.protocol),
                service: service.map(|(s, _)| s.host.clone()),
                mtls: peer_policies.mode(*port),
            }
        })
        .collect();
    Ok(ProxyConfig {
        trust_domain_aliases: mesh.trust_domain_aliases.clone(),
        authz: Authz::for_workload(resources, mesh, &w.namespace, &w.labels),
        jwt: crate::jwt::for_workload(resources, &mesh.root_namespace, &w.namespace, &w.labels),
        rate_limits: crate::rate_limit::for_workload(
            resources,
            &mesh.root_namespace,
            &w.namespace,
            &w.labels,
        ),
        path_normalization: mesh.path_normalization,
        num_trusted_proxies: mesh.num_trusted_proxies,
        outbound_policy: OutboundPolicy::default(),
        gateway: Vec::new(),
        identities: HashMap::new(),
        workload: WorkloadInfo {
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            address: w.address,
            service_account: w.service_account.clone(),
            identity: format!(
                "spiffe://{trust_domain}/ns/{}/sa/{}",
                w.namespace, w.service_account
            ),
            labels: w.labels.clone(),
        },
        outbound: Vec::new(),
        clusters: BTreeMap::new(),
        inbound,
    })
}

fn compile_traffic(
    resources: &[Resource],
    registry: &Registry,
    w: &Workload,
    mesh: &Mesh,
) -> Traffic {
    let scope = Scope::new(resources, mesh, w);
    let virtual_services: Vec<(&Resource, &VirtualService)> = resources
        .iter()
        .filter(|r| scope.config(r))
        .filter_map(|r| match &r.spec {
            Spec::VirtualService(v)
                if v.gateways.is_empty() || v.gateways.iter().any(|g| g == "mesh") =>
            {
                Some((r, v))
            }
            _ => None,
        })
        .collect();
    // DestinationRules by the host they name, expanded once, in order.
    let mut rules: HashMap<String, Vec<&DestinationRule>> = HashMap::new();
    for r in resources.iter().filter(|r| scope.config(r)) {
        if let Spec::DestinationRule(d) = &r.spec {
            rules
                .entry(expand(&d.host, r.namespace()))
                .or_default()
                .push(d);
        }
    }
    let mut cx = Compiler {
        resources,
        me: w,
        registry,
        rules,
        trust_domain: mesh.trust_domain.as_str(),
        clusters: BTreeMap::new(),
        gateway: None,
        scope,
    };
    let mut outbound = Vec::new();
    let visible: Vec<&Service> = registry
        .services
        .iter()
        .filter(|s| cx.scope.service(s))
        .collect();
    for service in visible {
        for port in &service.ports {
            let bound = virtual_services.iter().find(|(r, v)| {
                v.hosts
                    .iter()
                    .any(|h| host_matches(&expand(h, r.namespace()), &service.host))
            });
            let tls = match bound {
                Some((r, v)) => cx.sni_routes(r.namespace(), v, port.number),
                None => Vec::new(),
            };
            let (routes, tcp) = match bound {
                Some((r, v)) => cx.routes_from(r.namespace(), v, port.number, Some(service)),
                None => {
                    let default = vec![WeightedCluster {
                        cluster: cx.cluster(&service.host, port.number, None),
                        weight: 100,
                        headers: HeaderOps::default(),
                    }];
                    let route = HttpRoute {
                        name: Some("default".into()),
                        matches: Vec::new(),
                        action: RouteAction::Forward(default.clone()),
                        timeout: None,
                        retries: Retry::default(),
                        fault: None,
                        rewrite: None,
                        headers: HeaderOps::default(),
                        mirror: None,
                        cors: None,
                    };
                    (vec![route], default)
                }
            };
            outbound.push(OutboundService {
                host: service.host.clone(),
                port: port.number,
                protocol: port.protocol,
                routes,
                tcp,
                tls,
                addresses: service.addresses.clone(),
            });
        }
    }
    outbound.sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
    let gateway = cx.gateway_ports();
    Traffic {
        outbound,
        clusters: cx.clusters,
        gateway,
        outbound_policy: outbound_policy(resources, mesh, w),
    }
}

pub(crate) struct Compiler<'a> {
    pub(crate) resources: &'a [Resource],
    /// The workload being compiled for: matches on source labels,
    /// namespace and gateways are decided here, once.
    pub(crate) me: &'a Workload,
    registry: &'a Registry,
    rules: HashMap<String, Vec<&'a DestinationRule>>,
    trust_domain: &'a str,
    clusters: crate::config::Clusters,
    /// The gateway (`namespace/name`) whose routes are being compiled;
    /// `None` for the mesh (sidecar) routes.
    pub(crate) gateway: Option<String>,
    /// What this proxy may see.
    scope: Scope<'a>,
}

impl<'a> Compiler<'a> {
    /// HTTP routes and TCP destinations of VirtualService `v` (in namespace
    /// `ns`) for `port` of `service`.
    pub(crate) fn routes_from(
        &mut self,
        vs_ns: &str,
        v: &VirtualService,
        port: u32,
        service: Option<&Service>,
    ) -> (Vec<HttpRoute>, Vec<WeightedCluster>) {
        let ns = vs_ns;
        let mut routes = Vec::new();
        for (i, (ns, http)) in crate::delegate::expand(ns, v, self.resources)
            .iter()
            .enumerate()
        {
            let ns = ns.as_str();
            // Matches for another port, for other source workloads or
            // namespaces, or only for gateways do not apply to this proxy; a
            // route whose every match is excluded is not here at all.
            let matches: Vec<RequestMatch> = http
                .r#match
                .iter()
                .filter(|m| {
                    m.port.is_none_or(|p| p == port)
                        && selects(&m.source_labels, &self.me.labels)
                        && m.source_namespace
                            .as_ref()
                            .is_none_or(|n| *n == self.me.namespace)
                        && self.match_binds(&m.gateways, vs_ns)
                })
                .map(request_match)
                .collect();
            if !http.r#match.is_empty() && matches.is_empty() {
                continue;
            }
            let action = if let Some(dr) = &http.direct_response {
                RouteAction::DirectResponse {
                    status: u16::try_from(dr.status.unwrap_or(200)).unwrap_or(500),
                    body: dr.body.as_ref().and_then(|b| b.string.clone()),
                }
            } else if let Some(r) = &http.redirect {
                RouteAction::Redirect {
                    uri: r.uri.clone(),
                    authority: r.authority.clone(),
                    scheme: r.scheme.clone(),
                    port: r.port,
                    code: u16::try_from(r.redirect_code.unwrap_or(301)).unwrap_or(301),
                }
            } else {
                let dests: Vec<_> = http
                    .route
                    .iter()
                    .map(|d| (d.destination.as_ref(), d.weight, d.headers.as_ref()))
                    .collect();
                RouteAction::Forward(self.weighted(ns, &dests, port, service))
            };
            let mirror = match (&http.mirror, http.mirrors.first()) {
                (Some(d), _) => Some((
                    d,
                    http.mirror_percentage
                        .and_then(|p| p.value)
                        .or(http.mirror_percent.map(f64::from)),
                )),
                (None, Some(m)) => m
                    .destination
                    .as_ref()
                    .map(|d| (d, m.percentage.and_then(|p| p.value))),
                (None, None) => None,
            };
            let mirror = mirror.map(|(d, pct)| {
                let host = expand(&d.host, ns);
                let dport = d.port.and_then(|p| p.number).unwrap_or(port);
                Mirror {
                    cluster: self.cluster(&host, dport, d.subset.as_deref()),
                    percent: pct.unwrap_or(100.0),
                }
            });
            routes.push(HttpRoute {
                name: http.name.clone().or_else(|| Some(format!("route-{i}"))),
                matches,
                action,
                timeout: http.timeout.map(|d| d.0),
                retries: retry(http.retries.as_ref()),
                fault: http.fault.as_ref().map(fault),
                rewrite: http.rewrite.as_ref().map(|r| Rewrite {
                    uri: r.uri.clone(),
                    authority: r.authority.clone(),
                    // Validated RE2.
                    uri_regex: r.uri_regex_rewrite.as_ref().and_then(|x| {
                        let re = regex::Regex::new(x.r#match.as_deref()?).ok()?;
                        Some((re, substitution(x.rewrite.as_deref()?)))
                    }),
                }),
                headers: header_ops(http.headers.as_ref()),
                mirror,
                cors: http.cors_policy.as_ref().map(cors),
            });
        }
        let tcp = v
            .tcp
            .iter()
            .find(|t| {
                t.r#match.is_empty()
                    || t.r#match.iter().any(|m| {
                        m.port.is_none_or(|p| p == port) && self.match_binds(&m.gateways, ns)
                    })
            })
            .map(|t| {
                let dests: Vec<_> = t
                    .route
                    .iter()
                    .map(|d| (d.destination.as_ref(), d.weight, None))
                    .collect();
                self.weighted(ns, &dests, port, service)
            })
            .unwrap_or_default();
        (routes, tcp)
    }

    /// Whether a match's `gateways` let it apply to what is compiled: a
    /// match without gateways applies wherever its VirtualService is bound.
    pub(crate) fn match_binds(&self, gateways: &[String], vs_ns: &str) -> bool {
        if gateways.is_empty() {
            return true;
        }
        match &self.gateway {
            Some(full) => crate::gateway::binds(gateways, vs_ns, full),
            None => gateways.iter().any(|g| g == "mesh"),
        }
    }

    /// `service` is the service the routes are for (none at a gateway).
    pub(crate) fn weighted(
        &mut self,
        ns: &str,
        dests: &[(Option<&vs::Destination>, Option<i32>, Option<&vs::Headers>)],
        port: u32,
        service: Option<&Service>,
    ) -> Vec<WeightedCluster> {
        dests
            .iter()
            .filter_map(|(d, weight, headers)| {
                let d = (*d)?;
                let host = expand(&d.host, ns);
                // Without a port, the destination is the port the request
                // came to, or the only port of the destination service.
                let dport = d.port.and_then(|p| p.number).unwrap_or_else(|| {
                    match self.service(&host).map(|s| s.ports.as_slice()) {
                        Some([only]) if service.is_none_or(|s| host != s.host) => only.number,
                        _ => port,
                    }
                });
                let weight = match (weight, dests.len()) {
                    (Some(w), _) => u32::try_from(*w).unwrap_or(0),
                    (None, 1) => 100,
                    (None, _) => 0,
                };
                Some(WeightedCluster {
                    cluster: self.cluster(&host, dport, d.subset.as_deref()),
                    weight,
                    headers: header_ops(*headers),
                })
            })
            .filter(|w| w.weight > 0)
            .collect()
    }

    /// The service of `host` this proxy may see.
    fn service(&self, host: &str) -> Option<&'a Service> {
        self.registry
            .services_of(host)
            .find(|s| self.scope.service(s))
    }

    /// The cluster for (host, port, subset), built on first use.
    fn cluster(&mut self, host: &str, port: u32, subset: Option<&str>) -> String {
        let name = cluster_name(port, subset, host);
        if self.clusters.contains_key(&name) {
            return name;
        }
        let service = self.service(host);
        // Several DestinationRules for one host merge as in Istio: subsets
        // from all of them, the traffic policy of the first that has one.
        let rules: &[&DestinationRule] = self.rules.get(host).map_or(&[], Vec::as_slice);
        let subset_rule = subset.and_then(|s| {
            rules
                .iter()
                .copied()
                .find(|d| d.subsets.iter().any(|x| x.name == s))
        });
        let subset_labels = subset.and_then(|s| {
            subset_rule
                .and_then(|d| d.subsets.iter().find(|x| x.name == s))
                .map(|x| x.labels.clone())
        });
        let host_policy = rules.iter().copied().find(|d| d.traffic_policy.is_some());
        let policy =
            crate::policy::cluster_policy(host_policy.or(subset_rule), subset_rule, port, subset);
        let endpoints = match service {
            None => Vec::new(),
            Some(s) => {
                let sport = s.port(port);
                s.endpoints
                    .iter()
                    .filter(|e| match (&subset, &subset_labels) {
                        (None, _) => true,
                        (Some(_), Some(labels)) => selects(labels, &e.labels),
                        // A subset no DestinationRule defines selects nothing.
                        (Some(_), None) => false,
                    })
                    .map(|e| {
                        let target = sport
                            .and_then(|p| e.ports.get(&p.name).copied().or(p.target_port))
                            .unwrap_or(port);
                        Arc::new(ClusterEndpoint {
                            address: SocketAddr::new(e.address, u16::try_from(target).unwrap_or(0)),
                            // Only mesh TLS goes through HBONE; DISABLE and
                            // originated TLS reach the endpoint directly.
                            identity: mesh_identity(
                                s,
                                e,
                                self.trust_domain,
                                policy.tls == UpstreamTls::Mesh,
                            ),
                            weight: e.weight.max(1),
                            workload: e.workload.clone(),
                            namespace: e.namespace.clone(),
                            labels: e.labels.clone(),
                        })
                    })
                    .collect()
            }
        };
        let dns = service.and_then(|s| dns_endpoints(s, port, subset, subset_labels.as_ref()));
        self.clusters.insert(
            name.clone(),
            Arc::new(Cluster {
                name: name.clone(),
                host: host.to_string(),
                service_namespace: service.map(|s| s.namespace.clone()),
                port,
                protocol: service
                    .and_then(|s| s.port(port))
                    .map_or(crate::Protocol::Http, |p| p.protocol),
                subset: subset.map(str::to_string),
                endpoints,
                dns,
                missing: service.is_none(),
                policy,
            }),
        );
        name
    }
}

/// The identity endpoint `e` of `s` proves, when it is reached through
/// HBONE: its service account's, or for an endpoint of a MESH_INTERNAL
/// ServiceEntry with no service account, the entry's first SPIFFE
/// `subjectAltNames` (Istio verifies the server's certificate against them).
fn mesh_identity(
    s: &Service,
    e: &crate::registry::Endpoint,
    trust_domain: &str,
    mesh_tls: bool,
) -> Option<String> {
    if !mesh_tls {
        return None;
    }
    match &e.service_account {
        Some(sa) => Some(format!(
            "spiffe://{trust_domain}/ns/{}/sa/{sa}",
            e.namespace
        )),
        None if s.mesh_internal => s
            .subject_alt_names
            .iter()
            .find(|n| n.starts_with("spiffe://"))
            .cloned(),
        None => None,
    }
}

/// The endpoints of `s` the proxy resolves: names of a DNS ServiceEntry
/// (its host when it lists no endpoints), or, for a MESH_EXTERNAL entry of
/// resolution NONE without endpoints, whatever the client asked for.
fn dns_endpoints(
    s: &Service,
    port: u32,
    subset: Option<&str>,
    subset_labels: Option<&BTreeMap<String, String>>,
) -> Option<DnsEndpoints> {
    let sport = s.port(port);
    let target = |ports: &BTreeMap<String, u32>| {
        let t = sport
            .and_then(|p| ports.get(&p.name).copied().or(p.target_port))
            .unwrap_or(port);
        u16::try_from(t).unwrap_or(0)
    };
    let original = s.resolution == "NONE" && s.endpoints.is_empty() && !s.mesh_internal;
    if s.named.is_empty() && !original {
        return None;
    }
    let names: Vec<DnsName> = s
        .named
        .iter()
        .filter(|e| match (subset, subset_labels) {
            (None, _) => true,
            (Some(_), Some(labels)) => selects(labels, &e.labels),
            (Some(_), None) => false,
        })
        .map(|e| DnsName {
            name: e.name.clone(),
            port: target(&e.ports),
            weight: e.weight.max(1),
            labels: e.labels.clone(),
        })
        .collect();
    if names.is_empty() && !original {
        return None;
    }
    Some(DnsEndpoints {
        first_only: s.resolution == "DNS_ROUND_ROBIN",
        original,
        names,
        port: target(&BTreeMap::new()),
        namespace: s.namespace.clone(),
    })
}

/// Istio's (Envoy's) regex substitution, where `\N` names capture group N,
/// in the syntax of `regex::Regex::replace_all`: `${N}`, and `$` literal.
pub fn substitution(istio: &str) -> String {
    let mut out = String::with_capacity(istio.len());
    let mut chars = istio.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(d) if d.is_ascii_digit() => {
                    out.push_str(&format!("${{{d}}}"));
                    chars.next();
                }
                Some('\\') => {
                    out.push('\\');
                    chars.next();
                }
                _ => out.push('\\'),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

fn retry(r: Option<&vs::HttpRetry>) -> Retry {
    let Some(r) = r else { return Retry::default() };
    Retry {
        attempts: u32::try_from(r.attempts.unwrap_or(0)).unwrap_or(0),
        per_try_timeout: r.per_try_timeout.map(|d| d.0),
        retry_on: match r.retry_on.as_deref() {
            Some(on) if !on.is_empty() => on.split(',').map(|p| p.trim().to_string()).collect(),
            _ => Retry::default().retry_on,
        },
    }
}

fn fault(f: &vs::HttpFaultInjection) -> Fault {
    // Without a percentage, a fault applies to every request.
    let pct =
        |p: Option<weft_api::types::common::Percent>| p.and_then(|p| p.value).unwrap_or(100.0);
    Fault {
        delay: f.delay.as_ref().and_then(|d| {
            let pct = match (d.percentage, d.percent) {
                (Some(p), _) => pct(Some(p)),
                (None, Some(p)) => f64::from(p),
                (None, None) => 100.0,
            };
            Some((FaultDelay(d.fixed_delay?.0), pct))
        }),
        abort: f
            .abort
            .as_ref()
            .and_then(|a| Some((u16::try_from(a.http_status?).ok()?, pct(a.percentage)))),
    }
}

fn header_ops(h: Option<&vs::Headers>) -> HeaderOps {
    let ops = |o: Option<&vs::HeaderOperations>| -> Ops {
        let Some(o) = o else { return Ops::default() };
        Ops {
            set: o
                .set
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            add: o
                .add
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
            remove: o.remove.iter().map(|k| k.to_ascii_lowercase()).collect(),
        }
    };
    HeaderOps {
        request: ops(h.and_then(|h| h.request.as_ref())),
        response: ops(h.and_then(|h| h.response.as_ref())),
    }
}

fn str_match(sm: &vs::StringMatch) -> Option<StrMatch> {
    if let Some(e) = &sm.exact {
        Some(StrMatch::Exact(e.clone()))
    } else if let Some(p) = &sm.prefix {
        Some(StrMatch::Prefix(p.clone()))
    } else {
        // Validated RE2; anchored as Envoy anchors it.
        sm.regex
            .as_ref()
            .and_then(|r| regex::Regex::new(&format!("^(?:{r})$")).ok())
            .map(StrMatch::Regex)
    }
}

fn cors(c: &vs::CorsPolicy) -> Cors {
    let mut allow_origins: Vec<StrMatch> = c.allow_origins.iter().filter_map(str_match).collect();
    // The deprecated `allowOrigin` list is exact origins.
    allow_origins.extend(c.allow_origin.iter().cloned().map(StrMatch::Exact));
    Cors {
        allow_origins,
        allow_methods: c.allow_methods.join(","),
        allow_headers: c.allow_headers.join(","),
        expose_headers: c.expose_headers.join(","),
        max_age: c.max_age.map(|d| d.0.as_secs()),
        allow_credentials: c.allow_credentials == Some(true),
        forward_unmatched_preflights: c.unmatched_preflights
            != Some(vs::UnmatchedPreflights::Ignore),
    }
}

fn request_match(m: &vs::HttpMatchRequest) -> RequestMatch {
    let mut headers: Vec<HeaderMatch> = m
        .headers
        .iter()
        .map(|(k, v)| HeaderMatch {
            name: k.to_ascii_lowercase(),
            matcher: str_match(v),
            invert: false,
        })
        .collect();
    headers.extend(m.without_headers.iter().map(|(k, v)| HeaderMatch {
        name: k.to_ascii_lowercase(),
        matcher: str_match(v),
        invert: true,
    }));
    RequestMatch {
        uri: m.uri.as_ref().and_then(str_match),
        scheme: m.scheme.as_ref().and_then(str_match),
        method: m.method.as_ref().and_then(str_match),
        authority: m.authority.as_ref().and_then(str_match),
        headers,
        query_params: m
            .query_params
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), str_match(v)?)))
            .collect(),
        port: m.port,
        ignore_uri_case: m.ignore_uri_case.unwrap_or(false),
    }
}

/// A short name as Istio reads it in a resource of namespace `ns`:
/// `reviews` -> `reviews.<ns>.svc.cluster.local`, `reviews.prod` ->
/// `reviews.prod.svc.cluster.local`; anything with more dots, a wildcard or
/// an IP stays as written.
pub fn expand(host: &str, ns: &str) -> String {
    if host.starts_with('*') || host.parse::<std::net::IpAddr>().is_ok() {
        return host.to_string();
    }
    match host.matches('.').count() {
        0 => format!("{host}.{ns}.{CLUSTER_DOMAIN}"),
        1 => format!("{host}.{CLUSTER_DOMAIN}"),
        _ => host.to_string(),
    }
}

/// The workload's `outboundTrafficPolicy`: from the Sidecar that selects
/// it, else its namespace's Sidecar without a selector, else the root
/// namespace's, else MeshConfig, else REGISTRY_ONLY.
/// The applicable Sidecar's outboundTrafficPolicy, else MeshConfig's.
fn outbound_policy(resources: &[Resource], mesh: &Mesh, w: &Workload) -> OutboundPolicy {
    use weft_api::types::sidecar::OutboundMode;
    let mode = crate::scope::sidecar_for(resources, mesh, w)
        .and_then(|(_, sc)| sc.outbound_traffic_policy.as_ref())
        .and_then(|p| p.mode);
    match mode {
        Some(OutboundMode::AllowAny) => OutboundPolicy::AllowAny,
        Some(OutboundMode::RegistryOnly) => OutboundPolicy::RegistryOnly,
        None => mesh.outbound_policy.unwrap_or_default(),
    }
}
