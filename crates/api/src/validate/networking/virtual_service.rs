//! VirtualService rules.

use super::*;

const MESH_GATEWAY: &str = "mesh";

pub(crate) fn virtual_service(cx: &mut Cx, r: &Resource, vs: &VirtualService) {
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
        for (j, m) in route.r#match.iter().enumerate() {
            if let Some((_, first)) = seen.iter().find(|(prev, _)| same_match(prev, m)) {
                let match_name = m
                    .name
                    .as_deref()
                    .map_or_else(|| format!("#{j}"), |n| format!("{n:?}"));
                let first_name = routes[*first]
                    .name
                    .as_deref()
                    .map_or_else(|| format!("#{first}"), |n| format!("{n:?}"));
                cx.warn(
                    &at.index(i),
                    format!("virtualService rule {name} match {match_name} is not used (duplicate/overlapping match in rule {first_name})"),
                );
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
