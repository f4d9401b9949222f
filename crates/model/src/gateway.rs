//! Gateway resources compiled for the proxy they select: each server's
//! port, hosts and TLS, and the VirtualServices bound to the gateway
//! (`gateways: [name]` or `[namespace/name]`) whose hosts meet the
//! server's, honouring the `namespace/host` form of server hosts.

use std::collections::BTreeMap;

use weft_api::types::gateway::{self as gw, Gateway};
use weft_api::types::virtual_service::VirtualService;
use weft_api::{Resource, Spec};

use crate::compile::{Compiler, expand};
use crate::config::{
    GatewayPort, GatewayServer, OutboundService, ServerTls, ServerTlsMode, SniRoute, host_matches,
};
use crate::protocol::Protocol;
use crate::registry::selects;

/// Whether VirtualService `v` of namespace `ns` binds gateway `full`
/// (`namespace/name`).
pub(crate) fn binds(v_gateways: &[String], ns: &str, full: &str) -> bool {
    v_gateways.iter().any(|g| {
        if g.contains('/') {
            g == full
        } else {
            format!("{ns}/{g}") == full
        }
    })
}

/// A server host: the namespaces whose VirtualServices may use it (`None`
/// for any) and the host pattern.
fn server_host<'a>(h: &'a str, gateway_ns: &'a str) -> (Option<&'a str>, &'a str) {
    match h.split_once('/') {
        Some(("*", host)) => (None, host),
        Some((".", host)) => (Some(gateway_ns), host),
        Some((ns, host)) => (Some(ns), host),
        None => (None, h),
    }
}

