//! AuthorizationPolicy analyzers: IST0127, a policy that selects no
//! workload; IST0101, a source namespace that matches no namespace, or a
//! source principal naming a service account its namespace does not have
//! (checked where the inputs show the namespace's workloads or service
//! accounts; weft's addition to Istio's analyzer).
//!
//! Istio counts running pods; from files weft counts Pods, WorkloadEntries
//! and the pod templates of Deployments, and knows a namespace from its
//! Namespace resource or from any resource in it.

use std::collections::{BTreeMap, BTreeSet};

use weft_api::{Resource, Spec};

use crate::{Level, Message, message};

type Labels = BTreeMap<String, String>;

pub(crate) fn analyze(resources: &[Resource], root: &str, out: &mut Vec<Message>) {
    let mut workloads: BTreeMap<&str, Vec<&Labels>> = BTreeMap::new();
    let mut namespaces: BTreeSet<&str> = BTreeSet::new();
    // Service accounts in use or declared, by namespace.
    let mut accounts: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in resources {
        let account = match &r.spec {
            Spec::ServiceAccount => Some(r.name.as_str()),
            Spec::WorkloadEntry(we) => Some(we.service_account.as_deref().unwrap_or("default")),
            Spec::Pod(p) => Some(pod_account(p)),
            Spec::Deployment(d) => d
                .template
                .as_ref()
                .and_then(|t| t.spec.as_ref())
                .map(pod_account),
            _ => None,
        };
        if let Some(account) = account {
            accounts.entry(r.namespace()).or_default().insert(account);
        }
        if let Some(labels) = crate::workload_labels(r) {
            workloads.entry(r.namespace()).or_default().push(labels);
        }
        match &r.spec {
            Spec::Namespace => {
                namespaces.insert(r.name.as_str());
            }
            _ if r.namespace.is_some() => {
                namespaces.insert(r.namespace());
            }
            _ => {}
        }
    }
    for r in resources {
        let Spec::AuthorizationPolicy(ap) = &r.spec else {
            continue;
        };
        let ns = r.namespace();
        let selector = ap.selector.as_ref().map(|s| &s.match_labels);
        let selects = |labels: &&Labels| selector.is_none_or(|s| crate::selects(s, labels));
        let found = if ns == root {
            // Mesh-wide: a selector looks in every namespace; none is fine.
            selector.is_none() || workloads.values().flatten().any(&selects)
        } else {
            workloads.get(ns).is_some_and(|ws| ws.iter().any(selects))
        };
        if !found {
            out.push(message(
                "IST0127",
                Level::Warning,
                r,
                format!(
                    "No matching workloads for this resource with the following labels: {}",
                    selector.map_or_else(String::new, crate::selector_text)
                ),
            ));
        }
        let referenced = ap
            .rules
            .iter()
            .flat_map(|rule| &rule.from)
            .filter_map(|f| f.source.as_ref())
            .flat_map(|s| s.namespaces.iter().chain(&s.not_namespaces));
        let principals = ap
            .rules
            .iter()
            .flat_map(|rule| &rule.from)
            .filter_map(|f| f.source.as_ref())
            .flat_map(|s| s.principals.iter().chain(&s.not_principals));
        for principal in principals.filter(|p| !p.contains('*')) {
            let Some((ns, sa)) = principal
                .split_once("/ns/")
                .and_then(|(_, rest)| rest.split_once("/sa/"))
            else {
                continue;
            };
            if accounts.get(ns).is_some_and(|known| !known.contains(sa)) {
                out.push(message(
                    "IST0101",
                    Level::Error,
                    r,
                    format!("Referenced principal not found: {principal:?}"),
                ));
            }
        }
        for pattern in referenced {
            if !namespaces.iter().any(|n| namespace_match(n, pattern)) {
                out.push(message(
                    "IST0101",
                    Level::Error,
                    r,
                    format!("Referenced namespace not found: {pattern:?}"),
                ));
            }
        }
    }
}

/// A namespace against a policy's pattern: `*`, `prefix*`, `*suffix` or
/// the name in any case.
fn namespace_match(ns: &str, pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return ns.ends_with(suffix);
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return ns.starts_with(prefix);
    }
    ns.eq_ignore_ascii_case(pattern)
}

fn pod_account(p: &weft_api::types::kube::PodSpec) -> &str {
    p.service_account_name
        .as_deref()
        .or(p.service_account.as_deref())
        .unwrap_or("default")
}
