//! Sidecars and Telemetries with workload selectors, as Istio's selector
//! analyzers read them: IST0101 for a selector that matches no workload of
//! its namespace, IST0110 (Sidecar) or IST0159 (Telemetry) when one
//! workload is selected by several. Istio matches running pods; from files
//! weft matches Pods, WorkloadEntries and Deployments' pod templates.

use std::collections::BTreeMap;

use weft_api::{Resource, Spec};

use crate::{Level, Message, message};

type Labels = BTreeMap<String, String>;

/// A workload: namespace, name and labels.
type Workload<'a> = (&'a str, &'a str, &'a Labels);

pub(crate) fn analyze(resources: &[Resource], out: &mut Vec<Message>) {
    let all: Vec<Workload<'_>> = crate::workloads(resources).collect();
    check(resources, &all, sidecar, ("Sidecars", "IST0110"), out);
    check(resources, &all, telemetry, ("Telemetries", "IST0159"), out);
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
            let text: Vec<String> = sel.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push(message(
                "IST0101",
                Level::Error,
                r,
                format!("Referenced selector not found: {:?}", text.join(",")),
            ));
        }
    }
    for ((ns, pod), rs) in selected.into_iter().filter(|(_, rs)| rs.len() > 1) {
        let names: Vec<String> = rs.iter().map(|r| format!("{ns}/{}", r.name)).collect();
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
