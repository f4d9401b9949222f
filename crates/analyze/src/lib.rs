//! `weft analyze`: Istio's configuration analyzers, with Istio's message
//! codes, levels and wording, over resources loaded from files (as
//! `istioctl analyze --use-kube=false` reads them). Pure: no I/O, no clock.
//!
//! Built so far: IST0101 (gateways, hosts, ports, subsets, namespaces,
//! selectors, credentials), IST0102, IST0103, IST0109, IST0111, IST0112,
//! IST0118, IST0123, IST0128, IST0129, IST0132, IST0134, IST0138, IST0140,
//! IST0122, IST0144, IST0145, IST0149, IST0150, IST0161, IST0162, IST0173,
//! IST0174 here;
//! IST0107, IST0108, IST0125 and IST0135 in `annotations.rs`; IST0127 in `authz.rs`;
//! IST0166 and IST0167 in `selectors.rs`; IST0139, IST0146, IST0147, IST0163 and IST0164 in `webhooks.rs`; IST0126 in `networks.rs`; IST0171 in `conditions.rs`; IST0002 and IST0158 here;
//! IST0113 in `mtls.rs`; IST0110
//! and IST0159 in `selectors.rs`; IST0116 and IST0137 in `deployments.rs`;
//! IST0151 to IST0155 in `envoy_filter.rs`; IST0157 and IST0160 in
//! `telemetry.rs`. weft's readiness checklist (WEFT1xxx) is `readiness.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

mod annotations;
mod authz;
mod conditions;
mod deployments;
mod envoy_filter;
mod mtls;
mod networks;
pub mod readiness;
mod selectors;
mod telemetry;
mod webhooks;

use serde::Serialize;
use weft_api::types::destination_rule::ClientTlsMode;
use weft_api::{Resource, Spec};

/// Istio's message levels, most severe first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Level {
    Error,
    Warning,
    Info,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "Error",
            Level::Warning => "Warning",
            Level::Info => "Info",
        })
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub code: &'static str,
    pub level: Level,
    pub message: String,
    /// `Kind namespace/name`, the namespace left out for cluster-scoped
    /// resources.
    pub origin: String,
    /// `file:line` of the resource.
    pub source: String,
    pub documentation_url: String,
}

impl fmt::Display for Message {
    /// Istio's form: `Error [IST0101] (VirtualService default/reviews
    /// mesh.yaml:12) Referenced host not found: "reviews"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} [{}] ({} {}) {}",
            self.level, self.code, self.origin, self.source, self.message
        )
    }
}

fn message(code: &'static str, level: Level, r: &Resource, text: String) -> Message {
    message_at(code, level, r, None, text)
}

/// A message at `line` of the resource's file (a field's line, as Istio
/// gives it), or at the resource's first line.
fn message_at(
    code: &'static str,
    level: Level,
    r: &Resource,
    line: Option<u32>,
    text: String,
) -> Message {
    Message {
        code,
        level,
        message: text,
        origin: r.origin(),
        source: format!("{}:{}", r.source.file, line.unwrap_or(r.source.pos.line)),
        documentation_url: documentation(code),
    }
}

/// Istio's page for an IST code; weft's README section for its own.
fn documentation(code: &str) -> String {
    if code.starts_with("WEFT") {
        "README.md#the-readiness-checklist".to_string()
    } else {
        format!(
            "https://istio.io/latest/docs/reference/config/analysis/{}/",
            code.to_ascii_lowercase()
        )
    }
}

/// IST0106 (SchemaValidationError), IST0133 (SchemaWarning), IST0130
/// (VirtualServiceUnreachableRule) or IST0131 (VirtualServiceIneffective-
/// Match) for one of weft's validation findings about a resource; `None`
/// for notes and for findings about no resource (unreadable input).
pub fn schema(d: &weft_api::Diagnostic) -> Option<Message> {
    let origin = d.origin.clone()?;
    // A resource defined again in another input is the loader's finding
    // (`weft validate` reports it), not a schema error: the later
    // definition is what istioctl analyzes.
    if d.path.is_none() && d.message.starts_with("defined twice") {
        return None;
    }
    let detail = match &d.path {
        Some(path) => format!("{path}: {}", d.message),
        None => d.message.clone(),
    };
    let (code, level, message) = match (d.level, d.message.strip_prefix("virtualService rule ")) {
        (weft_api::Level::Note, _) => return None,
        // Istio's validation warns of unreachable rules and ineffective
        // matches; istioctl analyze gives them codes of their own.
        (weft_api::Level::Warning, Some(rest)) if rest.contains(" match ") => (
            "IST0131",
            Level::Info,
            format!("VirtualService rule {rest}."),
        ),
        (weft_api::Level::Warning, Some(rest)) => (
            "IST0130",
            Level::Warning,
            format!("VirtualService rule {rest}."),
        ),
        (weft_api::Level::Warning, None) => (
            "IST0133",
            Level::Warning,
            format!("Schema validation warning: {detail}"),
        ),
        (weft_api::Level::Error, _) => (
            "IST0106",
            Level::Error,
            format!("Schema validation error: {detail}"),
        ),
    };
    Some(Message {
        code,
        level,
        message,
        origin,
        source: format!("{}:{}", d.file, d.pos.line),
        documentation_url: documentation(code),
    })
}

/// The pod labels of a workload: a Pod's, a WorkloadEntry's, or those of a
/// Deployment's pod template. Istio's analyzers count running pods; from
/// files these stand for them.
pub(crate) fn workload_labels(r: &Resource) -> Option<&BTreeMap<String, String>> {
    match &r.spec {
        Spec::Pod(_) => Some(&r.meta.labels),
        Spec::WorkloadEntry(we) => Some(&we.labels),
        Spec::Deployment(d) => d.template.as_ref().map(|t| &t.metadata.labels),
        _ => None,
    }
}

