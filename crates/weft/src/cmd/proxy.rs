//! `weft proxy`: a sidecar for one workload, standalone: configuration from a
//! folder of Istio YAML, certificate from a CA directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tracing_subscriber::filter::LevelFilter;
use weft_control::Folder;
use weft_identity::tls::PeerPolicy;
use weft_identity::{Ca, CertStore, Rotator, SpiffeId, TrustDomain, TrustDomains, ca};
use weft_model::{ProxyConfig, Registry, compile};
use weft_proxy::dns::Dns;
use weft_proxy::{Options, Ports, Sidecar, managed};

/// Run the sidecar of workload NS/NAME (its WorkloadEntry gives address,
/// labels, service account and ports): outbound 15001, HBONE 15008, plaintext
/// inbound 15006 (only to ports PeerAuthentication leaves PERMISSIVE or
/// DISABLE; with no policy weft is STRICT), health 15021, admin 15000,
/// Prometheus 15090, all on the workload's address; one
/// JSON access-log line per request on standard output. Reloads on SIGHUP and
/// when the folder or the mesh config file changes; a configuration that fails validation is
/// refused and the last good one stays.
///
/// Managed by a control plane instead (`--control-plane`), the proxy gets
/// its first certificate with the bootstrap token, renews it with the
/// current one, and takes its configuration from the control plane's
/// stream; it is ready only after both, and keeps serving what it has
/// while the control plane is unreachable, reconnecting with backoff.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Folder of Istio YAML: WorkloadEntries, ServiceEntries, routing and
    /// policy. With --control-plane, only where an ingress gateway reads
    /// its credentialName folders.
    #[arg(long, value_name = "DIR", required_unless_present = "control_plane")]
    mesh_dir: Option<PathBuf>,
    /// This proxy's workload, as NAMESPACE/NAME of its WorkloadEntry (or,
    /// with --control-plane and --address, of a WorkloadGroup: the control
    /// plane registers this instance while it is connected).
    #[arg(long, value_name = "NS/NAME")]
    workload: String,
    /// The CA directory that signs this workload's certificate.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "control_plane",
        conflicts_with = "control_plane"
    )]
    ca_dir: Option<PathBuf>,
    /// The control plane to take configuration and certificates from;
    /// several replicas separated by commas, tried in turn.
    #[arg(long, value_name = "URL[,URL...]", requires_all = ["token", "root_cert"])]
    control_plane: Option<String>,
    /// A bootstrap token for the first certificate (`weft token issue`).
    #[arg(long, value_name = "FILE", requires = "control_plane")]
    token: Option<PathBuf>,
    /// The mesh's root certificate, to verify the control plane.
    #[arg(long, value_name = "FILE", requires = "control_plane")]
    root_cert: Option<PathBuf>,
    /// This instance's address, when --workload names a WorkloadGroup.
    #[arg(long, value_name = "IP", requires = "control_plane")]
    address: Option<std::net::IpAddr>,
    /// MeshConfig YAML the configuration is validated against (as in the
    /// `mesh` key of the `istio` ConfigMap). The trust domain comes from the
    /// CA; trustDomainAliases (read at start) are accepted from peers.
    #[arg(long, value_name = "FILE")]
    mesh_config: Option<PathBuf>,
    /// The proxy's role.
    #[arg(long, value_enum, default_value_t = Role::Sidecar)]
    role: Role,
    /// Worker threads [default: 1 for a sidecar, which serves one workload
    /// and then runs on one thread, waking no other; one per core for a
    /// gateway].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// DNS servers (IP:PORT) for ServiceEntry hosts of resolution DNS,
    /// instead of /etc/resolv.conf and /etc/hosts; may be repeated.
    #[arg(long, value_name = "ADDR")]
    dns_server: Vec<std::net::SocketAddr>,
    /// Transparent capture (a workload in its own network namespace with
    /// iptables rules like istio-init's): the outbound listener :15001
    /// takes redirected connections on every address, and each goes where
    /// it was meant to (SO_ORIGINAL_DST).
    #[arg(long)]
    capture: bool,
    /// A gateway's limit on connections served at once (more are closed
    /// as they arrive).
    #[arg(long, value_name = "N")]
    max_connections: Option<usize>,
    /// A gateway's limit on requests in flight (more get 503, flag OM).
    #[arg(long, value_name = "N")]
    max_requests: Option<usize>,
    /// Where the per-request JSON access log goes.
    #[arg(long, value_enum, default_value_t = AccessLogTo::Stdout)]
    access_log: AccessLogTo,
    /// The log level on standard error (trace, debug, info, warning, error,
    /// off); `POST /logging?level=LEVEL` on the admin port changes it.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = log_level)]
    log_level: LevelFilter,
}

