//! The fuzz target's property without a fuzzer: mutations of real Istio
//! YAML never panic the loader or the validator, and every error they
//! produce points inside the input.

use std::path::{Path, PathBuf};

use weft_api::{Loaded, load_mesh_config, validate};

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn check(text: &str) {
    let mut loaded = Loaded::default();
    loaded.add_text("m.yaml", text);
    loaded.check_duplicates();
    let lines = u32::try_from(text.lines().count()).unwrap_or(u32::MAX) + 1;
    for d in validate(&loaded.resources, None)
        .iter()
        .chain(&loaded.diagnostics)
    {
        assert!(d.pos.line <= lines, "{d} is past the end of:\n{text}");
    }
    let _ = load_mesh_config("mesh.yaml", text);
}

fn samples() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    assert!(
        root.is_dir(),
        "the Istio corpus is missing: expected ../shared/corpus beside the repository"
    );
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![
        root.join("samples/bookinfo"),
        root.join("api-reference-examples"),
    ];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(
                std::fs::read_dir(&p)
                    .expect("readable")
                    .map(|e| e.expect("entry").path()),
            );
        } else if p.extension().is_some_and(|e| e == "yaml") {
            out.push(std::fs::read_to_string(&p).expect("utf-8"));
        }
    }
    out.sort();
    out
}

#[test]
fn mutated_corpus_never_panics() {
    let samples = samples();
    assert!(samples.len() > 50);
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    const ALPHABET: &[u8] = b" :-[]{}\n\"'&*!|>#%@,?0123456789aZ_.~/\t";
    for round in 0..3000 {
        let base = samples[rng.below(samples.len())].as_bytes();
        let mut bytes = base.to_vec();
        let edits = 1 + rng.below(4);
        for _ in 0..edits {
            let at = rng.below(bytes.len() + 1);
            match rng.below(4) {
                0 => bytes.truncate(at),
                1 if at < bytes.len() => bytes[at] = ALPHABET[rng.below(ALPHABET.len())],
                2 => bytes.insert(at.min(bytes.len()), ALPHABET[rng.below(ALPHABET.len())]),
                _ => {
                    let other = samples[rng.below(samples.len())].as_bytes();
                    let from = rng.below(other.len());
                    let len = rng.below(200).min(other.len() - from);
                    let at = at.min(bytes.len());
                    bytes.splice(at..at, other[from..from + len].iter().copied());
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let result = std::panic::catch_unwind(|| check(&text));
        assert!(result.is_ok(), "round {round} panicked on:\n{text}");
    }
}

#[test]
fn hostile_shapes_are_refused_cleanly() {
    for text in [
        "",
        "---\n---\n",
        "apiVersion: [1]\nkind: {a: b}\n",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: []\n",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec: [1, 2]\n",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  http:\n  - route: 5\n",
        "apiVersion: v1\nkind: List\nitems: 3\n",
        "apiVersion: v1\nkind: List\nitems:\n- 1\n- [a]\n",
        "? [a, b]\n: c\n",
        "a: &x [*x]\n",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  http:\n  - timeout: 99999999999999999999h\n    route: [{destination: {host: a}}]\n",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\nspec:\n  hosts: [\"\\u0000\"]\n",
    ] {
        check(text);
    }
}