/// Kubernetes' form of a label selector: `k=v,k2=v2`, keys in order.
pub(crate) fn selector_text(selector: &BTreeMap<String, String>) -> String {
    selector
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether every label of `selector` is on `labels`.
pub(crate) fn selects(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Every workload among `resources`: namespace, name and pod labels.
pub(crate) fn workloads(
    resources: &[Resource],
) -> impl Iterator<Item = (&str, &str, &BTreeMap<String, String>)> {
    resources
        .iter()
        .filter_map(|r| Some((r.namespace(), r.name.as_str(), workload_labels(r)?)))
}

/// Every analyzer over `resources`, in resource order, then code.
pub fn analyze(resources: &[Resource]) -> Vec<Message> {
    analyze_with(resources, &Options::default())
}

/// What the analyzers read besides the resources.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options<'a> {
    /// The mesh's MeshConfig, when the inputs hold one.
    pub mesh: Option<&'a weft_api::types::mesh::MeshConfig>,
    /// Credential folders beside the inputs (`NAME/tls.crt`), which weft
    /// reads for a `credentialName` as Istio reads a Secret.
    pub credentials: &'a [String],
    /// The credentials a gateway could not serve, as Istio judges a
    /// Secret: credential folders (by name) and Secrets (`namespace/name`)
    /// without a certificate and key, whose certificate does not parse, or
    /// whose certificate is expired or not yet valid.
    pub invalid_credentials: &'a [String],
}

/// Every analyzer over `resources`, with `options`.
pub fn analyze_with(resources: &[Resource], options: &Options<'_>) -> Vec<Message> {
    let mesh = options.mesh;
    // Istio's DNS proxy allocates addresses to ServiceEntries without any.
    let auto_allocated = mesh
        .and_then(|m| m.default_config.as_ref())
        .and_then(|c| c.proxy_metadata.get("ISTIO_META_DNS_AUTO_ALLOCATE"))
        .is_some_and(|v| v == "true");
    let cx = Context::new(resources);
    let mut out = Vec::new();
    for r in resources {
        match &r.spec {
            Spec::VirtualService(vs) => {
                invalid_regexes(r, vs, &mut out);
                cx.gateways_of(r, &mut out);
                cx.hosts_in_gateways(r, &mut out);
                cx.destinations_of(r, &mut out);
            }
            Spec::DestinationRule(dr) => {
                destination_tls(r, &mut out);
                // IST0174: a host no Service or ServiceEntry visible to
                // the DestinationRule defines.
                let host = expand(&dr.host, r.namespace());
                if !cx.host_visible(r.namespace(), &dr.export_to, &host) {
                    out.push(message(
                        "IST0174",
                        Level::Warning,
                        r,
                        format!(
                            "The host {} defined in the DestinationRule does not match any services in the mesh.",
                            dr.host
                        ),
                    ));
                }
            }
            Spec::ServiceEntry(_) if !auto_allocated => addresses_required(r, &mut out),
            Spec::Service(_) => port_names(r, &mut out),
            Spec::Namespace => injection(r, &mut out),
            _ => {}
        }
    }
    annotations::analyze(resources, &mut out);
    webhooks::analyze(resources, &mut out);
    networks::analyze(resources, &mut out);
    conditions::analyze(resources, &mut out);
    webhooks::image_auto(resources, &mut out);
    webhooks::external_control_plane(resources, &mut out);
    deprecated_fields(resources, &mut out);
    sidecars_without_selectors(resources, &mut out);
    duplicate_certificates(resources, &mut out);
    ingress_subsets(resources, &mut out);
    envoy_filter::analyze(resources, &mut out);
    let root = mesh
        .and_then(|m| m.root_namespace.as_deref())
        .unwrap_or("istio-system");
    authz::analyze(resources, root, &mut out);
    mtls::analyze(resources, root, &mut out);
    selectors::analyze(resources, &mut out);
    jwt_claim_routes(resources, &mut out);
    gateway_credentials(resources, options, &mut out);
    gateway_ports(resources, &mut out);
    proxy_uid(resources, &mut out);
    deployments::analyze(resources, &mut out);
    missing_proxies(resources, &mut out);
    proxy_images(resources, &mut out);
    unselected_subsets(resources, &mut out);
    telemetry::analyze(resources, mesh, &mut out);
    mesh_host_conflicts(resources, &mut out);
    conflicting_gateways(resources, &mut out);
    drop_suppressed(resources, &mut out);
    out
}

/// Drops the messages about a resource whose `galley.istio.io/analyze-
/// suppress` annotation lists their code (comma-separated), or is `*`.
pub fn drop_suppressed(resources: &[Resource], messages: &mut Vec<Message>) {
    let suppress: BTreeMap<String, &str> = resources
        .iter()
        .filter_map(|r| {
            let codes = r.meta.annotations.get("galley.istio.io/analyze-suppress")?;
            Some((r.origin(), codes.as_str()))
        })
        .collect();
    if suppress.is_empty() {
        return;
    }
    messages.retain(|m| {
        !suppress
            .get(&m.origin)
            .is_some_and(|codes| *codes == "*" || codes.split(',').any(|c| c.trim() == m.code))
    });
}

/// IST0145: another Gateway on the same workloads serves the same port for
/// the same host with the same `bind`, as Istio's analyzer finds it: the
/// same selector, or one selector's text within the other's (`a=1` and
/// `a=1,b=2`) when some workload matches both. Each other Gateway counts
/// with its last server on the port. Reported per server, naming the
/// other Gateways.
fn conflicting_gateways(resources: &[Resource], out: &mut Vec<Message>) {
    struct Listener<'a> {
        gateway: String,
        selector: &'a BTreeMap<String, String>,
        text: String,
        port: u32,
        hosts: &'a [String],
        bind: &'a str,
    }
    let mut last: BTreeMap<(String, u32), Listener<'_>> = BTreeMap::new();
    for r in resources {
        if let Spec::Gateway(g) = &r.spec {
            let gateway = format!("{}/{}", r.namespace(), r.name);
            for s in &g.servers {
                let port = s.port.as_ref().and_then(|p| p.number).unwrap_or(0);
                last.insert(
                    (gateway.clone(), port),
                    Listener {
                        gateway: gateway.clone(),
                        selector: &g.selector,
                        text: selector_text(&g.selector),
                        port,
                        hosts: &s.hosts,
                        bind: s.bind.as_deref().unwrap_or_default(),
                    },
                );
            }
        }
    }
    let workloads: Vec<&BTreeMap<String, String>> =
        workloads(resources).map(|(_, _, labels)| labels).collect();
    for r in resources {
        let Spec::Gateway(g) = &r.spec else {
            continue;
        };
        let me = format!("{}/{}", r.namespace(), r.name);
        let mine = selector_text(&g.selector);
        let same_workloads = |other: &Listener<'_>| {
            other.text == mine
                || ((other.text.contains(&mine) || mine.contains(&other.text))
                    && workloads
                        .iter()
                        .any(|w| selects(&g.selector, w) && selects(other.selector, w)))
        };
        for s in &g.servers {
            let port = s.port.as_ref().and_then(|p| p.number).unwrap_or(0);
            let bind = s.bind.as_deref().unwrap_or_default();
            let mut others: Vec<&str> = last
                .values()
                .filter(|o| o.gateway != me && o.port == port && same_workloads(o))
                .filter(|o| o.bind == bind && s.hosts.iter().any(|h| o.hosts.contains(h)))
                .map(|o| o.gateway.as_str())
                .collect();
            others.sort_unstable();
            if !others.is_empty() {
                out.push(message(
                    "IST0145",
                    Level::Error,
                    r,
                    format!(
                        "Conflict with gateways {} (workload selector {mine}, port {port}, hosts {}).",
                        others.join(","),
                        s.hosts.join(",")
                    ),
                ));
            }
        }
    }
}

