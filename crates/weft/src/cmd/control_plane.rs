//! `weft control-plane`: serves a folder of Istio YAML to managed proxies.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tracing_subscriber::filter::LevelFilter;
use weft_control::{ControlPlane, Folder};
use weft_identity::tls::PeerPolicy;
use weft_identity::{Ca, TrustDomain, TrustDomains};

/// Run the control plane: watches --config-dir (changes settle for 100 ms,
/// then the whole set is validated; a set with errors is refused and the
/// last good one stays in force), compiles each connected proxy's
/// configuration and pushes what changed. The configuration stream, status,
/// config dumps and the certificate service share one mTLS port (--listen);
/// Prometheus metrics are on --monitoring at /metrics.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Folder of Istio YAML (may be a git work tree: status shows its commit).
    #[arg(long, value_name = "DIR")]
    config_dir: PathBuf,
    /// The CA directory that signs every certificate (`weft ca init`).
    #[arg(long, value_name = "DIR")]
    ca_dir: PathBuf,
    /// MeshConfig YAML (as in the `mesh` key of the `istio` ConfigMap).
    #[arg(long, value_name = "FILE")]
    mesh_config: Option<PathBuf>,
    /// Address of the mTLS gRPC port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15012")]
    listen: SocketAddr,
    /// Address of the monitoring port (/metrics, /ready).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:15014")]
    monitoring: SocketAddr,
    /// Another replica over the same folder and CA (repeatable): the
    /// WorkloadGroup instances registered there are endpoints here too.
    #[arg(long, value_name = "URL")]
    peer: Vec<String>,
    /// The log level on standard error.
    #[arg(long, value_name = "LEVEL", default_value = "info", value_parser = super::proxy::log_level)]
    log_level: LevelFilter,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    weft_proxy::logging::init(args.log_level);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<ExitCode> {
    let ca = Arc::new(Ca::load(&args.ca_dir, None)?);
    let trust_domain = ca.trust_domain().clone();
    let folder = Folder {
        dir: args.config_dir.clone(),
        mesh_config: args.mesh_config.clone(),
    };
    let control = match ControlPlane::new(folder, trust_domain.as_str()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "weft control-plane: the configuration in {} is not valid:\n{e}",
                args.config_dir.display()
            );
            return Ok(ExitCode::from(1));
        }
    };
    let aliases = control
        .served()
        .mesh
        .trust_domain_aliases
        .iter()
        .map(|a| TrustDomain::new(a))
        .collect::<Result<Vec<_>, _>>()?;
    let id = weft_control::identity(&trust_domain);
    let (store, mut rotator) = super::local_certificate(&ca, &id)?;
    let policy = PeerPolicy {
        bundle: Arc::new(ca.bundle().clone()),
        trust_domains: TrustDomains::new(trust_domain, aliases),
        expected: Vec::new(),
    };
    let bind = |addr: SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("bind {addr}: {e}"))
    };
    let grpc = bind(args.listen).await?;
    let monitoring = bind(args.monitoring).await?;
    let served = control.served();
    println!(
        "weft control-plane ({id}) serving {} (version {}{}) on {}, monitoring {}",
        args.config_dir.display(),
        served.version,
        served
            .commit
            .as_deref()
            .map(|c| format!(", commit {}", &c[..c.len().min(12)]))
            .unwrap_or_default(),
        args.listen,
        args.monitoring
    );
    let reload = {
        let control = control.clone();
        move || match control.reload() {
            Ok(true) => {
                let s = control.served();
                tracing::info!("configuration {} loaded and pushed", s.version);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(
                "refused the changed configuration; the last good one stays in force:\n{e}"
            ),
        }
    };
    let _watcher = control
        .folder()
        .watch(Duration::from_millis(100), reload.clone())
        .map_err(|e| anyhow::anyhow!("watching {}: {e}", args.config_dir.display()))?;
    tokio::spawn(weft_control::serve_monitoring(monitoring, control.clone()));
    if !args.peer.is_empty() {
        let peers = args
            .peer
            .iter()
            .map(|p| weft_control::parse_url(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::msg)?;
        let peer_policy = PeerPolicy {
            expected: vec![id.clone()],
            ..policy.clone()
        };
        tokio::spawn(control.clone().sync_peers(peers, peer_policy));
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(weft_control::serve(
        grpc,
        control,
        ca,
        store,
        policy,
        async {
            let _ = stopped.await;
        },
    ));
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hup.recv() => reload(),
            () = super::proxy::renew(&mut rotator) => {}
        }
    }
    tracing::info!("stopping");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    Ok(ExitCode::SUCCESS)
}
