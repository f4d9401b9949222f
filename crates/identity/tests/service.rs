//! The certificate service over real gRPC and TLS on loopback: a workload
//! bootstraps with a token, renews with its mesh certificate, and is refused
//! without valid credentials. The identity always comes from the caller.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{new_ca, td};
use weft_identity::service::{self, CertService, ServiceError};
use weft_identity::tls::PeerPolicy;
use weft_identity::{
    CertInfo, CertStore, LocalSigner, Rotator, SpiffeId, Svid, TrustDomains, WorkloadKey, token,
};

fn policy(ca: &weft_identity::Ca) -> PeerPolicy {
    PeerPolicy {
        bundle: Arc::new(ca.bundle().clone()),
        trust_domains: TrustDomains::from(td("cluster.local")),
        expected: Vec::new(),
    }
}

#[tokio::test]
async fn bootstrap_with_a_token_then_renew_with_the_mesh_certificate() {
    let (_, ca) = new_ca("svc");
    let (_, other) = new_ca("svc-other");
    let ca = Arc::new(ca);
    // The service's own certificate.
    let server_id: SpiffeId = "spiffe://cluster.local/ns/weft-system/sa/control-plane"
        .parse()
        .unwrap();
    let server_store = CertStore::new();
    let mut rot = Rotator::new(
        server_store.clone(),
        LocalSigner {
            ca: ca.clone(),
            id: server_id.clone(),
        },
        server_id,
        Duration::from_secs(3600),
    );
    rot.tick(SystemTime::now()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(service::serve(
        listener,
        CertService::new(ca.clone()),
        server_store,
        policy(&ca),
        async {
            let _ = stopped.await;
        },
    ));

    // A new workload: no certificate, a token for default/reviews, and a
    // CSR that claims to be istiod. The token decides.
    let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/reviews"
        .parse()
        .unwrap();
    let tok = token::issue(&ca, &id, Duration::from_secs(600), SystemTime::now()).unwrap();
    let key = WorkloadKey::generate().unwrap();
    let csr = key
        .csr(
            &"spiffe://cluster.local/ns/istio-system/sa/istiod"
                .parse()
                .unwrap(),
        )
        .unwrap();
    let store = CertStore::new();
    let chain = service::request_certificate(
        addr,
        store.clone(),
        policy(&ca),
        Some(&tok),
        &csr,
        Duration::from_secs(7200),
    )
    .await
    .unwrap();
    let leaf = CertInfo::parse(&chain[0]).unwrap();
    assert_eq!(leaf.spiffe_id().unwrap(), id);
    let life = leaf.lifetime();
    assert!(
        life >= Duration::from_secs(7200) && life <= Duration::from_secs(7200 + 61),
        "{life:?}"
    );
    store.install(Svid::new(id.clone(), chain, &key).unwrap());

    // Renewal: no token, the mesh certificate authenticates.
    let key2 = WorkloadKey::generate().unwrap();
    let chain2 = service::request_certificate(
        addr,
        store.clone(),
        policy(&ca),
        None,
        &key2.csr(&id).unwrap(),
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    assert_eq!(
        CertInfo::parse(&chain2[0]).unwrap().spiffe_id().unwrap(),
        id
    );

    // No credentials.
    let err = service::request_certificate(
        addr,
        CertStore::new(),
        policy(&ca),
        None,
        &csr,
        Duration::from_secs(60),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, ServiceError::Refused(m) if m.contains("Unauthenticated") && m.contains("no credentials")),
        "{err}"
    );

    // A token signed by another CA, and an expired one.
    let foreign = token::issue(&other, &id, Duration::from_secs(600), SystemTime::now()).unwrap();
    let err = service::request_certificate(
        addr,
        CertStore::new(),
        policy(&ca),
        Some(&foreign),
        &csr,
        Duration::from_secs(60),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("bootstrap token refused: token signature does not verify against the CA"),
        "{err}"
    );
    let expired = token::issue(
        &ca,
        &id,
        Duration::from_secs(10),
        SystemTime::now() - Duration::from_secs(3600),
    )
    .unwrap();
    let err = service::request_certificate(
        addr,
        CertStore::new(),
        policy(&ca),
        Some(&expired),
        &csr,
        Duration::from_secs(60),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("bootstrap token refused: token expired"),
        "{err}"
    );

    // A garbage CSR is an invalid argument.
    let err = service::request_certificate(
        addr,
        CertStore::new(),
        policy(&ca),
        Some(&tok),
        b"junk",
        Duration::from_secs(60),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("InvalidArgument"), "{err}");

    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
