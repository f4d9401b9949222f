//! Transparent capture for real: two workloads, each in a network
//! namespace of its own (veth pairs to a bridge in a third namespace), each
//! with iptables rules like istio-init's (outbound TCP to 15001, inbound to
//! 15006, the proxy's own user and ports exempt) and a `weft proxy
//! --capture` running as that user. The client is curl, unaware of the
//! mesh, calling `http://reviews:9080` as the namespace's hosts file
//! resolves it. Needs root, ip, iptables and setpriv; without them it skips
//! and says why.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, temp};

/// The proxy's user, as istio-init exempts it.
const PROXY_UID: &str = "1337";

fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn must(args: &[&str]) {
    let out = run(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Why namespaces cannot be made here, if they cannot.
fn unavailable() -> Option<String> {
    for tool in ["ip", "iptables", "setpriv", "curl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    let probe = format!("weft-probe-{}", std::process::id());
    let made = run(&["ip", "netns", "add", &probe]);
    if !made.status.success() {
        return Some(format!(
            "cannot make a network namespace ({}): root is needed",
            String::from_utf8_lossy(&made.stderr).trim()
        ));
    }
    let _ = run(&["ip", "netns", "del", &probe]);
    None
}

/// The namespaces of the test and the hosts files `ip netns exec` reads;
/// all removed when dropped.
struct Net {
    names: Vec<String>,
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = run(&["ip", "netns", "del", n]);
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(n));
        }
    }
}

impl Net {
    fn exec<'a>(&self, ns: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["ip", "netns", "exec", ns];
        v.extend_from_slice(args);
        v
    }
}

/// istio-init's rules, in short: inbound TCP but the proxy's ports to
/// 15006; outbound TCP to 15001, but the proxy's own and loopback.
fn capture_rules(net: &Net, ns: &str) {
    let rules: [&[&str]; 4] = [
        &[
            "iptables",
            "-t",
            "nat",
            "-A",
            "PREROUTING",
            "-p",
            "tcp",
            "-m",
            "multiport",
            "!",
            "--dports",
            "15008,15021,15090,15000",
            "-j",
            "REDIRECT",
            "--to-ports",
            "15006",
        ],
        &[
            "iptables",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-m",
            "owner",
            "--uid-owner",
            PROXY_UID,
            "-j",
            "RETURN",
        ],
        &[
            "iptables",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            "127.0.0.0/8",
            "-j",
            "RETURN",
        ],
        &[
            "iptables",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-j",
            "REDIRECT",
            "--to-ports",
            "15001",
        ],
    ];
    for r in rules {
        must(&net.exec(ns, r));
    }
}

