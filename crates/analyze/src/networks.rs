//! IST0126 (UnknownMeshNetworksServiceRegistry): a network of the mesh's
//! `meshNetworks` (the `meshNetworks` key of the `istio` ConfigMap) whose
//! endpoints come `fromRegistry` a registry the inputs do not know. Known
//! registries are Istio's own (`Kubernetes`, `External`, `Mock`) and the
//! clusters of remote secrets (Secrets labelled `istio/multiCluster:
//! "true"`, one cluster per data key).

use std::collections::BTreeSet;

use weft_api::yaml::{Node, Value};
use weft_api::{Resource, Spec};

use crate::{Level, Message, documentation, message};

pub(crate) fn analyze(resources: &[Resource], out: &mut Vec<Message>) {
    let mut registries: BTreeSet<&str> = ["Kubernetes", "External", "Mock"].into();
    for r in resources {
        if let Spec::Secret(s) = &r.spec {
            if r.meta.labels.get("istio/multiCluster").map(String::as_str) == Some("true") {
                registries.extend(
                    s.data
                        .keys()
                        .chain(s.string_data.keys())
                        .map(String::as_str),
                );
            }
        }
    }
    for r in resources {
        let Spec::ConfigMap(cm) = &r.spec else {
            continue;
        };
        let Some(text) = cm.data.get("meshNetworks").filter(|_| r.name == "istio") else {
            continue;
        };
        let docs = match weft_api::yaml::parse_stream(text) {
            Ok(docs) => docs,
            Err(e) => {
                out.push(message(
                    "IST0106",
                    Level::Error,
                    r,
                    format!(
                        "Schema validation error: data.meshNetworks: line {}: {}",
                        e.pos.line, e.message
                    ),
                ));
                continue;
            }
        };
        let networks = docs
            .iter()
            .filter_map(|d| d.root.as_ref()?.get("networks"))
            .flat_map(entries);
        for (network, spec) in networks {
            let endpoints = spec.get("endpoints").map(Node::items).unwrap_or_default();
            for registry in endpoints
                .iter()
                .filter_map(|e| e.get("fromRegistry")?.as_str())
                .filter(|registry| !registries.contains(registry))
            {
                out.push(Message {
                    code: "IST0126",
                    level: Level::Error,
                    message: format!("Unknown service registry {registry} in network {network}"),
                    origin: format!("MeshNetworks {}/meshnetworks", r.namespace()),
                    source: format!("{}:{}", r.source.file, r.source.pos.line),
                    documentation_url: documentation("IST0126"),
                });
            }
        }
    }
}

/// A map's entries, keys as text.
fn entries(node: &Node) -> Vec<(&str, &Node)> {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .filter_map(|(k, v)| Some((k.as_str()?, v)))
            .collect(),
        _ => Vec::new(),
    }
}
