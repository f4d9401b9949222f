//! `weft demo --netns` as a user runs it (as root): each workload in a
//! network namespace of its own with its traffic captured, checked with
//! curl from the hub namespace and from inside workloads' namespaces, then
//! stopped with SIGTERM, after which no namespace of it is left. Without
//! root or the tools, it skips and says why; a crashed demo's namespaces
//! are cleared by the next one.

mod common;

use std::process::Command;

use common::start_demo;
use std::time::{Duration, Instant};

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
    let made = Command::new("ip").args(["netns", "add", &probe]).output();
    match made {
        Ok(o) if o.status.success() => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).status();
            None
        }
        Ok(o) => Some(format!(
            "cannot make a network namespace ({}): root is needed",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(e.to_string()),
    }
}

/// curl in namespace `ns`: (status code, body); code "000" when no answer.
fn curl(ns: &str, url: &str) -> (String, String) {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "curl",
            "-s",
            "-m",
            "5",
            "-w",
            "\n%{http_code}",
            url,
        ])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}

const HUB: &str = "weft-demo-hub";
const PAGE: &str = "http://10.10.0.10:8080/productpage";

fn demo_namespaces() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("weft-demo-"))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_demo_in_network_namespaces_captures_every_call() {
    if let Some(why) = unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    // A crashed demo's namespaces are cleared by the next start.
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo");
    let args = ["--netns", "--config-dir", dir.to_str().unwrap_or_default()];
    let mut crashed = start_demo(&args);
    let _ = crashed.0.kill();
    let _ = crashed.0.wait();
    assert!(!demo_namespaces().is_empty());
    let demo = start_demo(&args);

    // The product page through the ingress gateway; details reached the
    // external API through the egress gateway.
    let (code, page) = curl(HUB, PAGE);
    assert_eq!(code, "200", "{page}");
    assert!(page.contains("William Shakespeare"), "{page}");
    assert!(page.contains("Dover Publications"), "{page}");

    // The 90/10 canary, from applications that call `http://reviews:9080`.
    let mut v2 = 0;
    for _ in 0..100 {
        let (code, page) = curl(HUB, PAGE);
        assert_eq!(code, "200", "{page}");
        if page.contains("reviews-v2") {
            v2 += 1;
        }
    }
    assert!((2..=22).contains(&v2), "{v2} of 100 went to v2");

    // details may not call reviews; inside its namespace a plain curl is
    // captured and refused by reviews' policy.
    let (code, body) = curl("weft-demo-details-v1", "http://reviews:9080/reviews/0");
    assert_eq!(code, "403", "{body}");
    // Plaintext to an application's port is captured into 15006 and refused.
    let (code, _) = curl(HUB, "http://10.10.0.41:9080/reviews/0");
    assert_eq!(code, "000");
    // An address no service has is not let out of a workload.
    let (code, _) = curl("weft-demo-productpage-v1", "http://10.10.0.1:15014/metrics");
    assert_eq!(code, "000");
    // The destination counted the source's mTLS identity.
    let (_, metrics) = curl(HUB, "http://10.10.0.42:15090/stats/prometheus");
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains(r#"reporter="destination""#)
                && l.contains(r#"source_workload="productpage-v1""#)
        })
        .unwrap_or_else(|| panic!("nothing from productpage at reviews-v2:\n{metrics}"));
    assert!(
        line.contains(r#"connection_security_policy="mutual_tls""#),
        "{line}"
    );

    // SIGTERM stops everything and removes every namespace.
    let mut demo = demo;
    let killed = Command::new("kill")
        .args(["-TERM", &demo.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while demo.0.try_wait().ok().flatten().is_none() {
        assert!(Instant::now() < deadline, "the demo did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(demo_namespaces(), Vec::<String>::new());
    // And no process of it is left.
    let state = std::env::temp_dir().join(format!("weft-demo-{}", demo.0.id()));
    let mark = format!("WEFT_DEMO_STATE={}", state.display());
    let left: Vec<String> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter(|p| {
            std::fs::read(p.path().join("environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|kv| kv == mark.as_bytes()))
        })
        .map(|p| p.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "processes left: {left:?}");
}
