//! `weft demo --netns`: every workload in a network namespace of its own,
//! on a bridge in a hub namespace the demo makes, with iptables rules like
//! istio-init's, so that applications call `http://reviews:9080` unaware of
//! the mesh and their sidecars capture it. The demo's 127.0.10.N addresses
//! become 10.10.0.N (the configuration is copied with them replaced, and
//! copied again when it changes); each service's address (its own or the
//! auto-allocated one) is in the namespaces' hosts files. Everything is
//! removed on exit, and what a crashed demo left is removed at the next
//! start.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use weft_model::Registry;
use weft_model::registry::Workload;

/// Every namespace the demo makes starts with this.
pub(crate) const PREFIX: &str = "weft-demo-";
/// The namespace with the bridge, the control plane and the demo itself.
pub(crate) const HUB: &str = "weft-demo-hub";
/// The sidecars' user, which the capture rules exempt.
pub(crate) const PROXY_UID: &str = "1337";

/// The address a demo address has inside the namespaces.
pub(crate) fn address(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) if v4.octets()[..3] == [127, 0, 10] => {
            IpAddr::V4(Ipv4Addr::new(10, 10, 0, v4.octets()[3]))
        }
        other => other,
    }
}

/// The hub's own address on the bridge: the control plane's.
pub(crate) fn hub_address() -> IpAddr {
    address(IpAddr::from([127, 0, 10, 1]))
}

/// The namespace of workload `w`.
pub(crate) fn namespace_of(w: &Workload) -> String {
    format!("{PREFIX}{}", w.name)
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .with_context(|| format!("running {}", args[0]))?;
    if !out.status.success() {
        bail!(
            "{}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn exec(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut v = vec!["ip", "netns", "exec", ns];
    v.extend_from_slice(args);
    run(&v)
}

/// What netns mode needs: root, ip, iptables and setpriv.
pub(crate) fn check() -> anyhow::Result<()> {
    for tool in ["ip", "iptables", "setpriv"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            bail!("weft demo --netns needs {tool} (Debian: iproute2, iptables, util-linux)");
        }
    }
    let uid = Command::new("id").arg("-u").output()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        bail!("weft demo --netns makes network namespaces and iptables rules: run it as root");
    }
    Ok(())
}

/// Removes every namespace (and hosts file) a demo made.
pub(crate) fn clear() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if name.starts_with(PREFIX) {
            let _ = run(&["ip", "netns", "del", name]);
        }
    }
    if let Ok(entries) = std::fs::read_dir("/etc/netns") {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(PREFIX) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Copies the YAML of `from` into `to` with the demo's addresses
/// replaced by the namespaces' ones.
pub(crate) fn copy_config(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)?.flatten() {
        let path = e.path();
        let yaml = matches!(
            path.extension().and_then(|x| x.to_str()),
            Some("yaml" | "yml" | "json")
        );
        if !yaml {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        std::fs::write(
            to.join(e.file_name()),
            text.replace("127.0.10.", "10.10.0."),
        )?;
    }
    Ok(())
}

/// The network: the hub with its bridge (and the stand-ins' addresses),
/// and a namespace per workload wired to it; capture rules for the
/// sidecars' workloads; hosts files naming every service's address.
pub(crate) fn build(
    registry: &Registry,
    captured: &[&Workload],
    gateways: &[&Workload],
    extra_hub_addresses: &[IpAddr],
) -> anyhow::Result<()> {
    run(&["ip", "netns", "add", HUB])?;
    exec(HUB, &["ip", "link", "set", "lo", "up"])?;
    exec(HUB, &["ip", "link", "add", "br0", "type", "bridge"])?;
    exec(HUB, &["ip", "link", "set", "br0", "up"])?;
    let mut hub_ips = vec![hub_address()];
    hub_ips.extend_from_slice(extra_hub_addresses);
    for ip in hub_ips {
        exec(
            HUB,
            &["ip", "addr", "add", &format!("{ip}/24"), "dev", "br0"],
        )?;
    }
    let hosts = hosts_file(registry);
    for (i, w) in captured.iter().chain(gateways).enumerate() {
        let ns = namespace_of(w);
        let (inside, outside) = (format!("wd{i}"), format!("wh{i}"));
        run(&["ip", "netns", "add", &ns])?;
        exec(&ns, &["ip", "link", "set", "lo", "up"])?;
        run(&[
            "ip", "link", "add", &inside, "netns", &ns, "type", "veth", "peer", "name", &outside,
            "netns", HUB,
        ])?;
        exec(HUB, &["ip", "link", "set", &outside, "master", "br0", "up"])?;
        let ip = address(w.address);
        exec(
            &ns,
            &["ip", "addr", "add", &format!("{ip}/24"), "dev", &inside],
        )?;
        exec(&ns, &["ip", "link", "set", &inside, "up"])?;
        // Service addresses leave by the bridge, where no one answers:
        // only the capture rules make them reachable.
        exec(&ns, &["ip", "route", "add", "default", "dev", &inside])?;
        let etc = Path::new("/etc/netns").join(&ns);
        std::fs::create_dir_all(&etc)?;
        std::fs::write(etc.join("hosts"), &hosts)?;
    }
    for w in captured {
        capture_rules(&namespace_of(w))?;
    }
    Ok(())
}

/// istio-init's rules, in short: inbound TCP but the proxy's ports to
/// 15006; outbound TCP to 15001, but the proxy's own and loopback's.
fn capture_rules(ns: &str) -> anyhow::Result<()> {
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
        exec(ns, r)?;
    }
    Ok(())
}

/// `/etc/hosts` for the namespaces: each service's address with its host
/// and, for a Kubernetes-style name, its short forms.
fn hosts_file(registry: &Registry) -> String {
    let mut names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in &registry.services {
        let Some(ip) = s.addresses.iter().find(|a| a.parse::<IpAddr>().is_ok()) else {
            continue;
        };
        let mut aliases = vec![s.host.clone()];
        if let Some(base) = s.host.strip_suffix(".svc.cluster.local") {
            aliases.push(format!("{base}.svc"));
            aliases.push(base.to_string());
            if let Some((name, _)) = base.split_once('.') {
                aliases.push(name.to_string());
            }
        }
        names.entry(ip.clone()).or_default().extend(aliases);
    }
    let mut out = String::from("127.0.0.1 localhost\n");
    for (ip, mut aliases) in names {
        aliases.dedup();
        out.push_str(&format!("{ip} {}\n", aliases.join(" ")));
    }
    out
}

/// Moves this process into the hub namespace: the demo then reaches every
/// workload's address (for readiness) as the control plane does. Must run
/// before any other thread starts, as threads take their parent's.
pub(crate) fn enter_hub() -> anyhow::Result<()> {
    let f = std::fs::File::open(PathBuf::from("/var/run/netns").join(HUB))
        .context("opening the hub namespace")?;
    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
        .context("entering the hub namespace")?;
    Ok(())
}
