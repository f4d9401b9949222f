//! One proxy's compiled configuration: what it listens for, how requests
//! are routed, and where clusters' endpoints are. Immutable once built; the
//! proxy swaps a whole new one in. Serializes to JSON for `/config_dump`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::peer_auth::Mtls;
use crate::protocol::Protocol;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProxyConfig {
    pub workload: WorkloadInfo,
    /// Services this proxy can reach, by host and port.
    pub outbound: Vec<OutboundService>,
    pub clusters: Clusters,
    /// The workload's own ports, served through inbound HBONE.
    pub inbound: Vec<InboundPort>,
    /// The AuthorizationPolicies that apply to this workload.
    pub authz: crate::authz::Authz,
    /// The RequestAuthentication JWT rules that apply to this workload.
    pub jwt: Vec<crate::jwt::JwtRule>,
    /// How request paths are normalized before authorization and routing.
    pub path_normalization: crate::normalize::Normalization,
    /// What happens to requests for hosts the registry does not know.
    pub outbound_policy: OutboundPolicy,
    /// Proxies in front of a gateway trusted to append to X-Forwarded-For:
    /// the client (`remote.ip`) is that many entries left of the last.
    pub num_trusted_proxies: u32,
    /// Gateway servers by port, when Gateways select this workload (the
    /// ingress role serves them).
    pub gateway: Vec<GatewayPort>,
    /// MeshConfig `trustDomainAliases`: peers of these trust domains are
    /// accepted too.
    pub trust_domain_aliases: Vec<String>,
    /// Rate limits this proxy enforces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<crate::rate_limit::RateLimit>,
    /// The identity of each in-mesh endpoint, for the HBONE connector.
    #[serde(skip)]
    pub identities: HashMap<SocketAddr, String>,
}

impl ProxyConfig {
    /// The JSON form `/config_dump` shows and the control plane pushes.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Each in-mesh endpoint's SPIFFE ID, by address.
pub(crate) fn index_identities(clusters: &Clusters) -> HashMap<SocketAddr, String> {
    clusters
        .values()
        .flat_map(|c| &c.endpoints)
        .filter_map(|e| Some((e.address, e.identity.clone()?)))
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkloadInfo {
    pub namespace: String,
    pub name: String,
    pub address: IpAddr,
    pub service_account: String,
    /// `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`
    pub identity: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InboundPort {
    pub port: u32,
    pub name: String,
    /// How the inbound side reads the port: HTTP is parsed (metrics,
    /// policy), anything else passes through as TCP.
    pub protocol: Protocol,
    /// The service whose port sends traffic here, for metrics.
    pub service: Option<String>,
    /// Whether plaintext (15006) may reach the port.
    pub mtls: Mtls,
}

/// `outboundTrafficPolicy`: hosts outside the registry are refused
/// (REGISTRY_ONLY, weft's default) or passed through (ALLOW_ANY).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundPolicy {
    #[default]
    RegistryOnly,
    AllowAny,
}

/// A port of a gateway proxy and the Gateway servers on it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayPort {
    pub port: u32,
    pub servers: Vec<GatewayServer>,
}

impl GatewayPort {
    /// The virtual host (and its server) that serves `host`, as Envoy picks
    /// one: an exact name first, then the longest wildcard suffix.
    pub fn vhost(&self, host: &str) -> Option<(&GatewayServer, &OutboundService)> {
        let mut best: Option<(usize, &GatewayServer, &OutboundService)> = None;
        for server in &self.servers {
            for v in &server.vhosts {
                let rank = if v.host.eq_ignore_ascii_case(host) {
                    usize::MAX
                } else if let Some(suffix) = v.host.strip_prefix('*') {
                    let hit = host.len() > suffix.len()
                        && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix);
                    if !hit {
                        continue;
                    }
                    suffix.len()
                } else {
                    continue;
                };
                if best.is_none_or(|(r, _, _)| rank > r) {
                    best = Some((rank, server, v));
                }
            }
        }
        best.map(|(_, s, v)| (s, v))
    }

    /// The server whose hosts cover `sni` (any server when there is none).
    pub fn server_for_sni(&self, sni: Option<&str>) -> Option<&GatewayServer> {
        match sni {
            Some(name) => self
                .servers
                .iter()
                .find(|s| s.hosts.iter().any(|h| host_matches(h, name)))
                .or_else(|| self.servers.first()),
            None => self.servers.first(),
        }
    }
}

/// Whether host pattern `pattern` (`*`, `*.example.com` or a name) covers
/// `host`, ignoring case.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => {
            host.len() >= suffix.len()
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
        }
        None => pattern.eq_ignore_ascii_case(host),
    }
}

