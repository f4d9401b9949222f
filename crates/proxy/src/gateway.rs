//! The ingress role: the Gateway servers selecting this proxy, each port on
//! the workload's address. HTTP is routed by Host through the
//! VirtualServices bound to the gateway (the same router as the outbound
//! listener); HTTPS and TLS servers are picked by SNI from the ClientHello
//! and either terminate TLS (SIMPLE, MUTUAL, OPTIONAL_MUTUAL, with the
//! server's certificate) or pass the bytes through untouched
//! (PASSTHROUGH, routed by SNI); TCP servers forward connections. As at
//! Envoy's edge, X-Forwarded-For gets the client's address,
//! X-Forwarded-Proto says how the client connected, and a client-sent
//! `x-forwarded-client-cert` is removed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use hyper::header::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::time::SystemTime;
use tokio::io::{AsyncRead, AsyncWrite};

use hyper::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use weft_model::config::{GatewayServer, ServerTls, ServerTlsMode, WeightedCluster, host_matches};
use weft_model::{Protocol, ProxyConfig};

use crate::authorize;
use crate::framing::StrictHeads;
use crate::http::flagged;
use crate::jwt::Authenticator;
use crate::origination::Credential;
use crate::outbound::{self, Listener, Outbound};
use crate::sni::{Prefixed, sniff};

/// What the gateway's ports share.
#[derive(Debug)]
pub struct Gateway {
    pub outbound: Arc<Outbound>,
    /// Where `credentialName` folders are.
    pub credentials: PathBuf,
    /// Server TLS configurations, by server name, rebuilt when the
    /// server's settings or its files change.
    tls: RwLock<HashMap<String, Served>>,
    /// RequestAuthentication at the gateway.
    authenticator: Authenticator,
    /// Connections served at once, and requests in flight, when limited.
    connections: Option<Arc<Semaphore>>,
    requests: Option<Arc<Semaphore>>,
}

/// A server's TLS configuration, the settings it was built from, and
/// when its files last changed.
type Served = (ServerTls, Vec<Option<SystemTime>>, Arc<ServerConfig>);

/// Limits of a gateway as a whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more are closed as they arrive.
    pub max_connections: Option<usize>,
    /// Requests in flight at once; more get 503 (flag OM, Envoy's
    /// overload answer).
    pub max_requests: Option<usize>,
}

/// Who opened a connection to a gateway port: its address, and its mesh
/// identity when it came through HBONE.
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub principal: Option<String>,
}

impl Gateway {
    /// Whether `target` is one of this gateway's server ports.
    pub fn serves(&self, target: SocketAddr) -> bool {
        let config = self.outbound.config.load();
        target.ip() == config.workload.address
            && config
                .gateway
                .iter()
                .any(|p| p.port == u32::from(target.port()))
    }

    pub fn new(outbound: Arc<Outbound>, credentials: PathBuf, limits: Limits) -> Gateway {
        let semaphore = |n: Option<usize>| n.map(|n| Arc::new(Semaphore::new(n)));
        Gateway {
            outbound,
            credentials,
            tls: RwLock::new(HashMap::new()),
            authenticator: Authenticator::default(),
            connections: semaphore(limits.max_connections),
            requests: semaphore(limits.max_requests),
        }
    }

    fn server_config(&self, server: &GatewayServer) -> Result<Arc<ServerConfig>, String> {
        let tls = server
            .tls
            .as_ref()
            .ok_or("the server has no tls settings")?;
        // A handshake looks at the files' times, so that a renewed
        // certificate is served from the next handshake on; connections
        // already open keep theirs.
        let (cert, key, ca) = files(tls, &self.credentials);
        let stamps: Vec<Option<SystemTime>> = [Some(cert), Some(key), ca]
            .iter()
            .map(|p| {
                p.as_ref()
                    .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            })
            .collect();
        if let Some((s, t, c)) = self
            .tls
            .read()
            .ok()
            .and_then(|m| m.get(&server.name).cloned())
        {
            if s == *tls && t == stamps {
                return Ok(c);
            }
        }
        let config = Arc::new(server_config(tls, server.protocol, &self.credentials)?);
        if let Ok(mut m) = self.tls.write() {
            m.insert(server.name.clone(), (tls.clone(), stamps, config.clone()));
        }
        Ok(config)
    }
}

