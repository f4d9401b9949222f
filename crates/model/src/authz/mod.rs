//! AuthorizationPolicy, compiled for one workload and evaluated exactly as
//! Istio documents it: CUSTOM, then DENY, then ALLOW (no ALLOW policy:
//! allowed; any ALLOW policy: one must match); `spec: {}` allows nothing;
//! AUDIT and `istio.io/dry-run` policies are evaluated and reported, never
//! enforced. Within a rule every one of `from`, `to` and `when` must match
//! (any element of each); within an element every field set must match;
//! a field matches when some value matches and no not-value does.
//!
//! Fail closed: HTTP-only fields against TCP make an ALLOW rule never
//! match and are dropped from a DENY rule; a `when` key weft cannot
//! evaluate does the same; a CUSTOM policy (ext_authz is not built yet)
//! denies the requests its rules select. An attribute the request lacks
//! (no peer identity over plaintext, no JWT) never matches a value and
//! always passes a not-value, so `notNamespaces` cannot be slipped past by
//! plaintext.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};
use weft_api::types::security::{self as sec, AuthorizationPolicy};
use weft_api::{Resource, Spec};

use crate::registry::policy_applies;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Action {
    Allow,
    Deny,
    Audit,
    Custom,
}

/// The policies that apply to one workload.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Authz {
    pub policies: Vec<Policy>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Policy {
    /// `namespace/name`.
    pub name: String,
    pub action: Action,
    pub dry_run: bool,
    pub provider: Option<String>,
    /// A CUSTOM policy's provider, when MeshConfig defines it as an ext_authz
    /// service; without one, the policy denies what it selects.
    pub ext_authz: Option<ExtAuthz>,
    pub rules: Vec<Rule>,
}

/// An `envoyExtAuthzHttp` or `envoyExtAuthzGrpc` extension provider of
/// MeshConfig.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtAuthz {
    pub name: String,
    /// Asked over gRPC (`envoy.service.auth.v3.Authorization/Check`)
    /// rather than plain HTTP.
    pub grpc: bool,
    /// The service host (its `namespace/` part removed) and port.
    pub service: String,
    pub port: u16,
    pub timeout: std::time::Duration,
    pub path_prefix: String,
    pub fail_open: bool,
    /// The status a failed check answers with (default 403).
    pub status_on_error: u16,
    /// Request headers sent to the check besides Host, method and path.
    pub include_request_headers: Vec<String>,
    pub include_additional_headers: Vec<(String, String)>,
    pub headers_to_upstream_on_allow: Vec<String>,
    pub headers_to_downstream_on_deny: Vec<String>,
    pub headers_to_downstream_on_allow: Vec<String>,
}

/// The ext_authz providers (HTTP and gRPC) of a MeshConfig, by name.
pub fn ext_authz_providers(mesh: &weft_api::types::mesh::MeshConfig) -> BTreeMap<String, ExtAuthz> {
    let lower = |v: &[String]| v.iter().map(|h| h.to_ascii_lowercase()).collect();
    let host = |s: &str| s.split_once('/').map_or(s, |(_, h)| h).to_string();
    let status = |s: Option<&str>| s.and_then(|s| s.parse().ok()).unwrap_or(403);
    let timeout = |d: Option<weft_api::types::common::Duration>| {
        d.map_or(std::time::Duration::from_secs(600), |d| d.0)
    };
    let grpc = mesh.extension_providers.iter().filter_map(|p| {
        let g = p.envoy_ext_authz_grpc.as_ref()?;
        Some((
            p.name.clone(),
            ExtAuthz {
                name: p.name.clone(),
                grpc: true,
                service: host(&g.service),
                port: g.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(80),
                timeout: timeout(g.timeout),
                path_prefix: String::new(),
                fail_open: g.fail_open == Some(true),
                status_on_error: status(g.status_on_error.as_deref()),
                include_request_headers: Vec::new(),
                include_additional_headers: Vec::new(),
                headers_to_upstream_on_allow: Vec::new(),
                headers_to_downstream_on_deny: Vec::new(),
                headers_to_downstream_on_allow: Vec::new(),
            },
        ))
    });
    mesh.extension_providers
        .iter()
        .filter_map(|p| {
            let h = p.envoy_ext_authz_http.as_ref()?;
            Some((
                p.name.clone(),
                ExtAuthz {
                    name: p.name.clone(),
                    grpc: false,
                    service: host(&h.service),
                    port: h.port.and_then(|p| u16::try_from(p).ok()).unwrap_or(80),
                    timeout: timeout(h.timeout),
                    path_prefix: h.path_prefix.clone().unwrap_or_default(),
                    fail_open: h.fail_open == Some(true),
                    status_on_error: status(h.status_on_error.as_deref()),
                    include_request_headers: lower(&h.include_request_headers_in_check),
                    include_additional_headers: h
                        .include_additional_headers_in_check
                        .iter()
                        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                        .collect(),
                    headers_to_upstream_on_allow: lower(&h.headers_to_upstream_on_allow),
                    headers_to_downstream_on_deny: lower(&h.headers_to_downstream_on_deny),
                    headers_to_downstream_on_allow: lower(&h.headers_to_downstream_on_allow),
                },
            ))
        })
        .chain(grpc)
        .collect()
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Rule {
    pub from: Vec<Vec<Field>>,
    pub to: Vec<Vec<Field>>,
    pub when: Vec<Field>,
}

/// One constraint: an attribute, the values it must match (any) and the
/// values it must not.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Field {
    pub attribute: Attribute,
    pub values: Vec<Pattern>,
    pub not_values: Vec<Pattern>,
}

