//! Rules for `security.istio.io` resources.

use super::networking::is_http_method;
use super::{Cx, check_targets, check_workload_selector, duration, header_name};
use crate::path::Path;
use crate::resource::Resource;
use crate::types::security::{
    Action, AuthorizationPolicy, PeerAuthentication, RequestAuthentication,
};

pub(super) fn peer_authentication(cx: &mut Cx, pa: &PeerAuthentication) {
    let spec = Path::Root;
    let spec = spec.field("spec");
    let empty_selector = pa
        .selector
        .as_ref()
        .is_none_or(|s| s.match_labels.is_empty());
    let ports = spec.field("portLevelMtls");
    if empty_selector && !pa.port_level_mtls.is_empty() {
        cx.err(
            &ports,
            "mesh/namespace peer authentication cannot have port level mTLS",
        );
    }
    for port in pa.port_level_mtls.keys() {
        match port.parse::<u32>() {
            Ok(p) if (1..=65535).contains(&p) => {}
            _ => cx.err(&ports.key(port), "port must be in range 1..65535"),
        }
    }
    check_workload_selector(cx, &spec.field("selector"), pa.selector.as_ref());
}

pub(super) fn authorization_policy(cx: &mut Cx, r: &Resource, ap: &AuthorizationPolicy) {
    let root = Path::Root;
    let spec = root.field("spec");
    check_targets(
        cx,
        &spec,
        ap.selector.as_ref(),
        ap.target_ref.as_ref(),
        &ap.target_refs,
    );
    let action = ap.action.unwrap_or(Action::Allow);
    let rules_at = spec.field("rules");
    // `rules: []` and no `rules` differ in Istio only for CUSTOM and DENY;
    // here both read as "no rules".
    if action == Action::Custom {
        if ap.rules.is_empty() {
            cx.err(&rules_at, "CUSTOM action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request");
        } else if ap
            .provider
            .as_ref()
            .and_then(|p| p.name.as_deref())
            .unwrap_or("")
            .is_empty()
        {
            cx.err(
                &spec.field("provider").field("name"),
                "`provider.name` must not be empty",
            );
        }
        for (i, rule) in ap.rules.iter().enumerate() {
            let at = rules_at.index(i);
            for (j, from) in rule.from.iter().enumerate() {
                let Some(src) = &from.source else { continue };
                let froms = at.field("from");
                let here = froms.index(j);
                for (name, set) in [
                    ("From.Namespaces", !src.namespaces.is_empty()),
                    ("From.NotNamespaces", !src.not_namespaces.is_empty()),
                    ("From.Principals", !src.principals.is_empty()),
                    ("From.NotPrincipals", !src.not_principals.is_empty()),
                    ("From.RequestPrincipals", !src.request_principals.is_empty()),
                    (
                        "From.NotRequestPrincipals",
                        !src.not_request_principals.is_empty(),
                    ),
                ] {
                    if set {
                        cx.err(
                            &here,
                            format!("{name} is currently not supported with CUSTOM action"),
                        );
                    }
                }
            }
            for (j, when) in rule.when.iter().enumerate() {
                let k = when.key.as_str();
                if k == "source.namespace"
                    || k == "source.principal"
                    || k.starts_with("request.auth.")
                {
                    cx.err(
                        &at.field("when").index(j),
                        format!("{k} is currently not supported with CUSTOM action"),
                    );
                }
            }
        }
    }
    if ap.provider.is_some() && action != Action::Custom {
        let name = match action {
            Action::Allow => "ALLOW",
            Action::Deny => "DENY",
            Action::Audit => "AUDIT",
            Action::Custom => "CUSTOM",
        };
        cx.err(
            &spec.field("provider"),
            format!("`provider` must not be with non CUSTOM action, found {name}"),
        );
    }
    if action == Action::Deny && ap.rules.is_empty() {
        cx.err(&rules_at, "DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request");
    }
    if let Some(v) = r.meta.annotations.get("istio.io/dry-run") {
        let at = root.field("metadata");
        let at = at.field("annotations");
        let at = at.key("istio.io/dry-run");
        match action {
            Action::Allow | Action::Deny => {
                if !matches!(
                    v.as_str(),
                    "true"
                        | "false"
                        | "True"
                        | "False"
                        | "TRUE"
                        | "FALSE"
                        | "1"
                        | "0"
                        | "t"
                        | "f"
                        | "T"
                        | "F"
                ) {
                    cx.err(
                        &at,
                        format!(
                            "{}/{} has annotation istio.io/dry-run with invalid value ({v})",
                            r.namespace(),
                            r.name
                        ),
                    );
                }
            }
            _ => cx.err(
                &at,
                "the annotation istio.io/dry-run currently only supports action ALLOW/DENY",
            ),
        }
    }
    for (i, rule) in ap.rules.iter().enumerate() {
        let at = rules_at.index(i);
        let mut tcp_in_from = false;
        let mut tcp_in_to = false;
        let froms = at.field("from");
        for (j, from) in rule.from.iter().enumerate() {
            let here = froms.index(j);
            let Some(src) = &from.source else {
                cx.err(
                    &here,
                    format!("`from.source` must not be nil, found at rule {i}"),
                );
                continue;
            };
            let here = here.field("source");
            let lists: [(&str, &str, &Vec<String>); 14] = [
                ("principals", "Principals", &src.principals),
                (
                    "requestPrincipals",
                    "RequestPrincipals",
                    &src.request_principals,
                ),
                ("namespaces", "Namespaces", &src.namespaces),
                ("ipBlocks", "IpBlocks", &src.ip_blocks),
                ("remoteIpBlocks", "RemoteIpBlocks", &src.remote_ip_blocks),
                ("notPrincipals", "NotPrincipals", &src.not_principals),
                (
                    "notRequestPrincipals",
                    "NotRequestPrincipals",
                    &src.not_request_principals,
                ),
                ("notNamespaces", "NotNamespaces", &src.not_namespaces),
                ("notIpBlocks", "NotIpBlocks", &src.not_ip_blocks),
                (
                    "notRemoteIpBlocks",
                    "NotRemoteIpBlocks",
                    &src.not_remote_ip_blocks,
                ),
                ("serviceAccounts", "ServiceAccounts", &src.service_accounts),
                (
                    "notServiceAccounts",
                    "NotServiceAccounts",
                    &src.not_service_accounts,
                ),
                ("trustDomains", "TrustDomains", &src.trust_domains),
                ("notTrustDomains", "NotTrustDomains", &src.not_trust_domains),
            ];
            if lists.iter().all(|(_, _, l)| l.is_empty()) {
                cx.err(
                    &here,
                    format!("`from.source` must not be empty, found at rule {i}"),
                );
            }
            for (field, name, list) in lists {
                check_empty_values(cx, &here.field(field), name, list);
            }
            for (field, list) in [
                ("ipBlocks", &src.ip_blocks),
                ("notIpBlocks", &src.not_ip_blocks),
                ("remoteIpBlocks", &src.remote_ip_blocks),
                ("notRemoteIpBlocks", &src.not_remote_ip_blocks),
            ] {
                check_ips(cx, &here.field(field), list);
            }
            if !src.service_accounts.is_empty() && !src.principals.is_empty() {
                cx.err(&here, "cannot set serviceAccounts and principals together");
            }
            let sa = here.field("serviceAccounts");
            for (k, a) in src
                .service_accounts
                .iter()
                .chain(&src.not_service_accounts)
                .enumerate()
            {
                if a.split('/').count() > 2 || a.contains('*') {
                    cx.err(&sa.index(k), format!("invalid service account {a:?}: use NAME or NAMESPACE/NAME, without wildcards"));
                }
            }
            tcp_in_from |= [
                &src.principals,
                &src.not_principals,
                &src.ip_blocks,
                &src.not_ip_blocks,
                &src.namespaces,
                &src.not_namespaces,
                &src.remote_ip_blocks,
                &src.not_remote_ip_blocks,
            ]
            .iter()
            .any(|l| !l.is_empty());
        }
        let tos = at.field("to");
        for (j, to) in rule.to.iter().enumerate() {
            let here = tos.index(j);
            let Some(op) = &to.operation else {
                cx.err(
                    &here,
                    format!("`to.operation` must not be nil, found at rule {i}"),
                );
                continue;
            };
            let here = here.field("operation");
            let lists: [(&str, &str, &Vec<String>); 8] = [
                ("ports", "Ports", &op.ports),
                ("methods", "Methods", &op.methods),
                ("paths", "Paths", &op.paths),
                ("hosts", "Hosts", &op.hosts),
                ("notPorts", "NotPorts", &op.not_ports),
                ("notMethods", "NotMethods", &op.not_methods),
                ("notPaths", "NotPaths", &op.not_paths),
                ("notHosts", "NotHosts", &op.not_hosts),
            ];
            if lists.iter().all(|(_, _, l)| l.is_empty()) {
                cx.err(
                    &here,
                    format!("`to.operation` must not be empty, found at rule {i}"),
                );
            }
            for (field, name, list) in lists {
                check_empty_values(cx, &here.field(field), name, list);
            }
            check_ports(cx, &here.field("ports"), &op.ports);
            check_ports(cx, &here.field("notPorts"), &op.not_ports);
            check_path_templates(cx, &here.field("paths"), "Paths", &op.paths);
            check_path_templates(cx, &here.field("notPaths"), "NotPaths", &op.not_paths);
            for (field, list) in [("methods", &op.methods), ("notMethods", &op.not_methods)] {
                let m_at = here.field(field);
                for (k, m) in list.iter().enumerate() {
                    if !m.is_empty()
                        && m != "*"
                        && !is_http_method(m)
                        && m.chars().any(|c| c.is_ascii_lowercase())
                    {
                        cx.warn(
                            &m_at.index(k),
                            format!(
                                "method {m:?} is not upper case; HTTP methods are case-sensitive"
                            ),
                        );
                    }
                }
            }
            tcp_in_to |= !op.ports.is_empty() || !op.not_ports.is_empty();
        }
        let whens = at.field("when");
        for (j, cond) in rule.when.iter().enumerate() {
            let here = whens.index(j);
            if cond.key.is_empty() {
                cx.err(&here.field("key"), "`key` must not be empty");
                continue;
            }
            if cond.values.is_empty() && cond.not_values.is_empty() {
                cx.err(
                    &here,
                    format!(
                        "at least one of `values` or `notValues` must be set for key {}",
                        cond.key
                    ),
                );
                continue;
            }
            // Each list that is set is checked on its own.
            for (field, word, list) in [
                ("values", "value", &cond.values),
                ("notValues", "notValue", &cond.not_values),
            ] {
                if list.is_empty() {
                    continue;
                }
                if let Err(e) = attribute(&cond.key, list) {
                    cx.err(
                        &here.field(field),
                        format!("invalid `{word}` for `key` {}: {e}", cond.key),
                    );
                }
            }
        }
        let from_exists = rule.from.iter().any(|f| f.source.is_some());
        let to_exists = rule.to.iter().any(|t| t.operation.is_some());
        if action == Action::Deny
            && ((from_exists && !to_exists && !tcp_in_from) || (to_exists && !tcp_in_to))
        {
            cx.warn(&at, "configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port");
        }
    }
}

