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

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::watch;
use weft_api::{Level, Loaded, Spec};
use weft_identity::{Ca, SpiffeId, TrustDomain};
use weft_model::Registry;

use super::demo_netns;
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
    /// Transparent mode (Linux, root): every workload in a network
    /// namespace of its own, its traffic captured by iptables; the demo's
    /// 127.0.10.N addresses become 10.10.0.N, reachable from the hub
    /// namespace (`ip netns exec weft-demo-hub ...`).
    #[arg(long)]
    netns: bool,
}

/// What a demo runs, where.
#[derive(Debug)]
struct Setup {
    /// The folder the user edits.
    source: PathBuf,
    /// The folder the control plane serves: `source`, or in netns mode
    /// its copy with the namespaces' addresses.
    served: PathBuf,
    state: PathBuf,
    workloads: Vec<Workload>,
    externals: Vec<(String, SocketAddr)>,
    gateway_ports: Vec<u32>,
    netns: bool,
    started: Instant,
}

impl Setup {
    /// Where the control plane listens: `127.0.10.1` (10.10.0.1 in the
    /// namespaces).
    fn control_plane(&self, port: u16) -> SocketAddr {
        let ip = IpAddr::from([127, 0, 10, 1]);
        let ip = if self.netns {
            demo_netns::address(ip)
        } else {
            ip
        };
        SocketAddr::new(ip, port)
    }
}

/// Removes the namespaces when the demo ends, however it ends.
struct Teardown;

impl Drop for Teardown {
    fn drop(&mut self) {
        demo_netns::clear();
    }
}

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

/// One supervised child: its name and `weft` arguments, and what runs it
/// (in netns mode, `ip netns exec NS` and for a sidecar `setpriv`).
#[derive(Debug, Clone)]
struct Child {
    name: String,
    args: Vec<String>,
    wrapper: Vec<String>,
}

impl Child {
    fn new(name: impl Into<String>, args: Vec<String>) -> Child {
        Child {
            name: name.into(),
            args,
            wrapper: Vec::new(),
        }
    }

