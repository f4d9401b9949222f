//! Sidecar rules.

use super::*;

pub(crate) fn sidecar(cx: &mut Cx, r: &Resource, sc: &Sidecar) {
    let spec = Path::Root;
    let spec = spec.field("spec");
    if let Some(sel) = &sc.workload_selector {
        let at = spec.field("workloadSelector");
        check_selector_labels(cx, &at.field("labels"), &sel.labels);
        if sel.labels.is_empty() {
            cx.warn(&at, "sidecar: workload selector specified without labels, will be applied to all services in namespace");
        }
    }
    if sc.egress.is_empty()
        && sc.ingress.is_empty()
        && sc.outbound_traffic_policy.is_none()
        && sc.inbound_connection_pool.is_none()
    {
        cx.err(&spec, "sidecar: empty configuration provided");
        return;
    }
    let ingress = spec.field("ingress");
    let mut ports = HashSet::new();
    for (i, l) in sc.ingress.iter().enumerate() {
        let at = ingress.index(i);
        let Some(port) = &l.port else {
            cx.err(
                &at.field("port"),
                "sidecar: port is required for ingress listeners",
            );
            continue;
        };
        sidecar_port(cx, &at, port, l.bind.as_deref().unwrap_or(""));
        if !ports.insert(port.number.unwrap_or(0)) {
            cx.err(
                &at.field("port"),
                "sidecar: ports on IP bound listeners must be unique",
            );
        }
        if let Some(ep) = l.default_endpoint.as_deref().filter(|e| !e.is_empty()) {
            default_endpoint(cx, &at.field("defaultEndpoint"), ep);
        }
        if let Some(tls) = &l.tls {
            let here = at.field("tls");
            if !tls.subject_alt_names.is_empty() {
                cx.err(
                    &here,
                    "sidecar: subjectAltNames is not supported in ingress tls",
                );
            }
            if tls.https_redirect == Some(true) {
                cx.err(&here, "sidecar: httpsRedirect is not supported");
            }
            if tls
                .credential_name
                .as_deref()
                .is_some_and(|c| !c.is_empty())
            {
                cx.err(&here, "sidecar: credentialName is not currently supported");
            }
            if let Some(mode @ (ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough)) =
                tls.mode
            {
                let name = if mode == ServerTlsMode::IstioMutual {
                    "ISTIO_MUTUAL"
                } else {
                    "AUTO_PASSTHROUGH"
                };
                cx.err(
                    &here,
                    format!(
                        "configuration is invalid: cannot set mode to {name} in sidecar ingress tls"
                    ),
                );
            }
            server_tls(cx, &here, Some(tls));
        }
        connection_pool(cx, &at.field("connectionPool"), l.connection_pool.as_ref());
    }
    connection_pool(
        cx,
        &spec.field("inboundConnectionPool"),
        sc.inbound_connection_pool.as_ref(),
    );
    let egress = spec.field("egress");
    let mut ports = HashSet::new();
    let mut uds = HashSet::new();
    let mut catch_all = false;
    for (i, l) in sc.egress.iter().enumerate() {
        let at = egress.index(i);
        match &l.port {
            None => {
                if catch_all {
                    cx.err(
                        &at,
                        "sidecar: egress can have only one listener with empty port",
                    );
                    continue;
                }
                if i == sc.egress.len() - 1 {
                    catch_all = true;
                } else {
                    cx.err(&at, "sidecar: the egress listener with empty port should be the last listener in the list");
                }
            }
            Some(port) => {
                let bind = l.bind.as_deref().unwrap_or("");
                let number = port.number.unwrap_or(0);
                if number == 0 {
                    if let Some(p) = &port.name {
                        cx.check(&at.field("port").field("name"), port_name(p));
                    }
                    cx.check(
                        &at.field("port").field("protocol"),
                        protocol(port.protocol.as_deref().unwrap_or("")).map(|_| ()),
                    );
                    match bind.strip_prefix("unix://") {
                        None => cx.err(&at.field("bind"), "sidecar: ports with 0 value must have a unix domain socket bind address"),
                        Some(path) => cx.check(&at.field("bind"), unix_address(path)),
                    }
                    if matches!(l.capture_mode, Some(CaptureMode::Iptables)) {
                        cx.err(&at.field("captureMode"), "sidecar: captureMode must be DEFAULT/NONE for unix domain socket listeners");
                    }
                    if !uds.insert(bind) {
                        cx.err(
                            &at.field("bind"),
                            "sidecar: unix domain socket values for listeners must be unique",
                        );
                    }
                } else {
                    sidecar_port(cx, &at, port, bind);
                    if !ports.insert(number) {
                        cx.err(
                            &at.field("port"),
                            "sidecar: ports on IP bound listeners must be unique",
                        );
                    }
                }
            }
        }
        if l.hosts.is_empty() {
            cx.err(
                &at.field("hosts"),
                "sidecar: egress listener must contain at least one host",
            );
        }
        let hosts = at.field("hosts");
        let mut by_ns: BTreeMap<&str, HashSet<&str>> = BTreeMap::new();
        for (j, h) in l.hosts.iter().enumerate() {
            let here = hosts.index(j);
            if let Some((ns, svc)) = h.split_once('/') {
                let ns = if ns == "." { r.namespace() } else { ns };
                let entry = by_ns.entry(ns).or_default();
                let dup = if svc == "*" {
                    !entry.is_empty()
                } else {
                    entry.contains(svc) || entry.contains("*")
                };
                if dup {
                    cx.warn(&here, format!("duplicated egress host: {h}"));
                }
                entry.insert(svc);
            }
            cx.check(&here, namespace_slash_host(h, false));
        }
        if by_ns.get("*").is_some_and(|s| s.contains("*")) && by_ns.len() != 1 {
            cx.warn(
                &hosts,
                "`*/*` host select all resources, no other hosts can be added",
            );
        }
    }
    if let Some(tp) = &sc.outbound_traffic_policy {
        let at = spec.field("outboundTrafficPolicy");
        if let Some(proxy) = &tp.egress_proxy {
            let here = at.field("egressProxy");
            if tp.mode != Some(OutboundMode::AllowAny) {
                cx.err(&here, "sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode");
            } else {
                cx.check(&here.field("host"), fqdn(&proxy.host));
                if proxy.port.is_none() {
                    cx.err(
                        &here.field("port"),
                        "sidecar: egress_proxy port must be non-nil",
                    );
                } else {
                    destination(cx, &here, proxy);
                }
            }
        }
    }
}

