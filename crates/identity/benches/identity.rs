//! Certificates signed per second and mTLS handshakes per second, each
//! against a baseline in the same run:
//! - signing: a bare ECDSA P-256 signature with ring, the floor of any
//!   certificate signing;
//! - handshakes: the same TLS 1.3 mutual handshake with certificate
//!   verification switched off, so the ratio is what verifying the chain
//!   and the SPIFFE identity costs.
//!
//! Handshakes run in memory (no sockets), one thread.
//! Run: `cargo bench -p weft-identity --bench identity`.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, ServerConfig, ServerConnection,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use weft_identity::tls::{self, PeerPolicy};
use weft_identity::{
    Ca, CertStore, LocalSigner, Rotator, SpiffeId, TrustDomain, TrustDomains, WorkloadKey,
};

/// Operations per second of a baseline and a measured operation: rounds of
/// `n` alternate between the two (so both see the same machine), and the
/// best round of each counts; the first round warms up.
fn rates(n: u32, mut baseline: impl FnMut(), mut measured: impl FnMut()) -> (f64, f64) {
    let round = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        f64::from(n) / start.elapsed().as_secs_f64()
    };
    let (mut b, mut m) = (0.0f64, 0.0f64);
    for i in 0..8 {
        let (rb, rm) = (round(&mut baseline), round(&mut measured));
        if i > 0 {
            b = b.max(rb);
            m = m.max(rm);
        }
    }
    (b, m)
}

fn handshake(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) {
    let mut c =
        ClientConnection::new(client.clone(), ServerName::try_from("reviews").unwrap()).unwrap();
    let mut s = ServerConnection::new(server.clone()).unwrap();
    let mut buf = Vec::with_capacity(8192);
    while c.is_handshaking() || s.is_handshaking() {
        buf.clear();
        c.write_tls(&mut buf).unwrap();
        s.read_tls(&mut &buf[..]).unwrap();
        s.process_new_packets().unwrap();
        buf.clear();
        s.write_tls(&mut buf).unwrap();
        c.read_tls(&mut &buf[..]).unwrap();
        c.process_new_packets().unwrap();
    }
}

#[derive(Debug)]
struct NoVerify(rustls::crypto::WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

impl ClientCertVerifier for NoVerify {
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

fn main() {
    let dir = std::env::temp_dir().join(format!("weft-bench-id-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let td = TrustDomain::new("cluster.local").unwrap();
    let ca = Arc::new(Ca::init(&dir, &td, SystemTime::now()).unwrap());
    let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/reviews"
        .parse()
        .unwrap();

    // Signing.
    let key = WorkloadKey::generate().unwrap();
    let csr = key.csr(&id).unwrap();
    let now = SystemTime::now();
    let raw_key = rcgen::KeyPair::generate().unwrap();
    let message = [7u8; 300];
    let n = 500;
    let (baseline, signed) = rates(
        n,
        || {
            rcgen::SigningKey::sign(&raw_key, &message).unwrap();
        },
        || {
            ca.sign_csr(&csr, &id, None, now).unwrap();
        },
    );
    println!("signing (best of 7 alternating rounds of {n}, one thread)");
    println!("  baseline: ECDSA P-256 signature      {baseline:>9.0}/s   1.00x");
    println!(
        "  CSR -> signed certificate chain      {signed:>9.0}/s   {:.2}x",
        signed / baseline
    );

    // Handshakes.
    let store = |sa: &str| {
        let id: SpiffeId = format!("spiffe://cluster.local/ns/default/sa/{sa}")
            .parse()
            .unwrap();
        let s = CertStore::new();
        Rotator::new(
            s.clone(),
            LocalSigner {
                ca: ca.clone(),
                id: id.clone(),
            },
            id,
            Duration::from_secs(3600),
        )
        .tick(SystemTime::now())
        .unwrap();
        s
    };
    let (server_store, client_store) = (store("reviews"), store("productpage"));
    let policy = PeerPolicy {
        bundle: Arc::new(ca.bundle().clone()),
        trust_domains: TrustDomains::from(td),
        expected: Vec::new(),
    };
    let server =
        Arc::new(tls::server_config(server_store.clone(), policy.clone(), &[b"h2"]).unwrap());
    let client = Arc::new(tls::client_config(client_store.clone(), policy, &[b"h2"]).unwrap());
    let provider = tls::provider();
    let algs = provider.signature_verification_algorithms;
    let plain_server = Arc::new(
        ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(Arc::new(NoVerify(algs)))
            .with_cert_resolver(server_store),
    );
    let plain_client = Arc::new(
        ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(algs)))
            .with_client_cert_resolver(client_store),
    );
    let n = 300;
    let (baseline, spiffe) = rates(
        n,
        || handshake(&plain_client, &plain_server),
        || handshake(&client, &server),
    );
    println!(
        "mutual TLS 1.3 handshakes (best of 7 alternating rounds of {n}, one thread, both sides)"
    );
    println!("  baseline: no certificate verification {baseline:>8.0}/s   1.00x");
    println!(
        "  SPIFFE chain + identity verification  {spiffe:>8.0}/s   {:.2}x",
        spiffe / baseline
    );
    let _ = std::fs::remove_dir_all(&dir);
}
