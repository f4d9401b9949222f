//! `weft-loadgen`: sends HTTP/1.1 requests at a fixed rate over keep-alive
//! connections and reports latency percentiles as JSON. Latency is measured
//! from when a request was due, not when it was sent, so a stalled server
//! cannot hide its stalls (no coordinated omission).
//!
//! The schedule is kept by a thread of its own sleeping until each request
//! is due (the kernel wakes it within tens of microseconds), not by tokio's
//! timer, whose millisecond ticks would add up to a millisecond or two to
//! every measured latency and drown what a proxy adds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Mutex;

#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to connect to.
    #[arg(long)]
    connect: SocketAddr,
    /// Host header to send.
    #[arg(long)]
    host: String,
    /// Path to request.
    #[arg(long, default_value = "/")]
    path: String,
    /// Requests per second, in total.
    #[arg(long)]
    rate: u32,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: u32,
    /// Speak TLS, trusting the roots in this PEM file; the SNI is --host
    /// without its port.
    #[arg(long, value_name = "FILE")]
    tls_roots: Option<std::path::PathBuf>,
    /// Also write every request's latency to this file, one line each:
    /// microseconds from the start until it was due, then its latency in
    /// microseconds, in the order the requests were due.
    #[arg(long, value_name = "FILE")]
    latencies: Option<std::path::PathBuf>,
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A TLS client configuration trusting the roots in `path`.
fn tls_config(path: &std::path::Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pki_types::CertificateDer::pem_file_iter(path)? {
        roots.add(c?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let total = Duration::from_secs(args.duration);
    // (when due, latency), both in microseconds from `epoch`.
    let latencies = Arc::new(Mutex::new(Vec::<(u64, u64)>::new()));
    let epoch = Instant::now();
    let errors = Arc::new(Mutex::new(0u64));
    let tls = args.tls_roots.as_deref().map(tls_config).transpose()?;
    let sni = args.host.split(':').next().unwrap_or_default().to_string();
    let mut tasks = Vec::new();
    let mut schedules = Vec::new();
    for _ in 0..args.connections {
        let (due_tx, mut due_rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
        schedules.push(due_tx);
        let (host, path, latencies, errors) = (
            args.host.clone(),
            args.path.clone(),
            latencies.clone(),
            errors.clone(),
        );
        let addr = args.connect;
        let (tls, sni) = (tls.clone(), sni.clone());
        tasks.push(tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.context("connect")?;
            tcp.set_nodelay(true)?;
            let io: Box<dyn Io> = match tls {
                Some(config) => {
                    let name = rustls_pki_types::ServerName::try_from(sni)?;
                    Box::new(
                        tokio_rustls::TlsConnector::from(config)
                            .connect(name, tcp)
                            .await
                            .context("TLS handshake")?,
                    )
                }
                None => Box::new(tcp),
            };
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
            tokio::spawn(conn);
            let mut mine = Vec::new();
            let mut failed = 0u64;
            // A request due while the last one is still out waits here, its
            // latency counted from when it was due.
            while let Some(due) = due_rx.recv().await {
                let req = Request::builder()
                    .uri(path.as_str())
                    .header("host", host.as_str())
                    .body(Empty::<Bytes>::new())?;
                match sender.send_request(req).await {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.into_body().collect().await;
                        mine.push((
                            due.duration_since(epoch).as_micros() as u64,
                            due.elapsed().as_micros() as u64,
                        ));
                    }
                    _ => failed += 1,
                }
            }
            latencies.lock().await.extend(mine);
            *errors.lock().await += failed;
            Ok::<_, anyhow::Error>(())
        }));
    }
    // The schedule: request k is due at start + k * interval, on connection
    // k modulo the connections, once they have had time to connect.
    let pacer = std::thread::spawn(move || {
        let start = Instant::now() + Duration::from_millis(200);
        let mut k = 0u32;
        loop {
            let due = start + interval * k;
            if due >= start + total {
                break;
            }
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let to = &schedules[k as usize % schedules.len()];
            if to.send(due).is_err() {
                break;
            }
            k += 1;
        }
    });
    tokio::task::spawn_blocking(move || pacer.join())
        .await?
        .map_err(|_| anyhow::anyhow!("the pacer thread panicked"))?;
    for t in tasks {
        t.await??;
    }
    let mut all = latencies.lock().await.clone();
    if let Some(path) = &args.latencies {
        all.sort_unstable();
        let lines: String = all.iter().map(|(at, l)| format!("{at} {l}\n")).collect();
        std::fs::write(path, lines).with_context(|| format!("{}", path.display()))?;
    }
    let mut l: Vec<u64> = all.into_iter().map(|(_, l)| l).collect();
    l.sort_unstable();
    let pct = |p: f64| {
        l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    let report = serde_json::json!({
        "rate": args.rate,
        "ok": l.len(),
        "errors": *errors.lock().await,
        "achieved_rps": l.len() as f64 / args.duration as f64,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "p999_ms": pct(0.999),
        "max_ms": l.last().copied().unwrap_or(0) as f64 / 1000.0,
    });
    println!("{report}");
    Ok(())
}