/// One server of a Gateway resource.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayServer {
    /// `namespace/gateway` and the server's index or name.
    pub name: String,
    /// Host patterns, without their namespace part.
    pub hosts: Vec<String>,
    pub protocol: Protocol,
    pub tls: Option<ServerTls>,
    /// `tls.mode: ISTIO_MUTUAL`: the server takes mesh traffic only,
    /// through HBONE, whose mTLS stands for the server's own; `protocol`
    /// is what is spoken inside (HTTPS as HTTP, TLS as TCP).
    #[serde(default)]
    pub mesh_only: bool,
    /// Plain HTTP is redirected to HTTPS (301).
    pub https_redirect: bool,
    /// HTTP routing by Host, from the VirtualServices bound to the gateway.
    pub vhosts: Vec<OutboundService>,
    /// TCP (or terminated TLS) routing.
    pub tcp: Vec<WeightedCluster>,
    /// TLS passthrough routing by SNI.
    pub sni_routes: Vec<SniRoute>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SniRoute {
    pub sni_hosts: Vec<String>,
    pub route: Vec<WeightedCluster>,
}

/// How a gateway server handles TLS.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ServerTls {
    pub mode: ServerTlsMode,
    /// Files, or `credential_name`: a folder of `tls.crt`, `tls.key` and
    /// `ca.crt` beside the configuration.
    pub server_certificate: Option<String>,
    pub private_key: Option<String>,
    pub ca_certificates: Option<String>,
    pub credential_name: Option<String>,
    pub subject_alt_names: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    Simple,
    Mutual,
    OptionalMutual,
    Passthrough,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OutboundService {
    pub host: String,
    pub port: u32,
    pub protocol: Protocol,
    /// HTTP routes in order; the first that matches wins.
    pub routes: Vec<HttpRoute>,
    /// For TCP and TLS ports: where connections go.
    pub tcp: Vec<WeightedCluster>,
    /// TLS routes by SNI (VirtualService `tls`), tried before `tcp`.
    pub tls: Vec<SniRoute>,
    /// The ServiceEntry's `addresses` (addresses and CIDR blocks): a
    /// client's destination address among them names this service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
}

impl OutboundService {
    /// Whether destination address `ip` is one of the service's.
    pub fn has_address(&self, ip: IpAddr) -> bool {
        self.addresses.iter().any(|b| crate::authz::in_block(b, ip))
    }

    /// Whether `host` (without port) names this service for a client in
    /// `namespace`: its full name, or for a Kubernetes-style host
    /// `name.ns.svc.cluster.local` also `name.ns.svc`, `name.ns`, and `name`
    /// from its own namespace. The short names are decided here, at the
    /// client, so that the compiled services are the same for every
    /// namespace.
    pub fn answers_to(&self, host: &str, namespace: &str) -> bool {
        if self.host.eq_ignore_ascii_case(host) {
            return true;
        }
        let Some(base) = self.host.strip_suffix(".svc.cluster.local") else {
            return false;
        };
        let prefix_is_base = host
            .get(..base.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(base));
        if prefix_is_base
            && (host.len() == base.len() || host[base.len()..].eq_ignore_ascii_case(".svc"))
        {
            return true;
        }
        base.split_once('.')
            .is_some_and(|(name, ns)| ns == namespace && name.eq_ignore_ascii_case(host))
    }

    /// The first route that matches the request, as Istio orders them.
    pub fn route(&self, req: &RequestView<'_>) -> Option<&HttpRoute> {
        self.routes
            .iter()
            .find(|r| r.matches.is_empty() || r.matches.iter().any(|m| m.matches(req)))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpRoute {
    pub name: Option<String>,
    /// Any one of these selects the route; none means every request.
    pub matches: Vec<RequestMatch>,
    pub action: RouteAction,
    #[serde(with = "crate::wire::opt_duration")]
    pub timeout: Option<Duration>,
    pub retries: Retry,
    pub fault: Option<Fault>,
    pub rewrite: Option<Rewrite>,
    pub headers: HeaderOps,
    pub mirror: Option<Mirror>,
    pub cors: Option<Cors>,
}

/// A route's CORS policy, applied as Envoy's CORS filter applies it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cors {
    pub allow_origins: Vec<StrMatch>,
    /// Header values, already joined with ", "; empty when not set.
    pub allow_methods: String,
    pub allow_headers: String,
    pub expose_headers: String,
    pub max_age: Option<u64>,
    pub allow_credentials: bool,
    /// Whether a preflight from an origin not allowed goes on to the app
    /// (Istio's `unmatchedPreflights: FORWARD`, the default).
    pub forward_unmatched_preflights: bool,
}

impl Cors {
    /// Whether `origin` may make cross-origin requests; an exact `*`
    /// allows every origin, as in Envoy.
    pub fn allows(&self, origin: &str) -> bool {
        self.allow_origins
            .iter()
            .any(|m| matches!(m, StrMatch::Exact(e) if e == "*") || m.matches(origin))
    }
}

impl HttpRoute {
    /// The prefix the request matched by, when it matched a uri prefix:
    /// what a `rewrite.uri` replaces.
    pub fn matched_prefix(&self, req: &RequestView<'_>) -> Option<&str> {
        self.matches
            .iter()
            .find(|m| m.matches(req))
            .and_then(|m| match &m.uri {
                Some(StrMatch::Prefix(p)) => Some(p.as_str()),
                _ => None,
            })
    }
}

/// Istio's retry policy. Without `retries` on a route, Istio retries twice
/// on connection failures, refused streams and 503s; `attempts: 0` turns
/// retries off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Retry {
    pub attempts: u32,
    #[serde(with = "crate::wire::opt_duration")]
    pub per_try_timeout: Option<Duration>,
    pub retry_on: Vec<String>,
}

