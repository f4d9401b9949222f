use super::*;

fn run(yaml: &str) -> Vec<Message> {
    let mut l = weft_api::Loaded::default();
    l.add_text("mesh.yaml", yaml);
    assert_eq!(l.errors(), 0, "{:?}", l.diagnostics);
    analyze(&l.resources)
}

fn codes(found: &[Message]) -> Vec<(&str, Level, &str, &str)> {
    found
        .iter()
        .map(|m| (m.code, m.level, m.origin.as_str(), m.message.as_str()))
        .collect()
}

const REVIEWS: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets: [{name: v1, labels: {version: v1}}]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: shop, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: apis, namespace: default}
spec:
  hosts: ["*.googleapis.com"]
  location: MESH_EXTERNAL
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: NONE
"#;

#[test]
fn referenced_gateways_hosts_and_subsets_must_exist() {
    let ok = run(&format!(
        r#"{REVIEWS}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  gateways: [mesh, shop, default/shop]
  http:
  - route: [{{destination: {{host: reviews, subset: v1}}}}]
  - route: [{{destination: {{host: reviews.default.svc.cluster.local}}}}]
  tls:
  - match: [{{sniHosts: [storage.googleapis.com]}}]
    route: [{{destination: {{host: storage.googleapis.com}}}}]
"#
    ));
    assert_eq!(codes(&ok), vec![]);

    let bad = run(&format!(
        r#"{REVIEWS}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews, namespace: default}}
spec:
  hosts: [reviews]
  gateways: [httpbin-gateway-bogus, other/shop]
  http:
  - route: [{{destination: {{host: reviews, subset: v4}}}}]
  - route: [{{destination: {{host: ratings}}}}]
"#
    ));
    let origin = "VirtualService default/reviews";
    assert_eq!(
        codes(&bad),
        vec![
            (
                "IST0101",
                Level::Error,
                origin,
                r#"Referenced gateway not found: "httpbin-gateway-bogus""#
            ),
            (
                "IST0101",
                Level::Error,
                origin,
                r#"Referenced gateway not found: "other/shop""#
            ),
            (
                "IST0101",
                Level::Error,
                origin,
                r#"Referenced host+subset in destinationrule not found: "reviews+v4""#
            ),
            (
                "IST0101",
                Level::Error,
                origin,
                r#"Referenced host not found: "ratings""#
            ),
        ]
    );
    assert_eq!(
        bad[0].to_string(),
        r#"Error [IST0101] (VirtualService default/reviews mesh.yaml:30) Referenced gateway not found: "httpbin-gateway-bogus""#
    );
    assert_eq!(
        bad[0].documentation_url,
        "https://istio.io/latest/docs/reference/config/analysis/ist0101/"
    );
}

#[test]
fn tls_origination_without_ca_certificates_is_unverified() {
    let dr = |tls: &str| {
        run(&format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: ext, namespace: shop}}\nspec: {{host: api.example.com, trafficPolicy: {{tls: {tls}}}}}\n"
        ))
    };
    assert_eq!(
        codes(&dr("{mode: SIMPLE}")),
        vec![(
            "IST0128",
            Level::Warning,
            "DestinationRule shop/ext",
            "DestinationRule ext in namespace shop has TLS mode set to SIMPLE but no caCertificates are set to validate server identity for host: api.example.com"
        )]
    );
    assert!(dr("{mode: SIMPLE, caCertificates: /etc/ca.pem}").is_empty());
    assert!(dr("{mode: MUTUAL, credentialName: client-credential}").is_empty());
    assert!(dr("{mode: ISTIO_MUTUAL}").is_empty());
}

#[test]
fn service_entries_serving_tcp_need_addresses() {
    let se = |ports: &str, addresses: &str| {
        run(&format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: db, namespace: shop}}\nspec: {{hosts: [db.example.com], {addresses} ports: [{ports}], resolution: DNS}}\n"
        ))
    };
    let found = se("{number: 5432, name: tcp, protocol: TCP}", "");
    assert_eq!(
        codes(&found),
        vec![(
            "IST0134",
            Level::Warning,
            "ServiceEntry shop/db",
            "ServiceEntry addresses are required for this protocol."
        )]
    );
    assert_eq!(se("{number: 5432, name: db, protocol: TCP}", "").len(), 1);
    assert!(
        se(
            "{number: 5432, name: tcp, protocol: TCP}",
            "addresses: [240.0.0.1],"
        )
        .is_empty()
    );
    assert!(se("{number: 443, name: https, protocol: HTTPS}", "").is_empty());
}

