//! One invalid example per rule, with the exact message and where it points.

use crate::{Level, Loaded, validate};

/// Every finding for `yaml` as `LINE:COL: path: message` (warnings say so).
fn findings(yaml: &str) -> Vec<String> {
    let mut loaded = Loaded::default();
    loaded.add_text("t.yaml", yaml);
    loaded.check_duplicates();
    let mut diags = loaded.diagnostics;
    diags.extend(validate(&loaded.resources, None));
    diags
        .iter()
        .filter(|d| d.level != Level::Note)
        .map(|d| {
            let path = d.path.as_ref().map(ToString::to_string).unwrap_or_default();
            let warn = if d.level == Level::Warning {
                "warning: "
            } else {
                ""
            };
            format!("{}:{}: {path}: {warn}{}", d.pos.line, d.pos.col, d.message)
        })
        .collect()
}

/// A resource of `kind` (networking.istio.io unless the kind says) named
/// `x` in `default`, with `spec` indented under `spec:`.
fn resource(kind: &str, spec: &str) -> String {
    let api = match kind {
        "PeerAuthentication" | "AuthorizationPolicy" | "RequestAuthentication" => {
            "security.istio.io/v1"
        }
        "Telemetry" => "telemetry.istio.io/v1",
        "EnvoyFilter" => "networking.istio.io/v1alpha3",
        "RateLimit" => "weft.dev/v1alpha1",
        "HTTPRoute" | "KubeGateway" | "TCPRoute" | "ReferenceGrant" => {
            "gateway.networking.k8s.io/v1"
        }
        _ => "networking.istio.io/v1",
    };
    let kind = if kind == "KubeGateway" {
        "Gateway"
    } else {
        kind
    };
    let body: String = spec.lines().map(|l| format!("  {l}\n")).collect();
    format!("apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: x\nspec:\n{body}")
}

/// The one error `spec` gives, as `path: message`.
fn error_of(kind: &str, spec: &str) -> String {
    let all = findings(&resource(kind, spec));
    let errors: Vec<&String> = all.iter().filter(|f| !f.contains(": warning: ")).collect();
    assert_eq!(
        errors.len(),
        1,
        "expected one error for {kind}:\n{spec}\ngot {all:#?}"
    );
    let e = errors[0];
    // Drop `LINE:COL: `.
    e.splitn(3, ':')
        .nth(2)
        .unwrap_or_default()
        .trim_start()
        .to_string()
}

fn warnings_of(kind: &str, spec: &str) -> Vec<String> {
    findings(&resource(kind, spec))
        .into_iter()
        .filter(|f| f.contains(": warning: "))
        .map(|f| {
            f.splitn(3, ':')
                .nth(2)
                .unwrap_or_default()
                .trim_start()
                .to_string()
        })
        .collect()
}

fn valid(kind: &str, spec: &str) {
    let all = findings(&resource(kind, spec));
    let errors: Vec<&String> = all.iter().filter(|f| !f.contains(": warning: ")).collect();
    assert!(
        errors.is_empty(),
        "{kind} should be valid:\n{spec}\n{errors:#?}"
    );
}

const ROUTE: &str = "hosts: [reviews]\nhttp:\n- route:\n  - destination: {host: reviews}";

#[test]
fn messages_carry_file_line_column_resource_and_field() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: reviews\n  namespace: shop\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination:\n        host: reviews\n      weight: -5\n";
    let mut loaded = Loaded::default();
    loaded.add_text("mesh/reviews.yaml", yaml);
    let diags = validate(&loaded.resources, None);
    let lines: Vec<String> = diags
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        lines,
        vec!["mesh/reviews.yaml:12:15: VirtualService shop/reviews: spec.http[0].route[0].weight: weight -5 < 0".to_string()]
    );
}

#[test]
fn virtual_service_hosts() {
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [\"*\"]\nhttp:\n- route:\n  - destination: {host: a}"
        ),
        "spec.hosts[0]: wildcard host * is not allowed for virtual services bound to the mesh gateway"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [Reviews]\nhttp:\n- route:\n  - destination: {host: a}"
        ),
        "spec.hosts[0]: domain name \"Reviews\" invalid (label \"Reviews\" invalid)"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a.example.com, \"*.example.com\"]\nhttp:\n- route:\n  - destination: {host: a}"
        ),
        "spec.hosts[0]: duplicate hosts in virtual service: a.example.com & *.example.com"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a.b.123]\nhttp:\n- route:\n  - destination: {host: a}"
        ),
        "spec.hosts[0]: domain name \"b.123\" invalid (top level domain \"123\" cannot be all-numeric)"
    );
    assert_eq!(
        error_of("VirtualService", "hosts: [reviews]"),
        "spec: http, tcp or tls must be provided in virtual service"
    );
    valid(
        "VirtualService",
        "hosts: [\"*\"]\ngateways: [istio-system/ingress]\nhttp:\n- route:\n  - destination: {host: a}",
    );
    valid(
        "VirtualService",
        "hosts: [10.0.0.1]\nhttp:\n- route:\n  - destination: {host: a}",
    );
}

#[test]
fn virtual_service_gateways_and_delegates() {
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\ngateways: [\"Istio-System/gw\"]\nhttp:\n- route:\n  - destination: {host: a}"
        ),
        "spec.gateways[0]: invalid value for namespace: \"Istio-System\""
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "gateways: [gw]\nhttp:\n- route:\n  - destination: {host: a}"
        ),
        "spec.gateways: delegate virtual service must have no gateways specified"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "tcp:\n- route:\n  - destination: {host: a}"
        ),
        "spec.tcp: delegate virtual service must have no tcp route specified"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "http:\n- delegate: {name: b}\n  route:\n  - destination: {host: a}"
        ),
        "spec.http[0].delegate: delegate HTTP route cannot contain delegate"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- delegate: {name: b}\n  route:\n  - destination: {host: a}"
        ),
        "spec.http[0].route: root HTTP route  must not specify route"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- match:\n  - uri: {regex: \"^/x\"}\n  delegate: {name: b}"
        ),
        "spec.http[0].match[0].uri.regex: uri match does not support regex match for delegating"
    );
    valid(
        "VirtualService",
        "hosts: [a]\nhttp:\n- match:\n  - uri: {prefix: /x}\n  delegate: {name: b, namespace: c}",
    );
}

