//! The production-readiness checklist: one row per practice, each with its
//! checks (codes WEFT1xxx) and a hint to fix what they find. Built so far:
//! mTLS, authorization, gateway, traffic and egress rows; the resources,
//! observability and hygiene rows come next.

use std::collections::BTreeSet;

use weft_api::types::destination_rule::ClientTlsMode;
use weft_api::types::security::{Action, MtlsMode};
use weft_api::types::sidecar::OutboundMode;
use weft_api::{Resource, Spec};

use crate::{Level, Message, message};

/// A row of the checklist and what it found.
#[derive(Debug, Clone)]
pub struct Row {
    pub practice: &'static str,
    pub findings: Vec<Message>,
}

fn warn(code: &'static str, r: &Resource, text: String) -> Message {
    message(code, Level::Warning, r, text)
}

/// Every row, in the checklist's order. `root` is MeshConfig's root
/// namespace; `mesh_allow_any` the MeshConfig file, when it sets ALLOW_ANY.
pub fn readiness(resources: &[Resource], root: &str, mesh_allow_any: Option<&str>) -> Vec<Row> {
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
/// does not redirect to HTTPS.
fn gateways(resources: &[Resource]) -> Vec<Message> {
    let mut out = Vec::new();
    for r in resources {
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
/// connectionPool.
fn traffic(resources: &[Resource]) -> Vec<Message> {
    let mut out = Vec::new();
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

/// WEFT1401: ALLOW_ANY, in a Sidecar or in MeshConfig (the file `mesh`).
fn egress(resources: &[Resource], mesh: Option<&str>) -> Vec<Message> {
    let mut out = Vec::new();
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
