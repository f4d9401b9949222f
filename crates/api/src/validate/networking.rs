//! Rules for `networking.istio.io` resources.

use std::collections::{BTreeMap, HashSet};

use super::{
    Cx, Protocol, check_duration, check_export_to, check_labels, check_selector_labels, duration,
    fqdn, header_name, ip_subnet, is_dns1123_label, namespace_slash_host, percent, percentage,
    port_name, port_number, protocol, regex, wildcard_domain,
};
use crate::path::Path;
use crate::resource::Resource;
use crate::types::destination_rule::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, DestinationRule, H2UpgradePolicy,
    LoadBalancerSettings, OutlierDetection, TrafficPolicy,
};
use crate::types::envoy_filter::EnvoyFilter;
use crate::types::gateway::{Gateway, Port, ServerTlsMode, ServerTlsSettings, TlsProtocol};
use crate::types::service_entry::{Resolution, ServiceEntry, WorkloadEntry, WorkloadGroup};
use crate::types::sidecar::{CaptureMode, OutboundMode, Sidecar};
use crate::types::virtual_service::{
    Destination, HeaderOperations, Headers, HttpMatchRequest, HttpRoute, HttpRouteDestination,
    RouteDestination, StringMatch, VirtualService,
};

const MESH_GATEWAY: &str = "mesh";

pub(super) fn virtual_service(cx: &mut Cx, r: &Resource, vs: &VirtualService) {
    let root = Path::Root;
    let spec = root.field("spec");
    let delegate = vs.hosts.is_empty();
    if delegate {
        if !vs.gateways.is_empty() {
            cx.err(
                &spec.field("gateways"),
                "delegate virtual service must have no gateways specified",
            );
        }
        if !vs.tls.is_empty() {
            cx.err(
                &spec.field("tls"),
                "delegate virtual service must have no tls route specified",
            );
        }
        if !vs.tcp.is_empty() {
            cx.err(
                &spec.field("tcp"),
                "delegate virtual service must have no tcp route specified",
            );
        }
    }
    let applies_to_gateway =
        !vs.gateways.is_empty() && !vs.gateways.iter().any(|g| g == MESH_GATEWAY);
    let applies_to_mesh = !applies_to_gateway;
    check_gateway_names(cx, &spec.field("gateways"), &vs.gateways);

    let hosts = spec.field("hosts");
    let mut all_valid = true;
    for (i, host) in vs.hosts.iter().enumerate() {
        let at = hosts.index(i);
        match wildcard_domain(host) {
            Err(e) if host.parse::<std::net::IpAddr>().is_err() => {
                cx.err(&at, e);
                all_valid = false;
            }
            Err(_) => {}
            Ok(()) if applies_to_mesh && host == "*" => {
                cx.err(
                    &at,
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                );
                all_valid = false;
            }
            Ok(()) => {}
        }
    }
    if all_valid {
        for (i, a) in vs.hosts.iter().enumerate() {
            for b in &vs.hosts[i + 1..] {
                if host_matches(a, b) {
                    cx.err(
                        &hosts.index(i),
                        format!("duplicate hosts in virtual service: {a} & {b}"),
                    );
                }
            }
        }
    }
    if vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        cx.err(
            &spec,
            "http, tcp or tls must be provided in virtual service",
        );
    }
    let http = spec.field("http");
    for (i, route) in vs.http.iter().enumerate() {
        http_route(cx, &http.index(i), route, delegate, applies_to_gateway);
    }
    let tls = spec.field("tls");
    for (i, route) in vs.tls.iter().enumerate() {
        let at = tls.index(i);
        if route.r#match.is_empty() {
            cx.err(
                &at.field("match"),
                "TLS route must have at least one match condition",
            );
        }
        let matches = at.field("match");
        for (j, m) in route.r#match.iter().enumerate() {
            let at = matches.index(j);
            if m.sni_hosts.is_empty() {
                cx.err(
                    &at.field("sniHosts"),
                    "TLS match must have at least one SNI host",
                );
            }
            let sni = at.field("sniHosts");
            for (k, host) in m.sni_hosts.iter().enumerate() {
                sni_host(cx, &sni.index(k), host, vs);
            }
            l4_match(
                cx,
                &at,
                &m.destination_subnets,
                m.port,
                &m.source_labels,
                &m.gateways,
            );
        }
        if route.route.is_empty() {
            cx.err(&at.field("route"), "TLS route is required");
        }
        route_destinations(cx, &at.field("route"), &route.route);
    }
    let tcp = spec.field("tcp");
    for (i, route) in vs.tcp.iter().enumerate() {
        let at = tcp.index(i);
        let matches = at.field("match");
        for (j, m) in route.r#match.iter().enumerate() {
            let at = matches.index(j);
            l4_match(
                cx,
                &at,
                &m.destination_subnets,
                m.port,
                &m.source_labels,
                &m.gateways,
            );
            if let Some(s) = &m.source_subnet {
                cx.check(&at.field("sourceSubnet"), ip_subnet(s));
            }
        }
        if route.route.is_empty() {
            cx.err(&at.field("route"), "TCP route is required");
        }
        route_destinations(cx, &at.field("route"), &route.route);
    }
    check_export_to(
        cx,
        &spec.field("exportTo"),
        r.namespace(),
        &vs.export_to,
        false,
    );
    unreachable_http_rules(cx, &http, &vs.http);
}

/// Whether host `a` matches host `b`, wildcards included (`*.foo.com` and
/// `*.com` match each other).
fn host_matches(a: &str, b: &str) -> bool {
    let suffix = |h: &str| h.strip_prefix('*').map(str::to_string);
    match (suffix(a), suffix(b)) {
        (None, None) => a == b,
        (Some(sa), None) => b.ends_with(&sa),
        (None, Some(sb)) => a.ends_with(&sb),
        (Some(sa), Some(sb)) => sa.ends_with(&sb) || sb.ends_with(&sa),
    }
}

/// Whether every name `sub` matches is also matched by `of`.
fn host_subset_of(sub: &str, of: &str) -> bool {
    match (sub.strip_prefix('*'), of.strip_prefix('*')) {
        (None, None) => sub == of,
        (None, Some(suffix)) => sub.ends_with(suffix),
        (Some(_), None) => false,
        (Some(s1), Some(s2)) => s1.ends_with(s2),
    }
}

fn sni_host(cx: &mut Cx, at: &Path<'_>, host: &str, vs: &VirtualService) {
    if let Err(e) = wildcard_domain(host) {
        if host.parse::<std::net::IpAddr>().is_ok() {
            cx.warn(at, format!("using an IP address ({host:?}) goes against SNI spec and most clients do not support this"));
        } else {
            cx.err(at, e);
        }
        return;
    }
    if !vs.hosts.iter().any(|h| host_subset_of(host, h)) {
        cx.err(
            at,
            format!(
                "SNI host {host:?} is not a compatible subset of any of the virtual service hosts: [{}]",
                vs.hosts.join(", ")
            ),
        );
    }
}

