//! `weft demo`: the mesh on one machine. Until the data plane lands it
//! validates the demo configuration and says what runs today.

use std::path::PathBuf;
use std::process::ExitCode;

/// Run the demo mesh (today: check the demo configuration).
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Folder of Istio YAML to run with.
    #[arg(long, value_name = "DIR")]
    config_dir: Option<PathBuf>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let _ = args;
    anyhow::bail!("not yet")
}