pub(crate) fn log_level(s: &str) -> Result<LevelFilter, String> {
    weft_proxy::logging::parse(s).ok_or_else(|| {
        format!("unknown level {s:?}: use trace, debug, info, warning, error, critical or off")
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AccessLogTo {
    Stdout,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Role {
    /// Beside one workload.
    Sidecar,
    /// An ingress gateway: serves the Gateway servers whose selector
    /// matches the workload's labels, on their ports; `credentialName`
    /// names a folder of tls.crt, tls.key and ca.crt in --mesh-dir.
    Ingress,
    /// An egress gateway: the same Gateway servers, reached only through
    /// HBONE (:15008) by proxies with a mesh certificate, never directly.
    Egress,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (ns, name) = args
        .workload
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .with_context(|| format!("--workload {:?}: expected NAMESPACE/NAME", args.workload))?;
    weft_proxy::logging::init(args.log_level);
    let threads = match (args.threads, args.role) {
        (Some(n), _) => Some(n),
        (None, Role::Sidecar) => Some(1),
        (None, Role::Ingress | Role::Egress) => None,
    };
    // One thread runs everything on the thread that drives the runtime:
    // no work stealing, no waking another thread for each request.
    let mut builder = match threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = builder.enable_all().build()?;
    if args.control_plane.is_some() {
        runtime.block_on(serve_managed(&args, ns, name))
    } else {
        runtime.block_on(serve(&args, ns, name))
    }
}

/// The configuration in `dir`, or every error that stops it.
pub(crate) fn load(
    dir: &Path,
    mesh_config: Option<&Path>,
    ns: &str,
    name: &str,
    trust_domain: &str,
) -> Result<ProxyConfig, String> {
    compiled(&folder(dir, mesh_config), ns, name, trust_domain)
}

/// The configuration of workload `ns`/`name` compiled from `folder`, or
/// every error that stops it.
fn compiled(
    folder: &Folder,
    ns: &str,
    name: &str,
    trust_domain: &str,
) -> Result<ProxyConfig, String> {
    let set = folder.load(trust_domain)?;
    let registry = Registry::from_resources(&set.resources);
    compile(&set.resources, &registry, ns, name, &set.mesh).map_err(|e| e.to_string())
}

/// Verifies peers: mesh certificates of `trust_domain` or of the
/// configuration's trustDomainAliases (read when the proxy starts).
fn peer_policy(
    bundle: Arc<weft_identity::TrustBundle>,
    trust_domain: TrustDomain,
    config: &ProxyConfig,
) -> anyhow::Result<PeerPolicy> {
    let aliases = config
        .trust_domain_aliases
        .iter()
        .map(|a| TrustDomain::new(a))
        .collect::<Result<_, _>>()
        .context("MeshConfig trustDomainAliases")?;
    Ok(PeerPolicy {
        bundle,
        trust_domains: TrustDomains::new(trust_domain, aliases),
        expected: Vec::new(),
    })
}

/// What sets off a look at the folder: its file events, or, where those
/// cannot be had (no inotify, or its limit of instances reached), a tick
/// every second. The watcher, when there is one, must be kept.
fn watch(
    folder: &Folder,
) -> (
    Option<weft_control::source::Watcher>,
    Arc<tokio::sync::Notify>,
) {
    let checks = Arc::new(tokio::sync::Notify::new());
    let on_event = {
        let checks = checks.clone();
        move || checks.notify_one()
    };
    match folder.watch(Duration::from_millis(100), on_event) {
        Ok(watcher) => (Some(watcher), checks),
        Err(e) => {
            tracing::warn!(
                "no file events for {} ({e}): looking for changes every second",
                folder.dir.display()
            );
            let tick = checks.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(1));
                loop {
                    every.tick().await;
                    tick.notify_one();
                }
            });
            (None, checks)
        }
    }
}

fn folder(dir: &Path, mesh_config: Option<&Path>) -> Folder {
    Folder {
        dir: dir.to_path_buf(),
        mesh_config: mesh_config.map(Path::to_path_buf),
    }
}

/// One JSON access-log line per request, on standard output, written by a
/// thread of its own: a slow reader never stalls the proxy.
fn access_log(args: &Args) -> Option<weft_proxy::telemetry::AccessLog> {
    (args.access_log == AccessLogTo::Stdout).then(|| {
        let (log, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            use std::io::Write;
            while let Some(line) = lines.blocking_recv() {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
        });
        log
    })
}

fn role(args: &Args) -> weft_proxy::Role {
    match args.role {
        Role::Sidecar => weft_proxy::Role::Sidecar,
        Role::Ingress => weft_proxy::Role::Ingress,
        Role::Egress => weft_proxy::Role::Egress,
    }
}

/// Starts the proxy of `args`'s role.
async fn start(
    args: &Args,
    config: ProxyConfig,
    store: Arc<CertStore>,
    policy: PeerPolicy,
) -> anyhow::Result<Sidecar> {
    let dns = if args.dns_server.is_empty() {
        Dns::system()
    } else {
        Dns::servers(&args.dns_server)
    };
    let options = Options {
        ports: Ports::default(),
        access_log: access_log(args),
        dns,
        credentials: args.mesh_dir.clone().unwrap_or_default(),
        system_roots: None,
        limits: weft_proxy::gateway::Limits {
            max_connections: args.max_connections,
            max_requests: args.max_requests,
        },
        capture: args.capture,
    };
    Ok(Sidecar::start_as(role(args), config, store, policy, options).await?)
}

fn started(args: &Args, sidecar: &Sidecar, id: &str) {
    let config = sidecar.config();
    let (ns, name, address) = (
        &config.workload.namespace,
        &config.workload.name,
        sidecar.address,
    );
    if args.role != Role::Sidecar {
        let ports: Vec<String> = config
            .gateway
            .iter()
            .map(|p| format!(":{}", p.port))
            .collect();
        let through = if args.role == Role::Egress {
            " through hbone :15008"
        } else {
            ""
        };
        println!(
            "weft proxy {ns}/{name} ({id}) on {address}: gateway ports {}{through}, health :15021, admin :15000, metrics :15090",
            ports.join(" ")
        );
    } else {
        println!(
            "weft proxy {ns}/{name} ({id}) on {address}: outbound :15001, inbound :15006, hbone :15008, health :15021, admin :15000, metrics :15090"
        );
    }
}

/// Waits for `rotator`'s next renewal and does it; a failure keeps the
/// current certificate and tries again a second later.
pub(crate) async fn renew<S: weft_identity::Signer>(rotator: &mut Rotator<S>) {
    let due = rotator
        .renew_at()
        .and_then(|t| t.duration_since(SystemTime::now()).ok())
        .unwrap_or(Duration::from_secs(1));
    tokio::time::sleep(due).await;
    match rotator.tick(SystemTime::now()) {
        Ok(true) => tracing::info!("certificate renewed"),
        Ok(false) => {}
        Err(e) => tracing::warn!("certificate renewal failed, keeping the current one: {e}"),
    }
}

async fn serve(args: &Args, ns: &str, name: &str) -> anyhow::Result<ExitCode> {
    let (Some(mesh_dir), Some(ca_dir)) = (&args.mesh_dir, &args.ca_dir) else {
        anyhow::bail!("--mesh-dir and --ca-dir are required without --control-plane");
    };
    let ca = Arc::new(Ca::load(ca_dir, None)?);
    let trust_domain = ca.trust_domain().clone();
    let mesh_config = args.mesh_config.as_deref();
    // Watched before the first load, so that no change can fall between.
    let folder = Arc::new(folder(mesh_dir, mesh_config));
    let (_watcher, checks) = watch(&folder);
    let mut seen = folder.fingerprint();
    let config = match compiled(&folder, ns, name, trust_domain.as_str()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "weft proxy: the configuration in {} is not valid:\n{e}",
                mesh_dir.display()
            );
            return Ok(ExitCode::from(1));
        }
    };
    let id = SpiffeId::new(trust_domain.clone(), ns, &config.workload.service_account)?;
    let (store, mut rotator) = super::local_certificate(&ca, &id)?;
    let policy = peer_policy(Arc::new(ca.bundle().clone()), trust_domain.clone(), &config)?;
    let sidecar = start(args, config, store, policy).await?;
    started(args, &sidecar, &id.to_string());
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let forced = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => true,
            () = checks.notified() => false,
            () = renew(&mut rotator) => continue,
        };
        // Listing, reading and compiling a large folder takes milliseconds:
        // they run on the blocking pool, never on the thread serving
        // traffic, which only swaps in the result.
        let check = {
            let (folder, ns, name) = (folder.clone(), ns.to_string(), name.to_string());
            let trust_domain = trust_domain.as_str().to_string();
            let seen = std::mem::take(&mut seen);
            tokio::task::spawn_blocking(move || {
                let now = folder.fingerprint();
                let changed = forced || seen != now;
                let loaded = changed.then(|| compiled(&folder, &ns, &name, &trust_domain));
                (now, loaded)
            })
        };
        let (now, loaded) = check.await?;
        seen = now;
        match loaded {
            // Trust domain aliases are read at start.
            Some(Ok(c)) => {
                sidecar.update(c);
                tracing::info!("configuration reloaded");
            }
            Some(Err(e)) => tracing::warn!(
                "keeping the last good configuration; the new one is not valid:\n{e}"
            ),
            None => {}
        }
    }
    tracing::info!("stopping");
    Ok(ExitCode::SUCCESS)
}

