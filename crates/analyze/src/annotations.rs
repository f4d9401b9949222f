//! IST0107 (MisplacedAnnotation), IST0108 (UnknownAnnotation), IST0135
//! (DeprecatedAnnotation) and IST0125 (InvalidAnnotation, for the values
//! Istio's injector checks) on Namespaces, Services, Pods and Deployments,
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
            if let On::Kinds(kinds) = known.on {
                if !kinds.contains(&kind) {
                    out.push(at(
                        "IST0107",
                        Level::Warning,
                        format!(
                            "Misplaced annotation: {name} can only be applied to {}",
                            kinds.join(", ")
                        ),
                    ));
                } else if let Err(problem) = check_value(name, &r.meta.annotations[name]) {
                    out.push(at(
                        "IST0125",
                        Level::Warning,
                        format!("Invalid annotation {name}: {problem}"),
                    ));
                }
            }
        }
    }
}

/// The values Istio's injector validates, with its (Go) error text.
/// `proxy.istio.io/config` is not checked.
fn check_value(name: &str, value: &str) -> Result<(), String> {
    match name {
        "sidecar.istio.io/interceptionMode" => match value {
            "REDIRECT" | "TPROXY" | "NONE" => Ok(()),
            _ => Err(format!(
                "interceptionMode invalid, use REDIRECT,TPROXY,NONE: {value}"
            )),
        },
        "status.sidecar.istio.io/port" => port(value)
            .map(drop)
            .map_err(|e| format!("excludeInboundPorts invalid: {e}")),
        "readiness.status.sidecar.istio.io/initialDelaySeconds"
        | "readiness.status.sidecar.istio.io/periodSeconds"
        | "readiness.status.sidecar.istio.io/failureThreshold" => parse_uint(value, 32).map(drop),
        "traffic.sidecar.istio.io/includeOutboundIPRanges" if value == "*" => Ok(()),
        "traffic.sidecar.istio.io/includeOutboundIPRanges" => {
            cidrs(value).map_err(|e| format!("includeIPRanges invalid: {e}"))
        }
        "traffic.sidecar.istio.io/excludeOutboundIPRanges" => {
            cidrs(value).map_err(|e| format!("excludeIPRanges invalid: {e}"))
        }
        "traffic.sidecar.istio.io/includeInboundPorts" if value == "*" => Ok(()),
        "traffic.sidecar.istio.io/includeInboundPorts" => ports("includeInboundPorts", value),
        "traffic.sidecar.istio.io/excludeInboundPorts" => ports("excludeInboundPorts", value),
        "traffic.sidecar.istio.io/excludeOutboundPorts" => ports("excludeOutboundPorts", value),
        "prometheus.istio.io/merge-metrics" => match value {
            "1" | "t" | "T" | "TRUE" | "true" | "True" | "0" | "f" | "F" | "FALSE" | "false"
            | "False" => Ok(()),
            _ => Err(format!(
                "strconv.ParseBool: parsing {value:?}: invalid syntax"
            )),
        },
        _ => Ok(()),
    }
}

/// Go's `strconv.ParseUint(s, 10, bits)`, errors and all.
fn parse_uint(s: &str, bits: u32) -> Result<u64, String> {
    let fail = |why: &str| format!("strconv.ParseUint: parsing {s:?}: {why}");
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(fail("invalid syntax"));
    }
    match s.parse::<u64>() {
        Ok(n) if n >> bits == 0 => Ok(n),
        _ => Err(fail("value out of range")),
    }
}

fn port(s: &str) -> Result<u64, String> {
    parse_uint(s.trim(), 16).map_err(|e| format!("failed parsing port '{s}': {e}"))
}

fn ports(parameter: &str, list: &str) -> Result<(), String> {
    let list = list.trim();
    if list.is_empty() {
        return Ok(());
    }
    for p in list.split(',') {
        port(p).map_err(|e| format!("{parameter} invalid: failed parsing port '{p}': {e}"))?;
    }
    Ok(())
}

/// Go's `netip.ParsePrefix` over a comma-separated list. The address
/// errors are worded more simply than Go's.
fn cidrs(list: &str) -> Result<(), String> {
    if list.is_empty() {
        return Ok(());
    }
    for cidr in list.split(',') {
        let fail = |why: &str| {
            Err(format!(
                "failed parsing cidr '{cidr}': netip.ParsePrefix({cidr:?}): {why}"
            ))
        };
        let Some((ip, bits)) = cidr.rsplit_once('/') else {
            return fail("no '/'");
        };
        let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
            return fail(&format!("ParseAddr({ip:?}): unable to parse IP"));
        };
        let leading_ok = bits.len() <= 1 || bits.starts_with(|c: char| ('1'..='9').contains(&c));
        let Some(bits) = bits.parse::<u32>().ok().filter(|_| leading_ok) else {
            return fail(&format!("bad bits after slash: {bits:?}"));
        };
        if bits > if ip.is_ipv4() { 32 } else { 128 } {
            return fail("prefix length out of range");
        }
    }
    Ok(())
}
