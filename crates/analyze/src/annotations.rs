//! IST0107 (MisplacedAnnotation), IST0108 (UnknownAnnotation) and IST0135
//! (DeprecatedAnnotation) on Namespaces, Services, Pods and Deployments,
//! as istioctl's annotation analyzer checks them. An annotation is Istio's
//! when its prefix ends in `istio.io` (and `kubernetes.io/ingress.class`,
//! which Istio documents).
//!
//! The catalogue below is Istio's list of resource annotations (the
//! `istio.io/api` annotation package as of 1.23), with the ones added or
//! deprecated by the release notes of 1.24 to 1.29. Istio's alpha-annotation
//! analyzer (IST0136) is not run by istioctl by default, so neither is it
//! here.

use weft_api::{Resource, Spec};

use crate::{Level, Message, message_at};

/// Where an annotation may be put.
#[derive(Clone, Copy)]
enum On {
    Any,
    Kinds(&'static [&'static str]),
}

struct Annotation {
    name: &'static str,
    on: On,
    /// `Some(extra)` when deprecated; `extra` completes Istio's message.
    deprecated: Option<&'static str>,
}

const POD: On = On::Kinds(&["Pod"]);
const SERVICE: On = On::Kinds(&["Service"]);
const GATEWAY: On = On::Kinds(&["Gateway"]);
const WORKLOAD_ENTRY: On = On::Kinds(&["WorkloadEntry"]);
const WAYPOINT: On = On::Kinds(&["GatewayClass", "Gateway"]);

const fn ann(name: &'static str, on: On) -> Annotation {
    Annotation {
        name,
        on,
        deprecated: None,
    }
}

const fn deprecated(name: &'static str, on: On, extra: &'static str) -> Annotation {
    Annotation {
        name,
        on,
        deprecated: Some(extra),
    }
}

static CATALOGUE: &[Annotation] = &[
    deprecated("alpha.istio.io/canonical-serviceaccounts", SERVICE, ""),
    deprecated("alpha.istio.io/kubernetes-serviceaccounts", SERVICE, ""),
    ann("ambient.istio.io/bypass-inbound-capture", POD),
    ann("ambient.istio.io/dns-capture", POD),
    ann("ambient.istio.io/redirection", POD),
    ann("ambient.istio.io/waypoint-inbound-binding", WAYPOINT),
    ann("galley.istio.io/analyze-suppress", On::Any),
    ann("gateway.istio.io/controller-version", On::Any),
    ann("gateway.istio.io/name-override", GATEWAY),
    ann("gateway.istio.io/service-account", GATEWAY),
    ann("gateway.istio.io/tls-cipher-suites", GATEWAY),
    ann("inject.istio.io/templates", POD),
    ann("istio.io/autoRegistrationGroup", WORKLOAD_ENTRY),
    ann("istio.io/connectedAt", WORKLOAD_ENTRY),
    ann("istio.io/disconnectedAt", WORKLOAD_ENTRY),
    ann("istio.io/dry-run", On::Kinds(&["AuthorizationPolicy"])),
    ann(
        "istio.io/ignore-policy-attachment",
        On::Kinds(&["BackendTLSPolicy", "XBackendTrafficPolicy"]),
    ),
    ann("istio.io/reroute-virtual-interfaces", POD),
    ann("istio.io/rev", POD),
    ann("istio.io/workloadController", WORKLOAD_ENTRY),
    ann("kubernetes.io/ingress.class", On::Kinds(&["Ingress"])),
    ann("networking.istio.io/exportTo", SERVICE),
    ann("networking.istio.io/service-type", GATEWAY),
    ann(
        "networking.istio.io/traffic-distribution",
        On::Kinds(&["Service", "ServiceEntry"]),
    ),
    ann("prometheus.istio.io/merge-metrics", POD),
    ann("proxy.istio.io/config", POD),
    ann("proxy.istio.io/overrides", POD),
    ann("readiness.status.sidecar.istio.io/applicationPorts", POD),
    ann("readiness.status.sidecar.istio.io/failureThreshold", POD),
    ann("readiness.status.sidecar.istio.io/initialDelaySeconds", POD),
    ann("readiness.status.sidecar.istio.io/periodSeconds", POD),
    ann("sidecar.istio.io/agentLogLevel", POD),
    ann("sidecar.istio.io/bootstrapOverride", POD),
    ann("sidecar.istio.io/componentLogLevel", POD),
    deprecated("sidecar.istio.io/discoveryAddress", POD, ""),
    ann("sidecar.istio.io/enableCoreDump", POD),
    deprecated("sidecar.istio.io/extraStatTags", POD, ""),
    deprecated(
        "sidecar.istio.io/inject",
        POD,
        " in favor of the \"sidecar.istio.io/inject\" label",
    ),
    ann("sidecar.istio.io/interceptionMode", POD),
    ann("sidecar.istio.io/logLevel", POD),
    ann("sidecar.istio.io/nativeSidecar", POD),
    ann("sidecar.istio.io/proxyCPU", POD),
    ann("sidecar.istio.io/proxyCPULimit", POD),
    ann("sidecar.istio.io/proxyEphemeralStorage", POD),
    ann("sidecar.istio.io/proxyEphemeralStorageLimit", POD),
    ann("sidecar.istio.io/proxyImage", POD),
    ann("sidecar.istio.io/proxyImageType", POD),
    ann("sidecar.istio.io/proxyMemory", POD),
    ann("sidecar.istio.io/proxyMemoryLimit", POD),
    ann("sidecar.istio.io/rewriteAppHTTPProbers", POD),
    ann("sidecar.istio.io/statsCompression", POD),
    ann("sidecar.istio.io/statsEvictionInterval", POD),
    ann("sidecar.istio.io/statsFlushInterval", POD),
    ann("sidecar.istio.io/statsHistogramBuckets", POD),
    deprecated("sidecar.istio.io/statsInclusionPrefixes", POD, ""),
    deprecated("sidecar.istio.io/statsInclusionRegexps", POD, ""),
    deprecated("sidecar.istio.io/statsInclusionSuffixes", POD, ""),
    ann("sidecar.istio.io/status", POD),
    ann("sidecar.istio.io/userVolume", POD),
    ann("sidecar.istio.io/userVolumeMount", POD),
    ann("status.sidecar.istio.io/port", POD),
    ann(
        "topology.istio.io/controlPlaneClusters",
        On::Kinds(&["Namespace"]),
    ),
    ann("traffic.istio.io/nodeSelector", SERVICE),
    ann("traffic.sidecar.istio.io/excludeInboundPorts", POD),
    ann("traffic.sidecar.istio.io/excludeInterfaces", POD),
    ann("traffic.sidecar.istio.io/excludeOutboundIPRanges", POD),
    ann("traffic.sidecar.istio.io/excludeOutboundPorts", POD),
    ann("traffic.sidecar.istio.io/includeInboundPorts", POD),
    ann("traffic.sidecar.istio.io/includeOutboundIPRanges", POD),
    ann("traffic.sidecar.istio.io/includeOutboundPorts", POD),
    deprecated("traffic.sidecar.istio.io/kubevirtInterfaces", POD, ""),
];