/// What a field looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribute {
    Principal,
    RequestPrincipal,
    Namespace,
    ServiceAccount,
    TrustDomain,
    SourceIp,
    RemoteIp,
    Host,
    Port,
    Method,
    Path,
    Header(String),
    DestinationIp,
    Sni,
    /// `request.auth.*`: from the request's validated JWT.
    RequestAuth(String),
    /// A `when` key weft cannot evaluate.
    Unsupported(String),
}

impl Attribute {
    /// Whether only HTTP requests have it.
    fn http_only(&self) -> bool {
        matches!(
            self,
            Attribute::RequestPrincipal
                | Attribute::Host
                | Attribute::Method
                | Attribute::Path
                | Attribute::Header(_)
                | Attribute::RequestAuth(_)
        )
    }
}

/// A value to match: Istio's `*` forms, path templates, or IP blocks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    Any,
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// A host (case-insensitive), matching with or without a port.
    Host(String),
    /// A path with `{*}` / `{**}`, as an anchored regex.
    Template(#[serde(with = "crate::wire::regex")] regex::Regex),
    Cidr(IpAddr, u8),
    /// A value that cannot be parsed (an invalid CIDR): matches nothing.
    Never(String),
}

impl Pattern {
    fn string(v: &str) -> Pattern {
        if v == "*" {
            Pattern::Any
        } else if let Some(p) = v.strip_suffix('*') {
            Pattern::Prefix(p.to_string())
        } else if let Some(s) = v.strip_prefix('*') {
            Pattern::Suffix(s.to_string())
        } else {
            Pattern::Exact(v.to_string())
        }
    }

    fn path(v: &str) -> Pattern {
        if !v.contains('{') {
            return Pattern::string(v);
        }
        let mut re = String::from("^");
        let mut rest = v;
        while let Some(i) = rest.find('{') {
            re.push_str(&regex::escape(&rest[..i]));
            let after = &rest[i..];
            if let Some(r) = after.strip_prefix("{**}") {
                re.push_str(".*");
                rest = r;
            } else if let Some(r) = after.strip_prefix("{*}") {
                re.push_str("[^/]+");
                rest = r;
            } else {
                re.push_str(&regex::escape("{"));
                rest = &after[1..];
            }
        }
        re.push_str(&regex::escape(rest));
        re.push('$');
        regex::Regex::new(&re).map_or_else(|_| Pattern::Never(v.into()), Pattern::Template)
    }

    fn host(v: &str) -> Pattern {
        let lower = v.to_ascii_lowercase();
        match Pattern::string(&lower) {
            Pattern::Exact(h) => Pattern::Host(h),
            other => other,
        }
    }

    fn cidr(v: &str) -> Pattern {
        let (ip, len) = match v.split_once('/') {
            Some((ip, len)) => (ip, len.parse::<u8>().ok()),
            None => (v, None),
        };
        match ip.parse::<IpAddr>() {
            Ok(ip) => {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                match len {
                    Some(l) if l <= max => Pattern::Cidr(ip, l),
                    None => Pattern::Cidr(ip, max),
                    _ => Pattern::Never(v.into()),
                }
            }
            Err(_) => Pattern::Never(v.into()),
        }
    }

