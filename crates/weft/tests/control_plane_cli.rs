//! `weft control-plane` with managed proxies, as an operator runs them:
//! processes on their own addresses, bootstrap tokens, pushes that follow
//! the folder, a broken change refused while the last good configuration
//! stays, status and config dumps, proxies that outlive the control plane,
//! and WorkloadGroup instances that register while they are connected.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{Proc, app, get, temp, two_workloads, wait_until};

fn weft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .output()
        .expect("weft runs")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

struct Mesh {
    dir: PathBuf,
    config: PathBuf,
    ca: PathBuf,
}

impl Mesh {
    fn new(name: &str, yaml: &str) -> Mesh {
        let dir = temp(name);
        let (config, ca) = (dir.join("mesh"), dir.join("ca"));
        std::fs::create_dir_all(&config).expect("config dir");
        std::fs::write(config.join("mesh.yaml"), yaml).expect("write mesh");
        assert!(weft(&["ca", "init", "--dir", s(&ca)]).status.success());
        Mesh { dir, config, ca }
    }

    fn root(&self) -> PathBuf {
        self.ca.join("root-cert.pem")
    }

    fn control_plane(&self, listen: &str, monitoring: &str) -> Proc {
        self.control_plane_with(listen, monitoring, &[])
    }

    fn control_plane_with(&self, listen: &str, monitoring: &str, extra: &[&str]) -> Proc {
        let log = std::fs::File::create(self.dir.join(format!("control-plane-{listen}.log")))
            .expect("log");
        Proc(
            Command::new(env!("CARGO_BIN_EXE_weft"))
                .args(["control-plane", "--config-dir", s(&self.config)])
                .args(["--ca-dir", s(&self.ca), "--listen", listen])
                .args(["--monitoring", monitoring])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("control plane starts"),
        )
    }

    /// A managed proxy for `workload`, its token for `service_account`.
    fn proxy(&self, cp: &str, workload: &str, service_account: &str, extra: &[&str]) -> Proc {
        let tok = weft(&[
            "token",
            "issue",
            "--ca-dir",
            s(&self.ca),
            "--workload",
            workload,
            "--service-account",
            service_account,
        ]);
        assert!(tok.status.success());
        let file = self
            .dir
            .join(format!("{}.token", workload.replace('/', "-")));
        std::fs::write(&file, tok.stdout).expect("token file");
        let log = std::fs::File::create(self.log(workload)).expect("log");
        Proc(
            Command::new(env!("CARGO_BIN_EXE_weft"))
                .args(["proxy", "--control-plane", cp, "--workload", workload])
                .args(["--token", s(&file), "--root-cert", s(&self.root())])
                .args(["--access-log", "off"])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("proxy starts"),
        )
    }

    fn log(&self, workload: &str) -> PathBuf {
        self.dir.join(format!("{}.log", workload.replace('/', "-")))
    }

    fn status(&self, cp: &str) -> (bool, String) {
        let out = weft(&[
            "status",
            "--control-plane",
            cp,
            "--root-cert",
            s(&self.root()),
        ]);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }
}

fn ready(health: &str) -> bool {
    get(health, &format!("http://{health}/healthz/ready")).is_some_and(|(s, _)| s == 200)
}

const TEAPOT: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.default.svc.cluster.local]
  http:
  - fault: {abort: {httpStatus: 418, percentage: {value: 100}}}
    route: [{destination: {host: echo.default.svc.cluster.local}}]
"#;

const URL: &str = "http://echo.default.svc.cluster.local:8080/";

