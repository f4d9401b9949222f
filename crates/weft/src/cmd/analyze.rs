//! `weft analyze`: Istio's analyzers over files, as a CI gate.

use std::path::PathBuf;
use std::time::SystemTime;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::process::ExitCode;

use weft_analyze::{Level, Message};
use weft_api::Loaded;

/// Analyze Istio configuration files the way `istioctl analyze
/// --use-kube=false` does: schema validation (IST0106, IST0133, IST0130,
/// IST0131) and Istio's analyzers, with Istio's codes and messages. Built
/// so far: IST0002, IST0101 (referenced gateways, hosts, ports, subsets, namespaces,
/// selectors, credentials), IST0102, IST0103, IST0107, IST0108, IST0109, IST0122, IST0125, IST0139,
/// IST0110, IST0111, IST0112, IST0113, IST0116, IST0118, IST0123, IST0126, IST0127,
/// IST0128, IST0129, IST0132, IST0134, IST0135, IST0137, IST0138, IST0140,
/// IST0144, IST0145, IST0146, IST0147, IST0149, IST0158, IST0150, IST0151 to IST0155, IST0157, IST0159,
/// IST0160, IST0161, IST0162, IST0163, IST0164, IST0166, IST0167, IST0171,
/// IST0173, IST0174.
///
/// Exit status, as istioctl's: 0 when nothing reaches --fail-on, 79 when
/// something does, 65 when an input cannot be read or parsed.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Files or folders of Istio and Kubernetes YAML; `-` reads standard input.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// MeshConfig YAML (as in the `mesh` key of the `istio` ConfigMap).
    #[arg(long, value_name = "FILE")]
    mesh_config: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// The least severe level that fails the run.
    #[arg(long, value_enum, default_value_t = FailOn::Error)]
    fail_on: FailOn,
    /// Leave out messages: CODE=RESOURCE, as `IST0101=VirtualService
    /// default/reviews`; `*` matches anything (`IST0134=*`). Repeatable.
    #[arg(long, value_name = "CODE=RESOURCE")]
    suppress: Vec<String>,
    /// Also run the production-readiness checklist (WEFT1xxx) and print it
    /// as a table, ✓ or ✗ per practice with the findings behind each ✗.
    #[arg(long)]
    readiness: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
    /// SARIF 2.1.0, for code-scanning tools.
    Sarif,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FailOn {
    Error,
    Warning,
    Info,
}

/// `*`-patterns.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((head, rest)) => {
            let Some(after) = text.strip_prefix(head) else {
                return false;
            };
            (0..=after.len())
                .filter(|i| after.is_char_boundary(*i))
                .any(|i| glob(rest, &after[i..]))
        }
    }
}

fn suppressed(rules: &[(String, String)], m: &Message) -> bool {
    rules
        .iter()
        .any(|(code, resource)| glob(code, m.code) && glob(resource, &m.origin))
}