/// The files of a server: its own paths, else those of its credential
/// folder.
fn files(tls: &ServerTls, dir: &Path) -> (PathBuf, PathBuf, Option<PathBuf>) {
    let cred = tls
        .credential_name
        .as_ref()
        .map(|c| Credential::in_dir(dir, c));
    let own = |p: &Option<String>| p.as_ref().map(PathBuf::from);
    let cert = own(&tls.server_certificate).or_else(|| cred.as_ref().map(|c| c.cert.clone()));
    let key = own(&tls.private_key).or_else(|| cred.as_ref().map(|c| c.key.clone()));
    let ca = own(&tls.ca_certificates).or_else(|| cred.and_then(|c| c.ca));
    (cert.unwrap_or_default(), key.unwrap_or_default(), ca)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

fn server_config(tls: &ServerTls, protocol: Protocol, dir: &Path) -> Result<ServerConfig, String> {
    let (cert, key, ca) = files(tls, dir);
    let chain = read_certs(&cert)?;
    let key = std::fs::read(&key)
        .map_err(|e| format!("{}: {e}", key.display()))
        .and_then(|pem| {
            PrivateKeyDer::from_pem_slice(&pem).map_err(|e| format!("{}: {e}", key.display()))
        })?;
    let provider = weft_identity::tls::provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = match tls.mode {
        ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            let ca = ca.ok_or("MUTUAL needs caCertificates or ca.crt in the credential")?;
            let mut roots = RootCertStore::empty();
            for c in read_certs(&ca)? {
                roots.add(c).map_err(|e| e.to_string())?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if tls.mode == ServerTlsMode::OptionalMutual {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| e.to_string())?)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| e.to_string())?;
    if protocol.is_http() || protocol == Protocol::Https {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    Ok(config)
}

/// Serves gateway port `port` on `listener` until the task is dropped.
pub async fn serve_port(listener: TcpListener, port: u16, gateway: Arc<Gateway>) {
    crate::http::serve_each(listener, move |tcp, addr| {
        let gateway = gateway.clone();
        let client = Client {
            addr,
            principal: None,
        };
        async move { connection(&gateway, tcp, client, port).await }
    })
    .await;
}

/// A permit under `limit` (`Some(None)` when there is no limit), or
/// `None` when the limit is reached.
fn admit(limit: Option<&Arc<Semaphore>>) -> Option<Option<OwnedSemaphorePermit>> {
    match limit {
        None => Some(None),
        Some(s) => s.clone().try_acquire_owned().ok().map(Some),
    }
}

/// Serves one client connection to gateway port `port`.
pub async fn connection<S>(gateway: &Arc<Gateway>, mut tcp: S, client: Client, port: u16)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(_permit) = admit(gateway.connections.as_ref()) else {
        tracing::debug!("gateway at its connection limit: {} closed", client.addr);
        return;
    };
    let config = gateway.outbound.config.load_full();
    let Some(gp) = config.gateway.iter().find(|p| p.port == u32::from(port)) else {
        return;
    };
    // ISTIO_MUTUAL servers take no one from outside the mesh.
    let mesh = client.principal.is_some();
    let Some(first) = gp.servers.iter().find(|s| mesh || !s.mesh_only) else {
        return;
    };
    let tls_port = gp
        .servers
        .iter()
        .any(|s| matches!(s.protocol, Protocol::Https | Protocol::Tls));
    if !tls_port {
        if first.protocol.is_http() {
            serve_http(gateway, tcp, client, port, None).await;
        } else {
            forward(gateway, &config, &first.tcp, tcp, "").await;
        }
        return;
    }
    let Some((sni, hello)) = sniff(&mut tcp).await else {
        return;
    };
    let Some(server) = gp.server_for_sni(sni.as_deref()) else {
        return;
    };
    let stream = Prefixed {
        prefix: hello,
        inner: tcp,
    };
    let mode = server.tls.as_ref().map(|t| t.mode);
    if mode == Some(ServerTlsMode::Passthrough) {
        let route = server.sni_routes.iter().find(|r| {
            r.sni_hosts
                .iter()
                .any(|h| sni.as_deref().is_some_and(|sni| host_matches(h, sni)))
        });
        if let Some(route) = route {
            forward(
                gateway,
                &config,
                &route.route,
                stream,
                sni.as_deref().unwrap_or(""),
            )
            .await;
        } else {
            tracing::debug!("TLS passthrough on {port}: no route for SNI {sni:?}");
        }
        return;
    }
    let tls_config = match gateway.server_config(server) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("gateway server {}: {e}", server.name);
            return;
        }
    };
    let tls = match TlsAcceptor::from(tls_config).accept(stream).await {
        Ok(tls) => tls,
        Err(e) => {
            tracing::debug!("TLS from {} on {port} refused: {e}", client.addr);
            return;
        }
    };
    if server.protocol == Protocol::Https || server.protocol.is_http() {
        serve_http(gateway, tls, client, port, Some(sni.unwrap_or_default())).await;
    } else {
        forward(
            gateway,
            &config,
            &server.tcp,
            tls,
            sni.as_deref().unwrap_or(""),
        )
        .await;
    }
}