    fn matches(&self, v: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(e) => v == e,
            Pattern::Prefix(p) => v.starts_with(p.as_str()),
            Pattern::Suffix(s) => v.ends_with(s.as_str()),
            Pattern::Host(h) => {
                let v = v.to_ascii_lowercase();
                v == *h
                    || v.strip_prefix(h.as_str())
                        .and_then(|rest| rest.strip_prefix(':'))
                        .is_some_and(|port| port.bytes().all(|b| b.is_ascii_digit()))
            }
            Pattern::Template(re) => re.is_match(v),
            Pattern::Cidr(net, len) => v.parse::<IpAddr>().is_ok_and(|ip| in_cidr(ip, *net, *len)),
            Pattern::Never(_) => false,
        }
    }
}

/// Whether `ip` is in `block`, an address or `address/length`.
pub fn in_block(block: &str, ip: IpAddr) -> bool {
    matches!(Pattern::cidr(block), Pattern::Cidr(net, len) if in_cidr(ip, net, len))
}

fn in_cidr(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// What authorization sees of a request or connection.
#[derive(Debug)]
pub struct Request<'a> {
    /// The peer's SPIFFE ID (`spiffe://td/ns/x/sa/y`); none over plaintext.
    pub principal: Option<&'a str>,
    pub source_ip: Option<IpAddr>,
    /// The original client (X-Forwarded-For at a gateway), else the source.
    pub remote_ip: Option<IpAddr>,
    pub destination: SocketAddr,
    pub sni: Option<&'a str>,
    /// None for TCP.
    pub http: Option<HttpRequest<'a>>,
}

/// What a validated JWT says of the request (RequestAuthentication).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestAuth {
    /// `iss/sub`.
    pub principal: String,
    pub audiences: Vec<String>,
    /// `azp`.
    pub presenter: Option<String>,
    pub claims: serde_json::Value,
}

impl RequestAuth {
    /// The values of `request.auth.<key>` (`principal`, `audiences`,
    /// `presenter`, `claims[name]` or nested `claims[a][b]`).
    pub fn values(&self, key: &str) -> Vec<String> {
        match key {
            "request.auth.principal" => vec![self.principal.clone()],
            "request.auth.audiences" => self.audiences.clone(),
            "request.auth.presenter" => self.presenter.iter().cloned().collect(),
            k => {
                let Some(path) = k.strip_prefix("request.auth.claims") else {
                    return Vec::new();
                };
                let mut value = &self.claims;
                for name in path.split(']').filter_map(|p| p.strip_prefix('[')) {
                    match value.get(name) {
                        Some(v) => value = v,
                        None => return Vec::new(),
                    }
                }
                match value {
                    serde_json::Value::String(s) => vec![s.clone()],
                    serde_json::Value::Array(a) => a
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect(),
                    serde_json::Value::Bool(_) | serde_json::Value::Number(_) => {
                        vec![value.to_string()]
                    }
                    _ => Vec::new(),
                }
            }
        }
    }
}

pub struct HttpRequest<'a> {
    pub method: &'a str,
    pub host: &'a str,
    /// Normalized, without query or fragment.
    pub path: &'a str,
    /// Every value of a header (by lowercase name).
    pub headers: &'a dyn Fn(&str) -> Vec<&'a str>,
    /// The request's validated JWT, when it has one.
    pub auth: Option<&'a RequestAuth>,
}

impl std::fmt::Debug for HttpRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("host", &self.host)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Request<'_> {
    /// The values the request has for `a` (empty: it has none).
    fn values(&self, a: &Attribute) -> Vec<String> {
        let id = || self.principal.and_then(|p| p.strip_prefix("spiffe://"));
        // spiffe://<td>/ns/<ns>/sa/<sa>
        let part = |i: usize| id().and_then(|p| p.split('/').nth(i)).map(str::to_string);
        let one = |v: Option<String>| v.into_iter().collect();
        match a {
            Attribute::Principal => one(id().map(str::to_string)),
            Attribute::Namespace => one(part(2)),
            Attribute::ServiceAccount => one(part(2).zip(part(4)).map(|(n, s)| format!("{n}/{s}"))),
            Attribute::TrustDomain => one(part(0)),
            Attribute::SourceIp => one(self.source_ip.map(|i| i.to_string())),
            Attribute::RemoteIp => one(self.remote_ip.or(self.source_ip).map(|i| i.to_string())),
            Attribute::DestinationIp => one(Some(self.destination.ip().to_string())),
            Attribute::Port => one(Some(self.destination.port().to_string())),
            Attribute::Sni => one(self.sni.map(str::to_string)),
            Attribute::Host => one(self.http.as_ref().map(|h| h.host.to_string())),
            Attribute::Method => one(self.http.as_ref().map(|h| h.method.to_string())),
            Attribute::Path => one(self.http.as_ref().map(|h| h.path.to_string())),
            Attribute::Header(name) => self
                .http
                .as_ref()
                .map(|h| (h.headers)(name).into_iter().map(str::to_string).collect())
                .unwrap_or_default(),
            Attribute::RequestPrincipal => self
                .http
                .as_ref()
                .and_then(|h| h.auth)
                .map(|a| vec![a.principal.clone()])
                .unwrap_or_default(),
            Attribute::RequestAuth(key) => self
                .http
                .as_ref()
                .and_then(|h| h.auth)
                .map(|a| a.values(key))
                .unwrap_or_default(),
            Attribute::Unsupported(_) => Vec::new(),
        }
    }
}

