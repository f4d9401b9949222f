//! Analyzing 10,000 resources (2,000 each of Service, WorkloadEntry,
//! DestinationRule, VirtualService with a regex match, and ServiceEntry,
//! across 50 namespaces), against the
//! baseline of loading the same YAML (parse, positions, typed resources)
//! in the same run. Best of 5; ratios to the baseline.
//! Run: `cargo bench -p weft-analyze --bench analyze`.

use std::time::Instant;

const EACH: usize = 2_000;

fn mesh() -> String {
    let mut out = String::new();
    for i in 0..EACH {
        let ns = format!("ns{}", i % 50);
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata: {{name: svc{i}, namespace: {ns}, annotations: {{networking.istio.io/exportTo: \".\"}}}}\nspec: {{selector: {{app: svc{i}}}, ports: [{{name: http, port: 80}}]}}\n\
---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {{name: svc{i}-v1, namespace: {ns}}}\nspec: {{address: 10.{}.{}.1, labels: {{app: svc{i}, version: v1}}}}\n\
---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc{i}, namespace: {ns}}}\nspec: {{host: svc{i}, subsets: [{{name: v1, labels: {{version: v1}}}}], trafficPolicy: {{outlierDetection: {{consecutive5xxErrors: 5}}}}}}\n\
---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: svc{i}, namespace: {ns}}}\nspec: {{hosts: [svc{i}], http: [{{match: [{{uri: {{regex: \"/api/v[0-9]+/items/[a-z0-9-]+\"}}}}], route: [{{destination: {{host: svc{i}, subset: v1}}}}], timeout: 2s}}]}}\n\
---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: ext{i}, namespace: {ns}}}\nspec: {{hosts: [api{i}.example.com], ports: [{{number: 443, name: https, protocol: TLS}}], resolution: DNS}}\n",
            i / 250,
            i % 250
        ));
    }
    out
}

fn best<T>(mut f: impl FnMut() -> T) -> (f64, T) {
    let mut out = None;
    let ms = (0..5)
        .map(|_| {
            let t = Instant::now();
            out = Some(f());
            t.elapsed().as_secs_f64() * 1000.0
        })
        .fold(f64::MAX, f64::min);
    (ms, out.unwrap_or_else(|| unreachable!("five rounds ran")))
}

fn main() {
    let yaml = mesh();
    let (load_ms, loaded) = best(|| {
        let mut l = weft_api::Loaded::default();
        l.add_text("bench.yaml", &yaml);
        l
    });
    assert_eq!(loaded.resources.len(), 5 * EACH);
    let (analyze_ms, found) = best(|| weft_analyze::analyze(&loaded.resources));
    assert!(found.is_empty(), "{:?}", found.first());
    let (readiness_ms, _) = best(|| {
        let inputs = weft_analyze::readiness::Inputs {
            root: "istio-system",
            mesh: None,
            untracked: &[],
        };
        weft_analyze::readiness::readiness(&loaded.resources, &inputs)
    });
    println!("| step, 10,000 resources | ms | vs. baseline |");
    println!("| --- | --- | --- |");
    println!("| baseline: load (parse, positions, typed resources) | {load_ms:.1} | 1.00x |");
    println!(
        "| analyze (Istio's analyzers) | {analyze_ms:.1} | {:.2}x |",
        analyze_ms / load_ms
    );
    println!(
        "| readiness checks | {readiness_ms:.1} | {:.2}x |",
        readiness_ms / load_ms
    );
}
