//! `weft validate`: load Istio YAML and apply Istio's validation rules.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;
use weft_api::diagnostic::DiagnosticJson;
use weft_api::{Diagnostic, Level, Loaded};

/// Check Istio configuration: files, folders (recursive) or `-` for stdin.
/// A valid set's Gateway API routes that cannot be served are warned of.
///
/// Exit status: 0 when valid (warnings allowed), 1 when any resource has an
/// error, 2 for usage or I/O errors.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Files or folders of Istio YAML or JSON; `-` reads standard input.
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// MeshConfig YAML (as in the `mesh` key of the `istio` ConfigMap).
    #[arg(long, value_name = "FILE")]
    mesh_config: Option<PathBuf>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Leave out notes (such as kinds weft skips).
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let mut loaded = Loaded::from_paths(&args.paths)?;
    // `--mesh-config` wins over an `istio` ConfigMap among the inputs.
    if let Some(file) = &args.mesh_config {
        loaded
            .set_mesh_config_file(file)
            .context("reading mesh config")?;
    }
    loaded.validate();
    // What a valid set's Gateway API resources leave unserved.
    if loaded.errors() == 0 {
        let gateway_api = weft_model::gateway_api::translate(&loaded.resources);
        loaded.diagnostics.extend(gateway_api.warnings);
    }
    let diags: Vec<&Diagnostic> = loaded
        .diagnostics
        .iter()
        .filter(|d| !(args.quiet && d.level == Level::Note))
        .collect();
    let errors = loaded.errors();
    let warnings = diags.iter().filter(|d| d.level == Level::Warning).count();
    let summary = format!(
        "{} resources in {} files: {errors} errors, {warnings} warnings",
        loaded.resources.len(),
        loaded.files
    );
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Text => {
            for d in &diags {
                writeln!(out, "{}", text_line(d))?;
            }
            writeln!(out, "{summary}")?;
        }
        Output::Json => {
            let json = serde_json::json!({
                "resources": loaded.resources.len(),
                "files": loaded.files,
                "errors": errors,
                "warnings": warnings,
                "summary": summary,
                "diagnostics": diags.iter().map(|d| DiagnosticJson::from(*d)).collect::<Vec<_>>(),
            });
            serde_json::to_writer_pretty(&mut out, &json)?;
            writeln!(out)?;
        }
    }
    Ok(if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Errors read `FILE:LINE:COL: Kind ns/name: field: message`; warnings and
/// notes say what they are before the message.
fn text_line(d: &Diagnostic) -> String {
    match d.level {
        Level::Error => d.to_string(),
        level => {
            let mut d = d.clone();
            d.message = format!("{level}: {}", d.message);
            d.to_string()
        }
    }
}
