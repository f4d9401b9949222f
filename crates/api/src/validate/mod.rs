//! Istio's semantic validation rules, as its validating webhook applies them.
//!
//! Each rule reports against the field it is about; the loader's YAML tree
//! turns that path into file, line and column. Messages follow Istio's where
//! Istio has one, so that people can search for them.

use crate::diagnostic::{Diagnostic, Level};
use crate::load::MeshSource;
use crate::path::{FieldPath, Path};
use crate::resource::{Resource, Spec};
use crate::types::common::{Duration, Labels, Percent, PolicyTargetReference, WorkloadSelector};
use std::collections::HashSet;

mod gateway_api;
mod networking;
mod rate_limit;
mod security;
mod telemetry;

/// Validates every resource, and MeshConfig when given.
pub fn validate(resources: &[Resource], mesh: Option<&MeshSource>) -> Vec<Diagnostic> {
    // Rules are pure and per resource: large sets are checked in parallel.
    let workers = crate::par::workers();
    let per_resource = if workers > 1 && resources.len() >= PARALLEL_MIN_RESOURCES {
        crate::par::map(resources, workers, |_| 1, validate_resource)
    } else {
        resources.iter().map(validate_resource).collect()
    };
    let mut out: Vec<Diagnostic> = per_resource.into_iter().flatten().collect();
    if let Some(mesh) = mesh {
        out.extend(validate_mesh(mesh));
    }
    out
}

/// Below this many resources validation stays on one thread.
const PARALLEL_MIN_RESOURCES: usize = 1000;

/// The findings for one resource, positioned in its source.
pub fn validate_resource(r: &Resource) -> Vec<Diagnostic> {
    let mut cx = Cx::default();
    let root = Path::Root;
    validate_meta(&mut cx, r);
    match &r.spec {
        Spec::VirtualService(vs) => networking::virtual_service(&mut cx, r, vs),
        Spec::DestinationRule(dr) => networking::destination_rule(&mut cx, r, dr),
        Spec::Gateway(gw) => networking::gateway(&mut cx, r, gw),
        Spec::ServiceEntry(se) => networking::service_entry(&mut cx, r, se),
        Spec::Sidecar(sc) => networking::sidecar(&mut cx, r, sc),
        Spec::WorkloadEntry(we) => {
            let spec = root.field("spec");
            networking::workload_entry(&mut cx, &spec, we, None, true);
        }
        Spec::WorkloadGroup(wg) => networking::workload_group(&mut cx, wg),
        Spec::EnvoyFilter(ef) => networking::envoy_filter(&mut cx, ef),
        Spec::PeerAuthentication(pa) => security::peer_authentication(&mut cx, pa),
        Spec::AuthorizationPolicy(ap) => security::authorization_policy(&mut cx, r, ap),
        Spec::RequestAuthentication(ra) => security::request_authentication(&mut cx, ra),
        Spec::Telemetry(t) => telemetry::telemetry(&mut cx, t),
        Spec::KubeGateway(g) => gateway_api::gateway(&mut cx, g),
        Spec::HttpRoute(h) => gateway_api::http_route(&mut cx, h),
        Spec::GrpcRoute(g) => gateway_api::grpc_route(&mut cx, g),
        Spec::TcpRoute(t) => gateway_api::l4_route(&mut cx, t, false),
        Spec::TlsRoute(t) => gateway_api::l4_route(&mut cx, t, true),
        Spec::ReferenceGrant(g) => gateway_api::reference_grant(&mut cx, g),
        Spec::RateLimit(rl) => rate_limit::rate_limit(&mut cx, rl),
        Spec::Namespace
        | Spec::Service(_)
        | Spec::ServiceAccount
        | Spec::Secret(_)
        | Spec::Pod(_)
        | Spec::Deployment(_)
        | Spec::HorizontalPodAutoscaler(_)
        | Spec::PodDisruptionBudget(_)
        | Spec::ConfigMap(_)
        | Spec::MutatingWebhookConfiguration(_)
        | Spec::ValidatingWebhookConfiguration(_) => {}
    }
    cx.issues
        .into_iter()
        .map(|issue| Diagnostic {
            level: issue.level,
            file: r.source.file.clone(),
            pos: issue.path.locate(&r.node),
            origin: Some(r.origin()),
            path: Some(issue.path),
            message: issue.message,
        })
        .collect()
}

