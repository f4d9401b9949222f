//! Runtime state of clusters: requests in flight (for circuit breaking and
//! least-request balancing) and passive health (outlier detection). The
//! compiled configuration says what the limits are; this remembers what is
//! happening. State is kept by cluster name and endpoint address, so it
//! survives a configuration swap.

use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use weft_model::config::{Cluster, ClusterEndpoint};
use weft_model::policy::{LbPolicy, Outlier};

#[derive(Debug, Default)]
pub struct EndpointState {
    active: AtomicU64,
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    ejections: AtomicU32,
    /// Milliseconds since the tracker started; 0 means not ejected.
    ejected_until: AtomicU64,
}

#[derive(Debug, Default)]
pub struct ClusterState {
    active: AtomicU64,
    /// Retries in flight (bounded by `maxRetries`).
    retrying: AtomicU64,
    /// Round robin position.
    next: AtomicU64,
    endpoints: RwLock<crate::FastMap<SocketAddr, Arc<EndpointState>>>,
    /// The states in the order of the cluster's endpoints, for the list of
    /// addresses they were looked up for: a request looks them up again
    /// only when the list has changed.
    order: RwLock<Arc<Order>>,
}

#[derive(Debug, Default)]
struct Order {
    addresses: Vec<SocketAddr>,
    states: Vec<Arc<EndpointState>>,
}

impl ClusterState {
    fn endpoint(&self, addr: SocketAddr) -> Arc<EndpointState> {
        if let Some(e) = self
            .endpoints
            .read()
            .ok()
            .and_then(|m| m.get(&addr).cloned())
        {
            return e;
        }
        let mut m = match self.endpoints.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.entry(addr).or_default().clone()
    }

    /// The states of `cluster`'s endpoints, in its order.
    fn order(&self, cluster: &Cluster) -> Arc<Order> {
        let same = |o: &Order| {
            o.addresses.len() == cluster.endpoints.len()
                && o.addresses
                    .iter()
                    .zip(&cluster.endpoints)
                    .all(|(a, e)| *a == e.address)
        };
        if let Some(o) = self.order.read().ok().filter(|o| same(o)) {
            return o.clone();
        }
        let built = Arc::new(Order {
            addresses: cluster.endpoints.iter().map(|e| e.address).collect(),
            states: cluster
                .endpoints
                .iter()
                .map(|e| self.endpoint(e.address))
                .collect(),
        });
        if let Ok(mut o) = self.order.write() {
            *o = built.clone();
        }
        built
    }
}

/// All clusters' state.
#[derive(Debug)]
pub struct Tracker {
    clusters: RwLock<crate::FastMap<String, Arc<ClusterState>>>,
    started: Instant,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            clusters: RwLock::default(),
            started: Instant::now(),
        }
    }
}

