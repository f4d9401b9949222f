//! `weft`: one binary for every role of the mesh. This file only parses the
//! command line and hands each subcommand to its module in `cmd/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// A service mesh that speaks Istio's configuration API.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Validate(cmd::validate::Args),
    Analyze(cmd::analyze::Args),
    Demo(cmd::demo::Args),
    DemoApp(cmd::demo_app::Args),
    Ca(cmd::ca::Args),
    Token(cmd::token::Args),
    Certs(cmd::certs::Args),
    ControlPlane(cmd::control_plane::Args),
    Proxy(cmd::proxy::Args),
    Status(cmd::status::StatusArgs),
    ConfigDump(cmd::status::DumpArgs),
    Authz(cmd::authz::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate(args) => cmd::validate::run(args),
        Command::Analyze(args) => cmd::analyze::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::DemoApp(args) => cmd::demo_app::run(args),
        Command::Ca(args) => cmd::ca::run(args),
        Command::Token(args) => cmd::token::run(args),
        Command::Certs(args) => cmd::certs::run(args),
        Command::ControlPlane(args) => cmd::control_plane::run(args),
        Command::Proxy(args) => cmd::proxy::run(args),
        Command::Status(args) => cmd::status::status(args),
        Command::ConfigDump(args) => cmd::status::config_dump(args),
        Command::Authz(args) => cmd::authz::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("weft: {e:#}");
            ExitCode::from(2)
        }
    }
}