#[test]
fn http_route_actions() {
    assert_eq!(
        error_of("VirtualService", "hosts: [a]\nhttp:\n- timeout: 1s"),
        "spec.http[0]: HTTP route, redirect or direct response is required"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- redirect: {uri: /b}\n  route:\n  - destination: {host: a}"
        ),
        "spec.http[0]: HTTP route cannot contain both route and redirect"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- redirect: {uri: /b}\n  rewrite: {uri: /c}"
        ),
        "spec.http[0].rewrite: HTTP route rule cannot contain both rewrite and redirect"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- redirect: {uri: /b}\n  fault: {abort: {httpStatus: 500}}"
        ),
        "spec.http[0].fault: HTTP route cannot contain both fault and redirect"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- redirect: {redirectCode: 200}"
        ),
        "spec.http[0].redirect: redirect must specify URI, authority, scheme, or port"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- redirect: {uri: /b, redirectCode: 200}"
        ),
        "spec.http[0].redirect.redirectCode: 200 is not a valid redirect code, must be 3xx"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- redirect: {scheme: ftp}"
        ),
        "spec.http[0].redirect.scheme: invalid redirect scheme, must be \"http\" or \"https\""
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- directResponse: {status: 700}"
        ),
        "spec.http[0].directResponse.status: HTTP status 700 is not in range 200-599"
    );
    valid(
        "VirtualService",
        "hosts: [a]\nhttp:\n- directResponse: {status: 503, body: {string: down}}",
    );
}

#[test]
fn route_destinations_and_weights() {
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- route:\n  - destination: {host: a, subset: v1}\n    weight: 90\n  - destination: {host: a, subset: v2}\n    weight: 20"
        ),
        "spec.http[0].route: total destination weight 110 != 100"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- route:\n  - destination: {host: a, subset: v1}\n  - destination: {host: a, subset: v2}"
        ),
        "spec.http[0].route: total destination weight = 0"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- route:\n  - weight: 100"
        ),
        "spec.http[0].route[0]: destination is required"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- route:\n  - destination: {host: \"*\"}"
        ),
        "spec.http[0].route[0].destination.host: invalid destination host *"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- route:\n  - destination: {host: a, subset: V1}"
        ),
        "spec.http[0].route[0].destination.subset: subset name is invalid: V1"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- route:\n  - destination: {host: a, port: {number: 70000}}"
        ),
        "spec.http[0].route[0].destination.port.number: port number 70000 must be in the range 1..65535"
    );
    valid(
        "VirtualService",
        "hosts: [a]\nhttp:\n- route:\n  - destination: {host: a, subset: v1}\n    weight: 90\n  - destination: {host: a, subset: v2}\n    weight: 10",
    );
}

#[test]
fn matches_regexes_and_headers() {
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- match:\n  - uri: {regex: \"(\"}\n  route:\n  - destination: {host: a}"
        ),
        "spec.http[0].match[0].uri.regex: \"uri\": error parsing regexp: missing closing ): `(`; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- match:\n  - uri: {prefix: \"\"}\n  route:\n  - destination: {host: a}"
        ),
        "spec.http[0].match[0].uri.prefix: \"uri\": prefix string match should not be empty"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- match:\n  - uri: {exact: /a, prefix: /b}\n  route:\n  - destination: {host: a}"
        ),
        "spec.http[0].match[0].uri: \"uri\": only one of exact, prefix or regex may be set"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- match:\n  - headers:\n      \"bad header\": {exact: x}\n  route:\n  - destination: {host: a}"
        ),
        "spec.http[0].match[0].headers[bad header]: header name bad header is not a valid header name"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- match:\n  - sourceNamespace: Foo\n  route:\n  - destination: {host: a}"
        ),
        "spec.http[0].match[0].sourceNamespace: sourceNamespace match Foo is invalid"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- match:\n  - headers:\n      \"@request.auth.claims.group\": {exact: x}\n  route:\n  - destination: {host: a}"
        ),
        "spec.http[0].match[0].headers[@request.auth.claims.group]: JWT claim based routing (key: @request.auth.claims.group) is only supported for gateway, found no gateways: []"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- route:\n  - destination: {host: a}\n  headers:\n    request:\n      set: {\":path\": /x}"
        ),
        "spec.http[0].headers.request.set[:path]: invalid header \":path\": header cannot have \":\" prefix"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- route:\n  - destination: {host: a}\n  headers:\n    response:\n      remove: [Host]"
        ),
        "spec.http[0].headers.response.remove[0]: invalid header \"Host\": cannot set Host header"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\nhttp:\n- route:\n  - destination: {host: a}\n  headers:\n    request:\n      add: {x-a: \"50%\"}"
        ),
        "spec.http[0].headers.request.add[x-a]: header value configuration: invalid header value \"50%\": unmatched %"
    );
}

#[test]
fn retries_timeouts_faults_mirrors_cors() {
    assert_eq!(
        error_of("VirtualService", &format!("{ROUTE}\n  timeout: 0s")),
        "spec.http[0].timeout: duration must be greater than 1ms"
    );
    assert_eq!(
        error_of("VirtualService", &format!("{ROUTE}\n  timeout: 1500us")),
        "spec.http[0].timeout: only durations to ms precision are supported"
    );
    assert_eq!(
        error_of("VirtualService", &format!("{ROUTE}\n  timeout: 10x")),
        "spec.http[0].timeout: invalid duration `10x`: expected a number and unit such as 1.5s, 100ms or 1m30s"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            &format!("{ROUTE}\n  retries: {{attempts: -1}}")
        ),
        "spec.http[0].retries.attempts: attempts cannot be negative"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            &format!("{ROUTE}\n  retries: {{attempts: 0, perTryTimeout: 1s}}")
        ),
        "spec.http[0].retries: http retry policy configured when attempts are set to 0 (disabled)"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            &format!("{ROUTE}\n  retries: {{attempts: 3, retryOn: \"5xx,bogus,503\"}}")
        ),
        "spec.http[0].retries.retryOn: \"bogus\" is not a valid retryOn policy"
    );
    assert_eq!(
        error_of("VirtualService", &format!("{ROUTE}\n  fault: {{}}")),
        "spec.http[0].fault: HTTP fault injection must have an abort and/or a delay"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            &format!("{ROUTE}\n  fault: {{abort: {{httpStatus: 99}}}}")
        ),
        "spec.http[0].fault.abort.httpStatus: HTTP status 99 is not in range 200-599"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            &format!("{ROUTE}\n  fault: {{abort: {{grpcStatus: NOPE}}}}")
        ),
        "spec.http[0].fault.abort.grpcStatus: gRPC status \"NOPE\" is not supported. See https://github.com/grpc/grpc/blob/master/doc/statuscodes.md for a list of supported codes, for example 'NOT_FOUND'"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            &format!("{ROUTE}\n  fault: {{delay: {{fixedDelay: 5s, percentage: {{value: 101}}}}}}")
        ),
        "spec.http[0].fault.delay.percentage: percentage 101 is neither 0.0, nor in range [0.0001, 100.0]"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            &format!("{ROUTE}\n  mirrorPercentage: {{value: 150}}")
        ),
        "spec.http[0].mirrorPercentage: mirror_percentage must have a max value of 100 (it has 150.000000)"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            &format!("{ROUTE}\n  corsPolicy: {{allowMethods: [FETCH]}}")
        ),
        "spec.http[0].corsPolicy.allowMethods[0]: \"FETCH\" is not a supported HTTP method"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            &format!("{ROUTE}\n  corsPolicy: {{maxAge: 1500ms}}")
        ),
        "spec.http[0].corsPolicy.maxAge: max_age duration is accurate only to seconds precision"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            &format!("{ROUTE}\n  rewrite: {{uri: /a, uriRegexRewrite: {{match: a, rewrite: b}}}}")
        ),
        "spec.http[0].rewrite: rewrite may only contain one of URI or UriRegexRewrite"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            &format!(
                "{ROUTE}\n  rewrite: {{authority: b}}\n  headers:\n    request:\n      set: {{host: c}}"
            )
        ),
        "spec.http[0].rewrite.authority: authority header cannot be set multiple times: have \"b\", attempting to set \"c\""
    );
    assert_eq!(warnings_of("VirtualService", &format!("{ROUTE}\n  mirrorPercent: 50\n  mirror: {{host: b}}")), vec!["spec.http[0].mirrorPercent: warning: using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead".to_string()]);
    valid(
        "VirtualService",
        &format!(
            "{ROUTE}\n  timeout: 1.5s\n  retries: {{attempts: 3, perTryTimeout: 2s, retryOn: \"gateway-error,connect-failure,503\"}}\n  fault: {{delay: {{fixedDelay: 7s, percentage: {{value: 0.1}}}}}}"
        ),
    );
}

