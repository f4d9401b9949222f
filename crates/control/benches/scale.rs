//! The control plane at the scale Istio publishes sizing for: 1,000
//! services in 50 namespaces, 5,000 workloads (WorkloadEntries, 5 per
//! service), one ALLOW policy per service, and 2,000 connected proxies (2
//! per service) simulated in this process over real mTLS gRPC on loopback.
//! Simulated proxies ACK each push without decoding it, so the time is the
//! control plane's. Measured: the first push to every proxy; the time from
//! a file change (one endpoint moves) to every proxy's ACK, through the
//! folder watch; the process's RSS; compile time per proxy. The baseline,
//! in the same run, is what a control plane without shared traffic parts
//! would do for that change: compile and encode every proxy's whole
//! configuration. Run: `cargo bench -p weft-control --bench scale`
//! (`WEFT_BENCH_PROXIES=N` for fewer proxies, `WEFT_BENCH_SIDECARS=1` for a
//! Sidecar per namespace).

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use weft_control::{ControlPlane, Folder};
use weft_identity::tls::PeerPolicy;
use weft_identity::{Ca, CertStore, LocalSigner, Rotator, SpiffeId, TrustDomain, TrustDomains};
use weft_protocol::mesh::config_service_client::ConfigServiceClient;
use weft_protocol::mesh::proxy_message::Kind;
use weft_protocol::mesh::{Ack, ProxyMessage, Subscribe};

const SERVICES: usize = 1_000;
const PER_SERVICE: usize = 5;
const NAMESPACES: usize = 50;

fn address(n: usize) -> String {
    format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255)
}

/// One file per namespace; `moved` moves the first endpoint of svc0 (with
/// Sidecars, of each namespace's first service).
fn write_mesh(dir: &Path, moved: bool) {
    for ns in 0..NAMESPACES {
        let mut out = String::new();
        for i in (ns..SERVICES).step_by(NAMESPACES) {
            out.push_str(&format!(
                "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc{i}, namespace: ns{ns}}}\nspec: {{hosts: [svc{i}.ns{ns}.svc.cluster.local], location: MESH_INTERNAL, ports: [{{number: 80, name: http, protocol: HTTP}}], resolution: STATIC, workloadSelector: {{labels: {{app: svc{i}}}}}}}\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: svc{i}, namespace: ns{ns}}}\nspec: {{selector: {{matchLabels: {{app: svc{i}}}}}, rules: [{{from: [{{source: {{principals: [cluster.local/ns/ns{ns}/sa/svc{}]}}}}]}}]}}\n",
                (i + 1) % SERVICES
            ));
            for j in 0..PER_SERVICE {
                // The move: every proxy must see it, so with Sidecars one
                // endpoint moves in each namespace.
                let moves = j == 0 && if scoped() { i < NAMESPACES } else { i == 0 };
                let n = if moved && moves {
                    SERVICES * PER_SERVICE + 1 + i
                } else {
                    i * PER_SERVICE + j + 1
                };
                out.push_str(&format!(
                    "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: svc{i}-{j}, namespace: ns{ns}}}\nspec: {{address: {}, serviceAccount: svc{i}, labels: {{app: svc{i}}}, ports: {{http: 8080}}}}\n",
                    address(n)
                ));
            }
        }
        if scoped() {
            out.push_str(&format!(
                "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: ns{ns}}}\nspec: {{egress: [{{hosts: [\"./*\"]}}]}}\n"
            ));
        }
        std::fs::write(dir.join(format!("ns{ns}.yaml")), out).expect("write mesh");
    }
}

/// `WEFT_BENCH_SIDECARS=1`: each namespace has a Sidecar limiting its
/// proxies to their own namespace, so each namespace is a traffic key of
/// its own with a small configuration.
fn scoped() -> bool {
    std::env::var("WEFT_BENCH_SIDECARS").is_ok_and(|v| v == "1")
}

fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (kb("VmRSS:") / 1024.0, kb("VmHWM:") / 1024.0)
}

fn store_for(ca: &Arc<Ca>, id: SpiffeId) -> Arc<CertStore> {
    let store = CertStore::new();
    let mut r = Rotator::new(
        store.clone(),
        LocalSigner {
            ca: ca.clone(),
            id: id.clone(),
        },
        id,
        Duration::from_secs(3600),
    );
    r.tick(SystemTime::now()).expect("certificate");
    store
}

