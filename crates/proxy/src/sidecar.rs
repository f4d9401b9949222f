//! A sidecar: the listeners of one workload, started together on the
//! workload's own address, sharing one configuration snapshot.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use weft_identity::CertStore;
use weft_identity::tls::PeerPolicy;
use weft_model::ProxyConfig;

use crate::dns::Dns;
use crate::gateway::{self, Gateway};
use crate::hbone::{self, Pool, Tunnels};
use crate::http::{Body, full};
use crate::inbound::{self, Inbound};
use crate::metrics::Metrics;
use crate::origination::Originator;
use crate::outbound::{self, Outbound};
use crate::telemetry::AccessLog;

/// Istio's well-known ports.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    pub admin: u16,
    pub outbound: u16,
    /// Plaintext inbound, for ports PeerAuthentication leaves open to it.
    pub inbound: u16,
    pub hbone: u16,
    pub health: u16,
    pub metrics: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            admin: 15000,
            outbound: 15001,
            inbound: inbound::PLAINTEXT_PORT,
            hbone: hbone::HBONE_PORT,
            health: 15021,
            metrics: 15090,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("bind {addr}: {cause} (is another proxy using this workload address?)")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
}

/// What a proxy serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Beside one workload: outbound 15001, plaintext inbound 15006 and
    /// HBONE 15008.
    Sidecar,
    /// The Gateway servers selecting the workload, each on its port.
    Ingress,
    /// An egress gateway: the same servers, reachable only through HBONE
    /// (15008) from proxies with a mesh certificate, so that the way out
    /// of the mesh knows who is leaving and is no open proxy.
    Egress,
}

/// What a proxy is given besides its configuration and identity.
#[derive(Debug, Default)]
pub struct Options {
    pub ports: Ports,
    /// Where access-log lines go, if anywhere.
    pub access_log: Option<AccessLog>,
    /// The resolver for DNS endpoints.
    pub dns: Dns,
    /// Where `credentialName` folders are (`tls.crt`, `tls.key`,
    /// `ca.crt`): the certificates of gateway servers and the client
    /// certificates of DestinationRules.
    pub credentials: PathBuf,
    /// Roots that verify external servers when a DestinationRule names no
    /// CA; unset, `SSL_CERT_FILE` or the system's bundle.
    pub system_roots: Option<PathBuf>,
    /// A gateway's limits on connections and requests in flight.
    pub limits: crate::gateway::Limits,
    /// Transparent capture: iptables redirects the workload's outbound
    /// TCP to 15001 (which then listens on every address, as a local
    /// redirect goes to 127.0.0.1) and its inbound TCP to 15006.
    pub capture: bool,
}

/// The serving task of each bound gateway port.
type GatewayTasks = RwLock<HashMap<u32, JoinHandle<()>>>;

/// A running proxy; dropping it stops every listener.
#[derive(Debug)]
pub struct Sidecar {
    config: Arc<ArcSwap<ProxyConfig>>,
    metrics: Arc<Metrics>,
    tasks: Vec<JoinHandle<()>>,
    /// The ingress role's gateway ports, bound and released as the
    /// configuration adds and removes servers.
    gateway: Option<(Arc<Gateway>, GatewayTasks)>,
    pub address: IpAddr,
    pub ports: Ports,
}

impl Sidecar {
    /// Binds a sidecar's listeners on the workload's address and starts
    /// serving.
    pub async fn start(
        config: ProxyConfig,
        store: Arc<CertStore>,
        policy: PeerPolicy,
        ports: Ports,
        access_log: Option<AccessLog>,
    ) -> Result<Sidecar, StartError> {
        let options = Options {
            ports,
            access_log,
            ..Options::default()
        };
        Sidecar::start_as(Role::Sidecar, config, store, policy, options).await
    }

