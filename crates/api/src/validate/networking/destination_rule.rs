//! DestinationRule rules (traffic policies, also used by Sidecar).

use super::*;

pub(crate) fn destination_rule(cx: &mut Cx, r: &Resource, dr: &DestinationRule) {
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
    shared_settings(
        cx,
        at,
        p.outlier_detection.as_ref(),
        p.connection_pool.as_ref(),
        p.load_balancer.as_ref(),
        p.tls.as_ref(),
    );
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
        shared_settings(
            cx,
            &here,
            pl.outlier_detection.as_ref(),
            pl.connection_pool.as_ref(),
            pl.load_balancer.as_ref(),
            pl.tls.as_ref(),
        );
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

/// The settings a traffic policy and a port-level policy both have.
fn shared_settings(
    cx: &mut Cx,
    at: &Path<'_>,
    outlier: Option<&OutlierDetection>,
    pool: Option<&ConnectionPoolSettings>,
    lb: Option<&LoadBalancerSettings>,
    tls: Option<&ClientTlsSettings>,
) {
    outlier_detection(cx, &at.field("outlierDetection"), outlier);
    connection_pool(cx, &at.field("connectionPool"), pool);
    load_balancer(cx, &at.field("loadBalancer"), lb, outlier);
    client_tls(cx, &at.field("tls"), tls);
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

pub(crate) fn connection_pool(cx: &mut Cx, at: &Path<'_>, pool: Option<&ConnectionPoolSettings>) {
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