/// Whether two host names overlap: equal, or one a wildcard (`*`,
/// `*.suffix`) covering the other, case-insensitively.
fn overlap(a: &str, b: &str) -> bool {
    let covers = |pattern: &str, host: &str| match pattern.strip_prefix('*') {
        Some(suffix) => {
            host.len() >= suffix.len()
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
        None => pattern.eq_ignore_ascii_case(host),
    };
    covers(a, b) || covers(b, a)
}

/// The namespace a gateway reference names, and the gateway's name.
fn gateway_ref<'g>(g: &'g str, ns: &'g str) -> (&'g str, &'g str) {
    g.split_once('/').unwrap_or((ns, g))
}

/// IST0109: VirtualServices for the mesh that define the same host where
/// both are visible, as Istio's analyzer finds them: hosts are keyed by
/// scope (`*`, or each namespace the VirtualService is exported to), a
/// namespace's key also collects the overlapping hosts exported to all, and
/// each VirtualService is reported once, for the first conflict found (in
/// key order), naming the host as `scope/host`.
fn mesh_host_conflicts(resources: &[Resource], out: &mut Vec<Message>) {
    let mut by_host: BTreeMap<(String, String), Vec<&Resource>> = BTreeMap::new();
    for r in resources {
        let Spec::VirtualService(vs) = &r.spec else {
            continue;
        };
        let for_mesh = vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh");
        if !for_mesh {
            continue;
        }
        let ns = r.namespace();
        let scopes: BTreeSet<&str> =
            if vs.export_to.is_empty() || vs.export_to.iter().any(|e| e == "*") {
                ["*"].into()
            } else {
                vs.export_to
                    .iter()
                    .map(|e| if e == "." { ns } else { e.as_str() })
                    .collect()
            };
        for scope in scopes {
            let mut own = BTreeSet::new();
            for h in &vs.hosts {
                let host = expand(h, ns);
                if own.insert(host.clone()) {
                    by_host
                        .entry((scope.to_string(), host))
                        .or_default()
                        .push(r);
                }
            }
        }
    }
    let mut reported = BTreeSet::new();
    for ((scope, host), own) in &by_host {
        let mut vss = own.clone();
        if scope != "*" {
            vss.extend(
                by_host
                    .iter()
                    .filter(|((s, h), _)| s == "*" && overlap(host, h))
                    .flat_map(|(_, v)| v.iter().copied()),
            );
        }
        if vss.len() < 2 {
            continue;
        }
        let names: Vec<String> = vss
            .iter()
            .map(|r| format!("{}/{}", r.namespace(), r.name))
            .collect();
        for r in vss {
            if !reported.insert((r.namespace(), r.name.as_str())) {
                continue;
            }
            out.push(message(
                "IST0109",
                Level::Error,
                r,
                format!(
                    "The VirtualServices {} associated with mesh gateway define the same host {scope}/{host} which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.",
                    names.join(",")
                ),
            ));
        }
    }
}

const DOMAIN: &str = "svc.cluster.local";

/// What the analyzers look things up in.
struct Context<'a> {
    /// Gateways by `namespace/name`.
    gateways: BTreeSet<String>,
    /// Each Gateway's server hosts, by namespace and name.
    servers: BTreeMap<(String, String), Vec<&'a str>>,
    /// Hosts of Kubernetes Services and ServiceEntries, with the scopes
    /// they are exported to (`*`, or a namespace).
    hosts: BTreeMap<String, Vec<String>>,
    /// ServiceEntry hosts with a leading `*`, as their suffix, with each
    /// scope they are exported to.
    wildcards: Vec<(String, String)>,
    /// Subsets defined by DestinationRules, by host.
    subsets: BTreeMap<String, BTreeSet<&'a str>>,
    /// The port numbers of each Service and (non-wildcard) ServiceEntry
    /// host.
    ports: BTreeMap<String, Vec<u32>>,
}

/// The scopes a Service or ServiceEntry in `ns` is exported to: every
/// namespace (`*`) unless `exportTo` says otherwise, `.` being its own.
fn scopes(export_to: &[String], ns: &str) -> Vec<String> {
    if export_to.is_empty() {
        return vec!["*".to_string()];
    }
    export_to
        .iter()
        .map(|e| if e == "." { ns.to_string() } else { e.clone() })
        .collect()
}

/// A short name as Istio expands it in namespace `ns`.
fn expand(host: &str, ns: &str) -> String {
    if host.contains('.') || host.contains('*') {
        host.to_string()
    } else {
        format!("{host}.{ns}.{DOMAIN}")
    }
}