fn sidecar_port(cx: &mut Cx, at: &Path<'_>, port: &Port, bind: &str) {
    let pat = at.field("port");
    if let Some(name) = port.name.as_deref().filter(|n| !n.is_empty()) {
        cx.check(&pat.field("name"), port_name(name));
    }
    cx.check(
        &pat.field("protocol"),
        protocol(port.protocol.as_deref().unwrap_or("")).map(|_| ()),
    );
    cx.check(&pat.field("number"), port_number(port.number.unwrap_or(0)));
    if port.target_port.is_some_and(|t| t > 0) {
        cx.err(
            &pat.field("targetPort"),
            "targetPort has no impact on Sidecars",
        );
    }
    if !bind.is_empty() && bind.parse::<std::net::IpAddr>().is_err() {
        cx.err(&at.field("bind"), format!("{bind} is not a valid IP"));
    }
}

fn default_endpoint(cx: &mut Cx, at: &Path<'_>, ep: &str) {
    if let Some(path) = ep.strip_prefix("unix://") {
        cx.check(at, unix_address(path));
        return;
    }
    let Some((host, port)) = ep.rsplit_once(':') else {
        cx.err(at, format!("address {ep}: missing port in address"));
        return;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if !host.is_empty() && !["127.0.0.1", "0.0.0.0", "::1", "::"].contains(&host) {
        cx.err(at, "sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset");
    }
    match port.parse::<u32>() {
        Ok(p) => cx.check(at, port_number(p)),
        Err(_) => cx.err(
            at,
            format!("sidecar: defaultEndpoint port ({port}) is not a number"),
        ),
    }
}
