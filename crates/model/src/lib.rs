//! The mesh model: a registry of services and workloads, and the pure
//! compile of Istio resources into one proxy's configuration (routes,
//! clusters, endpoints). No I/O and no clock: the proxy swaps in what this
//! returns, and most routing behaviour is tested here in microseconds.

pub mod authz;
pub mod compile;
pub mod config;
pub mod delegate;
pub mod gateway;
pub mod gateway_api;
pub mod jwt;
pub mod normalize;
pub mod peer_auth;
pub mod policy;
pub mod protocol;
pub mod rate_limit;
pub mod registry;
pub mod scope;
pub mod sections;
mod wire;

pub use compile::{
    CompileError, Mesh, TrafficKey, TrafficSelectors, compile, compile_own, traffic_key,
};
pub use config::ProxyConfig;
pub use protocol::Protocol;
pub use registry::Registry;

#[cfg(test)]
mod tests;