#[test]
fn tls_and_tcp_routes() {
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a.com]\ntls:\n- route:\n  - destination: {host: a.com}"
        ),
        "spec.tls[0].match: TLS route must have at least one match condition"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a.com]\ntls:\n- match:\n  - sniHosts: [b.com]\n  route:\n  - destination: {host: a.com}"
        ),
        "spec.tls[0].match[0].sniHosts[0]: SNI host \"b.com\" is not a compatible subset of any of the virtual service hosts: [a.com]"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\ntcp:\n- match:\n  - port: 5000"
        ),
        "spec.tcp[0].route: TCP route is required"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            "hosts: [a]\ntcp:\n- match:\n  - destinationSubnets: [10.0.0.0/33]\n  route:\n  - destination: {host: a}"
        ),
        "spec.tcp[0].match[0].destinationSubnets[0]: \"10.0.0.0/33\" is not a valid CIDR block"
    );
    valid(
        "VirtualService",
        "hosts: [\"*.a.com\"]\ntls:\n- match:\n  - sniHosts: [x.a.com]\n  route:\n  - destination: {host: x.a.com}",
    );
}

#[test]
fn export_to() {
    assert_eq!(
        error_of(
            "VirtualService",
            &format!("{ROUTE}\nexportTo: [default, \".\"]")
        ),
        "spec.exportTo[1]: duplicate entries in exportTo: . and current namespace default"
    );
    assert_eq!(
        error_of(
            "VirtualService",
            &format!("{ROUTE}\nexportTo: [\"*\", other]")
        ),
        "spec.exportTo: cannot have both public (*) and non-public exportTo values for a resource"
    );
    assert_eq!(
        error_of("VirtualService", &format!("{ROUTE}\nexportTo: [\"~\"]")),
        "spec.exportTo[0]: only . or * or valid DNS 1123 label is allowed as exportTo entry"
    );
    valid(
        "ServiceEntry",
        "hosts: [a.com]\nexportTo: [\"~\"]\nports: [{number: 80, name: http, protocol: HTTP}]\nresolution: DNS",
    );
}

#[test]
fn destination_rules() {
    assert_eq!(
        error_of("DestinationRule", "host: Reviews"),
        "spec.host: domain name \"Reviews\" invalid (label \"Reviews\" invalid)"
    );
    assert_eq!(
        error_of(
            "DestinationRule",
            "host: r\nsubsets:\n- name: v1\n- name: v1"
        ),
        "spec.subsets[1].name: duplicate subset names: v1"
    );
    assert_eq!(
        error_of("DestinationRule", "host: r\nsubsets:\n- {name: \"\"}"),
        "spec.subsets[0].name: subset name cannot be empty"
    );
    assert_eq!(
        error_of(
            "DestinationRule",
            "host: r\nsubsets:\n- {name: v1, labels: {\"-bad\": x}}"
        ),
        "spec.subsets[0].labels[-bad]: invalid tag key: \"-bad\""
    );
    assert_eq!(
        error_of("DestinationRule", "host: r\ntrafficPolicy: {}"),
        "spec.trafficPolicy: traffic policy must have at least one field"
    );
    assert_eq!(
        error_of(
            "DestinationRule",
            "host: r\ntrafficPolicy:\n  connectionPool: {tcp: {maxConnections: -1}}"
        ),
        "spec.trafficPolicy.connectionPool.tcp.maxConnections: max connections must be non-negative"
    );
    assert_eq!(
        error_of(
            "DestinationRule",
            "host: r\ntrafficPolicy:\n  connectionPool: {http: {h2UpgradePolicy: UPGRADE, useClientProtocol: true}}"
        ),
        "spec.trafficPolicy.connectionPool.http: use client protocol must not be true when H2UpgradePolicy is UPGRADE"
    );
    assert_eq!(
        error_of(
            "DestinationRule",
            "host: r\ntrafficPolicy:\n  outlierDetection: {maxEjectionPercent: 120}"
        ),
        "spec.trafficPolicy.outlierDetection.maxEjectionPercent: percentage 120 is not in range 0..100"
    );
    assert_eq!(
        error_of(
            "DestinationRule",
            "host: r\ntrafficPolicy:\n  outlierDetection: {interval: 0.5ms}"
        ),
        "spec.trafficPolicy.outlierDetection.interval: duration must be greater than 1ms"
    );
    assert_eq!(
        error_of(
            "DestinationRule",
            "host: r\ntrafficPolicy:\n  loadBalancer: {consistentHash: {httpCookie: {ttl: 1s}}}"
        ),
        "spec.trafficPolicy.loadBalancer.consistentHash.httpCookie.name: name required for HttpCookie"
    );
    assert_eq!(
        error_of(
            "DestinationRule",
            "host: r\ntrafficPolicy:\n  loadBalancer: {consistentHash: {maglev: {tableSize: 1000}}}"
        ),
        "spec.trafficPolicy.loadBalancer.consistentHash.maglev.tableSize: tableSize must be a prime number for maglev"
    );
    assert_eq!(
        error_of(
            "DestinationRule",
            "host: r\ntrafficPolicy:\n  loadBalancer: {simple: ROUND_ROBIN, consistentHash: {useSourceIp: true}}"
        ),
        "spec.trafficPolicy.loadBalancer: only one of simple or consistentHash may be set"
    );
    assert_eq!(
        error_of(
            "DestinationRule",
            "host: r\ntrafficPolicy:\n  portLevelSettings:\n  - port: {number: 80}"
        ),
        "spec.trafficPolicy.portLevelSettings[0]: port traffic policy must have at least one field"
    );
    assert_eq!(
        error_of(
            "DestinationRule",
            "host: r\ntrafficPolicy:\n  tls: {mode: MUTUAL, privateKey: /k.pem}"
        ),
        "spec.trafficPolicy.tls: client certificate required for mutual tls"
    );
    assert_eq!(
        error_of(
            "DestinationRule",
            "host: r\ntrafficPolicy:\n  tls: {mode: SIMPLE, credentialName: c, caCertificates: /ca.pem}"
        ),
        "spec.trafficPolicy.tls: cannot specify client certificates or CA certificate or CA CRL If credentialName is set"
    );
    assert_eq!(
        error_of(
            "DestinationRule",
            "host: r\ntrafficPolicy:\n  tunnel: {protocol: GET, targetHost: a.com, targetPort: 443}"
        ),
        "spec.trafficPolicy.tunnel.protocol: tunnel protocol must be \"CONNECT\" or \"POST\""
    );
    assert_eq!(
        error_of(
            "DestinationRule",
            "host: r\nworkloadSelector: {matchLabels: {app: a}}\nexportTo: [\"*\"]"
        ),
        "spec.exportTo: destination rule with workload selector cannot have exportTo beyond current namespace"
    );
    assert_eq!(
        error_of(
            "DestinationRule",
            "host: r\ntrafficPolicy:\n  loadBalancer:\n    localityLbSetting:\n      distribute:\n      - from: a/*\n        to: {b/*: 60, c/*: 30}"
        ),
        "spec.trafficPolicy.loadBalancer.localityLbSetting.distribute[0].to: total weight 90 != 100"
    );
}

