//! ServiceEntry, WorkloadEntry and WorkloadGroup rules.

use super::*;

pub(crate) fn service_entry(cx: &mut Cx, r: &Resource, se: &ServiceEntry) {
    let root = Path::Root;
    let spec = root.field("spec");
    if let Some(sel) = &se.workload_selector {
        let at = spec.field("workloadSelector");
        check_selector_labels(cx, &at.field("labels"), &sel.labels);
        if sel.labels.is_empty() {
            cx.warn(&at, "service entry: workload selector specified without labels, will be applied to all services in namespace");
        }
        if !se.endpoints.is_empty() {
            cx.err(
                &spec,
                "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
            );
        }
    }
    if se.hosts.is_empty() {
        cx.err(
            &spec.field("hosts"),
            "service entry must have at least one host",
        );
    }
    let hosts = spec.field("hosts");
    for (i, h) in se.hosts.iter().enumerate() {
        if h == "*" {
            cx.err(&hosts.index(i), format!("invalid host {h}"));
        } else {
            cx.check(&hosts.index(i), wildcard_domain(h));
            if h.starts_with('*') && !h.starts_with("*.") && h != "*" {
                cx.warn(
                    &hosts.index(i),
                    format!("partial wildcard {h:?} not allowed"),
                );
            }
        }
    }
    let resolution = se.resolution.unwrap_or(Resolution::None);
    let addresses = spec.field("addresses");
    let mut cidr_found = false;
    for (i, a) in se.addresses.iter().enumerate() {
        cidr_found |= a.contains('/');
        cx.check(&addresses.index(i), ip_subnet(a));
    }
    if cidr_found && !matches!(resolution, Resolution::None | Resolution::Static) {
        cx.err(
            &addresses,
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        );
    }
    let ports = spec.field("ports");
    let mut names = HashSet::new();
    let mut numbers = HashSet::new();
    for (i, p) in se.ports.iter().enumerate() {
        let at = ports.index(i);
        let name = p.name.as_deref().unwrap_or("");
        let number = p.number.unwrap_or(0);
        if !names.insert(name) {
            cx.err(
                &at.field("name"),
                format!("service entry port name {name:?} already defined"),
            );
        }
        if !numbers.insert(number) {
            cx.err(
                &at.field("number"),
                format!("service entry port {number} already defined"),
            );
        }
        if let Some(t) = p.target_port.filter(|t| *t != 0) {
            cx.check(&at.field("targetPort"), port_number(t));
            if resolution == Resolution::None {
                cx.warn(
                    &at.field("targetPort"),
                    "targetPort has no effect when resolution mode is NONE",
                );
            }
        }
        cx.check(&at.field("name"), port_name(name));
        if let Err(e) = protocol(p.protocol.as_deref().unwrap_or("")) {
            cx.err(&at.field("protocol"), e);
        }
        cx.check(&at.field("number"), port_number(number));
    }
    let endpoints = spec.field("endpoints");
    match resolution {
        Resolution::None => {
            if !se.endpoints.is_empty() {
                cx.err(
                    &endpoints,
                    "no endpoints should be provided for resolution type none",
                );
            }
            if se.workload_selector.is_some() {
                cx.warn(
                    &spec.field("workloadSelector"),
                    "workloadSelector should not be set when resolution mode is NONE",
                );
            }
        }
        Resolution::Static => {
            for (i, e) in se.endpoints.iter().enumerate() {
                workload_entry(cx, &endpoints.index(i), e, Some(&names), false);
            }
        }
        Resolution::Dns | Resolution::DnsRoundRobin | Resolution::DynamicDns => {
            let mode = match resolution {
                Resolution::Dns => "DNS",
                Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
                _ => "DYNAMIC_DNS",
            };
            if se.endpoints.is_empty() && resolution != Resolution::DynamicDns {
                for (i, h) in se.hosts.iter().enumerate() {
                    if fqdn(h).is_err() {
                        cx.err(&hosts.index(i), format!("hosts must be FQDN if no endpoints are provided for resolution mode {mode}"));
                    }
                }
            }
            if resolution == Resolution::DnsRoundRobin && se.endpoints.len() > 1 {
                cx.err(
                    &endpoints,
                    "there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN",
                );
            }
            for (i, e) in se.endpoints.iter().enumerate() {
                workload_entry(cx, &endpoints.index(i), e, Some(&names), true);
            }
        }
    }
    if resolution != Resolution::None && se.hosts.len() > 1 {
        let plain_tcp = se.ports.iter().any(|p| {
            Protocol::parse(p.protocol.as_deref().unwrap_or(""))
                .is_some_and(|p| !p.is_http() && !p.is_tls())
        });
        if plain_tcp {
            cx.warn(
                &spec.field("hosts"),
                "multiple hosts provided with non-HTTP, non-TLS ports",
            );
        }
    }
    let sans = spec.field("subjectAltNames");
    for (i, san) in se.subject_alt_names.iter().enumerate() {
        if san.is_empty() {
            cx.err(&sans.index(i), "subjectAltNames entries must not be empty");
        }
    }
    check_export_to(
        cx,
        &spec.field("exportTo"),
        r.namespace(),
        &se.export_to,
        true,
    );
}

