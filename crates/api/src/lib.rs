//! Istio's configuration API as weft reads it.
//!
//! This crate owns the boundary where YAML becomes typed resources: the YAML
//! tree with positions ([`yaml`]), serde over it ([`de`]), the resource
//! types ([`types`]), loading of files, folders and streams ([`load`]) and
//! Istio's validation rules ([`validate`]). Everything here is pure apart
//! from reading the input files; nothing depends on a clock or a network.

pub mod de;
pub mod diagnostic;
pub mod load;
mod par;
pub mod path;
pub mod resource;
pub mod types;
pub mod validate;
pub mod yaml;

pub use diagnostic::{Diagnostic, Level};
pub use load::{Loaded, load_mesh_config};
pub use resource::{KindInfo, Resource, Spec};
pub use validate::validate;
