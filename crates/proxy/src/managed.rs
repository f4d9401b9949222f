//! A proxy managed by the control plane: its certificate comes from the
//! certificate service (the first with a bootstrap token, renewals with the
//! current certificate), its configuration from the `weft.mesh.v1` stream.
//! While the control plane is away the proxy keeps what it has and
//! reconnects with backoff and jitter.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use weft_identity::service::{self, ServiceError};
use weft_identity::tls::PeerPolicy;
use weft_identity::{CertInfo, CertStore, SpiffeId, Svid, TrustDomain, WorkloadKey};
use weft_model::ProxyConfig;
use weft_model::sections::Sections;
use weft_protocol::mesh::config_service_client::ConfigServiceClient;
use weft_protocol::mesh::proxy_message::Kind;
use weft_protocol::mesh::{Ack, Nack, ProxyMessage, Report, Subscribe};

/// Gets a certificate from the certificate service of the first replica
/// in `addrs` that answers, and installs it in `store`: with `token` for the
/// first, else with the current one. The identity is the one the service
/// issues (the token's, or the current certificate's), whatever this side
/// asks.
pub async fn fetch_certificate(
    addrs: &[SocketAddr],
    store: &Arc<CertStore>,
    policy: &PeerPolicy,
    token: Option<&str>,
    ttl: Duration,
) -> Result<(), ServiceError> {
    let mut last = ServiceError::Transport("no control plane address".into());
    for addr in addrs {
        match fetch_from(*addr, store, policy, token, ttl).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn fetch_from(
    addr: SocketAddr,
    store: &Arc<CertStore>,
    policy: &PeerPolicy,
    token: Option<&str>,
    ttl: Duration,
) -> Result<(), ServiceError> {
    let key = WorkloadKey::generate().map_err(|e| ServiceError::Answer(e.to_string()))?;
    let asked = match store.current() {
        Some(svid) => svid.id.clone(),
        None => SpiffeId::new(policy.trust_domains.primary().clone(), "default", "default")
            .map_err(|e| ServiceError::Answer(e.to_string()))?,
    };
    let csr = key
        .csr(&asked)
        .map_err(|e| ServiceError::Answer(e.to_string()))?;
    let chain =
        service::request_certificate(addr, store.clone(), policy.clone(), token, &csr, ttl).await?;
    let leaf = chain
        .first()
        .ok_or_else(|| ServiceError::Answer("an empty certificate chain".into()))?;
    let id = CertInfo::parse(leaf)
        .and_then(|info| info.spiffe_id())
        .map_err(ServiceError::Answer)?;
    let svid = Svid::new(id, chain, &key).map_err(|e| ServiceError::Answer(e.to_string()))?;
    store.install(svid);
    Ok(())
}

/// When the current certificate expires, in Unix seconds (0 without one).
pub fn cert_expires(store: &CertStore) -> i64 {
    store
        .current()
        .and_then(|s| s.not_after.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A configuration the control plane pushed, whole; the receiver answers
/// on `reply` whether it applied it, which becomes the ACK or the NACK.
#[derive(Debug)]
pub struct Pushed {
    pub config: ProxyConfig,
    pub version: String,
    pub reply: oneshot::Sender<Result<(), String>>,
}

/// What a proxy subscribes as.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The control plane's replicas; the proxy fails over in turn.
    pub addrs: Vec<SocketAddr>,
    /// Verifies the control plane's certificate.
    pub policy: PeerPolicy,
    /// The proxy's own certificate, presented to the control plane.
    pub store: Arc<CertStore>,
    pub namespace: String,
    /// A WorkloadEntry's name, or a WorkloadGroup's with `address`.
    pub workload: String,
    pub address: Option<String>,
    pub role: String,
}

/// The trust domain a root certificate names in its SPIFFE URI, if any.
pub fn root_trust_domain(root: &rustls_pki_types::CertificateDer<'_>) -> Option<TrustDomain> {
    CertInfo::parse(root).ok()?.spiffe_trust_domain()
}

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A random number in 0..=1.
pub fn random_unit() -> f64 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
}

/// A backoff with jitter: `base` scaled by a random factor in 0.5..1.5.
pub fn jittered(base: Duration) -> Duration {
    base.mul_f64(0.5 + random_unit())
}

/// Keeps the subscription up until `configs` closes: connects, subscribes,
/// hands each push to `configs` as a whole configuration and answers the
/// control plane with what came back. When a replica fails it tries the
/// next at once; after a round of failures it waits (0.5 s doubling to
/// 30 s, with jitter). It reports the version it has, so an unchanged
/// configuration is not sent again.
pub async fn run(sub: Subscription, configs: mpsc::Sender<Pushed>) {
    let mut have = (Sections::default(), String::new());
    let mut backoff = FIRST_BACKOFF;
    let replicas = sub.addrs.len().max(1);
    for attempt in 0usize.. {
        let Some(&addr) = sub.addrs.get(attempt % replicas) else {
            return;
        };
        match session(&sub, addr, &mut have, &configs).await {
            Ok(Ended::Closed) => return,
            Ok(Ended::Stream { pushed }) => {
                tracing::warn!("control plane {addr} ended the configuration stream");
                if pushed {
                    backoff = FIRST_BACKOFF;
                }
            }
            Err(e) => tracing::warn!("control plane {addr}: {e}"),
        }
        if (attempt + 1) % replicas == 0 {
            tokio::time::sleep(jittered(backoff)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        } else {
            tokio::time::sleep(jittered(FIRST_BACKOFF / 5)).await;
        }
    }
}

enum Ended {
    /// The receiver of configurations is gone: the proxy is stopping.
    Closed,
    Stream {
        pushed: bool,
    },
}

async fn session(
    sub: &Subscription,
    addr: SocketAddr,
    have: &mut (Sections, String),
    configs: &mpsc::Sender<Pushed>,
) -> Result<Ended, String> {
    let channel = service::channel(addr, sub.store.clone(), sub.policy.clone())
        .await
        .map_err(|e| e.to_string())?;
    // A mesh's whole configuration can outgrow gRPC's 4 MiB default.
    let mut client = ConfigServiceClient::new(channel).max_decoding_message_size(256 << 20);
    let (up, rx) = mpsc::channel::<ProxyMessage>(4);
    let send = |kind| ProxyMessage { kind: Some(kind) };
    let mut expires = cert_expires(&sub.store);
    let _ = up
        .send(send(Kind::Subscribe(Subscribe {
            namespace: sub.namespace.clone(),
            workload: sub.workload.clone(),
            address: sub.address.clone().unwrap_or_default(),
            role: sub.role.clone(),
            version: have.1.clone(),
            cert_expires: expires,
        })))
        .await;
    let mut pushes = client
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    tracing::info!("subscribed to the control plane at {addr}");
    let mut pushed = false;
    let mut partial: Option<weft_protocol::mesh::ConfigPush> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        let push = tokio::select! {
            push = pushes.message() => push,
            _ = tick.tick() => {
                // A renewed certificate shows in the control plane's status.
                let now = cert_expires(&sub.store);
                if now != expires {
                    expires = now;
                    let _ = up.send(send(Kind::Report(Report { cert_expires: now }))).await;
                }
                continue;
            }
        };
        let part = match push {
            Ok(Some(part)) => part,
            Ok(None) => return Ok(Ended::Stream { pushed }),
            Err(s) => return Err(format!("{:?}: {}", s.code(), s.message())),
        };
        // A large push comes in parts; it is whole with its last.
        let push = match partial.take() {
            Some(mut p) if p.nonce == part.nonce => {
                p.sections.extend(part.sections);
                p.removed = part.removed;
                p.more = part.more;
                p
            }
            _ => part,
        };
        if push.more {
            partial = Some(push);
            continue;
        }
        pushed = true;
        let mut next = if push.full {
            Sections::default()
        } else {
            have.0.clone()
        };
        for s in push.sections {
            next.insert(s.name, s.json);
        }
        for name in &push.removed {
            next.0.remove(name);
        }
        let applied = match next.config() {
            Err(e) => Err(e),
            Ok(_) if next.version() != push.version => Err(format!(
                "the sections add up to version {}, not {}",
                next.version(),
                push.version
            )),
            Ok(config) => {
                let (reply, answer) = oneshot::channel();
                let pushed = Pushed {
                    config,
                    version: push.version.clone(),
                    reply,
                };
                if configs.send(pushed).await.is_err() {
                    return Ok(Ended::Closed);
                }
                answer
                    .await
                    .unwrap_or_else(|_| Err("the proxy is stopping".into()))
            }
        };
        let answer = match applied {
            Ok(()) => {
                *have = (next, push.version.clone());
                Kind::Ack(Ack {
                    version: push.version,
                    nonce: push.nonce,
                })
            }
            Err(error) => {
                tracing::warn!("refusing configuration {}: {error}", push.version);
                Kind::Nack(Nack {
                    version: push.version,
                    nonce: push.nonce,
                    error,
                })
            }
        };
        if up.send(send(answer)).await.is_err() {
            return Ok(Ended::Stream { pushed });
        }
    }
}
