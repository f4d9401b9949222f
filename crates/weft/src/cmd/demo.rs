//! `weft demo`: the mesh on one machine.
//!
//! The proxies run standalone (`weft proxy`), but the control plane and the
//! supervisor that will run the demo's workloads together are not built
//! yet, so today the demo does what can be done honestly: it loads and
//! validates the demo's mesh configuration (`examples/demo`, or
//! `--config-dir`) and says what is still to come.

use std::path::PathBuf;
use std::process::ExitCode;

use weft_api::{Level, Loaded};

/// Run the demo mesh. Today: check the demo's Istio configuration.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Folder of Istio YAML to run with [default: examples/demo]
    #[arg(long, value_name = "DIR")]
    config_dir: Option<PathBuf>,
}

/// `examples/demo` from the working directory, else from this checkout.
fn default_dir() -> PathBuf {
    let here = PathBuf::from("examples/demo");
    if here.is_dir() {
        return here;
    }
    let checkout = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo");
    checkout.canonicalize().unwrap_or(checkout)
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = args.config_dir.unwrap_or_else(default_dir);
    let mut loaded = Loaded::from_paths(&[&dir])?;
    loaded.validate();
    println!(
        "weft {}: demo configuration {}",
        env!("CARGO_PKG_VERSION"),
        dir.display()
    );
    for r in &loaded.resources {
        println!("  loaded  {:<28} {}", r.origin(), r.source);
    }
    for d in loaded.diagnostics.iter().filter(|d| d.level != Level::Note) {
        println!("  {}  {d}", d.level);
    }
    let errors = loaded.errors();
    println!(
        "{} resources, {errors} errors. The sidecar and gateway proxies run standalone (`weft proxy`); the control plane and the supervisor that will run this mesh as one demo are not built yet.",
        loaded.resources.len()
    );
    Ok(if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
