//! What the control plane pays and sends when one endpoint changes in a
//! mesh of 1,000 services (100 namespaces of 10, 3 endpoints each), for
//! one proxy. The baseline resends the whole compiled configuration, as a
//! push without sections would; weft sends the sections that changed. Also
//! the size of a proxy's configuration when a Sidecar narrows it to its own
//! namespace, against the unscoped one. Best of N rounds; ratios to the
//! baseline. Run: `cargo bench -p weft-model --bench push`.

use std::time::Instant;

use weft_model::sections::Sections;
use weft_model::{Mesh, Registry, compile};

const ROUNDS: usize = 7;

fn mesh(moved: bool, sidecar: bool) -> String {
    let mut out = String::from(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: client, namespace: ns0}\nspec: {address: 10.1.0.1, serviceAccount: client, ports: {http: 8000}}\n",
    );
    if sidecar {
        out.push_str("---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: default, namespace: ns0}\nspec: {egress: [{hosts: [\"./*\"]}]}\n");
    }
    for ns in 0..100 {
        for s in 0..10 {
            // The one change: svc0.ns50's first endpoint moves.
            let first = if moved && ns == 50 && s == 0 { 250 } else { 1 };
            out.push_str(&format!(
                "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc{s}, namespace: ns{ns}}}\nspec: {{hosts: [svc{s}.ns{ns}.svc.cluster.local], location: MESH_INTERNAL, ports: [{{number: 80, name: http, protocol: HTTP}}], resolution: STATIC, endpoints: [{{address: 10.{ns}.{s}.{first}}}, {{address: 10.{ns}.{s}.2}}, {{address: 10.{ns}.{s}.3}}]}}\n"
            ));
        }
    }
    out
}

fn load(yaml: &str) -> (Vec<weft_api::Resource>, Registry) {
    let mut l = weft_api::Loaded::default();
    l.add_text("bench.yaml", yaml);
    assert_eq!(l.errors(), 0);
    let registry = Registry::from_resources(&l.resources);
    (l.resources, registry)
}

fn best(mut f: impl FnMut() -> usize) -> (f64, usize) {
    let mut bytes = 0;
    let ms = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            bytes = f();
            t.elapsed().as_secs_f64() * 1000.0
        })
        .fold(f64::MAX, f64::min);
    (ms, bytes)
}

fn main() {
    let m = Mesh::new("cluster.local");
    let (before, before_reg) = load(&mesh(false, false));
    let (after, after_reg) = load(&mesh(true, false));
    let old = Sections::of(compile(&before, &before_reg, "ns0", "client", &m).expect("compiles"));

    // Baseline: compile, then the whole configuration on the wire.
    let (base_ms, base_bytes) = best(|| {
        let c = compile(&after, &after_reg, "ns0", "client", &m).expect("compiles");
        serde_json::to_vec(&c).expect("json").len()
    });
    // weft: compile, cut into sections, send what differs from the ACKed.
    let (weft_ms, weft_bytes) = best(|| {
        let c = compile(&after, &after_reg, "ns0", "client", &m).expect("compiles");
        let next = Sections::of(c);
        let (changed, removed) = old.diff(&next);
        assert_eq!(
            (changed.len(), removed.len()),
            (1, 0),
            "one cluster changed"
        );
        changed
            .iter()
            .map(|(n, s)| n.len() + s.json.len())
            .sum::<usize>()
            + removed.iter().map(String::len).sum::<usize>()
    });
    let (scoped, scoped_reg) = load(&mesh(false, true));
    let full = compile(&before, &before_reg, "ns0", "client", &m).expect("compiles");
    let narrow = compile(&scoped, &scoped_reg, "ns0", "client", &m).expect("compiles");
    let size = |c: &weft_model::ProxyConfig| serde_json::to_vec(c).expect("json").len();

    println!(
        "| one endpoint of 3,000 changes, one proxy | ms (compile + encode) | bytes sent | vs. baseline (time, bytes) |"
    );
    println!("| --- | --- | --- | --- |");
    println!("| baseline: the whole configuration | {base_ms:.2} | {base_bytes} | 1.00x, 1.00x |");
    println!(
        "| weft: changed sections only | {weft_ms:.2} | {weft_bytes} | {:.2}x, {:.4}x |",
        weft_ms / base_ms,
        weft_bytes as f64 / base_bytes as f64
    );
    println!(
        "configuration size: all 1,000 services {} bytes; Sidecar `./*` {} bytes ({:.3}x)",
        size(&full),
        size(&narrow),
        size(&narrow) as f64 / size(&full) as f64
    );
}