#[test]
fn managed_proxies_follow_the_folder_and_keep_the_last_good_config() {
    let mesh = Mesh::new("cp", &two_workloads("127.0.204"));
    let git = Command::new("git")
        .args(["-C", s(&mesh.config), "init", "-q"])
        .status()
        .is_ok_and(|s| s.success());
    if git {
        let commit = Command::new("git")
            .args([
                "-C",
                s(&mesh.config),
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
            ])
            .args(["commit", "-q", "--allow-empty", "-m", "mesh"])
            .status();
        assert!(commit.is_ok_and(|s| s.success()));
    } else {
        println!("git is not installed: the commit in `weft status` is not checked");
    }
    let cp = "https://127.0.204.1:15012";
    let mut control = mesh.control_plane("127.0.204.1:15012", "127.0.204.1:15014");
    app("127.0.204.31:8080", "hello from echo");
    let _client = mesh.proxy(cp, "default/client", "client", &[]);
    let _echo = mesh.proxy(cp, "default/echo", "echo", &[]);
    for health in ["127.0.204.21:15021", "127.0.204.31:15021"] {
        wait_until(health, || ready(health));
    }
    assert_eq!(
        get("127.0.204.21:15001", URL),
        Some((200, "hello from echo".into()))
    );

    // Both proxies are SYNCED, and the folder's commit is shown.
    let (ok, status) = mesh.status(cp);
    assert!(ok, "{status}");
    assert_eq!(status.matches("SYNCED").count(), 2, "{status}");
    assert!(status.contains("default/client"), "{status}");
    assert!(
        status.contains("spiffe://cluster.local/ns/default/sa/echo"),
        "{status}"
    );
    if git {
        let head = Command::new("git")
            .args(["-C", s(&mesh.config), "rev-parse", "HEAD"])
            .output()
            .expect("git rev-parse");
        let head = String::from_utf8_lossy(&head.stdout).trim().to_string();
        assert!(status.contains(&format!("at commit {head}")), "{status}");
    }
    let dump = weft(&[
        "config-dump",
        "default/client",
        "--control-plane",
        cp,
        "--root-cert",
        s(&mesh.root()),
    ]);
    assert!(dump.status.success());
    let json: serde_json::Value = serde_json::from_slice(&dump.stdout).expect("dump is JSON");
    assert_eq!(json["workload"]["name"], "client");
    assert!(
        json["clusters"]
            .as_object()
            .is_some_and(|c| c.contains_key("outbound|8080||echo.default.svc.cluster.local")),
        "{json}"
    );

    // A change is pushed.
    std::fs::write(mesh.config.join("vs.yaml"), TEAPOT).expect("write vs");
    wait_until("the fault to be pushed", || {
        get("127.0.204.21:15001", URL).is_some_and(|(s, _)| s == 418)
    });

    // A broken change is refused whole: the last good config stays, the
    // status says why, and the metrics count it.
    std::fs::write(
        mesh.config.join("broken.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: broken, namespace: default}\nspec:\n  hosts: [echo]\n  http: [{route: [{destination: {host: echo}, weight: -5}]}]\n",
    )
    .expect("write broken");
    wait_until("the refusal", || mesh.status(cp).1.contains("REFUSED"));
    let (ok, status) = mesh.status(cp);
    assert!(!ok, "a refused change makes status fail");
    assert!(status.contains("broken.yaml:6"), "{status}");
    assert!(status.contains("weight"), "{status}");
    assert_eq!(get("127.0.204.21:15001", URL).map(|r| r.0), Some(418));
    let metrics = get("127.0.204.1:15014", "http://127.0.204.1:15014/metrics")
        .expect("metrics")
        .1;
    for line in ["pilot_xds 2", "weft_config_validation_failures_total 1"] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }
    // Nothing was refused by a proxy.
    assert!(
        !metrics.contains("pilot_total_xds_rejects_total{"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pilot_xds_pushes_total{type=\"config\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("pilot_proxy_convergence_time_count"),
        "{metrics}"
    );

    // Without the control plane the proxies keep serving what they have.
    drop(control);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(get("127.0.204.21:15001", URL).map(|r| r.0), Some(418));
    assert!(ready("127.0.204.21:15021"));

    // Fixed and restarted, it serves the new set and the proxies return.
    std::fs::remove_file(mesh.config.join("broken.yaml")).expect("fix");
    std::fs::remove_file(mesh.config.join("vs.yaml")).expect("remove vs");
    control = mesh.control_plane("127.0.204.1:15012", "127.0.204.1:15014");
    wait_until("the proxies to reconnect and take the new set", || {
        get("127.0.204.21:15001", URL).is_some_and(|(s, _)| s == 200)
    });
    wait_until("both SYNCED", || {
        let (ok, status) = mesh.status(cp);
        ok && status.matches("SYNCED").count() == 2
    });

    // Restarted with nothing changed, it sends nothing: the proxies say
    // which version they have.
    drop(control);
    let control = mesh.control_plane("127.0.204.1:15012", "127.0.204.1:15014");
    wait_until("both SYNCED again", || {
        let (ok, status) = mesh.status(cp);
        ok && status.matches("SYNCED").count() == 2
    });
    let metrics = get("127.0.204.1:15014", "http://127.0.204.1:15014/metrics")
        .expect("metrics")
        .1;
    assert!(!metrics.contains("pilot_xds_pushes_total{"), "{metrics}");

    // A configuration a proxy cannot apply is NACKed: it keeps serving the
    // one it has, and status says why.
    let moved = two_workloads("127.0.204").replace("127.0.204.31", "127.0.204.33");
    std::fs::write(mesh.config.join("mesh.yaml"), moved).expect("move echo");
    wait_until("the NACK", || mesh.status(cp).1.contains("NACKED"));
    let (ok, status) = mesh.status(cp);
    assert!(!ok);
    assert!(status.contains("address changed"), "{status}");
    assert!(ready("127.0.204.31:15021"));
    let metrics = get("127.0.204.1:15014", "http://127.0.204.1:15014/metrics")
        .expect("metrics")
        .1;
    assert!(
        metrics.contains("pilot_total_xds_rejects_total{type=\"config\"} 1"),
        "{metrics}"
    );
    drop(control);
}

#[test]
fn a_proxy_subscribes_only_as_the_workload_its_certificate_names() {
    let mesh = Mesh::new("cp-deny", &two_workloads("127.0.205"));
    let cp = "https://127.0.205.1:15012";
    let _control = mesh.control_plane("127.0.205.1:15012", "127.0.205.1:15014");
    // A token for the client's service account, asking for echo's config.
    let _impostor = mesh.proxy(cp, "default/echo", "client", &[]);
    let log = mesh.log("default/echo");
    wait_until("the refusal in the proxy's log", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("may not subscribe as default/echo"))
    });
    assert!(!ready("127.0.205.31:15021"));
    let (_, status) = mesh.status(cp);
    assert!(status.contains("(no proxy connected)"), "{status}");
}