impl Field {
    /// Whether the request satisfies this field, for a rule of `action`.
    /// `None`: the field does not apply and is dropped (DENY over TCP).
    fn check(&self, req: &Request<'_>, action: Action) -> Option<bool> {
        let deny = matches!(action, Action::Deny);
        if self.attribute.http_only() && req.http.is_none() {
            return if deny { None } else { Some(false) };
        }
        if let Attribute::Unsupported(_) = self.attribute {
            return Some(deny);
        }
        let have = req.values(&self.attribute);
        // Headers with several values are matched value by value.
        let positive = self.values.is_empty()
            || have
                .iter()
                .any(|v| self.values.iter().any(|p| p.matches(v)));
        let negative = !have
            .iter()
            .any(|v| self.not_values.iter().any(|p| p.matches(v)));
        Some(positive && negative)
    }
}

/// Every field of a group must match; dropped fields do not count, so a
/// DENY rule of HTTP fields only denies every TCP connection, as Istio
/// documents.
fn all(fields: &[Field], req: &Request<'_>, action: Action) -> bool {
    fields.iter().all(|f| f.check(req, action).unwrap_or(true))
}

impl Rule {
    fn matches(&self, req: &Request<'_>, action: Action) -> bool {
        let any =
            |groups: &[Vec<Field>]| groups.is_empty() || groups.iter().any(|g| all(g, req, action));
        any(&self.from) && any(&self.to) && all(&self.when, req, action)
    }
}

impl Policy {
    /// The index of the first rule that matches.
    fn matching_rule(&self, req: &Request<'_>) -> Option<usize> {
        self.rules.iter().position(|r| r.matches(req, self.action))
    }
}

/// A denial by rule `rule` of `policy`.
fn denied_by(policy: &Policy, rule: usize, reason: String, notes: Vec<String>) -> Decision {
    Decision {
        allowed: false,
        policy: Some(policy.name.clone()),
        rule: Some(rule),
        reason,
        notes,
        ask: None,
    }
}

/// The outcome of authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The policy and rule that decided, when one did.
    pub policy: Option<String>,
    pub rule: Option<usize>,
    pub reason: String,
    /// What dry-run and AUDIT policies said, for the log.
    pub notes: Vec<String>,
    /// A CUSTOM policy matched: this provider must allow the request too
    /// (the policy's name and its provider).
    pub ask: Option<(String, ExtAuthz)>,
}

impl Authz {
    /// Evaluates `req`: CUSTOM, then DENY, then ALLOW.
    pub fn evaluate(&self, req: &Request<'_>) -> Decision {
        let mut notes = Vec::new();
        for p in self
            .policies
            .iter()
            .filter(|p| p.dry_run || p.action == Action::Audit)
        {
            if let Some(i) = p.matching_rule(req) {
                notes.push(format!(
                    "{} {:?} policy {} rule {i} matched",
                    if p.dry_run { "dry-run" } else { "audit" },
                    p.action,
                    p.name
                ));
            }
        }
        // CUSTOM first: a matching policy sends the request to its provider
        // (which the caller asks); one whose provider is unknown denies.
        let mut ask = None;
        for p in self.enforced(Action::Custom) {
            if let Some(i) = p.matching_rule(req) {
                match &p.ext_authz {
                    Some(provider) => {
                        ask.get_or_insert((p.name.clone(), provider.clone()));
                    }
                    None => {
                        let provider = p.provider.clone().unwrap_or_default();
                        let reason = format!(
                            "CUSTOM provider {provider:?} is not an ext_authz provider of MeshConfig; failing closed"
                        );
                        return denied_by(p, i, reason, notes);
                    }
                }
            }
        }
        let mut decision = self.deny_then_allow(req, notes);
        decision.ask = ask;
        decision
    }