/// MeshConfig rules, placed in the file MeshConfig came from.
pub fn validate_mesh(source: &MeshSource) -> Vec<Diagnostic> {
    let mesh = &source.config;
    let mut cx = Cx::default();
    let root = Path::Root;
    if let Some(td) = &mesh.trust_domain {
        if td.is_empty() || td.contains('/') || td.contains(':') {
            cx.err(
                &root.field("trustDomain"),
                format!("invalid trust domain {td:?}"),
            );
        }
    }
    let mut names = HashSet::new();
    let providers = root.field("extensionProviders");
    for (i, p) in mesh.extension_providers.iter().enumerate() {
        let at = providers.index(i);
        if p.name.is_empty() {
            cx.err(&at.field("name"), "empty extension provider name");
        } else if !names.insert(p.name.as_str()) {
            cx.err(
                &at.field("name"),
                format!("duplicate extension provider name {}", p.name),
            );
        }
        match p.kinds().len() {
            0 => cx.err(&at, "extension provider must set one provider kind"),
            1 => {}
            _ => cx.err(
                &at,
                format!(
                    "extension provider may set only one provider kind, found {}",
                    p.kinds().join(", ")
                ),
            ),
        }
        if let Some(h) = &p.envoy_ext_authz_http {
            let at = at.field("envoyExtAuthzHttp");
            check_service_port(&mut cx, &at, &h.service, h.port);
        }
        if let Some(g) = &p.envoy_ext_authz_grpc {
            let at = at.field("envoyExtAuthzGrpc");
            check_service_port(&mut cx, &at, &g.service, g.port);
        }
    }
    cx.issues
        .into_iter()
        .map(|issue| Diagnostic {
            level: issue.level,
            file: source.file.clone(),
            pos: source.locate(&issue.path),
            origin: Some("MeshConfig".into()),
            path: Some(issue.path),
            message: issue.message,
        })
        .collect()
}

fn check_service_port(cx: &mut Cx, at: &Path<'_>, service: &str, port: Option<u32>) {
    if service.is_empty() {
        cx.err(&at.field("service"), "service must not be empty");
    } else {
        let host = service.split_once('/').map_or(service, |(_, h)| h);
        cx.check(&at.field("service"), wildcard_domain(host));
    }
    match port {
        Some(p) => cx.check(&at.field("port"), port_number(p)),
        None => cx.err(&at.field("port"), "port must be set"),
    }
}

/// A finding before it is placed in a file.
#[derive(Debug)]
pub(crate) struct Issue {
    level: Level,
    path: FieldPath,
    message: String,
}

/// Collects findings while rules walk a resource.
#[derive(Debug, Default)]
pub(crate) struct Cx {
    issues: Vec<Issue>,
}

impl Cx {
    pub(crate) fn err(&mut self, at: &Path<'_>, message: impl Into<String>) {
        self.push(Level::Error, at, message.into());
    }

    pub(crate) fn warn(&mut self, at: &Path<'_>, message: impl Into<String>) {
        self.push(Level::Warning, at, message.into());
    }

    /// Reports `r`'s error, if any.
    pub(crate) fn check(&mut self, at: &Path<'_>, r: Result<(), String>) {
        if let Err(message) = r {
            self.err(at, message);
        }
    }

    fn push(&mut self, level: Level, at: &Path<'_>, message: String) {
        self.issues.push(Issue {
            level,
            path: at.to_path(),
            message,
        });
    }
}

