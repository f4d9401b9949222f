//! weft's `RateLimit` resource.

use super::{Cx, check_workload_selector, header_name, wildcard_domain};
use crate::path::Path;
use crate::types::rate_limit::RateLimit;

pub(crate) fn rate_limit(cx: &mut Cx, rl: &RateLimit) {
    let spec = Path::Root.field("spec");
    check_workload_selector(cx, &spec.field("selector"), rl.selector.as_ref());
    let limits = spec.field("limits");
    if rl.limits.is_empty() {
        cx.err(&limits, "at least one limit is required");
    }
    for (i, l) in rl.limits.iter().enumerate() {
        let at = limits.index(i);
        for (j, h) in l.hosts.iter().enumerate() {
            let h = h.split_once(':').map_or(h.as_str(), |(h, _)| h);
            cx.check(&at.field("hosts").index(j), wildcard_domain(h));
        }
        if l.route.as_deref() == Some("") {
            cx.err(&at.field("route"), "route must name a route");
        }
        if let Some(by) = &l.by {
            let ok = match by.strip_prefix("request.headers[") {
                Some(rest) => rest
                    .strip_suffix(']')
                    .is_some_and(|name| header_name(name).is_ok()),
                None => matches!(by.as_str(), "remote.address" | "source.principal"),
            };
            if !ok {
                cx.err(
                    &at.field("by"),
                    format!(
                        "unknown key {by:?}: use remote.address, source.principal or request.headers[NAME]"
                    ),
                );
            }
        }
        match l.requests {
            None | Some(0) => cx.err(&at.field("requests"), "requests must be at least 1"),
            Some(_) => {}
        }
        match &l.per {
            None => cx.err(&at.field("per"), "per is required (e.g. 1s, 1m)"),
            Some(d) if d.0 < std::time::Duration::from_millis(50) => {
                cx.err(&at.field("per"), "per must be at least 50ms");
            }
            Some(_) => {}
        }
        if l.burst == Some(0) {
            cx.err(&at.field("burst"), "burst must be at least 1");
        }
        if let Some(shared) = &l.shared {
            let shared_at = at.field("shared");
            let redis = shared_at.field("redis");
            match shared.redis.as_deref() {
                None => cx.err(
                    &redis,
                    "redis is required: the HOST:PORT of the Redis server",
                ),
                Some(addr) => {
                    let port_ok = addr.rsplit_once(':').is_some_and(|(host, port)| {
                        !host.is_empty() && port.parse::<u16>().is_ok()
                    });
                    if !port_ok {
                        cx.err(&redis, format!("{addr:?} is not HOST:PORT"));
                    }
                }
            }
        }
    }
}