fn check_empty_values(cx: &mut Cx, at: &Path<'_>, name: &str, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        if v.is_empty() {
            cx.err(
                &at.index(i),
                format!("empty value not allowed, found in {name}"),
            );
        }
    }
}

fn check_ips(cx: &mut Cx, at: &Path<'_>, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        if let Err(e) = ip_or_cidr(v) {
            cx.err(&at.index(i), e);
        }
    }
}

fn ip_or_cidr(v: &str) -> Result<(), String> {
    if v.contains('/') {
        super::cidr(v).map_err(|_| format!("bad CIDR range ({v})"))
    } else {
        v.parse::<std::net::IpAddr>()
            .map(|_| ())
            .map_err(|_| format!("bad IP address ({v})"))
    }
}

fn check_ports(cx: &mut Cx, at: &Path<'_>, values: &[String]) {
    for (i, v) in values.iter().enumerate() {
        if let Err(e) = port(v) {
            cx.err(&at.index(i), e);
        }
    }
}

fn port(v: &str) -> Result<(), String> {
    match v.parse::<u32>() {
        Ok(p) if p <= 65535 => Ok(()),
        _ => Err(format!("bad port ({v})")),
    }
}

/// `{*}` matches one segment, `{**}` any number and only last; other
/// braces are not allowed, and a templated path's literal segments must be
/// valid URL path characters.
fn check_path_templates(cx: &mut Cx, at: &Path<'_>, name: &str, paths: &[String]) {
    for (i, path) in paths.iter().enumerate() {
        if let Err(e) = path_template(path, name) {
            cx.err(&at.index(i), e);
        }
    }
}