#[test]
fn gateways() {
    assert_eq!(
        error_of("Gateway", "servers: []"),
        "spec.servers: gateway must have at least one server"
    );
    assert_eq!(
        error_of(
            "Gateway",
            "servers:\n- port: {number: 80, name: http, protocol: HTTP}"
        ),
        "spec.servers[0].hosts: server config must contain at least one host"
    );
    assert_eq!(
        error_of(
            "Gateway",
            "servers:\n- port: {number: 80, name: http, protocol: HTTPX}\n  hosts: [a.com]"
        ),
        "spec.servers[0].port.protocol: invalid protocol \"HTTPX\", supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP"
    );
    assert_eq!(
        error_of(
            "Gateway",
            "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [a.com]"
        ),
        "spec.servers[0]: server must have TLS settings for HTTPS/TLS protocols"
    );
    assert_eq!(
        error_of(
            "Gateway",
            "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [a.com]\n  tls: {mode: SIMPLE, privateKey: /k}"
        ),
        "spec.servers[0].tls: SIMPLE TLS requires a server certificate"
    );
    assert_eq!(
        error_of(
            "Gateway",
            "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [a.com]\n  tls: {mode: MUTUAL, serverCertificate: /c, privateKey: /k}"
        ),
        "spec.servers[0].tls: MUTUAL TLS requires a client CA bundle"
    );
    assert_eq!(
        error_of(
            "Gateway",
            "servers:\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [a.com]\n  tls: {mode: ISTIO_MUTUAL, credentialName: c}"
        ),
        "spec.servers[0].tls: ISTIO_MUTUAL TLS cannot have associated credentialName"
    );
    assert_eq!(
        error_of(
            "Gateway",
            "servers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [\"Bad_NS/a.com\"]"
        ),
        "spec.servers[0].hosts[0]: invalid namespace value \"Bad_NS\" in gateway"
    );
    assert_eq!(
        error_of(
            "Gateway",
            "servers:\n- port: {number: 80, protocol: HTTP}\n  hosts: [a.com]"
        ),
        "spec.servers[0].port.name: port name must be set"
    );
    assert_eq!(
        error_of(
            "Gateway",
            "servers:\n- port: {number: 80, name: p, protocol: HTTP}\n  hosts: [a.com]\n- port: {number: 81, name: p, protocol: HTTP}\n  hosts: [b.com]"
        ),
        "spec.servers[1].port.name: port names in servers must be unique: duplicate name p"
    );
    assert_eq!(
        error_of(
            "Gateway",
            "servers:\n- port: {number: 80, name: p, protocol: HTTP}\n  hosts: [a.com]\n  bind: not-an-ip"
        ),
        "spec.servers[0].bind: not-an-ip is not a valid IP"
    );
    valid(
        "Gateway",
        "selector: {istio: ingressgateway}\nservers:\n- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [\"*\"]\n  tls: {httpsRedirect: true}\n- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [ns/a.com]\n  tls: {mode: SIMPLE, credentialName: a-cert}",
    );
    let yaml = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: my.gw\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: [a.com]\n";
    assert_eq!(
        findings(yaml),
        vec!["4:9: metadata.name: invalid gateway name: \"my.gw\"".to_string()]
    );
}