fn l4_match(
    cx: &mut Cx,
    at: &Path<'_>,
    subnets: &[String],
    port: Option<u32>,
    source_labels: &crate::types::common::Labels,
    gateways: &[String],
) {
    let subnet_at = at.field("destinationSubnets");
    for (i, s) in subnets.iter().enumerate() {
        cx.check(&subnet_at.index(i), ip_subnet(s));
    }
    if let Some(p) = port.filter(|p| *p != 0) {
        cx.check(&at.field("port"), port_number(p));
    }
    check_labels(cx, &at.field("sourceLabels"), source_labels);
    check_gateway_names(cx, &at.field("gateways"), gateways);
}

fn check_gateway_names(cx: &mut Cx, at: &Path<'_>, names: &[String]) {
    for (i, name) in names.iter().enumerate() {
        let here = at.index(i);
        match name.split_once('/') {
            None => {
                if name.contains('.') {
                    let mut parts = name.split('.');
                    let (n, ns) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                    cx.warn(
                        &here,
                        format!("using legacy gatewayName format {name:?}; prefer the <namespace>/<name> format: \"{ns}/{n}\""),
                    );
                }
                cx.check(&here, fqdn(name));
            }
            Some((ns, gw)) => {
                if ns.is_empty() || gw.is_empty() {
                    cx.err(&here, "config namespace and gateway name cannot be empty");
                }
                if !is_dns1123_label(ns) {
                    cx.err(&here, format!("invalid value for namespace: {ns:?}"));
                }
                if !is_dns1123_label(gw) {
                    cx.err(&here, format!("invalid value for gateway name: {gw:?}"));
                }
            }
        }
    }
}