impl<'a> Context<'a> {
    fn new(resources: &'a [Resource]) -> Context<'a> {
        let mut cx = Context {
            gateways: BTreeSet::new(),
            servers: BTreeMap::new(),
            hosts: BTreeMap::new(),
            wildcards: Vec::new(),
            subsets: BTreeMap::new(),
            ports: BTreeMap::new(),
        };
        for r in resources {
            let ns = r.namespace();
            match &r.spec {
                Spec::Gateway(g) => {
                    cx.gateways.insert(format!("{ns}/{}", r.name));
                    cx.servers.insert(
                        (ns.to_string(), r.name.clone()),
                        g.servers
                            .iter()
                            .flat_map(|s| &s.hosts)
                            .map(String::as_str)
                            .collect(),
                    );
                }
                Spec::Service(svc) => {
                    let host = format!("{}.{ns}.{DOMAIN}", r.name);
                    cx.ports
                        .entry(host.clone())
                        .or_default()
                        .extend(svc.ports.iter().filter_map(|p| p.port));
                    let export_to: Vec<String> = r
                        .meta
                        .annotations
                        .get("networking.istio.io/exportTo")
                        .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
                        .unwrap_or_default();
                    cx.hosts
                        .entry(host)
                        .or_default()
                        .extend(scopes(&export_to, ns));
                }
                Spec::ServiceEntry(se) => {
                    for h in &se.hosts {
                        match h.strip_prefix('*') {
                            Some(suffix) => cx.wildcards.extend(
                                scopes(&se.export_to, ns)
                                    .into_iter()
                                    .map(|scope| (suffix.to_string(), scope)),
                            ),
                            None => {
                                let host = expand(h, ns);
                                cx.ports
                                    .entry(host.clone())
                                    .or_default()
                                    .extend(se.ports.iter().filter_map(|p| p.number));
                                cx.hosts
                                    .entry(host)
                                    .or_default()
                                    .extend(scopes(&se.export_to, ns));
                            }
                        }
                    }
                }
                Spec::DestinationRule(dr) => {
                    cx.subsets
                        .entry(expand(&dr.host, ns))
                        .or_default()
                        .extend(dr.subsets.iter().map(|s| s.name.as_str()));
                }
                _ => {}
            }
        }
        cx
    }

    /// Whether a VirtualService (or DestinationRule) in `ns`, exported to
    /// `export_to`, sees a Service or ServiceEntry for `host`, as Istio's
    /// analyzer looks hosts up: one exported to all namespaces, or to a namespace the
    /// VirtualService is exported to (its own when it names none); then
    /// wildcard hosts exported to all or to `ns`.
    fn host_visible(&self, ns: &str, export_to: &[String], host: &str) -> bool {
        let own = [ns.to_string()];
        let wanted: Vec<&str> = if export_to.is_empty() {
            &own[..]
        } else {
            export_to
        }
        .iter()
        .map(|e| if e == "." { ns } else { e.as_str() })
        .collect();
        let exact = self.hosts.get(host).is_some_and(|scopes| {
            scopes
                .iter()
                .any(|s| s == "*" || wanted.contains(&s.as_str()))
        });
        let bare = host.strip_prefix('*').unwrap_or(host);
        exact
            || self.wildcards.iter().any(|(suffix, scope)| {
                (scope == "*" || scope == ns) && bare.ends_with(suffix.as_str())
            })
    }

    /// IST0101: gateways a VirtualService names that do not exist.
    fn gateways_of(&self, r: &Resource, out: &mut Vec<Message>) {
        let Spec::VirtualService(vs) = &r.spec else {
            return;
        };
        let named = vs.gateways.iter().chain(
            vs.http
                .iter()
                .flat_map(|h| &h.r#match)
                .flat_map(|m| &m.gateways),
        );
        let mut seen = BTreeSet::new();
        for g in named {
            if g == "mesh" || !seen.insert(g) {
                continue;
            }
            let (gw_ns, gw_name) = gateway_ref(g, r.namespace());
            if !self.gateways.contains(&format!("{gw_ns}/{gw_name}")) {
                out.push(message(
                    "IST0101",
                    Level::Error,
                    r,
                    format!("Referenced gateway not found: {g:?}"),
                ));
            }
        }
    }

    /// IST0132: a VirtualService none of whose hosts a Gateway it is bound
    /// to serves (or that names a Gateway that does not exist), naming all
    /// its hosts, as Istio's analyzer does.
    fn hosts_in_gateways(&self, r: &Resource, out: &mut Vec<Message>) {
        let Spec::VirtualService(vs) = &r.spec else {
            return;
        };
        let ns = r.namespace();
        for g in vs.gateways.iter().filter(|g| *g != "mesh") {
            let (gw_ns, gw_name) = gateway_ref(g, ns);
            // A Gateway that does not exist serves no host (IST0101 says
            // it is missing).
            let servers = self
                .servers
                .get(&(gw_ns.to_string(), gw_name.to_string()))
                .map(Vec::as_slice)
                .unwrap_or_default();
            let served = vs.hosts.iter().any(|h| {
                servers.iter().any(|server_host| {
                    let (host_ns, pattern) =
                        server_host.split_once('/').unwrap_or(("*", server_host));
                    let ns_ok = match host_ns {
                        "*" => true,
                        "." => ns == gw_ns,
                        other => other == ns,
                    };
                    ns_ok && overlap(pattern, h)
                })
            });
            if !served {
                out.push(message(
                    "IST0132",
                    Level::Warning,
                    r,
                    format!(
                        "one or more host [{}] defined in VirtualService {ns}/{} not found in Gateway {gw_ns}/{gw_name}.",
                        vs.hosts.join(" "),
                        r.name
                    ),
                ));
            }
        }
    }

    /// IST0101: destination and mirror hosts, ports and subsets that do
    /// not exist; IST0112: a destination without a port to a service with
    /// several.
    fn destinations_of(&self, r: &Resource, out: &mut Vec<Message>) {
        let Spec::VirtualService(vs) = &r.spec else {
            return;
        };
        let ns = r.namespace();
        let routes = vs
            .http
            .iter()
            .flat_map(|h| h.route.iter().filter_map(|d| d.destination.as_ref()))
            .chain(
                vs.tcp
                    .iter()
                    .flat_map(|t| &t.route)
                    .filter_map(|d| d.destination.as_ref()),
            )
            .chain(
                vs.tls
                    .iter()
                    .flat_map(|t| &t.route)
                    .filter_map(|d| d.destination.as_ref()),
            )
            .map(|d| ("host", d));
        let mirrors = vs
            .http
            .iter()
            .flat_map(|h| {
                h.mirror
                    .iter()
                    .chain(h.mirrors.iter().filter_map(|m| m.destination.as_ref()))
            })
            .map(|d| ("mirror host", d));
        for (what, d) in routes.chain(mirrors) {
            let host = expand(&d.host, ns);
            if !self.host_visible(ns, &vs.export_to, &host) {
                out.push(message(
                    "IST0101",
                    Level::Error,
                    r,
                    format!("Referenced {what} not found: {:?}", d.host),
                ));
                continue;
            }
            if let Some(ports) = self.ports.get(&host) {
                match d.port.and_then(|p| p.number) {
                    None if ports.len() > 1 => out.push(message(
                        "IST0112",
                        Level::Error,
                        r,
                        format!(
                            "This VirtualService routes to a service {:?} that exposes multiple ports [{}]. Specifying a port in the destination is required to disambiguate.",
                            d.host,
                            ports.iter().map(u32::to_string).collect::<Vec<_>>().join(" ")
                        ),
                    )),
                    Some(port) if !ports.contains(&port) => out.push(message(
                        "IST0101",
                        Level::Error,
                        r,
                        format!("Referenced host:port not found: \"{}:{port}\"", d.host),
                    )),
                    _ => {}
                }
            }
            if let Some(subset) = &d.subset {
                let defined = self
                    .subsets
                    .get(&host)
                    .is_some_and(|s| s.contains(subset.as_str()));
                if !defined {
                    out.push(message(
                        "IST0101",
                        Level::Error,
                        r,
                        format!(
                            "Referenced host+subset in destinationrule not found: \"{}+{subset}\"",
                            d.host
                        ),
                    ));
                }
            }
        }
    }
}

/// IST0128 and IST0129: SIMPLE or MUTUAL TLS toward a host, or one of its
/// ports, without `caCertificates`, nor a `credentialName` to bring them
/// (which only a DestinationRule with a `workloadSelector`, for gateways,
/// can use): the server is not verified. As in Istio, an explicit
/// `insecureSkipVerify` is still reported.
fn destination_tls(r: &Resource, out: &mut Vec<Message>) {
    let Spec::DestinationRule(dr) = &r.spec else {
        return;
    };
    let Some(policy) = dr.traffic_policy.as_ref() else {
        return;
    };
    let unverified = |tls: Option<&weft_api::types::destination_rule::ClientTlsSettings>| {
        let tls = tls?;
        let mode = match tls.mode {
            Some(ClientTlsMode::Simple) => "SIMPLE",
            Some(ClientTlsMode::Mutual) => "MUTUAL",
            _ => return None,
        };
        let credential = tls.credential_name.is_some() && dr.workload_selector.is_some();
        (tls.ca_certificates.is_none() && !credential).then_some(mode)
    };
    let ns = r.namespace();
    let text = |mode: &str| {
        format!(
            "DestinationRule {ns}/{} in namespace {ns} has TLS mode set to {mode} but no caCertificates are set to validate server identity for host: {}",
            r.name, dr.host
        )
    };
    if let Some(mode) = unverified(policy.tls.as_ref()) {
        out.push(message("IST0128", Level::Warning, r, text(mode)));
    }
    for p in &policy.port_level_settings {
        if let Some(mode) = unverified(p.tls.as_ref()) {
            let port = p.port.and_then(|p| p.number).unwrap_or(0);
            out.push(message(
                "IST0129",
                Level::Warning,
                r,
                format!("{} at port number:{port}", text(mode)),
            ));
        }
    }
}

/// Namespaces of the platform, which the port-name convention leaves alone.
const SYSTEM_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// Whether Istio recognizes `name` as a protocol (case-insensitive).
fn known_protocol(name: &str) -> bool {
    const KNOWN: [&str; 13] = [
        "tcp",
        "udp",
        "grpc",
        "grpc-web",
        "http",
        "http_proxy",
        "http2",
        "https",
        "tls",
        "mongo",
        "redis",
        "mysql",
        "hbone",
    ];
    KNOWN.iter().any(|k| k.eq_ignore_ascii_case(name))
}

/// IST0118: a Service port whose protocol neither `appProtocol` nor the
/// name (`<protocol>[-<suffix>]`) tells, nor the port's own UDP.
fn port_names(r: &Resource, out: &mut Vec<Message>) {
    let Spec::Service(svc) = &r.spec else {
        return;
    };
    if SYSTEM_NAMESPACES.contains(&r.namespace()) {
        return;
    }
    for p in &svc.ports {
        let name = p.name.as_deref().unwrap_or_default();
        let prefix = name.split('-').next().unwrap_or(name);
        let told = p.app_protocol.as_deref().is_some_and(known_protocol)
            || p.protocol
                .as_deref()
                .is_some_and(|proto| proto.eq_ignore_ascii_case("UDP"))
            || known_protocol(prefix);
        let external_name = svc.r#type.as_deref() == Some("ExternalName");
        if external_name && (!told || name == "tcp") {
            // IST0150: an ExternalName Service's port named `tcp` or not
            // by the convention: its TCP traffic may not be forwarded.
            out.push(message(
                "IST0150",
                Level::Warning,
                r,
                "Port name for ExternalName service is invalid. Proxy may prevent tcp named ports and unmatched traffic for ports serving TCP protocol from being forwarded correctly".into(),
            ));
            continue;
        }
        if told {
            continue;
        }
        let port = p.port.unwrap_or(0);
        let target = match &p.target_port {
            Some(weft_api::types::kube::IntOrString::Int(n)) => n.to_string(),
            Some(weft_api::types::kube::IntOrString::String(s)) => s.clone(),
            None => port.to_string(),
        };
        out.push(message(
            "IST0118",
            Level::Info,
            r,
            format!(
                "Port name {name} (port: {port}, targetPort: {target}) doesn't follow the naming convention of Istio port."
            ),
        ));
    }
}

/// IST0102: a namespace that says nothing of sidecar injection (neither
/// `istio-injection` nor `istio.io/rev`, nor ambient mode); IST0123: one
/// that has both injection labels.
fn injection(r: &Resource, out: &mut Vec<Message>) {
    let ns = r.name.as_str();
    if SYSTEM_NAMESPACES.contains(&ns) || ns == "istio-system" {
        return;
    }
    let labels = &r.meta.labels;
    let legacy = labels.contains_key("istio-injection");
    let revision = labels.contains_key("istio.io/rev");
    let ambient = labels.get("istio.io/dataplane-mode").map(String::as_str) == Some("ambient");
    if legacy && revision {
        out.push(message(
            "IST0123",
            Level::Warning,
            r,
            "The namespace has more than one type of injection labels [istio-injection istio.io/rev], which may lead to undefined behavior. Make sure only one injection label exists.".into(),
        ));
    } else if !legacy && !revision && !ambient {
        out.push(message(
            "IST0102",
            Level::Info,
            r,
            format!("The namespace is not enabled for Istio injection. Run 'kubectl label namespace {ns} istio-injection=enabled' to enable it, or 'kubectl label namespace {ns} istio-injection=disabled' to explicitly mark it as not needing injection."),
        ));
    }
}

/// IST0134: a ServiceEntry without addresses serving TCP (or unset
/// protocol) ports, which proxies can only tell apart by address; not run
/// when the mesh's proxies allocate addresses themselves
/// (`ISTIO_META_DNS_AUTO_ALLOCATE` in `defaultConfig.proxyMetadata`).
fn addresses_required(r: &Resource, out: &mut Vec<Message>) {
    let Spec::ServiceEntry(se) = &r.spec else {
        return;
    };
    if !se.addresses.is_empty() {
        return;
    }
    let tcp = se.ports.iter().any(|p| {
        p.protocol
            .as_deref()
            .is_none_or(|proto| proto.is_empty() || proto.eq_ignore_ascii_case("TCP"))
    });
    if tcp {
        out.push(message(
            "IST0134",
            Level::Warning,
            r,
            "ServiceEntry addresses are required for this protocol.".into(),
        ));
    }
}

/// IST0111: more than one Sidecar without a workload selector in one
/// namespace; each of them gets the message.
fn sidecars_without_selectors(resources: &[Resource], out: &mut Vec<Message>) {
    let mut by_ns: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
    for r in resources {
        if let Spec::Sidecar(sc) = &r.spec {
            if sc.workload_selector.is_none() {
                by_ns.entry(r.namespace()).or_default().push(r);
            }
        }
    }
    for (ns, sidecars) in &by_ns {
        if selectors::ambient_namespace(resources, ns) {
            for r in sidecars {
                out.push(selectors::ineffective(
                    r,
                    "namespace is in ambient mode, the policy has no impact",
                ));
            }
        }
    }
    for (ns, sidecars) in by_ns
        .into_iter()
        .filter(|(ns, s)| s.len() > 1 && !selectors::ambient_namespace(resources, ns))
    {
        // Istio names them without their (shared) namespace.
        let names: Vec<&str> = sidecars.iter().map(|r| r.name.as_str()).collect();
        for r in &sidecars {
            out.push(message(
                "IST0111",
                Level::Error,
                r,
                format!(
                    "The Sidecars [{}] in namespace {ns:?} have no workload selector, which can lead to undefined behavior.",
                    names.join(" ")
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests;

/// IST0138: two Gateways that may serve the same proxies (the other's
/// selector includes this one's) present the same certificate: a client
/// reusing an HTTP/2 connection for the other host gets 404.
fn duplicate_certificates(resources: &[Resource], out: &mut Vec<Message>) {
    use weft_api::types::gateway::ServerTlsSettings;
    let gateways: Vec<(&Resource, &weft_api::types::gateway::Gateway)> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Gateway(g) => Some((r, g)),
            _ => None,
        })
        .collect();
    let same = |a: &ServerTlsSettings, b: &ServerTlsSettings| match (
        a.credential_name.as_deref(),
        b.credential_name.as_deref(),
    ) {
        (Some(x), Some(y)) if !x.is_empty() && !y.is_empty() => x == y,
        (None | Some(""), None | Some("")) => {
            fn set(v: &Option<String>) -> Option<&str> {
                v.as_deref().filter(|s| !s.is_empty())
            }
            match (set(&a.server_certificate), set(&b.server_certificate)) {
                (Some(x), Some(y)) if x == y => matches!(
                    (set(&a.private_key), set(&b.private_key)),
                    (Some(p), Some(q)) if p == q
                ),
                _ => false,
            }
        }
        _ => false,
    };
    for (r, g) in &gateways {
        for (other_r, other) in &gateways {
            if std::ptr::eq(*r, *other_r) {
                continue;
            }
            let covers = g
                .selector
                .iter()
                .all(|(k, v)| other.selector.get(k) == Some(v));
            if !covers {
                continue;
            }
            for a in g.servers.iter().filter_map(|s| s.tls.as_ref()) {
                for b in other.servers.iter().filter_map(|s| s.tls.as_ref()) {
                    if same(a, b) {
                        out.push(message(
                            "IST0138",
                            Level::Warning,
                            r,
                            format!(
                                "Duplicate certificate in multiple gateways [{}/{} {}/{}] may cause 404s if clients re-use HTTP2 connections.",
                                r.namespace(),
                                r.name,
                                other_r.namespace(),
                                other_r.name
                            ),
                        ));
                    }
                }
            }
        }
    }
}

/// IST0140: a VirtualService bound to gateways routes to a host without a
/// subset while another VirtualService of that host splits it by subset:
/// the split does not apply to the gateway's requests.
fn ingress_subsets(resources: &[Resource], out: &mut Vec<Message>) {
    let virtual_services: Vec<(&Resource, &weft_api::types::virtual_service::VirtualService)> =
        resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::VirtualService(v) => Some((r, v)),
                _ => None,
            })
            .collect();
    // Destinations with a subset, of VirtualServices for their own host.
    let split: Vec<(&Resource, &str)> = virtual_services
        .iter()
        .flat_map(|(r, v)| {
            v.http
                .iter()
                .flat_map(|h| h.route.iter().filter_map(|d| d.destination.as_ref()))
                .filter(|d| d.subset.as_deref().is_some_and(|s| !s.is_empty()))
                .filter(|d| v.hosts.contains(&d.host))
                .map(move |d| (*r, d.host.as_str()))
        })
        .collect();
    for (r, v) in &virtual_services {
        if v.gateways.is_empty() {
            continue;
        }
        for d in v
            .http
            .iter()
            .flat_map(|h| h.route.iter().filter_map(|d| d.destination.as_ref()))
            .filter(|d| d.subset.as_deref().is_none_or(str::is_empty))
        {
            for (other, _) in split.iter().filter(|(_, host)| *host == d.host) {
                out.push(message(
                    "IST0140",
                    Level::Warning,
                    r,
                    format!(
                        "Subset in virtual service {}/{} has no effect on ingress gateway {}/{} requests",
                        other.namespace(),
                        other.name,
                        r.namespace(),
                        r.name
                    ),
                ));
            }
        }
    }
}

/// IST0149: a VirtualService bound to a gateway routes on a JWT claim, but
/// no RequestAuthentication (of istio-system or the gateway workload's
/// namespace) applies to a workload of that gateway: the claim is never
/// there to match.
fn jwt_claim_routes(resources: &[Resource], out: &mut Vec<Message>) {
    const CLAIM: &str = "@request.auth.claims";
    let workloads: Vec<_> = workloads(resources).collect();
    for r in resources {
        let Spec::VirtualService(vs) = &r.spec else {
            continue;
        };
        let key = vs
            .http
            .iter()
            .flat_map(|h| &h.r#match)
            .flat_map(|m| m.headers.keys().chain(m.without_headers.keys()))
            .find(|k| k.starts_with(CLAIM));
        let Some(key) = key else {
            continue;
        };
        for g in vs.gateways.iter().filter(|g| *g != "mesh") {
            let (gw_ns, gw_name) = match g.split_once('/') {
                Some((ns, name)) => (ns, name),
                None => (r.namespace(), g.as_str()),
            };
            let Some(gateway) = resources.iter().find_map(|x| match &x.spec {
                Spec::Gateway(gw) if x.namespace() == gw_ns && x.name == gw_name => Some(gw),
                _ => None,
            }) else {
                continue;
            };
            for (ns, pod, labels) in &workloads {
                if !selects(&gateway.selector, labels) {
                    continue;
                }
                let authenticated = resources.iter().any(|x| match &x.spec {
                    Spec::RequestAuthentication(ra) => {
                        (x.namespace() == "istio-system" || x.namespace() == *ns)
                            && ra
                                .selector
                                .as_ref()
                                .is_none_or(|s| selects(&s.match_labels, labels))
                    }
                    _ => false,
                });
                if !authenticated {
                    out.push(message(
                        "IST0149",
                        Level::Error,
                        r,
                        format!(
                            "The virtual service uses the JWT claim based routing (key: {key}) but found no request authentication for the gateway ({gw_ns}/{gw_name}) pod ({pod}). The request authentication must first be applied for the gateway pods to validate the JWT token and make the claims available for routing."
                        ),
                    ));
                }
            }
        }
    }
}

/// IST0144: an application pod (or a Deployment's) running as UID 1337,
/// the sidecar's own user, whose traffic capture lets through unproxied.
fn proxy_uid(resources: &[Resource], out: &mut Vec<Message>) {
    const PROXY_UID: i64 = 1337;
    for r in resources {
        let spec = match &r.spec {
            Spec::Pod(p) => p,
            Spec::Deployment(d) => match d.template.as_ref().and_then(|t| t.spec.as_ref()) {
                Some(p) => p,
                None => continue,
            },
            _ => continue,
        };
        if r.namespace() == "istio-system" {
            continue;
        }
        let pod_level =
            spec.security_context.as_ref().and_then(|s| s.run_as_user) == Some(PROXY_UID);
        let containers = spec
            .containers
            .iter()
            .filter(|c| c.name != "istio-proxy" && c.name != "istio-operator")
            .filter(|c| c.security_context.as_ref().and_then(|s| s.run_as_user) == Some(PROXY_UID))
            .count();
        for _ in 0..usize::from(pod_level) + containers {
            out.push(message(
                "IST0144",
                Level::Warning,
                r,
                "User ID (UID) 1337 is reserved for the sidecar proxy.".into(),
            ));
        }
    }
}

/// IST0101: a Gateway whose selector matches no workload, or whose server
/// names a `credentialName` that is neither a Secret in the namespace of
/// its workloads nor a credential folder beside the inputs. IST0161: the
/// credential is not usable (`Options::invalid_credentials`).
fn gateway_credentials(resources: &[Resource], options: &Options<'_>, out: &mut Vec<Message>) {
    let folders = options.credentials;
    for r in resources {
        let Spec::Gateway(g) = &r.spec else {
            continue;
        };
        let workload_ns = workloads(resources).find_map(|(ns, _, labels)| {
            g.selector
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
                .then_some(ns)
        });
        let Some(ns) = workload_ns else {
            out.push(message(
                "IST0101",
                Level::Error,
                r,
                format!(
                    "Referenced selector not found: {:?}",
                    selector_text(&g.selector)
                ),
            ));
            continue;
        };
        for name in g
            .servers
            .iter()
            .filter_map(|s| s.tls.as_ref()?.credential_name.as_deref())
            .filter(|n| !n.is_empty())
        {
            let (secret_ns, secret) = name.split_once('/').unwrap_or((ns, name));
            let exists = folders.iter().any(|f| f == name)
                || resources.iter().any(|x| {
                    matches!(x.spec, Spec::Secret(_))
                        && x.namespace() == secret_ns
                        && x.name == secret
                });
            if !exists {
                out.push(message(
                    "IST0101",
                    Level::Error,
                    r,
                    format!("Referenced credentialName not found: {name:?}"),
                ));
            } else if options
                .invalid_credentials
                .iter()
                .any(|f| *f == name || *f == format!("{secret_ns}/{secret}"))
            {
                out.push(message(
                    "IST0161",
                    Level::Error,
                    r,
                    format!(
                        "The credential referenced by the Gateway {} in namespace {} is invalid, which can cause the traffic not to work as expected.",
                        r.name,
                        r.namespace()
                    ),
                ));
            }
        }
    }
}

/// IST0122: a VirtualService match (uri, scheme, method, authority, a
/// header or query parameter) or CORS origin whose regex does not compile.
fn invalid_regexes(
    r: &Resource,
    vs: &weft_api::types::virtual_service::VirtualService,
    out: &mut Vec<Message>,
) {
    use weft_api::path::Path;
    use weft_api::types::virtual_service::StringMatch;
    let mut check = |field: &str, m: Option<&StringMatch>, at: &Path<'_>| {
        let Some(re) = m.and_then(|m| m.regex.as_deref()) else {
            return;
        };
        if let Some(problem) = weft_api::validate::regex_error(re) {
            let line = at.field("regex").to_path().locate(&r.node).line;
            out.push(message_at(
                "IST0122",
                Level::Warning,
                r,
                Some(line),
                format!("Field {field:?} regular expression invalid: {re:?} ({problem})"),
            ));
        }
    };
    let root = Path::Root;
    let spec = root.field("spec");
    let http = spec.field("http");
    for (i, route) in vs.http.iter().enumerate() {
        let rule = http.index(i);
        for (j, m) in route.r#match.iter().enumerate() {
            let list = rule.field("match");
            let at = list.index(j);
            for (field, sm) in [
                ("uri", &m.uri),
                ("scheme", &m.scheme),
                ("method", &m.method),
                ("authority", &m.authority),
            ] {
                let f = at.field(field);
                check(field, sm.as_ref(), &f);
            }
            for (field, map) in [("headers", &m.headers), ("queryParams", &m.query_params)] {
                let f = at.field(field);
                for (key, sm) in map {
                    let k = f.key(key);
                    check(field, Some(sm), &k);
                }
            }
        }
        let cors = rule.field("corsPolicy");
        let origins = cors.field("allowOrigins");
        for (j, origin) in route
            .cors_policy
            .iter()
            .flat_map(|c| &c.allow_origins)
            .enumerate()
        {
            let at = origins.index(j);
            check("corsPolicy.allowOrigins", Some(origin), &at);
        }
    }
}

/// IST0158: Pods of an injected namespace whose istio-proxy image is not
/// the one the injector of their revision (the `istio-sidecar-injector[-
/// REV]` ConfigMap's `values`) would inject now: left from before an
/// upgrade. Pods that pin `sidecar.istio.io/proxyImage` are skipped.
fn proxy_images(resources: &[Resource], out: &mut Vec<Message>) {
    let images: BTreeMap<&str, String> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::ConfigMap(cm) if r.name.starts_with("istio-sidecar-injector") => {
                Some((r.name.as_str(), injector_image(cm.data.get("values")?)))
            }
            _ => None,
        })
        .collect();
    if images.is_empty() {
        return;
    }
    for ns in resources
        .iter()
        .filter(|r| matches!(r.spec, Spec::Namespace))
    {
        let labels = &ns.meta.labels;
        let revision = match labels.get("istio.io/rev") {
            Some(rev) => rev.as_str(),
            None if labels.get("istio-injection").map(String::as_str) == Some("enabled") => {
                "default"
            }
            None => continue,
        };
        let injector = if revision == "default" || revision.is_empty() {
            "istio-sidecar-injector".to_string()
        } else {
            format!("istio-sidecar-injector-{revision}")
        };
        let Some(image) = images.get(injector.as_str()) else {
            continue;
        };
        let stale: Vec<&str> = resources
            .iter()
            .filter(|p| p.namespace() == ns.name)
            .filter(|p| {
                !p.meta
                    .annotations
                    .contains_key("sidecar.istio.io/proxyImage")
            })
            .filter_map(|p| match &p.spec {
                Spec::Pod(spec) => spec
                    .containers
                    .iter()
                    .any(|c| c.name == "istio-proxy" && c.image.as_deref() != Some(image))
                    .then_some(p.name.as_str()),
                _ => None,
            })
            .collect();
        if !stale.is_empty() {
            out.push(message(
                "IST0158",
                Level::Warning,
                ns,
                format!(
                    "The Istio proxy images of the pods running in the namespace do not match the image defined in the injection configuration (pod names: [{}]). This often happens after upgrading the Istio control-plane and can be fixed by redeploying the pods.",
                    stale.join(" ")
                ),
            ));
        }
    }
}

/// The proxy image an injector's `values` (JSON) name: `global.proxy.image`
/// when it holds a `/`, else `hub/image:tag`; empty when unreadable.
fn injector_image(values: &str) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(values) else {
        return String::new();
    };
    let global = &v["global"];
    let field = |x: &serde_json::Value| x.as_str().unwrap_or_default().to_string();
    let image = field(&global["proxy"]["image"]);
    if image.contains('/') {
        image
    } else {
        format!(
            "{}/{image}:{}",
            field(&global["hub"]),
            field(&global["tag"])
        )
    }
}

