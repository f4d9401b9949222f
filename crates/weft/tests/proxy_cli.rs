//! `weft proxy` as an operator runs it: two sidecars as processes on their
//! own addresses, a stand-in app, requests through the outbound listener,
//! and live reload that refuses a broken configuration.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Proc, app, get, request, temp, two_workloads, wait_until};

fn proxy(mesh: &Path, ca: &Path, workload: &str, extra: &[&str]) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args([
            "proxy",
            "--mesh-dir",
            mesh.to_str().unwrap_or_default(),
            "--workload",
            workload,
            "--ca-dir",
            ca.to_str().unwrap_or_default(),
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("weft proxy starts");
    Proc(child)
}

#[test]
fn two_sidecars_route_and_reload_keeping_the_last_good_config() {
    let dir = temp("pair");
    let (mesh, ca) = (dir.join("mesh"), dir.join("ca"));
    std::fs::create_dir_all(&mesh).expect("mesh dir");
    std::fs::write(mesh.join("mesh.yaml"), two_workloads("127.0.201")).expect("write mesh");
    let init = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["ca", "init", "--dir", ca.to_str().unwrap_or_default()])
        .output()
        .expect("ca init");
    assert!(init.status.success());
    app("127.0.201.31:8080", "hello from echo");
    let _client = proxy(&mesh, &ca, "default/client", &[]);
    let _echo = proxy(&mesh, &ca, "default/echo", &[]);
    for health in ["127.0.201.21:15021", "127.0.201.31:15021"] {
        wait_until(health, || {
            get(health, &format!("http://{health}/healthz/ready")).is_some_and(|(s, _)| s == 200)
        });
    }
    let url = "http://echo.default.svc.cluster.local:8080/";
    assert_eq!(
        get("127.0.201.21:15001", url),
        Some((200, "hello from echo".into()))
    );

    // The admin endpoint reads and changes the log level, as Envoy's does.
    let admin = "127.0.201.21:15000";
    let logging = format!("http://{admin}/logging");
    assert_eq!(
        get(admin, &logging),
        Some((200, "active level: info\n".into()))
    );
    let debug = format!("{logging}?level=debug");
    assert_eq!(request(admin, "GET", &debug).map(|r| r.0), Some(405));
    assert_eq!(
        request(admin, "POST", &debug),
        Some((200, "active level: debug\n".into()))
    );
    assert_eq!(
        get(admin, &logging),
        Some((200, "active level: debug\n".into()))
    );
    let bogus = format!("{logging}?level=loud");
    assert_eq!(request(admin, "POST", &bogus).map(|r| r.0), Some(400));

    // A routing change in the folder is picked up.
    std::fs::write(
        mesh.join("route.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: echo}\nspec:\n  hosts: [echo]\n  http:\n  - directResponse: {status: 418, body: {string: teapot}}\n",
    )
    .expect("write route");
    wait_until("reload", || {
        get("127.0.201.21:15001", url) == Some((418, "teapot".into()))
    });

    // A broken change is refused; the last good configuration keeps serving.
    std::fs::write(
        mesh.join("route.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: echo}\nspec:\n  hosts: [echo]\n  http:\n  - directResponse: {status: 99}\n",
    )
    .expect("write broken route");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(get("127.0.201.21:15001", url), Some((418, "teapot".into())));
}

#[test]
fn a_mesh_config_change_alone_triggers_a_reload() {
    let dir = temp("meshconfig");
    let (mesh, ca, mesh_config) = (
        dir.join("mesh"),
        dir.join("ca"),
        dir.join("meshconfig.yaml"),
    );
    std::fs::create_dir_all(&mesh).expect("mesh dir");
    std::fs::write(
        mesh.join("mesh.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: client, namespace: default}\nspec: {address: 127.0.202.21, serviceAccount: client}\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: echo, namespace: default}\nspec:\n  hosts: [echo.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: NONE\n",
    )
    .expect("write mesh");
    std::fs::write(&mesh_config, "trustDomain: cluster.local\n").expect("write mesh config");
    assert!(
        Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["ca", "init", "--dir", ca.to_str().unwrap_or_default()])
            .output()
            .expect("ca init")
            .status
            .success()
    );
    let _client = proxy(
        &mesh,
        &ca,
        "default/client",
        &["--mesh-config", mesh_config.to_str().unwrap_or_default()],
    );
    let health = "127.0.202.21:15021";
    wait_until(health, || {
        get(health, &format!("http://{health}/healthz/ready")).is_some_and(|(s, _)| s == 200)
    });
    // While the mesh config is invalid, a new route is not taken up ...
    std::fs::write(
        &mesh_config,
        "extensionProviders:\n- name: a\n  envoyExtAuthzHttp: {service: authz}\n",
    )
    .expect("break mesh config");
    std::thread::sleep(Duration::from_millis(1500));
    std::fs::write(
        mesh.join("route.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: echo}\nspec:\n  hosts: [echo.example.com]\n  http:\n  - directResponse: {status: 418, body: {string: teapot}}\n",
    )
    .expect("write route");
    std::thread::sleep(Duration::from_millis(2500));
    let url = "http://echo.example.com/";
    assert_ne!(get("127.0.202.21:15001", url), Some((418, "teapot".into())));
    // ... and mending the mesh config file, with the folder unchanged,
    // brings it in.
    std::fs::write(&mesh_config, "trustDomain: cluster.local\n").expect("mend mesh config");
    wait_until("reload", || {
        get("127.0.202.21:15001", url) == Some((418, "teapot".into()))
    });
}

#[test]
fn an_invalid_folder_stops_the_proxy_with_the_errors() {
    let dir = temp("invalid");
    let (mesh, ca) = (dir.join("mesh"), dir.join("ca"));
    std::fs::create_dir_all(&mesh).expect("mesh dir");
    std::fs::write(mesh.join("bad.yaml"), "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec: {hosts: [a]}\n").expect("write");
    assert!(
        Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["ca", "init", "--dir", ca.to_str().unwrap_or_default()])
            .output()
            .expect("ca init")
            .status
            .success()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args([
            "proxy",
            "--mesh-dir",
            mesh.to_str().unwrap_or_default(),
            "--workload",
            "default/x",
            "--ca-dir",
            ca.to_str().unwrap_or_default(),
        ])
        .output()
        .expect("weft proxy runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yaml:4:7: VirtualService default/x: spec: http, tcp or tls must be provided in virtual service"), "{err}");
}

#[test]
fn an_ingress_gateway_binds_its_server_ports_and_follows_reloads() {
    let dir = temp("ingress");
    let (mesh, ca) = (dir.join("mesh"), dir.join("ca"));
    std::fs::create_dir_all(&mesh).expect("mesh dir");
    let gateway = |port: u16| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: gw, namespace: istio-system}}\nspec: {{address: 127.0.203.10, serviceAccount: gw, labels: {{istio: ingressgateway}}}}\n---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: public, namespace: istio-system}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: {port}, name: http, protocol: HTTP}}\n    hosts: [\"*\"]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: hello, namespace: istio-system}}\nspec:\n  hosts: [hello.example.com]\n  gateways: [public]\n  http:\n  - directResponse: {{status: 200, body: {{string: hello}}}}\n"
        )
    };
    std::fs::write(mesh.join("gw.yaml"), gateway(8080)).expect("write mesh");
    assert!(
        Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["ca", "init", "--dir", ca.to_str().unwrap_or_default()])
            .output()
            .expect("ca init")
            .status
            .success()
    );
    let _gw = proxy(&mesh, &ca, "istio-system/gw", &["--role", "ingress"]);
    wait_until("gateway port", || {
        get("127.0.203.10:8080", "http://hello.example.com/") == Some((200, "hello".into()))
    });
    // Moving the server to another port binds the new one and frees the old.
    std::fs::write(mesh.join("gw.yaml"), gateway(8081)).expect("write mesh");
    wait_until("new port", || {
        get("127.0.203.10:8081", "http://hello.example.com/") == Some((200, "hello".into()))
    });
    wait_until("old port closed", || {
        TcpStream::connect("127.0.203.10:8080").is_err()
    });
}
