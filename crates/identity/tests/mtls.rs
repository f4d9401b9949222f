//! Mutual TLS over real loopback sockets with certificates that rotate:
//! renewal at half life under a controlled clock, connections opened before
//! a renewal keep working, new handshakes present the new certificate, and a
//! peer from another CA is refused at the handshake.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::{new_ca, td};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weft_identity::tls::{self, PeerPolicy};
use weft_identity::{Ca, CertStore, LocalSigner, Rotator, SpiffeId, TrustBundle, TrustDomains};

fn policy(bundle: &TrustBundle) -> PeerPolicy {
    PeerPolicy {
        bundle: Arc::new(bundle.clone()),
        trust_domains: TrustDomains::from(td("cluster.local")),
        expected: Vec::new(),
    }
}

fn rotator(ca: &Arc<Ca>, id: &str) -> (Arc<CertStore>, Rotator<LocalSigner>) {
    let id: SpiffeId = id.parse().unwrap();
    let store = CertStore::new();
    let signer = LocalSigner {
        ca: ca.clone(),
        id: id.clone(),
    };
    (
        store.clone(),
        Rotator::new(store, signer, id, Duration::from_secs(3600)),
    )
}

/// An echo server that reports each client's verified identity.
async fn serve(
    store: Arc<CertStore>,
    policy: PeerPolicy,
) -> (
    std::net::SocketAddr,
    mpsc::UnboundedReceiver<Option<SpiffeId>>,
) {
    let config = tls::server_config(store, policy, &[b"h2", b"http/1.1"]).unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    let _ = tx.send(None);
                    return;
                };
                let _ = tx.send(tls::peer_identity(tls.get_ref().1));
                let mut buf = [0u8; 64];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn connect(
    addr: std::net::SocketAddr,
    store: Arc<CertStore>,
    policy: PeerPolicy,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let config = tls::client_config(store, policy, &[b"h2"]).unwrap();
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(
            ServerName::try_from("reviews.default.svc.cluster.local").unwrap(),
            tcp,
        )
        .await
}

async fn echo(tls: &mut tokio_rustls::client::TlsStream<TcpStream>, msg: &[u8]) -> Vec<u8> {
    tls.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    tls.read_exact(&mut buf).await.unwrap();
    buf
}

