//! The process's log: `tracing` events written to standard error, at a
//! level the admin endpoint `/logging` changes while the proxy runs, as
//! Envoy's does (`POST /logging?level=debug`).

use std::sync::OnceLock;

use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, reload};

static LEVEL: OnceLock<reload::Handle<LevelFilter, Registry>> = OnceLock::new();

/// Installs the process's log at `level`; later calls do nothing.
pub fn init(level: LevelFilter) {
    if LEVEL.get().is_some() {
        return;
    }
    let (filter, handle) = reload::Layer::new(level);
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .try_init();
    if installed.is_ok() {
        let _ = LEVEL.set(handle);
    }
}

/// The current level, when this process's log was installed by [`init`].
pub fn level() -> Option<LevelFilter> {
    LEVEL.get()?.clone_current()
}

/// Parses Envoy's level names (`trace`, `debug`, `info`, `warning` or
/// `warn`, `error`, `critical`, `off`).
pub fn parse(name: &str) -> Option<LevelFilter> {
    Some(match name.to_ascii_lowercase().as_str() {
        "trace" => LevelFilter::TRACE,
        "debug" => LevelFilter::DEBUG,
        "info" => LevelFilter::INFO,
        "warning" | "warn" => LevelFilter::WARN,
        "error" | "critical" => LevelFilter::ERROR,
        "off" => LevelFilter::OFF,
        _ => return None,
    })
}

/// Sets the level of the installed log.
pub fn set_level(level: LevelFilter) -> Result<(), String> {
    let handle = LEVEL
        .get()
        .ok_or("this process's log is not installed by weft")?;
    handle.modify(|f| *f = level).map_err(|e| e.to_string())
}
