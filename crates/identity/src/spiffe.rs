//! SPIFFE IDs as Istio uses them: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
//!
//! Parsing is strict, following the SPIFFE ID specification: a lowercase
//! trust domain of letters, digits, `.`, `-` and `_`; path segments of
//! letters, digits, `.`, `-` and `_`, none empty, `.` or `..`. That rules
//! out NUL and every other control character, percent-encoding, ports,
//! userinfo, queries and fragments.

use std::fmt;
use std::str::FromStr;

const SCHEME: &str = "spiffe://";
/// The SPIFFE specification's limits.
const MAX_ID_LEN: usize = 2048;
const MAX_TRUST_DOMAIN_LEN: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeError {
    #[error("{0:?} is not a SPIFFE ID: it must start with spiffe://")]
    Scheme(String),
    #[error("SPIFFE ID is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    #[error("empty trust domain")]
    EmptyTrustDomain,
    #[error("trust domain {domain:?} is longer than {MAX_TRUST_DOMAIN_LEN} bytes")]
    TrustDomainTooLong { domain: String },
    #[error(
        "trust domain {domain:?}: character {ch:?} is not allowed (lowercase letters, digits, '.', '-', '_')"
    )]
    TrustDomainChar { domain: String, ch: char },
    #[error("path segment {index} of {id:?} is empty")]
    EmptySegment { id: String, index: usize },
    #[error("path segment {segment:?} of {id:?} is not allowed")]
    DotSegment { id: String, segment: String },
    #[error(
        "character {ch:?} in path segment {segment:?} is not allowed (letters, digits, '.', '-', '_')"
    )]
    PathChar { segment: String, ch: char },
    #[error(
        "{id:?} is not a workload identity: expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    NotWorkload { id: String },
}

/// A SPIFFE trust domain, such as `cluster.local`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    pub fn new(domain: &str) -> Result<TrustDomain, SpiffeError> {
        if domain.is_empty() {
            return Err(SpiffeError::EmptyTrustDomain);
        }
        if domain.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(SpiffeError::TrustDomainTooLong {
                domain: domain.into(),
            });
        }
        if let Some(ch) = domain.chars().find(|c| {
            !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
        }) {
            return Err(SpiffeError::TrustDomainChar {
                domain: domain.into(),
                ch,
            });
        }
        Ok(TrustDomain(domain.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `spiffe://<trust-domain>`: the ID a signing certificate carries.
    pub fn id(&self) -> String {
        format!("{SCHEME}{}", self.0)
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TrustDomain::new(s)
    }
}

/// A workload identity: trust domain, namespace and service account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: TrustDomain,
    namespace: String,
    service_account: String,
}

impl SpiffeId {
    pub fn new(
        trust_domain: TrustDomain,
        namespace: &str,
        service_account: &str,
    ) -> Result<SpiffeId, SpiffeError> {
        let id = format!("{}/ns/{namespace}/sa/{service_account}", trust_domain.id());
        for segment in [namespace, service_account] {
            check_segment(&id, segment, 0)?;
        }
        Ok(SpiffeId {
            trust_domain,
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        })
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The same workload in another trust domain (for aliases).
    pub fn with_trust_domain(&self, trust_domain: TrustDomain) -> SpiffeId {
        SpiffeId {
            trust_domain,
            ..self.clone()
        }
    }
}

fn check_segment(id: &str, segment: &str, index: usize) -> Result<(), SpiffeError> {
    if segment.is_empty() {
        return Err(SpiffeError::EmptySegment {
            id: id.into(),
            index,
        });
    }
    if segment == "." || segment == ".." {
        return Err(SpiffeError::DotSegment {
            id: id.into(),
            segment: segment.into(),
        });
    }
    if let Some(ch) = segment
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(SpiffeError::PathChar {
            segment: segment.into(),
            ch,
        });
    }
    Ok(())
}

impl FromStr for SpiffeId {
    type Err = SpiffeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_ID_LEN {
            return Err(SpiffeError::TooLong);
        }
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| SpiffeError::Scheme(s.into()))?;
        let (domain, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let trust_domain = TrustDomain::new(domain)?;
        let segments: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        for (i, segment) in segments.iter().enumerate() {
            check_segment(s, segment, i)?;
        }
        match segments.as_slice() {
            ["ns", ns, "sa", sa] => Ok(SpiffeId {
                trust_domain,
                namespace: (*ns).to_string(),
                service_account: (*sa).to_string(),
            }),
            _ => Err(SpiffeError::NotWorkload { id: s.into() }),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/ns/{}/sa/{}",
            self.trust_domain.id(),
            self.namespace,
            self.service_account
        )
    }
}

