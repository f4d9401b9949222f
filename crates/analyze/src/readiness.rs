//! The production-readiness checklist: one row per practice, each with its
//! checks (codes WEFT1xxx) and a hint to fix what they find: mTLS,
//! authorization, gateway, traffic, egress, resources, observability and
//! hygiene.

use std::collections::{BTreeMap, BTreeSet};

use weft_api::types::destination_rule::ClientTlsMode;
use weft_api::types::security::{Action, MtlsMode};
use weft_api::types::sidecar::OutboundMode;
use weft_api::{Resource, Spec};

use crate::{Level, Message, message, selects, workload_labels};
use weft_api::types::mesh::MeshConfig;

/// A row of the checklist and what it found.
#[derive(Debug, Clone)]
pub struct Row {
    pub practice: &'static str,
    pub findings: Vec<Message>,
}

fn warn(code: &'static str, r: &Resource, text: String) -> Message {
    message(code, Level::Warning, r, text)
}

/// What the checklist reads besides the resources.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// MeshConfig's root namespace.
    pub root: &'a str,
    /// MeshConfig and the file it came from, when the inputs hold one.
    pub mesh: Option<(&'a MeshConfig, &'a str)>,
    /// Input files git does not track, each with why.
    pub untracked: &'a [(String, String)],
}

/// Every row, in the checklist's order.
pub fn readiness(resources: &[Resource], inputs: &Inputs<'_>) -> Vec<Row> {
    let root = inputs.root;
    let mesh_allow_any = inputs
        .mesh
        .filter(|(m, _)| {
            m.outbound_traffic_policy.as_ref().and_then(|p| p.mode) == Some(OutboundMode::AllowAny)
        })
        .map(|(_, file)| file);
    vec![
        Row {
            practice: "mTLS everywhere (STRICT)",
            findings: mtls(resources),
        },
        Row {
            practice: "least-privilege authorization",
            findings: authorization(resources, root),
        },
        Row {
            practice: "traffic enters through a gateway with TLS",
            findings: gateways(resources),
        },
        Row {
            practice: "timeouts, retries and circuit breaking",
            findings: traffic(resources),
        },
        Row {
            practice: "egress controlled (REGISTRY_ONLY)",
            findings: egress(resources, mesh_allow_any),
        },
        Row {
            practice: "resources: requests, limits, autoscaling, disruption budgets",
            findings: capacity(resources),
        },
        Row {
            practice: "observability running (metrics, tracing)",
            findings: observability(resources, inputs.mesh),
        },
        Row {
            practice: "configuration in git, one API version per kind",
            findings: hygiene(resources, inputs.untracked),
        },
    ]
}