#[test]
fn service_entries() {
    assert_eq!(
        error_of("ServiceEntry", "hosts: []\nresolution: NONE"),
        "spec.hosts: service entry must have at least one host"
    );
    assert_eq!(
        error_of("ServiceEntry", "hosts: [\"*\"]"),
        "spec.hosts[0]: invalid host *"
    );
    assert_eq!(
        error_of(
            "ServiceEntry",
            "hosts: [a.com]\naddresses: [10.0.0.0/8]\nresolution: DNS\nports: [{number: 80, name: http, protocol: HTTP}]"
        ),
        "spec.addresses: CIDR addresses are allowed only for NONE/STATIC resolution types"
    );
    assert_eq!(
        error_of(
            "ServiceEntry",
            "hosts: [a.com]\nports: [{number: 80, name: http, protocol: HTTP}, {number: 80, name: h2, protocol: HTTP}]"
        ),
        "spec.ports[1].number: service entry port 80 already defined"
    );
    assert_eq!(
        error_of(
            "ServiceEntry",
            "hosts: [a.com]\nports: [{number: 80, name: http, protocol: HTTPZ}]"
        ),
        "spec.ports[0].protocol: unrecognized protocol \"HTTPZ\""
    );
    assert_eq!(
        error_of(
            "ServiceEntry",
            "hosts: [a.com]\nports: [{number: 80, name: http, protocol: HTTP}]\nendpoints: [{address: 1.1.1.1}]"
        ),
        "spec.endpoints: no endpoints should be provided for resolution type none"
    );
    assert_eq!(
        error_of(
            "ServiceEntry",
            "hosts: [a.com]\nresolution: STATIC\nports: [{number: 80, name: http, protocol: HTTP}]\nendpoints: [{address: a.com}]"
        ),
        "spec.endpoints[0].address: endpoint address \"a.com\" is not a valid IP address"
    );
    assert_eq!(
        error_of(
            "ServiceEntry",
            "hosts: [a.com]\nresolution: STATIC\nports: [{number: 80, name: http, protocol: HTTP}]\nendpoints: [{address: 1.1.1.1, ports: {grpc: 9000}}]"
        ),
        "spec.endpoints[0].ports[grpc]: endpoint port 9000 is not defined by the service entry"
    );
    assert_eq!(
        error_of(
            "ServiceEntry",
            "hosts: [\"*.a.com\"]\nresolution: DNS\nports: [{number: 80, name: http, protocol: HTTP}]"
        ),
        "spec.hosts[0]: hosts must be FQDN if no endpoints are provided for resolution mode DNS"
    );
    assert_eq!(
        error_of(
            "ServiceEntry",
            "hosts: [a.com]\nresolution: DNS_ROUND_ROBIN\nports: [{number: 80, name: http, protocol: HTTP}]\nendpoints: [{address: b.com}, {address: c.com}]"
        ),
        "spec.endpoints: there must only be 0 or 1 endpoint for resolution mode DNS_ROUND_ROBIN"
    );
    assert_eq!(
        error_of(
            "ServiceEntry",
            "hosts: [a.com]\nresolution: STATIC\nworkloadSelector: {labels: {app: a}}\nendpoints: [{address: 1.1.1.1}]"
        ),
        "spec: only one of WorkloadSelector or Endpoints is allowed in Service Entry"
    );
}

#[test]
fn sidecars() {
    assert_eq!(
        error_of("Sidecar", "{}"),
        "spec: sidecar: empty configuration provided"
    );
    assert_eq!(
        error_of("Sidecar", "egress:\n- hosts: [\"reviews\"]"),
        "spec.egress[0].hosts[0]: host must be of form namespace/dnsName"
    );
    assert_eq!(
        error_of("Sidecar", "egress:\n- hosts: [\"Bad/*\"]"),
        "spec.egress[0].hosts[0]: invalid namespace value \"Bad\" in sidecar"
    );
    assert_eq!(
        error_of("Sidecar", "egress:\n- hosts: []"),
        "spec.egress[0].hosts: sidecar: egress listener must contain at least one host"
    );
    assert_eq!(
        error_of(
            "Sidecar",
            "egress:\n- hosts: [\"./*\"]\n- port: {number: 80, protocol: HTTP, name: h}\n  hosts: [\"./*\"]"
        ),
        "spec.egress[0]: sidecar: the egress listener with empty port should be the last listener in the list"
    );
    assert_eq!(
        error_of("Sidecar", "ingress:\n- defaultEndpoint: 127.0.0.1:8080"),
        "spec.ingress[0].port: sidecar: port is required for ingress listeners"
    );
    assert_eq!(
        error_of(
            "Sidecar",
            "ingress:\n- port: {number: 80, protocol: HTTP, name: h}\n  defaultEndpoint: 10.0.0.1:8080"
        ),
        "spec.ingress[0].defaultEndpoint: sidecar: defaultEndpoint must be of form 127.0.0.1:<port>,0.0.0.0:<port>,[::1]:port,[::]:port,unix://filepath or unset"
    );
    assert_eq!(
        error_of(
            "Sidecar",
            "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n  egressProxy: {host: proxy.com, port: {number: 3128}}"
        ),
        "spec.outboundTrafficPolicy.egressProxy: sidecar: egress_proxy must be set only with ALLOW_ANY outbound_traffic_policy mode"
    );
    valid(
        "Sidecar",
        "egress:\n- hosts: [\"./*\", \"istio-system/*\", \"~prod/*\"]\noutboundTrafficPolicy: {mode: REGISTRY_ONLY}",
    );
}

#[test]
fn workload_entries_and_groups() {
    assert_eq!(
        error_of("WorkloadEntry", "labels: {app: a}"),
        "spec.address: address is required"
    );
    assert_eq!(
        error_of("WorkloadEntry", "address: unix://relative"),
        "spec.address: relative is not an absolute path to a file"
    );
    assert_eq!(
        error_of("WorkloadEntry", "address: 1.2.3.4\nports: {http: 0}"),
        "spec.ports[http]: port number 0 must be in the range 1..65535"
    );
    assert_eq!(
        error_of("WorkloadGroup", "metadata: {labels: {app: a}}"),
        "spec.template: template is required"
    );
    assert_eq!(
        error_of(
            "WorkloadGroup",
            "template: {}\nprobe: {periodSeconds: -1, httpGet: {port: 80}}"
        ),
        "spec.probe.periodSeconds: periodSeconds must be non-negative"
    );
    valid(
        "WorkloadEntry",
        "address: 127.0.0.21\nlabels: {app: echo}\nserviceAccount: echo\nports: {http: 8080}",
    );
}

#[test]
fn peer_authentication() {
    assert_eq!(
        error_of(
            "PeerAuthentication",
            "mtls: {mode: STRICT}\nportLevelMtls:\n  \"8080\": {mode: DISABLE}"
        ),
        "spec.portLevelMtls: mesh/namespace peer authentication cannot have port level mTLS"
    );
    assert_eq!(
        error_of(
            "PeerAuthentication",
            "selector: {matchLabels: {app: a}}\nportLevelMtls:\n  \"0\": {mode: DISABLE}"
        ),
        "spec.portLevelMtls[0]: port must be in range 1..65535"
    );
    assert_eq!(
        error_of("PeerAuthentication", "mtls: {mode: STRICTER}"),
        "spec.mtls.mode: unknown value `STRICTER`, expected one of: UNSET, DISABLE, PERMISSIVE, STRICT"
    );
    assert_eq!(
        error_of(
            "PeerAuthentication",
            "selector: {matchLabels: {app: \"*\"}}"
        ),
        "spec.selector.matchLabels[app]: wildcard is not supported in selector: \"app=*\""
    );
    assert_eq!(
        warnings_of("PeerAuthentication", "selector: {}\nmtls: {mode: STRICT}"),
        vec!["spec.selector: warning: workload selector specified without labels".to_string()]
    );
}

