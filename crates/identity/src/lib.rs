//! Workload identity for weft: SPIFFE IDs, the mesh CA (self-signed or
//! plugged in, in Istio's file layout), workload keys and certificates with
//! rotation at half life, bootstrap tokens, and the rustls configurations
//! that make every hop mutual TLS with a verified SPIFFE identity.
//!
//! Everything here takes the time as an argument where it matters, so that
//! rotation and expiry are tested with controlled clocks.

pub mod bundle;
pub mod ca;
pub mod cert;
pub mod pem;
pub mod service;
pub mod spiffe;
pub mod tls;
pub mod token;
pub mod workload;

pub use bundle::{TrustBundle, Usage, VerifyError};
pub use ca::Ca;
pub use cert::CertInfo;
pub use spiffe::{SpiffeId, TrustDomain, TrustDomains};
pub use workload::{CertStore, LocalSigner, Rotator, Signer, Svid, WorkloadKey};
