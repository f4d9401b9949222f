//! Request identity and trace context, created when missing and passed on:
//! `x-request-id`, W3C `traceparent`, and Zipkin's B3 headers. A proxy
//! continues the caller's trace with a new span of its own.

use http::{HeaderMap, HeaderValue};

thread_local! {
    /// Trace and request IDs need uniqueness, not secrecy: a per-thread
    /// generator seeded once from the OS saves a system call per ID.
    static RNG: std::cell::Cell<u64> = std::cell::Cell::new({
        let mut seed = [0u8; 8];
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
        u64::from_le_bytes(seed) | 1
    });
}

/// SplitMix64 over the thread's state.
fn next_u64() -> u64 {
    RNG.with(|s| {
        let x = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(x);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

fn fill(buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        let r = next_u64().to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    fill(&mut buf);
    hex(&buf)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// A UUID v4, as Envoy generates `x-request-id`.
fn uuid() -> String {
    let mut b = [0u8; 16];
    fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Makes sure the request carries a request ID and trace context, with a
/// new span for the hop this proxy makes; returns the request ID.
pub fn propagate(headers: &mut HeaderMap) -> String {
    let request_id = match headers.get("x-request-id").and_then(|v| v.to_str().ok()) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => {
            let id = uuid();
            set(headers, "x-request-id", &id);
            id
        }
    };
    let span = random_hex(8);
    // W3C: version-traceid-parentid-flags.
    let incoming = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|tp| {
            let parts: Vec<&str> = tp.split('-').collect();
            match parts.as_slice() {
                ["00", trace, _parent, flags] if trace.len() == 32 && flags.len() == 2 => {
                    Some((trace.to_string(), flags.to_string()))
                }
                _ => None,
            }
        });
    let b3_trace = headers
        .get("x-b3-traceid")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (trace, flags) = match (incoming, &b3_trace) {
        (Some(t), _) => t,
        (None, Some(t)) if t.len() == 32 => (t.clone(), "01".into()),
        (None, Some(t)) if t.len() == 16 => (format!("{:0>32}", t), "01".into()),
        _ => (random_hex(16), "01".into()),
    };
    set(
        headers,
        "traceparent",
        &format!("00-{trace}-{span}-{flags}"),
    );
    let parent = headers
        .get("x-b3-spanid")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    set(
        headers,
        "x-b3-traceid",
        b3_trace.as_deref().unwrap_or(&trace),
    );
    set(headers, "x-b3-spanid", &span);
    if let Some(parent) = parent {
        set(headers, "x-b3-parentspanid", &parent);
    }
    if !headers.contains_key("x-b3-sampled") {
        set(headers, "x-b3-sampled", "1");
    }
    request_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_context_is_created() {
        let mut h = HeaderMap::new();
        let id = propagate(&mut h);
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        let tp = h["traceparent"].to_str().unwrap();
        assert!(
            tp.starts_with("00-") && tp.ends_with("-01") && tp.len() == 55,
            "{tp}"
        );
        assert_eq!(h["x-b3-traceid"].to_str().unwrap(), &tp[3..35]);
    }

    #[test]
    fn incoming_context_is_continued_with_a_new_span() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc"));
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        h.insert("x-b3-spanid", HeaderValue::from_static("00f067aa0ba902b7"));
        assert_eq!(propagate(&mut h), "abc");
        let tp = h["traceparent"].to_str().unwrap();
        assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(!tp.contains("00f067aa0ba902b7"));
        assert_eq!(h["x-b3-parentspanid"], "00f067aa0ba902b7");
    }
}