fn http_route(
    cx: &mut Cx,
    at: &Path<'_>,
    http: &HttpRoute,
    delegate: bool,
    applies_to_gateway: bool,
) {
    let name = http.name.as_deref().unwrap_or("");
    if http.delegate.is_some() && !delegate {
        // A root route hands the request to a delegate VirtualService.
        if http.redirect.is_some() {
            cx.err(
                &at.field("redirect"),
                format!("root HTTP route {name} must not specify redirect"),
            );
        }
        if !http.route.is_empty() {
            cx.err(
                &at.field("route"),
                format!("root HTTP route {name} must not specify route"),
            );
        }
    } else {
        if delegate && http.delegate.is_some() {
            cx.err(
                &at.field("delegate"),
                "delegate HTTP route cannot contain delegate",
            );
        }
        let actions = [
            !http.route.is_empty(),
            http.redirect.is_some(),
            http.direct_response.is_some(),
        ];
        match actions.iter().filter(|a| **a).count() {
            0 => cx.err(at, "HTTP route, redirect or direct response is required"),
            1 => {}
            _ if http.redirect.is_some() && !http.route.is_empty() => {
                cx.err(at, "HTTP route cannot contain both route and redirect")
            }
            _ => cx.err(
                at,
                "only one of route, redirect or directResponse may be set",
            ),
        }
        if http.redirect.is_some() {
            if http.fault.is_some() {
                cx.err(
                    &at.field("fault"),
                    "HTTP route cannot contain both fault and redirect",
                );
            }
            if http.rewrite.is_some() {
                cx.err(
                    &at.field("rewrite"),
                    "HTTP route rule cannot contain both rewrite and redirect",
                );
            }
        }
    }
    http_matches(
        cx,
        at,
        http,
        delegate || http.delegate.is_some(),
        applies_to_gateway,
    );
    check_headers(cx, &at.field("headers"), http.headers.as_ref());
    if let Some(cors) = &http.cors_policy {
        let at = at.field("corsPolicy");
        let origins = at.field("allowOrigins");
        for (i, o) in cors.allow_origins.iter().enumerate() {
            let here = origins.index(i);
            let value = o
                .exact
                .as_deref()
                .or(o.prefix.as_deref())
                .or(o.regex.as_deref())
                .unwrap_or("");
            if value.is_empty() {
                cx.err(
                    &here,
                    format!("'{value}' is not a valid match type for CORS allow origins"),
                );
            } else if let Some(re) = &o.regex {
                cx.check(&here, regex(re, "corsPolicy.allowOrigins"));
            }
        }
        let methods = at.field("allowMethods");
        for (i, m) in cors.allow_methods.iter().enumerate() {
            if !is_http_method(m) {
                cx.err(
                    &methods.index(i),
                    format!("{m:?} is not a supported HTTP method"),
                );
            }
        }
        for (field, names) in [
            ("allowHeaders", &cors.allow_headers),
            ("exposeHeaders", &cors.expose_headers),
        ] {
            let list = at.field(field);
            for (i, h) in names.iter().enumerate() {
                if h != "*" {
                    cx.check(&list.index(i), header_name(h));
                }
            }
        }
        if let Some(max_age) = &cors.max_age {
            let here = at.field("maxAge");
            cx.check(&here, duration(max_age));
            if max_age.0.subsec_nanos() > 0 {
                cx.err(
                    &here,
                    "max_age duration is accurate only to seconds precision",
                );
            }
        }
        if !cors.allow_origin.is_empty() {
            cx.warn(
                &at.field("allowOrigin"),
                "allowOrigin is deprecated, use allowOrigins",
            );
        }
    }
    if let Some(fault) = &http.fault {
        let at = at.field("fault");
        if fault.abort.is_none() && fault.delay.is_none() {
            cx.err(
                &at,
                "HTTP fault injection must have an abort and/or a delay",
            );
        }
        if let Some(abort) = &fault.abort {
            let at = at.field("abort");
            if let Some(p) = &abort.percentage {
                cx.check(&at.field("percentage"), percentage(p));
            }
            let kinds = [
                abort.http_status.is_some(),
                abort.grpc_status.is_some(),
                abort.http2_error.is_some(),
            ];
            if kinds.iter().filter(|k| **k).count() > 1 {
                cx.err(
                    &at,
                    "only one of httpStatus, grpcStatus or http2Error may be set",
                );
            } else if let Some(status) = abort.http_status {
                if !(200..=599).contains(&status) {
                    cx.err(
                        &at.field("httpStatus"),
                        format!("HTTP status {status} is not in range 200-599"),
                    );
                }
            } else if let Some(status) = &abort.grpc_status {
                if !GRPC_STATUS.contains(&status.as_str()) {
                    cx.err(
                        &at.field("grpcStatus"),
                        format!("gRPC status {status:?} is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"),
                    );
                }
            } else if abort.http2_error.is_some() {
                cx.err(
                    &at.field("http2Error"),
                    "HTTP/2 abort fault injection not supported yet",
                );
            } else {
                cx.warn(&at, "abort configured, but error type not set");
            }
        }
        if let Some(delay) = &fault.delay {
            let at = at.field("delay");
            if let Some(p) = &delay.percentage {
                cx.check(&at.field("percentage"), percentage(p));
            }
            if let Some(p) = delay.percent {
                cx.check(&at.field("percent"), percent(p));
            }
            match (&delay.fixed_delay, &delay.exponential_delay) {
                (Some(_), Some(_)) => {
                    cx.err(&at, "only one of fixedDelay or exponentialDelay may be set")
                }
                (Some(d), None) => cx.check(&at.field("fixedDelay"), duration(d)),
                (None, Some(_)) => cx.err(
                    &at.field("exponentialDelay"),
                    "exponentialDelay not supported yet",
                ),
                (None, None) => cx.err(&at, "delay must set fixedDelay"),
            }
        }
    }
    if let Some(v) = http.mirror_percent {
        if v > 100 {
            cx.err(
                &at.field("mirrorPercent"),
                format!("mirror_percent must have a max value of 100 (it has {v})"),
            );
        }
        cx.warn(
            &at.field("mirrorPercent"),
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
        );
    }
    if let Some(p) = &http.mirror_percentage {
        let v = p.value.unwrap_or(0.0);
        let here = at.field("mirrorPercentage");
        if v > 100.0 {
            cx.err(
                &here,
                format!("mirror_percentage must have a max value of 100 (it has {v:.6})"),
            );
        }
        if v < 0.0 {
            cx.err(
                &here,
                format!("mirror_percentage must have a min value of 0 (it has {v:.6})"),
            );
        }
    }
    if let Some(m) = &http.mirror {
        destination(cx, &at.field("mirror"), m);
    }
    let mirrors = at.field("mirrors");
    for (i, m) in http.mirrors.iter().enumerate() {
        let here = mirrors.index(i);
        match &m.destination {
            None => cx.err(&here, "destination is required for mirrors"),
            Some(d) => destination(cx, &here.field("destination"), d),
        }
        if let Some(p) = &m.percentage {
            let v = p.value.unwrap_or(0.0);
            if !(0.0..=100.0).contains(&v) {
                cx.err(
                    &here.field("percentage"),
                    format!("mirror percentage must be in range 0..100 (it has {v:.6})"),
                );
            }
        }
    }
    if http.mirror.is_some() && !http.mirrors.is_empty() {
        cx.err(at, "only one of mirror or mirrors may be set");
    }
    if let Some(redirect) = &http.redirect {
        let at = at.field("redirect");
        if redirect.uri.is_none()
            && redirect.authority.is_none()
            && redirect.port.is_none()
            && redirect.derive_port.is_none()
            && redirect.scheme.is_none()
        {
            cx.err(&at, "redirect must specify URI, authority, scheme, or port");
        } else if let Some(code) = redirect.redirect_code.filter(|c| *c != 0) {
            if !(300..=399).contains(&code) {
                cx.err(
                    &at.field("redirectCode"),
                    format!("{code} is not a valid redirect code, must be 3xx"),
                );
            }
        }
        if let Some(s) = redirect.scheme.as_deref().filter(|s| !s.is_empty()) {
            if s != "http" && s != "https" {
                cx.err(
                    &at.field("scheme"),
                    "invalid redirect scheme, must be \"http\" or \"https\"",
                );
            }
        }
        if let Some(p) = redirect.port {
            cx.check(&at.field("port"), port_number(p));
            if redirect.derive_port.is_some() {
                cx.err(&at, "only one of port or derivePort may be set");
            }
        }
        if redirect.uri.is_some() && redirect.prefix_rewrite.is_some() {
            cx.err(&at, "only one of uri or prefixRewrite may be set");
        }
    }
    if let Some(dr) = &http.direct_response {
        let at = at.field("directResponse");
        let status = dr.status.unwrap_or(0);
        if !(200..=599).contains(&status) {
            cx.err(
                &at.field("status"),
                format!("HTTP status {status} is not in range 200-599"),
            );
        }
        if let Some(body) = &dr.body {
            let size = body.string.as_ref().map_or(0, String::len)
                + body.bytes.as_ref().map_or(0, |b| b.len() * 3 / 4);
            if body.string.is_some() && body.bytes.is_some() {
                cx.err(&at.field("body"), "only one of string or bytes may be set");
            }
            if size > 1 << 20 {
                cx.err(&at.field("body"), "large direct_responses may impact control plane performance, must be less than 1MB");
            } else if size > 100 << 10 {
                cx.warn(
                    &at.field("body"),
                    "large direct_responses may impact control plane performance",
                );
            }
        }
    }
    if let Some(retry) = &http.retries {
        let at = at.field("retries");
        let attempts = retry.attempts.unwrap_or(0);
        if attempts < 0 {
            cx.err(&at.field("attempts"), "attempts cannot be negative");
        }
        if attempts == 0
            && (retry.per_try_timeout.is_some()
                || retry.retry_on.as_deref().is_some_and(|r| !r.is_empty())
                || retry.retry_remote_localities.is_some())
        {
            cx.err(
                &at,
                "http retry policy configured when attempts are set to 0 (disabled)",
            );
        }
        check_duration(
            cx,
            &at.field("perTryTimeout"),
            retry.per_try_timeout.as_ref(),
        );
        check_duration(cx, &at.field("backoff"), retry.backoff.as_ref());
        if let Some(on) = retry.retry_on.as_deref().filter(|r| !r.is_empty()) {
            for policy in on.split(',') {
                let is_status = policy
                    .parse::<u16>()
                    .is_ok_and(|c| (100..=599).contains(&c));
                if !is_status && !RETRY_ON.contains(&policy) {
                    cx.err(
                        &at.field("retryOn"),
                        format!("{policy:?} is not a valid retryOn policy"),
                    );
                }
            }
        }
    }
    if let Some(rw) = &http.rewrite {
        let at = at.field("rewrite");
        let uri = rw.uri.as_deref().is_some_and(|u| !u.is_empty());
        if uri && rw.uri_regex_rewrite.is_some() {
            cx.err(
                &at,
                "rewrite may only contain one of URI or UriRegexRewrite",
            );
        } else if !uri
            && rw.uri_regex_rewrite.is_none()
            && rw.authority.as_deref().unwrap_or("").is_empty()
        {
            cx.err(&at, "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified");
        }
        if let Some(rr) = &rw.uri_regex_rewrite {
            let at = at.field("uriRegexRewrite");
            match (
                rr.r#match.as_deref().unwrap_or(""),
                rr.rewrite.as_deref().unwrap_or(""),
            ) {
                ("", _) | (_, "") => cx.err(
                    &at,
                    "UriRegexRewrite requires both Rewrite and Match fields to be specified",
                ),
                (m, _) => cx.check(
                    &at.field("match"),
                    regex(m, "HTTPRewrite.UriRegexRewrite.Match"),
                ),
            }
        }
        // The authority may be rewritten in one place only.
        let set_host = http
            .headers
            .as_ref()
            .and_then(|h| h.request.as_ref())
            .and_then(|r| {
                r.set
                    .iter()
                    .chain(r.add.iter())
                    .find(|(k, _)| is_authority(k))
            });
        if let (Some(current), Some((_, v))) =
            (rw.authority.as_deref().filter(|a| !a.is_empty()), set_host)
        {
            cx.err(&at.field("authority"), format!("authority header cannot be set multiple times: have {current:?}, attempting to set {v:?}"));
        }
    }
    http_route_destinations(cx, &at.field("route"), &http.route);
    check_duration(cx, &at.field("timeout"), http.timeout.as_ref());
    if http.websocket_upgrade.is_some() {
        cx.warn(&at.field("websocketUpgrade"), "websocketUpgrade was removed from Istio's API: WebSocket upgrades are always allowed; the field is ignored");
    }
}