#[test]
fn authorization_policy() {
    assert_eq!(
        error_of("AuthorizationPolicy", "action: DENY"),
        "spec.rules: DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request"
    );
    assert_eq!(
        error_of("AuthorizationPolicy", "action: CUSTOM\nrules: [{}]"),
        "spec.provider.name: `provider.name` must not be empty"
    );
    assert_eq!(
        error_of(
            "AuthorizationPolicy",
            "action: ALLOW\nprovider: {name: p}\nrules: [{}]"
        ),
        "spec.provider: `provider` must not be with non CUSTOM action, found ALLOW"
    );
    assert_eq!(
        error_of("AuthorizationPolicy", "rules:\n- from:\n  - source: {}"),
        "spec.rules[0].from[0].source: `from.source` must not be empty, found at rule 0"
    );
    assert_eq!(
        error_of("AuthorizationPolicy", "rules:\n- to:\n  - operation: {}"),
        "spec.rules[0].to[0].operation: `to.operation` must not be empty, found at rule 0"
    );
    assert_eq!(
        error_of(
            "AuthorizationPolicy",
            "rules:\n- from:\n  - source: {principals: [\"\"]}"
        ),
        "spec.rules[0].from[0].source.principals[0]: empty value not allowed, found in Principals"
    );
    assert_eq!(
        error_of(
            "AuthorizationPolicy",
            "rules:\n- from:\n  - source: {ipBlocks: [10.0.0.300]}"
        ),
        "spec.rules[0].from[0].source.ipBlocks[0]: bad IP address (10.0.0.300)"
    );
    assert_eq!(
        error_of(
            "AuthorizationPolicy",
            "rules:\n- from:\n  - source: {remoteIpBlocks: [10.0.0.0/40]}"
        ),
        "spec.rules[0].from[0].source.remoteIpBlocks[0]: bad CIDR range (10.0.0.0/40)"
    );
    assert_eq!(
        error_of(
            "AuthorizationPolicy",
            "rules:\n- to:\n  - operation: {ports: [\"http\"]}"
        ),
        "spec.rules[0].to[0].operation.ports[0]: bad port (http)"
    );
    assert_eq!(
        error_of(
            "AuthorizationPolicy",
            "rules:\n- to:\n  - operation: {paths: [\"/a/{**}/b/{*}\"]}"
        ),
        "spec.rules[0].to[0].operation.paths[0]: invalid or unsupported path a/{**}/b/{*}, found in Paths. {**} is not the last operator"
    );
    assert_eq!(
        error_of(
            "AuthorizationPolicy",
            "rules:\n- to:\n  - operation: {paths: [\"/a/{id}\"]}"
        ),
        "spec.rules[0].to[0].operation.paths[0]: invalid or unsupported path a/{id}, found in Paths. Contains '{' or '}' beyond a supported path template"
    );
    assert_eq!(
        error_of(
            "AuthorizationPolicy",
            "rules:\n- when:\n  - key: request.headers[x-a]"
        ),
        "spec.rules[0].when[0]: at least one of `values` or `notValues` must be set for key request.headers[x-a]"
    );
    assert_eq!(
        error_of(
            "AuthorizationPolicy",
            "rules:\n- when:\n  - key: request.colour\n    values: [red]"
        ),
        "spec.rules[0].when[0].values: invalid `value` for `key` request.colour: unknown attribute: request.colour"
    );
    assert_eq!(
        error_of(
            "AuthorizationPolicy",
            "rules:\n- when:\n  - key: request.headers[]\n    values: [a]"
        ),
        "spec.rules[0].when[0].values: invalid `value` for `key` request.headers[]: invalid key: request.headers[]"
    );
    assert_eq!(
        error_of(
            "AuthorizationPolicy",
            "rules:\n- when:\n  - key: source.ip\n    notValues: [nope]"
        ),
        "spec.rules[0].when[0].notValues: invalid `notValue` for `key` source.ip: bad IP address (nope)"
    );
    assert_eq!(
        error_of(
            "AuthorizationPolicy",
            "rules:\n- when:\n  - key: destination.port\n    values: [\"99999\"]"
        ),
        "spec.rules[0].when[0].values: invalid `value` for `key` destination.port: bad port (99999)"
    );
    assert_eq!(
        error_of(
            "AuthorizationPolicy",
            "selector: {matchLabels: {app: a}}\ntargetRef: {kind: Service, name: a}"
        ),
        "spec: only one of targetRefs or workloadSelector can be set"
    );
    assert_eq!(
        error_of(
            "AuthorizationPolicy",
            "targetRefs:\n- {kind: Deployment, name: a}"
        ),
        "spec.targetRefs[0]: targetRef must be to one of core/Service, networking.istio.io/ServiceEntry, gateway.networking.k8s.io/Gateway but was /Deployment"
    );
    assert_eq!(
        error_of(
            "AuthorizationPolicy",
            "action: CUSTOM\nprovider: {name: ext}\nrules:\n- from:\n  - source: {principals: [a]}"
        ),
        "spec.rules[0].from[0]: From.Principals is currently not supported with CUSTOM action"
    );
    assert_eq!(warnings_of("AuthorizationPolicy", "action: DENY\nrules:\n- to:\n  - operation: {methods: [POST]}"), vec!["spec.rules[0]: warning: configured AuthorizationPolicy will deny all traffic to TCP ports under its scope due to the use of only HTTP attributes in a DENY rule; it is recommended to explicitly specify the port".to_string()]);
    valid("AuthorizationPolicy", "{}");
    valid(
        "AuthorizationPolicy",
        "rules:\n- from:\n  - source: {principals: [\"cluster.local/ns/default/sa/a\"], notNamespaces: [x]}\n  to:\n  - operation: {hosts: [\"a.com:*\"], methods: [GET], paths: [\"/api/{*}/x/{**}\", \"*/suffix\", \"/prefix*\"]}\n  when:\n  - key: request.auth.claims[iss]\n    values: [\"https://a\"]\n  - key: remote.ip\n    values: [10.0.0.0/8]",
    );
}

#[test]
fn dry_run_annotation() {
    let yaml = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: x\n  annotations:\n    istio.io/dry-run: maybe\nspec: {}\n";
    assert_eq!(findings(yaml), vec!["6:23: metadata.annotations[istio.io/dry-run]: default/x has annotation istio.io/dry-run with invalid value (maybe)".to_string()]);
    let yaml = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: x\n  annotations:\n    istio.io/dry-run: \"true\"\nspec:\n  outboundTrafficPolicy: {mode: REGISTRY_ONLY}\n";
    assert_eq!(findings(yaml), vec!["6:23: metadata.annotations[istio.io/dry-run]: default/x has unsupported annotation istio.io/dry-run, please remove the annotation".to_string()]);
}

