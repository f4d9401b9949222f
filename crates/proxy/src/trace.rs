//! Request identity and trace context, created when missing and passed on:
//! `x-request-id`, W3C `traceparent`, and Zipkin's B3 headers. A proxy
//! continues the caller's trace with a new span of its own.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

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

pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
const X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
const X_B3_PARENTSPANID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");

/// Appends `bytes` to `out` in lowercase hex.
fn hex(bytes: &[u8], out: &mut Vec<u8>) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

/// Appends `N` random bytes in hex.
fn random_hex<const N: usize>(out: &mut Vec<u8>) {
    let mut b = [0u8; N];
    fill(&mut b);
    hex(&b, out);
}

/// Appends a UUID v4, as Envoy generates `x-request-id`.
fn uuid(out: &mut Vec<u8>) {
    let mut b = [0u8; 16];
    fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    for (i, part) in [&b[..4], &b[4..6], &b[6..8], &b[8..10], &b[10..]]
        .into_iter()
        .enumerate()
    {
        if i > 0 {
            out.push(b'-');
        }
        hex(part, out);
    }
}

/// A W3C `traceparent` (version-traceid-parentid-flags): its trace ID and
/// flags. Version 00 has fixed widths: 2-32-16-2 characters.
fn traceparent(tp: &str) -> Option<(&str, &str)> {
    let b = tp.as_bytes();
    if b.len() != 55 || !tp.starts_with("00-") || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    Some((tp.get(3..35)?, tp.get(53..)?))
}

/// Makes sure the request carries a request ID and trace context, with a
/// new span for the hop this proxy makes. The values it writes share one
/// buffer, so copying the headers later copies no bytes.
pub fn propagate(headers: &mut HeaderMap) {
    let text = |name: &HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let has_id = text(&X_REQUEST_ID).is_some_and(|id| !id.is_empty());
    let has_b3_trace = text(&X_B3_TRACEID).is_some();
    let mut buf = Vec::with_capacity(36 + 55 + 32);
    let id = (!has_id).then(|| {
        uuid(&mut buf);
        0..buf.len()
    });
    // traceparent: the caller's trace and flags, else B3's trace (a 64-bit
    // one padded), else a new trace; always a new span.
    let tp = buf.len();
    buf.extend_from_slice(b"00-");
    match text(&TRACEPARENT).and_then(traceparent) {
        Some((trace, flags)) => {
            buf.extend_from_slice(trace.as_bytes());
            buf.push(b'-');
            random_hex::<8>(&mut buf);
            buf.push(b'-');
            buf.extend_from_slice(flags.as_bytes());
        }
        None => {
            match text(&X_B3_TRACEID) {
                Some(t) if t.len() == 32 => buf.extend_from_slice(t.as_bytes()),
                Some(t) if t.len() == 16 => {
                    buf.extend_from_slice(&[b'0'; 16]);
                    buf.extend_from_slice(t.as_bytes());
                }
                _ => random_hex::<16>(&mut buf),
            }
            buf.push(b'-');
            random_hex::<8>(&mut buf);
            // B3's sampling decision, when it says no, carries over.
            let unsampled = text(&X_B3_SAMPLED).is_some_and(|v| v == "0" || v == "false");
            buf.extend_from_slice(if unsampled { b"-00" } else { b"-01" });
        }
    }
    let traceparent = tp..buf.len();
    let trace = tp + 3..tp + 35;
    let span = tp + 36..tp + 52;
    let buf = Bytes::from(buf);
    // Sets a header to part of the buffer; gives back the value it replaced.
    let mut set = |name: HeaderName, range: std::ops::Range<usize>| {
        let v = HeaderValue::from_maybe_shared(buf.slice(range)).ok()?;
        headers.insert(name, v)
    };
    if let Some(id) = id {
        set(X_REQUEST_ID, id);
    }
    set(TRACEPARENT, traceparent);
    // B3 keeps the caller's trace ID as it was.
    if !has_b3_trace {
        set(X_B3_TRACEID, trace);
    }
    // The caller's span is this hop's parent.
    let parent = set(X_B3_SPANID, span).filter(|v| v.to_str().is_ok());
    if let Some(parent) = parent {
        headers.insert(X_B3_PARENTSPANID, parent);
    }
    headers
        .entry(X_B3_SAMPLED)
        .or_insert(HeaderValue::from_static("1"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_context_is_created() {
        let mut h = HeaderMap::new();
        propagate(&mut h);
        let id = h["x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_eq!(&id[14..15], "4");
        let tp = h["traceparent"].to_str().unwrap();
        assert!(
            tp.starts_with("00-") && tp.ends_with("-01") && tp.len() == 55,
            "{tp}"
        );
        assert_eq!(h["x-b3-traceid"].to_str().unwrap(), &tp[3..35]);
    }

    #[test]
    fn only_version_00_traceparents_of_its_widths_are_continued() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        for (tp, continued) in [
            (format!("00-{trace}-00f067aa0ba902b7-01"), true),
            (format!("01-{trace}-00f067aa0ba902b7-01"), false),
            (format!("00-{trace}-00f067aa0ba902b-01"), false),
            (format!("00-{trace}-00f067aa0ba902b7-01-x"), false),
            (format!("00-{trace}x00f067aa0ba902b7-01"), false),
            // 55 bytes, not 55 characters: refused, not sliced mid-character.
            ("00-\u{e9}".repeat(11), false),
        ] {
            assert_eq!(traceparent(&tp).is_some(), continued, "{tp}");
        }
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
        propagate(&mut h);
        assert_eq!(h["x-request-id"], "abc");
        let tp = h["traceparent"].to_str().unwrap();
        assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(!tp.contains("00f067aa0ba902b7"));
        assert_eq!(h["x-b3-parentspanid"], "00f067aa0ba902b7");
    }

    #[test]
    fn a_b3_only_trace_is_continued_and_a_64_bit_one_padded() {
        let mut h = HeaderMap::new();
        h.insert("x-b3-traceid", HeaderValue::from_static("a3ce929d0e0e4736"));
        h.insert("x-b3-spanid", HeaderValue::from_static("00f067aa0ba902b7"));
        h.insert("x-b3-sampled", HeaderValue::from_static("0"));
        propagate(&mut h);
        let tp = h["traceparent"].to_str().unwrap();
        assert!(
            tp.starts_with("00-0000000000000000a3ce929d0e0e4736-"),
            "{tp}"
        );
        // Not sampled by B3, not sampled in W3C's flags.
        assert!(tp.ends_with("-00"), "{tp}");
        // B3 keeps the caller's trace ID and sampling; the span is new.
        assert_eq!(h["x-b3-traceid"], "a3ce929d0e0e4736");
        assert_eq!(h["x-b3-sampled"], "0");
        assert_eq!(h["x-b3-parentspanid"], "00f067aa0ba902b7");
        let span = h["x-b3-spanid"].to_str().unwrap();
        assert_eq!(span.len(), 16);
        assert_eq!(&tp[36..52], span);
    }
}
