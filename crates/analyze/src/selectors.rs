//! Sidecars and Telemetries with workload selectors, as Istio's selector
//! analyzers read them: IST0101 for a selector that matches no workload of
//! its namespace, IST0110 (Sidecar) or IST0159 (Telemetry) when one
//! workload is selected by several. Istio matches running pods; from files
//! weft matches Pods, WorkloadEntries and Deployments' pod templates.
//! IST0167: a Sidecar for workloads in ambient mode (no sidecar there);
//! IST0166: a policy selector that picks a Kubernetes Gateway's proxies,
//! which a `targetRef` should name instead.

use std::collections::{BTreeMap, BTreeSet};

use weft_api::{Resource, Spec};

use crate::{Level, Message, message};

type Labels = BTreeMap<String, String>;

/// A workload: namespace, name and labels.
type Workload<'a> = (&'a str, &'a str, &'a Labels);

pub(crate) fn analyze(resources: &[Resource], out: &mut Vec<Message>) {
    let all: Vec<Workload<'_>> = crate::workloads(resources).collect();
    // Pods the ambient data plane captured, as Istio's CNI marks them.
    let ambient: BTreeSet<(&str, &str)> = resources
        .iter()
        .filter(|r| matches!(r.spec, Spec::Pod(_)))
        .filter(|r| {
            r.meta
                .annotations
                .get("ambient.istio.io/redirection")
                .map(String::as_str)
                == Some("enabled")
        })
        .map(|r| (r.namespace(), r.name.as_str()))
        .collect();
    check(
        resources,
        &all,
        &ambient,
        sidecar,
        ("Sidecars", "IST0110"),
        out,
    );
    check(
        resources,
        &all,
        &BTreeSet::new(),
        telemetry,
        ("Telemetries", "IST0159"),
        out,
    );
    gateway_selectors(resources, &all, out);
}

/// Whether a namespace is enrolled in ambient mode: labelled so, and not
/// also for sidecar injection (which wins).
pub(crate) fn ambient_namespace(resources: &[Resource], ns: &str) -> bool {
    resources.iter().any(|r| {
        let label = |k: &str| r.meta.labels.get(k).map(String::as_str);
        matches!(r.spec, Spec::Namespace)
            && r.name == ns
            && label("istio.io/dataplane-mode") == Some("ambient")
            && label("istio-injection") != Some("enabled")
            && label("istio.io/rev").is_none_or(str::is_empty)
    })
}

pub(crate) fn ineffective(r: &Resource, why: &str) -> Message {
    message(
        "IST0167",
        Level::Warning,
        r,
        format!("The policy has no impact: {why}."),
    )
}

/// IST0166: an AuthorizationPolicy, RequestAuthentication or Telemetry
/// without a `targetRef` whose selector picks a workload of its namespace
/// that serves a Kubernetes Gateway.
fn gateway_selectors(resources: &[Resource], workloads: &[Workload<'_>], out: &mut Vec<Message>) {
    const GATEWAY_NAME_LABEL: &str = "gateway.networking.k8s.io/gateway-name";
    for r in resources {
        let (selector, targeted) = match &r.spec {
            Spec::AuthorizationPolicy(p) => (
                &p.selector,
                p.target_ref.is_some() || !p.target_refs.is_empty(),
            ),
            Spec::RequestAuthentication(p) => (
                &p.selector,
                p.target_ref.is_some() || !p.target_refs.is_empty(),
            ),
            Spec::Telemetry(p) => (
                &p.selector,
                p.target_ref.is_some() || !p.target_refs.is_empty(),
            ),
            _ => continue,
        };
        let Some(selector) = selector.as_ref().filter(|_| !targeted) else {
            continue;
        };
        for (_, _, labels) in workloads.iter().filter(|(ns, ..)| *ns == r.namespace()) {
            let Some(gateway) = labels.get(GATEWAY_NAME_LABEL) else {
                continue;
            };
            if crate::selects(&selector.match_labels, labels) {
                out.push(message(
                    "IST0166",
                    Level::Warning,
                    r,
                    format!(
                        "Ineffective selector on Kubernetes Gateway {gateway}. Use the TargetRef field instead."
                    ),
                ));
            }
        }
    }
}

fn sidecar(r: &Resource) -> Option<&Labels> {
    match &r.spec {
        Spec::Sidecar(s) => s.workload_selector.as_ref().map(|w| &w.labels),
        _ => None,
    }
}

fn telemetry(r: &Resource) -> Option<&Labels> {
    match &r.spec {
        Spec::Telemetry(t) => t.selector.as_ref().map(|s| &s.match_labels),
        _ => None,
    }
}

fn check<'a>(
    resources: &'a [Resource],
    workloads: &[Workload<'a>],
    ambient: &BTreeSet<(&str, &str)>,
    selector: fn(&Resource) -> Option<&Labels>,
    (plural, conflict): (&str, &'static str),
    out: &mut Vec<Message>,
) {
    let mut selected: BTreeMap<(&str, &str), Vec<&Resource>> = BTreeMap::new();
    for r in resources {
        let Some(sel) = selector(r).filter(|s| !s.is_empty()) else {
            continue;
        };
        let mut found = false;
        for (ns, name, labels) in workloads {
            if *ns == r.namespace() && crate::selects(sel, labels) {
                found = true;
                selected.entry((ns, name)).or_default().push(r);
            }
        }
        if !found {
            out.push(message(
                "IST0101",
                Level::Error,
                r,
                format!(
                    "Referenced selector not found: {:?}",
                    crate::selector_text(sel)
                ),
            ));
        }
    }
    let mut reported = BTreeSet::new();
    for ((ns, pod), rs) in &selected {
        if ambient.contains(&(*ns, *pod)) {
            for r in rs
                .iter()
                .filter(|r| reported.insert((r.namespace(), &r.name)))
            {
                out.push(ineffective(
                    r,
                    "selected workload is in ambient mode, the policy has no impact",
                ));
            }
        }
    }
    for ((ns, pod), rs) in selected
        .into_iter()
        .filter(|(w, rs)| rs.len() > 1 && !ambient.contains(w))
    {
        // Istio names them without their (shared) namespace.
        let names: Vec<&str> = rs.iter().map(|r| r.name.as_str()).collect();
        for r in rs {
            out.push(message(
                conflict,
                Level::Error,
                r,
                format!(
                    "The {plural} [{}] in namespace {ns:?} select the same workload pod {pod:?}, which can lead to undefined behavior.",
                    names.join(" ")
                ),
            ));
        }
    }
}