    /// Binds the listeners of `role` on the workload's address and starts
    /// serving.
    pub async fn start_as(
        role: Role,
        config: ProxyConfig,
        store: Arc<CertStore>,
        policy: PeerPolicy,
        options: Options,
    ) -> Result<Sidecar, StartError> {
        let Options {
            ports,
            access_log,
            dns,
            credentials,
            system_roots,
            limits,
            capture,
        } = options;
        let address = config.workload.address;
        let bind = |port: u16| async move {
            let addr = SocketAddr::new(address, port);
            TcpListener::bind(addr)
                .await
                .map_err(|cause| StartError::Bind { addr, cause })
        };
        let (health_l, admin_l, metrics_l) = (
            bind(ports.health).await?,
            bind(ports.admin).await?,
            bind(ports.metrics).await?,
        );
        let config = Arc::new(ArcSwap::from_pointee(config));
        let metrics = Metrics::new();
        let outbound = Arc::new(Outbound::new(
            config.clone(),
            Pool::new(store.clone(), policy.clone()).from_address(address),
            metrics.clone(),
            access_log,
            dns,
            Originator::new(credentials.clone(), system_roots),
        ));
        let admin_outbound = outbound.clone();
        let mut tasks = Vec::new();
        let mut gateway = None;
        match role {
            Role::Sidecar => {
                let out_l = if capture {
                    let addr = SocketAddr::new(IpAddr::from([0, 0, 0, 0]), ports.outbound);
                    TcpListener::bind(addr)
                        .await
                        .map_err(|cause| StartError::Bind { addr, cause })?
                } else {
                    bind(ports.outbound).await?
                };
                let (plain_l, hbone_l) = (bind(ports.inbound).await?, bind(ports.hbone).await?);
                let inbound = Arc::new(Inbound::new(
                    config.clone(),
                    metrics.clone(),
                    outbound.access_log.clone(),
                    outbound.clone(),
                ));
                tasks.push(tokio::spawn(outbound::serve(out_l, outbound)));
                tasks.push(tokio::spawn(inbound::serve_plaintext(
                    plain_l,
                    inbound.clone(),
                )));
                let (hbone_store, hbone_policy) = (store.clone(), policy);
                tasks.push(tokio::spawn(async move {
                    let to = Tunnels::Workload(inbound);
                    let _ = hbone::serve(hbone_l, hbone_store, hbone_policy, to).await;
                }));
            }
            Role::Ingress => {
                let g = Arc::new(Gateway::new(outbound, credentials, limits));
                let bound = RwLock::new(HashMap::new());
                bind_gateway_ports(&g, &config.load(), &bound, true)?;
                gateway = Some((g, bound));
            }
            Role::Egress => {
                let hbone_l = bind(ports.hbone).await?;
                let gateway = Gateway::new(outbound, credentials, limits);
                let to = Tunnels::Gateway(Arc::new(gateway));
                let (hbone_store, hbone_policy) = (store.clone(), policy);
                tasks.push(tokio::spawn(async move {
                    let _ = hbone::serve(hbone_l, hbone_store, hbone_policy, to).await;
                }));
            }
        }
        let exposition = metrics.clone();
        tasks.push(tokio::spawn(serve_small(metrics_l, move |req| {
            match req.uri().path() {
                "/stats/prometheus" => full(StatusCode::OK, exposition.encode()),
                _ => full(StatusCode::NOT_FOUND, "try /stats/prometheus\n"),
            }
        })));
        let ready = {
            let store = store.clone();
            move || store.current().is_some()
        };
        tasks.push(tokio::spawn(serve_small(health_l, move |req| {
            match req.uri().path() {
                "/healthz/ready" if ready() => full(StatusCode::OK, "ready\n"),
                "/healthz/ready" => full(StatusCode::SERVICE_UNAVAILABLE, "no certificate yet\n"),
                _ => full(StatusCode::NOT_FOUND, "try /healthz/ready\n"),
            }
        })));
        let (dump, stats) = (config.clone(), metrics.clone());
        tasks.push(tokio::spawn(serve_small(admin_l, move |req| {
            match req.uri().path() {
                "/logging" => logging(req),
                "/config_dump" => match serde_json::to_string_pretty(&**dump.load()) {
                    Ok(json) => full(StatusCode::OK, json),
                    Err(e) => full(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                },
                "/clusters" => full(StatusCode::OK, clusters(&dump.load(), &admin_outbound)),
                "/stats" | "/stats/prometheus" => full(StatusCode::OK, stats.encode()),
                _ => full(
                    StatusCode::NOT_FOUND,
                    "try /config_dump, /clusters, /stats or /logging\n",
                ),
            }
        })));
        Ok(Sidecar {
            config,
            metrics,
            tasks,
            gateway,
            address,
            ports,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<ProxyConfig> {
        self.config.load_full()
    }

    /// Swaps in a new configuration; requests in flight keep the old one.
    /// A gateway binds the ports of new servers and releases the ports
    /// no server uses any more.
    pub fn update(&self, config: ProxyConfig) {
        if let Some((g, bound)) = &self.gateway {
            if let Err(e) = bind_gateway_ports(g, &config, bound, false) {
                tracing::warn!("{e}");
            }
        }
        self.config.store(Arc::new(config));
        self.metrics.forget_cached();
    }

    pub fn outbound_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.ports.outbound)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some((_, bound)) = &self.gateway {
            if let Ok(bound) = bound.read() {
                for t in bound.values() {
                    t.abort();
                }
            }
        }
    }
}

/// Binds (and serves) the gateway ports of `config` not bound yet, and
/// stops those it no longer has. At start a port that cannot be bound is
/// an error; on reload it is logged and the other ports go on.
fn bind_gateway_ports(
    gateway: &Arc<Gateway>,
    config: &ProxyConfig,
    bound: &GatewayTasks,
    at_start: bool,
) -> Result<(), StartError> {
    let Ok(mut bound) = bound.write() else {
        return Ok(());
    };
    bound.retain(|port, task| {
        let keep = config.gateway.iter().any(|p| p.port == *port);
        if !keep {
            task.abort();
        }
        keep
    });
    for p in &config.gateway {
        if bound.contains_key(&p.port) {
            continue;
        }
        let Ok(port) = u16::try_from(p.port) else {
            continue;
        };
        let addr = SocketAddr::new(config.workload.address, port);
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(TcpListener::from_std);
        match listener {
            Ok(l) => {
                let task = tokio::spawn(gateway::serve_port(l, port, gateway.clone()));
                bound.insert(p.port, task);
            }
            Err(cause) if at_start => return Err(StartError::Bind { addr, cause }),
            Err(cause) => tracing::warn!("gateway port {addr}: {cause}"),
        }
    }
    Ok(())
}

/// `/clusters`: every cluster's endpoints, their identity and whether
/// outlier detection has ejected them.
fn clusters(config: &ProxyConfig, outbound: &Outbound) -> String {
    let clusters: Vec<serde_json::Value> = config
        .clusters
        .values()
        .map(|c| {
            let endpoints: Vec<serde_json::Value> = c
                .endpoints
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "address": e.address.to_string(),
                        "identity": e.identity,
                        "ejected": outbound.tracker.is_ejected(&c.name, e.address),
                    })
                })
                .collect();
            serde_json::json!({"name": c.name, "missing": c.missing, "endpoints": endpoints})
        })
        .collect();
    serde_json::to_string_pretty(&clusters).unwrap_or_default()
}

