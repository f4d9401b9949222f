//! Delegate VirtualServices, merged into their root as Istio merges them:
//! a root route with `delegate` is replaced by the delegate's routes, each
//! with its matches narrowed to the root's (a delegate match must be a
//! subset of some root match, or that delegate route is dropped) and the
//! root's rewrite, timeout, retries, fault, mirror, CORS and headers where
//! the delegate route has none. One level only: a delegate's own
//! `delegate` routes are dropped.

use weft_api::types::virtual_service::{HttpMatchRequest, HttpRoute, StringMatch, VirtualService};
use weft_api::{Resource, Spec};

/// The HTTP routes of root `v` (in namespace `ns`) with delegates expanded,
/// each with the namespace its short host names resolve in.
pub fn expand(ns: &str, v: &VirtualService, resources: &[Resource]) -> Vec<(String, HttpRoute)> {
    let mut out = Vec::new();
    for route in &v.http {
        let Some(d) = &route.delegate else {
            out.push((ns.to_string(), route.clone()));
            continue;
        };
        let (Some(name), dns) = (&d.name, d.namespace.as_deref().unwrap_or(ns)) else {
            continue;
        };
        let Some(delegate) = resources.iter().find_map(|r| match &r.spec {
            Spec::VirtualService(dv)
                if r.name == *name && r.namespace() == dns && dv.hosts.is_empty() =>
            {
                Some(dv)
            }
            _ => None,
        }) else {
            continue;
        };
        if !exported(&delegate.export_to, dns, ns) {
            continue;
        }
        for leaf in delegate.http.iter().filter(|l| l.delegate.is_none()) {
            if let Some(merged) = merge_route(route, leaf) {
                out.push((dns.to_string(), merged));
            }
        }
    }
    out
}

/// Whether a resource of namespace `own` with `export_to` is visible from
/// namespace `to`.
fn exported(export_to: &[String], own: &str, to: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || e == to || (e == "." && own == to))
}

fn merge_route(root: &HttpRoute, leaf: &HttpRoute) -> Option<HttpRoute> {
    let mut out = leaf.clone();
    out.r#match = merge_matches(&root.r#match, &leaf.r#match)?;
    out.name = match (&root.name, &leaf.name) {
        (Some(r), Some(l)) => Some(format!("{r}-{l}")),
        (r, l) => l.clone().or_else(|| r.clone()),
    };
    macro_rules! inherit {
        ($($field:ident),*) => {
            $(if out.$field.is_none() {
                out.$field = root.$field.clone();
            })*
        };
    }
    inherit!(
        rewrite,
        timeout,
        retries,
        fault,
        mirror,
        mirror_percent,
        mirror_percentage,
        cors_policy,
        headers
    );
    Some(out)
}

/// Each leaf match merged with every root match it does not conflict
/// with; `None` when some leaf match fits no root match.
fn merge_matches(
    root: &[HttpMatchRequest],
    leaf: &[HttpMatchRequest],
) -> Option<Vec<HttpMatchRequest>> {
    if root.is_empty() {
        return Some(leaf.to_vec());
    }
    if leaf.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for l in leaf {
        let fits: Vec<HttpMatchRequest> = root
            .iter()
            .filter(|r| !conflict(r, l))
            .map(|r| merge_match(r, l))
            .collect();
        if fits.is_empty() {
            return None;
        }
        out.extend(fits);
    }
    Some(out)
}

fn merge_match(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> HttpMatchRequest {
    let mut out = leaf.clone();
    out.name = match (&root.name, &leaf.name) {
        (Some(r), Some(l)) => Some(format!("{r}-{l}")),
        (r, l) => l.clone().or_else(|| r.clone()),
    };
    out.uri = leaf.uri.clone().or_else(|| root.uri.clone());
    out.scheme = leaf.scheme.clone().or_else(|| root.scheme.clone());
    out.method = leaf.method.clone().or_else(|| root.method.clone());
    out.authority = leaf.authority.clone().or_else(|| root.authority.clone());
    for (mine, theirs) in [
        (&mut out.headers, &root.headers),
        (&mut out.without_headers, &root.without_headers),
        (&mut out.query_params, &root.query_params),
    ] {
        for (k, v) in theirs {
            mine.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    out.port = leaf.port.or(root.port);
    out
}

fn conflict(root: &HttpMatchRequest, leaf: &HttpMatchRequest) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs
        .iter()
        .any(|(r, l)| str_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    // As in Istio, a leaf's withoutHeaders are checked against the root's
    // headers.
    let keyed = leaf
        .headers
        .iter()
        .map(|(k, v)| (root.headers.get(k), v))
        .chain(
            leaf.without_headers
                .iter()
                .map(|(k, v)| (root.headers.get(k), v)),
        )
        .chain(
            leaf.query_params
                .iter()
                .map(|(k, v)| (root.query_params.get(k), v)),
        );
    for (r, l) in keyed {
        if str_conflict(r, Some(l)) {
            return true;
        }
    }
    root.ignore_uri_case.unwrap_or(false) != leaf.ignore_uri_case.unwrap_or(false)
        || matches!((root.port, leaf.port), (Some(r), Some(l)) if r != l)
}

/// Whether leaf `l` is not within root `r`: regexes always conflict; an
/// exact root takes only the same exact; a prefix root takes exacts and
/// prefixes under it.
fn str_conflict(r: Option<&StringMatch>, l: Option<&StringMatch>) -> bool {
    let (Some(r), Some(l)) = (r, l) else {
        return false;
    };
    if r.regex.is_some() || l.regex.is_some() {
        return true;
    }
    if let Some(exact) = &r.exact {
        return l.prefix.is_some() || l.exact.as_ref() != Some(exact);
    }
    if let Some(prefix) = &r.prefix {
        return match (&l.prefix, &l.exact) {
            (Some(p), _) | (None, Some(p)) => !p.starts_with(prefix.as_str()),
            (None, None) => true,
        };
    }
    true
}