/// A WorkloadEntry, standalone or as a ServiceEntry endpoint (then
/// `service_ports` holds the entry's port names).
pub(crate) fn workload_entry(
    cx: &mut Cx,
    at: &Path<'_>,
    we: &WorkloadEntry,
    service_ports: Option<&HashSet<&str>>,
    allow_fqdn: bool,
) {
    let addr = we.address.as_deref().unwrap_or("");
    let addr_at = at.field("address");
    if addr.is_empty() {
        if we.network.as_deref().unwrap_or("").is_empty() {
            cx.err(&addr_at, "address is required");
            return;
        }
        cx.warn(
            &addr_at,
            format!(
                "address is unset with network {:?}",
                we.network.as_deref().unwrap_or("")
            ),
        );
    }
    let unix = addr.starts_with("unix://");
    if unix {
        cx.check(&addr_at, unix_address(&addr["unix://".len()..]));
        if !we.ports.is_empty() {
            cx.err(
                &at.field("ports"),
                format!("unix endpoint {addr} must not include ports"),
            );
        }
    } else if !addr.is_empty() && addr.parse::<std::net::IpAddr>().is_err() {
        if !allow_fqdn {
            cx.err(
                &addr_at,
                format!("endpoint address {addr:?} is not a valid IP address"),
            );
        } else if fqdn(addr).is_err() {
            cx.err(
                &addr_at,
                format!("endpoint address {addr:?} is not a valid FQDN or an IP address"),
            );
        }
    }
    let ports = at.field("ports");
    for (name, port) in &we.ports {
        let here = ports.key(name);
        if service_ports.is_some_and(|sp| !sp.contains(name.as_str())) {
            cx.err(
                &here,
                format!("endpoint port {port} is not defined by the service entry"),
            );
        }
        cx.check(&here, port_name(name));
        cx.check(&here, port_number(*port));
    }
    check_labels(cx, &at.field("labels"), &we.labels);
    if unix && service_ports.is_some_and(|sp| sp.len() != 1) {
        cx.err(at, "exactly 1 service port required for unix endpoints");
    }
    if let Some(sa) = we.service_account.as_deref().filter(|s| !s.is_empty()) {
        if !super::super::is_dns1123_subdomain(sa) {
            cx.err(
                &at.field("serviceAccount"),
                format!("invalid service account name {sa:?}"),
            );
        }
    }
}

pub(crate) fn workload_group(cx: &mut Cx, wg: &WorkloadGroup) {
    let spec = Path::Root;
    let spec = spec.field("spec");
    if wg.template.is_none() {
        cx.err(&spec.field("template"), "template is required");
        return;
    }
    if let Some(meta) = &wg.metadata {
        check_labels(cx, &spec.field("metadata").field("labels"), &meta.labels);
    }
    let Some(probe) = &wg.probe else { return };
    let at = spec.field("probe");
    for (field, v) in [
        ("periodSeconds", probe.period_seconds),
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ] {
        if v.is_some_and(|v| v < 0) {
            cx.err(&at.field(field), format!("{field} must be non-negative"));
        }
    }
    let methods = [
        probe.http_get.is_some(),
        probe.tcp_socket.is_some(),
        probe.exec.is_some(),
        probe.grpc.is_some(),
    ];
    match methods.iter().filter(|m| **m).count() {
        0 => cx.err(
            &at,
            "probe must set one of httpGet, tcpSocket, exec or grpc",
        ),
        1 => {}
        _ => cx.err(
            &at,
            "probe may set only one of httpGet, tcpSocket, exec or grpc",
        ),
    }
    if let Some(h) = &probe.http_get {
        let here = at.field("httpGet");
        cx.check(&here.field("port"), port_number(h.port.unwrap_or(0)));
        if let Some(s) = h.scheme.as_deref().filter(|s| !s.is_empty()) {
            if s != "HTTP" && s != "HTTPS" {
                cx.err(
                    &here.field("scheme"),
                    "httpGet.scheme must be one of \"HTTPS\", \"HTTP\"",
                );
            }
        }
        let headers = here.field("httpHeaders");
        for (i, hd) in h.http_headers.iter().enumerate() {
            cx.check(
                &headers.index(i).field("name"),
                header_name(hd.name.as_deref().unwrap_or("")),
            );
        }
    }
    if let Some(t) = &probe.tcp_socket {
        cx.check(
            &at.field("tcpSocket").field("port"),
            port_number(t.port.unwrap_or(0)),
        );
    }
    if let Some(e) = &probe.exec {
        if e.command.is_empty() {
            cx.err(
                &at.field("exec").field("command"),
                "exec.command is required",
            );
        }
    }
    if let Some(g) = &probe.grpc {
        cx.check(
            &at.field("grpc").field("port"),
            port_number(g.port.unwrap_or(0)),
        );
    }
}