fn http_matches(
    cx: &mut Cx,
    at: &Path<'_>,
    http: &HttpRoute,
    delegating: bool,
    applies_to_gateway: bool,
) {
    let matches = at.field("match");
    for (i, m) in http.r#match.iter().enumerate() {
        let at = matches.index(i);
        let singles = [
            ("uri", &m.uri),
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ];
        for (field, sm) in singles {
            if let Some(sm) = sm {
                string_match(cx, &at.field(field), sm, field, delegating);
            }
        }
        for (field, map) in [
            ("headers", &m.headers),
            ("withoutHeaders", &m.without_headers),
        ] {
            let here = at.field(field);
            for (name, sm) in map {
                let key = here.key(name);
                if let Some(claim) = name.strip_prefix("@request.auth.claims.") {
                    if !applies_to_gateway {
                        cx.err(&key, format!("JWT claim based routing (key: {name}) is only supported for gateway, found no gateways: []"));
                    } else if claim.is_empty() {
                        cx.err(
                            &key,
                            format!("header name {name} is not a valid header name"),
                        );
                    }
                } else {
                    cx.check(&key, header_name(name));
                }
                string_match(cx, &key, sm, field, delegating);
            }
        }
        let qp = at.field("queryParams");
        for (name, sm) in &m.query_params {
            string_match(cx, &qp.key(name), sm, "queryParams", delegating);
        }
        if let Some(p) = m.port.filter(|p| *p != 0) {
            cx.check(&at.field("port"), port_number(p));
        }
        check_labels(cx, &at.field("sourceLabels"), &m.source_labels);
        check_gateway_names(cx, &at.field("gateways"), &m.gateways);
        if let Some(ns) = m.source_namespace.as_deref().filter(|ns| !ns.is_empty()) {
            if !is_dns1123_label(ns) {
                cx.err(
                    &at.field("sourceNamespace"),
                    format!("sourceNamespace match {ns} is invalid"),
                );
            }
        }
    }
}

/// One of exact, prefix and regex; regexes compile as RE2; a route that
/// delegates cannot match by regex.
fn string_match(cx: &mut Cx, at: &Path<'_>, sm: &StringMatch, what: &str, delegating: bool) {
    let set = [sm.exact.is_some(), sm.prefix.is_some(), sm.regex.is_some()];
    if set.iter().filter(|s| **s).count() > 1 {
        cx.err(
            at,
            format!("{what:?}: only one of exact, prefix or regex may be set"),
        );
        return;
    }
    if let Some(p) = &sm.prefix {
        if p.is_empty() {
            cx.err(
                &at.field("prefix"),
                format!("{what:?}: prefix string match should not be empty"),
            );
        }
    }
    if let Some(re) = &sm.regex {
        let here = at.field("regex");
        if delegating {
            cx.err(
                &here,
                format!("{what} match does not support regex match for delegating"),
            );
        } else if re.is_empty() {
            cx.err(
                &here,
                format!("{what:?}: regex string match should not be empty"),
            );
        } else {
            cx.check(&here, regex(re, what));
        }
    }
}

fn check_headers(cx: &mut Cx, at: &Path<'_>, headers: Option<&Headers>) {
    let Some(h) = headers else { return };
    if let Some(req) = &h.request {
        header_ops(cx, &at.field("request"), req, true);
    }
    if let Some(resp) = &h.response {
        header_ops(cx, &at.field("response"), resp, false);
    }
}

fn header_ops(cx: &mut Cx, at: &Path<'_>, ops: &HeaderOperations, request: bool) {
    for (field, map) in [("set", &ops.set), ("add", &ops.add)] {
        let here = at.field(field);
        for (name, value) in map {
            let key = here.key(name);
            let name_ok = if request {
                header_with_authority(name)
            } else {
                header_operation_name(name)
            };
            cx.check(&key, name_ok);
            cx.check(&key, header_value(value));
        }
    }
    let remove = at.field("remove");
    for (i, name) in ops.remove.iter().enumerate() {
        cx.check(&remove.index(i), header_operation_name(name));
    }
}

