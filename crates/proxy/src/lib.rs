//! The data plane. A sidecar proxy listens on its workload's own address:
//! outbound 15001 (the application's HTTP proxy), inbound HBONE 15008 (mTLS
//! from other proxies), health 15021. Configuration is a compiled
//! [`weft_model::ProxyConfig`] swapped in as one snapshot; the request path
//! never waits for the control plane.

pub mod balance;
pub mod hbone;
pub mod http;
pub mod metrics;
pub mod outbound;
pub mod sidecar;
pub mod telemetry;
pub mod trace;
pub mod upstream;

pub use sidecar::{Ports, Sidecar};