#[test]
fn two_namespace_wide_sidecars_conflict() {
    let sidecar = |name: &str, ns: &str, selector: &str| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{{selector} egress: [{{hosts: [\"./*\"]}}]}}\n"
        )
    };
    let found = run(&[
        sidecar("a", "shop", ""),
        sidecar("b", "shop", ""),
        sidecar("c", "shop", "workloadSelector: {labels: {app: x}},"),
        sidecar("d", "other", ""),
    ]
    .concat());
    let msg = r#"The Sidecars [shop/a shop/b] in namespace "shop" have no workload selector, which can lead to undefined behavior."#;
    assert_eq!(
        codes(&found),
        vec![
            ("IST0111", Level::Error, "Sidecar shop/a", msg),
            ("IST0111", Level::Error, "Sidecar shop/b", msg),
        ]
    );
}

fn vs(name: &str, ns: &str, rest: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{{rest}}}\n"
    )
}

#[test]
fn two_mesh_virtual_services_for_one_host_conflict() {
    let route = "http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]";
    let found = run(&[
        REVIEWS.to_string(),
        vs("a", "default", &format!("hosts: [reviews], {route}")),
        vs(
            "b",
            "default",
            &format!("hosts: [reviews.default.svc.cluster.local], {route}"),
        ),
        // Bound to a gateway only, or exported to its own namespace
        // elsewhere: no conflict.
        vs(
            "c",
            "default",
            &format!("hosts: [reviews], gateways: [shop], {route}"),
        ),
        vs(
            "d",
            "other",
            &format!("hosts: [reviews.default.svc.cluster.local], exportTo: [.], {route}"),
        ),
    ]
    .concat());
    let msg = "The VirtualServices default/a,default/b associated with mesh gateway define the same host reviews.default.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.";
    assert_eq!(
        codes(&found),
        vec![
            ("IST0109", Level::Error, "VirtualService default/a", msg),
            ("IST0109", Level::Error, "VirtualService default/b", msg),
        ]
    );
}

#[test]
fn hosts_a_bound_gateway_does_not_serve_are_reported() {
    let gateway = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: edge}
spec:
  selector: {istio: edge-gateway}
  servers:
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ["shop/*.example.com", "./status.example.org"]}
"#;
    let route = "http: [{route: [{destination: {host: reviews.default.svc.cluster.local}}]}]";
    let found = run(&[
        gateway.to_string(),
        "---".to_string(),
        REVIEWS.to_string(),
        vs(
            "ok",
            "shop",
            &format!(
                "hosts: [books.example.com, \"*.example.com\"], gateways: [edge/web], {route}"
            ),
        ),
        vs(
            "bad",
            "shop",
            &format!(
                "hosts: [books.example.org, status.example.org], gateways: [edge/web], {route}"
            ),
        ),
        vs(
            "edge",
            "edge",
            &format!("hosts: [status.example.org], gateways: [web], {route}"),
        ),
    ]
    .concat());
    assert_eq!(
        codes(&found),
        vec![(
            "IST0132",
            Level::Warning,
            "VirtualService shop/bad",
            "one or more host [books.example.org status.example.org] defined in VirtualService shop/bad not found in Gateway edge/web."
        )]
    );
}

fn readiness(yaml: &str) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut l = weft_api::Loaded::default();
    l.add_text("mesh.yaml", yaml);
    assert_eq!(l.errors(), 0, "{:?}", l.diagnostics);
    crate::readiness::readiness(&l.resources, "istio-system", None)
        .into_iter()
        .map(|row| (row.practice, row.findings.iter().map(|m| m.code).collect()))
        .collect()
}

fn codes_of(rows: &[(&'static str, Vec<&'static str>)]) -> Vec<&'static str> {
    rows.iter().flat_map(|(_, c)| c.clone()).collect()
}

