//! What the CLI tests share: processes that stop with the test, a
//! stand-in app, plain HTTP requests, and waiting.

#![allow(dead_code)] // each test binary uses its own part

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

pub(crate) struct Proc(pub(crate) Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("weft-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A stand-in app on `addr` that answers every request with `body`.
pub(crate) fn app(addr: &str, body: &'static str) {
    let listener = TcpListener::bind(addr).expect("app binds");
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf);
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(resp.as_bytes());
            });
        }
    });
}

/// `GET url` through the HTTP proxy at `proxy`; (status, body).
pub(crate) fn get(proxy: &str, url: &str) -> Option<(u16, String)> {
    request(proxy, "GET", url)
}

pub(crate) fn request(proxy: &str, method: &str, url: &str) -> Option<(u16, String)> {
    let mut tcp = TcpStream::connect(proxy).ok()?;
    tcp.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let host = url.trim_start_matches("http://").split('/').next()?;
    tcp.write_all(
        format!("{method} {url} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut resp = String::new();
    tcp.read_to_string(&mut resp).ok()?;
    let status = resp.split(' ').nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

pub(crate) fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A client workload (`NET.21`) and an echo workload (`NET.31`, port 8080)
/// behind `echo.default.svc.cluster.local`; `net` is like `127.0.201`.
pub(crate) fn two_workloads(net: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: client, namespace: default}}
spec: {{address: {net}.21, serviceAccount: client, ports: {{http: 8000}}}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: echo, namespace: default}}
spec: {{address: {net}.31, serviceAccount: echo, labels: {{app: echo}}, ports: {{http: 8080}}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo, namespace: default}}
spec:
  hosts: [echo.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 8080, name: http, protocol: HTTP}}]
  resolution: STATIC
  workloadSelector: {{labels: {{app: echo}}}}
"#
    )
}

/// A `weft demo` process; dropped (a failed assertion), it gets SIGTERM so
/// that it stops its children too, rather than a SIGKILL that would orphan
/// them.
pub(crate) struct Demo(pub(crate) Child);

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `weft demo ARGS`, once it says it is ready; its output is drained.
pub(crate) fn start_demo(args: &[&str]) -> Demo {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .arg("demo")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("weft demo starts");
    let (lines, out) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines.send(line);
        }
    });
    let demo = Demo(child);
    loop {
        let line = out
            .recv_timeout(Duration::from_secs(60))
            .expect("the demo prints its progress");
        if line.starts_with("Ready in ") {
            break;
        }
    }
    std::thread::spawn(move || while out.recv().is_ok() {});
    demo
}
