//! Types shared by several Istio resources: selectors, target references,
//! durations, percentages and the Kubernetes object metadata.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer};

/// Labels or annotations: ordered so output and hashing are stable.
pub type Labels = BTreeMap<String, String>;

/// The part of Kubernetes' ObjectMeta that the mesh reads; the rest
/// (managedFields, uid, ...) is accepted and ignored as the API server does.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: Option<String>,
    pub generate_name: Option<String>,
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: Labels,
    #[serde(default)]
    pub annotations: Labels,
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
    pub uid: Option<String>,
    pub creation_timestamp: Option<String>,
}

/// `istio.type.v1beta1.WorkloadSelector`: `{matchLabels: {...}}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadSelector {
    #[serde(default)]
    pub match_labels: Labels,
}

/// The `{labels: {...}}` selector of networking resources (Sidecar,
/// ServiceEntry, EnvoyFilter).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelsSelector {
    #[serde(default)]
    pub labels: Labels,
}

/// `istio.type.v1beta1.PolicyTargetReference`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyTargetReference {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub name: Option<String>,
    pub namespace: Option<String>,
}

/// `{value: 12.5}`: a percentage as a double.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Percent {
    pub value: Option<f64>,
}

/// A duration as Istio writes it: protobuf's `"1.5s"` or Go's `"1m30s"`,
/// `"100ms"`. Negative durations do not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub fn parse(s: &str) -> Result<Duration, String> {
        parse_duration(s).map(Duration)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Duration::parse(&s).map_err(de::Error::custom)
    }
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    const UNITS: [(&str, f64); 7] = [
        ("ns", 1e-9),
        ("us", 1e-6),
        ("µs", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ];
    let bad = || {
        format!("invalid duration `{s}`: expected a number and unit such as 1.5s, 100ms or 1m30s")
    };
    if s.starts_with('-') {
        return Err(format!("invalid duration `{s}`: must not be negative"));
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut seconds = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let scale = UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, scale)| *scale)
            .ok_or_else(bad)?;
        seconds += number * scale;
        rest = &rest[unit_len..];
    }
    std::time::Duration::try_from_secs_f64(seconds).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_in_protobuf_and_go_forms() {
        let ms = |n| std::time::Duration::from_millis(n);
        assert_eq!(Duration::parse("1.5s").unwrap().0, ms(1500));
        assert_eq!(Duration::parse("100ms").unwrap().0, ms(100));
        assert_eq!(Duration::parse("1m30s").unwrap().0, ms(90_000));
        assert_eq!(Duration::parse("1h").unwrap().0, ms(3_600_000));
        assert_eq!(Duration::parse("0").unwrap().0, ms(0));
        assert_eq!(Duration::parse("0s").unwrap().0, ms(0));
        for bad in ["", "10", "1x", "s", "-1s", "1.2.3s", "1sm"] {
            assert!(Duration::parse(bad).is_err(), "{bad} should not parse");
        }
    }
}