#[test]
fn the_readiness_checklist_finds_each_gap_and_passes_a_good_mesh() {
    let good = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: istio-system}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/productpage]}}]}]
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews, namespace: shop}
spec: {address: 10.0.0.1, labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 443, name: https, protocol: HTTPS}, hosts: ["*"], tls: {mode: SIMPLE, credentialName: web}}
  - {port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"], tls: {httpsRedirect: true}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}], timeout: 2s, retries: {attempts: 2, perTryTimeout: 500ms}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  trafficPolicy: {connectionPool: {tcp: {maxConnections: 10}}, outlierDetection: {consecutive5xxErrors: 5}}
"#;
    let rows = readiness(good);
    assert_eq!(rows.len(), 5);
    assert!(codes_of(&rows).is_empty(), "{rows:?}");

    let bad = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: PERMISSIVE}, }
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: open, namespace: shop}
spec: {selector: {matchLabels: {app: reviews}}, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-others, namespace: shop}
spec: {action: DENY, rules: [{from: [{source: {notNamespaces: [shop]}}]}]}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews, namespace: shop}
spec: {address: 10.0.0.1, labels: {app: reviews}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http: [{route: [{destination: {host: reviews}}], retries: {attempts: 3}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec: {host: reviews, trafficPolicy: {tls: {mode: DISABLE}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: shop}
spec: {outboundTrafficPolicy: {mode: ALLOW_ANY}}
"#;
    let rows = readiness(bad);
    assert_eq!(
        rows,
        vec![
            ("mTLS everywhere (STRICT)", vec!["WEFT1001", "WEFT1002"]),
            (
                "least-privilege authorization",
                vec!["WEFT1103", "WEFT1104", "WEFT1101"]
            ),
            (
                "traffic enters through a gateway with TLS",
                vec!["WEFT1201", "WEFT1202"]
            ),
            (
                "timeouts, retries and circuit breaking",
                vec!["WEFT1301", "WEFT1302", "WEFT1303"]
            ),
            ("egress controlled (REGISTRY_ONLY)", vec!["WEFT1401"]),
        ]
    );
}

#[test]
fn service_ports_should_name_their_protocol() {
    let found = run(r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  selector: {app: web}
  ports:
  - {name: http-web, port: 80, targetPort: 8080}
  - {name: grpc, port: 9090}
  - {name: metrics, port: 9100, targetPort: metrics}
  - {name: stats, port: 9200, appProtocol: http}
  - {name: dns, port: 53, protocol: UDP}
  - {name: admin, port: 8081}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system}
spec: {ports: [{name: dns-tcp, port: 53}]}
"#);
    assert_eq!(
        codes(&found),
        vec![
            (
                "IST0118",
                Level::Info,
                "Service shop/web",
                "Port name metrics (port: 9100, targetPort: metrics) doesn't follow the naming convention of Istio port."
            ),
            (
                "IST0118",
                Level::Info,
                "Service shop/web",
                "Port name admin (port: 8081, targetPort: 8081) doesn't follow the naming convention of Istio port."
            ),
        ]
    );
}

#[test]
fn gateways_on_one_selector_and_port_must_not_share_hosts() {
    let gw = |name: &str, selector: &str, port: u32, hosts: &str| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: edge}}\nspec: {{selector: {{{selector}}}, servers: [{{port: {{number: {port}, name: http, protocol: HTTP}}, hosts: [{hosts}]}}]}}\n"
        )
    };
    let found = run(&[
        gw("a", "istio: ingressgateway", 80, "\"*.example.com\""),
        gw(
            "b",
            "istio: ingressgateway",
            80,
            "shop.example.com, shop.example.org",
        ),
        // Another port, another selector, or another host: no conflict.
        gw("c", "istio: ingressgateway", 443, "shop.example.com"),
        gw("d", "istio: other", 80, "shop.example.com"),
        gw("e", "istio: ingressgateway", 80, "status.example.net"),
    ]
    .concat());
    assert_eq!(
        codes(&found),
        vec![
            (
                "IST0145",
                Level::Error,
                "Gateway edge/a",
                "Conflict with gateways edge/b (workload selector istio=ingressgateway, port 80, hosts *.example.com)."
            ),
            (
                "IST0145",
                Level::Error,
                "Gateway edge/b",
                "Conflict with gateways edge/a (workload selector istio=ingressgateway, port 80, hosts shop.example.com,shop.example.org)."
            ),
        ]
    );
}

#[test]
fn namespaces_say_whether_sidecars_are_injected() {
    let ns = |name: &str, labels: &str| {
        format!(
            "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{{labels}}}}}\n"
        )
    };
    let found = run(&[
        ns("plain", ""),
        ns("on", "istio-injection: enabled"),
        ns("off", "istio-injection: disabled"),
        ns("canary", "istio.io/rev: canary"),
        ns("both", "istio-injection: enabled, istio.io/rev: canary"),
        ns("mesh", "istio.io/dataplane-mode: ambient"),
        ns("kube-system", ""),
    ]
    .concat());
    assert_eq!(
        codes(&found),
        vec![
            (
                "IST0102",
                Level::Info,
                "Namespace plain",
                "The namespace is not enabled for Istio injection. Run 'kubectl label namespace plain istio-injection=enabled' to enable it, or 'kubectl label namespace plain istio-injection=disabled' to explicitly mark it as not needing injection."
            ),
            (
                "IST0123",
                Level::Warning,
                "Namespace both",
                "The namespace has more than one type of injection labels [istio-injection istio.io/rev], which may lead to undefined behavior. Make sure only one injection label exists."
            ),
        ]
    );
}
