//! A compiled configuration in parts, as the control plane pushes it: each
//! top-level field is one section, each cluster one more (`clusters/NAME`)
//! and each outbound service one more (`outbound/HOST:PORT`), so a change
//! resends only the services and clusters it touches, and no section
//! grows with the mesh. Sections carry their hash, and their bytes are shared: proxies
//! whose traffic part is the same (one [`crate::TrafficKey`]) hold one copy.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{Cluster, ProxyConfig, index_identities};

const CLUSTERS: &str = "clusters";
const OUTBOUND: &str = "outbound";

/// The top-level fields that make a configuration's traffic part; with
/// the outbound services and clusters, they come from [`crate::compile`]
/// and not from [`crate::compile_own`].
const TRAFFIC: [&str; 2] = ["gateway", "outbound_policy"];

/// Whether section `name` belongs to the traffic part.
pub fn is_traffic(name: &str) -> bool {
    TRAFFIC.contains(&name) || name.starts_with("clusters/") || name.starts_with("outbound/")
}

/// One section's JSON and its hash.
#[derive(Debug, Clone, Eq)]
pub struct Section {
    pub json: Arc<[u8]>,
    pub hash: u64,
}

impl PartialEq for Section {
    /// The hash first: different sections rarely get as far as their bytes.
    fn eq(&self, other: &Section) -> bool {
        self.hash == other.hash && self.json == other.json
    }
}

