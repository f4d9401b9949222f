//! The data plane. A sidecar proxy listens on its workload's own address:
//! outbound 15001 (the application's HTTP proxy), inbound HBONE 15008 (mTLS
//! from other proxies), plaintext inbound 15006 (where PeerAuthentication
//! allows it), health 15021, admin 15000, metrics 15090. Configuration is a compiled
//! [`weft_model::ProxyConfig`] swapped in as one snapshot; the request path
//! never waits for the control plane.

pub mod authorize;
pub mod balance;
pub mod capture;
pub mod cors;
pub mod dns;
pub mod ext_authz;
pub mod framing;
pub mod gateway;
pub mod hbone;
pub mod http;
pub mod inbound;
pub mod jwt;
pub mod logging;
pub mod managed;
pub mod metrics;
pub mod origination;
pub mod outbound;
pub mod ratelimit;
pub mod sidecar;
pub mod sni;
pub mod telemetry;
pub mod trace;
pub mod upgrade;
pub mod upstream;

pub use sidecar::{Options, Ports, Role, Sidecar};

/// A map looked up on every request, by keys that come from configuration
/// and resolved addresses, not from requests: hashed with foldhash, several
/// times cheaper than std's SipHash for a short string or an address.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
