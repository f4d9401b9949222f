//! `weft demo`: the whole mesh on one machine, as one process tree.
//!
//! From the demo's Istio YAML (`examples/demo`, or `--config-dir`) it
//! makes a CA and a bootstrap token per workload in a state folder, then
//! runs, each as a child process of its own: the control plane (watching
//! the folder, so edits take effect live), every WorkloadEntry's
//! application (`weft demo-app`) with its managed sidecar, the ingress and
//! egress gateways, and stand-ins for the external services its
//! ServiceEntries send to loopback addresses. A supervisor prefixes each child's output with its name and
//! restarts a child that exits; Ctrl-C or SIGTERM stops them all and
//! removes the state folder.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;
use weft_api::{Level, Loaded, Spec};
use weft_identity::{Ca, SpiffeId, TrustDomain};
use weft_model::Registry;
use weft_model::registry::{Workload, selects};

/// Run the demo mesh: control plane, the bookshop's applications with
/// their sidecars, the ingress and egress gateways, and a stand-in for the
/// external API, until Ctrl-C or SIGTERM.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Folder of Istio YAML to run (edit it while the demo runs) [default: examples/demo]
    #[arg(long, value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Only load and validate the configuration, then exit.
    #[arg(long)]
    check: bool,
}

/// Where the demo's control plane listens.
const CONTROL_PLANE: &str = "127.0.10.1:15012";
const MONITORING: &str = "127.0.10.1:15014";

/// `examples/demo` from the working directory, else from this checkout.
fn default_dir() -> PathBuf {
    let here = PathBuf::from("examples/demo");
    if here.is_dir() {
        return here;
    }
    let checkout = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo");
    checkout.canonicalize().unwrap_or(checkout)
}

/// What the demo makes of a workload (a WorkloadEntry of the registry).
trait DemoWorkload {
    fn id(&self) -> String;
    /// `ingress` or `egress` for a gateway (by Istio's `istio` label).
    fn gateway(&self) -> Option<&'static str>;
    /// The bookshop application it runs, its version and port, if any.
    fn app(&self) -> Option<(&str, &str, u32)>;
}

impl DemoWorkload for Workload {
    fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn gateway(&self) -> Option<&'static str> {
        match self.labels.get("istio").map(String::as_str) {
            Some("ingressgateway") => Some("ingress"),
            Some("egressgateway") => Some("egress"),
            _ => None,
        }
    }

    fn app(&self) -> Option<(&str, &str, u32)> {
        let app = self.labels.get("app")?;
        let known = ["productpage", "details", "reviews", "ratings"];
        known.contains(&app.as_str()).then_some(())?;
        let version = self.labels.get("version").map_or("v1", String::as_str);
        let port = self
            .ports
            .get("http")
            .copied()
            .or_else(|| self.ports.values().next().copied())?;
        Some((app, version, port))
    }
}

/// One supervised child: its name and `weft` arguments.
#[derive(Debug, Clone)]
struct Child {
    name: String,
    args: Vec<String>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = args.config_dir.clone().unwrap_or_else(default_dir);
    let mut loaded = Loaded::from_paths(&[&dir])?;
    loaded.validate();
    for d in loaded.diagnostics.iter().filter(|d| d.level != Level::Note) {
        println!("  {}  {d}", d.level);
    }
    if loaded.errors() > 0 {
        println!(
            "weft demo: the configuration in {} has {} errors",
            dir.display(),
            loaded.errors()
        );
        return Ok(ExitCode::from(1));
    }
    if args.check {
        println!(
            "weft demo: {} resources in {} are valid",
            loaded.resources.len(),
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let registry = Registry::from_resources(&loaded.resources);
    let externals = stand_ins(&registry);
    let workloads = registry.workloads;
    let gateway_ports: Vec<u32> = loaded
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            Spec::Gateway(g)
                if workloads
                    .iter()
                    .any(|w| w.gateway() == Some("ingress") && selects(&g.selector, &w.labels)) =>
            {
                Some(g)
            }
            _ => None,
        })
        .flat_map(|g| g.servers.iter().filter_map(|s| s.port.as_ref()?.number))
        .collect();
    weft_proxy::logging::init(tracing_subscriber::filter::LevelFilter::INFO);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(demo(&dir, &workloads, &externals, &gateway_ports))
}