fn is_authority(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

fn header_with_authority(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name.starts_with(':') && !is_authority(name) {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

fn header_operation_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(format!("invalid header {name:?}: cannot set Host header"));
    }
    if name.starts_with(':') {
        return Err(format!(
            "invalid header {name:?}: header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

/// No control characters but tab; `%` only as `%%` or around a variable.
fn header_value(value: &str) -> Result<(), String> {
    if value
        .chars()
        .any(|c| (c.is_control() && c != '\t') || c == '\u{7f}')
    {
        return Err(format!("header value configuration {value} is invalid"));
    }
    let mut rest = value;
    while let Some(i) = rest.find('%') {
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('%') {
            rest = tail;
            continue;
        }
        match after.find('%') {
            Some(end) if end > 0 && !after[..end].contains(char::is_whitespace) => {
                rest = &after[end + 1..]
            }
            _ => {
                return Err(format!(
                    "header value configuration: invalid header value {value:?}: unmatched %"
                ));
            }
        }
    }
    Ok(())
}

fn http_route_destinations(cx: &mut Cx, at: &Path<'_>, routes: &[HttpRouteDestination]) {
    let mut total = 0i64;
    for (i, r) in routes.iter().enumerate() {
        let here = at.index(i);
        match &r.destination {
            None => cx.err(&here, "destination is required"),
            Some(d) => destination(cx, &here.field("destination"), d),
        }
        check_headers(cx, &here.field("headers"), r.headers.as_ref());
        weight(cx, &here, r.weight, &mut total);
    }
    total_weight(cx, at, routes.len(), routes.iter().map(|r| r.weight), total);
}

fn route_destinations(cx: &mut Cx, at: &Path<'_>, routes: &[RouteDestination]) {
    let mut total = 0i64;
    for (i, r) in routes.iter().enumerate() {
        let here = at.index(i);
        match &r.destination {
            None => cx.err(&here, "destination is required"),
            Some(d) => destination(cx, &here.field("destination"), d),
        }
        weight(cx, &here, r.weight, &mut total);
    }
    total_weight(cx, at, routes.len(), routes.iter().map(|r| r.weight), total);
}

fn weight(cx: &mut Cx, at: &Path<'_>, weight: Option<i32>, total: &mut i64) {
    let w = weight.unwrap_or(0);
    if w < 0 {
        cx.err(&at.field("weight"), format!("weight {w} < 0"));
    }
    *total += i64::from(w);
}

/// Several destinations share traffic by weight: the weights must add up to
/// 100 (weft is as strict as Istio's documentation; Istio itself only
/// rejects a zero total).
fn total_weight(
    cx: &mut Cx,
    at: &Path<'_>,
    n: usize,
    weights: impl Iterator<Item = Option<i32>>,
    total: i64,
) {
    if n < 2 {
        return;
    }
    if total == 0 {
        cx.err(at, "total destination weight = 0");
    } else if weights.into_iter().all(|w| w.is_some()) && total != 100 {
        cx.err(at, format!("total destination weight {total} != 100"));
    }
}

fn destination(cx: &mut Cx, at: &Path<'_>, d: &Destination) {
    let host = at.field("host");
    if d.host == "*" {
        cx.err(&host, format!("invalid destination host {}", d.host));
    } else {
        cx.check(&host, wildcard_domain(&d.host));
    }
    if let Some(subset) = &d.subset {
        cx.check(&at.field("subset"), subset_name(subset));
    }
    if let Some(port) = &d.port {
        cx.check(
            &at.field("port").field("number"),
            port_number(port.number.unwrap_or(0)),
        );
    }
}

fn subset_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("subset name cannot be empty".into());
    }
    if !is_dns1123_label(name) {
        return Err(format!("subset name is invalid: {name}"));
    }
    Ok(())
}

/// Istio's "unreachable rule" warnings: a rule after a catch-all, or whose
/// every match repeats an earlier one.
fn unreachable_http_rules(cx: &mut Cx, at: &Path<'_>, routes: &[HttpRoute]) {
    let mut catch_all = false;
    let mut seen: Vec<(&HttpMatchRequest, usize)> = Vec::new();
    for (i, route) in routes.iter().enumerate() {
        let name = route
            .name
            .as_deref()
            .map_or_else(|| format!("#{i}"), |n| format!("{n:?}"));
        if route.r#match.is_empty() {
            if catch_all {
                cx.warn(&at.index(i), format!("virtualService rule {name} not used (only the last rule can have no matches)"));
            }
            catch_all = true;
            continue;
        }
        let mut dups = 0;
        for m in &route.r#match {
            if seen.iter().any(|(prev, _)| same_match(prev, m)) {
                dups += 1;
            } else {
                seen.push((m, i));
            }
        }
        if dups == route.r#match.len() {
            cx.warn(
                &at.index(i),
                format!("virtualService rule {name} not used (all matches used by prior rules)"),
            );
        }
    }
}

/// Two matches select the same requests (their names aside).
fn same_match(a: &HttpMatchRequest, b: &HttpMatchRequest) -> bool {
    a.uri == b.uri
        && a.scheme == b.scheme
        && a.method == b.method
        && a.authority == b.authority
        && a.headers == b.headers
        && a.port == b.port
        && a.source_labels == b.source_labels
        && a.gateways == b.gateways
        && a.query_params == b.query_params
        && a.ignore_uri_case == b.ignore_uri_case
        && a.without_headers == b.without_headers
        && a.source_namespace == b.source_namespace
        && a.stat_prefix == b.stat_prefix
}

pub(super) fn destination_rule(cx: &mut Cx, r: &Resource, dr: &DestinationRule) {
    let root = Path::Root;
    let spec = root.field("spec");
    cx.check(&spec.field("host"), wildcard_domain(&dr.host));
    traffic_policy(cx, &spec.field("trafficPolicy"), dr.traffic_policy.as_ref());
    let subsets = spec.field("subsets");
    let mut names = HashSet::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        let at = subsets.index(i);
        if !names.insert(s.name.as_str()) {
            cx.err(
                &at.field("name"),
                format!("duplicate subset names: {}", s.name),
            );
        }
        cx.check(&at.field("name"), subset_name(&s.name));
        check_labels(cx, &at.field("labels"), &s.labels);
        traffic_policy(cx, &at.field("trafficPolicy"), s.traffic_policy.as_ref());
    }
    let export = spec.field("exportTo");
    check_export_to(cx, &export, r.namespace(), &dr.export_to, false);
    if let Some(sel) = &dr.workload_selector {
        let outside = dr.export_to.iter().any(|e| e != "." && e != r.namespace());
        if outside {
            cx.err(&export, "destination rule with workload selector cannot have exportTo beyond current namespace");
        }
        let at = spec.field("workloadSelector");
        check_selector_labels(cx, &at.field("matchLabels"), &sel.match_labels);
        if sel.match_labels.is_empty() {
            cx.warn(&at, "workload selector specified without labels");
        }
    }
}