fn path_template(path: &str, name: &str) -> Result<(), String> {
    let templated = path.contains("{*}") || path.contains("{**}");
    let trimmed = path.trim_matches('/');
    let mut any_seen = false;
    for glob in trimmed.split('/') {
        match glob {
            "{*}" | "{**}" if any_seen => {
                return Err(format!(
                    "invalid or unsupported path {trimmed}, found in {name}. {{**}} is not the last operator"
                ));
            }
            "{*}" => continue,
            "{**}" => {
                any_seen = true;
                continue;
            }
            _ => {}
        }
        if glob.contains(['{', '}']) {
            return Err(format!(
                "invalid or unsupported path {trimmed}, found in {name}. Contains '{{' or '}}' beyond a supported path template"
            ));
        }
        let pchar = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@%".contains(c);
        if templated && !glob.chars().all(pchar) {
            return Err(format!(
                "invalid or unsupported path {trimmed}, found in {name}. Contains segment {glob} with invalid string literal"
            ));
        }
    }
    Ok(())
}

/// The `when` keys Istio documents, and what their values must look like.
fn attribute(key: &str, values: &[String]) -> Result<(), String> {
    const DISABLED: &[&str] = &[
        "source.user",
        "request.auth.raw",
        "destination.user",
        "destination.namespace",
    ];
    if DISABLED.contains(&key) {
        return Err(format!("disabled attribute {key}"));
    }
    let map_key = |prefix: &str| -> Result<(), String> {
        let rest = &key[prefix.len()..];
        match rest.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            Some(name) if !name.is_empty() => Ok(()),
            _ => Err(format!("invalid key: {key}")),
        }
    };
    let ips = || values.iter().try_for_each(|v| ip_or_cidr(v));
    match key {
        k if k.starts_with("request.headers") => map_key("request.headers"),
        k if k.starts_with("request.auth.claims") => map_key("request.auth.claims"),
        "source.ip" | "remote.ip" | "destination.ip" => ips(),
        "destination.port" => values.iter().try_for_each(|v| port(v)),
        "source.namespace"
        | "source.principal"
        | "source.serviceAccount"
        | "request.auth.principal"
        | "request.auth.audiences"
        | "request.auth.presenter"
        | "connection.sni" => Ok(()),
        k if k.starts_with("experimental.envoy.filters.") => Ok(()),
        _ => Err(format!("unknown attribute: {key}")),
    }
}