/// IST0002: fields Istio deprecated: a VirtualService delay's integer
/// `percent`, and a Sidecar's `outboundTrafficPolicy.egressProxy`, which
/// Istio ignores (and so does weft).
fn deprecated_fields(resources: &[Resource], out: &mut Vec<Message>) {
    for r in resources {
        let detail = match &r.spec {
            Spec::VirtualService(vs) => vs
                .http
                .iter()
                .filter_map(|h| h.fault.as_ref()?.delay.as_ref()?.percent)
                .filter(|p| *p > 0)
                .map(|_| "HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage")
                .collect(),
            Spec::Sidecar(sc) => sc
                .outbound_traffic_policy
                .as_ref()
                .and_then(|o| o.egress_proxy.as_ref())
                .map(|_| "OutboundTrafficPolicy.EgressProxy ignored")
                .into_iter()
                .collect(),
            _ => Vec::new(),
        };
        for d in detail {
            out.push(message(
                "IST0002",
                Level::Warning,
                r,
                format!("Deprecated: {d}"),
            ));
        }
    }
}

/// IST0162: a Gateway listens on a port that no Kubernetes Service of its
/// workloads forwards to (a Service port's `targetPort`, or its `port` when
/// the target is not a number). Only Pods and Deployments count here: a
/// WorkloadEntry's gateway is reached at its own address.
fn gateway_ports(resources: &[Resource], out: &mut Vec<Message>) {
    use weft_api::types::kube::IntOrString;
    let services: Vec<(&str, &weft_api::types::kube::ServiceSpec)> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Service(s) => Some((r.namespace(), s)),
            _ => None,
        })
        .collect();
    for r in resources {
        let Spec::Gateway(g) = &r.spec else {
            continue;
        };
        let mut matched = false;
        let mut forwarded = BTreeSet::new();
        for w in resources
            .iter()
            .filter(|w| matches!(w.spec, Spec::Pod(_) | Spec::Deployment(_)))
        {
            let Some(labels) = workload_labels(w).filter(|l| selects(&g.selector, l)) else {
                continue;
            };
            matched = true;
            let ports = services
                .iter()
                .filter(|(ns, s)| *ns == w.namespace() && selects(&s.selector, labels))
                .flat_map(|(_, s)| &s.ports)
                .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP");
            for p in ports {
                let target = match &p.target_port {
                    Some(IntOrString::Int(n)) => u32::try_from(*n).ok(),
                    Some(IntOrString::String(s)) => s.parse().ok(),
                    None => None,
                };
                forwarded.extend(target.filter(|t| *t != 0).or(p.port));
            }
        }
        if !matched {
            continue;
        }
        let selector = selector_text(&g.selector);
        let line = r
            .node
            .get("spec")
            .and_then(|s| s.get("selector"))
            .map(|s| s.pos.line);
        for server in &g.servers {
            let Some(number) = server.port.as_ref().and_then(|p| p.number) else {
                continue;
            };
            if !forwarded.contains(&number) {
                out.push(message_at(
                    "IST0162",
                    Level::Warning,
                    r,
                    line,
                    format!(
                        "The gateway is listening on a target port (port {number}) that is not defined in the Service associated with its workload instances (Pod selector {}). If you need to access the gateway port through the gateway Service, it will not be available.",
                        selector
                    ),
                ));
            }
        }
    }
}

