//! The control plane proper: the configuration in force, the proxies
//! subscribed to it, and the push loop of each.
//!
//! One [`Served`] snapshot (the folder's last good set plus the workloads
//! registered by live proxies) is published through a watch channel. Each
//! proxy's stream has its own task: when the snapshot changes it compiles
//! that proxy's configuration, diffs it by section against what the proxy
//! acknowledged, and sends only what changed. One push is in flight per
//! proxy at a time; changes that arrive meanwhile fold into the next push,
//! so a burst of edits costs each proxy one compile after its ack.

// The control plane is not the request path: its short locks guard the
// proxy table and the registrations, never held across an await.
#![allow(clippy::disallowed_types)]

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use weft_api::{Loaded, Resource, Spec};
use weft_identity::SpiffeId;
use weft_identity::service::PeerInfo;
use weft_model::sections::{Layered, Sections};
use weft_model::{CompileError, Mesh, Registry, TrafficKey, TrafficSelectors, compile};
use weft_protocol::mesh::config_service_server::ConfigService;
use weft_protocol::mesh::proxy_message::Kind;
use weft_protocol::mesh::{
    ConfigDumpRequest, ConfigDumpResponse, ConfigPush, ProxyMessage, ProxyStatus, Section,
    StatusRequest, StatusResponse, Subscribe,
};

use crate::metrics::{CONFIG, Metrics};
use crate::source::{ConfigSet, Folder, FolderState};

/// The configuration being served to every proxy.
#[derive(Debug)]
pub struct Served {
    /// Names the folder's content plus the registered workloads.
    pub version: String,
    /// The folder's resources, shared while no registration adds any.
    pub resources: Arc<Vec<Resource>>,
    pub registry: Registry,
    pub mesh: Mesh,
    pub commit: Option<String>,
    /// When this snapshot was made, for convergence times.
    pub since: Instant,
    /// What the traffic keys of workloads are made of.
    selectors: TrafficSelectors,
    /// The PeerAuthentications, AuthorizationPolicies,
    /// RequestAuthentications, RateLimits and EnvoyFilters: all that a
    /// proxy's own part reads.
    policies: Vec<Resource>,
    /// Traffic parts compiled for this snapshot, by traffic key, with
    /// their part hash.
    traffic: Mutex<HashMap<TrafficKey, Arc<TrafficCell>>>,
    /// The previous snapshot's, each taken when this one compiles its key.
    previous: Mutex<HashMap<TrafficKey, Arc<Sections>>>,
    /// Clusters serialized for this snapshot, and for the previous one:
    /// an equal cluster is serialized once, whatever its traffic keys.
    clusters: Mutex<ClusterCache>,
    previous_clusters: Mutex<ClusterCache>,
}

type ClusterCache = HashMap<String, (weft_model::config::Cluster, weft_model::sections::Section)>;

type TrafficCell = tokio::sync::OnceCell<(Arc<Sections>, u64)>;

/// What the control plane knows of one connected proxy.
#[derive(Debug, Clone)]
struct Proxy {
    namespace: String,
    /// The WorkloadEntry its configuration is compiled for.
    workload: String,
    identity: String,
    address: String,
    role: String,
    /// The WorkloadGroup it registered from, for this stream's lifetime.
    group: Option<String>,
    sent: Option<String>,
    acked: Option<String>,
    /// A push is waiting for its ack or nack.
    pending: bool,
    /// The last nack's error, or why its configuration cannot be compiled.
    error: Option<String>,
    nacked: bool,
    cert_expires: i64,
    since: SystemTime,
    /// The configuration last sent.
    last: Layered,
}

impl Proxy {
    fn state(&self) -> &'static str {
        if self.nacked {
            "NACKED"
        } else if self.pending || self.error.is_some() || self.acked.is_none() {
            "STALE"
        } else {
            "SYNCED"
        }
    }
}

/// A WorkloadGroup instance's entry. Other proxies see it once its proxy
/// has acknowledged its first configuration (its listeners are up), as
/// Istio waits for readiness.
#[derive(Debug)]
struct Registration {
    resources: Vec<Resource>,
    ready: bool,
    /// Registered with a peer replica, learned from its status.
    remote: bool,
}

