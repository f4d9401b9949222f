use super::*;

fn run(yaml: &str) -> Vec<Message> {
    let mut l = weft_api::Loaded::default();
    l.add_text("mesh.yaml", yaml);
    assert_eq!(l.errors(), 0, "{:?}", l.diagnostics);
    analyze(&l.resources)
}

/// `run`, with the gateway workloads the tests' Gateways select.
fn run_gw(yaml: &str) -> Vec<Message> {
    run(&format!(
        "{yaml}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: ingressgateway, namespace: istio-system}}\nspec: {{address: 10.9.0.1, labels: {{istio: ingressgateway}}}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: other-gateway, namespace: istio-system}}\nspec: {{address: 10.9.0.2, labels: {{istio: other}}}}\n---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: edge-gateway, namespace: edge}}\nspec: {{address: 10.9.0.3, labels: {{istio: edge-gateway}}}}\n"
    ))
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
kind: WorkloadEntry
metadata: {name: reviews-v1, namespace: default}
spec: {address: 10.1.0.1, labels: {app: reviews, version: v1}}
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
    let ok = run_gw(&format!(
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

    let bad = run_gw(&format!(
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
                "IST0132",
                Level::Warning,
                origin,
                "one or more host [reviews] defined in VirtualService default/reviews not found in Gateway default/httpbin-gateway-bogus."
            ),
            (
                "IST0132",
                Level::Warning,
                origin,
                "one or more host [reviews] defined in VirtualService default/reviews not found in Gateway other/shop."
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
        r#"Error [IST0101] (VirtualService default/reviews mesh.yaml:35) Referenced gateway not found: "httpbin-gateway-bogus""#
    );
    assert_eq!(
        bad[0].documentation_url,
        "https://istio.io/latest/docs/reference/config/analysis/ist0101/"
    );
}

/// The external API the TLS origination tests' DestinationRules are for.
const API: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: api, namespace: shop}\nspec: {hosts: [api.example.com], ports: [{number: 443, name: https, protocol: HTTPS}], resolution: DNS}\n";

#[test]
fn tls_origination_without_ca_certificates_is_unverified() {
    let dr = |tls: &str| {
        run(&format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: ext, namespace: shop}}\nspec: {{host: api.example.com, trafficPolicy: {{tls: {tls}}}}}\n---\n{API}"
        ))
    };
    assert_eq!(
        codes(&dr("{mode: SIMPLE}")),
        vec![(
            "IST0128",
            Level::Warning,
            "DestinationRule shop/ext",
            "DestinationRule shop/ext in namespace shop has TLS mode set to SIMPLE but no caCertificates are set to validate server identity for host: api.example.com"
        )]
    );
    // The same at one port: IST0129, naming the port as Istio prints it.
    assert_eq!(
        codes(&dr(
            "{mode: ISTIO_MUTUAL}, portLevelSettings: [{port: {number: 443}, tls: {mode: MUTUAL}}, {port: {number: 8443}, tls: {mode: SIMPLE, caCertificates: /ca.pem}}]"
        )),
        vec![(
            "IST0129",
            Level::Warning,
            "DestinationRule shop/ext",
            "DestinationRule shop/ext in namespace shop has TLS mode set to MUTUAL but no caCertificates are set to validate server identity for host: api.example.com at port number:443"
        )]
    );
    assert!(dr("{mode: SIMPLE, caCertificates: /etc/ca.pem}").is_empty());
    assert!(dr("{mode: ISTIO_MUTUAL}").is_empty());
    // A credentialName brings the CA only to the gateways a workloadSelector
    // picks; sidecars cannot read it. An explicit insecureSkipVerify is
    // still unverified.
    assert_eq!(
        dr("{mode: MUTUAL, credentialName: client-credential}").len(),
        1
    );
    assert_eq!(dr("{mode: SIMPLE, insecureSkipVerify: true}").len(), 1);
    assert!(
        run(&format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: ext, namespace: shop}}\nspec: {{host: api.example.com, workloadSelector: {{matchLabels: {{istio: egressgateway}}}}, trafficPolicy: {{tls: {{mode: MUTUAL, credentialName: client-credential}}}}}}\n---\n{API}"))
            .iter()
            .all(|m| m.code != "IST0128")
    );
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
    // An empty protocol is unset: IST0134, beside validation's IST0106.
    let found = se("{number: 5432, name: tcp, protocol: \"\"}", "");
    assert!(found.iter().any(|m| m.code == "IST0134"), "{found:?}");
    // Proxies that allocate addresses themselves need none.
    let mut l = weft_api::Loaded::default();
    l.add_text(
        "mesh.yaml",
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db, namespace: shop}\nspec: {hosts: [db.example.com], ports: [{number: 5432, name: tcp, protocol: TCP}], resolution: DNS}\n",
    );
    let mesh: weft_api::types::mesh::MeshConfig = serde_json::from_value(serde_json::json!({
        "defaultConfig": {"proxyMetadata": {"ISTIO_META_DNS_CAPTURE": "true", "ISTIO_META_DNS_AUTO_ALLOCATE": "true"}}
    }))
    .unwrap();
    let options = Options {
        mesh: Some(&mesh),
        ..Options::default()
    };
    assert!(analyze_with(&l.resources, &options).is_empty());
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
        "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: x, namespace: shop}\nspec: {address: 10.0.0.9, labels: {app: x}}\n".into(),
    ]
    .concat());
    let msg = r#"The Sidecars [a b] in namespace "shop" have no workload selector, which can lead to undefined behavior."#;
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
    let found = run_gw(
        &[
            REVIEWS.to_string(),
            vs("a", "default", &format!("hosts: [reviews], {route}")),
            vs(
                "b",
                "default",
                &format!("hosts: [reviews.default.svc.cluster.local], {route}"),
            ),
            // Bound to a gateway only: no conflict.
            vs(
                "c",
                "default",
                &format!("hosts: [reviews], gateways: [shop], {route}"),
            ),
            // Exported to its own namespace, where a and b are visible too:
            // a conflict there.
            vs(
                "d",
                "other",
                &format!("hosts: [reviews.default.svc.cluster.local], exportTo: [.], {route}"),
            ),
            // Each exported to its own namespace only: no conflict.
            vs(
                "e",
                "third",
                &format!("hosts: [ratings.third.svc.cluster.local], exportTo: [.], {route}"),
            ),
            vs(
                "f",
                "fourth",
                &format!("hosts: [ratings.third.svc.cluster.local], exportTo: [.], {route}"),
            ),
        ]
        .concat(),
    );
    let msg = "The VirtualServices default/a,default/b associated with mesh gateway define the same host */reviews.default.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.";
    assert_eq!(
        codes(&found),
        vec![
            ("IST0109", Level::Error, "VirtualService default/a", msg),
            ("IST0109", Level::Error, "VirtualService default/b", msg),
            (
                "IST0109",
                Level::Error,
                "VirtualService other/d",
                "The VirtualServices other/d,default/a,default/b associated with mesh gateway define the same host other/reviews.default.svc.cluster.local which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource."
            ),
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
    let found = run_gw(
        &[
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
            // One host served is enough for Istio, which then names them all.
            vs(
                "partly",
                "shop",
                &format!(
                    "hosts: [books.example.com, books.example.org], gateways: [edge/web], {route}"
                ),
            ),
        ]
        .concat(),
    );
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
    readiness_with(yaml, &[])
}

fn readiness_with(
    yaml: &str,
    untracked: &[(String, String)],
) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut l = weft_api::Loaded::default();
    l.add_text("mesh.yaml", yaml);
    assert_eq!(l.errors(), 0, "{:?}", l.diagnostics);
    let inputs = crate::readiness::Inputs {
        root: "istio-system",
        mesh: None,
        untracked,
    };
    crate::readiness::readiness(&l.resources, &inputs)
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
    assert_eq!(rows.len(), 8);
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
            (
                "resources: requests, limits, autoscaling, disruption budgets",
                vec![]
            ),
            ("observability running (metrics, tracing)", vec![]),
            ("configuration in git, one API version per kind", vec![]),
        ]
    );
}

/// The rows beyond policies: exposure, services without rules, external
/// hosts, capacity, observability and hygiene; each gap found, then each
/// fixed.
#[test]
fn the_readiness_checklist_covers_capacity_observability_and_hygiene() {
    let base = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: istio-system}