impl Compiler<'_> {
    /// The ports and servers of every Gateway selecting this proxy.
    pub(crate) fn gateway_ports(&mut self) -> Vec<GatewayPort> {
        let gateways: Vec<(&Resource, &Gateway)> = self
            .resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::Gateway(g)
                    if !g.selector.is_empty() && selects(&g.selector, &self.me.labels) =>
                {
                    Some((r, g))
                }
                _ => None,
            })
            .collect();
        let mut ports: BTreeMap<u32, Vec<GatewayServer>> = BTreeMap::new();
        for (r, g) in gateways {
            let full = format!("{}/{}", r.namespace(), r.name);
            for (i, s) in g.servers.iter().enumerate() {
                let Some(port) = s.port.as_ref().and_then(|p| p.number) else {
                    continue;
                };
                let server = self.server(&full, r.namespace(), i, s, port);
                ports.entry(port).or_default().push(server);
            }
        }
        ports
            .into_iter()
            .map(|(port, servers)| GatewayPort { port, servers })
            .collect()
    }

    fn server(
        &mut self,
        full: &str,
        gateway_ns: &str,
        index: usize,
        s: &gw::Server,
        port: u32,
    ) -> GatewayServer {
        let mut protocol = s
            .port
            .as_ref()
            .and_then(|p| p.protocol.as_deref())
            .and_then(Protocol::parse)
            .unwrap_or(Protocol::Http);
        let mesh_only = s
            .tls
            .as_ref()
            .is_some_and(|t| t.mode == Some(gw::ServerTlsMode::IstioMutual));
        if mesh_only {
            protocol = match protocol {
                Protocol::Https => Protocol::Http,
                Protocol::Tls => Protocol::Tcp,
                p => p,
            };
        }
        let tls = s.tls.as_ref().and_then(|t| {
            let mode = match t.mode? {
                gw::ServerTlsMode::Simple => ServerTlsMode::Simple,
                gw::ServerTlsMode::Mutual => ServerTlsMode::Mutual,
                gw::ServerTlsMode::OptionalMutual => ServerTlsMode::OptionalMutual,
                gw::ServerTlsMode::Passthrough | gw::ServerTlsMode::AutoPassthrough => {
                    ServerTlsMode::Passthrough
                }
                // Mesh mTLS at a gateway is HBONE's business.
                gw::ServerTlsMode::IstioMutual => return None,
            };
            Some(ServerTls {
                mode,
                server_certificate: t.server_certificate.clone(),
                private_key: t.private_key.clone(),
                ca_certificates: t.ca_certificates.clone(),
                credential_name: t.credential_name.clone(),
                subject_alt_names: t.subject_alt_names.clone(),
            })
        });
        let https_redirect = s
            .tls
            .as_ref()
            .is_some_and(|t| t.https_redirect == Some(true));
        let hosts: Vec<(Option<&str>, &str)> =
            s.hosts.iter().map(|h| server_host(h, gateway_ns)).collect();
        let name = s.name.clone().unwrap_or_else(|| format!("{full}/{index}"));
        let bound: Vec<(&Resource, &VirtualService)> = self
            .resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::VirtualService(v) if binds(&v.gateways, r.namespace(), full) => Some((r, v)),
                _ => None,
            })
            .collect();
        let passthrough = tls
            .as_ref()
            .is_some_and(|t| t.mode == ServerTlsMode::Passthrough);
        let previous = self.gateway.replace(full.to_string());
        let mut vhosts: Vec<OutboundService> = Vec::new();
        let mut tcp = Vec::new();
        let mut sni_routes = Vec::new();
        for (r, v) in bound {
            let vns = r.namespace();
            // The VirtualService's hosts this server takes, as the more
            // specific of the two names.
            let domains: Vec<String> = v
                .hosts
                .iter()
                .map(|h| expand(h, vns))
                .filter_map(|h| {
                    hosts.iter().find_map(|(ns, sh)| {
                        if ns.is_some_and(|ns| ns != vns) {
                            return None;
                        }
                        if host_matches(sh, &h) {
                            Some(h.clone())
                        } else if host_matches(&h, sh) {
                            Some(sh.to_string())
                        } else {
                            None
                        }
                    })
                })
                .collect();
            if domains.is_empty() {
                continue;
            }
            if passthrough {
                sni_routes.extend(self.sni_routes(vns, v, port));
                continue;
            }
            let (routes, tcp_route) = self.routes_from(vns, v, port, None);
            if tcp.is_empty() {
                tcp = tcp_route;
            }
            for domain in domains {
                match vhosts.iter_mut().find(|x| x.host == domain) {
                    Some(existing) => existing.routes.extend(routes.iter().cloned()),
                    None => vhosts.push(OutboundService {
                        host: domain,
                        port,
                        protocol,
                        routes: routes.clone(),
                        tcp: Vec::new(),
                        tls: Vec::new(),
                        addresses: Vec::new(),
                    }),
                }
            }
        }
        self.gateway = previous;
        GatewayServer {
            name,
            hosts: hosts.iter().map(|(_, h)| h.to_string()).collect(),
            protocol,
            tls,
            mesh_only,
            https_redirect,
            vhosts,
            tcp,
            sni_routes,
        }
    }

    /// TLS routes of `v` for `port` (a passthrough server's, or a
    /// sidecar's outbound port).
    pub(crate) fn sni_routes(&mut self, ns: &str, v: &VirtualService, port: u32) -> Vec<SniRoute> {
        let mut out = Vec::new();
        for t in &v.tls {
            let matching: Vec<&weft_api::types::virtual_service::TlsMatchAttributes> = t
                .r#match
                .iter()
                .filter(|m| m.port.is_none_or(|p| p == port) && self.match_binds(&m.gateways, ns))
                .collect();
            if matching.is_empty() {
                continue;
            }
            let dests: Vec<_> = t
                .route
                .iter()
                .map(|d| (d.destination.as_ref(), d.weight, None))
                .collect();
            let route = self.weighted(ns, &dests, port, None);
            out.push(SniRoute {
                sni_hosts: matching
                    .iter()
                    .flat_map(|m| m.sni_hosts.iter().cloned())
                    .collect(),
                route,
            });
        }
        out
    }
}