/// HTTP on a gateway port: edge headers, then the shared router. `sni`
/// is the TLS server name over HTTPS (empty when the client sent none).
async fn serve_http<I>(
    gateway: &Arc<Gateway>,
    io: I,
    client: Client,
    port: u16,
    sni: Option<String>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let gateway = gateway.clone();
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let (gateway, client, sni) = (gateway.clone(), client.clone(), sni.clone());
        let https = sni.is_some();
        async move {
            let Some(_permit) = admit(gateway.requests.as_ref()) else {
                return Ok(flagged(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "OM",
                    "gateway overloaded: too many requests in flight",
                ));
            };
            let peer = client.addr;
            edge_headers(req.headers_mut(), peer, https);
            // The gateway's own AuthorizationPolicies (the client's
            // ipBlocks, paths, hosts...) decide before routing.
            let out = &gateway.outbound;
            let config = out.config.load_full();
            let local = SocketAddr::new(config.workload.address, port);
            let remote = remote_ip(req.headers(), config.num_trusted_proxies);
            let refused = authorize::refuse_http(
                &config,
                out,
                &gateway.authenticator,
                &mut req,
                authorize::Connection {
                    principal: client.principal.as_deref(),
                    source: peer,
                    remote,
                    destination: local,
                    sni: sni.as_deref().filter(|s| !s.is_empty()),
                },
            )
            .await;
            if let Some(refused) = refused {
                return Ok(refused);
            }
            req.extensions_mut().insert(outbound::Caller {
                principal: client.principal.clone(),
                remote: remote.or(Some(peer.ip())),
            });
            let listener = Listener::Gateway { port, https };
            Ok::<_, hyper::Error>(outbound::observed(out, req, peer, listener).await)
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let server =
        builder.serve_connection_with_upgrades(TokioIo::new(StrictHeads::new(io)), service);
    let _ = crate::upstream::serving(server).await;
}

/// What Envoy does at the edge: the client's address appended to
/// X-Forwarded-For, X-Forwarded-Proto set, and a client's claim of a
/// forwarded client certificate dropped.
fn edge_headers(h: &mut hyper::HeaderMap, peer: SocketAddr, https: bool) {
    let client = peer.ip().to_string();
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.is_empty() => format!("{prior}, {client}"),
        _ => client,
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert("x-forwarded-for", v);
    }
    h.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
    h.remove("x-forwarded-client-cert");
}

/// The original client by X-Forwarded-For (to which the peer was just
/// appended): `trusted` proxies in front of the gateway each appended one
/// entry, so the client is that many entries left of the last, as Envoy's
/// `xff_num_trusted_hops` reads it.
fn remote_ip(h: &hyper::HeaderMap, trusted: u32) -> Option<std::net::IpAddr> {
    let xff = h.get("x-forwarded-for")?.to_str().ok()?;
    let entries: Vec<&str> = xff.split(',').map(str::trim).collect();
    let i = entries
        .len()
        .checked_sub(1 + usize::try_from(trusted).ok()?)?;
    entries.get(i)?.parse().ok()
}

/// A TCP connection (or passed-through TLS) to an endpoint of the route;
/// `sni` is the name the client asked for, when it said one.
async fn forward<S>(
    gateway: &Gateway,
    config: &ProxyConfig,
    route: &[WeightedCluster],
    mut io: S,
    sni: &str,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let out = &gateway.outbound;
    let Some(chosen) = outbound::pick_cluster(out, route) else {
        return;
    };
    let Some(cluster) = outbound::find_cluster(out, config, &chosen.cluster, sni).await else {
        return;
    };
    let Some(ep) = outbound::pick_endpoint(out, &cluster) else {
        return;
    };
    match outbound::open(out, &cluster, ep).await {
        Ok(mut upstream) => {
            outbound::relay(out, cluster.shared(), ep, &mut io, &mut upstream).await
        }
        Err(e) => tracing::debug!("gateway TCP to {}: {e}", ep.address),
    }
}
