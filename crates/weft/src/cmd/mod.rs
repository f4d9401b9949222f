//! The subcommands of `weft`.

pub(crate) mod authz;
pub(crate) mod ca;
pub(crate) mod certs;
pub(crate) mod control_plane;
pub(crate) mod demo;
pub(crate) mod proxy;
pub(crate) mod status;
pub(crate) mod token;
pub(crate) mod validate;

/// A lifetime such as `24h`, `90m` or `1.5h`.
pub(crate) fn parse_ttl(s: &str) -> anyhow::Result<std::time::Duration> {
    let d =
        weft_api::types::common::Duration::parse(s).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
    anyhow::ensure!(!d.0.is_zero(), "--ttl: must be longer than zero");
    Ok(d.0)
}
