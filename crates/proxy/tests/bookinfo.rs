//! Istio's bookinfo routing files, read from the corpus as users would
//! apply them, drive requests through weft sidecars to stand-ins for
//! productpage, reviews v1/v2/v3, ratings and details.

#![allow(clippy::unwrap_used)] // test helpers: a panic is a failed test

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use weft_identity::{Ca, TrustDomain};
use weft_proxy::{Ports, Sidecar};

const NET: u8 = 120;

/// The bookinfo workloads: (WorkloadEntry name, app, version, last octet).
const WORKLOADS: [(&str, &str, &str, u8); 6] = [
    ("productpage-v1", "productpage", "v1", 21),
    ("reviews-v1", "reviews", "v1", 31),
    ("reviews-v2", "reviews", "v2", 32),
    ("reviews-v3", "reviews", "v3", 33),
    ("ratings-v1", "ratings", "v1", 41),
    ("details-v1", "details", "v1", 51),
];

/// The registry bookinfo's Kubernetes Services would give: one
/// ServiceEntry per app, and a WorkloadEntry per Deployment.
fn registry_yaml() -> String {
    let mut out = String::new();
    for (name, app, version, octet) in WORKLOADS {
        out.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: {name}, namespace: default}}\nspec: {{address: 127.0.{NET}.{octet}, serviceAccount: bookinfo-{app}, labels: {{app: {app}, version: {version}}}, ports: {{http: 9080}}}}\n"
        ));
    }
    for app in ["productpage", "reviews", "ratings", "details"] {
        out.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {app}, namespace: default}}\nspec:\n  hosts: [{app}.default.svc.cluster.local]\n  location: MESH_INTERNAL\n  ports: [{{number: 9080, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  workloadSelector: {{labels: {{app: {app}}}}}\n"
        ));
    }
    out
}

fn corpus(file: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/corpus/samples/bookinfo/networking")
        .join(file);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("the Istio corpus is missing ({}): {e}", path.display()))
}

/// productpage's configuration with the registry, every destination rule
/// and the given routing files.
fn productpage_config(files: &[&str]) -> weft_model::ProxyConfig {
    let mut loaded = weft_api::Loaded::default();
    loaded.add_text("registry.yaml", &registry_yaml());
    loaded.add_text(
        "destination-rule-all.yaml",
        &corpus("destination-rule-all.yaml"),
    );
    for f in files {
        loaded.add_text(f, &corpus(f));
    }
    loaded.check_duplicates();
    assert_eq!(loaded.errors(), 0, "{:?}", loaded.diagnostics);
    let found = weft_api::validate(&loaded.resources, None);
    assert!(found.iter().all(|d| !d.is_error()), "{found:?}");
    let registry = weft_model::Registry::from_resources(&loaded.resources);
    weft_model::compile(
        &loaded.resources,
        &registry,
        "default",
        "productpage-v1",
        &weft_model::Mesh::new("cluster.local"),
    )
    .unwrap()
}

/// A stand-in app answering `<app>-<version>`.
async fn app(addr: SocketAddr, name: String) {
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let name = name.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |_req: Request<hyper::body::Incoming>| {
                        let body = name.clone();
                        async move { Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(body)))) }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
}