fn traffic_policy(cx: &mut Cx, at: &Path<'_>, policy: Option<&TrafficPolicy>) {
    let Some(p) = policy else { return };
    if p.outlier_detection.is_none()
        && p.connection_pool.is_none()
        && p.load_balancer.is_none()
        && p.tls.is_none()
        && p.port_level_settings.is_empty()
        && p.tunnel.is_none()
        && p.proxy_protocol.is_none()
        && p.retry_budget.is_none()
    {
        cx.err(at, "traffic policy must have at least one field");
        return;
    }
    if p.tunnel.is_some() && p.proxy_protocol.is_some() {
        cx.err(at, "tunnel and proxyProtocol must not be set together");
    }
    outlier_detection(
        cx,
        &at.field("outlierDetection"),
        p.outlier_detection.as_ref(),
    );
    connection_pool(cx, &at.field("connectionPool"), p.connection_pool.as_ref());
    load_balancer(
        cx,
        &at.field("loadBalancer"),
        p.load_balancer.as_ref(),
        p.outlier_detection.as_ref(),
    );
    client_tls(cx, &at.field("tls"), p.tls.as_ref());
    let ports = at.field("portLevelSettings");
    for (i, pl) in p.port_level_settings.iter().enumerate() {
        let here = ports.index(i);
        match pl.port.as_ref().and_then(|p| p.number) {
            None => cx.err(&here, "portTrafficPolicy must have valid port"),
            Some(n) => cx.check(&here.field("port").field("number"), port_number(n)),
        }
        if pl.outlier_detection.is_none()
            && pl.connection_pool.is_none()
            && pl.load_balancer.is_none()
            && pl.tls.is_none()
        {
            cx.err(&here, "port traffic policy must have at least one field");
        }
        outlier_detection(
            cx,
            &here.field("outlierDetection"),
            pl.outlier_detection.as_ref(),
        );
        connection_pool(
            cx,
            &here.field("connectionPool"),
            pl.connection_pool.as_ref(),
        );
        load_balancer(
            cx,
            &here.field("loadBalancer"),
            pl.load_balancer.as_ref(),
            pl.outlier_detection.as_ref(),
        );
        client_tls(cx, &here.field("tls"), pl.tls.as_ref());
    }
    if let Some(t) = &p.tunnel {
        let here = at.field("tunnel");
        if let Some(proto) = t.protocol.as_deref().filter(|p| !p.is_empty()) {
            if proto != "CONNECT" && proto != "POST" {
                cx.err(
                    &here.field("protocol"),
                    "tunnel protocol must be \"CONNECT\" or \"POST\"",
                );
            }
        }
        let target = t.target_host.as_deref().unwrap_or("");
        if fqdn(target).is_err() && target.parse::<std::net::IpAddr>().is_err() {
            cx.err(
                &here.field("targetHost"),
                format!("tunnel target host must be valid FQDN or IP address: {target:?}"),
            );
        }
        if let Err(e) = port_number(t.target_port.unwrap_or(0)) {
            cx.err(
                &here.field("targetPort"),
                format!("tunnel target port is invalid: {e}"),
            );
        }
    }
    if let Some(b) = &p.retry_budget {
        let here = at.field("retryBudget");
        if let Some(v) = b.percent {
            if !(0.0..=100.0).contains(&v) {
                cx.err(
                    &here.field("percent"),
                    format!("percentage {v} is not in range 0..100"),
                );
            }
        }
        check_duration(
            cx,
            &here.field("budgetInterval"),
            b.budget_interval.as_ref(),
        );
    }
}

