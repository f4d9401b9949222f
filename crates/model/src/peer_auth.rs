//! PeerAuthentication: which connections a workload's port accepts. Istio's
//! precedence: a policy selecting the workload (in its namespace) over the
//! namespace's policy without a selector over the mesh-wide policy in the
//! root namespace; `UNSET` inherits from the next scope out; port-level
//! settings (only on selector policies) override the workload's mode for
//! that port. With no policy at all weft is STRICT, where Istio is
//! PERMISSIVE: weft's documented, safer default.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weft_api::types::security::{MtlsMode, PeerAuthentication};
use weft_api::{Resource, Spec};

use crate::registry::selects;

/// What a port accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mtls {
    /// Mesh mTLS (HBONE) only.
    Strict,
    /// mTLS or plaintext.
    Permissive,
    /// Plaintext is accepted; weft still accepts HBONE, whose bytes it
    /// terminates itself rather than passing TLS through to the app.
    Disable,
}

impl Mtls {
    /// Whether a plaintext connection may reach the port.
    pub fn allows_plaintext(self) -> bool {
        self != Mtls::Strict
    }
}

/// The policies that apply to one workload, innermost first.
#[derive(Debug, Default)]
pub struct PeerPolicies<'a> {
    workload: Option<&'a PeerAuthentication>,
    namespace: Option<&'a PeerAuthentication>,
    mesh: Option<&'a PeerAuthentication>,
}

impl<'a> PeerPolicies<'a> {
    /// Picks the policies for a workload in `namespace` with `labels`. When
    /// several policies share a scope, the first in load order wins (Istio
    /// takes the oldest; files load in sorted order).
    pub fn of(
        resources: &'a [Resource],
        root_namespace: &str,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> PeerPolicies<'a> {
        let mut found = PeerPolicies::default();
        for r in resources {
            let Spec::PeerAuthentication(pa) = &r.spec else {
                continue;
            };
            let slot = match &pa.selector {
                Some(sel) if r.namespace() == namespace => {
                    if !selects(&sel.match_labels, labels) {
                        continue;
                    }
                    &mut found.workload
                }
                Some(_) => continue,
                None if r.namespace() == namespace => &mut found.namespace,
                None if r.namespace() == root_namespace => &mut found.mesh,
                None => continue,
            };
            slot.get_or_insert(pa);
        }
        found
    }

    /// The mode of the workload's `port`.
    pub fn mode(&self, port: u32) -> Mtls {
        let set = |m: Option<&weft_api::types::security::MutualTls>| match m.and_then(|m| m.mode) {
            None | Some(MtlsMode::Unset) => None,
            Some(MtlsMode::Strict) => Some(Mtls::Strict),
            Some(MtlsMode::Permissive) => Some(Mtls::Permissive),
            Some(MtlsMode::Disable) => Some(Mtls::Disable),
        };
        let port_level = self
            .workload
            .and_then(|pa| set(pa.port_level_mtls.get(&port.to_string())));
        port_level
            .or_else(|| self.workload.and_then(|pa| set(pa.mtls.as_ref())))
            .or_else(|| self.namespace.and_then(|pa| set(pa.mtls.as_ref())))
            .or_else(|| self.mesh.and_then(|pa| set(pa.mtls.as_ref())))
            .unwrap_or(Mtls::Strict)
    }
}