spec: {}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {selector: {app: web}, ports: [{name: http, port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: web, resources: {requests: {cpu: 100m}, limits: {cpu: "1"}}}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec:
  template:
    metadata: {labels: {istio: ingressgateway}}
    spec: {containers: [{name: istio-proxy, image: proxy}]}
---
apiVersion: v1
kind: Service
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec: {type: LoadBalancer, selector: {istio: ingressgateway}, ports: [{name: https, port: 443}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: payments, namespace: shop}
spec:
  hosts: [api.payments.example]
  location: MESH_EXTERNAL
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
---
"#;
    let gaps = r#"
apiVersion: v1
kind: Service
metadata: {name: admin, namespace: shop}
spec: {type: NodePort, selector: {app: web}, ports: [{name: http, port: 8080}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: batch, namespace: shop}
spec:
  template:
    metadata: {labels: {app: batch}}
    spec: {containers: [{name: batch, image: batch}]}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: quiet, namespace: shop}
spec:
  metrics: [{overrides: [{match: {metric: REQUEST_COUNT}, disabled: true}]}]
  tracing: [{randomSamplingPercentage: 0, disableSpanReporting: true}]
---
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata: {name: old, namespace: shop}
spec: {hosts: [old.example], location: MESH_EXTERNAL, ports: [{number: 80, name: http, protocol: HTTP}]}
"#;
    let untracked = [(
        "mesh.yaml".to_string(),
        "not in a git work tree".to_string(),
    )];
    let rows = readiness_with(&format!("{base}{gaps}"), &untracked);
    let found: Vec<(&str, Vec<&str>)> = rows
        .into_iter()
        .filter(|(_, codes)| !codes.is_empty())
        .collect();
    assert_eq!(
        found,
        vec![
            // web, and the gateway itself: the root's allow-nothing holds
            // for gateways too.
            (
                "least-privilege authorization",
                vec!["WEFT1102", "WEFT1102"]
            ),
            (
                "traffic enters through a gateway with TLS",
                vec!["WEFT1203"]
            ),
            (
                "timeouts, retries and circuit breaking",
                vec!["WEFT1304", "WEFT1304"]
            ),
            (
                "egress controlled (REGISTRY_ONLY)",
                vec!["WEFT1402", "WEFT1403", "WEFT1403"]
            ),
            (
                "resources: requests, limits, autoscaling, disruption budgets",
                // The gateway's only container is the proxy's: no 1501.
                vec!["WEFT1502", "WEFT1503", "WEFT1501"]
            ),
            (
                "observability running (metrics, tracing)",
                vec!["WEFT1601", "WEFT1602", "WEFT1603"]
            ),
            (
                "configuration in git, one API version per kind",
                vec!["WEFT1701", "WEFT1702"]
            ),
        ]
    );

    // Each fixed: the web workload allowed, rules for the services, the
    // external API through an egress gateway under a rate limit, the
    // gateway scaled and budgeted, no Telemetry switching things off.
    let fixes = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web, namespace: shop}
spec: {selector: {matchLabels: {app: web}}, rules: [{from: [{source: {namespaces: [istio-system]}}]}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ingress, namespace: istio-system}
spec: {selector: {matchLabels: {istio: ingressgateway}}, rules: [{to: [{operation: {ports: ["443"]}}]}]}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: all, namespace: shop}
spec: {host: "*.shop.svc.cluster.local", trafficPolicy: {connectionPool: {tcp: {maxConnections: 100}}, outlierDetection: {consecutive5xxErrors: 5}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: payments, namespace: shop}
spec:
  hosts: [api.payments.example]
  gateways: [mesh, istio-system/egress]
  tls: [{match: [{sniHosts: [api.payments.example]}], route: [{destination: {host: api.payments.example}}]}]
---
apiVersion: weft.dev/v1alpha1
kind: RateLimit
metadata: {name: payments, namespace: shop}
spec: {limits: [{hosts: [api.payments.example], requests: 100, per: 1s}]}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec: {scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: istio-ingressgateway}, minReplicas: 2, maxReplicas: 5}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: istio-ingressgateway, namespace: istio-system}
spec: {minAvailable: 1, selector: {matchLabels: {istio: ingressgateway}}}
"#;
    let rows = readiness(&format!("{base}{fixes}"));
    assert!(codes_of(&rows).is_empty(), "{rows:?}");
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
    let found = run_gw(
        &[
            gw("a", "istio: ingressgateway", 80, "\"*.example.com\""),
            gw(
                "b",
                "istio: ingressgateway",
                80,
                "shop.example.com, \"*.example.com\"",
            ),
            // Another port, another selector, another host, or a host the
            // other's wildcard covers (Istio merges those): no conflict.
            gw("c", "istio: ingressgateway", 443, "shop.example.com"),
            gw("d", "istio: other", 80, "shop.example.com"),
            gw("e", "istio: ingressgateway", 80, "status.example.net"),
            gw("f", "istio: ingressgateway", 80, "shop.example.org"),
            // A selector within another's, with a workload both select.
            gw("g", "istio: ingressgateway, tier: edge", 8080, "x.example.com"),
            gw("h", "istio: ingressgateway", 8080, "x.example.com"),
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: edge-tier, namespace: istio-system}\nspec: {address: 10.9.0.9, labels: {istio: ingressgateway, tier: edge}}\n".to_string(),
        ]
        .concat(),
    );
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
                "Conflict with gateways edge/a (workload selector istio=ingressgateway, port 80, hosts shop.example.com,*.example.com)."
            ),
            (
                "IST0145",
                Level::Error,
                "Gateway edge/g",
                "Conflict with gateways edge/h (workload selector istio=ingressgateway,tier=edge, port 8080, hosts x.example.com)."
            ),
            (
                "IST0145",
                Level::Error,
                "Gateway edge/h",
                "Conflict with gateways edge/g (workload selector istio=ingressgateway, port 8080, hosts x.example.com)."
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

#[test]
fn destination_ports_must_exist_and_be_given_for_multi_port_services() {
    let multi = r#"
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: default}
spec: {selector: {app: ratings}, ports: [{name: http, port: 9080}, {name: grpc, port: 9090}]}
"#;
    let found = run_gw(&format!(
        r#"{REVIEWS}---{multi}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: ratings, namespace: default}}
spec:
  hosts: [ratings]
  http:
  - route: [{{destination: {{host: ratings}}}}]
    mirror: {{host: nowhere}}
  - route: [{{destination: {{host: ratings, port: {{number: 9999}}}}}}]
    mirrors: [{{destination: {{host: reviews, port: {{number: 9080}}}}}}]
  - route: [{{destination: {{host: ratings, port: {{number: 9090}}}}}}, {{destination: {{host: reviews}}}}]
"#
    ));
    let origin = "VirtualService default/ratings";
    assert_eq!(
        codes(&found),
        vec![
            (
                "IST0112",
                Level::Error,
                origin,
                r#"This VirtualService routes to a service "ratings" that exposes multiple ports [9080 9090]. Specifying a port in the destination is required to disambiguate."#
            ),
            (
                "IST0101",
                Level::Error,
                origin,
                r#"Referenced host:port not found: "ratings:9999""#
            ),
            (
                "IST0101",
                Level::Error,
                origin,
                r#"Referenced mirror host not found: "nowhere""#
            ),
        ]
    );
}

fn envoy_filter(name: &str, priority: &str, patches: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  {priority}\n  configPatches:\n{patches}---\n"
    )
}

#[test]
fn envoy_filter_operations_that_do_nothing_or_depend_on_order() {
    let patch = |apply: &str, op: &str, version: &str| {
        format!(
            "  - applyTo: {apply}\n    match: {{context: SIDECAR_INBOUND{version}}}\n    patch: {{operation: {op}, value: {{name: envoy.lua}}}}\n"
        )
    };
    let yaml = [
        envoy_filter("add-route", "", &patch("HTTP_ROUTE", "ADD", "")),
        envoy_filter(
            "remove-route",
            "",
            &patch("ROUTE_CONFIGURATION", "REMOVE", ""),
        ),
        envoy_filter("replace-cluster", "", &patch("CLUSTER", "REPLACE", "")),
        envoy_filter("insert", "", &patch("HTTP_FILTER", "INSERT_BEFORE", "")),
        envoy_filter(
            "prioritized",
            "priority: 10",
            &patch("HTTP_FILTER", "INSERT_AFTER", ""),
        ),
        envoy_filter("absolute", "", &patch("HTTP_FILTER", "INSERT_FIRST", "")),
        envoy_filter(
            "versioned",
            "",
            &patch("HTTP_FILTER", "ADD", ", proxy: {proxyVersion: '^1\\.2.*'}"),
        ),
        envoy_filter("after-versioned", "", &patch("HTTP_FILTER", "REPLACE", "")),
    ]
    .concat();
    let found = run(&yaml);
    let got: Vec<(&str, &str)> = found.iter().map(|m| (m.code, m.origin.as_str())).collect();
    assert_eq!(
        got,
        vec![
            ("IST0153", "EnvoyFilter default/add-route"),
            ("IST0154", "EnvoyFilter default/remove-route"),
            ("IST0152", "EnvoyFilter default/replace-cluster"),
            ("IST0151", "EnvoyFilter default/insert"),
            ("IST0155", "EnvoyFilter default/after-versioned"),
        ]
    );
    assert_eq!(found[0].level, Level::Error);
    assert_eq!(found[3].level, Level::Warning);
}

