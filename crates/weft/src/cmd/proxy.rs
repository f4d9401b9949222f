//! `weft proxy`: a sidecar for one workload, standalone: configuration from a
//! folder of Istio YAML, certificate from a CA directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tracing_subscriber::filter::LevelFilter;
use weft_api::Loaded;
use weft_identity::tls::PeerPolicy;
use weft_identity::{Ca, CertStore, LocalSigner, Rotator, SpiffeId, TrustDomain, TrustDomains, ca};
use weft_model::{Mesh, ProxyConfig, Registry, compile};
use weft_proxy::{Ports, Sidecar};

/// Run the sidecar of workload NS/NAME (its WorkloadEntry gives address,
/// labels, service account and ports): outbound 15001, HBONE 15008, plaintext
/// inbound 15006 (only to ports PeerAuthentication leaves PERMISSIVE or
/// DISABLE; with no policy weft is STRICT), health 15021, admin 15000,
/// Prometheus 15090, all on the workload's address; one
/// JSON access-log line per request on standard output. Reloads on SIGHUP and
/// when the folder or the mesh config file changes; a configuration that fails validation is
/// refused and the last good one stays.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Folder of Istio YAML: WorkloadEntries, ServiceEntries, routing and policy.
    #[arg(long, value_name = "DIR")]
    mesh_dir: PathBuf,
    /// This proxy's workload, as NAMESPACE/NAME of its WorkloadEntry.
    #[arg(long, value_name = "NS/NAME")]
    workload: String,
    /// The CA directory that signs this workload's certificate.
    #[arg(long, value_name = "DIR")]
    ca_dir: PathBuf,
    /// MeshConfig YAML the configuration is validated against (as in the
    /// `mesh` key of the `istio` ConfigMap). The trust domain comes from the
    /// CA; trustDomainAliases (read at start) are accepted from peers.
    #[arg(long, value_name = "FILE")]
    mesh_config: Option<PathBuf>,
    /// The proxy's role.
    #[arg(long, value_enum, default_value_t = Role::Sidecar)]
    role: Role,
    /// Worker threads [default: 1 for a sidecar, which serves one workload
    /// and wakes less with one; one per core for a gateway].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Where the per-request JSON access log goes.
    #[arg(long, value_enum, default_value_t = AccessLogTo::Stdout)]
    access_log: AccessLogTo,
    /// The log level on standard error (trace, debug, info, warning, error,
    /// off); `POST /logging?level=LEVEL` on the admin port changes it.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = log_level)]
    log_level: LevelFilter,
}

fn log_level(s: &str) -> Result<LevelFilter, String> {
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
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (ns, name) = args
        .workload
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .with_context(|| format!("--workload {:?}: expected NAMESPACE/NAME", args.workload))?;
    weft_proxy::logging::init(args.log_level);
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    let threads = match (args.threads, args.role) {
        (Some(n), _) => Some(n),
        (None, Role::Sidecar) => Some(1),
        (None, Role::Ingress) => None,
    };
    if let Some(n) = threads {
        anyhow::ensure!(n > 0, "--threads must be at least 1");
        builder.worker_threads(n);
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(serve(&args, ns, name))
}

/// The configuration in `dir` and MeshConfig's trustDomainAliases, or
/// every error that stops it.
pub(crate) fn load(
    dir: &Path,
    mesh_config: Option<&Path>,
    ns: &str,
    name: &str,
    trust_domain: &str,
) -> Result<(ProxyConfig, Vec<String>), String> {
    let mut loaded = Loaded::from_paths(&[dir]).map_err(|e| e.to_string())?;
    if let Some(file) = mesh_config {
        loaded
            .set_mesh_config_file(file)
            .map_err(|e| e.to_string())?;
    }
    loaded.validate();
    let errors: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    let registry = Registry::from_resources(&loaded.resources);
    let mut mesh = Mesh::new(trust_domain);
    let meshconfig = loaded.mesh.as_ref().map(|m| &m.config);
    if let Some(root) = meshconfig.and_then(|m| m.root_namespace.clone()) {
        mesh.root_namespace = root;
    }
    if let Some(n) = meshconfig
        .and_then(|m| m.path_normalization.as_ref())
        .and_then(|p| p.normalization)
    {
        use weft_api::types::mesh::NormalizationType as T;
        use weft_model::normalize::Normalization as N;
        mesh.path_normalization = match n {
            T::Default | T::Base => N::Base,
            T::None => N::None,
            T::MergeSlashes => N::MergeSlashes,
            T::DecodeAndMergeSlashes => N::DecodeAndMergeSlashes,
        };
    }
    if let Some(m) = meshconfig {
        mesh.ext_authz = weft_model::authz::ext_authz_providers(m);
        mesh.outbound_policy =
            m.outbound_traffic_policy
                .as_ref()
                .and_then(|p| p.mode)
                .map(|mode| match mode {
                    weft_api::types::sidecar::OutboundMode::AllowAny => {
                        weft_model::config::OutboundPolicy::AllowAny
                    }
                    weft_api::types::sidecar::OutboundMode::RegistryOnly => {
                        weft_model::config::OutboundPolicy::RegistryOnly
                    }
                });
        mesh.num_trusted_proxies = m
            .default_config
            .as_ref()
            .and_then(|d| d.gateway_topology.as_ref())
            .and_then(|g| g.get("numTrustedProxies"))
            .and_then(serde_json::Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0);
    }
    let aliases = meshconfig.map_or_else(Vec::new, |m| m.trust_domain_aliases.clone());
    mesh.trust_domain_aliases = aliases.clone();
    let config =
        compile(&loaded.resources, &registry, ns, name, &mesh).map_err(|e| e.to_string())?;
    Ok((config, aliases))
}

/// What a reload would read: the names, sizes and modification times of
/// the configuration files in `dir` and of the mesh config file.
fn fingerprint(dir: &Path, mesh_config: Option<&Path>) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let files = weft_api::load::walk(dir).unwrap_or_default();
    files
        .into_iter()
        .chain(mesh_config.map(Path::to_path_buf))
        .filter_map(|p| {
            let m = std::fs::metadata(&p).ok()?;
            Some((p, m.len(), m.modified().ok()))
        })
        .collect()
}

