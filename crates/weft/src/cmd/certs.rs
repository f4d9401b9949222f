//! `weft certs`: look at certificates, and audit a directory of them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls_pki_types::{CertificateDer, UnixTime};
use weft_identity::cert::KeyKind;
use weft_identity::{CertInfo, TrustBundle, TrustDomain, TrustDomains, Usage, pem};

/// Inspect and audit certificates.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print subject, SANs, issuer, validity, key and remaining lifetime of
    /// every certificate in FILE.
    Inspect {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Check every certificate file in DIR: weak keys, expiry within a
    /// quarter of life, missing or extra SANs, wrong trust domain, broken
    /// chain. Exits 1 when anything is found.
    Audit {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// The mesh's trust domain.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// Roots to verify chains against [default: DIR/root-cert.pem].
        #[arg(long, value_name = "FILE")]
        root: Option<PathBuf>,
    },
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Inspect { file } => {
            let certs = read(&file)?;
            let now = SystemTime::now();
            for (i, der) in certs.iter().enumerate() {
                let c = CertInfo::parse(der)
                    .map_err(|e| anyhow::anyhow!("{}: certificate {i}: {e}", file.display()))?;
                if i > 0 {
                    println!();
                }
                print_info(&c, now);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            dir,
            trust_domain,
            root,
        } => {
            let td = TrustDomain::new(&trust_domain)
                .with_context(|| format!("--trust-domain {trust_domain}"))?;
            let root = root.unwrap_or_else(|| dir.join("root-cert.pem"));
            let bundle = match std::fs::read(&root) {
                Ok(bytes) => Some(TrustBundle::from_pem(&bytes, &root.display().to_string())?),
                Err(_) => None,
            };
            let findings = audit(&dir, &td, bundle.as_ref(), SystemTime::now())?;
            if bundle.is_none() {
                println!(
                    "note: {} not found; chains were not verified",
                    root.display()
                );
            }
            for f in &findings {
                println!("{f}");
            }
            println!("{} findings", findings.len());
            Ok(if findings.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn read(file: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    Ok(pem::certificates(&bytes, &file.display().to_string())?)
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{t:?}"))
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{}h", s / 86400, (s % 86400) / 3600),
    }
}

fn print_info(c: &CertInfo, now: SystemTime) {
    let sans: Vec<String> = c
        .uris
        .iter()
        .map(|u| format!("URI:{u}"))
        .chain(c.other_sans.iter().cloned())
        .collect();
    let remaining = match c.not_after.duration_since(now) {
        Ok(left) if now >= c.not_before => format!("{} of {}", human(left), human(c.lifetime())),
        Ok(_) => "not valid yet".to_string(),
        Err(e) => format!("expired {} ago", human(e.duration())),
    };
    let mut usage = Vec::new();
    if c.server_auth {
        usage.push("serverAuth");
    }
    if c.client_auth {
        usage.push("clientAuth");
    }
    println!(
        "Subject:    {}",
        if c.subject.is_empty() {
            "(empty)"
        } else {
            &c.subject
        }
    );
    println!(
        "SANs:       {}",
        if sans.is_empty() {
            "(none)".to_string()
        } else {
            sans.join(", ")
        }
    );
    println!("Issuer:     {}", c.issuer);
    println!("Serial:     {}", c.serial);
    println!("Not before: {}", rfc3339(c.not_before));
    println!("Not after:  {}", rfc3339(c.not_after));
    println!("Remaining:  {remaining}");
    println!("Key:        {}", c.key);
    println!("CA:         {}", if c.is_ca { "yes" } else { "no" });
    println!(
        "Usage:      {}",
        if usage.is_empty() {
            "(no extended key usage)".to_string()
        } else {
            usage.join(", ")
        }
    );
}

/// Every finding for the certificate files in `dir`.
fn audit(
    dir: &Path,
    td: &TrustDomain,
    bundle: Option<&TrustBundle>,
    now: SystemTime,
) -> anyhow::Result<Vec<String>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("pem" | "crt")))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let name = file.display().to_string();
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        // Key files and other PEM without certificates are not audited.
        let Ok(certs) = pem::certificates(&bytes, &name) else {
            continue;
        };
        for (i, der) in certs.iter().enumerate() {
            let c = match CertInfo::parse(der) {
                Ok(c) => c,
                Err(e) => {
                    out.push(format!("{name}: certificate {i}: {e}"));
                    continue;
                }
            };
            let at = if certs.len() > 1 {
                format!("{name}: certificate {i}")
            } else {
                name.clone()
            };
            match c.key {
                KeyKind::Rsa(bits) if bits < 2048 => {
                    out.push(format!("{at}: weak key: RSA {bits} (at least 2048)"))
                }
                KeyKind::Ec(bits) if bits < 256 => {
                    out.push(format!("{at}: weak key: EC {bits} (at least P-256)"))
                }
                KeyKind::Other => out.push(format!("{at}: unknown key type")),
                _ => {}
            }
            match c.not_after.duration_since(now) {
                Err(e) => out.push(format!("{at}: expired {} ago", human(e.duration()))),
                Ok(left) if left < c.lifetime() / 4 => out.push(format!(
                    "{at}: expires in {}, within the last quarter of its {} lifetime; renew it",
                    human(left),
                    human(c.lifetime())
                )),
                _ => {}
            }
            if c.is_ca {
                continue;
            }
            // A workload certificate: one SPIFFE URI SAN, nothing else.
            if c.uris.is_empty() {
                out.push(format!("{at}: missing SAN: no SPIFFE URI"));
            } else if c.uris.len() + c.other_sans.len() > 1 {
                let all: Vec<&str> = c
                    .uris
                    .iter()
                    .chain(&c.other_sans)
                    .map(String::as_str)
                    .collect();
                out.push(format!(
                    "{at}: extra SANs: {} (exactly one SPIFFE URI expected)",
                    all.join(", ")
                ));
            }
            match c.spiffe_id() {
                Ok(id) if id.trust_domain() != td => out.push(format!(
                    "{at}: wrong trust domain: {} (expected {td})",
                    id.trust_domain()
                )),
                Err(e) if !c.uris.is_empty() => out.push(format!("{at}: {e}")),
                _ => {}
            }
            if let (Some(bundle), 0) = (bundle, i) {
                // Only the chain is checked here; expiry, SANs and trust
                // domain have their own findings above.
                let any_td = TrustDomains::from(
                    c.spiffe_id()
                        .map_or(td.clone(), |id| id.trust_domain().clone()),
                );
                let at_valid = UnixTime::since_unix_epoch(
                    c.not_before
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default()
                        + Duration::from_secs(1),
                );
                if let Err(e @ weft_identity::VerifyError::Chain(_)) =
                    bundle.verify_svid(der, &certs[1..], Usage::Client, &any_td, at_valid)
                {
                    out.push(format!("{at}: broken chain: {e}"));
                }
            }
        }
    }
    Ok(out)
}