fn outlier_detection(cx: &mut Cx, at: &Path<'_>, od: Option<&OutlierDetection>) {
    let Some(od) = od else { return };
    check_duration(
        cx,
        &at.field("baseEjectionTime"),
        od.base_ejection_time.as_ref(),
    );
    check_duration(cx, &at.field("interval"), od.interval.as_ref());
    if od.consecutive_errors.is_some_and(|c| c != 0) {
        cx.warn(
            &at.field("consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
        );
    }
    if !od.split_external_local_origin_errors.unwrap_or(false)
        && od.consecutive_local_origin_failures.is_some_and(|c| c > 0)
    {
        cx.err(
            &at.field("consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        );
    }
    if let Some(p) = od.max_ejection_percent {
        cx.check(&at.field("maxEjectionPercent"), percent(p));
    }
    if let Some(p) = od.min_health_percent {
        cx.check(&at.field("minHealthPercent"), percent(p));
    }
    let codes = at.field("outlierDetectionHttpErrorCodes");
    for (i, c) in od.outlier_detection_http_error_codes.iter().enumerate() {
        if !(100..=599).contains(c) {
            cx.err(
                &codes.index(i),
                format!("HTTP status {c} is not in range 100-599"),
            );
        }
    }
}

pub(super) fn connection_pool(cx: &mut Cx, at: &Path<'_>, pool: Option<&ConnectionPoolSettings>) {
    let Some(pool) = pool else { return };
    if pool.http.is_none() && pool.tcp.is_none() {
        cx.err(at, "connection pool must have at least one field");
        return;
    }
    if let Some(h) = &pool.http {
        let here = at.field("http");
        let counts = [
            (
                "http1MaxPendingRequests",
                h.http1_max_pending_requests,
                "http1 max pending requests",
            ),
            (
                "http2MaxRequests",
                h.http2_max_requests,
                "http2 max requests",
            ),
            (
                "maxRequestsPerConnection",
                h.max_requests_per_connection,
                "max requests per connection",
            ),
            ("maxRetries", h.max_retries, "max retries"),
            (
                "maxConcurrentStreams",
                h.max_concurrent_streams,
                "max concurrent streams",
            ),
        ];
        for (field, v, what) in counts {
            if v.is_some_and(|v| v < 0) {
                cx.err(&here.field(field), format!("{what} must be non-negative"));
            }
        }
        check_duration(cx, &here.field("idleTimeout"), h.idle_timeout.as_ref());
        if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade)
            && h.use_client_protocol == Some(true)
        {
            cx.err(
                &here,
                "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
            );
        }
        if let Some(ka) = &h.http2_keep_alive {
            let ka_at = here.field("http2KeepAlive");
            check_duration(cx, &ka_at.field("interval"), ka.interval.as_ref());
            check_duration(cx, &ka_at.field("timeout"), ka.timeout.as_ref());
        }
    }
    if let Some(t) = &pool.tcp {
        let here = at.field("tcp");
        if t.max_connections.is_some_and(|v| v < 0) {
            cx.err(
                &here.field("maxConnections"),
                "max connections must be non-negative",
            );
        }
        check_duration(
            cx,
            &here.field("connectTimeout"),
            t.connect_timeout.as_ref(),
        );
        check_duration(
            cx,
            &here.field("maxConnectionDuration"),
            t.max_connection_duration.as_ref(),
        );
        check_duration(cx, &here.field("idleTimeout"), t.idle_timeout.as_ref());
        if let Some(ka) = &t.tcp_keepalive {
            let ka_at = here.field("tcpKeepalive");
            check_duration(cx, &ka_at.field("time"), ka.time.as_ref());
            check_duration(cx, &ka_at.field("interval"), ka.interval.as_ref());
        }
    }
}

fn load_balancer(
    cx: &mut Cx,
    at: &Path<'_>,
    lb: Option<&LoadBalancerSettings>,
    outlier: Option<&OutlierDetection>,
) {
    let Some(lb) = lb else { return };
    if lb.simple.is_some() && lb.consistent_hash.is_some() {
        cx.err(at, "only one of simple or consistentHash may be set");
    }
    if let Some(ch) = &lb.consistent_hash {
        let here = at.field("consistentHash");
        let keys = [
            ch.http_header_name.is_some(),
            ch.http_cookie.is_some(),
            ch.use_source_ip.is_some(),
            ch.http_query_parameter_name.is_some(),
        ];
        if keys.iter().filter(|k| **k).count() > 1 {
            cx.err(&here, "only one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName may be set");
        }
        if ch.http_cookie.as_ref().is_some_and(|c| c.name.is_empty()) {
            cx.err(
                &here.field("httpCookie").field("name"),
                "name required for HttpCookie",
            );
        }
        if ch.minimum_ring_size.is_some_and(|s| s != 0) {
            cx.warn(
                &here.field("minimumRingSize"),
                "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
            );
            if ch.ring_hash.is_some() || ch.maglev.is_some() {
                cx.err(
                    &here,
                    "only one of MinimumRingSize or Maglev/Ringhash can be specified",
                );
            }
        }
        if let Some(ml) = &ch.maglev {
            let size = ml.table_size.unwrap_or(0);
            let ml_at = here.field("maglev");
            let ts = ml_at.field("tableSize");
            if size == 0 {
                cx.err(&ts, "tableSize must be set for maglev");
            } else if size >= 5_000_011 {
                cx.err(&ts, "tableSize must be less than 5000011 for maglev");
            } else if !is_prime(size) {
                cx.err(&ts, "tableSize must be a prime number for maglev");
            }
        }
    }
    if let Some(l) = &lb.locality_lb_setting {
        let here = at.field("localityLbSetting");
        if !l.distribute.is_empty() && !l.failover.is_empty() {
            cx.err(
                &here,
                "can not simultaneously specify 'distribute' and 'failover'",
            );
        }
        if !l.failover.is_empty() && outlier.is_none() {
            cx.warn(
                &here.field("failover"),
                "outlier detection policy must be provided for failover",
            );
        }
        let dist = here.field("distribute");
        for (i, d) in l.distribute.iter().enumerate() {
            let total: u64 = d.to.values().map(|v| u64::from(*v)).sum();
            if total != 100 {
                cx.err(
                    &dist.index(i).field("to"),
                    format!("total weight {total} != 100"),
                );
            }
        }
        let failover = here.field("failover");
        for (i, f) in l.failover.iter().enumerate() {
            if f.from == f.to {
                cx.err(
                    &failover.index(i),
                    "locality lb failover settings must specify different regions",
                );
            }
        }
    }
    check_duration(
        cx,
        &at.field("warmupDurationSecs"),
        lb.warmup_duration_secs.as_ref(),
    );
    if let Some(w) = &lb.warmup {
        let here = at.field("warmup");
        check_duration(cx, &here.field("duration"), w.duration.as_ref());
        if w.minimum_percent
            .is_some_and(|p| !(0.0..=100.0).contains(&p))
        {
            cx.err(
                &here.field("minimumPercent"),
                "minimumPercent must be in range 0..100",
            );
        }
        if w.aggression.is_some_and(|a| a < 1.0) {
            cx.err(&here.field("aggression"), "aggression must be at least 1.0");
        }
    }
}

fn is_prime(x: u64) -> bool {
    if x != 0 && x < 4 {
        return true;
    }
    if x % 2 == 0 {
        return false;
    }
    let mut f = 3;
    while f * f <= x {
        if x % f == 0 {
            return false;
        }
        f += 2;
    }
    true
}

fn client_tls(cx: &mut Cx, at: &Path<'_>, tls: Option<&ClientTlsSettings>) {
    let Some(t) = tls else { return };
    let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    let mode = t.mode.unwrap_or(ClientTlsMode::Disable);
    if t.insecure_skip_verify == Some(true) && mode == ClientTlsMode::Simple {
        if !t.subject_alt_names.is_empty() {
            cx.err(
                at,
                "cannot specify SubjectAltNames when InsecureSkipVerify is set true",
            );
        }
        if set(&t.ca_certificates) {
            cx.err(
                at,
                "cannot specify CaCertificates when InsecureSkipVerify is set true",
            );
        }
    }
    if matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual) && set(&t.credential_name) {
        if set(&t.client_certificate)
            || set(&t.ca_certificates)
            || set(&t.private_key)
            || set(&t.ca_crl)
        {
            cx.err(at, "cannot specify client certificates or CA certificate or CA CRL If credentialName is set");
        }
        return;
    }
    if mode == ClientTlsMode::Mutual {
        if !set(&t.client_certificate) {
            cx.err(at, "client certificate required for mutual tls");
        }
        if !set(&t.private_key) {
            cx.err(at, "private key required for mutual tls");
        }
    }
    if mode == ClientTlsMode::IstioMutual
        && (set(&t.client_certificate)
            || set(&t.private_key)
            || set(&t.ca_certificates)
            || set(&t.credential_name))
    {
        cx.err(at, "ISTIO_MUTUAL uses the mesh certificates: remove clientCertificate, privateKey, caCertificates and credentialName");
    }
}

pub(super) fn gateway(cx: &mut Cx, r: &Resource, gw: &Gateway) {
    let root = Path::Root;
    let spec = root.field("spec");
    if !is_dns1123_label(&r.name) {
        cx.err(
            &root.field("metadata").field("name"),
            format!("invalid gateway name: {:?}", r.name),
        );
    }
    if gw.servers.is_empty() {
        cx.err(
            &spec.field("servers"),
            "gateway must have at least one server",
        );
    }
    let servers = spec.field("servers");
    let mut port_names = HashSet::new();
    for (i, s) in gw.servers.iter().enumerate() {
        let at = servers.index(i);
        if s.hosts.is_empty() {
            cx.err(
                &at.field("hosts"),
                "server config must contain at least one host",
            );
        }
        let hosts = at.field("hosts");
        for (j, h) in s.hosts.iter().enumerate() {
            cx.check(&hosts.index(j), namespace_slash_host(h, true));
        }
        let bind = s.bind.as_deref().unwrap_or("");
        let unix = bind.starts_with("unix://");
        let mut proto = None;
        match &s.port {
            None => cx.err(&at.field("port"), "port is required"),
            Some(port) => {
                let pat = at.field("port");
                let p = port.protocol.as_deref().unwrap_or("");
                proto = Protocol::parse(p);
                if proto.is_none() {
                    cx.err(
                        &pat.field("protocol"),
                        format!("invalid protocol {p:?}, supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP"),
                    );
                }
                let number = port.number.unwrap_or(0);
                if number > 0 || !unix {
                    cx.check(&pat.field("number"), port_number(number));
                }
                if port.target_port.is_some_and(|t| t > 0) {
                    cx.err(
                        &pat.field("targetPort"),
                        "targetPort has no impact on Gateways",
                    );
                }
                let name = port.name.as_deref().unwrap_or("");
                if name.is_empty() {
                    cx.err(&pat.field("name"), "port name must be set");
                } else if !port_names.insert(name) {
                    cx.err(
                        &pat.field("name"),
                        format!("port names in servers must be unique: duplicate name {name}"),
                    );
                }
                if unix && number != 0 {
                    cx.err(
                        &pat.field("number"),
                        "port number must be 0 for unix domain socket",
                    );
                }
            }
        }
        if unix {
            cx.check(&at.field("bind"), unix_address(&bind["unix://".len()..]));
        } else if !bind.is_empty() && bind.parse::<std::net::IpAddr>().is_err() {
            cx.err(&at.field("bind"), format!("{bind} is not a valid IP"));
        }
        server_tls(cx, &at.field("tls"), s.tls.as_ref());
        if let Some(p) = proto {
            match &s.tls {
                None if p.is_tls() => {
                    cx.err(&at, "server must have TLS settings for HTTPS/TLS protocols")
                }
                Some(tls) if !p.is_tls() => {
                    let certs = [
                        &tls.ca_certificates,
                        &tls.private_key,
                        &tls.server_certificate,
                    ]
                    .iter()
                    .any(|c| c.as_deref().is_some_and(|c| !c.is_empty()));
                    if p.is_http() {
                        let passthrough_only =
                            matches!(tls.mode, None | Some(ServerTlsMode::Passthrough));
                        if !passthrough_only || certs {
                            cx.err(
                                &at.field("tls"),
                                "server cannot have TLS settings for plain text HTTP ports",
                            );
                        }
                    } else {
                        cx.err(
                            &at.field("tls"),
                            "server cannot have TLS settings for non HTTPS/TLS ports",
                        );
                    }
                    if !p.is_http() && tls.https_redirect == Some(true) {
                        cx.warn(
                            &at.field("tls").field("httpsRedirect"),
                            "tls.httpsRedirect should only be used with http servers",
                        );
                    }
                }
                _ => {}
            }
        }
    }
}

fn unix_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        return Err("unix address must not be empty".into());
    }
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(format!("{addr} is not an absolute path to a file"));
    }
    Ok(())
}