async fn serve(args: &Args, ns: &str, name: &str) -> anyhow::Result<ExitCode> {
    let ca = Arc::new(Ca::load(&args.ca_dir, None)?);
    let trust_domain = ca.trust_domain().clone();
    let mesh_config = args.mesh_config.as_deref();
    let (config, aliases) = match load(&args.mesh_dir, mesh_config, ns, name, trust_domain.as_str())
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "weft proxy: the configuration in {} is not valid:\n{e}",
                args.mesh_dir.display()
            );
            return Ok(ExitCode::from(1));
        }
    };
    let id = SpiffeId::new(trust_domain.clone(), ns, &config.workload.service_account)?;
    let store = CertStore::new();
    let mut rotator = Rotator::new(
        store.clone(),
        LocalSigner {
            ca: ca.clone(),
            id: id.clone(),
        },
        id.clone(),
        ca::DEFAULT_TTL,
    );
    rotator.tick(SystemTime::now())?;
    let policy = PeerPolicy {
        bundle: Arc::new(ca.bundle().clone()),
        trust_domains: TrustDomains::new(
            trust_domain.clone(),
            aliases
                .iter()
                .map(|a| TrustDomain::new(a))
                .collect::<Result<_, _>>()
                .context("MeshConfig trustDomainAliases")?,
        ),
        expected: Vec::new(),
    };
    let address = config.workload.address;
    // One JSON access-log line per request, on standard output, written
    // by a thread of its own: a slow reader never stalls the proxy.
    let log = (args.access_log == AccessLogTo::Stdout).then(|| {
        let (log, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
        std::thread::spawn(move || {
            use std::io::Write;
            while let Some(line) = lines.blocking_recv() {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
        });
        log
    });
    let role = match args.role {
        Role::Sidecar => weft_proxy::Role::Sidecar,
        Role::Ingress => weft_proxy::Role::Ingress {
            credentials: args.mesh_dir.clone(),
        },
    };
    let gateway_ports: Vec<String> = config
        .gateway
        .iter()
        .map(|p| format!(":{}", p.port))
        .collect();
    let sidecar = Sidecar::start_as(role, config, store, policy, Ports::default(), log).await?;
    if args.role == Role::Ingress {
        println!(
            "weft proxy {ns}/{name} ({id}) on {address}: gateway ports {}, health :15021, admin :15000, metrics :15090",
            gateway_ports.join(" ")
        );
    } else {
        println!(
            "weft proxy {ns}/{name} ({id}) on {address}: outbound :15001, inbound :15006, hbone :15008, health :15021, admin :15000, metrics :15090"
        );
    }
    let mut seen = fingerprint(&args.mesh_dir, mesh_config);
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut poll = tokio::time::interval(Duration::from_secs(1));
    loop {
        let due = rotator
            .renew_at()
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .unwrap_or_default();
        let reload = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => true,
            _ = poll.tick() => {
                let now = fingerprint(&args.mesh_dir, mesh_config);
                let changed = now != seen;
                seen = now;
                changed
            }
            _ = tokio::time::sleep(due) => {
                match rotator.tick(SystemTime::now()) {
                    Ok(true) => tracing::info!("certificate renewed"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!("certificate renewal failed, keeping the current one: {e}"),
                }
                false
            }
        };
        if reload {
            match load(&args.mesh_dir, mesh_config, ns, name, trust_domain.as_str()) {
                // Trust domain aliases are read at start.
                Ok((c, _)) => {
                    sidecar.update(c);
                    tracing::info!("configuration reloaded");
                }
                Err(e) => tracing::warn!(
                    "keeping the last good configuration; the new one is not valid:\n{e}"
                ),
            }
        }
    }
    tracing::info!("stopping");
    Ok(ExitCode::SUCCESS)
}