#[test]
fn telemetry_without_providers_or_selectors() {
    let telemetry = |name: &str, spec: &str| {
        format!(
            "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {{name: {name}, namespace: shop}}\nspec: {spec}\n---\n"
        )
    };
    let yaml = [
        telemetry("logs", "{accessLogging: [{disabled: false}]}"),
        telemetry("metrics", "{metrics: [{providers: [{name: prometheus}]}]}"),
        telemetry(
            "one",
            "{selector: {matchLabels: {app: a}}, accessLogging: [{providers: [{name: envoy}]}]}",
        ),
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: a, namespace: shop}\nspec: {address: 10.0.0.9, labels: {app: a}}\n".into(),
    ]
    .concat();
    assert_eq!(
        codes(&run(&yaml)),
        vec![
            (
                "IST0157",
                Level::Warning,
                "Telemetry shop/logs",
                r#"The Telemetry logs in namespace "shop" with empty providers will be ignored."#
            ),
            (
                "IST0160",
                Level::Error,
                "Telemetry shop/logs",
                r#"The Telemetries [logs metrics] in namespace "shop" have no workload selector, which can lead to undefined behavior."#
            ),
            (
                "IST0160",
                Level::Error,
                "Telemetry shop/metrics",
                r#"The Telemetries [logs metrics] in namespace "shop" have no workload selector, which can lead to undefined behavior."#
            ),
        ]
    );
    // With a default access log provider in MeshConfig, an access log
    // without providers uses it.
    let mut l = weft_api::Loaded::default();
    l.add_text(
        "mesh.yaml",
        &telemetry("logs", "{accessLogging: [{disabled: false}]}"),
    );
    let mesh: weft_api::types::mesh::MeshConfig = serde_json::from_value(
        serde_json::json!({"defaultProviders": {"accessLogging": ["envoy"]}}),
    )
    .unwrap();
    let options = Options {
        mesh: Some(&mesh),
        ..Options::default()
    };
    assert!(analyze_with(&l.resources, &options).is_empty());
}

/// Istio's docs examples, each analyzed beside the samples they build on
/// (bookinfo, httpbin, sleep, curl, helloworld, tcp-echo): no analyzer
/// reports an Error. The exceptions are the two Istio reports too: a
/// snippet that names a gateway, subset or host its task defines elsewhere
/// (IST0101), and a snippet that is not valid on its own (IST0106, the
/// files the loader's corpus test lists as invalid upstream).
#[test]
fn istios_docs_examples_raise_no_other_errors() {
    let corpus = format!("{}/../../../shared/corpus", env!("CARGO_MANIFEST_DIR"));
    let samples = [
        "bookinfo/platform/kube/bookinfo.yaml",
        "httpbin/httpbin.yaml",
        "sleep/sleep.yaml",
        "curl/curl.yaml",
        "helloworld/helloworld.yaml",
        "tcp-echo/tcp-echo.yaml",
    ];
    let context: Vec<(String, String)> = samples
        .iter()
        .map(|s| {
            let path = format!("{corpus}/samples/{s}");
            (path.clone(), std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    let files =
        weft_api::load::walk(std::path::Path::new(&format!("{corpus}/docs-examples"))).unwrap();
    let mut analyzed = 0;
    let mut errors = Vec::new();
    for f in files {
        let path = f.display().to_string();
        if path.contains("/_") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        if text.contains('$') || text.contains("{{") {
            continue;
        }
        let mut l = weft_api::Loaded::default();
        let mut inputs: Vec<(&str, &str)> = context
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        inputs.push((&path, &text));
        l.add_texts(&inputs);
        l.validate();
        analyzed += 1;
        let found = l
            .diagnostics
            .iter()
            .filter_map(schema)
            .chain(analyze(&l.resources));
        errors.extend(
            found
                .filter(|m| m.level == Level::Error && !matches!(m.code, "IST0101" | "IST0106"))
                .map(|m| format!("{path}: {m}")),
        );
    }
    assert!(analyzed > 90, "{analyzed} files");
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn gateways_sharing_a_certificate_and_ingress_routes_that_skip_subsets() {
    let gateway = |name: &str, selector: &str, cred: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: edge}}\nspec:\n  selector: {{{selector}}}\n  servers: [{{port: {{number: 443, name: https, protocol: HTTPS}}, hosts: ['{name}.example.com'], tls: {{mode: SIMPLE, credentialName: {cred}}}}}]\n---\n"
        )
    };
    let yaml = [
        gateway("a", "istio: ingressgateway", "shared"),
        gateway("b", "istio: ingressgateway", "shared"),
        gateway("c", "istio: ingressgateway", "own"),
        gateway("d", "istio: other", "shared"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: shared, namespace: istio-system}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: own, namespace: istio-system}\n".into(),
    ]
    .concat();
    assert_eq!(
        codes(&run_gw(&yaml)),
        vec![
            (
                "IST0138",
                Level::Warning,
                "Gateway edge/a",
                "Duplicate certificate in multiple gateways [edge/a edge/b] may cause 404s if clients re-use HTTP2 connections."
            ),
            (
                "IST0138",
                Level::Warning,
                "Gateway edge/b",
                "Duplicate certificate in multiple gateways [edge/b edge/a] may cause 404s if clients re-use HTTP2 connections."
            ),
        ]
    );

    let found = run_gw(&format!(
        r#"{REVIEWS}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: split, namespace: default}}
spec:
  hosts: [reviews]
  http: [{{route: [{{destination: {{host: reviews, subset: v1}}}}]}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: public, namespace: default}}
spec:
  hosts: [reviews.example.com]
  gateways: [shop]
  http: [{{route: [{{destination: {{host: reviews}}}}]}}]
"#
    ));
    assert_eq!(
        codes(&found),
        vec![(
            "IST0140",
            Level::Warning,
            "VirtualService default/public",
            "Subset in virtual service default/split has no effect on ingress gateway default/public requests"
        )]
    );
}