/// Whether Istio's analyzer looks at the annotation at all.
fn istio_annotation(name: &str) -> bool {
    name == "kubernetes.io/ingress.class"
        || name
            .split('/')
            .next()
            .is_some_and(|prefix| prefix.ends_with("istio.io"))
}

pub(crate) fn analyze(resources: &[Resource], out: &mut Vec<Message>) {
    for r in resources {
        let kind = match r.spec {
            Spec::Namespace | Spec::Service(_) | Spec::Pod(_) | Spec::Deployment(_) => r.kind.kind,
            _ => continue,
        };
        for name in r.meta.annotations.keys() {
            if !istio_annotation(name) {
                continue;
            }
            let at = |code, level, text| {
                let line = r
                    .node
                    .get("metadata")
                    .and_then(|m| m.get("annotations"))
                    .and_then(|a| a.entry(name))
                    .map(|(key, _)| key.pos.line);
                message_at(code, level, r, line, text)
            };
            let Some(known) = CATALOGUE.iter().find(|a| a.name == name) else {
                out.push(at(
                    "IST0108",
                    Level::Warning,
                    format!("Unknown annotation: {name}"),
                ));
                continue;
            };
            // The annotation and its replacement label together: the user
            // keeps both on purpose, as Istio assumes.
            let replaced = name == "sidecar.istio.io/inject"
                && r.meta.labels.contains_key("sidecar.istio.io/inject");
            if let Some(extra) = known.deprecated.filter(|_| !replaced) {
                out.push(at(
                    "IST0135",
                    Level::Info,
                    format!(
                        "Annotation {name:?} has been deprecated{extra} and may not work in future Istio versions."
                    ),
                ));
            }
            if let On::Kinds(kinds) = known.on
                && !kinds.contains(&kind)
            {
                out.push(at(
                    "IST0107",
                    Level::Warning,
                    format!(
                        "Misplaced annotation: {name} can only be applied to {}",
                        kinds.join(", ")
                    ),
                ));
            }
        }
    }
}
