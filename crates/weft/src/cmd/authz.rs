//! `weft authz check`: asks the mesh's AuthorizationPolicies about one
//! request before it is ever sent, with the evaluation the proxies run.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use weft_model::authz;
use weft_model::normalize::normalize;

/// Authorization, asked ahead of time.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Would the proxy of --to let this request through? Prints ALLOW or
    /// DENY with the policy and rule that decided; exits 0 when allowed, 1
    /// when denied (or refused as malformed), 2 on usage or configuration
    /// errors. The path is normalized first, as MeshConfig's
    /// pathNormalization says.
    Check(Check),
}

#[derive(Debug, clap::Args)]
struct Check {
    /// Folder of Istio YAML (the same as `weft proxy --mesh-dir`).
    #[arg(long, value_name = "DIR")]
    mesh_dir: PathBuf,
    /// MeshConfig YAML (root namespace, path normalization).
    #[arg(long, value_name = "FILE")]
    mesh_config: Option<PathBuf>,
    /// The destination workload, as NAMESPACE/NAME of its WorkloadEntry.
    #[arg(long, value_name = "NS/WORKLOAD")]
    to: String,
    /// The caller's SPIFFE ID, as its mesh certificate proves it.
    #[arg(long, value_name = "SPIFFE_ID", conflicts_with = "plaintext")]
    from: Option<String>,
    /// The caller has no mesh certificate.
    #[arg(long)]
    plaintext: bool,
    /// The caller's address [default: 127.0.0.1].
    #[arg(long, value_name = "IP")]
    source_ip: Option<IpAddr>,
    /// The destination port [default: the workload's first port].
    #[arg(long, value_name = "N")]
    port: Option<u16>,
    /// A request header, `Name: value`; repeat for more (or for several
    /// values of one header).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// A JWT, sent as `Authorization: Bearer TOKEN` and validated by the
    /// workload's RequestAuthentication (keys inline or fetched).
    #[arg(long, value_name = "TOKEN")]
    jwt: Option<String>,
    /// The request method.
    method: String,
    /// The request path, with its query if any.
    path: String,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Command::Check(c) = args.command;
    anyhow::ensure!(
        c.from.is_some() || c.plaintext,
        "say who calls: --from SPIFFE_ID, or --plaintext"
    );
    if let Some(from) = &c.from {
        from.parse::<weft_identity::SpiffeId>()
            .map_err(|e| anyhow::anyhow!("--from {from:?}: {e}"))?;
    }
    let (ns, name) =
        c.to.split_once('/')
            .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
            .with_context(|| format!("--to {:?}: expected NAMESPACE/WORKLOAD", c.to))?;
    let config = super::proxy::load(
        &c.mesh_dir,
        c.mesh_config.as_deref(),
        ns,
        name,
        "cluster.local",
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let headers: Vec<(String, String)> = c
        .headers
        .iter()
        .map(|h| {
            let (k, v) = h
                .split_once(':')
                .with_context(|| format!("--header {h:?}: expected 'Name: value'"))?;
            Ok((k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect::<anyhow::Result<_>>()?;
    let target = match normalize(&c.path, config.path_normalization) {
        Ok(t) => t,
        Err(e) => {
            println!("DENY 400: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let port = match c.port {
        Some(p) => p,
        None => config
            .inbound
            .first()
            .and_then(|p| u16::try_from(p.port).ok())
            .context("the workload has no ports; give --port")?,
    };
    // The token is validated as the proxy would, keys fetched if need be.
    let auth = match &c.jwt {
        None => None,
        Some(token) => {
            let mut req = http::Request::new(());
            let bearer = http::HeaderValue::from_str(&format!("Bearer {token}"))
                .context("--jwt: not a header value")?;
            req.headers_mut()
                .insert(http::header::AUTHORIZATION, bearer);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let authenticator = weft_proxy::jwt::Authenticator::default();
            match runtime.block_on(authenticator.authenticate(&config.jwt, &mut req)) {
                Ok(auth) => auth,
                Err(reason) => {
                    println!("DENY 401: {reason}");
                    return Ok(ExitCode::from(1));
                }
            }
        }
    };
    let values = |name: &str| -> Vec<&str> {
        headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let host = headers
        .iter()
        .find(|(k, _)| k == "host")
        .map_or("", |(_, v)| v.as_str());
    let decision = config.authz.evaluate(&authz::Request {
        principal: c.from.as_deref(),
        source_ip: Some(c.source_ip.unwrap_or(IpAddr::from([127, 0, 0, 1]))),
        remote_ip: None,
        destination: SocketAddr::new(config.workload.address, port),
        sni: None,
        http: Some(authz::HttpRequest {
            method: &c.method,
            host,
            path: &target.path,
            headers: &values,
            auth: auth.as_ref(),
        }),
    });
    let by = match (&decision.policy, decision.rule) {
        (Some(p), Some(r)) => format!("{p}, rule {r}"),
        _ => decision.reason.clone(),
    };
    if target.path != c.path.split(['?', '#']).next().unwrap_or_default() {
        println!("path normalized to {}", target.path);
    }
    for note in &decision.notes {
        println!("note: {note}");
    }
    if decision.allowed {
        println!("ALLOW ({by})");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("DENY 403 ({by}): {}", decision.reason);
        Ok(ExitCode::from(1))
    }
}