fn server_leaf(tls: &tokio_rustls::client::TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

#[tokio::test]
async fn rotation_at_half_life_keeps_old_connections_and_serves_the_new_certificate() {
    let (_, ca) = new_ca("mtls-rotate");
    let ca = Arc::new(ca);
    let t0 = SystemTime::now();
    let (server_store, mut server_rot) =
        rotator(&ca, "spiffe://cluster.local/ns/default/sa/reviews");
    let (client_store, mut client_rot) =
        rotator(&ca, "spiffe://cluster.local/ns/default/sa/productpage");
    // The server's first certificate was issued 40 minutes ago (controlled
    // clock): a 1 h certificate, still valid, soon due for renewal.
    assert!(server_rot.tick(t0 - Duration::from_secs(40 * 60)).unwrap());
    assert!(client_rot.tick(t0).unwrap());
    let first = server_store.current().unwrap();
    let half = first.not_before + (first.not_after.duration_since(first.not_before).unwrap()) / 2;
    let due = server_rot.renew_at().unwrap();
    assert!(
        due <= half && due >= half - Duration::from_secs(370),
        "renewal {due:?} should be at half life {half:?} less jitter"
    );

    let (addr, mut peers) = serve(server_store.clone(), policy(ca.bundle())).await;
    let mut before = connect(addr, client_store.clone(), policy(ca.bundle()))
        .await
        .unwrap();
    assert_eq!(echo(&mut before, b"hello").await, b"hello");
    assert_eq!(
        peers.recv().await.unwrap().unwrap().to_string(),
        "spiffe://cluster.local/ns/default/sa/productpage"
    );
    assert_eq!(server_leaf(&before), first.chain[0]);
    assert_eq!(before.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        before.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    // Not yet due: nothing happens.
    assert!(!server_rot.tick(due - Duration::from_secs(1)).unwrap());
    assert!(Arc::ptr_eq(&server_store.current().unwrap(), &first));
    // Due: a new key and certificate.
    assert!(server_rot.tick(t0).unwrap());
    let second = server_store.current().unwrap();
    assert_ne!(second.chain[0], first.chain[0]);

    // The connection made before keeps working...
    assert_eq!(echo(&mut before, b"still here").await, b"still here");
    // ...and a new one sees the new certificate.
    let mut after = connect(addr, client_store.clone(), policy(ca.bundle()))
        .await
        .unwrap();
    assert_eq!(echo(&mut after, b"hi").await, b"hi");
    assert_eq!(server_leaf(&after), second.chain[0]);
}

#[tokio::test]
async fn peers_without_a_valid_identity_are_refused_at_the_handshake() {
    let (_, ca) = new_ca("mtls-refuse");
    let (_, other) = new_ca("mtls-refuse-other");
    let ca = Arc::new(ca);
    let other = Arc::new(other);
    let (server_store, mut server_rot) =
        rotator(&ca, "spiffe://cluster.local/ns/default/sa/reviews");
    server_rot.tick(SystemTime::now()).unwrap();
    let (addr, mut peers) = serve(server_store, policy(ca.bundle())).await;

    // A client whose certificate comes from another CA.
    let (stranger, mut stranger_rot) =
        rotator(&other, "spiffe://cluster.local/ns/default/sa/productpage");
    stranger_rot.tick(SystemTime::now()).unwrap();
    let result = async {
        let mut tls = connect(addr, stranger, policy(ca.bundle())).await?;
        tls.write_all(b"x").await?;
        let mut buf = [0u8; 1];
        tls.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(())
    }
    .await;
    assert!(result.is_err(), "a stranger must not get through");
    assert_eq!(
        peers.recv().await.unwrap(),
        None,
        "the server refused the handshake"
    );

    // A client with no certificate at all.
    let result = async {
        let mut tls = connect(addr, CertStore::new(), policy(ca.bundle())).await?;
        tls.write_all(b"x").await?;
        let mut buf = [0u8; 1];
        tls.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(())
    }
    .await;
    assert!(result.is_err());
    assert_eq!(peers.recv().await.unwrap(), None);

    // A client that expects another server identity refuses the server.
    let (client, mut client_rot) = rotator(&ca, "spiffe://cluster.local/ns/default/sa/productpage");
    client_rot.tick(SystemTime::now()).unwrap();
    let mut expecting = policy(ca.bundle());
    expecting.expected = vec![
        "spiffe://cluster.local/ns/default/sa/ratings"
            .parse()
            .unwrap(),
    ];
    let err = connect(addr, client, expecting)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("peer is spiffe://cluster.local/ns/default/sa/reviews, expected spiffe://cluster.local/ns/default/sa/ratings"),
        "{err}"
    );
}

#[tokio::test]
async fn an_expected_identity_matches_across_trust_domain_aliases() {
    let (_, ca) = new_ca("mtls-alias");
    let ca = Arc::new(ca);
    // The server still carries an identity from the mesh's old domain,
    // signed by that domain's CA; both roots are trusted.
    let old_dir = common::temp_dir("mtls-alias-old").join("ca");
    let old = Arc::new(Ca::init(&old_dir, &td("old.td"), SystemTime::now()).unwrap());
    let (server, mut server_rot) = rotator(&old, "spiffe://old.td/ns/default/sa/reviews");
    server_rot.tick(SystemTime::now()).unwrap();
    let roots = [ca.bundle().roots(), old.bundle().roots()].concat();
    let bundle = Arc::new(TrustBundle::new(roots));
    let aliased = |expected: &str| PeerPolicy {
        bundle: bundle.clone(),
        trust_domains: TrustDomains::new(td("cluster.local"), vec![td("old.td")]),
        expected: vec![expected.parse().unwrap()],
    };
    let (addr, _peers) = serve(
        server,
        aliased("spiffe://cluster.local/ns/default/sa/productpage"),
    )
    .await;
    let client = |sa: &str| {
        let (store, mut rot) = rotator(&ca, &format!("spiffe://cluster.local/ns/default/sa/{sa}"));
        rot.tick(SystemTime::now()).unwrap();
        store
    };
    // Expecting reviews in the current domain accepts reviews in the alias.
    assert!(
        connect(
            addr,
            client("productpage"),
            aliased("spiffe://cluster.local/ns/default/sa/reviews")
        )
        .await
        .is_ok()
    );
    // Another service account is still another identity.
    assert!(
        connect(
            addr,
            client("productpage"),
            aliased("spiffe://cluster.local/ns/default/sa/ratings")
        )
        .await
        .is_err()
    );
}