/// Which stand-ins answered `n` requests to `url`, with `headers`.
async fn answers(
    proxy: SocketAddr,
    url: &str,
    headers: &[(&str, &str)],
    n: usize,
) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for _ in 0..n {
        let (status, body) = common::get(proxy, url, None, headers).await;
        let key = if status == StatusCode::OK {
            body
        } else {
            status.as_u16().to_string()
        };
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

#[tokio::test]
async fn bookinfo_routing_files_route_as_they_describe() {
    let dir = std::env::temp_dir().join(format!("weft-bookinfo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ca = Arc::new(
        Ca::init(
            &dir,
            &TrustDomain::new("cluster.local").unwrap(),
            SystemTime::now(),
        )
        .unwrap(),
    );
    let base = productpage_config(&[]);
    let mut sidecars = Vec::new();
    let mut loaded = weft_api::Loaded::default();
    loaded.add_text("registry.yaml", &registry_yaml());
    let registry = weft_model::Registry::from_resources(&loaded.resources);
    for (name, app_name, version, octet) in WORKLOADS {
        let config = if name == "productpage-v1" {
            base.clone()
        } else {
            weft_model::compile(
                &loaded.resources,
                &registry,
                "default",
                name,
                &weft_model::Mesh::new("cluster.local"),
            )
            .unwrap()
        };
        let sa = format!("bookinfo-{app_name}");
        sidecars.push(
            Sidecar::start(
                config,
                common::store(&ca, &sa),
                common::policy(&ca),
                Ports::default(),
                None,
            )
            .await
            .unwrap(),
        );
        app(
            format!("127.0.{NET}.{octet}:9080").parse().unwrap(),
            format!("{app_name}-{version}"),
        )
        .await;
    }
    let proxy = sidecars[0].outbound_addr();
    let reviews = "http://reviews:9080/reviews/0";
    let ratings = "http://ratings:9080/ratings/0";

    // Without a VirtualService, every version answers.
    let seen = answers(proxy, reviews, &[], 60).await;
    assert_eq!(seen.len(), 3, "{seen:?}");

    sidecars[0].update(productpage_config(&["virtual-service-all-v1.yaml"]));
    assert_eq!(
        answers(proxy, reviews, &[], 20).await,
        HashMap::from([("reviews-v1".to_string(), 20)])
    );
    assert_eq!(
        answers(proxy, "http://details:9080/details/0", &[], 5).await,
        HashMap::from([("details-v1".to_string(), 5)])
    );

    sidecars[0].update(productpage_config(&[
        "virtual-service-reviews-test-v2.yaml",
    ]));
    assert_eq!(
        answers(proxy, reviews, &[("end-user", "jason")], 10).await,
        HashMap::from([("reviews-v2".to_string(), 10)])
    );
    assert_eq!(
        answers(proxy, reviews, &[], 10).await,
        HashMap::from([("reviews-v1".to_string(), 10)])
    );

    sidecars[0].update(productpage_config(&["virtual-service-reviews-v3.yaml"]));
    assert_eq!(
        answers(proxy, reviews, &[], 10).await,
        HashMap::from([("reviews-v3".to_string(), 10)])
    );

    sidecars[0].update(productpage_config(&["virtual-service-reviews-90-10.yaml"]));
    let seen = answers(proxy, reviews, &[], 400).await;
    let v2 = seen.get("reviews-v2").copied().unwrap_or(0);
    assert!((16..=64).contains(&v2), "10% of 400 is 40, sd 6: {seen:?}");
    assert_eq!(seen.get("reviews-v1").copied().unwrap_or(0) + v2, 400);

    sidecars[0].update(productpage_config(&[
        "virtual-service-reviews-jason-v2-v3.yaml",
    ]));
    assert_eq!(
        answers(proxy, reviews, &[("end-user", "jason")], 10).await,
        HashMap::from([("reviews-v2".to_string(), 10)])
    );
    assert_eq!(
        answers(proxy, reviews, &[], 10).await,
        HashMap::from([("reviews-v3".to_string(), 10)])
    );

    sidecars[0].update(productpage_config(&[
        "virtual-service-ratings-test-abort.yaml",
    ]));
    assert_eq!(
        answers(proxy, ratings, &[("end-user", "jason")], 10).await,
        HashMap::from([("500".to_string(), 10)])
    );
    assert_eq!(
        answers(proxy, ratings, &[], 10).await,
        HashMap::from([("ratings-v1".to_string(), 10)])
    );

    // Istio's authz-http task, its files applied one by one to every
    // workload, checked with productpage's calls.
    let task = |n: usize| {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
            "../../../shared/corpus/docs-examples/tasks/security/authorization/authz-http/authz-http-0{n}.yaml"
        ));
        std::fs::read_to_string(&path).unwrap()
    };
    let details = "http://details:9080/details/0";
    let mut policies = String::new();
    for (n, expect) in [
        (1, [403, 403, 403]),
        (2, [403, 403, 403]),
        (3, [200, 403, 403]),
        (4, [200, 200, 403]),
        (5, [200, 200, 403]),
    ] {
        policies.push_str("\n---\n");
        policies.push_str(&task(n));
        let yaml = format!("{}\n---\n{policies}", registry_yaml());
        for (sidecar, (name, ..)) in sidecars.iter().zip(WORKLOADS) {
            sidecar.update(common::compile(&yaml, "default", name));
        }
        let status =
            |url: &'static str| async move { common::get(proxy, url, None, &[]).await.0.as_u16() };
        let seen = [
            status(details).await,
            status(reviews).await,
            status(ratings).await,
        ];
        // ratings admits bookinfo-reviews only, not productpage.
        assert_eq!(
            seen, expect,
            "after authz-http-0{n}: details, reviews, ratings"
        );
    }
}