#[test]
fn authorization_policies_must_select_workloads_and_name_known_namespaces() {
    let found = run(r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: reviews, namespace: shop}
spec: {address: 10.0.0.1, serviceAccount: reviews, labels: {app: reviews}}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: reviews, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  rules: [{from: [{source: {namespaces: [shop, "istio-*", "*-system"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ratings, namespace: shop}
spec:
  selector: {matchLabels: {app: ratings, version: v1}}
  rules: [{from: [{source: {notNamespaces: [legacy], principals: ["cluster.local/ns/shop/sa/reviews", "cluster.local/ns/shop/sa/ghost", "cluster.local/ns/elsewhere/sa/any", "*/sa/anything"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: nothing-here, namespace: empty}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-wide, namespace: istio-system}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: mesh-wide-selector, namespace: istio-system}
spec: {selector: {matchLabels: {app: reviews}}}
"#);
    assert_eq!(
        codes(&found),
        vec![
            (
                "IST0127",
                Level::Warning,
                "AuthorizationPolicy shop/ratings",
                "No matching workloads for this resource with the following labels: app=ratings,version=v1"
            ),
            (
                "IST0101",
                Level::Error,
                "AuthorizationPolicy shop/ratings",
                r#"Referenced principal not found: "cluster.local/ns/shop/sa/ghost""#
            ),
            (
                "IST0101",
                Level::Error,
                "AuthorizationPolicy shop/ratings",
                r#"Referenced namespace not found: "legacy""#
            ),
            (
                "IST0127",
                Level::Warning,
                "AuthorizationPolicy empty/nothing-here",
                "No matching workloads for this resource with the following labels: "
            ),
        ]
    );
}

#[test]
fn sidecar_and_telemetry_selectors_must_match_one_owner_each() {
    let found = run(r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews, namespace: shop}
spec:
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec: {containers: [{name: reviews, image: reviews}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: by-app, namespace: shop}
spec: {workloadSelector: {labels: {app: reviews}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: by-version, namespace: shop}
spec: {workloadSelector: {labels: {version: v1}}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: nobody, namespace: shop}
spec: {workloadSelector: {labels: {app: ratings}}}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: reviews, namespace: shop}
spec: {selector: {matchLabels: {app: reviews}}}
"#);
    let conflict = r#"The Sidecars [by-app by-version] in namespace "shop" select the same workload pod "reviews", which can lead to undefined behavior."#;
    assert_eq!(
        codes(&found),
        vec![
            (
                "IST0101",
                Level::Error,
                "Sidecar shop/nobody",
                r#"Referenced selector not found: "app=ratings""#
            ),
            ("IST0110", Level::Error, "Sidecar shop/by-app", conflict),
            ("IST0110", Level::Error, "Sidecar shop/by-version", conflict),
        ]
    );
}

#[test]
fn jwt_claim_routes_need_request_authentication_at_the_gateway() {
    let mesh = |ra: &str| {
        format!(
            r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: ingressgateway, namespace: istio-system}}
spec: {{address: 10.0.0.2, labels: {{istio: ingressgateway}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: web, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ["*"]}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: httpbin, namespace: foo}}
spec: {{hosts: [httpbin.foo.svc.cluster.local], location: MESH_INTERNAL, ports: [{{number: 8000, name: http, protocol: HTTP}}], resolution: STATIC}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: httpbin, namespace: foo}}
spec:
  hosts: ["*"]
  gateways: [istio-system/web]
  http:
  - match: [{{headers: {{"@request.auth.claims.groups": {{exact: group1}}}}}}]
    route: [{{destination: {{host: httpbin.foo.svc.cluster.local}}}}]
{ra}"#
        )
    };
    let found: Vec<_> = run(&mesh(""))
        .into_iter()
        .filter(|m| m.code == "IST0149")
        .collect();
    assert_eq!(
        codes(&found),
        vec![(
            "IST0149",
            Level::Error,
            "VirtualService foo/httpbin",
            "The virtual service uses the JWT claim based routing (key: @request.auth.claims.groups) but found no request authentication for the gateway (istio-system/web) pod (ingressgateway). The request authentication must first be applied for the gateway pods to validate the JWT token and make the claims available for routing."
        )]
    );
    let with_ra = mesh(
        "---\napiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: jwt, namespace: istio-system}\nspec:\n  selector: {matchLabels: {istio: ingressgateway}}\n  jwtRules: [{issuer: testing@secure.istio.io, jwksUri: 'https://example.com/jwks.json'}]\n",
    );
    assert!(run(&with_ra).iter().all(|m| m.code != "IST0149"));
}

#[test]
fn applications_must_not_run_as_the_proxys_uid() {
    let found = run(r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: app, namespace: shop}
spec:
  template:
    metadata: {labels: {app: app}}
    spec:
      securityContext: {runAsUser: 1337}
      containers:
      - {name: app, image: app, securityContext: {runAsUser: 1337}}
      - {name: istio-proxy, image: proxy, securityContext: {runAsUser: 1337}}
---
apiVersion: v1
kind: Pod
metadata: {name: fine, namespace: shop}
spec: {containers: [{name: fine, image: fine, securityContext: {runAsUser: 1000}}]}
"#);
    let uid: Vec<_> = found.iter().filter(|m| m.code == "IST0144").collect();
    assert_eq!(uid.len(), 2, "{found:?}");
    assert!(uid.iter().all(|m| m.origin == "Deployment shop/app"
        && m.message == "User ID (UID) 1337 is reserved for the sidecar proxy."));
}

#[test]
fn gateways_need_workloads_and_their_credentials() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: ingressgateway, namespace: istio-system}
spec: {address: 10.0.0.2, labels: {istio: ingressgateway}}
---
apiVersion: v1
kind: Secret
metadata: {name: from-secret, namespace: istio-system}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: web, namespace: shop}
spec:
  selector: {istio: ingressgateway}
  servers:
  - {port: {number: 443, name: a, protocol: HTTPS}, hosts: [a.example.com], tls: {mode: SIMPLE, credentialName: from-secret}}
  - {port: {number: 443, name: b, protocol: HTTPS}, hosts: [b.example.com], tls: {mode: SIMPLE, credentialName: from-folder}}
  - {port: {number: 443, name: c, protocol: HTTPS}, hosts: [c.example.com], tls: {mode: SIMPLE, credentialName: missing}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: orphan, namespace: shop}
spec:
  selector: {istio: nobody}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ["*"]}]
"#;
    let mut l = weft_api::Loaded::default();
    l.add_text("mesh.yaml", yaml);
    let folders = ["from-folder".to_string()];
    let options = Options {
        credentials: &folders,
        ..Options::default()
    };
    let found = analyze_with(&l.resources, &options);
    assert_eq!(
        codes(&found),
        vec![
            (
                "IST0101",
                Level::Error,
                "Gateway shop/web",
                r#"Referenced credentialName not found: "missing""#
            ),
            (
                "IST0101",
                Level::Error,
                "Gateway shop/orphan",
                r#"Referenced selector not found: "istio=nobody""#
            ),
        ]
    );
}

#[test]
fn external_name_service_ports_must_be_named_by_protocol() {
    let found = run(r#"
apiVersion: v1
kind: Service
metadata: {name: ext, namespace: shop}
spec:
  type: ExternalName
  externalName: api.example.com
  ports:
  - {name: tcp, port: 5432}
  - {name: db, port: 5433}
  - {name: tcp-db, port: 5434}
  - {name: https, port: 443}
"#);
    let codes: Vec<(&str, &str)> = found.iter().map(|m| (m.code, m.origin.as_str())).collect();
    assert_eq!(
        codes,
        vec![
            ("IST0150", "Service shop/ext"),
            ("IST0150", "Service shop/ext")
        ]
    );
    assert_eq!(found[0].level, Level::Warning);
}

#[test]
fn services_of_one_deployment_must_agree_on_ports() {
    let yaml = |inject: &str| {
        format!(
            r#"
apiVersion: v1
kind: Namespace
metadata: {{name: shop, labels: {{istio-injection: {inject}}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: shop}}
spec:
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, image: web}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: web-tcp, namespace: shop}}
spec: {{selector: {{app: web}}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: web-udp, namespace: shop}}
spec: {{selector: {{app: web}}, ports: [{{name: dns, port: 80, protocol: UDP, targetPort: 53}}]}}
---
apiVersion: v1
kind: Service
metadata: {{name: web-alt, namespace: shop}}
spec: {{selector: {{app: web}}, ports: [{{name: http-alt, port: 8000, targetPort: 8080}}]}}
"#
        )
    };
    let found: Vec<_> = run(&yaml("enabled"))
        .into_iter()
        .filter(|m| m.origin == "Deployment shop/web")
        .collect();
    assert_eq!(
        codes(&found),
        vec![
            (
                "IST0116",
                Level::Warning,
                "Deployment shop/web",
                "This deployment web is associated with multiple services using port 80 but different protocols: [shop/web-tcp shop/web-udp]"
            ),
            (
                "IST0137",
                Level::Warning,
                "Deployment shop/web",
                r#"This deployment web is associated with multiple services [shop/web-alt shop/web-tcp] using targetPort "8080" but different ports: [80 8000]."#
            ),
        ]
    );
    // Outside the mesh, nothing is said.
    assert!(
        run(&yaml("disabled"))
            .iter()
            .all(|m| m.code != "IST0116" && m.code != "IST0137")
    );
}