fn threshold(fail_on: FailOn) -> Level {
    match fail_on {
        FailOn::Error => Level::Error,
        FailOn::Warning => Level::Warning,
        FailOn::Info => Level::Info,
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rules = args
        .suppress
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(c, r)| (c.trim().to_string(), r.trim().to_string()))
                .ok_or_else(|| anyhow::anyhow!("--suppress {s:?}: expected CODE=RESOURCE"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut loaded = Loaded::from_paths(&args.paths)?;
    if let Some(file) = &args.mesh_config {
        loaded.set_mesh_config_file(file)?;
    }
    loaded.validate();
    // What is about no resource could not be read or parsed.
    let unreadable: Vec<String> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.is_error() && d.origin.is_none())
        .map(ToString::to_string)
        .collect();
    let now = std::time::SystemTime::now();
    let folders = credential_folders(&args.paths, now);
    let invalid_credentials: Vec<String> = folders
        .iter()
        .filter(|(_, usable)| !usable)
        .map(|(n, _)| n.clone())
        .chain(invalid_secrets(&loaded.resources, now))
        .collect();
    // Validation's findings honour the suppress annotation as the
    // analyzers' already do.
    let mut schema: Vec<Message> = loaded
        .diagnostics
        .iter()
        .filter_map(weft_analyze::schema)
        .collect();
    weft_analyze::drop_suppressed(&loaded.resources, &mut schema);
    let mut messages: Vec<Message> = schema
        .into_iter()
        .chain(weft_analyze::analyze_with(
            &loaded.resources,
            &weft_analyze::Options {
                mesh: loaded.mesh.as_ref().map(|m| &m.config),
                credentials: &folders.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
                invalid_credentials: &invalid_credentials,
            },
        ))
        .filter(|m| !suppressed(&rules, m))
        .collect();
    messages.sort_by(|a, b| (a.level, &a.origin, a.code).cmp(&(b.level, &b.origin, b.code)));
    let rows = if args.readiness {
        let meshconfig = loaded.mesh.as_ref();
        let root = meshconfig
            .and_then(|m| m.config.root_namespace.clone())
            .unwrap_or_else(|| "istio-system".into());
        let untracked = untracked(&loaded);
        let inputs = weft_analyze::readiness::Inputs {
            root: &root,
            mesh: meshconfig.map(|m| (&m.config, &*m.file)),
            untracked: &untracked,
        };
        let mut rows = weft_analyze::readiness::readiness(&loaded.resources, &inputs);
        for row in &mut rows {
            row.findings.retain(|m| !suppressed(&rules, m));
            weft_analyze::drop_suppressed(&loaded.resources, &mut row.findings);
        }
        rows
    } else {
        Vec::new()
    };
    let readiness_findings = rows.iter().flat_map(|r| &r.findings);
    let fails = messages
        .iter()
        .chain(readiness_findings)
        .any(|m| m.level <= threshold(args.fail_on));
    match args.output {
        Output::Json if args.readiness => {
            let rows: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| serde_json::json!({"practice": r.practice, "ok": r.findings.is_empty(), "findings": r.findings}))
                .collect();
            let json = serde_json::json!({"messages": messages, "readiness": rows});
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        Output::Json => println!("{}", serde_json::to_string_pretty(&messages)?),
        Output::Sarif => {
            let all: Vec<&Message> = messages
                .iter()
                .chain(rows.iter().flat_map(|r| &r.findings))
                .collect();
            println!("{}", serde_json::to_string_pretty(&sarif(&all))?);
        }
        Output::Text if messages.is_empty() && unreadable.is_empty() => {
            println!(
                "✔ No validation issues found when analyzing {} resources.",
                loaded.resources.len()
            );
        }
        Output::Text => {
            for m in &messages {
                println!("{m}");
            }
        }
    }
    if args.readiness && args.output == Output::Text {
        println!("Production readiness:");
        for row in &rows {
            let mark = if row.findings.is_empty() {
                "✓"
            } else {
                "✗"
            };
            println!("{mark} {}", row.practice);
            for m in &row.findings {
                println!("    {m}");
            }
        }
    }
    for u in &unreadable {
        eprintln!("{u}");
    }
    Ok(if !unreadable.is_empty() {
        ExitCode::from(65)
    } else if fails {
        ExitCode::from(79)
    } else {
        ExitCode::SUCCESS
    })
}

/// The input files git does not track, each with why: not in a work tree,
/// git not installed, or not added. Standard input is not a file.
fn untracked(loaded: &Loaded) -> Vec<(String, String)> {
    let mut files: Vec<&str> = loaded
        .resources
        .iter()
        .map(|r| &*r.source.file)
        .filter(|f| *f != "-")
        .collect();
    if let Some(m) = &loaded.mesh {
        files.push(&m.file);
    }
    files.sort_unstable();
    files.dedup();
    let mut out = Vec::new();
    for file in files {
        let path = std::path::Path::new(file);
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let name = path.file_name().unwrap_or(path.as_os_str());
        let asked = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["ls-files", "--error-unmatch", "--"])
            .arg(name)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output();
        let why = match asked {
            Err(_) => Some("git is not installed".to_string()),
            Ok(o) if o.status.success() => None,
            Ok(o) if String::from_utf8_lossy(&o.stderr).contains("not a git repository") => {
                Some("not in a git work tree".to_string())
            }
            Ok(_) => Some("not added to its git work tree".to_string()),
        };
        if let Some(why) = why {
            out.push((file.to_string(), why));
        }
    }
    out
}

