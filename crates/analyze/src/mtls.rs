//! IST0113: a DestinationRule and a PeerAuthentication that disagree on
//! mTLS toward the same workloads. A rule turning TLS off toward workloads
//! whose policy is STRICT fails every connection; one asking for mTLS
//! toward workloads whose policy is DISABLE does too. Istio retired this
//! analyzer when auto-mTLS made the rule side implicit; weft keeps it, with
//! Istio's code and wording, because an explicit rule still breaks traffic.
//!
//! The workloads behind the rule's host are those its Service or
//! ServiceEntry selects (Pods, WorkloadEntries, Deployments' pod
//! templates); the policy that applies to each is Istio's most specific:
//! workload selector, then namespace, then the root namespace, each UNSET
//! deferring to the next.

use std::collections::BTreeMap;

use weft_api::types::destination_rule::ClientTlsMode;
use weft_api::types::security::MtlsMode;
use weft_api::{Resource, Spec};

use crate::{Level, Message, message};

type Labels = BTreeMap<String, String>;

pub(crate) fn analyze(resources: &[Resource], root: &str, out: &mut Vec<Message>) {
    for r in resources {
        let Spec::DestinationRule(dr) = &r.spec else {
            continue;
        };
        let wants = match dr
            .traffic_policy
            .as_ref()
            .and_then(|p| p.tls.as_ref())
            .and_then(|t| t.mode)
        {
            Some(ClientTlsMode::IstioMutual) => true,
            Some(ClientTlsMode::Disable) => false,
            _ => continue,
        };
        let host = crate::expand(&dr.host, r.namespace());
        let Some((svc_ns, selector)) = service(resources, &host) else {
            continue;
        };
        for labels in workloads(resources, svc_ns, &selector) {
            let Some((policy, mode)) = effective(resources, root, svc_ns, labels) else {
                continue;
            };
            let conflict = match mode {
                MtlsMode::Strict => !wants,
                MtlsMode::Disable => wants,
                _ => false,
            };
            if conflict {
                let mode = match mode {
                    MtlsMode::Strict => "STRICT",
                    _ => "DISABLE",
                };
                out.push(message(
                    "IST0113",
                    Level::Error,
                    r,
                    format!(
                        "A DestinationRule and Policy are in conflict with regards to mTLS for host {host}. The DestinationRule \"{}/{}\" specifies that mTLS must be {wants} but the Policy object \"{policy}\" specifies {mode}.",
                        r.namespace(),
                        r.name
                    ),
                ));
                break;
            }
        }
    }
}

/// The namespace and workload selector of the service named `host`.
fn service<'a>(resources: &'a [Resource], host: &str) -> Option<(&'a str, Labels)> {
    resources.iter().find_map(|s| match &s.spec {
        Spec::Service(svc)
            if format!("{}.{}.svc.cluster.local", s.name, s.namespace()) == host
                && !svc.selector.is_empty() =>
        {
            Some((s.namespace(), svc.selector.clone()))
        }
        Spec::ServiceEntry(se) if se.hosts.iter().any(|h| h == host) => se
            .workload_selector
            .as_ref()
            .map(|w| (s.namespace(), w.labels.clone())),
        _ => None,
    })
}

fn workloads<'a>(resources: &'a [Resource], ns: &str, selector: &Labels) -> Vec<&'a Labels> {
    resources
        .iter()
        .filter(|r| r.namespace() == ns)
        .filter_map(crate::workload_labels)
        .filter(|labels| crate::selects(selector, labels))
        .collect()
}

/// The PeerAuthentication mode that applies to a workload, and its policy.
fn effective(
    resources: &[Resource],
    root: &str,
    ns: &str,
    labels: &Labels,
) -> Option<(String, MtlsMode)> {
    let mode_of = |scope_ns: &str, selected: bool| {
        resources.iter().find_map(|r| match &r.spec {
            Spec::PeerAuthentication(pa) if r.namespace() == scope_ns => {
                let applies = match &pa.selector {
                    Some(s) => selected && crate::selects(&s.match_labels, labels),
                    None => !selected,
                };
                let mode = pa.mtls.as_ref().and_then(|m| m.mode)?;
                (applies && mode != MtlsMode::Unset)
                    .then(|| (format!("{}/{}", r.namespace(), r.name), mode))
            }
            _ => None,
        })
    };
    mode_of(ns, true)
        .or_else(|| mode_of(ns, false))
        .or_else(|| mode_of(root, false))
}