/// `/logging`: the log level; `POST /logging?level=debug` changes it.
fn logging(req: &Request<hyper::body::Incoming>) -> Response<Body> {
    let level = req
        .uri()
        .query()
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("level="));
    match (req.method(), level) {
        (&Method::POST, Some(name)) => match crate::logging::parse(name) {
            Some(l) => match crate::logging::set_level(l) {
                Ok(()) => {
                    tracing::info!("log level set to {l} through the admin endpoint");
                    full(StatusCode::OK, format!("active level: {l}\n"))
                }
                Err(e) => full(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
            },
            None => full(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown level {name:?}: use trace, debug, info, warning, error, critical or off\n"
                ),
            ),
        },
        (&Method::POST, None) => full(
            StatusCode::BAD_REQUEST,
            "usage: POST /logging?level=LEVEL\n",
        ),
        (_, Some(_)) => full(
            StatusCode::METHOD_NOT_ALLOWED,
            "changing the level requires POST\n",
        ),
        (_, None) => match crate::logging::level() {
            Some(l) => full(StatusCode::OK, format!("active level: {l}\n")),
            None => full(
                StatusCode::OK,
                "this process's log is not installed by weft\n",
            ),
        },
    }
}

/// A tiny HTTP/1 server answering by request (health, admin).
async fn serve_small(
    listener: TcpListener,
    answer: impl Fn(&Request<hyper::body::Incoming>) -> Response<Body> + Send + Sync + 'static,
) {
    let answer = Arc::new(answer);
    crate::http::serve_each(listener, move |tcp, _| {
        let answer = answer.clone();
        async move {
            let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                let answer = answer.clone();
                async move { Ok::<_, hyper::Error>(answer(&req)) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        }
    })
    .await;
}