/// A proxy that subscribes and ACKs every push, counting pushes and bytes.
async fn simulated(
    channel: tonic::transport::Channel,
    ns: String,
    workload: String,
    pushes: Arc<AtomicU32>,
    bytes: Arc<AtomicU64>,
) {
    let mut client = ConfigServiceClient::new(channel).max_decoding_message_size(256 << 20);
    let (up, rx) = mpsc::channel(4);
    let msg = |kind| ProxyMessage { kind: Some(kind) };
    let _ = up
        .send(msg(Kind::Subscribe(Subscribe {
            namespace: ns,
            workload,
            role: "sidecar".into(),
            ..Subscribe::default()
        })))
        .await;
    let Ok(stream) = client
        .stream(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    else {
        return;
    };
    let mut stream = stream.into_inner();
    while let Ok(Some(push)) = stream.message().await {
        let n: usize = push.sections.iter().map(|s| s.json.len()).sum();
        bytes.fetch_add(n as u64, Ordering::Relaxed);
        if push.more {
            continue;
        }
        pushes.fetch_add(1, Ordering::Release);
        let ack = Ack {
            version: push.version,
            nonce: push.nonce,
        };
        if up.send(msg(Kind::Ack(ack))).await.is_err() {
            return;
        }
    }
}

async fn wait_all(counts: &[Arc<AtomicU32>], at_least: u32, limit: Duration) -> Duration {
    let start = Instant::now();
    while counts.iter().any(|c| c.load(Ordering::Acquire) < at_least) {
        assert!(
            start.elapsed() < limit,
            "proxies did not converge in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    start.elapsed()
}

fn temp() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-bench-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("mesh")).expect("temp dir");
    dir
}

fn proxies_wanted() -> usize {
    std::env::var("WEFT_BENCH_PROXIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
        .min(SERVICES * PER_SERVICE)
}

/// The simulated proxies, in a process of their own so that their memory
/// is not the control plane's: `scale --proxies ADDR CA_DIR`. Prints
/// `round N` when every proxy has ACKed N pushes, and the bytes received;
/// reads a line on standard input before each later round.
async fn run_proxies(addr: SocketAddr, ca_dir: &Path) {
    let proxies = proxies_wanted();
    let ca = Arc::new(Ca::load(ca_dir, None).expect("ca"));
    let td = ca.trust_domain().clone();
    let policy = PeerPolicy {
        bundle: Arc::new(ca.bundle().clone()),
        trust_domains: TrustDomains::from(td.clone()),
        expected: vec![weft_control::identity(&td)],
    };
    let mut counts = Vec::new();
    let bytes = Arc::new(AtomicU64::new(0));
    let per_account = proxies.div_ceil(SERVICES).max(1);
    let mut channel = None;
    for p in 0..proxies {
        let (svc, replica) = (p / per_account, p % per_account);
        let ns = format!("ns{}", svc % NAMESPACES);
        if replica == 0 {
            // A channel per service account, shared by its proxies.
            let id = SpiffeId::new(td.clone(), &ns, &format!("svc{svc}")).expect("id");
            let store = store_for(&ca, id);
            channel = Some(
                weft_identity::service::channel(addr, store, policy.clone())
                    .await
                    .expect("connects"),
            );
        }
        let Some(channel) = channel.clone() else {
            unreachable!("replica 0 comes first");
        };
        let count = Arc::new(AtomicU32::new(0));
        counts.push(count.clone());
        tokio::spawn(simulated(
            channel,
            ns,
            format!("svc{svc}-{replica}"),
            count,
            bytes.clone(),
        ));
    }
    for round in 1..=2 {
        wait_all(&counts, round, Duration::from_secs(600)).await;
        println!("round {round} {}", bytes.swap(0, Ordering::Relaxed));
    }
    // Until the control plane's side has read the result and stops us.
    tokio::time::sleep(Duration::from_secs(600)).await;
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--proxies") {
        let addr = args[i + 1].parse().expect("address");
        run_proxies(addr, Path::new(&args[i + 2])).await;
        return;
    }
    let proxies = proxies_wanted();
    let dir = temp();
    let mesh_dir = dir.join("mesh");
    write_mesh(&mesh_dir, false);
    let td = TrustDomain::new("cluster.local").expect("trust domain");
    let ca = Arc::new(Ca::init(&dir.join("ca"), &td, SystemTime::now()).expect("ca"));
    let folder = Folder {
        dir: mesh_dir.clone(),
        mesh_config: None,
    };
    let t = Instant::now();
    let control = ControlPlane::new(folder, "cluster.local").expect("valid mesh");
    let load_ms = t.elapsed().as_secs_f64() * 1000.0;

    // Compile cost of one proxy, whole and its own part only.
    let served = control.served();
    let best = |f: &dyn Fn()| {
        (0..5)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1000.0
            })
            .fold(f64::MAX, f64::min)
    };
    let (res, reg, mesh) = (&served.resources, &served.registry, &served.mesh);
    let whole_ms = best(&|| {
        let c = weft_model::compile(res, reg, "ns3", "svc3-0", mesh).expect("compiles");
        let _ = weft_model::sections::Sections::of(c);
    });
    let own_ms = best(&|| {
        let c = weft_model::compile_own(res, reg, "ns3", "svc3-0", mesh).expect("compiles");
        let _ = weft_model::sections::Sections::of(c);
    });
    // The baseline: every proxy's whole configuration compiled and encoded.
    let per_account = proxies.div_ceil(SERVICES).max(1);
    let sample = 20.min(proxies);
    let t = Instant::now();
    for p in 0..sample {
        let svc = p / per_account;
        let ns = format!("ns{}", svc % NAMESPACES);
        let name = format!("svc{svc}-{}", p % per_account);
        let c = weft_model::compile(res, reg, &ns, &name, mesh).expect("compiles");
        let _ = serde_json::to_vec(&c).expect("json");
    }
    let naive = t.elapsed().as_secs_f64() / sample as f64 * proxies as f64;
    drop(served);

    let policy = PeerPolicy {
        bundle: Arc::new(ca.bundle().clone()),
        trust_domains: TrustDomains::from(td.clone()),
        expected: Vec::new(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let _watch = control
        .folder()
        .watch(Duration::from_millis(100), {
            let control = control.clone();
            move || {
                let _ = control.reload();
            }
        })
        .expect("watch");
    tokio::spawn(weft_control::serve(
        listener,
        control.clone(),
        ca.clone(),
        store_for(&ca, weft_control::identity(&td)),
        policy,
        std::future::pending(),
    ));
    let (rss_idle, _) = rss_mb();

    let start = Instant::now();
    let mut child = std::process::Command::new(std::env::current_exe().expect("exe"))
        .args(["--proxies", &addr.to_string()])
        .arg(dir.join("ca"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("proxies start");
    let mut rounds = std::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut round = move || {
        let line = rounds.next().and_then(Result::ok).expect("a round");
        line.split(' ')
            .nth(2)
            .and_then(|b| b.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cold_bytes = tokio::task::block_in_place(&mut round);
    let cold = start.elapsed();
    let (rss_cold, _) = rss_mb();

    // One endpoint moves: every proxy sees svc0, so every proxy is pushed.
    let before = control.served().version.clone();
    let t = Instant::now();
    write_mesh(&mesh_dir, true);
    while control.served().version == before {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let reloaded = t.elapsed();
    let change_bytes = tokio::task::block_in_place(&mut round);
    let change = t.elapsed();
    let (rss, peak) = rss_mb();
    let _ = child.kill();
    let _ = child.wait();

    println!(
        "{SERVICES} services, {} workloads, {proxies} proxies, {NAMESPACES} namespaces; loading and validating the folder: {load_ms:.0} ms",
        SERVICES * PER_SERVICE
    );
    println!("| measure | value | vs. baseline |");
    println!("| --- | --- | --- |");
    println!(
        "| baseline: compile + encode every proxy's whole configuration (no sharing), one thread | {naive:.2} s | 1.00x |"
    );
    println!(
        "| file change → every proxy ACKed (100 ms watch debounce included) | {:.2} s | {:.2}x |",
        change.as_secs_f64(),
        change.as_secs_f64() / naive
    );
    println!(
        "| of which: watch, reload and validate, new snapshot | {:.2} s | |",
        reloaded.as_secs_f64()
    );
    println!(
        "| bytes pushed for that change, all proxies | {change_bytes} ({} per proxy) | |",
        change_bytes / proxies as u64
    );
    println!(
        "| first push to every proxy (connect, compile, send {:.0} MB) | {:.2} s | |",
        cold_bytes as f64 / 1e6,
        cold.as_secs_f64()
    );
    println!(
        "| compile + sections, one proxy: whole / own part only | {whole_ms:.2} ms / {own_ms:.3} ms | |"
    );
    println!(
        "| control plane RSS: loaded, no proxy / after first push / after change / peak | {rss_idle:.0} / {rss_cold:.0} / {rss:.0} / {peak:.0} MB | |"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
