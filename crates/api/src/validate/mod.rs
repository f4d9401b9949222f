//! Istio's validation rules.
use crate::types::mesh::MeshConfig;
use crate::{Diagnostic, Resource};
pub fn validate(_r: &[Resource], _m: Option<&MeshConfig>) -> Vec<Diagnostic> {
    Vec::new()
}
