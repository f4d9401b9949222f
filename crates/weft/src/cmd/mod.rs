//! The subcommands of `weft`.

pub(crate) mod analyze;
pub(crate) mod authz;
pub(crate) mod ca;
pub(crate) mod certs;
pub(crate) mod control_plane;
pub(crate) mod demo;
pub(crate) mod demo_app;
pub(crate) mod demo_netns;
pub(crate) mod proxy;
pub(crate) mod status;
pub(crate) mod token;
pub(crate) mod validate;

/// A certificate for `id` signed by `ca` in this process, and the rotator
/// that renews it (`proxy::renew`).
pub(crate) fn local_certificate(
    ca: &std::sync::Arc<weft_identity::Ca>,
    id: &weft_identity::SpiffeId,
) -> anyhow::Result<(
    std::sync::Arc<weft_identity::CertStore>,
    weft_identity::Rotator<weft_identity::LocalSigner>,
)> {
    let store = weft_identity::CertStore::new();
    let mut rotator = weft_identity::Rotator::new(
        store.clone(),
        weft_identity::LocalSigner {
            ca: ca.clone(),
            id: id.clone(),
        },
        id.clone(),
        weft_identity::ca::DEFAULT_TTL,
    );
    rotator.tick(std::time::SystemTime::now())?;
    Ok((store, rotator))
}

/// A lifetime such as `24h`, `90m` or `1.5h`.
pub(crate) fn parse_ttl(s: &str) -> anyhow::Result<std::time::Duration> {
    let d =
        weft_api::types::common::Duration::parse(s).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
    anyhow::ensure!(!d.0.is_zero(), "--ttl: must be longer than zero");
    Ok(d.0)
}