/// Where the demo runs stand-ins for external services: the loopback
/// endpoints of MESH_EXTERNAL ServiceEntries, with their hosts.
fn stand_ins(registry: &Registry) -> Vec<(String, SocketAddr)> {
    let mut out: Vec<(String, SocketAddr)> = Vec::new();
    for s in registry.services.iter().filter(|s| !s.mesh_internal) {
        for e in s.endpoints.iter().filter(|e| e.address.is_loopback()) {
            for p in &s.ports {
                let port = e.ports.get(&p.name).copied().or(p.target_port);
                let port = u16::try_from(port.unwrap_or(p.number)).unwrap_or(0);
                let at = SocketAddr::new(e.address, port);
                if !out.iter().any(|(_, a)| *a == at) {
                    out.push((s.host.clone(), at));
                }
            }
        }
    }
    out
}

/// The CA, the tokens and the children's command lines.
fn prepare(
    state: &Path,
    config: &Path,
    workloads: &[Workload],
    externals: &[(String, SocketAddr)],
) -> anyhow::Result<Vec<Child>> {
    let ca_dir = state.join("ca");
    let td = TrustDomain::new("cluster.local")?;
    let ca = Ca::init(&ca_dir, &td, SystemTime::now())?;
    let root = ca_dir.join("root-cert.pem");
    let s = |p: &Path| p.display().to_string();
    let mut children = vec![Child {
        name: "control-plane".into(),
        args: vec![
            "control-plane".into(),
            "--config-dir".into(),
            s(config),
            "--ca-dir".into(),
            s(&ca_dir),
            "--listen".into(),
            CONTROL_PLANE.into(),
            "--monitoring".into(),
            MONITORING.into(),
        ],
    }];
    for w in workloads {
        let id = SpiffeId::new(td.clone(), &w.namespace, &w.service_account)?;
        let token = weft_identity::token::issue(
            &ca,
            &id,
            Duration::from_secs(24 * 3600),
            SystemTime::now(),
        )?;
        let token_file = state.join(format!("{}.{}.token", w.namespace, w.name));
        std::fs::write(&token_file, token)?;
        let mut proxy = vec![
            "proxy".to_string(),
            "--control-plane".into(),
            format!("https://{CONTROL_PLANE}"),
            "--workload".into(),
            w.id(),
            "--token".into(),
            s(&token_file),
            "--root-cert".into(),
            s(&root),
            "--access-log".into(),
            "off".into(),
        ];
        if let Some(role) = w.gateway() {
            proxy.extend(["--role".into(), role.into()]);
            children.push(Child {
                name: w.name.clone(),
                args: proxy,
            });
            continue;
        }
        let Some((app, version, port)) = w.app() else {
            continue;
        };
        children.push(Child {
            name: format!("{} sidecar", w.name),
            args: proxy,
        });
        children.push(Child {
            name: w.name.clone(),
            args: vec![
                "demo-app".into(),
                "--service".into(),
                app.into(),
                "--app-version".into(),
                version.into(),
                "--listen".into(),
                SocketAddr::new(w.address, u16::try_from(port)?).to_string(),
                "--proxy".into(),
                SocketAddr::new(w.address, 15001).to_string(),
            ],
        });
    }
    for (host, at) in externals {
        children.push(Child {
            name: host.clone(),
            args: vec![
                "demo-app".into(),
                "--service".into(),
                "book-api".into(),
                "--listen".into(),
                at.to_string(),
            ],
        });
    }
    Ok(children)
}