fn curl(net: &Net, ns: &str, url: &str) -> (String, String) {
    let out = run(&net.exec(ns, &["curl", "-s", "-m", "5", "-w", "\n%{http_code}", url]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (body.to_string(), code.to_string())
}

#[test]
fn captured_workloads_talk_mtls_without_knowing_the_mesh() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let dir = temp("netns");
    let id = std::process::id() % 100_000;
    let (hub, a, b) = (
        format!("weft-t{id}-hub"),
        format!("weft-t{id}-a"),
        format!("weft-t{id}-b"),
    );
    let net = Net {
        names: vec![hub.clone(), a.clone(), b.clone()],
    };
    for n in &net.names {
        must(&["ip", "netns", "add", n]);
        must(&net.exec(n, &["ip", "link", "set", "lo", "up"]));
    }
    must(&net.exec(&hub, &["ip", "link", "add", "br0", "type", "bridge"]));
    must(&net.exec(&hub, &["ip", "addr", "add", "10.77.0.1/24", "dev", "br0"]));
    must(&net.exec(&hub, &["ip", "link", "set", "br0", "up"]));
    for (ns, ip, short) in [(&a, "10.77.0.10", "a"), (&b, "10.77.0.20", "b")] {
        let (inside, outside) = (format!("v{id}{short}"), format!("h{id}{short}"));
        must(&[
            "ip", "link", "add", &inside, "netns", ns, "type", "veth", "peer", "name", &outside,
            "netns", &hub,
        ]);
        must(&net.exec(
            &hub,
            &["ip", "link", "set", &outside, "master", "br0", "up"],
        ));
        must(&net.exec(
            ns,
            &["ip", "addr", "add", &format!("{ip}/24"), "dev", &inside],
        ));
        must(&net.exec(ns, &["ip", "link", "set", &inside, "up"]));
        // Service addresses are routed out of the namespace, as a
        // cluster's are, so that the capture rule sees them.
        must(&net.exec(ns, &["ip", "route", "add", "default", "dev", &inside]));
        capture_rules(&net, ns);
        // The namespace's resolver: the service's virtual address.
        let etc = Path::new("/etc/netns").join(ns);
        std::fs::create_dir_all(&etc).expect("/etc/netns");
        std::fs::write(
            etc.join("hosts"),
            "127.0.0.1 localhost\n10.96.0.20 reviews reviews.default.svc.cluster.local\n",
        )
        .expect("hosts");
    }

    // The mesh and its CA, readable by the proxies' user.
    let mesh = dir.join("mesh");
    std::fs::create_dir_all(&mesh).expect("mesh dir");
    std::fs::write(
        mesh.join("mesh.yaml"),
        r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: sleep, namespace: default}
spec: {address: 10.77.0.10, serviceAccount: sleep, labels: {app: sleep}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews, namespace: default}
spec: {address: 10.77.0.20, serviceAccount: reviews, labels: {app: reviews}, ports: {http: 9080}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews.default.svc.cluster.local]
  addresses: [10.96.0.20]
  location: MESH_INTERNAL
  ports: [{number: 9080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: reviews}}
"#,
    )
    .expect("mesh.yaml");
    let weft = env!("CARGO_BIN_EXE_weft");
    let ca = dir.join("ca");
    must(&[weft, "ca", "init", "--dir", ca.to_str().unwrap_or_default()]);
    must(&[
        "chown",
        "-R",
        &format!("{PROXY_UID}:{PROXY_UID}"),
        dir.to_str().unwrap_or_default(),
    ]);
    let spawn = |args: Vec<&str>| {
        Proc(
            Command::new(args[0])
                .args(&args[1..])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn"),
        )
    };
    let (mesh_s, ca_s) = (
        mesh.to_str().unwrap_or_default(),
        ca.to_str().unwrap_or_default(),
    );
    let mut procs = Vec::new();
    for (ns, workload) in [(&a, "default/sleep"), (&b, "default/reviews")] {
        procs.push(spawn(net.exec(
            ns,
            &[
                "setpriv",
                "--reuid",
                PROXY_UID,
                "--regid",
                PROXY_UID,
                "--clear-groups",
                weft,
                "proxy",
                "--capture",
                "--mesh-dir",
                mesh_s,
                "--workload",
                workload,
                "--ca-dir",
                ca_s,
                "--access-log",
                "off",
            ],
        )));
    }
    // The application, which knows nothing of the mesh.
    procs.push(spawn(net.exec(
        &b,
        &[
            weft,
            "demo-app",
            "--service",
            "ratings",
            "--listen",
            "10.77.0.20:9080",
        ],
    )));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (body, code) = curl(&net, &a, "http://reviews:9080/ratings/0");
        if code == "200" {
            assert!(body.contains("Reviewer1"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no answer through capture: {code} {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The call crossed as mTLS: the destination counted the client's
    // identity.
    let (metrics, _) = curl(&net, &hub, "http://10.77.0.20:15090/stats/prometheus");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("istio_requests_total{")
                && l.contains(r#"reporter="destination""#)
                && l.contains(r#"source_principal="spiffe://cluster.local/ns/default/sa/sleep""#)
                && l.contains(r#"connection_security_policy="mutual_tls""#)),
        "{metrics}"
    );
    // Plaintext to the application's port from outside is captured into
    // 15006 and refused (STRICT).
    let (_, code) = curl(&net, &hub, "http://10.77.0.20:9080/ratings/0");
    assert_eq!(code, "000", "plaintext reached the application");
    // From the client, an address no service has is not let out
    // (REGISTRY_ONLY), though the route exists.
    let (_, code) = curl(&net, &a, "http://10.77.0.1:8080/");
    assert_eq!(code, "000");
    drop(procs);
}
