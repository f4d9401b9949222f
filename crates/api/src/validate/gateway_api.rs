//! Shape rules for Gateway API resources; their semantics come with the
//! translation into the mesh model.

use super::{Cx, is_dns1123_subdomain, port_number, regex, wildcard_domain};
use crate::path::Path;
use crate::types::gateway_api::{
    BackendRef, Gateway, GrpcRoute, HttpRoute, L4Route, ParentReference, ReferenceGrant,
};

pub(super) fn gateway(cx: &mut Cx, g: &Gateway) {
    let spec = Path::Root;
    let spec = spec.field("spec");
    if g.gateway_class_name.is_empty() {
        cx.err(
            &spec.field("gatewayClassName"),
            "gatewayClassName is required",
        );
    }
    if g.listeners.is_empty() {
        cx.err(
            &spec.field("listeners"),
            "a Gateway must have at least one listener",
        );
    }
    let listeners = spec.field("listeners");
    let mut names = std::collections::HashSet::new();
    for (i, l) in g.listeners.iter().enumerate() {
        let at = listeners.index(i);
        if l.name.is_empty() {
            cx.err(&at.field("name"), "name is required");
        } else if !names.insert(l.name.as_str()) {
            cx.err(
                &at.field("name"),
                format!("duplicate listener name {}", l.name),
            );
        }
        match l.port {
            Some(p) => cx.check(&at.field("port"), port_number(p)),
            None => cx.err(&at.field("port"), "port is required"),
        }
        if l.protocol.is_empty() {
            cx.err(&at.field("protocol"), "protocol is required");
        }
        if let Some(h) = &l.hostname {
            cx.check(&at.field("hostname"), wildcard_domain(h));
        }
    }
}

pub(super) fn http_route(cx: &mut Cx, h: &HttpRoute) {
    let spec = Path::Root;
    let spec = spec.field("spec");
    parents(cx, &spec, &h.parent_refs);
    hostnames(cx, &spec, &h.hostnames);
    let rules = spec.field("rules");
    for (i, r) in h.rules.iter().enumerate() {
        let at = rules.index(i);
        backends(cx, &at, &r.backend_refs);
        let matches = at.field("matches");
        for (j, m) in r.matches.iter().enumerate() {
            if let Some(p) = &m.path {
                let m_at = matches.index(j);
                let here = m_at.field("path");
                let value = p.value.as_deref().unwrap_or("/");
                match p.r#type.as_deref().unwrap_or("PathPrefix") {
                    "RegularExpression" => cx.check(&here.field("value"), regex(value, "path")),
                    "Exact" | "PathPrefix" if !value.starts_with('/') => cx.err(
                        &here.field("value"),
                        "value must be an absolute path and start with '/'",
                    ),
                    "Exact" | "PathPrefix" => {}
                    other => cx.err(
                        &here.field("type"),
                        format!("unknown path match type {other:?}"),
                    ),
                }
            }
        }
    }
}

pub(super) fn grpc_route(cx: &mut Cx, g: &GrpcRoute) {
    let spec = Path::Root;
    let spec = spec.field("spec");
    parents(cx, &spec, &g.parent_refs);
    hostnames(cx, &spec, &g.hostnames);
    let rules = spec.field("rules");
    for (i, r) in g.rules.iter().enumerate() {
        backends(cx, &rules.index(i), &r.backend_refs);
    }
}

pub(super) fn l4_route(cx: &mut Cx, t: &L4Route, tls: bool) {
    let spec = Path::Root;
    let spec = spec.field("spec");
    parents(cx, &spec, &t.parent_refs);
    if tls {
        hostnames(cx, &spec, &t.hostnames);
    } else if !t.hostnames.is_empty() {
        cx.err(
            &spec.field("hostnames"),
            "unknown field `hostnames`: TCPRoute has no hostnames",
        );
    }
    if t.rules.is_empty() {
        cx.err(&spec.field("rules"), "at least one rule is required");
    }
    let rules = spec.field("rules");
    for (i, r) in t.rules.iter().enumerate() {
        backends(cx, &rules.index(i), &r.backend_refs);
    }
}

pub(super) fn reference_grant(cx: &mut Cx, g: &ReferenceGrant) {
    let spec = Path::Root;
    let spec = spec.field("spec");
    if g.from.is_empty() {
        cx.err(&spec.field("from"), "at least one `from` is required");
    }
    if g.to.is_empty() {
        cx.err(&spec.field("to"), "at least one `to` is required");
    }
    for (i, f) in g.from.iter().enumerate() {
        if f.kind.is_empty() || f.namespace.is_empty() {
            cx.err(
                &spec.field("from").index(i),
                "kind and namespace are required",
            );
        }
    }
    for (i, t) in g.to.iter().enumerate() {
        if t.kind.is_empty() {
            cx.err(&spec.field("to").index(i).field("kind"), "kind is required");
        }
    }
}

fn parents(cx: &mut Cx, spec: &Path<'_>, refs: &[ParentReference]) {
    let at = spec.field("parentRefs");
    for (i, p) in refs.iter().enumerate() {
        if p.name.is_empty() {
            cx.err(&at.index(i).field("name"), "name is required");
        }
        if let Some(port) = p.port {
            cx.check(&at.index(i).field("port"), port_number(port));
        }
    }
}

fn hostnames(cx: &mut Cx, spec: &Path<'_>, hosts: &[String]) {
    let at = spec.field("hostnames");
    for (i, h) in hosts.iter().enumerate() {
        cx.check(&at.index(i), wildcard_domain(h));
    }
}

fn backends(cx: &mut Cx, rule: &Path<'_>, refs: &[BackendRef]) {
    let at = rule.field("backendRefs");
    for (i, b) in refs.iter().enumerate() {
        let here = at.index(i);
        if b.name.is_empty() || !is_dns1123_subdomain(&b.name) {
            cx.err(
                &here.field("name"),
                format!("invalid backend name {:?}", b.name),
            );
        }
        if let Some(p) = b.port {
            cx.check(&here.field("port"), port_number(p));
        }
        if b.weight.is_some_and(|w| !(0..=1_000_000).contains(&w)) {
            cx.err(&here.field("weight"), "weight must be in range 0..1000000");
        }
    }
}