/// The messages as a SARIF 2.1.0 log: one run, a rule per code, a result
/// per message located at its file and line.
fn sarif(messages: &[&Message]) -> serde_json::Value {
    let mut codes: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| (m.code, m.documentation_url.as_str()))
        .collect();
    codes.sort_unstable();
    codes.dedup();
    let rules: Vec<serde_json::Value> = codes
        .iter()
        .map(|(id, url)| serde_json::json!({"id": id, "helpUri": url}))
        .collect();
    let results: Vec<serde_json::Value> = messages
        .iter()
        .map(|m| {
            let level = match m.level {
                Level::Error => "error",
                Level::Warning => "warning",
                Level::Info => "note",
            };
            let mut location = serde_json::json!({"artifactLocation": {"uri": m.source}});
            if let Some((file, line)) = m.source.rsplit_once(':') {
                if let Ok(line) = line.parse::<u64>() {
                    location = serde_json::json!({
                        "artifactLocation": {"uri": file},
                        "region": {"startLine": line},
                    });
                }
            }
            serde_json::json!({
                "ruleId": m.code,
                "level": level,
                "message": {"text": m.message},
                "locations": [{"physicalLocation": location}],
                "properties": {"origin": m.origin},
            })
        })
        .collect();
    serde_json::json!({
        "version": "2.1.0",
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "runs": [{
            "tool": {"driver": {
                "name": "weft analyze",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "results": results,
        }],
    })
}

/// The credential folders beside the inputs (each `NAME/` holding a
/// `tls.crt`, in a folder given as an input or holding a file given), and
/// whether their certificate and key parse.
fn credential_folders(paths: &[PathBuf], now: SystemTime) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for p in paths {
        let dir = if p.is_dir() {
            p.as_path()
        } else {
            match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => std::path::Path::new("."),
            }
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.path().join("tls.crt").is_file() {
                let name = e.file_name().to_string_lossy().into_owned();
                let cert = std::fs::read(e.path().join("tls.crt")).unwrap_or_default();
                let key = std::fs::read(e.path().join("tls.key")).unwrap_or_default();
                let key_parses = PrivateKeyDer::from_pem_slice(&key).is_ok();
                out.push((name, key_parses && certificate_usable(&cert, now)));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Whether the first PEM certificate of `pem` parses and is valid at
/// `now`, as Istio checks a gateway's credential.
fn certificate_usable(pem: &[u8], now: SystemTime) -> bool {
    let Some(Ok(cert)) = CertificateDer::pem_slice_iter(pem).next() else {
        return false;
    };
    weft_identity::CertInfo::parse(&cert).is_ok_and(|c| c.not_before <= now && now <= c.not_after)
}

/// The Secrets (`namespace/name`) a gateway could not serve, as Istio
/// reads them: a non-empty `cert` and `key`, or `tls.crt` and `tls.key`
/// (base64 in `data`, clear in `stringData`), and a usable certificate.
fn invalid_secrets(resources: &[weft_api::Resource], now: SystemTime) -> Vec<String> {
    use base64::Engine;
    resources
        .iter()
        .filter_map(|r| match &r.spec {
            weft_api::Spec::Secret(s) => Some((r, s)),
            _ => None,
        })
        .filter(|(_, s)| {
            let value = |key: &str| -> Vec<u8> {
                match s.string_data.get(key) {
                    Some(clear) => clear.as_bytes().to_vec(),
                    None => s
                        .data
                        .get(key)
                        .and_then(|b| {
                            base64::engine::general_purpose::STANDARD
                                .decode(b.trim())
                                .ok()
                        })
                        .unwrap_or_default(),
                }
            };
            let pair = [("cert", "key"), ("tls.crt", "tls.key")]
                .into_iter()
                .map(|(c, k)| (value(c), value(k)))
                .find(|(c, k)| !c.is_empty() && !k.is_empty());
            !pair.is_some_and(|(cert, _)| certificate_usable(&cert, now))
        })
        .map(|(r, _)| format!("{}/{}", r.namespace(), r.name))
        .collect()
}
