//! Telemetry resources as Istio's analyzers see them: IST0157, an access
//! log without providers when MeshConfig names no default one (it logs
//! nothing); IST0160, several namespace-wide Telemetries in one namespace.

use std::collections::BTreeMap;

use weft_api::types::mesh::MeshConfig;
use weft_api::{Resource, Spec};

use crate::{Level, Message, message};

pub(crate) fn analyze(resources: &[Resource], mesh: Option<&MeshConfig>, out: &mut Vec<Message>) {
    let default_logs = mesh
        .and_then(|m| m.default_providers.as_ref())
        .is_some_and(|d| !d.access_logging.is_empty());
    let mut namespace_wide: BTreeMap<&str, Vec<&Resource>> = BTreeMap::new();
    for r in resources {
        let Spec::Telemetry(t) = &r.spec else {
            continue;
        };
        if !default_logs {
            for _ in t.access_logging.iter().filter(|l| l.providers.is_empty()) {
                out.push(message(
                    "IST0157",
                    Level::Warning,
                    r,
                    format!(
                        "The Telemetry {} in namespace {:?} with empty providers will be ignored.",
                        r.name,
                        r.namespace()
                    ),
                ));
            }
        }
        if t.selector.is_none() && t.target_ref.is_none() && t.target_refs.is_empty() {
            namespace_wide.entry(r.namespace()).or_default().push(r);
        }
    }
    for (ns, all) in namespace_wide.into_iter().filter(|(_, v)| v.len() > 1) {
        // Istio names them without their (shared) namespace.
        let names: Vec<&str> = all.iter().map(|r| r.name.as_str()).collect();
        for r in &all {
            out.push(message(
                "IST0160",
                Level::Error,
                r,
                format!(
                    "The Telemetries [{}] in namespace {ns:?} have no workload selector, which can lead to undefined behavior.",
                    names.join(" ")
                ),
            ));
        }
    }
}