#[test]
fn pods_of_injected_namespaces_need_the_proxy() {
    let found = run(r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Pod
metadata: {name: bare, namespace: shop}
spec: {containers: [{name: app, image: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: injected, namespace: shop}
spec: {containers: [{name: app, image: app}, {name: istio-proxy, image: proxy}]}
---
apiVersion: v1
kind: Pod
metadata: {name: opted-out, namespace: shop, labels: {sidecar.istio.io/inject: "false"}}
spec: {containers: [{name: app, image: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: host, namespace: shop}
spec: {hostNetwork: true, containers: [{name: app, image: app}]}
---
apiVersion: v1
kind: Pod
metadata: {name: elsewhere, namespace: other}
spec: {containers: [{name: app, image: app}]}
"#);
    let missing: Vec<_> = found.iter().filter(|m| m.code == "IST0103").collect();
    assert_eq!(missing.len(), 1, "{found:?}");
    assert_eq!(missing[0].origin, "Pod shop/bare");
    assert_eq!(
        missing[0].message,
        "The pod shop/bare is missing the Istio proxy. This can often be resolved by restarting or redeploying the workload."
    );
}

#[test]
fn subsets_must_select_workloads() {
    let found = run_gw(&format!(
        r#"{REVIEWS}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews-all, namespace: default}}
spec:
  host: reviews
  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v4, labels: {{version: v4}}}}, {{name: v5, labels: {{version: v5}}}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: reviews-v5, namespace: elsewhere, labels: {{app: reviews, version: v5}}}}
spec: {{containers: [{{name: reviews, image: reviews, ports: [{{containerPort: 9080}}]}}]}}
"#
    ));
    // A matching pod in another namespace counts, as Istio matches pods.
    assert_eq!(
        codes(&found),
        vec![(
            "IST0173",
            Level::Error,
            "DestinationRule default/reviews-all",
            "The Subset v4 defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream)."
        )]
    );
}

#[test]
fn destination_rules_and_peer_authentication_must_agree_on_mtls() {
    let mesh = |dr_mode: &str, pa: &str| {
        run(&format!(
            r#"{REVIEWS}---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews-tls, namespace: default}}
spec: {{host: reviews, trafficPolicy: {{tls: {{mode: {dr_mode}}}}}}}
---
{pa}"#
        ))
        .into_iter()
        .filter(|m| m.code == "IST0113")
        .map(|m| m.message)
        .collect::<Vec<_>>()
    };
    let strict_ns = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec: {mtls: {mode: STRICT}}\n";
    assert_eq!(
        mesh("DISABLE", strict_ns),
        vec![
            r#"A DestinationRule and Policy are in conflict with regards to mTLS for host reviews.default.svc.cluster.local. The DestinationRule "default/reviews-tls" specifies that mTLS must be false but the Policy object "default/default" specifies STRICT."#
        ]
    );
    // The workload's own policy wins over the namespace's.
    let disabled_workload = format!(
        "{strict_ns}---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: reviews-plain, namespace: default}}\nspec: {{selector: {{matchLabels: {{app: reviews}}}}, mtls: {{mode: DISABLE}}}}\n"
    );
    assert_eq!(mesh("DISABLE", &disabled_workload), Vec::<String>::new());
    assert_eq!(mesh("ISTIO_MUTUAL", &disabled_workload).len(), 1);
    // The root namespace's, when nothing nearer says.
    let root_strict = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n";
    assert_eq!(mesh("DISABLE", root_strict).len(), 1);
    assert!(mesh("ISTIO_MUTUAL", root_strict).is_empty());
    let permissive = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec: {mtls: {mode: PERMISSIVE}}\n";
    assert!(mesh("DISABLE", permissive).is_empty());
}

#[test]
fn gateway_api_gateways_need_tls_too() {
    let gateway = |listener: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: web, namespace: edge}}\nspec:\n  gatewayClassName: istio\n  listeners: [{listener}]\n"
        )
    };
    let rows = readiness(&gateway("{name: http, port: 80, protocol: HTTP}"));
    assert_eq!(codes_of(&rows), vec!["WEFT1201"]);
    let rows = readiness(&gateway(
        "{name: https, port: 443, protocol: HTTPS, tls: {certificateRefs: [{name: web}]}}",
    ));
    assert!(codes_of(&rows).is_empty(), "{rows:?}");
}