/// An admitted request: counts as in flight until dropped.
#[derive(Debug)]
pub struct Admitted {
    cluster: Arc<ClusterState>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.cluster.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A retry in flight until dropped.
#[derive(Debug)]
pub struct Retrying {
    cluster: Arc<ClusterState>,
}

impl Drop for Retrying {
    fn drop(&mut self) {
        self.cluster.retrying.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A picked endpoint, in flight until dropped; report how it went.
#[derive(Debug)]
pub struct Picked {
    state: Arc<EndpointState>,
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.state.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How one attempt on an endpoint ended, for outlier detection.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    Status(u16),
    ConnectFailure,
}

impl Tracker {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    pub fn cluster(&self, name: &str) -> Arc<ClusterState> {
        if let Some(c) = self.clusters.read().ok().and_then(|m| m.get(name).cloned()) {
            return c;
        }
        let mut m = match self.clusters.write() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        m.entry(name.to_string()).or_default().clone()
    }

    /// Admits a request to `cluster` unless it is at its limit (503 UO).
    pub fn admit(&self, cluster: &Cluster) -> Option<Admitted> {
        let state = self.cluster(&cluster.name);
        let active = state.active.fetch_add(1, Ordering::Relaxed);
        let admitted = Admitted { cluster: state };
        match cluster.policy.pool.max_active() {
            Some(max) if active >= max => None,
            _ => Some(admitted),
        }
    }

    /// Admits one more retry to `cluster` unless `maxRetries` retries are
    /// already in flight (then the request ends with its last answer).
    pub fn admit_retry(&self, cluster: &Cluster) -> Option<Retrying> {
        let state = self.cluster(&cluster.name);
        let retrying = state.retrying.fetch_add(1, Ordering::Relaxed);
        let guard = Retrying { cluster: state };
        match cluster.policy.pool.max_retries {
            Some(max) if retrying >= u64::from(max) => None,
            _ => Some(guard),
        }
    }

    /// Picks an endpoint by the cluster's policy among those not ejected
    /// (all of them when too few are healthy). `key` is the consistent-hash
    /// key, `random` fresh random bits.
    pub fn pick<'a>(
        &self,
        cluster: &'a Cluster,
        key: Option<u64>,
        random: u64,
    ) -> Option<(&'a Arc<ClusterEndpoint>, Picked)> {
        let state = self.cluster(&cluster.name);
        let order = state.order(cluster);
        let states = &order.states;
        let now = self.now_ms();
        let healthy_at = |i: &usize| states[*i].ejected_until.load(Ordering::Relaxed) <= now;
        let total = states.len();
        let healthy = (0..total).filter(healthy_at).count();
        let panic = match &cluster.policy.outlier {
            Some(o) => healthy == 0 || (healthy * 100) < (o.min_health_percent as usize * total),
            None => healthy == 0,
        };
        // The candidates: every endpoint when all are healthy or too few
        // are, else the healthy ones.
        let all = panic || healthy == total;
        let n = if all { total } else { healthy };
        if n == 0 {
            return None;
        }
        let candidates = || (0..total).filter(move |i| all || healthy_at(i));
        // The k-th candidate (an endpoint ejected meanwhile on another
        // thread may shorten the list: then any).
        let nth = |k: u64| {
            let k = (k % n as u64) as usize;
            if all {
                k
            } else {
                candidates().nth(k).unwrap_or(k % total)
            }
        };
        let i = match (&cluster.policy.lb, key) {
            (LbPolicy::ConsistentHash(_), Some(key)) => {
                // Rendezvous hashing: the same key keeps its endpoint while
                // that endpoint stays, and moves minimally when others change.
                candidates()
                    .max_by_key(|&i| {
                        let mut h = std::collections::hash_map::DefaultHasher::new();
                        (key, cluster.endpoints[i].address).hash(&mut h);
                        h.finish()
                    })
                    .unwrap_or(0)
            }
            (LbPolicy::Random, _) => nth(random),
            (LbPolicy::RoundRobin | LbPolicy::ConsistentHash(_), _) => {
                nth(state.next.fetch_add(1, Ordering::Relaxed))
            }
            (LbPolicy::LeastRequest, _) => {
                // Power of two choices.
                let a = nth(random);
                let b = nth(random >> 32);
                if states[b].active.load(Ordering::Relaxed)
                    < states[a].active.load(Ordering::Relaxed)
                {
                    b
                } else {
                    a
                }
            }
        };
        let chosen = states[i].clone();
        chosen.active.fetch_add(1, Ordering::Relaxed);
        Some((&cluster.endpoints[i], Picked { state: chosen }))
    }

    /// Records how an attempt ended, ejecting the endpoint when it has
    /// failed too many times in a row and the cluster may lose one more.
    pub fn report(&self, cluster: &Cluster, picked: &Picked, outcome: Outcome) {
        let Some(o) = &cluster.policy.outlier else {
            return;
        };
        let ep = &picked.state;
        let (is_5xx, is_gateway) = match outcome {
            Outcome::Status(s) => (s >= 500, matches!(s, 502..=504)),
            Outcome::ConnectFailure => (true, true),
        };
        if !is_5xx {
            ep.consecutive_5xx.store(0, Ordering::Relaxed);
            ep.consecutive_gateway.store(0, Ordering::Relaxed);
            return;
        }
        let c5 = ep.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        let gw = if is_gateway {
            ep.consecutive_gateway.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            0
        };
        let tripped = o.consecutive_5xx.is_some_and(|t| c5 >= t)
            || o.consecutive_gateway_errors.is_some_and(|t| gw >= t);
        if tripped && self.may_eject(cluster, o) {
            let n = ep.ejections.fetch_add(1, Ordering::Relaxed) + 1;
            // The ejection time grows with each ejection, as in Envoy.
            let ms = u64::try_from(o.base_ejection_time.as_millis())
                .unwrap_or(u64::MAX)
                .saturating_mul(u64::from(n));
            ep.ejected_until
                .store(self.now_ms().saturating_add(ms), Ordering::Relaxed);
            ep.consecutive_5xx.store(0, Ordering::Relaxed);
            ep.consecutive_gateway.store(0, Ordering::Relaxed);
        }
    }

    fn may_eject(&self, cluster: &Cluster, o: &Outlier) -> bool {
        if o.max_ejection_percent == 0 {
            return false;
        }
        let state = self.cluster(&cluster.name);
        let now = self.now_ms();
        let ejected = cluster
            .endpoints
            .iter()
            .filter(|e| {
                state
                    .endpoint(e.address)
                    .ejected_until
                    .load(Ordering::Relaxed)
                    > now
            })
            .count();
        // At least one endpoint may always be ejected, as Envoy allows.
        let allowed = (cluster.endpoints.len() * o.max_ejection_percent as usize / 100).max(1);
        ejected < allowed
    }

    /// Whether an endpoint is ejected now (for `/clusters`).
    pub fn is_ejected(&self, cluster: &str, addr: SocketAddr) -> bool {
        self.cluster(cluster)
            .endpoint(addr)
            .ejected_until
            .load(Ordering::Relaxed)
            > self.now_ms()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use weft_model::Protocol;
    use weft_model::policy::ClusterPolicy;

    use super::*;

    fn cluster(ports: &[u16]) -> Cluster {
        let endpoint = |port: &u16| ClusterEndpoint {
            address: SocketAddr::from(([127, 0, 0, 1], *port)),
            identity: None,
            weight: 1,
            workload: None,
            namespace: "default".into(),
            labels: BTreeMap::new(),
        };
        Cluster {
            name: "outbound|80||c.default.svc.cluster.local".into(),
            host: "c.default.svc.cluster.local".into(),
            service_namespace: None,
            port: 80,
            protocol: Protocol::Http,
            subset: None,
            endpoints: ports.iter().map(endpoint).map(Arc::new).collect(),
            dns: None,
            missing: false,
            policy: ClusterPolicy {
                lb: LbPolicy::RoundRobin,
                ..ClusterPolicy::default()
            },
        }
    }

    /// The endpoint states a cluster's picks use follow its endpoints when
    /// a new configuration adds or removes some.
    #[test]
    fn picks_follow_the_endpoints_as_they_change() {
        let tracker = Tracker::default();
        let picked = |c: &Cluster, n: usize| -> BTreeSet<u16> {
            (0..n)
                .map(|_| tracker.pick(c, None, 0).unwrap().0.address.port())
                .collect()
        };
        assert_eq!(picked(&cluster(&[1]), 4), BTreeSet::from([1]));
        assert_eq!(picked(&cluster(&[1, 2, 3]), 6), BTreeSet::from([1, 2, 3]));
        assert_eq!(picked(&cluster(&[3]), 4), BTreeSet::from([3]));
        assert_eq!(picked(&cluster(&[]), 0), BTreeSet::new());
        assert!(tracker.pick(&cluster(&[]), None, 0).is_none());
    }
}