    /// Runs in network namespace `ns`, as the proxy user if `proxy`.
    fn inside(mut self, ns: &str, proxy: bool) -> Child {
        self.wrapper = ["ip", "netns", "exec", ns].map(String::from).to_vec();
        if proxy {
            let uid = demo_netns::PROXY_UID;
            self.wrapper.extend(
                ["setpriv", "--reuid", uid, "--regid", uid, "--clear-groups"].map(String::from),
            );
        }
        self
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
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
    let mut externals = stand_ins(&registry);
    let mut workloads = registry.workloads.clone();
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
    if args.netns {
        demo_netns::check()?;
    }
    clear_crashed();
    let state = std::env::temp_dir().join(format!("weft-demo-{}", std::process::id()));
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    let mut served = dir.clone();
    let _teardown = if args.netns {
        demo_netns::clear();
        let teardown = Teardown;
        served = state.join("mesh");
        demo_netns::copy_config(&dir, &served)?;
        for w in &mut workloads {
            w.address = demo_netns::address(w.address);
        }
        for (_, at) in &mut externals {
            at.set_ip(demo_netns::address(at.ip()));
        }
        let captured: Vec<&Workload> = workloads.iter().filter(|w| w.app().is_some()).collect();
        let gateways: Vec<&Workload> = workloads.iter().filter(|w| w.gateway().is_some()).collect();
        let stand_ins: Vec<IpAddr> = externals.iter().map(|(_, at)| at.ip()).collect();
        demo_netns::build(&registry, &captured, &gateways, &stand_ins)?;
        // The sidecars run as the proxy user: it reads the tokens there.
        let uid = demo_netns::PROXY_UID;
        std::process::Command::new("chown")
            .args(["-R", &format!("{uid}:{uid}")])
            .arg(&state)
            .status()?;
        demo_netns::enter_hub()?;
        Some(teardown)
    } else {
        None
    };
    let setup = Setup {
        source: dir,
        served,
        state,
        workloads,
        externals,
        gateway_ports,
        netns: args.netns,
        started,
    };
    weft_proxy::logging::init(tracing_subscriber::filter::LevelFilter::INFO);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(demo(&setup))
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
fn prepare(setup: &Setup) -> anyhow::Result<Vec<Child>> {
    let state = &setup.state;
    let ca_dir = state.join("ca");
    let td = TrustDomain::new("cluster.local")?;
    let ca = Ca::init(&ca_dir, &td, SystemTime::now())?;
    let root = ca_dir.join("root-cert.pem");
    let s = |p: &Path| p.display().to_string();
    let strings = |v: &[&str]| v.iter().map(|a| a.to_string()).collect::<Vec<String>>();
    let control = Child::new(
        "control-plane",
        strings(&[
            "control-plane",
            "--config-dir",
            &s(&setup.served),
            "--ca-dir",
            &s(&ca_dir),
            "--listen",
            &setup.control_plane(15012).to_string(),
            "--monitoring",
            &setup.control_plane(15014).to_string(),
        ]),
    );
    let in_hub = |c: Child| {
        if setup.netns {
            c.inside(demo_netns::HUB, false)
        } else {
            c
        }
    };
    let mut children = vec![in_hub(control)];
    for w in &setup.workloads {
        let id = SpiffeId::new(td.clone(), &w.namespace, &w.service_account)?;
        let token = weft_identity::token::issue(
            &ca,
            &id,
            Duration::from_secs(24 * 3600),
            SystemTime::now(),
        )?;
        let token_file = state.join(format!("{}.{}.token", w.namespace, w.name));
        std::fs::write(&token_file, token)?;
        let mut proxy = strings(&[
            "proxy",
            "--control-plane",
            &format!("https://{}", setup.control_plane(15012)),
            "--workload",
            &w.id(),
            "--token",
            &s(&token_file),
            "--root-cert",
            &s(&root),
            "--access-log",
            "off",
        ]);
        let ns = demo_netns::namespace_of(w);
        let place = |c: Child, proxy: bool| if setup.netns { c.inside(&ns, proxy) } else { c };
        if let Some(role) = w.gateway() {
            proxy.extend(strings(&["--role", role]));
            children.push(place(Child::new(w.name.clone(), proxy), false));
            continue;
        }
        let Some((app, version, port)) = w.app() else {
            continue;
        };
        let mut app_args = strings(&[
            "demo-app",
            "--service",
            app,
            "--app-version",
            version,
            "--listen",
            &SocketAddr::new(w.address, u16::try_from(port)?).to_string(),
        ]);
        if setup.netns {
            // Captured: the application calls services by name, directly.
            proxy.push("--capture".into());
        } else {
            app_args.extend(strings(&[
                "--proxy",
                &SocketAddr::new(w.address, 15001).to_string(),
            ]));
        }
        children.push(place(
            Child::new(format!("{} sidecar", w.name), proxy),
            true,
        ));
        children.push(place(Child::new(w.name.clone(), app_args), false));
    }
    for (host, at) in &setup.externals {
        let stand_in = Child::new(
            host.clone(),
            strings(&[
                "demo-app",
                "--service",
                "book-api",
                "--listen",
                &at.to_string(),
            ]),
        );
        children.push(in_hub(stand_in));
    }
    Ok(children)
}

async fn demo(setup: &Setup) -> anyhow::Result<ExitCode> {
    let state = &setup.state;
    let children = prepare(setup)?;
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
    // Edits to the user's folder reach the served copy.
    let mirroring = setup
        .netns
        .then(|| tokio::spawn(mirror(setup.source.clone(), setup.served.clone())));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let ready = tokio::select! {
        r = wait_ready(&setup.workloads) => r,
        _ = tokio::signal::ctrl_c() => false,
        _ = term.recv() => false,
    };
    if ready {
        report(setup);
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    println!("weft demo: stopping");
    let _ = stop.send(true);
    if let Some(m) = mirroring {
        m.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    let _ = std::fs::remove_dir_all(state);
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

/// Copies the user's folder to the served one (netns mode) whenever a file
/// in it changes, until the task is dropped.
async fn mirror(source: PathBuf, served: PathBuf) {
    let stamp = |dir: &Path| -> Vec<(std::ffi::OsString, Option<SystemTime>, u64)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                let meta = e.metadata().ok();
                (
                    e.file_name(),
                    meta.as_ref().and_then(|m| m.modified().ok()),
                    meta.map_or(0, |m| m.len()),
                )
            })
            .collect();
        v.sort();
        v
    };
    let mut seen = stamp(&source);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = stamp(&source);
        if now != seen {
            seen = now;
            if let Err(e) = demo_netns::copy_config(&source, &served) {
                println!("weft demo: copying {}: {e}", source.display());
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
        let mut command = match child.wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = tokio::process::Command::new(program);
                c.args(rest).arg(&exe);
                c
            }
            None => tokio::process::Command::new(&exe),
        };
        let spawned = command
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

fn report(setup: &Setup) {
    let root = setup.state.join("ca/root-cert.pem");
    let (control, monitoring) = (setup.control_plane(15012), setup.control_plane(15014));
    let run = if setup.netns {
        format!("ip netns exec {} ", demo_netns::HUB)
    } else {
        String::new()
    };
    println!();
    println!(
        "weft demo: the bookshop mesh from {}",
        setup.source.display()
    );
    if setup.netns {
        println!(
            "  transparent capture: each workload in its own network namespace ({}*); from the hub: {run}curl ...",
            demo_netns::PREFIX
        );
    }
    for g in setup
        .workloads
        .iter()
        .filter(|w| w.gateway() == Some("ingress"))
    {
        for port in &setup.gateway_ports {
            println!(
                "  open        {run}curl http://{}:{port}/productpage",
                g.address
            );
        }
    }
    for (host, at) in &setup.externals {
        println!("  external    {host}: a stand-in at {at}, outside the mesh");
    }
    println!("  control plane https://{control}, metrics http://{monitoring}/metrics");
    println!(
        "  status      {run}weft status --control-plane https://{control} --root-cert {}",
        root.display()
    );
    println!(
        "  {:<30} {:<13} {:<6} admin / metrics",
        "workload", "address", "ready"
    );
    for w in setup
        .workloads
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
        setup.started.elapsed().as_secs_f64(),
        setup.source.display()
    );
}