async fn demo(
    config: &Path,
    workloads: &[Workload],
    externals: &[(String, SocketAddr)],
    gateway_ports: &[u32],
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    clear_crashed();
    let state = std::env::temp_dir().join(format!("weft-demo-{}", std::process::id()));
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    let children = prepare(&state, config, workloads, externals)?;
    let exe = std::env::current_exe()?;
    let (stop, stopping) = watch::channel(false);
    let mut tasks = Vec::new();
    for child in children {
        tasks.push(tokio::spawn(supervise(
            exe.clone(),
            child,
            state.clone(),
            stopping.clone(),
        )));
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let ready = tokio::select! {
        r = wait_ready(workloads) => r,
        _ = tokio::signal::ctrl_c() => false,
        _ = term.recv() => false,
    };
    if ready {
        report(
            config,
            &state,
            workloads,
            externals,
            gateway_ports,
            started.elapsed(),
        );
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    println!("weft demo: stopping");
    let _ = stop.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let _ = std::fs::remove_dir_all(&state);
    println!("weft demo: stopped; every child has exited");
    Ok(if ready {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Runs `child` until told to stop, restarting it a second after it exits;
/// its output lines are printed with its name in front.
/// The environment variable that marks a demo's children with its state
/// folder, so that a later demo can find them if this one is killed.
const DEMO_ENV: &str = "WEFT_DEMO_STATE";

/// Stops what a demo killed without the chance to clean up left behind:
/// every process marked with the state folder of a `weft demo` that is
/// gone, then the folders of gone demos.
fn clear_crashed() {
    let gone = |state: &str| {
        let pid = state.rsplit("weft-demo-").next().unwrap_or_default();
        !pid.is_empty() && !Path::new("/proc").join(pid).exists()
    };
    if let Ok(procs) = std::fs::read_dir("/proc") {
        for p in procs.flatten() {
            let Ok(environ) = std::fs::read(p.path().join("environ")) else {
                continue;
            };
            let marked = environ
                .split(|b| *b == 0)
                .filter_map(|kv| std::str::from_utf8(kv).ok())
                .find_map(|kv| kv.strip_prefix(DEMO_ENV)?.strip_prefix('='));
            if let Some(state) = marked.filter(|s| gone(s)) {
                let pid = p.file_name().to_string_lossy().into_owned();
                println!("weft demo: stopping process {pid}, left behind by the demo of {state}");
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid])
                    .status();
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("weft-demo-") && gone(&name) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

async fn supervise(
    exe: PathBuf,
    child: Child,
    state: PathBuf,
    mut stopping: watch::Receiver<bool>,
) {
    loop {
        let spawned = tokio::process::Command::new(&exe)
            .args(&child.args)
            .env(DEMO_ENV, &state)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let mut process = match spawned {
            Ok(p) => p,
            Err(e) => {
                println!("[{}] cannot start: {e}", child.name);
                return;
            }
        };
        for out in [
            process
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            process
                .stderr
                .take()
                .map(|e| Box::new(e) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let name = child.name.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    println!("[{name}] {line}");
                }
            });
        }
        tokio::select! {
            status = process.wait() => {
                if *stopping.borrow() {
                    return;
                }
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                println!("[{}] exited ({status}); restarting in 1 s", child.name);
            }
            _ = stopping.changed() => {
                let _ = process.kill().await;
                return;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stopping.changed() => return,
        }
    }
}

/// Whether `addr` answers `GET /healthz/ready` with 200.
async fn ready(addr: SocketAddr) -> bool {
    let Ok(Ok(mut tcp)) = tokio::time::timeout(
        Duration::from_millis(500),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    else {
        return false;
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET /healthz/ready HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    if tcp.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(tcp.read(&mut buf).await, Ok(n) if buf[..n].starts_with(b"HTTP/1.1 200"))
}

/// Waits until every proxy is ready (at most 60 s).
async fn wait_ready(workloads: &[Workload]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    let proxies: Vec<SocketAddr> = workloads
        .iter()
        .filter(|w| w.gateway().is_some() || w.app().is_some())
        .map(|w| SocketAddr::new(w.address, 15021))
        .collect();
    loop {
        let mut all = true;
        for p in &proxies {
            all &= ready(*p).await;
        }
        if all {
            return true;
        }
        if Instant::now() > deadline {
            println!("weft demo: not every proxy became ready within 60 s");
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn report(
    config: &Path,
    state: &Path,
    workloads: &[Workload],
    externals: &[(String, SocketAddr)],
    gateway_ports: &[u32],
    took: Duration,
) {
    let root = state.join("ca/root-cert.pem");
    println!();
    println!("weft demo: the bookshop mesh from {}", config.display());
    for g in workloads.iter().filter(|w| w.gateway() == Some("ingress")) {
        for port in gateway_ports {
            println!("  open        http://{}:{port}/productpage", g.address);
        }
    }
    for (host, at) in externals {
        println!("  external    {host}: a stand-in at {at}, outside the mesh");
    }
    println!("  control plane https://{CONTROL_PLANE}, metrics http://{MONITORING}/metrics");
    println!(
        "  status      weft status --control-plane https://{CONTROL_PLANE} --root-cert {}",
        root.display()
    );
    println!(
        "  {:<30} {:<13} {:<6} admin / metrics",
        "workload", "address", "ready"
    );
    for w in workloads
        .iter()
        .filter(|w| w.gateway().is_some() || w.app().is_some())
    {
        println!(
            "  {:<30} {:<13} {:<6} http://{a}:15000  http://{a}:15090/stats/prometheus",
            w.id(),
            w.address.to_string(),
            "yes",
            a = w.address
        );
    }
    println!(
        "Ready in {:.1} s. Edit {} to change the mesh live; Ctrl-C stops everything.",
        took.as_secs_f64(),
        config.display()
    );
}
