//! Request identity and trace context: `x-request-id`, W3C `traceparent`
//! and Zipkin's B3 headers. weft reports no spans, so it starts none inside
//! a caller's trace: a span ID that nobody reports would leave the app's
//! spans pointing at a parent that never arrives. A request's context
//! passes through unchanged, as Linkerd's proxy passes it when it has no
//! collector. What is missing is created: a request ID, and a new trace
//! when the request has none. A context in only one of the two formats is
//! written in the other too, naming the same trace and span.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use std::ops::Range;

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

pub(crate) const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const X_B3_TRACEID: HeaderName = HeaderName::from_static("x-b3-traceid");
const X_B3_SPANID: HeaderName = HeaderName::from_static("x-b3-spanid");
const X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");

/// Whether `id` is all hex digits, as trace and span IDs are written.
fn is_hex(id: &[u8]) -> bool {
    id.iter().all(u8::is_ascii_hexdigit)
}

/// A W3C `traceparent` (version-traceid-parentid-flags): its trace ID, span
/// ID and flags. Version 00 has fixed widths: 2-32-16-2 hex digits.
fn traceparent(tp: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    if tp.len() != 55 || !tp.starts_with(b"00-") || tp[35] != b'-' || tp[52] != b'-' {
        return None;
    }
    let (trace, span, flags) = (&tp[3..35], &tp[36..52], &tp[53..]);
    (is_hex(trace) && is_hex(span) && is_hex(flags)).then_some((trace, span, flags))
}

fn fill(buf: &mut [u8]) {
    for chunk in buf.chunks_mut(8) {
        let r = next_u64().to_le_bytes();
        chunk.copy_from_slice(&r[..chunk.len()]);
    }
}

/// The values this proxy writes, side by side in one buffer, so that the
/// headers made from it share one allocation: at most a request ID (36
/// bytes) and a `traceparent` (55), which B3's IDs are slices of.
struct Written {
    buf: [u8; 96],
    len: usize,
}

impl Written {
    fn put(&mut self, bytes: &[u8]) -> Range<usize> {
        let start = self.len;
        self.len += bytes.len();
        self.buf[start..self.len].copy_from_slice(bytes);
        start..self.len
    }

    /// `bytes` in lowercase hex.
    fn hex(&mut self, bytes: &[u8]) -> Range<usize> {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let start = self.len;
        self.len += 2 * bytes.len();
        for (pair, b) in self.buf[start..self.len].chunks_exact_mut(2).zip(bytes) {
            pair[0] = DIGITS[usize::from(b >> 4)];
            pair[1] = DIGITS[usize::from(b & 15)];
        }
        start..self.len
    }

    /// `N` random bytes in hex.
    fn random_hex<const N: usize>(&mut self) -> Range<usize> {
        let mut b = [0u8; N];
        fill(&mut b);
        self.hex(&b)
    }

    /// A UUID v4, as Envoy generates `x-request-id`.
    fn uuid(&mut self) -> Range<usize> {
        let mut b = [0u8; 16];
        fill(&mut b);
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let start = self.len;
        for (i, part) in [&b[..4], &b[4..6], &b[6..8], &b[8..10], &b[10..]]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                self.put(b"-");
            }
            self.hex(part);
        }
        start..self.len
    }
}

/// What a request carries of its identity and trace context.
#[derive(Default)]
struct Carried<'a> {
    request_id: bool,
    traceparent: Option<&'a [u8]>,
    b3_trace: Option<&'a [u8]>,
    b3_span: Option<&'a [u8]>,
    b3_sampled: Option<&'a [u8]>,
}