/// WEFT1001: PeerAuthentication that is not STRICT (at any scope or
/// port); WEFT1002: DestinationRules that turn TLS off.
fn mtls(resources: &[Resource]) -> Vec<Message> {
    let mut out = Vec::new();
    for r in resources {
        match &r.spec {
            Spec::PeerAuthentication(pa) => {
                let modes = pa
                    .mtls
                    .iter()
                    .map(|m| (None, m))
                    .chain(pa.port_level_mtls.iter().map(|(p, m)| (Some(p), m)));
                for (port, m) in modes {
                    let mode = match m.mode {
                        Some(MtlsMode::Permissive) => "PERMISSIVE",
                        Some(MtlsMode::Disable) => "DISABLE",
                        _ => continue,
                    };
                    let at = port.map(|p| format!(" on port {p}")).unwrap_or_default();
                    out.push(warn(
                        "WEFT1001",
                        r,
                        format!("mTLS is {mode}{at}: plaintext is accepted. Hint: set mode STRICT once every client has a sidecar."),
                    ));
                }
            }
            Spec::DestinationRule(dr) => {
                let policy = dr.traffic_policy.as_ref();
                let tls = policy.and_then(|p| p.tls.as_ref()).into_iter().chain(
                    policy
                        .into_iter()
                        .flat_map(|p| &p.port_level_settings)
                        .filter_map(|p| p.tls.as_ref()),
                );
                if tls
                    .into_iter()
                    .any(|t| t.mode == Some(ClientTlsMode::Disable))
                {
                    out.push(warn(
                        "WEFT1002",
                        r,
                        format!("TLS is DISABLEd toward {}. Hint: remove the tls setting (ISTIO_MUTUAL is the default in the mesh) or use SIMPLE toward external hosts.", dr.host),
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

/// WEFT1101: a namespace with workloads but no allow-nothing baseline
/// (neither its own nor the root namespace's); WEFT1103: an ALLOW rule
/// that matches every request; WEFT1104: a DENY rule on notNamespaces or
/// notPrincipals, which plaintext requests (with no identity) slip past.
fn authorization(resources: &[Resource], root: &str) -> Vec<Message> {
    let mut out = Vec::new();
    let baseline = |r: &Resource| match &r.spec {
        Spec::AuthorizationPolicy(ap) => {
            ap.selector.is_none()
                && ap.rules.is_empty()
                && ap.action.is_none_or(|a| a == Action::Allow)
        }
        _ => false,
    };
    let guarded: BTreeSet<&str> = resources
        .iter()
        .filter(|r| baseline(r))
        .map(Resource::namespace)
        .collect();
    let mut reported = BTreeSet::new();
    for r in resources {
        let workload = matches!(
            r.spec,
            Spec::WorkloadEntry(_) | Spec::Deployment(_) | Spec::Pod(_)
        );
        let ns = r.namespace();
        if workload && !guarded.contains(ns) && !guarded.contains(root) && reported.insert(ns) {
            out.push(warn(
                "WEFT1101",
                r,
                format!("namespace {ns} has no allow-nothing AuthorizationPolicy: whatever no policy mentions is allowed. Hint: add `spec: {{}}` in {ns} (or in {root} for the whole mesh) and one ALLOW policy per service."),
            ));
        }
        let guarded_here = guarded.contains(ns) || guarded.contains(root);
        if let Some(labels) = workload_labels(r).filter(|_| guarded_here && serves(resources, r)) {
            if !allowed_by_some_policy(resources, root, ns, labels) {
                out.push(warn(
                    "WEFT1102",
                    r,
                    format!("workload {ns}/{} has no ALLOW policy: under the allow-nothing baseline nothing reaches it. Hint: an ALLOW policy that selects it and names its callers.", r.name),
                ));
            }
        }
        let Spec::AuthorizationPolicy(ap) = &r.spec else {
            continue;
        };
        let action = ap.action.unwrap_or(Action::Allow);
        let allows_all = ap
            .rules
            .iter()
            .any(|rule| rule.from.is_empty() && rule.to.is_empty() && rule.when.is_empty());
        let negative = ap
            .rules
            .iter()
            .flat_map(|rule| &rule.from)
            .filter_map(|f| f.source.as_ref())
            .any(|s| !s.not_namespaces.is_empty() || !s.not_principals.is_empty());
        if action == Action::Allow && allows_all {
            out.push(warn(
                "WEFT1103",
                r,
                "an ALLOW rule with no from, to or when allows every request from anyone. Hint: name the sources (principals, namespaces) and operations it is for.".into(),
            ));
        }
        if action == Action::Deny && negative {
            out.push(warn(
                "WEFT1104",
                r,
                "a DENY rule on notNamespaces or notPrincipals does not match plaintext requests, which have no identity. Hint: require mTLS (STRICT), or allow the namespaces instead of denying the others.".into(),
            ));
        }
    }
    out
}

/// WEFT1201: a Gateway server without TLS; WEFT1202: an HTTP server that
/// does not redirect to HTTPS; WEFT1203: a Service exposed by NodePort or
/// LoadBalancer instead of through a gateway.
fn gateways(resources: &[Resource]) -> Vec<Message> {
    let mut out = Vec::new();
    for r in resources {
        if let Spec::Service(svc) = &r.spec {
            let exposed = svc
                .r#type
                .as_deref()
                .filter(|t| matches!(*t, "NodePort" | "LoadBalancer"));
            if let Some(kind) = exposed.filter(|_| !is_gateway(&svc.selector)) {
                out.push(warn(
                    "WEFT1203",
                    r,
                    format!("Service {}/{} is exposed as {kind}: its traffic bypasses the mesh's gateway, its TLS and its policies. Hint: make it ClusterIP and route to it through a Gateway.", r.namespace(), r.name),
                ));
            }
        }
        if let Spec::KubeGateway(g) = &r.spec {
            let has_tls = g
                .listeners
                .iter()
                .any(|l| matches!(l.protocol.as_str(), "HTTPS" | "TLS"));
            if !has_tls {
                out.push(warn(
                    "WEFT1201",
                    r,
                    "no listener of this Gateway terminates or passes through TLS. Hint: add an HTTPS listener with a certificateRef.".into(),
                ));
            }
            continue;
        }
        let Spec::Gateway(g) = &r.spec else {
            continue;
        };
        let has_tls = g.servers.iter().any(|s| {
            s.tls
                .as_ref()
                .is_some_and(|t| t.https_redirect != Some(true))
        });
        if !has_tls {
            out.push(warn(
                "WEFT1201",
                r,
                "no server of this Gateway terminates or passes through TLS. Hint: add an HTTPS server with a credentialName.".into(),
            ));
        }
        for s in &g.servers {
            let http = s
                .port
                .as_ref()
                .and_then(|p| p.protocol.as_deref())
                .is_some_and(|p| p.eq_ignore_ascii_case("HTTP"));
            let redirects = s
                .tls
                .as_ref()
                .is_some_and(|t| t.https_redirect == Some(true));
            if http && !redirects {
                let port = s.port.as_ref().and_then(|p| p.number).unwrap_or(0);
                out.push(warn(
                    "WEFT1202",
                    r,
                    format!("the HTTP server on port {port} serves plaintext instead of redirecting. Hint: set tls: {{httpsRedirect: true}}."),
                ));
            }
        }
    }
    out
}

/// WEFT1301: an HTTP route without a timeout; WEFT1302: retries without
/// perTryTimeout; WEFT1303: a DestinationRule without outlierDetection or
/// connectionPool; WEFT1304: a service with no DestinationRule at all.
fn traffic(resources: &[Resource]) -> Vec<Message> {
    let mut out = Vec::new();
    let ruled: Vec<String> = resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::DestinationRule(dr) => Some(fqdn(&dr.host, r.namespace())),
            _ => None,
        })
        .collect();
    for r in resources {
        let host = match &r.spec {
            Spec::Service(svc) if svc.r#type.as_deref() != Some("ExternalName") => {
                format!("{}.{}.svc.cluster.local", r.name, r.namespace())
            }
            _ => continue,
        };
        if SYSTEM.contains(&r.namespace()) || is_gateway(&service_selector(r)) {
            continue;
        }
        let covered = ruled.iter().any(|d| {
            d == &host
                || d.strip_prefix('*')
                    .is_some_and(|suffix| host.ends_with(suffix))
        });
        if !covered {
            out.push(warn(
                "WEFT1304",
                r,
                format!("{host} has no DestinationRule: nothing bounds its connections or ejects failing endpoints. Hint: a DestinationRule with connectionPool and outlierDetection."),
            ));
        }
    }
    for r in resources {
        match &r.spec {
            Spec::VirtualService(vs) => {
                for (i, h) in vs.http.iter().enumerate() {
                    let forwards = !h.route.is_empty();
                    if forwards && h.timeout.is_none() {
                        out.push(warn(
                            "WEFT1301",
                            r,
                            format!("http[{i}] has no timeout: a slow upstream holds callers. Hint: set timeout to what callers can wait."),
                        ));
                    }
                    if h.retries.as_ref().is_some_and(|rt| {
                        rt.attempts.unwrap_or(0) > 0 && rt.per_try_timeout.is_none()
                    }) {
                        out.push(warn(
                            "WEFT1302",
                            r,
                            format!("http[{i}] retries without perTryTimeout: one hung attempt uses the whole timeout. Hint: set retries.perTryTimeout."),
                        ));
                    }
                }
            }
            Spec::DestinationRule(dr) => {
                let policy = dr.traffic_policy.as_ref();
                let missing: Vec<&str> = [
                    (
                        "outlierDetection",
                        policy.is_some_and(|p| p.outlier_detection.is_some()),
                    ),
                    (
                        "connectionPool",
                        policy.is_some_and(|p| p.connection_pool.is_some()),
                    ),
                ]
                .into_iter()
                .filter(|(_, set)| !set)
                .map(|(name, _)| name)
                .collect();
                if !missing.is_empty() {
                    out.push(warn(
                        "WEFT1303",
                        r,
                        format!(
                            "{} has no {}. Hint: bound connections and eject failing endpoints.",
                            dr.host,
                            missing.join(" or ")
                        ),
                    ));
                }
            }
            _ => {}
        }
    }
    out
}

/// WEFT1401: ALLOW_ANY, in a Sidecar or in MeshConfig (the file `mesh`);
/// WEFT1402: an external host called over TLS straight from workloads
/// (not through an egress gateway); WEFT1403: an external host without a
/// rate limit.
fn egress(resources: &[Resource], mesh: Option<&str>) -> Vec<Message> {
    let mut out = Vec::new();
    for r in resources {
        let Spec::ServiceEntry(se) = &r.spec else {
            continue;
        };
        if se.location != Some(weft_api::types::service_entry::Location::MeshExternal) {
            continue;
        }
        let tls = se.ports.iter().any(|p| {
            p.protocol
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case("HTTPS") || x.eq_ignore_ascii_case("TLS"))
        });
        for host in &se.hosts {
            let via_gateway = resources.iter().any(|v| match &v.spec {
                Spec::VirtualService(vs) => {
                    vs.hosts.iter().any(|h| h == host) && vs.gateways.iter().any(|g| g != "mesh")
                }
                _ => false,
            });
            if tls && !via_gateway {
                out.push(warn(
                    "WEFT1402",
                    r,
                    format!("{host} is reached over TLS straight from workloads: the mesh sees its name only and cannot hold the traffic to a policy. Hint: route it through an egress gateway (SNI passthrough), or call it over HTTP and originate TLS at the egress gateway."),
                ));
            }
            let limited = resources.iter().any(|l| match &l.spec {
                Spec::RateLimit(rl) => rl.limits.iter().any(|limit| {
                    limit.hosts.is_empty()
                        || limit.hosts.iter().any(|h| {
                            h == host || h.strip_prefix('*').is_some_and(|s| host.ends_with(s))
                        })
                }),
                _ => false,
            });
            if !limited {
                out.push(warn(
                    "WEFT1403",
                    r,
                    format!("{host} has no rate limit: a runaway client can exhaust its quota for everyone. Hint: a weft.dev/v1alpha1 RateLimit with hosts: [{host}]."),
                ));
            }
        }
    }
    let text = || {
        "outboundTrafficPolicy ALLOW_ANY lets workloads call any host. Hint: use REGISTRY_ONLY with a ServiceEntry per external API.".to_string()
    };
    for r in resources {
        if let Spec::Sidecar(sc) = &r.spec {
            if sc.outbound_traffic_policy.as_ref().and_then(|p| p.mode)
                == Some(OutboundMode::AllowAny)
            {
                out.push(warn("WEFT1401", r, text()));
            }
        }
    }
    if let Some(file) = mesh {
        out.push(Message {
            code: "WEFT1401",
            level: Level::Warning,
            message: text(),
            origin: "MeshConfig".into(),
            source: file.to_string(),
            documentation_url: crate::documentation("WEFT1401"),
        });
    }
    out
}

/// Namespaces of the platform itself.
const SYSTEM: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

fn fqdn(host: &str, ns: &str) -> String {
    if host.contains('.') || host.contains('*') {
        host.to_string()
    } else {
        format!("{host}.{ns}.svc.cluster.local")
    }
}

fn service_selector(r: &Resource) -> BTreeMap<String, String> {
    match &r.spec {
        Spec::Service(svc) => svc.selector.clone(),
        _ => BTreeMap::new(),
    }
}

/// Whether pod labels are a gateway's or the control plane's.
fn is_gateway(labels: &BTreeMap<String, String>) -> bool {
    labels.contains_key("gateway.networking.k8s.io/gateway-name")
        || labels
            .get("istio")
            .is_some_and(|v| v.contains("gateway") || v == "pilot")
        || labels
            .get("app")
            .is_some_and(|v| v.contains("gateway") || v == "istiod")
}

/// Whether a workload serves anything: it has ports, or a Service or
/// ServiceEntry selects it.
fn serves(resources: &[Resource], w: &Resource) -> bool {
    let Some(labels) = workload_labels(w) else {
        return false;
    };
    let own_ports = match &w.spec {
        Spec::WorkloadEntry(we) => !we.ports.is_empty(),
        Spec::Pod(p) => p.containers.iter().any(|c| !c.ports.is_empty()),
        Spec::Deployment(d) => d
            .template
            .as_ref()
            .and_then(|t| t.spec.as_ref())
            .is_some_and(|p| p.containers.iter().any(|c| !c.ports.is_empty())),
        _ => false,
    };
    own_ports
        || resources.iter().any(|r| {
            r.namespace() == w.namespace()
                && match &r.spec {
                    Spec::Service(svc) => {
                        !svc.selector.is_empty() && selects(&svc.selector, labels)
                    }
                    Spec::ServiceEntry(se) => se
                        .workload_selector
                        .as_ref()
                        .is_some_and(|s| selects(&s.labels, labels)),
                    _ => false,
                }
        })
}

/// Whether an ALLOW policy with rules applies to a workload of `ns` with
/// `labels`.
fn allowed_by_some_policy(
    resources: &[Resource],
    root: &str,
    ns: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    resources.iter().any(|r| match &r.spec {
        Spec::AuthorizationPolicy(ap) => {
            (r.namespace() == ns || r.namespace() == root)
                && ap.action.unwrap_or(Action::Allow) == Action::Allow
                && !ap.rules.is_empty()
                && ap.target_ref.is_none()
                && ap.target_refs.is_empty()
                && ap
                    .selector
                    .as_ref()
                    .is_none_or(|s| selects(&s.match_labels, labels))
        }
        _ => false,
    })
}

/// WEFT1501: containers without resource requests or limits; WEFT1502 and
/// WEFT1503: a gateway or control-plane Deployment without a
/// HorizontalPodAutoscaler or a PodDisruptionBudget.
fn capacity(resources: &[Resource]) -> Vec<Message> {
    let mut out = Vec::new();
    for r in resources {
        let containers = match &r.spec {
            Spec::Pod(p) => &p.containers,
            Spec::Deployment(d) => match d.template.as_ref().and_then(|t| t.spec.as_ref()) {
                Some(p) => &p.containers,
                None => continue,
            },
            _ => continue,
        };
        let bare: Vec<&str> = containers
            .iter()
            .filter(|c| c.name != "istio-proxy")
            .filter(|c| {
                c.resources
                    .as_ref()
                    .is_none_or(|res| res.requests.is_empty() || res.limits.is_empty())
            })
            .map(|c| c.name.as_str())
            .collect();
        if !bare.is_empty() {
            out.push(warn(
                "WEFT1501",
                r,
                format!("container(s) {} lack resource requests or limits: the scheduler cannot place them and one can starve its neighbours. Hint: set resources.requests and resources.limits.", bare.join(", ")),
            ));
        }
        let Spec::Deployment(d) = &r.spec else {
            continue;
        };
        let labels = d
            .template
            .as_ref()
            .map(|t| t.metadata.labels.clone())
            .unwrap_or_default();
        if !is_gateway(&labels) && r.name != "istiod" {
            continue;
        }
        let same_ns = |x: &&Resource| x.namespace() == r.namespace();
        let scaled = resources.iter().filter(same_ns).any(|x| match &x.spec {
            Spec::HorizontalPodAutoscaler(h) => h
                .scale_target_ref
                .as_ref()
                .is_some_and(|t| t.kind == "Deployment" && t.name == r.name),
            _ => false,
        });
        let budgeted = resources.iter().filter(same_ns).any(|x| match &x.spec {
            Spec::PodDisruptionBudget(p) => p
                .selector
                .as_ref()
                .is_some_and(|s| !s.match_labels.is_empty() && selects(&s.match_labels, &labels)),
            _ => false,
        });
        if !scaled {
            out.push(warn(
                "WEFT1502",
                r,
                format!("{} has no HorizontalPodAutoscaler: a traffic spike meets a fixed number of replicas. Hint: an HPA with scaleTargetRef {{kind: Deployment, name: {}}}.", r.name, r.name),
            ));
        }
        if !budgeted {
            out.push(warn(
                "WEFT1503",
                r,
                format!("{} has no PodDisruptionBudget: a node drain or upgrade can take every replica at once. Hint: a PodDisruptionBudget selecting its pods with minAvailable: 1.", r.name),
            ));
        }
    }
    out
}

/// WEFT1601: a Telemetry that turns metrics off; WEFT1602: one that turns
/// trace reporting off; WEFT1603: trace sampling at 0 (in a Telemetry or
/// MeshConfig's defaultConfig).
fn observability(resources: &[Resource], mesh: Option<(&MeshConfig, &str)>) -> Vec<Message> {
    let mut out = Vec::new();
    for r in resources {
        let Spec::Telemetry(t) = &r.spec else {
            continue;
        };
        for o in t.metrics.iter().flat_map(|m| &m.overrides) {
            if o.disabled == Some(true) {
                let which = o
                    .r#match
                    .as_ref()
                    .and_then(|m| {
                        m.metric
                            .map(|x| format!("{x:?}"))
                            .or(m.custom_metric.clone())
                    })
                    .unwrap_or_else(|| "all metrics".into());
                out.push(warn(
                    "WEFT1601",
                    r,
                    format!("this Telemetry turns off {which}: dashboards and alerts go blind. Hint: remove `disabled: true`, or narrow it to a metric nobody uses."),
                ));
            }
        }
        for tr in &t.tracing {
            if tr.disable_span_reporting == Some(true) {
                out.push(warn(
                    "WEFT1602",
                    r,
                    "this Telemetry turns span reporting off: no traces leave the proxies. Hint: remove disableSpanReporting.".into(),
                ));
            }
            if tr.random_sampling_percentage == Some(0.0) {
                out.push(warn(
                    "WEFT1603",
                    r,
                    "this Telemetry samples 0% of requests: no traces are recorded. Hint: set randomSamplingPercentage to 1 or more.".into(),
                ));
            }
        }
    }
    if let Some((m, file)) = mesh {
        let sampling = m
            .default_config
            .as_ref()
            .and_then(|d| d.tracing.as_ref())
            .and_then(|t| t.get("sampling"))
            .and_then(serde_json::Value::as_f64);
        if sampling == Some(0.0) {
            out.push(Message {
                code: "WEFT1603",
                level: Level::Warning,
                message: "defaultConfig.tracing.sampling is 0: no traces are recorded. Hint: set it to 1 or more.".into(),
                origin: "MeshConfig".into(),
                source: file.to_string(),
                documentation_url: crate::documentation("WEFT1603"),
            });
        }
    }
    out
}

/// WEFT1701: input files git does not track; WEFT1702: resources of one
/// kind in more than one API version.
fn hygiene(resources: &[Resource], untracked: &[(String, String)]) -> Vec<Message> {
    let mut out = Vec::new();
    for (file, why) in untracked {
        let text = format!(
            "{file} is not tracked by git ({why}): changes to the mesh leave no history and no review. Hint: commit the mesh's configuration and apply it from git."
        );
        match resources.iter().find(|r| &*r.source.file == file.as_str()) {
            Some(r) => out.push(warn("WEFT1701", r, text)),
            None => out.push(Message {
                code: "WEFT1701",
                level: Level::Warning,
                message: text,
                origin: "file".into(),
                source: file.clone(),
                documentation_url: crate::documentation("WEFT1701"),
            }),
        }
    }
    let mut versions: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for r in resources {
        versions
            .entry((r.kind.group, r.kind.kind))
            .or_default()
            .insert(r.api_version.as_str());
    }
    for r in resources {
        let used = &versions[&(r.kind.group, r.kind.kind)];
        if used.len() < 2 {
            continue;
        }
        // The newest in use, by the kind's own order of versions.
        let newest = r
            .kind
            .versions
            .iter()
            .find_map(|v| used.iter().find(|u| u.rsplit('/').next() == Some(*v)))
            .copied();
        if newest.is_some_and(|n| n != r.api_version) {
            out.push(warn(
                "WEFT1702",
                r,
                format!(
                    "{} is written as {} while others of its kind use {}: one kind in several versions is reviewed and upgraded piecemeal. Hint: move every {} to {}.",
                    r.kind.kind,
                    r.api_version,
                    newest.unwrap_or_default(),
                    r.kind.kind,
                    newest.unwrap_or_default()
                ),
            ));
        }
    }
    out
}