#[test]
fn request_authentication() {
    assert_eq!(
        error_of(
            "RequestAuthentication",
            "jwtRules:\n- jwksUri: https://a/jwks"
        ),
        "spec.jwtRules[0].issuer: issuer must be set"
    );
    assert_eq!(
        error_of(
            "RequestAuthentication",
            "jwtRules:\n- issuer: a\n  jwksUri: https://a/jwks\n  jwks: '{\"keys\": []}'"
        ),
        "spec.jwtRules[0]: only one of jwks or jwksUri can be set"
    );
    assert_eq!(
        error_of(
            "RequestAuthentication",
            "jwtRules:\n- issuer: a\n  jwksUri: ftp://a/jwks"
        ),
        "spec.jwtRules[0].jwksUri: jwksUri \"ftp://a/jwks\": scheme must be http or https"
    );
    assert_eq!(
        error_of(
            "RequestAuthentication",
            "jwtRules:\n- issuer: a\n  jwks: '{not json'"
        ),
        "spec.jwtRules[0].jwks: jwks parse error: key must be a string at line 1 column 2"
    );
    assert_eq!(
        error_of(
            "RequestAuthentication",
            "jwtRules:\n- issuer: a\n  fromHeaders: [{prefix: \"Bearer \"}]"
        ),
        "spec.jwtRules[0].fromHeaders[0].name: location header name must be non-empty string"
    );
    assert_eq!(
        error_of(
            "RequestAuthentication",
            "jwtRules:\n- issuer: a\n  outputClaimToHeaders: [{header: \"x a\", claim: sub}]"
        ),
        "spec.jwtRules[0].outputClaimToHeaders[0].header: header name x a is not a valid header name"
    );
    valid(
        "RequestAuthentication",
        "selector: {matchLabels: {app: a}}\njwtRules:\n- issuer: \"testing@secure.istio.io\"\n  jwksUri: \"https://raw.githubusercontent.com/istio/istio/master/security/tools/jwt/samples/jwks.json\"\n  forwardOriginalToken: true",
    );
}

#[test]
fn telemetry() {
    assert_eq!(
        error_of("Telemetry", "tracing:\n- randomSamplingPercentage: 101"),
        "spec.tracing[0].randomSamplingPercentage: randomSamplingPercentage must be in range [0.0, 100.0]"
    );
    assert_eq!(
        error_of(
            "Telemetry",
            "tracing:\n- providers: [{name: a}]\n- providers: [{name: b}]"
        ),
        "spec.tracing: multiple tracing is not currently supported"
    );
    assert_eq!(
        error_of(
            "Telemetry",
            "metrics:\n- overrides:\n  - tagOverrides:\n      request_host: {operation: UPSERT}"
        ),
        "spec.metrics[0].overrides[0].tagOverrides[request_host]: must set value when operation is UPSERT"
    );
    assert_eq!(
        error_of("Telemetry", "tracing:\n- customTags:\n    a: {}"),
        "spec.tracing[0].customTags[a]: tag \"a\" has no value: set literal, environment, header or formatter"
    );
    valid(
        "Telemetry",
        "accessLogging:\n- providers: [{name: envoy}]\n  filter: {expression: \"response.code >= 400\"}",
    );
}

#[test]
fn envoy_filters_are_loaded_but_reported_unsupported() {
    assert_eq!(
        warnings_of(
            "EnvoyFilter",
            "configPatches:\n- applyTo: HTTP_FILTER\n  patch: {operation: INSERT_BEFORE, value: {name: x}}"
        ),
        vec![
            "spec: warning: weft does not run Envoy: this EnvoyFilter is loaded but has no effect (weft applies only the local rate limit of Istio's rate-limit task; here configPatches[0]: the HTTP filter is x, not envoy.filters.http.local_ratelimit); see weft's RateLimit resource"
                .to_string()
        ]
    );
    let unsupported = |patches: &str| {
        let w = warnings_of("EnvoyFilter", patches);
        assert_eq!(w.len(), 1, "{w:?}");
        w[0].clone()
    };
    assert!(
        unsupported(
            "configPatches:\n- applyTo: VIRTUAL_HOST\n  patch: {operation: MERGE, value: {}}"
        )
        .contains("applyTo VIRTUAL_HOST with operation MERGE is not a local rate limit")
    );
    // The local rate limit, as Istio's task writes it, applies.
    let local = "configPatches:\n- applyTo: HTTP_FILTER\n  match: {context: SIDECAR_INBOUND}\n  patch:\n    operation: INSERT_BEFORE\n    value:\n      name: envoy.filters.http.local_ratelimit\n      typed_config:\n        '@type': type.googleapis.com/udpa.type.v1.TypedStruct\n        type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit\n        value:\n          stat_prefix: x\n          token_bucket: {max_tokens: 4, tokens_per_fill: 4, fill_interval: 60s}\n          filter_enabled: {runtime_key: a, default_value: {numerator: 100, denominator: HUNDRED}}\n          filter_enforced: {runtime_key: b, default_value: {numerator: 50, denominator: HUNDRED}}";
    assert!(warnings_of("EnvoyFilter", local).is_empty());
    // Its fields weft cannot honour are named.
    assert!(
        unsupported(&format!("{local}\n          descriptors: []"))
            .contains("LocalRateLimit field descriptors is not supported")
    );
    assert!(
        unsupported(&local.replace("fill_interval: 60s", "fill_interval: 10ms"))
            .contains("at least 50ms")
    );
    assert_eq!(
        error_of("EnvoyFilter", "configPatches:\n- patch: {operation: MERGE}"),
        "spec.configPatches[0].applyTo: Envoy filter: missing applyTo"
    );
    assert_eq!(
        error_of(
            "EnvoyFilter",
            "configPatches:\n- applyTo: CLUSTER\n  match: {cluster: {portNumbr: 80}}\n  patch: {operation: MERGE}"
        ),
        "spec.configPatches[0].match.cluster.portNumbr: unknown field `portNumbr` (did you mean `portNumber`?)"
    );
}