#[derive(Debug)]
pub struct ControlPlane {
    folder: Folder,
    trust_domain: String,
    /// The folder's last good load, and the state it was loaded from.
    base: Mutex<(ConfigSet, FolderState)>,
    /// WorkloadEntries registered by live proxies, by namespace and name.
    registered: Mutex<BTreeMap<(String, String), Registration>>,
    served: watch::Sender<Arc<Served>>,
    proxies: Mutex<BTreeMap<u64, Proxy>>,
    next_proxy: AtomicU64,
    /// Why the latest change was refused.
    refused: Mutex<Option<String>>,
    /// The folder's state last loaded or refused.
    seen: Mutex<FolderState>,
    /// Bounds the traffic compiles running at once.
    compiling: tokio::sync::Semaphore,
    pub metrics: Metrics,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl ControlPlane {
    /// Loads the folder; a set that does not validate is an error here,
    /// since there is no last good one yet.
    pub fn new(folder: Folder, trust_domain: &str) -> Result<Arc<ControlPlane>, String> {
        let state = folder.state();
        let base = (folder.load(trust_domain)?, state.clone());
        let served = Arc::new(Served::of(&base, &BTreeMap::new()));
        Ok(Arc::new(ControlPlane {
            folder,
            trust_domain: trust_domain.to_string(),
            base: Mutex::new(base),
            registered: Mutex::new(BTreeMap::new()),
            served: watch::Sender::new(served),
            proxies: Mutex::new(BTreeMap::new()),
            next_proxy: AtomicU64::new(0),
            refused: Mutex::new(None),
            seen: Mutex::new(state),
            compiling: tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
            ),
            metrics: Metrics::new(),
        }))
    }

    pub fn folder(&self) -> &Folder {
        &self.folder
    }

    /// The snapshot being served.
    pub fn served(&self) -> Arc<Served> {
        self.served.borrow().clone()
    }