const GROUP_MESH: &str = r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: client, namespace: default}
spec: {address: 127.0.206.21, serviceAccount: client, ports: {http: 8000}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadGroup
metadata: {name: echo, namespace: default}
spec:
  metadata: {labels: {app: echo}}
  template: {serviceAccount: echo, ports: {http: 8080}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: echo, namespace: default}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{number: 8080, name: http, protocol: HTTP}]
  resolution: STATIC
  workloadSelector: {labels: {app: echo}}
"#;

#[test]
fn workload_group_instances_register_while_connected() {
    let mesh = Mesh::new("cp-group", GROUP_MESH);
    let cp = "https://127.0.206.1:15012";
    let _control = mesh.control_plane("127.0.206.1:15012", "127.0.206.1:15014");
    app("127.0.206.32:8080", "hello from a registered echo");
    let _client = mesh.proxy(cp, "default/client", "client", &[]);
    wait_until("client ready", || ready("127.0.206.21:15021"));
    // No instance yet: the service has no endpoints.
    assert_eq!(get("127.0.206.21:15001", URL).map(|r| r.0), Some(503));
    let echo = mesh.proxy(cp, "default/echo", "echo", &["--address", "127.0.206.32"]);
    wait_until("the instance to register and serve", || {
        get("127.0.206.21:15001", URL)
            .is_some_and(|r| r == (200, "hello from a registered echo".into()))
    });
    let (_, status) = mesh.status(cp);
    assert!(status.contains("default/echo-127-0-206-32"), "{status}");
    let dump = weft(&[
        "config-dump",
        "default/echo-127-0-206-32",
        "--control-plane",
        cp,
        "--root-cert",
        s(&mesh.root()),
    ]);
    assert!(dump.status.success());
    // When it goes, so does its endpoint.
    drop(echo);
    wait_until("the endpoint to leave", || {
        get("127.0.206.21:15001", URL).is_some_and(|(s, _)| s == 503)
    });
    let (_, status) = mesh.status(cp);
    assert!(!status.contains("echo-127-0-206-32"), "{status}");
}

#[test]
fn proxies_fail_over_between_replicas_of_the_control_plane() {
    let mesh = Mesh::new("cp-replicas", &two_workloads("127.0.207"));
    let (one, two) = ("https://127.0.207.1:15012", "https://127.0.207.2:15012");
    let first = mesh.control_plane("127.0.207.1:15012", "127.0.207.1:15014");
    let _second = mesh.control_plane("127.0.207.2:15012", "127.0.207.2:15014");
    app("127.0.207.31:8080", "hello from echo");
    let both = format!("{one},{two}");
    let _client = mesh.proxy(&both, "default/client", "client", &[]);
    let _echo = mesh.proxy(&both, "default/echo", "echo", &[]);
    for health in ["127.0.207.21:15021", "127.0.207.31:15021"] {
        wait_until(health, || ready(health));
    }
    wait_until("both on the first replica", || {
        mesh.status(one).1.matches("SYNCED").count() == 2
    });
    assert!(mesh.status(two).1.contains("(no proxy connected)"));
    drop(first);
    wait_until("both on the second replica", || {
        let (ok, status) = mesh.status(two);
        ok && status.matches("SYNCED").count() == 2
    });
    // Changes now come from the second replica.
    std::fs::write(mesh.config.join("vs.yaml"), TEAPOT).expect("write vs");
    wait_until("the fault to be pushed", || {
        get("127.0.207.21:15001", URL).is_some_and(|(s, _)| s == 418)
    });
}

#[test]
fn replicas_share_the_instances_registered_with_each_other() {
    let yaml = GROUP_MESH.replace("127.0.206.", "127.0.208.");
    let mesh = Mesh::new("cp-peers", &yaml);
    let (one, two) = ("https://127.0.208.1:15012", "https://127.0.208.2:15012");
    let _first =
        mesh.control_plane_with("127.0.208.1:15012", "127.0.208.1:15014", &["--peer", two]);
    let _second =
        mesh.control_plane_with("127.0.208.2:15012", "127.0.208.2:15014", &["--peer", one]);
    app("127.0.208.32:8080", "hello from the first replica's echo");
    // The client on the second replica, the instance on the first.
    let _client = mesh.proxy(two, "default/client", "client", &[]);
    wait_until("client ready", || ready("127.0.208.21:15021"));
    let echo = mesh.proxy(one, "default/echo", "echo", &["--address", "127.0.208.32"]);
    wait_until("the instance to reach the other replica's client", || {
        get("127.0.208.21:15001", URL)
            .is_some_and(|r| r == (200, "hello from the first replica's echo".into()))
    });
    drop(echo);
    wait_until("the endpoint to leave there too", || {
        get("127.0.208.21:15001", URL).is_some_and(|(s, _)| s == 503)
    });
}
