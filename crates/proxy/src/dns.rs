//! Names to addresses for clusters whose endpoints are DNS names
//! (ServiceEntry resolution DNS and DNS_ROUND_ROBIN) or the client's own
//! destination (resolution NONE). Lookups are asynchronous (hickory) and
//! answers are kept for their TTL, as Istio's `respect_dns_ttl`; when a
//! refresh fails, the last answer stays in use, as Envoy's DNS clusters
//! keep their hosts.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;

/// Answers are kept at least this long, so a zero TTL does not turn every
/// request into a lookup.
const MIN_TTL: Duration = Duration::from_secs(1);

/// The proxy's resolver and its answers by name.
pub struct Dns {
    resolver: Result<TokioResolver, String>,
    answers: RwLock<HashMap<String, Answer>>,
}

#[derive(Clone)]
struct Answer {
    addrs: Arc<[IpAddr]>,
    until: Instant,
}

impl std::fmt::Debug for Dns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dns")
            .field("resolver", &self.resolver.as_ref().map(|_| "hickory"))
            .finish_non_exhaustive()
    }
}

impl Default for Dns {
    fn default() -> Self {
        Dns::system()
    }
}

impl Dns {
    /// The machine's resolver: `/etc/resolv.conf` and `/etc/hosts`.
    pub fn system() -> Dns {
        let resolver = TokioResolver::builder_tokio()
            .and_then(|b| b.build())
            .map_err(|e| format!("the system's DNS configuration: {e}"));
        Dns::with(resolver)
    }

    /// Asks only `servers` (UDP, then TCP for truncated answers); the
    /// hosts file is not read.
    pub fn servers(servers: &[SocketAddr]) -> Dns {
        let name_servers = servers
            .iter()
            .map(|s| {
                let conn = |mut c: ConnectionConfig| {
                    c.port = s.port();
                    c
                };
                NameServerConfig::new(
                    s.ip(),
                    true,
                    vec![conn(ConnectionConfig::udp()), conn(ConnectionConfig::tcp())],
                )
            })
            .collect();
        let config = ResolverConfig::from_parts(None, Vec::new(), name_servers);
        let mut builder =
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
        let opts: &mut ResolverOpts = builder.options_mut();
        opts.use_hosts_file = ResolveHosts::Never;
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 1;
        Dns::with(builder.build().map_err(|e| e.to_string()))
    }

    fn with(resolver: Result<TokioResolver, String>) -> Dns {
        Dns {
            resolver,
            answers: RwLock::new(HashMap::new()),
        }
    }

    /// The addresses of `name` (an address is its own answer).
    pub async fn lookup(&self, name: &str) -> Result<Arc<[IpAddr]>, String> {
        if let Ok(ip) = name.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(Arc::from([ip]));
        }
        let now = Instant::now();
        let last = self.answers.read().ok().and_then(|m| m.get(name).cloned());
        if let Some(a) = &last {
            if a.until > now {
                return Ok(a.addrs.clone());
            }
        }
        let resolver = self.resolver.as_ref().map_err(Clone::clone)?;
        match resolver.lookup_ip(name).await {
            Ok(found) => {
                let addrs: Arc<[IpAddr]> = found.iter().collect();
                let until = found.valid_until().max(now + MIN_TTL);
                if let Ok(mut m) = self.answers.write() {
                    m.insert(
                        name.to_string(),
                        Answer {
                            addrs: addrs.clone(),
                            until,
                        },
                    );
                }
                Ok(addrs)
            }
            Err(e) => match last {
                Some(a) => {
                    tracing::debug!("DNS {name}: {e}; keeping the last answer");
                    Ok(a.addrs)
                }
                None => Err(format!("DNS {name}: {e}")),
            },
        }
    }
}