/// IST0103: a Pod in a namespace with injection enabled (`istio-injection=
/// enabled` or a revision label, and not both) that has no istio-proxy
/// container, unless it opts out or uses the host's network.
fn missing_proxies(resources: &[Resource], out: &mut Vec<Message>) {
    let injected: BTreeSet<&str> = resources
        .iter()
        .filter(|r| matches!(r.spec, Spec::Namespace))
        .filter(|r| {
            let ns = r.name.as_str();
            let legacy = r.meta.labels.get("istio-injection").map(String::as_str);
            let revision = r.meta.labels.contains_key("istio.io/rev");
            !SYSTEM_NAMESPACES.contains(&ns)
                && ns != "istio-system"
                && match (legacy, revision) {
                    (None, true) => true,
                    (Some(v), false) => v == "enabled",
                    _ => false,
                }
        })
        .map(|r| r.name.as_str())
        .collect();
    for r in resources {
        let Spec::Pod(pod) = &r.spec else {
            continue;
        };
        if !injected.contains(r.namespace()) || pod.host_network == Some(true) {
            continue;
        }
        let inject = r
            .meta
            .labels
            .get("sidecar.istio.io/inject")
            .or_else(|| r.meta.annotations.get("sidecar.istio.io/inject"));
        if inject.is_some_and(|v| v.eq_ignore_ascii_case("false")) {
            continue;
        }
        if !pod.containers.iter().any(|c| c.name == "istio-proxy") {
            out.push(message(
                "IST0103",
                Level::Warning,
                r,
                format!(
                    "The pod {}/{} is missing the Istio proxy. This can often be resolved by restarting or redeploying the workload.",
                    r.namespace(),
                    r.name
                ),
            ));
        }
    }
}