    /// The enforced (not dry-run) policies of `action`.
    fn enforced(&self, action: Action) -> impl Iterator<Item = &Policy> {
        self.policies
            .iter()
            .filter(move |p| p.action == action && !p.dry_run)
    }

    /// DENY, then ALLOW.
    fn deny_then_allow(&self, req: &Request<'_>, notes: Vec<String>) -> Decision {
        for p in self.enforced(Action::Deny) {
            if let Some(i) = p.matching_rule(req) {
                return denied_by(p, i, "denied by a DENY policy".into(), notes);
            }
        }
        let mut allows = self.enforced(Action::Allow).peekable();
        if allows.peek().is_none() {
            return Decision {
                allowed: true,
                policy: None,
                rule: None,
                reason: "no ALLOW policy applies".into(),
                notes,
                ask: None,
            };
        }
        for p in allows {
            if let Some(i) = p.matching_rule(req) {
                return Decision {
                    allowed: true,
                    policy: Some(p.name.clone()),
                    rule: Some(i),
                    reason: "allowed by an ALLOW policy".into(),
                    notes,
                    ask: None,
                };
            }
        }
        Decision {
            allowed: false,
            policy: None,
            rule: None,
            reason: "no ALLOW policy matched".into(),
            notes,
            ask: None,
        }
    }

    /// The policies that apply to a workload in `namespace` with `labels`:
    /// its namespace's (with a matching selector, or none), and the root
    /// namespace's (without a selector, or with one that matches), and
    /// those attached by targetRef to the Gateway API Gateway the workload
    /// serves (see [`policy_applies`]).
    ///
    /// `mesh` gives the root namespace, the ext_authz providers, and the
    /// trust domain with its aliases: a principal of one of them in a
    /// policy stands for the same workload in all of them, as Istio reads
    /// policies during a trust domain migration.
    pub fn for_workload(
        resources: &[Resource],
        mesh: &crate::Mesh,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Authz {
        let root_namespace = mesh.root_namespace.as_str();
        let providers = &mesh.ext_authz;
        let domains: Vec<&str> = std::iter::once(mesh.trust_domain.as_str())
            .chain(mesh.trust_domain_aliases.iter().map(String::as_str))
            .collect();
        let policies = resources
            .iter()
            .filter_map(|r| match &r.spec {
                Spec::AuthorizationPolicy(p) => Some((r, p)),
                _ => None,
            })
            .filter(|(r, p)| {
                let targets: Vec<_> = p.target_ref.iter().chain(&p.target_refs).collect();
                policy_applies(
                    r.namespace(),
                    root_namespace,
                    p.selector.as_ref().map(|s| &s.match_labels),
                    &targets,
                    namespace,
                    labels,
                )
            })
            .map(|(r, p)| compile(r, p, providers, &domains))
            .collect();
        Authz { policies }
    }
}

fn compile(
    r: &Resource,
    p: &AuthorizationPolicy,
    providers: &BTreeMap<String, ExtAuthz>,
    domains: &[&str],
) -> Policy {
    let action = match p.action.unwrap_or(sec::Action::Allow) {
        sec::Action::Allow => Action::Allow,
        sec::Action::Deny => Action::Deny,
        sec::Action::Audit => Action::Audit,
        sec::Action::Custom => Action::Custom,
    };
    let dry_run = r
        .meta
        .annotations
        .get("istio.io/dry-run")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    Policy {
        name: format!("{}/{}", r.namespace(), r.name),
        action,
        dry_run,
        provider: p.provider.as_ref().and_then(|x| x.name.clone()),
        ext_authz: p
            .provider
            .as_ref()
            .and_then(|x| x.name.as_ref())
            .and_then(|n| providers.get(n))
            .cloned()
            .filter(|_| action == Action::Custom),
        rules: p.rules.iter().map(|r| rule(r, domains)).collect(),
    }
}

fn field(
    attribute: Attribute,
    values: &[String],
    not_values: &[String],
    pattern: fn(&str) -> Pattern,
    out: &mut Vec<Field>,
) {
    if values.is_empty() && not_values.is_empty() {
        return;
    }
    out.push(Field {
        attribute,
        values: values.iter().map(|v| pattern(v)).collect(),
        not_values: not_values.iter().map(|v| pattern(v)).collect(),
    });
}

/// A principal in one of the mesh's trust domains, in all of them.
fn across_domains(values: &[String], domains: &[&str]) -> Vec<String> {
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        out.push(v.clone());
        let Some((td, rest)) = v.split_once('/') else {
            continue;
        };
        if domains.contains(&td) {
            out.extend(
                domains
                    .iter()
                    .filter(|d| **d != td)
                    .map(|d| format!("{d}/{rest}")),
            );
        }
    }
    out
}