impl Default for Retry {
    fn default() -> Self {
        Retry {
            attempts: 2,
            per_try_timeout: None,
            retry_on: vec![
                "connect-failure".into(),
                "refused-stream".into(),
                "503".into(),
            ],
        }
    }
}

impl Retry {
    /// Whether a response status is worth another attempt.
    pub fn on_status(&self, status: u16) -> bool {
        self.retry_on.iter().any(|p| match p.as_str() {
            "5xx" => status >= 500,
            "gateway-error" => matches!(status, 502..=504),
            "retriable-4xx" => status == 409,
            code => code.parse::<u16>().is_ok_and(|c| c == status),
        })
    }

    /// Whether a failure to connect or a reset is worth another attempt.
    pub fn on_connect_failure(&self) -> bool {
        self.retry_on.iter().any(|p| {
            matches!(
                p.as_str(),
                "connect-failure" | "reset" | "5xx" | "gateway-error" | "refused-stream"
            )
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// Delay and the percentage of requests it applies to.
    pub delay: Option<(FaultDelay, f64)>,
    /// Status and the percentage of requests it applies to.
    pub abort: Option<(u16, f64)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultDelay(#[serde(with = "crate::wire::duration")] pub Duration);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rewrite {
    /// Replaces the matched prefix, or the whole path.
    pub uri: Option<String>,
    pub authority: Option<String>,
    /// RE2 match (compiled once, here) and replacement over the path.
    #[serde(with = "crate::wire::opt_regex_rewrite")]
    pub uri_regex: Option<(regex::Regex, String)>,
}

/// Header changes on the request to the upstream and on its response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeaderOps {
    pub request: Ops,
    pub response: Ops,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ops {
    pub set: Vec<(String, String)>,
    pub add: Vec<(String, String)>,
    pub remove: Vec<String>,
}

impl Ops {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mirror {
    pub cluster: String,
    /// Percentage of requests copied (default 100).
    pub percent: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    Forward(Vec<WeightedCluster>),
    DirectResponse {
        status: u16,
        body: Option<String>,
    },
    Redirect {
        uri: Option<String>,
        authority: Option<String>,
        scheme: Option<String>,
        port: Option<u32>,
        code: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightedCluster {
    pub cluster: String,
    pub weight: u32,
    /// Header changes for this destination only.
    pub headers: HeaderOps,
}

/// A view of a request for matching, independent of any HTTP library.
pub struct RequestView<'a> {
    pub method: &'a str,
    pub scheme: &'a str,
    pub authority: &'a str,
    /// Path with query string.
    pub path: &'a str,
    pub port: u32,
    pub headers: &'a (dyn Fn(&str) -> Option<&'a str> + Sync),
    /// The request's validated JWT, for `@request.auth.claims.*` matches.
    pub auth: Option<&'a crate::authz::RequestAuth>,
}

impl std::fmt::Debug for RequestView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestView")
            .field("method", &self.method)
            .field("authority", &self.authority)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RequestMatch {
    pub uri: Option<StrMatch>,
    pub scheme: Option<StrMatch>,
    pub method: Option<StrMatch>,
    pub authority: Option<StrMatch>,
    pub headers: Vec<HeaderMatch>,
    pub query_params: Vec<(String, StrMatch)>,
    pub port: Option<u32>,
    pub ignore_uri_case: bool,
}

impl RequestMatch {
    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        let (path, query) = match req.path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (req.path, None),
        };
        if let Some(uri) = &self.uri {
            let ok = if self.ignore_uri_case {
                uri.matches_ignore_case(path)
            } else {
                uri.matches(path)
            };
            if !ok {
                return false;
            }
        }
        let single = [
            (&self.scheme, req.scheme),
            (&self.method, req.method),
            (&self.authority, req.authority),
        ];
        if single
            .iter()
            .any(|(m, v)| m.as_ref().is_some_and(|m| !m.matches(v)))
        {
            return false;
        }
        if self.port.is_some_and(|p| p != req.port) {
            return false;
        }
        if !self.headers.iter().all(|h| h.matches_request(req)) {
            return false;
        }
        self.query_params.iter().all(|(name, m)| {
            query
                .into_iter()
                .flat_map(|q| q.split('&'))
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .any(|(k, v)| k == name && m.matches(v))
        })
    }
}

/// A header condition: `matcher` on its value; with `absent`, the header
/// must not be there (or must not match, for `withoutHeaders` with a value).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeaderMatch {
    /// Lower case.
    pub name: String,
    pub matcher: Option<StrMatch>,
    pub invert: bool,
}

impl HeaderMatch {
    /// A header, or with `@request.auth.claims.a.b` a claim of the
    /// request's validated JWT (any element of a list claim may match).
    fn matches_request(&self, req: &RequestView<'_>) -> bool {
        let Some(claim) = self.name.strip_prefix("@request.auth.claims.") else {
            return self.matches((req.headers)(&self.name));
        };
        let key = format!("request.auth.claims[{}]", claim.replace('.', "]["));
        let values = req.auth.map(|a| a.values(&key)).unwrap_or_default();
        if values.is_empty() {
            return self.matches(None);
        }
        let hit = values
            .iter()
            .any(|v| self.matcher.as_ref().is_none_or(|m| m.matches(v)));
        hit != self.invert
    }

    fn matches(&self, value: Option<&str>) -> bool {
        let hit = match (value, &self.matcher) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(v), Some(m)) => m.matches(v),
        };
        hit != self.invert
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrMatch {
    Exact(String),
    Prefix(String),
    /// Anchored: the whole value must match, as Envoy's safe_regex does.
    Regex(#[serde(with = "crate::wire::regex")] regex::Regex),
}

impl StrMatch {
    pub fn matches(&self, v: &str) -> bool {
        match self {
            StrMatch::Exact(e) => v == e,
            StrMatch::Prefix(p) => v.starts_with(p.as_str()),
            StrMatch::Regex(r) => r.is_match(v),
        }
    }

    fn matches_ignore_case(&self, v: &str) -> bool {
        match self {
            StrMatch::Exact(e) => v.eq_ignore_ascii_case(e),
            StrMatch::Prefix(p) => {
                v.len() >= p.len()
                    && v.is_char_boundary(p.len())
                    && v[..p.len()].eq_ignore_ascii_case(p)
            }
            StrMatch::Regex(r) => r.is_match(v),
        }
    }
}

/// Clusters by name, each shared: a request holds its cluster for its
/// telemetry with one reference count, not a copy of its names.
pub type Clusters = BTreeMap<String, std::sync::Arc<Cluster>>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    pub name: String,
    pub host: String,
    /// The namespace of the service, for telemetry.
    pub service_namespace: Option<String>,
    pub port: u32,
    /// What the upstream speaks: HTTP/2 (and gRPC) ports get HTTP/2.
    pub protocol: Protocol,
    pub subset: Option<String>,
    pub endpoints: Vec<std::sync::Arc<ClusterEndpoint>>,
    /// Endpoints the proxy finds by DNS, besides `endpoints`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsEndpoints>,
    /// The host is not in the registry: requests get 503 with flag NC.
    pub missing: bool,
    /// Load balancing, circuit breaking and outlier detection.
    pub policy: crate::policy::ClusterPolicy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterEndpoint {
    /// Workload address and the port the application listens on.
    pub address: SocketAddr,
    /// The SPIFFE ID to expect; `None` for endpoints outside the mesh,
    /// reached directly instead of through HBONE.
    pub identity: Option<String>,
    pub weight: u32,
    /// Telemetry: the workload behind the endpoint, its namespace and labels.
    pub workload: Option<String>,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// A cluster's endpoints by name, resolved by the proxy (Envoy's
/// STRICT_DNS and LOGICAL_DNS clusters, and the original destination of
/// a ServiceEntry of resolution NONE).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsEndpoints {
    /// DNS_ROUND_ROBIN: each name's first address only; DNS: all of them.
    #[serde(default)]
    pub first_only: bool,
    /// Resolution NONE: the destination the client asked for (its name
    /// resolved, or its address), as Envoy's original-destination cluster.
    #[serde(default)]
    pub original: bool,
    #[serde(default)]
    pub names: Vec<DnsName>,
    /// The port when the client's destination is used.
    pub port: u16,
    /// Telemetry: the namespace of the ServiceEntry.
    pub namespace: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DnsName {
    pub name: String,
    pub port: u16,
    pub weight: u32,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Envoy-style cluster names: `outbound|PORT|SUBSET|HOST`.
pub fn cluster_name(port: u32, subset: Option<&str>, host: &str) -> String {
    format!("outbound|{port}|{}|{host}", subset.unwrap_or(""))
}