/// IST0173: a DestinationRule subset whose labels, with its service's
/// selector, select no workload (in any namespace, as Istio matches pods):
/// requests routed to it get 503 UH.
fn unselected_subsets(resources: &[Resource], out: &mut Vec<Message>) {
    let all: Vec<&BTreeMap<String, String>> =
        workloads(resources).map(|(_, _, labels)| labels).collect();
    // The workloads carrying each label, to check only those that carry the
    // rarest label a subset asks for.
    let mut carrying: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, labels) in all.iter().enumerate() {
        for (k, v) in labels.iter() {
            carrying.entry((k, v)).or_default().push(i);
        }
    }
    // Each host's workload selector, from the first Service or ServiceEntry
    // that defines the host.
    let empty = BTreeMap::new();
    let mut selectors: BTreeMap<String, &BTreeMap<String, String>> = BTreeMap::new();
    for s in resources {
        match &s.spec {
            Spec::Service(svc) => {
                let host = format!("{}.{}.{DOMAIN}", s.name, s.namespace());
                selectors.entry(host).or_insert(&svc.selector);
            }
            Spec::ServiceEntry(se) => {
                let selector = se.workload_selector.as_ref().map_or(&empty, |w| &w.labels);
                for h in &se.hosts {
                    selectors
                        .entry(expand(h, s.namespace()))
                        .or_insert(selector);
                }
            }
            _ => {}
        }
    }
    for r in resources {
        let Spec::DestinationRule(dr) = &r.spec else {
            continue;
        };
        let Some(selector) = selectors.get(&expand(&dr.host, r.namespace())) else {
            continue;
        };
        for subset in &dr.subsets {
            let mut wanted = (*selector).clone();
            wanted.extend(subset.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            let rarest = wanted
                .iter()
                .map(|(k, v)| {
                    carrying
                        .get(&(k.as_str(), v.as_str()))
                        .map_or(&[][..], Vec::as_slice)
                })
                .min_by_key(|c| c.len());
            let selected = match rarest {
                Some(candidates) => candidates.iter().any(|&i| selects(&wanted, all[i])),
                None => !all.is_empty(),
            };
            if !selected {
                out.push(message(
                    "IST0173",
                    Level::Error,
                    r,
                    format!(
                        "The Subset {} defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream).",
                        subset.name
                    ),
                ));
            }
        }
    }
}