#[test]
fn istio_annotations_must_be_known_placed_right_and_current() {
    // The example of Istio's IST0108 page.
    let found = run(r#"
apiVersion: v1
kind: Service
metadata:
  name: httpbin
  labels:
    app: httpbin
  annotations:
    networking.istio.io/exportTwo: bar
spec:
  ports:
  - name: http
    port: 8000
    targetPort: 80
  selector:
    app: httpbin
"#);
    assert_eq!(
        codes(&found),
        [(
            "IST0108",
            Level::Warning,
            "Service default/httpbin",
            "Unknown annotation: networking.istio.io/exportTwo"
        )]
    );
    // Istio gives the annotation's own line.
    assert_eq!(found[0].source, "mesh.yaml:9");

    let found = run(r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  annotations: {sidecar.istio.io/proxyCPU: 100m, example.com/owner: team}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: cart
  namespace: shop
  annotations: {sidecar.istio.io/inject: "true"}
spec:
  selector: {matchLabels: {app: cart}}
  template:
    metadata: {labels: {app: cart}, annotations: {sidecar.istio.io/proxyCPU: 100m}}
    spec: {containers: [{name: cart, image: cart}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: legacy
  namespace: shop
  annotations:
    sidecar.istio.io/inject: "false"
    traffic.sidecar.istio.io/kubevirtInterfaces: net1
    proxy.istio.io/config: "{}"
    ambient.istio.io/dns-capture: "false"
    galley.istio.io/analyze-suppress: IST0103
    kubernetes.io/ingress.class: istio
spec: {containers: [{name: legacy, image: legacy}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: both
  namespace: shop
  labels: {sidecar.istio.io/inject: "false"}
  annotations: {sidecar.istio.io/inject: "false"}
spec: {containers: [{name: both, image: both}]}
"#);
    let annotation_codes: Vec<_> = codes(&found)
        .into_iter()
        .filter(|(code, ..)| ["IST0107", "IST0108", "IST0135"].contains(code))
        .collect();
    assert_eq!(
        annotation_codes,
        [
            (
                "IST0107",
                Level::Warning,
                "Namespace shop",
                "Misplaced annotation: sidecar.istio.io/proxyCPU can only be applied to Pod"
            ),
            (
                "IST0135",
                Level::Info,
                "Deployment shop/cart",
                "Annotation \"sidecar.istio.io/inject\" has been deprecated in favor of the \"sidecar.istio.io/inject\" label and may not work in future Istio versions."
            ),
            (
                "IST0107",
                Level::Warning,
                "Deployment shop/cart",
                "Misplaced annotation: sidecar.istio.io/inject can only be applied to Pod"
            ),
            (
                "IST0107",
                Level::Warning,
                "Pod shop/legacy",
                "Misplaced annotation: kubernetes.io/ingress.class can only be applied to Ingress"
            ),
            (
                "IST0135",
                Level::Info,
                "Pod shop/legacy",
                "Annotation \"sidecar.istio.io/inject\" has been deprecated in favor of the \"sidecar.istio.io/inject\" label and may not work in future Istio versions."
            ),
            (
                "IST0135",
                Level::Info,
                "Pod shop/legacy",
                "Annotation \"traffic.sidecar.istio.io/kubevirtInterfaces\" has been deprecated and may not work in future Istio versions."
            ),
        ]
    );
}

#[test]
fn gateway_ports_must_be_forwarded_by_the_gateways_service() {
    let mesh = |service_ports: &str| {
        run(&format!(
            r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: istio-ingressgateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: ["*"]
  - port: {{number: 8004, name: http2, protocol: HTTP}}
    hosts: ["*"]
---
apiVersion: v1
kind: Service
metadata: {{name: istio-ingressgateway, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  ports: {service_ports}
---
apiVersion: v1
kind: Pod
metadata: {{name: ingressgateway-1, namespace: istio-system, labels: {{istio: ingressgateway}}}}
spec: {{containers: [{{name: istio-proxy, image: proxyv2}}]}}
"#
        ))
        .into_iter()
        .filter(|m| m.code == "IST0162")
        .collect::<Vec<_>>()
    };
    let found = mesh(
        "[{name: http, port: 80, targetPort: 8080}, {name: https, port: 443, targetPort: 8443}]",
    );
    assert_eq!(
        codes(&found),
        [(
            "IST0162",
            Level::Warning,
            "Gateway istio-system/istio-ingressgateway",
            "The gateway is listening on a target port (port 8004) that is not defined in the Service associated with its workload instances (Pod selector istio=ingressgateway). If you need to access the gateway port through the gateway Service, it will not be available."
        )]
    );
    // A port without a numeric target forwards to itself; UDP does not count.
    assert_eq!(
        mesh(
            "[{name: http, port: 80, targetPort: 8080}, {name: h2, port: 8004, targetPort: http2}]"
        ),
        []
    );
    assert_eq!(
        mesh("[{name: http, port: 80, targetPort: 8080}, {name: h2, port: 8004, protocol: UDP}]")
            .len(),
        1
    );
    // A gateway that runs as a WorkloadEntry has no Service to check.
    let found = run_gw(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: edge, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers: [{port: {number: 8443, name: https, protocol: HTTPS}, hosts: [\"*\"], tls: {mode: PASSTHROUGH}}]\n",
    );
    assert!(found.iter().all(|m| m.code != "IST0162"), "{found:?}");
}

#[test]
fn a_resource_may_suppress_codes_about_itself() {
    let service = |suppress: &str| {
        run(&format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: httpbin\n  annotations:\n    networking.istio.io/exportTwo: bar\n    galley.istio.io/analyze-suppress: \"{suppress}\"\nspec:\n  selector: {{app: httpbin}}\n  ports: [{{name: web, port: 8000}}]\n"
        ))
        .into_iter()
        .map(|m| m.code)
        .collect::<Vec<_>>()
    };
    assert_eq!(service("IST0001"), ["IST0118", "IST0108"]);
    assert_eq!(service("IST0118, IST0108"), Vec::<&str>::new());
    assert_eq!(service("IST0108"), ["IST0118"]);
    assert_eq!(service("*"), Vec::<&str>::new());
}

#[test]
fn kubernetes_gateway_proxies_take_target_refs_not_selectors() {
    // The example of Istio's IST0166 page.
    let found = run(r#"
apiVersion: v1
kind: Pod
metadata:
  annotations: {istio.io/rev: default}
  labels:
    gateway.networking.k8s.io/gateway-name: bookinfo-gateway
    istio.io/gateway-name: bookinfo-gateway
  name: bookinfo-gateway-istio-6ff4cf9645-xbqmc
  namespace: default
spec:
  containers: [{image: "proxyv2:1.21.0", name: istio-proxy}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {namespace: default, name: ap-ineffective}
spec:
  selector:
    matchLabels: {gateway.networking.k8s.io/gateway-name: bookinfo-gateway}
  action: DENY
  rules: [{from: [{source: {namespaces: ["dev"]}}], to: [{operation: {methods: ["POST"]}}]}]
---
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata: {name: telemetry-example, namespace: default}
spec:
  tracing: [{randomSamplingPercentage: 10.00}]
  selector:
    matchLabels: {gateway.networking.k8s.io/gateway-name: bookinfo-gateway}
  targetRef: {group: gateway.networking.k8s.io, kind: Gateway, name: bookinfo-gateway}
"#);
    let found: Vec<_> = codes(&found)
        .into_iter()
        .filter(|(code, ..)| *code == "IST0166")
        .collect();
    assert_eq!(
        found,
        [(
            "IST0166",
            Level::Warning,
            "AuthorizationPolicy default/ap-ineffective",
            "Ineffective selector on Kubernetes Gateway bookinfo-gateway. Use the TargetRef field instead."
        )]
    );
}

#[test]
fn sidecars_for_ambient_workloads_have_no_impact() {
    let found = run(r#"
apiVersion: v1
kind: Namespace
metadata: {name: ns-ambient, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: mixed}
---
apiVersion: v1
kind: Namespace
metadata: {name: injected, labels: {istio.io/dataplane-mode: ambient, istio-injection: enabled}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: injection-wins, namespace: injected}
spec: {egress: [{hosts: ["./*"]}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: captured
  namespace: mixed
  labels: {app: captured}
  annotations: {ambient.istio.io/redirection: enabled}
spec: {containers: [{name: app, image: app}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: namespace-scoped, namespace: ns-ambient}
spec: {egress: [{hosts: ["./*"]}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: other-namespace-scoped, namespace: ns-ambient}
spec: {egress: [{hosts: ["./*"]}]}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: pod-scoped, namespace: mixed}
spec:
  workloadSelector: {labels: {app: captured}}
  egress: [{hosts: ["./*"]}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: pod-scoped-too, namespace: mixed}
spec:
  workloadSelector: {labels: {app: captured}}
  egress: [{hosts: ["./*"]}]
"#);
    let mut found: Vec<_> = codes(&found)
        .into_iter()
        .filter(|(code, ..)| ["IST0110", "IST0111", "IST0167"].contains(code))
        .map(|(code, _, origin, text)| (code, origin, text))
        .collect();
    found.sort();
    let pod =
        "The policy has no impact: selected workload is in ambient mode, the policy has no impact.";
    let ns = "The policy has no impact: namespace is in ambient mode, the policy has no impact.";
    assert_eq!(
        found,
        [
            ("IST0167", "Sidecar mixed/pod-scoped", pod),
            ("IST0167", "Sidecar mixed/pod-scoped-too", pod),
            ("IST0167", "Sidecar ns-ambient/namespace-scoped", ns),
            ("IST0167", "Sidecar ns-ambient/other-namespace-scoped", ns),
        ]
    );
}

#[test]
fn regexes_must_compile_as_re2() {
    // The example of Istio's IST0122 page, and a header and CORS origin.
    let found = run(r#"
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: bad-match
spec:
  hosts:
  - "*"
  gateways:
  - bookinfo-gateway
  http:
  - match:
    - uri:
        regex: "[A-Z"
    - headers:
        x-id: {regex: "^[0-9]+$"}
        x-version: {regex: "v(1"}
    corsPolicy:
      allowOrigins: [{exact: "https://a.example"}, {regex: "*.example"}]
    route:
    - destination:
        host: productpage
"#);
    let found: Vec<_> = found.iter().filter(|m| m.code == "IST0122").collect();
    let lines: Vec<(&str, &str)> = found
        .iter()
        .map(|m| (m.source.as_str(), m.message.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            (
                "mesh.yaml:14",
                "Field \"uri\" regular expression invalid: \"[A-Z\" (error parsing regexp: missing closing ]: `[A-Z`)"
            ),
            (
                "mesh.yaml:17",
                "Field \"headers\" regular expression invalid: \"v(1\" (error parsing regexp: missing closing ): `v(1`)"
            ),
            (
                "mesh.yaml:19",
                "Field \"corsPolicy.allowOrigins\" regular expression invalid: \"*.example\" (error parsing regexp: missing argument to repetition operator: `*`)"
            ),
        ]
    );
    assert!(
        found
            .iter()
            .all(|m| m.level == Level::Warning && m.origin == "VirtualService default/bad-match")
    );
}

#[test]
fn istio_annotation_values_are_checked_as_the_injector_checks_them() {
    let found = run(r#"
apiVersion: v1
kind: Pod
metadata:
  name: app
  annotations:
    sidecar.istio.io/interceptionMode: MAGIC
    status.sidecar.istio.io/port: "http"
    readiness.status.sidecar.istio.io/periodSeconds: "-5"
    traffic.sidecar.istio.io/includeOutboundIPRanges: "10.0.0.0/8,10.1.0.0"
    traffic.sidecar.istio.io/excludeOutboundIPRanges: "10.0.0.0/33"
    traffic.sidecar.istio.io/includeInboundPorts: "*"
    traffic.sidecar.istio.io/excludeInboundPorts: "15020, 70000"
    traffic.sidecar.istio.io/excludeOutboundPorts: "3306"
    prometheus.istio.io/merge-metrics: "yes"
spec: {containers: [{name: app, image: app}]}
"#);
    let found: Vec<&str> = found
        .iter()
        .filter(|m| m.code == "IST0125")
        .map(|m| m.message.as_str())
        .collect();
    assert_eq!(
        found,
        [
            "Invalid annotation prometheus.istio.io/merge-metrics: strconv.ParseBool: parsing \"yes\": invalid syntax",
            "Invalid annotation readiness.status.sidecar.istio.io/periodSeconds: strconv.ParseUint: parsing \"-5\": invalid syntax",
            "Invalid annotation sidecar.istio.io/interceptionMode: interceptionMode invalid, use REDIRECT,TPROXY,NONE: MAGIC",
            "Invalid annotation status.sidecar.istio.io/port: excludeInboundPorts invalid: failed parsing port 'http': strconv.ParseUint: parsing \"http\": invalid syntax",
            "Invalid annotation traffic.sidecar.istio.io/excludeInboundPorts: excludeInboundPorts invalid: failed parsing port ' 70000': failed parsing port ' 70000': strconv.ParseUint: parsing \"70000\": value out of range",
            "Invalid annotation traffic.sidecar.istio.io/excludeOutboundIPRanges: excludeIPRanges invalid: failed parsing cidr '10.0.0.0/33': netip.ParsePrefix(\"10.0.0.0/33\"): prefix length out of range",
            "Invalid annotation traffic.sidecar.istio.io/includeOutboundIPRanges: includeIPRanges invalid: failed parsing cidr '10.1.0.0': netip.ParsePrefix(\"10.1.0.0\"): no '/'",
        ]
    );
}

/// Istio's injector webhooks for the default revision, as its chart
/// installs them.
const INJECTOR: &str = r#"
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: istio-sidecar-injector, labels: {istio.io/rev: default}}
webhooks:
- name: rev.namespace.sidecar-injector.istio.io
  clientConfig: {service: {name: istiod, namespace: istio-system, path: /inject}}
  namespaceSelector:
    matchExpressions:
    - {key: istio.io/rev, operator: In, values: [default]}
    - {key: istio-injection, operator: DoesNotExist}
  objectSelector:
    matchExpressions:
    - {key: sidecar.istio.io/inject, operator: NotIn, values: ["false"]}
- name: rev.object.sidecar-injector.istio.io
  clientConfig: {service: {name: istiod, namespace: istio-system, path: /inject}}
  namespaceSelector:
    matchExpressions:
    - {key: istio.io/rev, operator: DoesNotExist}
    - {key: istio-injection, operator: DoesNotExist}
  objectSelector:
    matchExpressions:
    - {key: sidecar.istio.io/inject, operator: NotIn, values: ["false"]}
    - {key: istio.io/rev, operator: In, values: [default]}
- name: namespace.sidecar-injector.istio.io
  clientConfig: {service: {name: istiod, namespace: istio-system, path: /inject}}
  namespaceSelector:
    matchExpressions:
    - {key: istio-injection, operator: In, values: [enabled]}
  objectSelector:
    matchExpressions:
    - {key: sidecar.istio.io/inject, operator: NotIn, values: ["false"]}
- name: object.sidecar-injector.istio.io
  clientConfig: {service: {name: istiod, namespace: istio-system, path: /inject}}
  namespaceSelector:
    matchExpressions:
    - {key: istio-injection, operator: DoesNotExist}
    - {key: istio.io/rev, operator: DoesNotExist}
  objectSelector:
    matchExpressions:
    - {key: sidecar.istio.io/inject, operator: In, values: ["true"]}
    - {key: istio.io/rev, operator: DoesNotExist}
"#;

#[test]
fn injector_webhooks_must_not_overlap_and_must_reach_a_service() {
    let istiod = "apiVersion: v1\nkind: Service\nmetadata: {name: istiod, namespace: istio-system}\nspec: {selector: {app: istiod}, ports: [{name: https-webhook, port: 443}]}\n";
    let webhook_codes = |yaml: &str| -> Vec<(String, String)> {
        run(yaml)
            .into_iter()
            .filter(|m| m.code == "IST0139")
            .map(|m| (m.origin, m.message))
            .collect()
    };
    assert_eq!(webhook_codes(&format!("{INJECTOR}---\n{istiod}")), []);
    // An older injector left behind that also injects into labelled
    // namespaces.
    let old = "apiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {name: istio-sidecar-injector-old}\nwebhooks:\n- name: sidecar-injector.istio.io\n  clientConfig: {url: \"https://istiod.example:15017/inject\"}\n  namespaceSelector: {matchLabels: {istio-injection: enabled}}\n";
    assert_eq!(
        webhook_codes(&format!("{INJECTOR}---\n{istiod}---\n{old}")),
        [
            (
                "MutatingWebhookConfiguration istio-sidecar-injector".to_string(),
                "Webhook overlaps with others: [istio-sidecar-injector-old/sidecar-injector.istio.io]. This may cause injection to occur twice.".to_string()
            ),
            (
                "MutatingWebhookConfiguration istio-sidecar-injector-old".to_string(),
                "Webhook overlaps with others: [istio-sidecar-injector/namespace.sidecar-injector.istio.io]. This may cause injection to occur twice.".to_string()
            ),
        ]
    );
    // Without istiod's Service the injector reaches nothing (once per
    // configuration, however many webhooks name it).
    assert_eq!(
        webhook_codes(INJECTOR),
        [(
            "MutatingWebhookConfiguration istio-sidecar-injector".to_string(),
            "Injector refers to a control plane service that does not exist: istio-system/istiod."
                .to_string()
        )]
    );
}

#[test]
fn deprecated_fields_are_named() {
    let found = run(r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: default}
spec:
  hosts: [ratings.example.com]
  http:
  - fault: {delay: {fixedDelay: 7s, percent: 10}}
    route: [{destination: {host: ratings.example.com}}]
  - fault: {delay: {fixedDelay: 7s, percentage: {value: 10}}}
    route: [{destination: {host: ratings.example.com}}]
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: default}
spec:
  outboundTrafficPolicy:
    mode: ALLOW_ANY
    egressProxy: {host: egress.example.com, port: {number: 3128}}
"#);
    let found: Vec<_> = codes(&found)
        .into_iter()
        .filter(|(code, ..)| *code == "IST0002")
        .collect();
    assert_eq!(
        found,
        [
            (
                "IST0002",
                Level::Warning,
                "VirtualService default/ratings",
                "Deprecated: HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage"
            ),
            (
                "IST0002",
                Level::Warning,
                "Sidecar default/default",
                "Deprecated: OutboundTrafficPolicy.EgressProxy ignored"
            ),
        ]
    );
}

#[test]
fn image_auto_needs_an_injector_that_selects_the_pods() {
    let mesh = |namespace_labels: &str| {
        run(&format!(
            r#"{INJECTOR}
---
apiVersion: v1
kind: Service
metadata: {{name: istiod, namespace: istio-system}}
spec: {{selector: {{app: istiod}}, ports: [{{name: https-webhook, port: 443}}]}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: shop, labels: {namespace_labels}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: cart, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: cart}}}}
  template:
    metadata: {{labels: {{app: cart}}}}
    spec: {{containers: [{{name: cart, image: cart}}, {{name: istio-proxy, image: auto}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: cart-manual, namespace: shop, labels: {{app: cart}}}}
spec: {{containers: [{{name: cart, image: cart}}, {{name: istio-proxy, image: auto}}]}}
"#
        ))
        .into_iter()
        .filter(|m| ["IST0146", "IST0147"].contains(&m.code))
        .map(|m| (m.code, m.level, m.origin, m.message))
        .collect::<Vec<_>>()
    };
    let pod = (
        "IST0147",
        Level::Error,
        "Pod shop/cart-manual".to_string(),
        "Pod cart-manual contains `image: auto` but does not match any Istio injection webhook selectors.".to_string(),
    );
    assert_eq!(
        mesh("{istio-injection: enabled}"),
        std::slice::from_ref(&pod)
    );
    assert_eq!(
        mesh("{istio-injection: disabled}"),
        [
            (
                "IST0146",
                Level::Warning,
                "Deployment shop/cart".to_string(),
                "Deployment cart contains `image: auto` but does not match any Istio injection webhook selectors.".to_string(),
            ),
            pod,
        ]
    );
}

#[test]
fn proxies_older_than_the_injector_are_reported_per_namespace() {
    let found = run(r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: istio-sidecar-injector, namespace: istio-system}
data:
  values: '{"global": {"hub": "docker.io/istio", "tag": "1.29.0", "proxy": {"image": "proxyv2"}}}'
---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio-sidecar-injector-canary, namespace: istio-system}
data:
  values: '{"global": {"proxy": {"image": "registry.example/istio/proxyv2:1.30.0"}}}'
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Namespace
metadata: {name: canary, labels: {istio.io/rev: canary}}
---
apiVersion: v1
kind: Pod
metadata: {name: current, namespace: shop}
spec: {containers: [{name: app, image: app}, {name: istio-proxy, image: "docker.io/istio/proxyv2:1.29.0"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: old-1, namespace: shop}
spec: {containers: [{name: app, image: app}, {name: istio-proxy, image: "docker.io/istio/proxyv2:1.28.2"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: old-2, namespace: shop}
spec: {containers: [{name: istio-proxy, image: "docker.io/istio/proxyv2:1.27.0"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: pinned, namespace: shop, annotations: {sidecar.istio.io/proxyImage: "docker.io/istio/proxyv2:1.27.0"}}
spec: {containers: [{name: istio-proxy, image: "docker.io/istio/proxyv2:1.27.0"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: canary-current, namespace: canary}
spec: {containers: [{name: istio-proxy, image: "registry.example/istio/proxyv2:1.30.0"}]}
"#);
    let found: Vec<_> = codes(&found)
        .into_iter()
        .filter(|(code, ..)| *code == "IST0158")
        .collect();
    assert_eq!(
        found,
        [(
            "IST0158",
            Level::Warning,
            "Namespace shop",
            "The Istio proxy images of the pods running in the namespace do not match the image defined in the injection configuration (pod names: [old-1 old-2]). This often happens after upgrading the Istio control-plane and can be fixed by redeploying the pods."
        )]
    );
}

#[test]
fn destination_hosts_must_be_exported_to_the_virtual_service() {
    let found = run(r#"
apiVersion: v1
kind: Service
metadata:
  name: ledger
  namespace: finance
  annotations: {networking.istio.io/exportTo: "audit,."}
spec: {selector: {app: ledger}, ports: [{name: http, port: 8080}]}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: private-catch-all, namespace: sandbox}
spec: {hosts: ["*"], exportTo: ["."], ports: [{number: 443, name: tls, protocol: TLS}], resolution: NONE}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: partners, namespace: shop}
spec: {hosts: ["*.partner.example"], ports: [{number: 443, name: tls, protocol: TLS}], resolution: NONE}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: audit, namespace: audit}
spec:
  hosts: [audit-api]
  http: [{route: [{destination: {host: ledger.finance.svc.cluster.local}}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shop, namespace: shop}
spec:
  hosts: [shop-api]
  http:
  - route: [{destination: {host: ledger.finance.svc.cluster.local}}]
    mirror: {host: api.partner.example}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: own, namespace: finance}
spec:
  hosts: [ledger]
  exportTo: [elsewhere]
  http: [{route: [{destination: {host: ledger}}]}]
"#);
    let found: Vec<_> = codes(&found)
        .into_iter()
        .filter(|(code, ..)| *code == "IST0101")
        .map(|(_, _, origin, text)| (origin, text))
        .collect();
    assert_eq!(
        found,
        [
            (
                "VirtualService shop/shop",
                "Referenced host not found: \"ledger.finance.svc.cluster.local\""
            ),
            (
                "VirtualService finance/own",
                "Referenced host not found: \"ledger\""
            ),
        ]
    );
}

#[test]
fn mesh_networks_must_name_known_registries() {
    let found = run(r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: "rootNamespace: istio-system"
  meshNetworks: |
    networks:
      network1:
        endpoints:
        - fromRegistry: Kubernetes
        gateways: [{address: 1.1.1.1, port: 15443}]
      network2:
        endpoints:
        - fromRegistry: cluster-east
        - fromRegistry: cluster-west
        - fromCidr: 10.0.0.0/16
        gateways: [{registryServiceName: istio-eastwestgateway.istio-system.svc.cluster.local, port: 15443}]
---
apiVersion: v1
kind: Secret
metadata:
  name: istio-remote-secret-east
  namespace: istio-system
  labels: {istio/multiCluster: "true"}
stringData: {cluster-east: "kubeconfig"}
"#);
    // meshNetworks that do not parse are a schema error, not ignored.
    let broken = run(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: istio, namespace: istio-system}\ndata:\n  mesh: \"rootNamespace: istio-system\"\n  meshNetworks: \"networks: [unclosed\"\n",
    );
    assert!(
        broken
            .iter()
            .any(|m| m.code == "IST0106" && m.message.contains("meshNetworks")),
        "{broken:?}"
    );
    assert_eq!(
        codes(&found),
        [(
            "IST0126",
            Level::Error,
            "MeshNetworks istio-system/meshnetworks",
            "Unknown service registry cluster-west in network network2"
        )]
    );
}

#[test]
fn destination_rule_hosts_must_be_services_of_the_mesh() {
    // The example of Istio's IST0174 page, beside a rule for a real host.
    let found = run(&format!(
        "{REVIEWS}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: typo\nspec:\n  host: reveiws\n"
    ));
    let found: Vec<_> = codes(&found)
        .into_iter()
        .filter(|(code, ..)| *code == "IST0174")
        .collect();
    assert_eq!(
        found,
        [(
            "IST0174",
            Level::Warning,
            "DestinationRule default/typo",
            "The host reveiws defined in the DestinationRule does not match any services in the mesh."
        )]
    );
}

#[test]
fn conditions_a_controller_reported_as_negative_are_shown() {
    let found = run(r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: httpbin, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules: [{backendRefs: [{name: httpbin, port: 8000}]}]
status:
  parents:
  - parentRef: {name: gw}
    controllerName: istio.io/gateway-controller
    conditions:
    - {type: Accepted, status: "True", reason: Accepted, message: Route was valid}
    - {type: ResolvedRefs, status: "False", reason: BackendNotFound, message: backend(httpbin.default.svc.cluster.local) not found}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: waypoint-policy, namespace: default}
spec: {action: DENY, rules: [{to: [{operation: {paths: [/admin]}}]}]}
status:
  conditions:
  - {type: WaypointAccepted, status: True, reason: PartiallyInvalid, message: "rule 0: unsupported attribute"}
  - {type: ZtunnelAccepted, status: True, reason: Accepted, message: ok}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec: {selector: {app: reviews}, ports: [{name: http, port: 9080}]}
status:
  conditions: [{type: istio.io/WaypointBound, status: "True", reason: WaypointAccepted, message: bound}]
"#);
    let found: Vec<_> = codes(&found)
        .into_iter()
        .filter(|(code, ..)| *code == "IST0171")
        .map(|(_, level, origin, text)| (level, origin, text))
        .collect();
    assert_eq!(
        found,
        [
            (
                Level::Warning,
                "HTTPRoute default/httpbin",
                "A condition with a negative status is present: type=ResolvedRefs, reason=BackendNotFound, message=backend(httpbin.default.svc.cluster.local) not found."
            ),
            (
                Level::Warning,
                "AuthorizationPolicy default/waypoint-policy",
                "A condition with a negative status is present: type=WaypointAccepted, reason=PartiallyInvalid, message=rule 0: unsupported attribute."
            ),
        ]
    );
}

#[test]
fn webhooks_of_an_external_control_plane_need_a_hostname() {
    let found = run(r#"
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: istio-validator-external-istiod}
webhooks:
- name: rev.validation.istio.io
  clientConfig: {url: "https://35.1.2.3:15017/validate"}
- name: validation.istio.io
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: istio-sidecar-injector-external-istiod}
webhooks:
- name: rev.namespace.sidecar-injector.istio.io
  clientConfig: {url: "https://istiod.example.com:15017/inject/cluster/remote/net/network1"}
- name: object.sidecar-injector.istio.io
  clientConfig: {url: "https://[2001:db8::1]:15017/inject"}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: other-validator}
webhooks:
- name: other.example.com
  clientConfig: {url: "https://10.0.0.1/validate"}
"#);
    let found: Vec<_> = codes(&found)
        .into_iter()
        .filter(|(code, ..)| ["IST0163", "IST0164"].contains(code))
        .collect();
    assert_eq!(
        found,
        [
            (
                "IST0164",
                Level::Info,
                "ValidatingWebhookConfiguration istio-validator-external-istiod",
                "The address (https://35.1.2.3:15017/validate) that was provided for the webhook (rev.validation.istio.io) to reach the ingress gateway on the external control plane cluster is an IP address. This is not recommended for a production environment."
            ),
            (
                "IST0163",
                Level::Warning,
                "ValidatingWebhookConfiguration istio-validator-external-istiod",
                "The hostname () that was provided for the webhook (validation.istio.io) to reach the ingress gateway on the external control plane cluster is blank. Traffic may not flow properly."
            ),
            (
                "IST0164",
                Level::Info,
                "MutatingWebhookConfiguration istio-sidecar-injector-external-istiod",
                "The address (https://[2001:db8::1]:15017/inject) that was provided for the webhook (object.sidecar-injector.istio.io) to reach the ingress gateway on the external control plane cluster is an IP address. This is not recommended for a production environment."
            ),
        ]
    );
}