#[test]
fn rate_limits() {
    valid(
        "RateLimit",
        "selector: {matchLabels: {istio: egressgateway}}\nlimits:\n- {hosts: [books.example.com], by: source.principal, requests: 10, per: 1s, burst: 20, shared: {redis: 127.0.0.1:6379}}\n- {route: api, by: 'request.headers[x-user]', requests: 1, per: 1m}",
    );
    assert_eq!(
        error_of("RateLimit", "limits: []"),
        "spec.limits: at least one limit is required"
    );
    assert_eq!(
        error_of("RateLimit", "limits: [{requests: 1}]"),
        "spec.limits[0].per: per is required (e.g. 1s, 1m)"
    );
    assert_eq!(
        error_of("RateLimit", "limits: [{requests: 0, per: 1s}]"),
        "spec.limits[0].requests: requests must be at least 1"
    );
    assert_eq!(
        error_of("RateLimit", "limits: [{requests: 1, per: 1s, by: client}]"),
        "spec.limits[0].by: unknown key \"client\": use remote.address, source.principal or request.headers[NAME]"
    );
    assert_eq!(
        error_of(
            "RateLimit",
            "limits: [{requests: 1, per: 1s, shared: {redis: localhost}}]"
        ),
        "spec.limits[0].shared.redis: \"localhost\" is not HOST:PORT"
    );
    assert_eq!(
        error_of("RateLimit", "limits: [{requests: 1, per: 1s, rate: 2}]"),
        "spec.limits[0].rate: unknown field `rate` (did you mean `route`?)"
    );
}

#[test]
fn gateway_api_shape() {
    assert_eq!(
        error_of(
            "KubeGateway",
            "gatewayClassName: istio\nlisteners:\n- {name: http, port: 80}"
        ),
        "spec.listeners[0].protocol: protocol is required"
    );
    assert_eq!(
        error_of(
            "HTTPRoute",
            "parentRefs: [{name: gw}]\nrules:\n- matches: [{path: {type: RegularExpression, value: \"(\"}}]"
        ),
        "spec.rules[0].matches[0].path.value: \"path\": error parsing regexp: missing closing ): `(`; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
    );
    assert_eq!(
        error_of(
            "TCPRoute",
            "hostnames: [a.com]\nrules: [{backendRefs: [{name: a, port: 80}]}]"
        ),
        "spec.hostnames: unknown field `hostnames`: TCPRoute has no hostnames"
    );
    assert_eq!(
        error_of(
            "ReferenceGrant",
            "from: [{group: \"\", kind: HTTPRoute, namespace: a}]"
        ),
        "spec.to: at least one `to` is required"
    );
}

#[test]
fn resource_names_and_labels() {
    let yaml = "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: Bad_Name\n  labels: {\"app\": \"has space\"}\nspec:\n  outboundTrafficPolicy: {mode: ALLOW_ANY}\n";
    assert_eq!(
        findings(yaml),
        vec![
            "4:9: metadata.name: invalid name \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".to_string(),
            "5:19: metadata.labels[app]: invalid tag value: \"has space\"".to_string(),
        ]
    );
}

#[test]
fn mesh_config_rules() {
    let text = "extensionProviders:\n- name: a\n  envoyExtAuthzHttp: {service: ext.default.svc.cluster.local}\n- name: a\n  zipkin: {service: z, port: 9411}\n  opentelemetry: {service: o, port: 4317}\n";
    let mesh = crate::load_mesh_config("mesh.yaml", text).unwrap();
    let msgs: Vec<String> = super::validate_mesh(&mesh)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        msgs,
        vec![
            "mesh.yaml:3:22: MeshConfig: extensionProviders[0].envoyExtAuthzHttp.port: port must be set",
            "mesh.yaml:4:9: MeshConfig: extensionProviders[1].name: duplicate extension provider name a",
            "mesh.yaml:4:3: MeshConfig: extensionProviders[1]: extension provider may set only one provider kind, found zipkin, opentelemetry",
        ]
    );
    // Inside the `istio` ConfigMap, findings point into the ConfigMap.
    let indented: String = text.lines().map(|l| format!("    {l}\n")).collect();
    let cm = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: istio, namespace: istio-system}}\ndata:\n  mesh: |\n{indented}"
    );
    let mesh = crate::load_mesh_config("cm.yaml", &cm).unwrap();
    let first = super::validate_mesh(&mesh)[0].to_string();
    assert_eq!(
        first,
        "cm.yaml:8:26: MeshConfig: extensionProviders[0].envoyExtAuthzHttp.port: port must be set"
    );
}

#[test]
fn regex_errors_read_as_gos() {
    for (re, go) in [
        ("[A-Z", "error parsing regexp: missing closing ]: `[A-Z`"),
        ("x[a-", "error parsing regexp: missing closing ]: `[a-`"),
        ("(abc", "error parsing regexp: missing closing ): `(abc`"),
        ("abc)", "error parsing regexp: unexpected ): `abc)`"),
        (
            "*a",
            "error parsing regexp: missing argument to repetition operator: `*`",
        ),
        (
            "a\\q",
            "error parsing regexp: invalid escape sequence: `\\q`",
        ),
        (
            "(a)\\1",
            "error parsing regexp: invalid escape sequence: `\\1`",
        ),
        (
            "[z-a]",
            "error parsing regexp: invalid character class range: `z-a`",
        ),
        (
            "(?=x)",
            "error parsing regexp: invalid or unsupported Perl syntax: `(?=`",
        ),
        (
            "a{5,2}",
            "error parsing regexp: invalid repeat count: `{5,2}`",
        ),
        (
            "a\\",
            "error parsing regexp: trailing backslash at end of expression: ``",
        ),
    ] {
        assert_eq!(super::regex_error(re).as_deref(), Some(go), "{re}");
    }
    assert_eq!(super::regex_error("^/api/v[0-9]+/.*$"), None);
}

#[test]
fn label_selectors_match_as_kubernetes_evaluates_them() {
    use crate::types::gateway_api::{LabelSelector, LabelSelectorRequirement};
    let labels: crate::types::common::Labels = [("env", "prod"), ("team", "shop")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let req = |key: &str, operator: &str, values: &[&str]| LabelSelectorRequirement {
        key: key.into(),
        operator: operator.into(),
        values: values.iter().map(|v| v.to_string()).collect(),
    };
    let selector = |exprs: Vec<LabelSelectorRequirement>| LabelSelector {
        match_labels: [("team".to_string(), "shop".to_string())].into(),
        match_expressions: exprs,
    };
    assert!(selector(vec![]).matches(&labels));
    assert!(selector(vec![req("env", "In", &["prod", "stage"])]).matches(&labels));
    assert!(!selector(vec![req("env", "NotIn", &["prod"])]).matches(&labels));
    assert!(selector(vec![req("tier", "NotIn", &["web"])]).matches(&labels));
    assert!(selector(vec![req("env", "Exists", &[])]).matches(&labels));
    assert!(!selector(vec![req("env", "DoesNotExist", &[])]).matches(&labels));
    assert!(!selector(vec![req("env", "Matches", &["prod"])]).matches(&labels));
    assert!(
        !LabelSelector {
            match_labels: [("team".to_string(), "web".to_string())].into(),
            match_expressions: vec![],
        }
        .matches(&labels)
    );
}