fn rule(r: &sec::Rule, domains: &[&str]) -> Rule {
    let from = r
        .from
        .iter()
        .filter_map(|f| f.source.as_ref())
        .map(|s| {
            let mut out = Vec::new();
            // Principals are SPIFFE IDs without the scheme.
            field(
                Attribute::Principal,
                &across_domains(&s.principals, domains),
                &across_domains(&s.not_principals, domains),
                Pattern::string,
                &mut out,
            );
            field(
                Attribute::RequestPrincipal,
                &s.request_principals,
                &s.not_request_principals,
                Pattern::string,
                &mut out,
            );
            field(
                Attribute::Namespace,
                &s.namespaces,
                &s.not_namespaces,
                Pattern::string,
                &mut out,
            );
            field(
                Attribute::ServiceAccount,
                &s.service_accounts,
                &s.not_service_accounts,
                Pattern::string,
                &mut out,
            );
            field(
                Attribute::TrustDomain,
                &s.trust_domains,
                &s.not_trust_domains,
                Pattern::string,
                &mut out,
            );
            field(
                Attribute::SourceIp,
                &s.ip_blocks,
                &s.not_ip_blocks,
                Pattern::cidr,
                &mut out,
            );
            field(
                Attribute::RemoteIp,
                &s.remote_ip_blocks,
                &s.not_remote_ip_blocks,
                Pattern::cidr,
                &mut out,
            );
            out
        })
        .collect();
    let to =
        r.to.iter()
            .filter_map(|t| t.operation.as_ref())
            .map(|o| {
                let mut out = Vec::new();
                field(
                    Attribute::Host,
                    &o.hosts,
                    &o.not_hosts,
                    Pattern::host,
                    &mut out,
                );
                field(
                    Attribute::Port,
                    &o.ports,
                    &o.not_ports,
                    Pattern::string,
                    &mut out,
                );
                field(
                    Attribute::Method,
                    &o.methods,
                    &o.not_methods,
                    Pattern::string,
                    &mut out,
                );
                field(
                    Attribute::Path,
                    &o.paths,
                    &o.not_paths,
                    Pattern::path,
                    &mut out,
                );
                out
            })
            .collect();
    let when = r
        .when
        .iter()
        .map(|c| {
            let (attribute, pattern): (Attribute, fn(&str) -> Pattern) = when_key(&c.key);
            Field {
                attribute,
                values: c.values.iter().map(|v| pattern(v)).collect(),
                not_values: c.not_values.iter().map(|v| pattern(v)).collect(),
            }
        })
        .collect();
    Rule { from, to, when }
}

/// The attribute of a `when` key and how its values read.
fn when_key(key: &str) -> (Attribute, fn(&str) -> Pattern) {
    if let Some(name) = key
        .strip_prefix("request.headers[")
        .and_then(|k| k.strip_suffix(']'))
    {
        return (
            Attribute::Header(name.to_ascii_lowercase()),
            Pattern::string,
        );
    }
    match key {
        "source.ip" => (Attribute::SourceIp, Pattern::cidr),
        "remote.ip" => (Attribute::RemoteIp, Pattern::cidr),
        "destination.ip" => (Attribute::DestinationIp, Pattern::cidr),
        "source.namespace" => (Attribute::Namespace, Pattern::string),
        "source.principal" => (Attribute::Principal, Pattern::string),
        "source.serviceAccount" => (Attribute::ServiceAccount, Pattern::string),
        "destination.port" => (Attribute::Port, Pattern::string),
        "connection.sni" => (Attribute::Sni, Pattern::string),
        k if k.starts_with("request.auth.") => (Attribute::RequestAuth(k.into()), Pattern::string),
        k => (Attribute::Unsupported(k.into()), Pattern::string),
    }
}

#[cfg(test)]
mod tests;