impl Section {
    pub fn new(json: Vec<u8>) -> Section {
        let mut h = Fnv::new();
        h.write(&json);
        Section {
            hash: h.0,
            json: json.into(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sections(pub BTreeMap<String, Section>);

impl Sections {
    pub fn of(config: ProxyConfig) -> Sections {
        Sections::of_sharing(config, |_, _| None, |_, _, _| {})
    }

    /// Like [`Sections::of`], with clusters serialized before: `known`
    /// gives the section of a cluster equal to the one compiled (which is
    /// then not serialized again, and keeps the same bytes), and `learn`
    /// is told each cluster serialized here.
    pub fn of_sharing(
        mut config: ProxyConfig,
        known: impl Fn(&str, &Cluster) -> Option<Section>,
        mut learn: impl FnMut(&str, &Cluster, &Section),
    ) -> Sections {
        use serde_json::value::RawValue;
        let mut out = Sections::default();
        for (name, cluster) in std::mem::take(&mut config.clusters) {
            let section = match known(&name, &cluster) {
                Some(s) => s,
                None => {
                    let Ok(json) = serde_json::to_vec(&cluster) else {
                        continue;
                    };
                    let s = Section::new(json);
                    learn(&name, &cluster, &s);
                    s
                }
            };
            out.0.insert(format!("{CLUSTERS}/{name}"), section);
        }
        for service in std::mem::take(&mut config.outbound) {
            if let Ok(json) = serde_json::to_vec(&service) {
                out.insert(
                    format!("{OUTBOUND}/{}:{}", service.host, service.port),
                    json,
                );
            }
        }
        // The rest serialized once, then cut: each part keeps its bytes.
        let Ok(json) = serde_json::to_string(&config) else {
            return out;
        };
        let Ok(fields) = serde_json::from_str::<BTreeMap<String, &RawValue>>(&json) else {
            return out;
        };
        for (name, value) in fields
            .into_iter()
            .filter(|(n, _)| n != CLUSTERS && n != OUTBOUND)
        {
            out.insert(name, value.get().as_bytes().to_vec());
        }
        out
    }

    pub fn insert(&mut self, name: String, json: Vec<u8>) {
        self.0.insert(name, Section::new(json));
    }

    /// The sections of the traffic part, or the others.
    pub fn part(&self, traffic: bool) -> Sections {
        Sections(
            self.0
                .iter()
                .filter(|(name, _)| is_traffic(name) == traffic)
                .map(|(n, s)| (n.clone(), s.clone()))
                .collect(),
        )
    }

    /// The configuration these sections make up.
    pub fn config(&self) -> Result<ProxyConfig, String> {
        let mut fields = serde_json::Map::new();
        let mut clusters = serde_json::Map::new();
        let mut outbound = Vec::new();
        for (name, section) in &self.0 {
            let value: serde_json::Value = serde_json::from_slice(&section.json)
                .map_err(|e| format!("section {name}: {e}"))?;
            if let Some(cluster) = name.strip_prefix("clusters/") {
                clusters.insert(cluster.to_string(), value);
            } else if name.starts_with("outbound/") {
                outbound.push(value);
            } else {
                fields.insert(name.clone(), value);
            }
        }
        fields.insert(CLUSTERS.into(), serde_json::Value::Object(clusters));
        fields.insert(OUTBOUND.into(), serde_json::Value::Array(outbound));
        let mut config: ProxyConfig = serde_json::from_value(serde_json::Value::Object(fields))
            .map_err(|e| format!("configuration: {e}"))?;
        // Section names sort ports as text; the compile's order is by
        // host, then port number.
        config
            .outbound
            .sort_by(|a, b| (&a.host, a.port).cmp(&(&b.host, b.port)));
        config.identities = index_identities(&config.clusters);
        Ok(config)
    }

    /// What turns `self` into `next`: the sections that are new or
    /// changed, and the names of those that are gone. Both are walked in
    /// name order together; shared sections compare by pointer.
    pub fn diff<'a>(&self, next: &'a Sections) -> (Vec<(&'a str, &'a Section)>, Vec<String>) {
        use std::cmp::Ordering;
        let (mut changed, mut removed) = (Vec::new(), Vec::new());
        let mut old = self.0.iter().peekable();
        for (name, s) in &next.0 {
            loop {
                match old.peek().map(|(o, _)| o.as_str().cmp(name)) {
                    Some(Ordering::Less) => {
                        if let Some((o, _)) = old.next() {
                            removed.push(o.clone());
                        }
                    }
                    Some(Ordering::Equal) => {
                        if old.next().is_none_or(|(_, o)| o != s) {
                            changed.push((name.as_str(), s));
                        }
                        break;
                    }
                    Some(Ordering::Greater) | None => {
                        changed.push((name.as_str(), s));
                        break;
                    }
                }
            }
        }
        removed.extend(old.map(|(o, _)| o.clone()));
        (changed, removed)
    }

    /// Takes `old`'s copy of every section whose content is the same, so
    /// that unchanged sections stay shared across compiles and compare by
    /// pointer.
    pub fn reuse(&mut self, old: &Sections) {
        for (name, s) in &mut self.0 {
            if let Some(o) = old.0.get(name).filter(|o| *o == s) {
                *s = o.clone();
            }
        }
    }

    /// A hash of the sections of one part (traffic or not), by name and
    /// content hash, in name order.
    pub fn part_hash(&self, traffic: bool) -> u64 {
        let mut h = Fnv::new();
        for (name, s) in self.0.iter().filter(|(n, _)| is_traffic(n) == traffic) {
            h.write(name.as_bytes());
            h.word(s.hash);
        }
        h.0
    }

    /// A version naming exactly this content.
    pub fn version(&self) -> String {
        version(self.part_hash(true), self.part_hash(false))
    }
}

/// A configuration's version from the hashes of its two parts.
fn version(traffic: u64, own: u64) -> String {
    let mut h = Fnv::new();
    h.word(traffic);
    h.word(own);
    format!("{:016x}", h.0)
}

/// A proxy's sections as a control plane keeps them: the traffic part,
/// shared with every proxy of its traffic key (with its
/// [`Sections::part_hash`]), and its own.
#[derive(Debug, Clone, Default)]
pub struct Layered {
    pub traffic: Arc<Sections>,
    pub traffic_hash: u64,
    pub own: Sections,
}

impl Layered {
    pub fn is_empty(&self) -> bool {
        self.traffic.0.is_empty() && self.own.0.is_empty()
    }

    /// The same version as the flat [`Sections`] with this content.
    pub fn version(&self) -> String {
        version(self.traffic_hash, self.own.part_hash(false))
    }

    /// What turns `self` into `next`; an unchanged shared traffic part is
    /// not even compared.
    pub fn diff<'a>(&self, next: &'a Layered) -> (Vec<(&'a str, &'a Section)>, Vec<String>) {
        let (mut changed, mut removed) = self.own.diff(&next.own);
        if !Arc::ptr_eq(&self.traffic, &next.traffic) {
            let (c, r) = self.traffic.diff(&next.traffic);
            changed.extend(c);
            removed.extend(r);
        }
        (changed, removed)
    }

    pub fn flatten(&self) -> Sections {
        Sections(
            self.traffic
                .0
                .iter()
                .chain(&self.own.0)
                .map(|(n, s)| (n.clone(), s.clone()))
                .collect(),
        )
    }
}

/// A 64-bit hash, stable across processes and releases (unlike std's
/// hasher): FNV's prime over eight bytes at a time, each step rotated so
/// that every bit reaches every other. For telling contents apart, not
/// against an adversary.
struct Fnv(u64);

impl Fnv {
    fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn word(&mut self, w: u64) {
        self.0 = (self.0 ^ w).wrapping_mul(0x0100_0000_01b3).rotate_left(29);
    }

    fn write(&mut self, bytes: &[u8]) {
        self.word(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.word(u64::from_le_bytes(w));
        }
        let mut last = [0u8; 8];
        last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.word(u64::from_le_bytes(last));
    }
}

/// A short name for exactly these byte strings, in this order.
pub fn content_hash<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut h = Fnv::new();
    for part in parts {
        h.write(part);
    }
    format!("{:016x}", h.0)
}