impl<'a> Carried<'a> {
    /// One pass over the headers, cheaper than a lookup of each name.
    fn find(headers: &'a HeaderMap) -> Carried<'a> {
        let mut c = Carried::default();
        for (name, value) in headers {
            let value = Some(value.as_bytes());
            match name.as_str() {
                "x-request-id" => c.request_id |= value.is_some_and(|v| !v.is_empty()),
                "traceparent" => c.traceparent = c.traceparent.or(value),
                "x-b3-traceid" => c.b3_trace = c.b3_trace.or(value),
                "x-b3-spanid" => c.b3_span = c.b3_span.or(value),
                "x-b3-sampled" => c.b3_sampled = c.b3_sampled.or(value),
                _ => {}
            }
        }
        c
    }
}

/// Makes sure the request carries a request ID and trace context in both
/// formats; what it has passes unchanged.
pub fn propagate(headers: &mut HeaderMap) {
    let carried = Carried::find(headers);
    let mut out = Written {
        buf: [0; 96],
        len: 0,
    };
    let request_id = (!carried.request_id).then(|| out.uuid());
    // Ranges of `out` for the headers to write, and B3's sampling decision
    // when it is missing.
    let (mut tp, mut b3_trace, mut b3_span, mut b3_sampled) = (None, None, None, None);
    match carried.traceparent.and_then(traceparent) {
        // W3C's context, copied into B3's headers when they are missing.
        Some((trace, span, flags)) => {
            if carried.b3_trace.is_none() {
                b3_trace = Some(out.put(trace));
                b3_span = Some(out.put(span));
                b3_sampled = Some(b"13579bdfBDF".contains(&flags[1]));
            }
        }
        // B3's context as a traceparent; or a new span, in B3's trace when
        // it names one (a 64-bit one padded to 128 bits), else in a new
        // trace. B3 keeps a trace ID it has as it was.
        None => {
            let trace = carried
                .b3_trace
                .filter(|t| (t.len() == 32 || t.len() == 16) && is_hex(t));
            let span = carried.b3_span.filter(|s| s.len() == 16 && is_hex(s));
            let unsampled = carried
                .b3_sampled
                .is_some_and(|v| v == b"0" || v == b"false");
            let start = out.put(b"00-").start;
            let trace_ids = match trace {
                Some(t) => {
                    let pad = out.put(&[b'0'; 16][..32 - t.len()]).start;
                    pad..out.put(t).end
                }
                None => out.random_hex::<16>(),
            };
            out.put(b"-");
            let span_id = match (trace, span) {
                (Some(_), Some(s)) => out.put(s),
                _ => out.random_hex::<8>(),
            };
            out.put(if unsampled { b"-00" } else { b"-01" });
            tp = Some(start..out.len);
            if carried.b3_trace.is_none() {
                b3_trace = Some(trace_ids);
            }
            if trace.is_none() || span.is_none() {
                b3_span = Some(span_id);
            }
            b3_sampled = Some(!unsampled);
        }
    }
    if carried.b3_sampled.is_some() {
        b3_sampled = None;
    }
    let buf = Bytes::copy_from_slice(&out.buf[..out.len]);
    for (name, range) in [
        (X_REQUEST_ID, request_id),
        (TRACEPARENT, tp),
        (X_B3_TRACEID, b3_trace),
        (X_B3_SPANID, b3_span),
    ] {
        let value = range.and_then(|r| HeaderValue::from_maybe_shared(buf.slice(r)).ok());
        if let Some(value) = value {
            headers.insert(name, value);
        }
    }
    if let Some(sampled) = b3_sampled {
        let v = if sampled { "1" } else { "0" };
        headers.insert(X_B3_SAMPLED, HeaderValue::from_static(v));
    }
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
            (format!("00-{trace}-00f067aa0ba902g7-01"), false),
        ] {
            assert_eq!(traceparent(tp.as_bytes()).is_some(), continued, "{tp}");
        }
    }

    /// The headers of a request, as text, after `propagate`.
    fn propagated(given: &[(&'static str, &'static str)]) -> Vec<(String, String)> {
        let mut h = HeaderMap::new();
        for (k, v) in given {
            h.append(*k, HeaderValue::from_static(v));
        }
        propagate(&mut h);
        let mut out: Vec<_> = h
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        out.sort();
        out
    }

    fn owned(h: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut out: Vec<_> = h
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        out.sort();
        out
    }

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_full_context_passes_unchanged() {
        let given = [
            ("x-request-id", "abc"),
            ("traceparent", TP),
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "1"),
            ("user-agent", "curl/8"),
        ];
        assert_eq!(propagated(&given), owned(&given));
    }

    #[test]
    fn a_w3c_context_is_written_in_b3_naming_the_same_span() {
        let sampled = propagated(&[("x-request-id", "abc"), ("traceparent", TP)]);
        assert_eq!(
            sampled,
            owned(&[
                ("x-request-id", "abc"),
                ("traceparent", TP),
                ("x-b3-traceid", TRACE),
                ("x-b3-spanid", "00f067aa0ba902b7"),
                ("x-b3-sampled", "1"),
            ])
        );
        let unsampled = propagated(&[
            ("x-request-id", "abc"),
            (
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            ),
        ]);
        assert!(unsampled.contains(&("x-b3-sampled".into(), "0".into())));
    }

    #[test]
    fn a_b3_context_is_written_as_a_traceparent_a_64_bit_trace_padded() {
        let given = [
            ("x-request-id", "abc"),
            ("x-b3-traceid", "a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "0"),
        ];
        let mut expected = given.to_vec();
        expected.push((
            "traceparent",
            "00-0000000000000000a3ce929d0e0e4736-00f067aa0ba902b7-00",
        ));
        assert_eq!(propagated(&given), owned(&expected));
    }

    #[test]
    fn a_b3_trace_without_a_span_gets_a_new_span_in_that_trace() {
        let h = propagated(&[("x-request-id", "abc"), ("x-b3-traceid", TRACE)]);
        let get = |name: &str| &h.iter().find(|(k, _)| k == name).unwrap().1;
        assert_eq!(get("x-b3-traceid"), TRACE);
        let span = get("x-b3-spanid");
        assert_eq!(span.len(), 16);
        assert_eq!(get("traceparent"), &format!("00-{TRACE}-{span}-01"));
        assert_eq!(get("x-b3-sampled"), "1");
    }

    #[test]
    fn an_invalid_traceparent_is_replaced_by_a_new_trace() {
        let h = propagated(&[
            ("traceparent", "01-garbage"),
            ("x-request-id", ""),
            ("x-b3-spanid", "short"),
        ]);
        // Each is replaced, not joined by a second value.
        for name in ["traceparent", "x-request-id", "x-b3-spanid"] {
            assert_eq!(h.iter().filter(|(k, _)| k == name).count(), 1, "{name}");
        }
        let get = |name: &str| &h.iter().find(|(k, _)| k == name).unwrap().1;
        let tp = get("traceparent");
        assert_eq!(tp.len(), 55);
        assert_eq!(&tp[3..35], get("x-b3-traceid"));
        assert_eq!(&tp[36..52], get("x-b3-spanid"));
        assert_eq!(get("x-request-id").len(), 36);
    }
}