pub(super) fn request_authentication(cx: &mut Cx, ra: &RequestAuthentication) {
    let spec = Path::Root;
    let spec = spec.field("spec");
    check_targets(
        cx,
        &spec,
        ra.selector.as_ref(),
        ra.target_ref.as_ref(),
        &ra.target_refs,
    );
    let rules = spec.field("jwtRules");
    for (i, rule) in ra.jwt_rules.iter().enumerate() {
        let at = rules.index(i);
        if rule.issuer.is_empty() {
            cx.err(&at.field("issuer"), "issuer must be set");
        }
        for (j, aud) in rule.audiences.iter().enumerate() {
            if aud.is_empty() {
                cx.err(
                    &at.field("audiences").index(j),
                    "audience must be non-empty string",
                );
            }
        }
        let uri = rule.jwks_uri.as_deref().unwrap_or("");
        let inline = rule.jwks.as_deref().unwrap_or("");
        if !uri.is_empty() && !inline.is_empty() {
            cx.err(&at, "only one of jwks or jwksUri can be set");
        }
        if !uri.is_empty() {
            cx.check(&at.field("jwksUri"), jwks_uri(uri));
        }
        if !inline.is_empty() {
            match serde_json::from_str::<serde_json::Value>(inline) {
                Ok(v)
                    if v.get("keys").is_some_and(serde_json::Value::is_array)
                        || v.get("kty").is_some() => {}
                Ok(_) => cx.err(
                    &at.field("jwks"),
                    "jwks parse error: expected a JSON Web Key Set with a `keys` list",
                ),
                Err(e) => cx.err(&at.field("jwks"), format!("jwks parse error: {e}")),
            }
        }
        for (j, h) in rule.from_headers.iter().enumerate() {
            if h.name.is_empty() {
                cx.err(
                    &at.field("fromHeaders").index(j).field("name"),
                    "location header name must be non-empty string",
                );
            }
        }
        for (j, p) in rule.from_params.iter().enumerate() {
            if p.is_empty() {
                cx.err(
                    &at.field("fromParams").index(j),
                    "location query must be non-empty string",
                );
            }
        }
        for (j, c) in rule.from_cookies.iter().enumerate() {
            if c.is_empty() {
                cx.err(
                    &at.field("fromCookies").index(j),
                    "cookie name must be non-empty string",
                );
            }
        }
        for (j, c) in rule.output_claim_to_headers.iter().enumerate() {
            let claims = at.field("outputClaimToHeaders");
            let here = claims.index(j);
            if c.claim.is_empty() || c.header.is_empty() {
                cx.err(
                    &here,
                    "outputClaimToHeaders header and claim value must be non-empty string",
                );
                continue;
            }
            cx.check(&here.field("header"), header_name(&c.header));
        }
        if let Some(h) = rule
            .output_payload_to_header
            .as_deref()
            .filter(|h| !h.is_empty())
        {
            cx.check(&at.field("outputPayloadToHeader"), header_name(h));
        }
        if let Some(t) = &rule.timeout {
            cx.check(&at.field("timeout"), duration(t));
        }
    }
}

fn jwks_uri(uri: &str) -> Result<(), String> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Err(format!("jwksUri {uri:?} is not a valid URL"));
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!("jwksUri {uri:?}: scheme must be http or https"));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("jwksUri {uri:?} has no host"));
    }
    Ok(())
}
