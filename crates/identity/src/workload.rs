//! The workload side: a key made in memory, a CSR, the current certificate
//! kept where TLS handshakes find it, and renewal at half life.
//!
//! [`CertStore`] swaps the certificate atomically. A handshake reads it once,
//! so connections made before a renewal keep their certificate and every new
//! handshake presents the new one.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use rcgen::{CertificateParams, KeyPair, SanType};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::cert::CertInfo;
use crate::spiffe::SpiffeId;

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("key: {0}")]
    Key(String),
    #[error("signer: {0}")]
    Signer(String),
    #[error("issued certificate: {0}")]
    Issued(String),
}

/// A private key generated in memory (ECDSA P-256); it is written nowhere
/// unless the caller asks for its PEM.
pub struct WorkloadKey {
    key: KeyPair,
}

impl std::fmt::Debug for WorkloadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkloadKey(ECDSA P-256, redacted)")
    }
}

impl WorkloadKey {
    pub fn generate() -> Result<WorkloadKey, WorkloadError> {
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map(|key| WorkloadKey { key })
            .map_err(|e| WorkloadError::Key(e.to_string()))
    }

    /// A PKCS#10 request carrying `id` (the CA decides the identity anyway).
    pub fn csr(&self, id: &SpiffeId) -> Result<Vec<u8>, WorkloadError> {
        let uri = rcgen::string::Ia5String::try_from(id.to_string())
            .map_err(|e| WorkloadError::Key(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri)];
        let csr = params
            .serialize_request(&self.key)
            .map_err(|e| WorkloadError::Key(e.to_string()))?;
        Ok(csr.der().to_vec())
    }

    pub fn public_key(&self) -> &KeyPair {
        &self.key
    }

    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    /// PEM, for callers that must write the key (`weft ca issue`).
    pub fn private_key_pem(&self) -> String {
        self.key.serialize_pem()
    }
}

/// A workload certificate with its key and what rotation needs to know.
#[derive(Debug)]
pub struct Svid {
    pub id: SpiffeId,
    pub chain: Vec<CertificateDer<'static>>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    certified: Arc<CertifiedKey>,
}

impl Svid {
    /// Checks that `chain` was issued for `id` and `key`, and prepares it
    /// for TLS.
    pub fn new(
        id: SpiffeId,
        chain: Vec<CertificateDer<'static>>,
        key: &WorkloadKey,
    ) -> Result<Svid, WorkloadError> {
        let leaf = chain
            .first()
            .ok_or_else(|| WorkloadError::Issued("empty chain".into()))?;
        let info = CertInfo::parse(leaf).map_err(WorkloadError::Issued)?;
        let got = info.spiffe_id().map_err(WorkloadError::Issued)?;
        if got != id {
            return Err(WorkloadError::Issued(format!(
                "issued for {got}, expected {id}"
            )));
        }
        if info.spki != rcgen::PublicKeyData::subject_public_key_info(&key.key) {
            return Err(WorkloadError::Issued(
                "the certificate is not for this key".into(),
            ));
        }
        let signing = rustls::crypto::ring::sign::any_supported_type(&key.private_key_der())
            .map_err(|e| WorkloadError::Key(e.to_string()))?;
        Ok(Svid {
            id,
            certified: Arc::new(CertifiedKey::new(chain.clone(), signing)),
            chain,
            not_before: info.not_before,
            not_after: info.not_after,
        })
    }

    /// When to renew: at half life, less up to a tenth of the lifetime of
    /// jitter (`jitter` in 0..1) so that a fleet does not renew at once.
    pub fn renew_at(&self, jitter: f64) -> SystemTime {
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        let early = life.mul_f64(jitter.clamp(0.0, 1.0) / 10.0);
        self.not_before + life / 2 - early
    }
}

/// The current certificate of a workload, read by every handshake.
#[derive(Debug, Default)]
pub struct CertStore {
    current: ArcSwapOption<Svid>,
}

impl CertStore {
    pub fn new() -> Arc<CertStore> {
        Arc::new(CertStore::default())
    }

    pub fn install(&self, svid: Svid) {
        self.current.store(Some(Arc::new(svid)));
    }

    pub fn current(&self) -> Option<Arc<Svid>> {
        self.current.load_full()
    }

    fn certified(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().map(|s| s.certified.clone())
    }
}

impl rustls::server::ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.certified()
    }
}

impl rustls::client::ResolvesClientCert for CertStore {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.certified()
    }

    fn has_certs(&self) -> bool {
        self.current.load().is_some()
    }
}

/// Something that turns a CSR into a chain for the workload it serves: the
/// local CA, or the control plane's certificate service.
pub trait Signer {
    fn sign(
        &self,
        csr: &[u8],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Vec<CertificateDer<'static>>, WorkloadError>;
}

/// Signs with a CA in this process for one fixed identity.
#[derive(Debug)]
pub struct LocalSigner {
    pub ca: Arc<crate::ca::Ca>,
    pub id: SpiffeId,
}

impl Signer for LocalSigner {
    fn sign(
        &self,
        csr: &[u8],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Vec<CertificateDer<'static>>, WorkloadError> {
        self.ca
            .sign_csr(csr, &self.id, Some(ttl), now)
            .map_err(|e| WorkloadError::Signer(e.to_string()))
    }
}

/// Keeps a [`CertStore`] filled: a fresh key and certificate at start and
/// at every renewal time. Time comes from the caller, so tests control it.
#[derive(Debug)]
pub struct Rotator<S> {
    store: Arc<CertStore>,
    signer: S,
    id: SpiffeId,
    ttl: Duration,
    renew_at: Option<SystemTime>,
}

impl<S: Signer> Rotator<S> {
    pub fn new(store: Arc<CertStore>, signer: S, id: SpiffeId, ttl: Duration) -> Rotator<S> {
        Rotator {
            store,
            signer,
            id,
            ttl,
            renew_at: None,
        }
    }

    /// When the next renewal is due (`None` before the first certificate).
    pub fn renew_at(&self) -> Option<SystemTime> {
        self.renew_at
    }

    /// Gets a certificate if there is none or the current one is due;
    /// returns whether it did.
    pub fn tick(&mut self, now: SystemTime) -> Result<bool, WorkloadError> {
        if self.renew_at.is_some_and(|at| now < at) {
            return Ok(false);
        }
        self.renew(now)?;
        Ok(true)
    }

    /// A new key and certificate now, whatever the schedule.
    pub fn renew(&mut self, now: SystemTime) -> Result<(), WorkloadError> {
        let key = WorkloadKey::generate()?;
        let csr = key.csr(&self.id)?;
        let chain = self.signer.sign(&csr, self.ttl, now)?;
        let svid = Svid::new(self.id.clone(), chain, &key)?;
        self.renew_at = Some(svid.renew_at(random_unit()));
        self.store.install(svid);
        Ok(())
    }
}

/// A random number in 0..1.
fn random_unit() -> f64 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}