fn validate_meta(cx: &mut Cx, r: &Resource) {
    let meta = Path::Root.field("metadata");
    if !r.kind.strict {
        return;
    }
    if !is_dns1123_subdomain(&r.name) {
        cx.err(
            &meta.field("name"),
            format!(
                "invalid name {:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
                r.name
            ),
        );
    }
    if let Some(ns) = &r.namespace {
        if !is_dns1123_label(ns) {
            cx.err(
                &meta.field("namespace"),
                format!("invalid namespace {ns:?}: must be a DNS-1123 label"),
            );
        }
    }
    let labels = meta.field("labels");
    check_labels(cx, &labels, &r.meta.labels);
    if r.meta.annotations.contains_key("istio.io/dry-run") && r.kind.kind != "AuthorizationPolicy" {
        cx.err(
            &meta.field("annotations").key("istio.io/dry-run"),
            format!(
                "{}/{} has unsupported annotation istio.io/dry-run, please remove the annotation",
                r.namespace(),
                r.name
            ),
        );
    }
}

// ---- shared rules -------------------------------------------------------

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub(crate) fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && inner(&b[0])
        && inner(&b[b.len() - 1])
        && b.iter().all(|c| inner(c) || *c == b'-')
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`: label names and values.
fn is_label_word(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

pub(crate) fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// `*`, `*foo`, `*-foo` or a DNS-1123 label: the first label of a host.
fn is_wildcard_label(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    let rest = s
        .strip_prefix("*-")
        .or_else(|| s.strip_prefix('*'))
        .unwrap_or(s);
    s.len() <= 63 && is_dns1123_label(rest)
}

fn domain_preconditions(domain: &str) -> Result<(), String> {
    if domain.len() > 255 {
        return Err(format!("domain name {domain:?} too long (max 255)"));
    }
    if domain.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    Ok(())
}

fn dns1123_labels(domain: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let top = parts[parts.len() - 1];
    if !top.is_empty() && top.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {top:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        // A trailing dot (`istio.io.`) is allowed.
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// A fully qualified (or short) DNS name, no wildcard.
pub(crate) fn fqdn(domain: &str) -> Result<(), String> {
    domain_preconditions(domain)?;
    dns1123_labels(domain)
}

/// A DNS name whose first label may be a wildcard (`*.example.com`, `*`).
pub(crate) fn wildcard_domain(domain: &str) -> Result<(), String> {
    domain_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (domain, None),
    };
    if !is_wildcard_label(first) {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    match rest {
        Some(rest) => dns1123_labels(rest),
        None => Ok(()),
    }
}

/// `namespace/host` as Sidecar egress hosts and Gateway server hosts write
/// them; a gateway also accepts a bare host.
pub(crate) fn namespace_slash_host(host: &str, is_gateway: bool) -> Result<(), String> {
    let Some((ns, name)) = host.split_once('/') else {
        if is_gateway {
            return wildcard_domain(host);
        }
        return Err("host must be of form namespace/dnsName".into());
    };
    if ns.is_empty() || name.is_empty() {
        return Err("config namespace and dnsName in host entry cannot be empty".into());
    }
    // A sidecar may exclude a namespace with `~ns/host`.
    let bare = if is_gateway {
        ns
    } else {
        ns.strip_prefix('~').filter(|n| !n.is_empty()).unwrap_or(ns)
    };
    let special: &[&str] = if is_gateway {
        &["*", "."]
    } else {
        &["*", ".", "~"]
    };
    if !special.contains(&bare) && !is_dns1123_label(bare) {
        let role = if is_gateway { "gateway" } else { "sidecar" };
        return Err(format!("invalid namespace value {ns:?} in {role}"));
    }
    wildcard_domain(name)
}

pub(crate) fn port_number(port: u32) -> Result<(), String> {
    if (1..=65535).contains(&port) {
        Ok(())
    } else {
        Err(format!("port number {port} must be in the range 1..65535"))
    }
}

pub(crate) fn port_name(name: &str) -> Result<(), String> {
    if is_dns1123_label(name) {
        Ok(())
    } else {
        Err(format!("invalid port name: {name}"))
    }
}

/// The protocols Istio recognises on a port, case-insensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    Http,
    Http2,
    Https,
    Grpc,
    GrpcWeb,
    HttpProxy,
    Tcp,
    Tls,
    Udp,
    Mongo,
    Redis,
    Mysql,
}

impl Protocol {
    pub(crate) fn parse(s: &str) -> Option<Protocol> {
        Some(match s.to_ascii_lowercase().as_str() {
            "http" => Protocol::Http,
            "http2" => Protocol::Http2,
            "https" => Protocol::Https,
            "grpc" => Protocol::Grpc,
            "grpc-web" => Protocol::GrpcWeb,
            "http_proxy" => Protocol::HttpProxy,
            "tcp" => Protocol::Tcp,
            "tls" => Protocol::Tls,
            "udp" => Protocol::Udp,
            "mongo" => Protocol::Mongo,
            "redis" => Protocol::Redis,
            "mysql" => Protocol::Mysql,
            _ => return None,
        })
    }

    pub(crate) fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::Grpc
                | Protocol::GrpcWeb
                | Protocol::HttpProxy
        )
    }

    pub(crate) fn is_tls(self) -> bool {
        matches!(self, Protocol::Https | Protocol::Tls)
    }
}

pub(crate) fn protocol(p: &str) -> Result<Protocol, String> {
    Protocol::parse(p).ok_or_else(|| format!("unrecognized protocol {p:?}"))
}

/// Durations Istio accepts: at least 1ms, in whole milliseconds.
pub(crate) fn duration(d: &Duration) -> Result<(), String> {
    if d.0 < std::time::Duration::from_millis(1) {
        return Err("duration must be greater than 1ms".into());
    }
    if d.0.subsec_nanos() % 1_000_000 != 0 {
        return Err("only durations to ms precision are supported".into());
    }
    Ok(())
}

pub(crate) fn check_duration(cx: &mut Cx, at: &Path<'_>, d: Option<&Duration>) {
    if let Some(d) = d {
        cx.check(at, duration(d));
    }
}

/// 0, or between 0.0001 and 100.
pub(crate) fn percentage(p: &Percent) -> Result<(), String> {
    let v = p.value.unwrap_or(0.0);
    if !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
        return Err(format!(
            "percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"
        ));
    }
    Ok(())
}

pub(crate) fn percent(v: i32) -> Result<(), String> {
    if (0..=100).contains(&v) {
        Ok(())
    } else {
        Err(format!("percentage {v} is not in range 0..100"))
    }
}

/// Kubernetes label keys and values, as Istio checks selectors.
pub(crate) fn check_labels(cx: &mut Cx, at: &Path<'_>, labels: &Labels) {
    for (k, v) in labels {
        let here = at.key(k);
        if !is_label_key(k) {
            cx.err(&here, format!("invalid tag key: {k:?}"));
        }
        if v.len() > 63 || !(v.is_empty() || is_label_word(v)) {
            cx.err(&here, format!("invalid tag value: {v:?}"));
        }
    }
}

fn is_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(is_dns1123_subdomain) && name.len() <= 63 && is_label_word(name)
}

/// `selector: {matchLabels}` of security and telemetry resources.
pub(crate) fn check_workload_selector(
    cx: &mut Cx,
    at: &Path<'_>,
    selector: Option<&WorkloadSelector>,
) {
    let Some(selector) = selector else { return };
    let labels = at.field("matchLabels");
    check_selector_labels(cx, &labels, &selector.match_labels);
    if selector.match_labels.is_empty() {
        cx.warn(at, "workload selector specified without labels");
    }
}

/// Label selectors may not be empty-keyed or wildcarded.
pub(crate) fn check_selector_labels(cx: &mut Cx, at: &Path<'_>, labels: &Labels) {
    for (k, v) in labels {
        if k.is_empty() {
            cx.err(
                &at.key(k),
                format!("empty key is not supported in selector: \"{k}={v}\""),
            );
        }
        if k.contains('*') || v.contains('*') {
            cx.err(
                &at.key(k),
                format!("wildcard is not supported in selector: \"{k}={v}\""),
            );
        }
    }
}

/// Only one of `selector`, `targetRef` and `targetRefs`; each reference to a
/// Service, ServiceEntry or Gateway in the policy's own namespace.
pub(crate) fn check_targets(
    cx: &mut Cx,
    spec: &Path<'_>,
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
) {
    let set = usize::from(selector.is_some())
        + usize::from(target_ref.is_some())
        + usize::from(!target_refs.is_empty());
    if set > 1 {
        cx.err(
            spec,
            "only one of targetRefs or workloadSelector can be set",
        );
    }
    check_workload_selector(cx, &spec.field("selector"), selector);
    if let Some(t) = target_ref {
        check_target_ref(cx, &spec.field("targetRef"), t);
    }
    let refs = spec.field("targetRefs");
    for (i, t) in target_refs.iter().enumerate() {
        check_target_ref(cx, &refs.index(i), t);
    }
}

fn check_target_ref(cx: &mut Cx, at: &Path<'_>, t: &PolicyTargetReference) {
    if t.name.as_deref().unwrap_or("").is_empty() {
        cx.err(&at.field("name"), "targetRef name must be set");
    }
    if t.namespace.as_deref().is_some_and(|ns| !ns.is_empty()) {
        cx.err(
            &at.field("namespace"),
            "targetRef namespace must not be set; cross namespace referencing is not supported",
        );
    }
    let group = t.group.as_deref().unwrap_or("");
    let kind = t.kind.as_deref().unwrap_or("");
    let allowed = matches!(
        (group, kind),
        ("" | "core", "Service")
            | ("networking.istio.io", "ServiceEntry")
            | ("gateway.networking.k8s.io", "Gateway")
    );
    if !allowed {
        cx.err(
            at,
            format!("targetRef must be to one of core/Service, networking.istio.io/ServiceEntry, gateway.networking.k8s.io/Gateway but was {group}/{kind}"),
        );
    }
}

/// `exportTo`: `.`, `*`, `~` (ServiceEntry only) or namespaces, no duplicates.
pub(crate) fn check_export_to(
    cx: &mut Cx,
    at: &Path<'_>,
    namespace: &str,
    export_to: &[String],
    is_service_entry: bool,
) {
    let mut seen: HashSet<&str> = HashSet::new();
    for (i, e) in export_to.iter().enumerate() {
        let here = at.index(i);
        let key = if e == "." { namespace } else { e.as_str() };
        if seen.contains(key) {
            if key != e {
                cx.err(
                    &here,
                    format!("duplicate entries in exportTo: . and current namespace {namespace}"),
                );
            } else {
                cx.err(
                    &here,
                    format!("duplicate entries in exportTo for entry {e}"),
                );
            }
            continue;
        }
        let valid = e == "." || e == "*" || (e == "~" && is_service_entry) || is_dns1123_label(e);
        if !valid {
            cx.err(
                &here,
                "only . or * or valid DNS 1123 label is allowed as exportTo entry",
            );
            continue;
        }
        seen.insert(key);
    }
    if seen.contains("*") && export_to.len() > 1 {
        cx.err(
            at,
            "cannot have both public (*) and non-public exportTo values for a resource",
        );
    }
    if seen.contains("~") && export_to.len() > 1 {
        cx.err(at, "cannot export service entry to no one (~) and someone");
    }
}

/// An IP address or CIDR block.
pub(crate) fn ip_subnet(s: &str) -> Result<(), String> {
    match s.split_once('/') {
        Some(_) => cidr(s).map_err(|_| format!("{s:?} is not a valid CIDR block")),
        None => s
            .parse::<std::net::IpAddr>()
            .map(|_| ())
            .map_err(|_| format!("{s} is not a valid IP")),
    }
}

pub(crate) fn cidr(s: &str) -> Result<(), ()> {
    let (ip, len) = s.split_once('/').ok_or(())?;
    let ip: std::net::IpAddr = ip.parse().map_err(|_| ())?;
    let len: u8 = len.parse().map_err(|_| ())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max { Err(()) } else { Ok(()) }
}

/// RE2 syntax as the `regex` crate compiles it; Istio caps length at 1024.
pub(crate) fn regex(re: &str, what: &str) -> Result<(), String> {
    if re.len() > 1024 {
        return Err(format!(
            "{what:?}: regex is too large, max length allowed is 1024"
        ));
    }
    match regex_error(re) {
        None => Ok(()),
        Some(detail) => Err(format!(
            "{what:?}: {detail}; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
        )),
    }
}

/// Why `re` does not compile, `None` when it does. Where the `regex` crate
/// and Go's RE2 (which Istio runs) refuse for the same reason, in Go's
/// words: ``error parsing regexp: missing closing ]: `[A-Z` ``.
pub fn regex_error(re: &str) -> Option<String> {
    use regex_syntax::ast::ErrorKind as K;
    let rust = |err: &dyn std::fmt::Display| {
        let text = err.to_string();
        let last = text.lines().last().unwrap_or(&text).trim();
        last.strip_prefix("error: ").unwrap_or(last).to_string()
    };
    // Parsing finds every syntax error and costs a fraction of compiling;
    // only a counted repetition can make a short pattern too large to
    // compile, so only those are compiled here.
    let e = match regex_syntax::Parser::new().parse(re) {
        Ok(_) if re.contains('{') => return regex::Regex::new(re).err().map(|e| rust(&e)),
        Ok(_) => return None,
        Err(regex_syntax::Error::Parse(e)) => e,
        Err(e) => return Some(rust(&e)),
    };
    let span = e.span();
    let at = re.get(span.start.offset..span.end.offset).unwrap_or(re);
    let from = re.get(span.start.offset..).unwrap_or(re);
    let (code, expr) = match e.kind() {
        K::ClassUnclosed => ("missing closing ]", from),
        K::ClassRangeInvalid => ("invalid character class range", at),
        K::GroupUnclosed => ("missing closing )", re),
        K::GroupUnopened => ("unexpected )", re),
        K::RepetitionMissing => {
            // The span is where the operand is missing; Go names the
            // operator that follows.
            let op = match from.find('}') {
                Some(end) if from.starts_with('{') => &from[..=end],
                _ => {
                    let first = from.chars().next().map_or(0, char::len_utf8);
                    let lazy = from[first..].starts_with('?');
                    &from[..first + usize::from(lazy)]
                }
            };
            ("missing argument to repetition operator", op)
        }
        K::RepetitionCountInvalid => ("invalid repeat count", at),
        K::EscapeUnrecognized | K::UnsupportedBackreference => ("invalid escape sequence", at),
        K::EscapeUnexpectedEof => ("trailing backslash at end of expression", ""),
        K::UnsupportedLookAround => ("invalid or unsupported Perl syntax", at),
        K::NestLimitExceeded(_) => ("expression nests too deeply", re),
        K::GroupNameEmpty | K::GroupNameInvalid | K::GroupNameDuplicate { .. } => {
            ("invalid named capture", at)
        }
        _ => return Some(rust(&e)),
    };
    Some(format!("error parsing regexp: {code}: `{expr}`"))
}

/// Header names as HTTP/1.1 tokens.
pub(crate) fn header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !name.bytes().all(token) {
        return Err(format!("header name {name} is not a valid header name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