/// The trust domains a verifier accepts: the mesh's own and its aliases
/// (MeshConfig `trustDomain` and `trustDomainAliases`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustDomains {
    primary: TrustDomain,
    aliases: Vec<TrustDomain>,
}

impl TrustDomains {
    pub fn new(primary: TrustDomain, aliases: Vec<TrustDomain>) -> TrustDomains {
        TrustDomains { primary, aliases }
    }

    pub fn primary(&self) -> &TrustDomain {
        &self.primary
    }

    pub fn allows(&self, domain: &TrustDomain) -> bool {
        *domain == self.primary || self.aliases.contains(domain)
    }
}

impl From<TrustDomain> for TrustDomains {
    fn from(primary: TrustDomain) -> Self {
        TrustDomains::new(primary, Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_ids_round_trip() {
        let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/reviews"
            .parse()
            .unwrap();
        assert_eq!(id.trust_domain().as_str(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "reviews");
        assert_eq!(
            id.to_string(),
            "spiffe://cluster.local/ns/default/sa/reviews"
        );
        let built = SpiffeId::new(
            TrustDomain::new("cluster.local").unwrap(),
            "default",
            "reviews",
        )
        .unwrap();
        assert_eq!(built, id);
    }

    #[test]
    fn bad_ids_are_refused_with_the_reason() {
        let err = |s: &str| s.parse::<SpiffeId>().unwrap_err().to_string();
        assert_eq!(
            err("http://cluster.local/ns/a/sa/b"),
            "\"http://cluster.local/ns/a/sa/b\" is not a SPIFFE ID: it must start with spiffe://"
        );
        assert_eq!(err("spiffe:///ns/a/sa/b"), "empty trust domain");
        assert_eq!(
            err("spiffe://Cluster.local/ns/a/sa/b"),
            "trust domain \"Cluster.local\": character 'C' is not allowed (lowercase letters, digits, '.', '-', '_')"
        );
        assert_eq!(
            err("spiffe://td:8080/ns/a/sa/b"),
            "trust domain \"td:8080\": character ':' is not allowed (lowercase letters, digits, '.', '-', '_')"
        );
        assert_eq!(
            err("spiffe://td/ns//sa/b"),
            "path segment 1 of \"spiffe://td/ns//sa/b\" is empty"
        );
        assert_eq!(
            err("spiffe://td/ns/a/sa/b/"),
            "path segment 4 of \"spiffe://td/ns/a/sa/b/\" is empty"
        );
        assert_eq!(
            err("spiffe://td/ns/../sa/b"),
            "path segment \"..\" of \"spiffe://td/ns/../sa/b\" is not allowed"
        );
        assert_eq!(
            err("spiffe://td/ns/a\0x/sa/b"),
            "character '\\0' in path segment \"a\\0x\" is not allowed (letters, digits, '.', '-', '_')"
        );
        assert_eq!(
            err("spiffe://td/ns/a%20/sa/b"),
            "character '%' in path segment \"a%20\" is not allowed (letters, digits, '.', '-', '_')"
        );
        assert_eq!(
            err("spiffe://td/ns/a/sa/b?x=1"),
            "character '?' in path segment \"b?x=1\" is not allowed (letters, digits, '.', '-', '_')"
        );
        assert_eq!(
            err("spiffe://td/ns/a"),
            "\"spiffe://td/ns/a\" is not a workload identity: expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
        );
        assert_eq!(
            err("spiffe://td"),
            "\"spiffe://td\" is not a workload identity: expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
        );
        assert_eq!(
            &err(&format!("spiffe://td/ns/{}/sa/b", "a".repeat(3000))),
            "SPIFFE ID is longer than 2048 bytes"
        );
        assert!(SpiffeId::new(TrustDomain::new("td").unwrap(), "a/b", "c").is_err());
    }

    #[test]
    fn aliases_are_allowed() {
        let tds = TrustDomains::new(
            TrustDomain::new("new.td").unwrap(),
            vec![TrustDomain::new("old.td").unwrap()],
        );
        assert!(tds.allows(&TrustDomain::new("old.td").unwrap()));
        assert!(tds.allows(&TrustDomain::new("new.td").unwrap()));
        assert!(!tds.allows(&TrustDomain::new("other.td").unwrap()));
    }
}