/// The first configuration of a managed proxy starts it; peers are the
/// mesh's workloads, verified against the root and trust domain that
/// verify the control plane, and the configuration's aliases.
async fn start_managed(
    args: &Args,
    config: ProxyConfig,
    store: &Arc<CertStore>,
    control_plane: &PeerPolicy,
) -> anyhow::Result<Sidecar> {
    let policy = peer_policy(
        control_plane.bundle.clone(),
        control_plane.trust_domains.primary().clone(),
        &config,
    )?;
    start(args, config, store.clone(), policy).await
}

/// The proxy under a control plane: certificate from its certificate
/// service, configuration from its stream.
async fn serve_managed(args: &Args, ns: &str, name: &str) -> anyhow::Result<ExitCode> {
    let (Some(url), Some(token), Some(root)) = (&args.control_plane, &args.token, &args.root_cert)
    else {
        anyhow::bail!("--control-plane needs --token and --root-cert");
    };
    let addrs = url
        .split(',')
        .map(weft_control::parse_url)
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let token = std::fs::read_to_string(token)
        .with_context(|| format!("reading the token {}", token.display()))?;
    let cp_policy = super::status::control_plane_policy(root)?;
    let store = CertStore::new();
    // The first certificate, with the token; until then nothing is served.
    let mut wait = Duration::from_millis(500);
    while let Err(e) = managed::fetch_certificate(
        &addrs,
        &store,
        &cp_policy,
        Some(token.trim()),
        ca::DEFAULT_TTL,
    )
    .await
    {
        tracing::warn!("no certificate yet from {url}: {e}");
        tokio::time::sleep(managed::jittered(wait)).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
    let id = store
        .current()
        .map(|s| s.id.to_string())
        .unwrap_or_default();
    tracing::info!("certificate issued for {id}");
    let (configs, mut pushed) = tokio::sync::mpsc::channel(1);
    let subscription = managed::Subscription {
        addrs: addrs.clone(),
        policy: cp_policy.clone(),
        store: store.clone(),
        namespace: ns.to_string(),
        workload: name.to_string(),
        address: args.address.map(|a| a.to_string()),
        role: match args.role {
            Role::Sidecar => "sidecar".into(),
            Role::Ingress => "ingress".into(),
            Role::Egress => "egress".into(),
        },
    };
    tokio::spawn(managed::run(subscription, configs));
    let mut sidecar: Option<Sidecar> = None;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let renewal = |store: &CertStore| {
        store
            .current()
            .map_or_else(SystemTime::now, |s| s.renew_at(managed::random_unit()))
    };
    let mut renew_at = renewal(&store);
    loop {
        let due = renew_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            () = tokio::time::sleep(due) => {
                match managed::fetch_certificate(&addrs, &store, &cp_policy, None, ca::DEFAULT_TTL).await {
                    Ok(()) => {
                        tracing::info!("certificate renewed");
                        renew_at = renewal(&store);
                    }
                    Err(e) => {
                        tracing::warn!("certificate renewal failed, keeping the current one: {e}");
                        renew_at = SystemTime::now() + Duration::from_secs(10);
                    }
                }
            }
            Some(push) = pushed.recv() => {
                let managed::Pushed { config, version, reply } = push;
                let result = match &sidecar {
                    Some(s) if s.address != config.workload.address => Err(format!(
                        "the workload's address changed from {} to {}: restart the proxy",
                        s.address, config.workload.address
                    )),
                    Some(s) => {
                        s.update(config);
                        tracing::info!("configuration {version} applied");
                        Ok(())
                    }
                    None => match start_managed(args, config, &store, &cp_policy).await {
                        Ok(s) => {
                            started(args, &s, &id);
                            sidecar = Some(s);
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    },
                };
                let _ = reply.send(result);
            }
        }
    }
    tracing::info!("stopping");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("weft-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn a_change_in_the_folder_sets_off_a_check_and_quiet_does_not() {
        let dir = temp("events");
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(dir.join("a.yaml"), "a: 1\n").expect("write");
        let (watcher, checks) = watch(&folder(&dir, None));
        assert!(watcher.is_some(), "inotify is there to watch with");
        let quiet = tokio::time::timeout(Duration::from_millis(400), checks.notified()).await;
        assert!(quiet.is_err(), "nothing changed, nothing to check");
        std::fs::write(dir.join("b.yaml"), "b: 2\n").expect("write");
        tokio::time::timeout(Duration::from_secs(5), checks.notified())
            .await
            .expect("the new file sets off a check");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn without_file_events_the_folder_is_looked_at_every_second() {
        // A folder that cannot be watched: notify refuses it, as it does
        // when inotify's instances run out.
        let (watcher, checks) = watch(&folder(&temp("missing"), None));
        assert!(watcher.is_none());
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(3), checks.notified())
                .await
                .expect("a tick sets off a check");
        }
    }
}
