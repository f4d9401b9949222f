//! Deployments and the Services that select their pods, as Istio's
//! service-association analyzer reads them: IST0116, one port number
//! served with different protocols; IST0137, one targetPort behind
//! different Service ports. Only Deployments in the mesh are checked: with
//! an istio-proxy container, a `sidecar.istio.io/inject` label or
//! annotation saying so, or an injection-enabled Namespace.

use std::collections::{BTreeMap, BTreeSet};

use weft_api::types::kube::IntOrString;
use weft_api::{Resource, Spec};

use crate::{Level, Message, message};

pub(crate) fn analyze(resources: &[Resource], out: &mut Vec<Message>) {
    for r in resources {
        let Spec::Deployment(d) = &r.spec else {
            continue;
        };
        let Some(template) = &d.template else {
            continue;
        };
        if !in_mesh(resources, r.namespace(), template) {
            continue;
        }
        let labels = &template.metadata.labels;
        let services: Vec<(String, &weft_api::types::kube::ServiceSpec)> = resources
            .iter()
            .filter_map(|s| match &s.spec {
                Spec::Service(svc)
                    if s.namespace() == r.namespace()
                        && !svc.selector.is_empty()
                        && crate::selects(&svc.selector, labels) =>
                {
                    Some((format!("{}/{}", s.namespace(), s.name), svc))
                }
                _ => None,
            })
            .collect();
        // Port -> protocol -> services; targetPort -> port -> service.
        let mut protocols: BTreeMap<u32, BTreeMap<String, Vec<&str>>> = BTreeMap::new();
        let mut targets: BTreeMap<String, BTreeMap<u32, &str>> = BTreeMap::new();
        for (name, svc) in &services {
            for p in &svc.ports {
                let port = p.port.unwrap_or(0);
                let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
                protocols
                    .entry(port)
                    .or_default()
                    .entry(protocol)
                    .or_default()
                    .push(name);
                let target = match &p.target_port {
                    Some(IntOrString::Int(n)) if *n != 0 => n.to_string(),
                    Some(IntOrString::String(s)) if !s.is_empty() => s.clone(),
                    _ => port.to_string(),
                };
                targets.entry(target).or_default().insert(port, name);
            }
        }
        for (port, by_protocol) in &protocols {
            if by_protocol.len() < 2 {
                continue;
            }
            let names: BTreeSet<&str> = by_protocol.values().flatten().copied().collect();
            let names: Vec<&str> = names.into_iter().collect();
            out.push(message(
                "IST0116",
                Level::Warning,
                r,
                format!(
                    "This deployment {} is associated with multiple services using port {port} but different protocols: [{}]",
                    r.name,
                    names.join(" ")
                ),
            ));
        }
        for (target, ports) in &targets {
            if ports.len() < 2 {
                continue;
            }
            let mut names: Vec<&str> = ports.values().copied().collect();
            names.sort_unstable();
            let numbers: Vec<String> = ports.keys().map(u32::to_string).collect();
            out.push(message(
                "IST0137",
                Level::Warning,
                r,
                format!(
                    "This deployment {} is associated with multiple services [{}] using targetPort {target:?} but different ports: [{}].",
                    r.name,
                    names.join(" "),
                    numbers.join(" ")
                ),
            ));
        }
    }
}

/// Whether a Deployment's pods get a sidecar.
fn in_mesh(
    resources: &[Resource],
    ns: &str,
    template: &weft_api::types::kube::PodTemplateSpec,
) -> bool {
    let proxy = template
        .spec
        .as_ref()
        .is_some_and(|p| p.containers.iter().any(|c| c.name == "istio-proxy"));
    if proxy {
        return true;
    }
    let meta = &template.metadata;
    let asked = meta
        .labels
        .get("sidecar.istio.io/inject")
        .or_else(|| meta.annotations.get("sidecar.istio.io/inject"));
    if let Some(v) = asked {
        return v == "true";
    }
    resources.iter().any(|r| {
        matches!(r.spec, Spec::Namespace)
            && r.name == ns
            && (r
                .meta
                .labels
                .get("istio-injection")
                .is_some_and(|v| v == "enabled")
                || r.meta.labels.contains_key("istio.io/rev"))
    })
}