pub(super) fn server_tls(cx: &mut Cx, at: &Path<'_>, tls: Option<&ServerTlsSettings>) {
    let Some(t) = tls else { return };
    let set = |s: &Option<String>| s.as_deref().is_some_and(|s| !s.is_empty());
    if matches!(
        t.min_protocol_version,
        Some(TlsProtocol::V1_0 | TlsProtocol::V1_1)
    ) && t.cipher_suites.is_empty()
    {
        cx.warn(
            &at.field("minProtocolVersion"),
            "TLS version below TLSV1_2 require setting compatible ciphers as by default they no longer include compatible ciphers.",
        );
    }
    let mode = t.mode.unwrap_or(ServerTlsMode::Passthrough);
    match mode {
        ServerTlsMode::IstioMutual => {
            for (field, what) in [
                (&t.server_certificate, "server certificate"),
                (&t.private_key, "private key"),
                (&t.ca_certificates, "CA bundle"),
                (&t.credential_name, "credentialName"),
            ] {
                if set(field) {
                    cx.err(
                        at,
                        format!("ISTIO_MUTUAL TLS cannot have associated {what}"),
                    );
                }
            }
            return;
        }
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {
            if set(&t.ca_crl)
                || set(&t.server_certificate)
                || set(&t.private_key)
                || set(&t.ca_certificates)
                || set(&t.credential_name)
            {
                let name = if mode == ServerTlsMode::Passthrough {
                    "PASSTHROUGH"
                } else {
                    "AUTO_PASSTHROUGH"
                };
                cx.warn(
                    at,
                    format!("{name} mode does not use certificates, they will be ignored"),
                );
            }
        }
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            let remote = set(&t.credential_name)
                || !t.credential_names.is_empty()
                || !t.tls_certificates.is_empty();
            if !remote {
                let label = if mode == ServerTlsMode::Simple {
                    "SIMPLE"
                } else {
                    "MUTUAL"
                };
                if !set(&t.server_certificate) {
                    cx.err(at, format!("{label} TLS requires a server certificate"));
                }
                if !set(&t.private_key) {
                    cx.err(at, format!("{label} TLS requires a private key"));
                }
                if mode != ServerTlsMode::Simple && !set(&t.ca_certificates) {
                    cx.err(at, "MUTUAL TLS requires a client CA bundle");
                }
            }
        }
    }
    if set(&t.ca_crl) {
        if set(&t.credential_name) {
            cx.err(at, "CRL is not supported with credentialName. CRL has to be specified in the credential");
        }
        if mode == ServerTlsMode::Simple {
            cx.err(at, "CRL is not supported with SIMPLE TLS");
        }
    }
    if set(&t.credential_name) && !t.credential_names.is_empty() {
        cx.err(
            at,
            "only one of credentialName or credentialNames can be set",
        );
    }
}

pub(super) fn service_entry(cx: &mut Cx, r: &Resource, se: &ServiceEntry) {
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
pub(super) fn workload_entry(
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
        if !super::is_dns1123_subdomain(sa) {
            cx.err(
                &at.field("serviceAccount"),
                format!("invalid service account name {sa:?}"),
            );
        }
    }
}

pub(super) fn workload_group(cx: &mut Cx, wg: &WorkloadGroup) {
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

pub(super) fn sidecar(cx: &mut Cx, r: &Resource, sc: &Sidecar) {
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

pub(super) fn envoy_filter(cx: &mut Cx, ef: &EnvoyFilter) {
    let spec = Path::Root;
    let spec = spec.field("spec");
    if ef.workload_selector.is_some() && !ef.target_refs.is_empty() {
        cx.err(
            &spec,
            "only one of targetRefs or workloadSelector can be set",
        );
    }
    let patches = spec.field("configPatches");
    for (i, p) in ef.config_patches.iter().enumerate() {
        let at = patches.index(i);
        if p.apply_to.is_none() {
            cx.err(&at.field("applyTo"), "Envoy filter: missing applyTo");
        }
        match &p.patch {
            None => cx.err(&at.field("patch"), "Envoy filter: missing patch"),
            Some(patch) if patch.operation.is_none() => cx.err(
                &at.field("patch").field("operation"),
                "Envoy filter: missing patch operation",
            ),
            Some(_) => {}
        }
    }
    cx.warn(
        &spec,
        "weft does not run Envoy: this EnvoyFilter is loaded but has no effect",
    );
}

const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

const GRPC_STATUS: &[&str] = &[
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

pub(super) fn is_http_method(m: &str) -> bool {
    matches!(
        m,
        "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH"
    )
}
