//! `weft-loadgen`: sends HTTP/1.1 requests at a fixed rate over keep-alive
//! connections and reports latency percentiles as JSON. Latency is measured
//! from when a request was due, not when it was sent, so a stalled server
//! cannot hide its stalls (no coordinated omission).

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
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let per_conn = f64::from(args.rate) / f64::from(args.connections);
    let interval = Duration::from_secs_f64(1.0 / per_conn);
    let total = Duration::from_secs(args.duration);
    let latencies = Arc::new(Mutex::new(Vec::<u64>::new()));
    let errors = Arc::new(Mutex::new(0u64));
    let start = Instant::now() + Duration::from_millis(100);
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let (host, path, latencies, errors) = (
            args.host.clone(),
            args.path.clone(),
            latencies.clone(),
            errors.clone(),
        );
        let addr = args.connect;
        tasks.push(tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.context("connect")?;
            tcp.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            // Spread the connections' schedules across one interval.
            let mut due = start + interval.mul_f64(f64::from(c) / f64::from(args.connections));
            let mut mine = Vec::new();
            let mut failed = 0u64;
            while due < start + total {
                tokio::time::sleep_until(due.into()).await;
                let req = Request::builder()
                    .uri(path.as_str())
                    .header("host", host.as_str())
                    .body(Empty::<Bytes>::new())?;
                match sender.send_request(req).await {
                    Ok(resp) if resp.status().is_success() => {
                        let _ = resp.into_body().collect().await;
                        mine.push(due.elapsed().as_micros() as u64);
                    }
                    _ => failed += 1,
                }
                due += interval;
            }
            latencies.lock().await.extend(mine);
            *errors.lock().await += failed;
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut l = latencies.lock().await.clone();
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
        "max_ms": l.last().copied().unwrap_or(0) as f64 / 1000.0,
    });
    println!("{report}");
    Ok(())
}