    /// Reads the folder again. A set that validates replaces the served
    /// one (`Ok(true)` when it changed anything); one that does not is
    /// refused whole, and the last good set stays.
    pub fn reload(&self) -> Result<bool, String> {
        // One answer per content: editors and `git checkout` write in
        // bursts, and a refused set is reported once, not per event.
        let state = self.folder.state();
        if *lock(&self.seen) == state {
            return Ok(false);
        }
        *lock(&self.seen) = state.clone();
        match self.folder.load(&self.trust_domain) {
            Ok(set) => {
                *lock(&self.refused) = None;
                {
                    let mut base = lock(&self.base);
                    // Back to what is served, after a refused change.
                    if base.1 == state {
                        return Ok(false);
                    }
                    *base = (set, state);
                }
                self.metrics.reloads.inc();
                self.publish();
                Ok(true)
            }
            Err(e) => {
                self.metrics.validation_failures.inc();
                *lock(&self.refused) = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Makes and publishes a new snapshot from the base set and the
    /// registered workloads.
    fn publish(&self) {
        let served = {
            let base = lock(&self.base);
            let registered = lock(&self.registered);
            Served::of(&base, &registered)
        };
        let old = self.served();
        *lock(&served.previous_clusters) = std::mem::take(&mut *lock(&old.clusters));
        *lock(&served.previous) = std::mem::take(&mut *lock(&old.traffic))
            .into_iter()
            .filter_map(|(key, cell)| Some((key, cell.get()?.0.clone())))
            .collect();
        self.served.send_replace(Arc::new(served));
    }

    /// Who may subscribe as what: the proxy's certificate must name the
    /// workload's namespace and service account. A WorkloadGroup's
    /// instance is registered as a WorkloadEntry of its own.
    fn admit(&self, id: &SpiffeId, sub: &Subscribe) -> Result<Proxy, Status> {
        let served = self.served();
        let (ns, name) = (sub.namespace.as_str(), sub.workload.as_str());
        let check = |sa: &str| {
            if id.namespace() == ns && id.service_account() == sa {
                Ok(())
            } else {
                Err(Status::permission_denied(format!(
                    "{id} may not subscribe as {ns}/{name}, whose identity is namespace {ns}, service account {sa}"
                )))
            }
        };
        let proxy = |workload: String, address: String, group: Option<String>| Proxy {
            namespace: ns.to_string(),
            workload,
            identity: id.to_string(),
            address,
            role: sub.role.clone(),
            group,
            sent: None,
            acked: None,
            pending: false,
            error: None,
            nacked: false,
            cert_expires: sub.cert_expires,
            since: SystemTime::now(),
            last: Layered::default(),
        };
        if let Some(w) = served
            .registry
            .workloads
            .iter()
            .find(|w| w.namespace == ns && w.name == name)
        {
            check(&w.service_account)?;
            return Ok(proxy(w.name.clone(), w.address.to_string(), None));
        }
        let sa = served
            .group(ns, name)
            .map(|g| g.template.as_ref().and_then(|t| t.service_account.clone()))
            .ok_or_else(|| {
                Status::not_found(format!("no WorkloadEntry or WorkloadGroup {ns}/{name}"))
            })?
            .unwrap_or_else(|| "default".into());
        check(&sa)?;
        let address: IpAddr = sub.address.parse().map_err(|_| {
            Status::invalid_argument(format!(
                "{ns}/{name} is a WorkloadGroup: subscribe with this instance's address (got {:?})",
                sub.address
            ))
        })?;
        let (entry, resources) = served
            .entry_for(ns, name, address, &id.to_string())
            .map_err(Status::invalid_argument)?;
        {
            let mut registered = lock(&self.registered);
            let key = (ns.to_string(), entry.clone());
            // A proxy that failed over from a peer replaces what the peer
            // last said of it.
            if registered.get(&key).is_some_and(|r| !r.remote) {
                return Err(Status::already_exists(format!(
                    "{ns}/{entry} is registered by another connected proxy"
                )));
            }
            registered.insert(
                key,
                Registration {
                    resources,
                    ready: false,
                    remote: false,
                },
            );
        }
        Ok(proxy(entry, address.to_string(), Some(name.to_string())))
    }

    /// Forgets a proxy whose stream ended, and its registration.
    fn leave(&self, key: u64) {
        let Some(p) = lock(&self.proxies).remove(&key) else {
            return;
        };
        self.metrics.connected.dec();
        tracing::info!(
            "{}/{} ({}) disconnected",
            p.namespace,
            p.workload,
            p.identity
        );
        if p.group.is_some() {
            let gone = lock(&self.registered).remove(&(p.namespace.clone(), p.workload.clone()));
            if gone.is_some_and(|r| r.ready) {
                tracing::info!("{}/{} unregistered", p.namespace, p.workload);
                self.publish();
            }
        }
    }

    /// A registered instance's proxy acknowledged its first
    /// configuration: the rest of the mesh may send it traffic.
    fn registration_ready(&self, p: &Proxy) {
        if p.group.is_none() {
            return;
        }
        let key = (p.namespace.clone(), p.workload.clone());
        let newly = lock(&self.registered)
            .get_mut(&key)
            .is_some_and(|r| !std::mem::replace(&mut r.ready, true));
        if newly {
            tracing::info!("{}/{} registered and ready", p.namespace, p.workload);
            self.publish();
        }
    }

    /// Keeps the WorkloadGroup instances registered with `peers` (other
    /// replicas over the same folder) in this replica's registry, so that
    /// their endpoints reach proxies connected here: every second, each
    /// peer's status names its ready registered instances. A peer that does
    /// not answer contributes nothing until it does.
    pub async fn sync_peers(
        self: Arc<Self>,
        peers: Vec<std::net::SocketAddr>,
        policy: weft_identity::tls::PeerPolicy,
    ) {
        use weft_protocol::mesh::config_service_client::ConfigServiceClient;
        // One channel per peer, kept while it answers.
        let mut channels: Vec<Option<tonic::transport::Channel>> = vec![None; peers.len()];
        loop {
            let mut seen: BTreeMap<(String, String), (String, IpAddr)> = BTreeMap::new();
            for (peer, slot) in peers.iter().zip(&mut channels) {
                if slot.is_none() {
                    let store = weft_identity::CertStore::new();
                    *slot = weft_identity::service::channel(*peer, store, policy.clone())
                        .await
                        .ok();
                }
                let Some(channel) = slot.clone() else {
                    continue;
                };
                let Ok(status) = ConfigServiceClient::new(channel)
                    .status(StatusRequest {})
                    .await
                else {
                    *slot = None;
                    continue;
                };
                for p in status.into_inner().proxies {
                    let Ok(address) = p.address.parse() else {
                        continue;
                    };
                    if !p.group.is_empty() && !p.acked.is_empty() {
                        seen.insert((p.namespace, p.workload), (p.group, address));
                    }
                }
            }
            let served = self.served();
            let changed = {
                let mut registered = lock(&self.registered);
                let before = registered.len();
                registered.retain(|key, r| !r.remote || seen.contains_key(key));
                let mut changed = registered.len() != before;
                for (key, (group, address)) in seen {
                    if registered.contains_key(&key) {
                        continue;
                    }
                    if let Ok((_, resources)) = served.entry_for(&key.0, &group, address, "a peer")
                    {
                        registered.insert(
                            key,
                            Registration {
                                resources,
                                ready: true,
                                remote: true,
                            },
                        );
                        changed = true;
                    }
                }
                changed
            };
            if changed {
                self.publish();
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }

    /// Compiles `p`'s configuration from `served`: its traffic part from
    /// the snapshot's cache when a proxy of the same traffic key compiled
    /// it already, its own part always. A registered instance not yet
    /// published sees its own entry (and shares nothing).
    async fn compile_for(&self, p: &Proxy, served: &Arc<Served>) -> Result<Layered, CompileError> {
        let (ns, name) = (p.namespace.as_str(), p.workload.as_str());
        let pending: Vec<Resource> = if p.group.is_some() {
            lock(&self.registered)
                .get(&(p.namespace.clone(), p.workload.clone()))
                .filter(|r| !r.ready)
                .map(|r| r.resources.clone())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        if !pending.is_empty() {
            let mut resources = served.resources.to_vec();
            resources.extend(pending);
            let registry = Registry::from_resources(&resources);
            let all = Sections::of(compile(&resources, &registry, ns, name, &served.mesh)?);
            let traffic = all.part(true);
            return Ok(Layered {
                traffic_hash: traffic.part_hash(true),
                traffic: Arc::new(traffic),
                own: all.part(false),
            });
        }
        let (registry, mesh) = (&served.registry, &served.mesh);
        let w = registry
            .workload(ns, name)
            .ok_or_else(|| CompileError::NoWorkload(format!("{ns}/{name}")))?;
        let key = served.selectors.key(w);
        // The first proxy of a key compiles its traffic part; the others
        // wait for it rather than compile it again.
        let cell = lock(&served.traffic)
            .entry(key.clone())
            .or_default()
            .clone();
        let (traffic, traffic_hash) = cell
            .get_or_try_init(|| {
                // On a blocking thread: a compile takes milliseconds, and
                // the runtime goes on sending pushes and reading ACKs.
                let (served, ns, name) = (served.clone(), ns.to_string(), name.to_string());
                async move {
                    // As many at once as there are cores.
                    let _permit = self
                        .compiling
                        .acquire()
                        .await
                        .map_err(|e| CompileError::Internal(e.to_string()))?;
                    let traffic = tokio::task::spawn_blocking(move || {
                        let (resources, registry) = (&served.resources, &served.registry);
                        let known = |name: &str, c: &weft_model::config::Cluster| {
                            let equal = |cache: &ClusterCache| {
                                cache
                                    .get(name)
                                    .filter(|(k, _)| k == c)
                                    .map(|(_, s)| s.clone())
                            };
                            let now = equal(&lock(&served.clusters));
                            now.or_else(|| {
                                let before = equal(&lock(&served.previous_clusters))?;
                                lock(&served.clusters)
                                    .insert(name.to_string(), (c.clone(), before.clone()));
                                Some(before)
                            })
                        };
                        let learn =
                            |name: &str,
                             c: &weft_model::config::Cluster,
                             s: &weft_model::sections::Section| {
                                lock(&served.clusters)
                                    .insert(name.to_string(), (c.clone(), s.clone()));
                            };
                        let config = compile(resources, registry, &ns, &name, &served.mesh)?;
                        let mut t = Sections::of_sharing(config, known, learn).part(true);
                        // What did not change keeps the previous snapshot's copy.
                        if let Some(old) = lock(&served.previous).remove(&key) {
                            t.reuse(&old);
                        }
                        Ok::<_, CompileError>(t)
                    })
                    .await
                    .map_err(|e| CompileError::Internal(e.to_string()))??;
                    let hash = traffic.part_hash(true);
                    Ok((Arc::new(traffic), hash))
                }
            })
            .await?
            .clone();
        // The own part reads only the per-proxy policies.
        let own = weft_model::compile_own(&served.policies, registry, ns, name, mesh)?;
        let own = Sections::of(own).part(false);
        Ok(Layered {
            traffic,
            traffic_hash,
            own,
        })
    }

    fn update(&self, key: u64, f: impl FnOnce(&mut Proxy)) {
        if let Some(p) = lock(&self.proxies).get_mut(&key) {
            f(p);
        }
    }

    /// Serves one proxy's stream until it ends.
    async fn serve_proxy(
        self: Arc<Self>,
        key: u64,
        have: String,
        mut inbound: Streaming<ProxyMessage>,
        out: mpsc::Sender<Result<ConfigPush, Status>>,
    ) {
        let mut snapshots = self.served.subscribe();
        // What the proxy has: empty at first, so the first push is whole.
        let mut base = Layered::default();
        // The push in flight: its nonce, sections and snapshot time.
        let mut pending: Option<(String, Layered, Instant)> = None;
        let mut dirty = true;
        let mut nonce = 0u64;
        loop {
            if dirty && pending.is_none() {
                dirty = false;
                let served = snapshots.borrow_and_update().clone();
                let started = Instant::now();
                let Some(p) = lock(&self.proxies).get(&key).cloned() else {
                    break;
                };
                match self.compile_for(&p, &served).await {
                    Ok(next) => {
                        let version = next.version();
                        if base.is_empty() && version == have {
                            // A reconnecting proxy that already has it.
                            self.update(key, |p| {
                                p.sent = Some(version.clone());
                                p.acked = Some(version);
                                p.last = next.clone();
                                p.error = None;
                            });
                            base = next;
                            continue;
                        }
                        let (changed, removed) = base.diff(&next);
                        if changed.is_empty() && removed.is_empty() {
                            self.update(key, |p| p.error = None);
                        } else {
                            nonce += 1;
                            let parts = in_parts(
                                ConfigPush {
                                    version: version.clone(),
                                    nonce: nonce.to_string(),
                                    full: base.is_empty(),
                                    sections: Vec::new(),
                                    removed,
                                    workload: p.workload.clone(),
                                    more: false,
                                },
                                &changed,
                            );
                            let mut sent = true;
                            for part in parts {
                                if out.send(Ok(part)).await.is_err() {
                                    sent = false;
                                    break;
                                }
                            }
                            if !sent {
                                break;
                            }
                            self.metrics.pushes.get_or_create(&CONFIG.to_vec()).inc();
                            self.metrics
                                .push_time
                                .observe(started.elapsed().as_secs_f64());
                            let last = next.clone();
                            self.update(key, |p| {
                                p.sent = Some(version);
                                p.pending = true;
                                p.error = None;
                                p.last = last;
                            });
                            pending = Some((nonce.to_string(), next, served.since));
                        }
                    }
                    Err(e) => {
                        // Its WorkloadEntry is gone, say: it keeps what it has.
                        let e = format!("cannot compile its configuration: {e}");
                        tracing::warn!("{}/{}: {e}", p.namespace, p.workload);
                        self.update(key, |p| p.error = Some(e));
                    }
                }
            }
            tokio::select! {
                changed = snapshots.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    dirty = true;
                }
                message = inbound.message() => {
                    let Ok(Some(message)) = message else {
                        break;
                    };
                    match message.kind {
                        Some(Kind::Ack(ack)) => {
                            if let Some((_, sections, since)) = pending.take_if(|(n, ..)| *n == ack.nonce) {
                                self.metrics.convergence.observe(since.elapsed().as_secs_f64());
                                base = sections;
                                self.update(key, |p| {
                                    p.acked = Some(ack.version);
                                    p.pending = false;
                                    p.nacked = false;
                                });
                                let acked = lock(&self.proxies).get(&key).cloned();
                                if let Some(p) = acked {
                                    self.registration_ready(&p);
                                }
                            }
                        }
                        Some(Kind::Nack(nack)) => {
                            if pending.take_if(|(n, ..)| *n == nack.nonce).is_some() {
                                // The proxy keeps what it had: `base` stays.
                                self.metrics.rejects.get_or_create(&CONFIG.to_vec()).inc();
                                tracing::warn!("a proxy refused version {}: {}", nack.version, nack.error);
                                self.update(key, |p| {
                                    p.pending = false;
                                    p.nacked = true;
                                    p.error = Some(nack.error);
                                });
                            }
                        }
                        Some(Kind::Report(report)) => {
                            self.update(key, |p| p.cert_expires = report.cert_expires);
                        }
                        Some(Kind::Subscribe(_)) | None => {}
                    }
                }
            }
        }
        self.leave(key);
    }

    fn status(&self) -> StatusResponse {
        let served = self.served();
        let proxies = lock(&self.proxies)
            .values()
            .map(|p| ProxyStatus {
                namespace: p.namespace.clone(),
                workload: p.workload.clone(),
                identity: p.identity.clone(),
                address: p.address.clone(),
                role: p.role.clone(),
                sent: p.sent.clone().unwrap_or_default(),
                acked: p.acked.clone().unwrap_or_default(),
                state: p.state().into(),
                error: p.error.clone().unwrap_or_default(),
                cert_expires: p.cert_expires,
                group: p.group.clone().unwrap_or_default(),
                connected_since: unix(p.since),
            })
            .collect();
        StatusResponse {
            source: self.folder.dir.display().to_string(),
            commit: served.commit.clone().unwrap_or_default(),
            version: served.version.clone(),
            refused: lock(&self.refused).clone().unwrap_or_default(),
            proxies,
        }
    }
}

/// Budget of section bytes per message of a push.
const PART_BYTES: usize = 16 << 10;

/// A push of `changed` sections in messages of about [`PART_BYTES`] each,
/// all but the last marked `more`; `head` gives the version, nonce, flags
/// and removed names (carried by the last part).
fn in_parts(
    head: ConfigPush,
    changed: &[(&str, &weft_model::sections::Section)],
) -> Vec<ConfigPush> {
    let mut parts = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for (name, s) in changed {
        if size > 0 && size + s.json.len() > PART_BYTES {
            parts.push(std::mem::take(&mut current));
            size = 0;
        }
        size += s.json.len();
        current.push(Section {
            name: (*name).to_string(),
            json: s.json.to_vec(),
        });
    }
    parts.push(current);
    let last = parts.len() - 1;
    parts
        .into_iter()
        .enumerate()
        .map(|(i, sections)| ConfigPush {
            sections,
            more: i < last,
            removed: if i == last {
                head.removed.clone()
            } else {
                Vec::new()
            },
            ..head.clone()
        })
        .collect()
}

impl Served {
    fn group(
        &self,
        ns: &str,
        name: &str,
    ) -> Option<&weft_api::types::service_entry::WorkloadGroup> {
        self.resources.iter().find_map(|r| match &r.spec {
            Spec::WorkloadGroup(g) if r.namespace() == ns && r.name == name => Some(g),
            _ => None,
        })
    }

    /// The WorkloadEntry that registers an instance of WorkloadGroup
    /// `ns/group` at `address` (Istio names it `GROUP-ADDRESS`), from the
    /// group's metadata and template.
    fn entry_for(
        &self,
        ns: &str,
        group: &str,
        address: IpAddr,
        by: &str,
    ) -> Result<(String, Vec<Resource>), String> {
        let g = self
            .group(ns, group)
            .ok_or_else(|| format!("no WorkloadGroup {ns}/{group}"))?;
        let template = g.template.clone().unwrap_or_default();
        let entry = format!("{group}-{}", address.to_string().replace(['.', ':'], "-"));
        let mut labels = g
            .metadata
            .as_ref()
            .map(|m| m.labels.clone())
            .unwrap_or_default();
        labels.extend(template.labels.clone());
        let mut spec = serde_json::json!({
            "address": address.to_string(),
            "labels": labels,
            "ports": template.ports,
            "serviceAccount": template.service_account.as_deref().unwrap_or("default"),
        });
        for (key, value) in [
            ("network", &template.network),
            ("locality", &template.locality),
        ] {
            if let Some(v) = value {
                spec[key] = v.clone().into();
            }
        }
        if let Some(w) = template.weight {
            spec["weight"] = w.into();
        }
        let doc = serde_json::json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "WorkloadEntry",
            "metadata": {
                "name": entry,
                "namespace": ns,
                "labels": labels,
                "annotations": {"istio.io/autoRegistrationGroup": group},
            },
            "spec": spec,
        });
        let mut loaded = Loaded::default();
        loaded.add_text(&format!("registered by {by}"), &doc.to_string());
        loaded.validate();
        if let Some(e) = loaded.diagnostics.iter().find(|d| d.is_error()) {
            return Err(format!("registering {ns}/{entry}: {e}"));
        }
        Ok((entry, loaded.resources))
    }

    fn of(
        (base, state): &(ConfigSet, FolderState),
        registered: &BTreeMap<(String, String), Registration>,
    ) -> Served {
        let ready: Vec<_> = registered.iter().filter(|(_, r)| r.ready).collect();
        let resources = if ready.is_empty() {
            base.resources.clone()
        } else {
            let mut all = base.resources.to_vec();
            all.extend(ready.iter().flat_map(|(_, r)| r.resources.iter().cloned()));
            Arc::new(all)
        };
        let names: Vec<String> = ready
            .iter()
            .map(|((ns, name), _)| format!("{ns}/{name}"))
            .collect();
        let version = if names.is_empty() {
            state.version.clone()
        } else {
            weft_model::sections::content_hash(
                std::iter::once(state.version.as_bytes()).chain(names.iter().map(|n| n.as_bytes())),
            )
        };
        Served {
            version,
            registry: Registry::from_resources(&resources),
            selectors: TrafficSelectors::of(&resources, &base.mesh),
            policies: resources
                .iter()
                .filter(|r| {
                    matches!(
                        r.spec,
                        Spec::PeerAuthentication(_)
                            | Spec::AuthorizationPolicy(_)
                            | Spec::RequestAuthentication(_)
                            | Spec::RateLimit(_)
                            | Spec::EnvoyFilter(_)
                    )
                })
                .cloned()
                .collect(),
            resources,
            mesh: base.mesh.clone(),
            commit: state.commit.clone(),
            since: Instant::now(),
            traffic: Mutex::new(HashMap::new()),
            previous: Mutex::new(HashMap::new()),
            clusters: Mutex::new(HashMap::new()),
            previous_clusters: Mutex::new(HashMap::new()),
        }
    }
}

/// The gRPC face of a [`ControlPlane`].
#[derive(Debug, Clone)]
pub struct Service(pub Arc<ControlPlane>);

type PushStream = Pin<Box<dyn Stream<Item = Result<ConfigPush, Status>> + Send>>;

#[tonic::async_trait]
impl ConfigService for Service {
    type StreamStream = PushStream;

    async fn stream(
        &self,
        request: Request<Streaming<ProxyMessage>>,
    ) -> Result<Response<PushStream>, Status> {
        let id = request
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| p.identity.clone())
            .ok_or_else(|| {
                Status::unauthenticated(
                    "the configuration stream needs a mesh certificate (get the first with a bootstrap token)",
                )
            })?;
        let mut inbound = request.into_inner();
        let Some(Kind::Subscribe(sub)) = inbound.message().await?.and_then(|m| m.kind) else {
            return Err(Status::invalid_argument(
                "the first message must be Subscribe",
            ));
        };
        let cp = self.0.clone();
        let proxy = cp.admit(&id, &sub)?;
        tracing::info!(
            "{}/{} ({id}) subscribed as {}",
            proxy.namespace,
            proxy.workload,
            if sub.role.is_empty() {
                "sidecar"
            } else {
                &sub.role
            }
        );
        let key = cp.next_proxy.fetch_add(1, Ordering::Relaxed);
        lock(&cp.proxies).insert(key, proxy);
        cp.metrics.connected.inc();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(cp.serve_proxy(key, sub.version, inbound, tx));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(self.0.status()))
    }

    async fn config_dump(
        &self,
        request: Request<ConfigDumpRequest>,
    ) -> Result<Response<ConfigDumpResponse>, Status> {
        let req = request.into_inner();
        let last = lock(&self.0.proxies)
            .values()
            .find(|p| p.namespace == req.namespace && p.workload == req.workload)
            .and_then(|p| Some((p.sent.clone()?, p.last.clone())));
        let (version, sections) = last.ok_or_else(|| {
            Status::not_found(format!(
                "no proxy of {}/{} has been sent a configuration",
                req.namespace, req.workload
            ))
        })?;
        let config = sections.flatten().config().map_err(Status::internal)?;
        let json =
            serde_json::to_string_pretty(&config).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(ConfigDumpResponse { version, json }))
    }
}
