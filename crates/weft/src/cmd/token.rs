//! `weft token`: bootstrap tokens for workloads that have no certificate yet.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context;
use weft_identity::{Ca, SpiffeId};

use super::parse_ttl;

/// Bootstrap tokens, signed by the CA, that the certificate service accepts.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print a token for the workload NS/NAME.
    Issue {
        /// Directory of the CA that signs the token.
        #[arg(long, value_name = "DIR")]
        ca_dir: PathBuf,
        /// The workload, as NAMESPACE/NAME.
        #[arg(long, value_name = "NS/NAME")]
        workload: String,
        /// Service account the workload runs as [default: NAME].
        #[arg(long, value_name = "SA")]
        service_account: Option<String>,
        /// How long the token is valid.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Command::Issue {
        ca_dir,
        workload,
        service_account,
        ttl,
    } = args.command;
    let (ns, name) = workload
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .with_context(|| format!("--workload {workload:?}: expected NAMESPACE/NAME"))?;
    let ttl = parse_ttl(&ttl)?;
    let ca = Ca::load(&ca_dir, None)?;
    let sa = service_account.as_deref().unwrap_or(name);
    let id = SpiffeId::new(ca.trust_domain().clone(), ns, sa)
        .with_context(|| format!("--workload {workload}"))?;
    println!(
        "{}",
        weft_identity::token::issue(&ca, &id, ttl, SystemTime::now())?
    );
    Ok(ExitCode::SUCCESS)
}
