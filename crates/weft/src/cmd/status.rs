//! `weft status` and `weft config-dump`: what the control plane serves and
//! what each proxy has.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use weft_identity::tls::PeerPolicy;
use weft_identity::{CertStore, TrustBundle, TrustDomain, TrustDomains};
use weft_protocol::mesh::config_service_client::ConfigServiceClient;
use weft_protocol::mesh::{ConfigDumpRequest, StatusRequest};

/// Where the control plane is and how to trust it.
#[derive(Debug, clap::Args)]
pub(crate) struct ControlPlaneArgs {
    /// The control plane's gRPC port.
    #[arg(long, value_name = "URL", default_value = "https://127.0.0.1:15012")]
    control_plane: String,
    /// The mesh's root certificate (the CA directory's root-cert.pem).
    #[arg(long, value_name = "FILE")]
    root_cert: PathBuf,
}

/// Show every proxy connected to the control plane: workload, identity,
/// configuration version sent and acknowledged, SYNCED / STALE / NACKED
/// (with the proxy's error), certificate expiry; and the configuration
/// being served: its folder, git commit, version, and why the latest
/// change was refused, if it was. Exit 1 when a proxy is not SYNCED or a
/// change was refused.
#[derive(Debug, clap::Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    control_plane: ControlPlaneArgs,
    /// text, or json (the status message as JSON).
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

/// Print the configuration the control plane last sent a proxy, as JSON.
#[derive(Debug, clap::Args)]
pub(crate) struct DumpArgs {
    /// The proxy's workload, as NAMESPACE/NAME (a registered instance of a
    /// WorkloadGroup has the name `status` shows).
    #[arg(value_name = "NS/WORKLOAD")]
    workload: String,
    #[command(flatten)]
    control_plane: ControlPlaneArgs,
}

/// How a proxy or CLI verifies the control plane: its certificate chains
/// to `root` and names the control plane's identity in the root's trust
/// domain (the SPIFFE URI `weft ca init` puts in the root; `cluster.local`
/// when it has none).
pub(crate) fn control_plane_policy(root: &Path) -> anyhow::Result<PeerPolicy> {
    let pem = std::fs::read(root).with_context(|| format!("reading {}", root.display()))?;
    let bundle = TrustBundle::from_pem(&pem, &root.display().to_string())?;
    let first = bundle
        .roots()
        .first()
        .with_context(|| format!("{}: no certificate", root.display()))?;
    let td = match weft_proxy::managed::root_trust_domain(first) {
        Some(td) => td,
        None => TrustDomain::new("cluster.local")?,
    };
    Ok(PeerPolicy {
        expected: vec![weft_control::identity(&td)],
        bundle: Arc::new(bundle),
        trust_domains: TrustDomains::from(td),
    })
}

async fn client(
    args: &ControlPlaneArgs,
) -> anyhow::Result<ConfigServiceClient<tonic::transport::Channel>> {
    let addr = weft_control::parse_url(&args.control_plane).map_err(anyhow::Error::msg)?;
    let policy = control_plane_policy(&args.root_cert)?;
    let channel = weft_identity::service::channel(addr, CertStore::new(), policy)
        .await
        .with_context(|| format!("connecting to the control plane at {addr}"))?;
    Ok(ConfigServiceClient::new(channel))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

pub(crate) fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let status = runtime()?.block_on(async {
        let mut c = client(&args.control_plane).await?;
        c.status(StatusRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| anyhow::anyhow!("status: {}", s.message()))
    })?;
    let healthy = status.refused.is_empty() && status.proxies.iter().all(|p| p.state == "SYNCED");
    if args.output == Output::Json {
        let proxies: Vec<serde_json::Value> = status
            .proxies
            .iter()
            .map(|p| {
                serde_json::json!({
                    "namespace": p.namespace, "workload": p.workload, "identity": p.identity,
                    "address": p.address, "role": p.role, "sent": p.sent, "acked": p.acked,
                    "state": p.state, "error": p.error, "certExpires": p.cert_expires,
                    "connectedSince": p.connected_since,
                })
            })
            .collect();
        let json = serde_json::json!({
            "source": status.source, "commit": status.commit, "version": status.version,
            "refused": status.refused, "proxies": proxies,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        let commit = if status.commit.is_empty() {
            String::new()
        } else {
            format!(" at commit {}", status.commit)
        };
        println!(
            "serving {}{commit}, version {}",
            status.source, status.version
        );
        if !status.refused.is_empty() {
            println!("latest change REFUSED, the last good configuration stays in force:");
            for line in status.refused.lines() {
                println!("  {line}");
            }
        }
        let rows: Vec<[String; 6]> = status
            .proxies
            .iter()
            .map(|p| {
                [
                    format!("{}/{}", p.namespace, p.workload),
                    p.identity.clone(),
                    p.address.clone(),
                    if p.acked.is_empty() {
                        "-".into()
                    } else {
                        p.acked.clone()
                    },
                    p.state.clone(),
                    expiry(p.cert_expires),
                ]
            })
            .collect();
        let header = [
            "PROXY",
            "IDENTITY",
            "ADDRESS",
            "VERSION",
            "STATE",
            "CERT EXPIRES",
        ];
        let width = |i: usize| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        };
        let widths: Vec<usize> = (0..header.len()).map(width).collect();
        let line = |cells: &[String]| {
            cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect::<Vec<_>>()
                .join("  ")
                .trim_end()
                .to_string()
        };
        println!("{}", line(&header.map(String::from)));
        for (row, p) in rows.iter().zip(&status.proxies) {
            println!("{}", line(row));
            if !p.error.is_empty() {
                println!("  {}", p.error.replace('\n', "\n  "));
            }
        }
        if status.proxies.is_empty() {
            println!("(no proxy connected)");
        }
    }
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// An expiry time as RFC 3339 with the time left.
fn expiry(unix: i64) -> String {
    let Ok(secs) = u64::try_from(unix) else {
        return "-".into();
    };
    if secs == 0 {
        return "-".into();
    }
    let at = UNIX_EPOCH + Duration::from_secs(secs);
    let left = match at.duration_since(SystemTime::now()) {
        Ok(d) => format!("in {}h{:02}m", d.as_secs() / 3600, d.as_secs() % 3600 / 60),
        Err(_) => "EXPIRED".into(),
    };
    format!("{} ({left})", super::certs::rfc3339(at))
}

pub(crate) fn config_dump(args: DumpArgs) -> anyhow::Result<ExitCode> {
    let (ns, name) = args
        .workload
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .with_context(|| format!("{:?}: expected NAMESPACE/NAME", args.workload))?;
    let dump = runtime()?.block_on(async {
        let mut c = client(&args.control_plane).await?;
        c.config_dump(ConfigDumpRequest {
            namespace: ns.into(),
            workload: name.into(),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| anyhow::anyhow!("{}", s.message()))
    });
    match dump {
        Ok(d) => {
            eprintln!("{ns}/{name}: version {}", d.version);
            println!("{}", d.json);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("weft config-dump: {e}");
            Ok(ExitCode::from(1))
        }
    }
}
