//! Request path normalization before authorization and routing, as
//! MeshConfig `pathNormalization` selects it (Envoy's behaviour under
//! Istio's modes). BASE, the default: percent-encoded unreserved
//! characters are decoded and other escapes uppercased, backslashes become
//! slashes, and dot segments are resolved (RFC 3986 §6.2.2 and §5.2.4).
//! MERGE_SLASHES also merges repeated slashes; DECODE_AND_MERGE_SLASHES
//! first decodes `%2F` and `%5C` too. NONE leaves the path alone. A
//! fragment is dropped, the query is kept apart (never matched as path),
//! and a NUL, raw or encoded, is refused.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Normalization {
    None,
    #[default]
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    #[error("the path contains a NUL character")]
    Nul,
    #[error("the path is not absolute")]
    NotAbsolute,
}

/// A normalized request target: the path that authorization and routing
/// see, and the query (without `?`) passed on as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub path: String,
    pub query: Option<String>,
}

impl Target {
    /// Path and query as sent on to the application.
    pub fn to_uri_string(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Whether `target` is already what [`normalize`] makes of it, so the
/// request can go on untouched (the common case, checked without
/// allocating): no escapes, backslashes, fragment, NUL or dot segments,
/// and no repeated slashes when they would be merged.
pub fn is_normal(target: &str, mode: Normalization) -> bool {
    let path = target.split('?').next().unwrap_or(target);
    if target.contains(['#', '\0']) || path.contains('%') {
        return false;
    }
    if mode == Normalization::None {
        return true;
    }
    let merges = matches!(
        mode,
        Normalization::MergeSlashes | Normalization::DecodeAndMergeSlashes
    );
    let dots = path.split('/').any(|s| s == "." || s == "..");
    let repeated = merges && path.contains("//");
    path.starts_with('/') && !path.contains('\\') && !dots && !repeated
}

/// Normalizes an origin-form request target (`/path?query#fragment`).
pub fn normalize(target: &str, mode: Normalization) -> Result<Target, NormalizeError> {
    let target = target.split_once('#').map_or(target, |(t, _)| t);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (target, None),
    };
    if path.contains('\0') || contains_encoded_nul(path) {
        return Err(NormalizeError::Nul);
    }
    if mode == Normalization::None {
        return Ok(Target {
            path: path.to_string(),
            query,
        });
    }
    if !path.starts_with('/') && !path.starts_with('\\') {
        return Err(NormalizeError::NotAbsolute);
    }
    let decoded = decode(path, mode == Normalization::DecodeAndMergeSlashes);
    let slashed = decoded.replace('\\', "/");
    let merged = if matches!(
        mode,
        Normalization::MergeSlashes | Normalization::DecodeAndMergeSlashes
    ) {
        merge_slashes(&slashed)
    } else {
        slashed
    };
    Ok(Target {
        path: remove_dot_segments(&merged),
        query,
    })
}

fn contains_encoded_nul(path: &str) -> bool {
    path.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'0' && w[2] == b'0')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes escapes of unreserved characters (and of `/` and `\` when
/// `slashes`); uppercases the rest.
fn decode(path: &str, slashes: bool) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                let c = h * 16 + l;
                let unreserved =
                    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~');
                if unreserved || (slashes && matches!(c, b'/' | b'\\')) {
                    out.push(char::from(c));
                } else {
                    out.push('%');
                    out.push(char::from(bytes[i + 1].to_ascii_uppercase()));
                    out.push(char::from(bytes[i + 2].to_ascii_uppercase()));
                }
                i += 3;
                continue;
            }
        }
        // Multi-byte characters pass through whole.
        let ch = path[i..].chars().next().unwrap_or('\u{fffd}');
        out.push(ch);
        i += ch.len_utf8().max(1);
    }
    out
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

/// RFC 3986 §5.2.4 for an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    let last = parts.len().saturating_sub(1);
    let mut trailing = false;
    for (i, seg) in parts.iter().enumerate() {
        match *seg {
            "." => trailing = i == last,
            ".." => {
                segments.pop();
                trailing = i == last;
            }
            s => {
                segments.push(s);
                trailing = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(p: &str) -> String {
        normalize(p, Normalization::Base).unwrap().path
    }

    #[test]
    fn base_resolves_dots_decodes_unreserved_and_turns_backslashes() {
        assert_eq!(base("/a/./b/../c"), "/a/c");
        assert_eq!(base("/a/b/.."), "/a/");
        assert_eq!(base("/../../etc"), "/etc");
        assert_eq!(base("/%2E%2E/admin"), "/admin");
        assert_eq!(base("/%61dmin"), "/admin");
        assert_eq!(base("/a%2fb"), "/a%2Fb", "escaped slashes stay escaped");
        assert_eq!(base("/a\\..\\admin"), "/admin");
        assert_eq!(base("/a//b"), "/a//b", "BASE keeps double slashes");
        assert_eq!(base("/a/b..;/c"), "/a/b..;/c", "..; is not a dot segment");
        assert_eq!(base("/Admin"), "/Admin", "case is kept");
        assert_eq!(base("/"), "/");
    }

    #[test]
    fn fragments_drop_queries_stay_apart_and_nul_is_refused() {
        let t = normalize("/a/../b?x=/../y#frag", Normalization::Base).unwrap();
        assert_eq!(t.path, "/b");
        assert_eq!(t.query.as_deref(), Some("x=/../y"));
        assert_eq!(t.to_uri_string(), "/b?x=/../y");
        assert_eq!(
            normalize("/a#/../admin", Normalization::Base).unwrap().path,
            "/a"
        );
        for mode in [Normalization::None, Normalization::Base] {
            assert_eq!(normalize("/a%00b", mode), Err(NormalizeError::Nul));
        }
    }

    /// `is_normal` never lets through what `normalize` would change.
    #[test]
    fn is_normal_agrees_with_normalize() {
        for p in [
            "/",
            "/a/b",
            "/a/./b",
            "/a/../b",
            "/a//b",
            "/a%2e",
            "/a\\b",
            "/a#f",
            "/a?x=/../",
            "/a/.",
            "/a/..",
            "/a.b/c..d",
            "a/b",
        ] {
            for mode in [
                Normalization::None,
                Normalization::Base,
                Normalization::MergeSlashes,
                Normalization::DecodeAndMergeSlashes,
            ] {
                if is_normal(p, mode) {
                    let t = normalize(p, mode).unwrap();
                    assert_eq!(t.to_uri_string(), p, "{p:?} {mode:?}");
                }
            }
        }
        assert!(is_normal("/api/v1/books?id=1", Normalization::Base));
        assert!(!is_normal("/a/../b", Normalization::Base));
    }

    /// The fuzz target's property over every path of up to five tokens
    /// that matter to normalization: absolute, no dot segments, and stable
    /// when normalized again.
    #[test]
    fn normalized_paths_are_absolute_dot_free_and_stable() {
        let tokens = ["/", ".", "%2e", "%2F", "%5c", "\\", "a", "%", "#", "?"];
        let mut paths = vec![String::from("/")];
        let mut frontier = paths.clone();
        for _ in 0..5 {
            let mut next = Vec::new();
            for p in &frontier {
                for t in tokens {
                    next.push(format!("{p}{t}"));
                }
            }
            paths.extend(next.iter().cloned());
            frontier = next;
        }
        for mode in [
            Normalization::Base,
            Normalization::MergeSlashes,
            Normalization::DecodeAndMergeSlashes,
        ] {
            for p in &paths {
                if is_normal(p, mode) {
                    assert_eq!(
                        normalize(p, mode).map(|t| t.to_uri_string()),
                        Ok(p.clone()),
                        "{p:?} is not normal ({mode:?})"
                    );
                }
                let Ok(t) = normalize(p, mode) else { continue };
                assert!(t.path.starts_with('/'), "{p:?} -> {t:?}");
                assert!(
                    !t.path.split('/').any(|s| s == "." || s == ".."),
                    "{p:?} -> {t:?} ({mode:?})"
                );
                assert_eq!(
                    normalize(&t.path, mode).map(|n| n.path),
                    Ok(t.path.clone()),
                    "{p:?} ({mode:?})"
                );
            }
        }
    }

    #[test]
    fn slash_modes() {
        let merge = |p| normalize(p, Normalization::MergeSlashes).unwrap().path;
        assert_eq!(merge("//a///b/"), "/a/b/");
        assert_eq!(merge("/a%2F%2Fb"), "/a%2F%2Fb");
        let decode = |p| {
            normalize(p, Normalization::DecodeAndMergeSlashes)
                .unwrap()
                .path
        };
        assert_eq!(decode("/a%2F%2Fb"), "/a/b");
        assert_eq!(decode("/a%5C..%5Cadmin"), "/admin");
        assert_eq!(decode("/a%2f..%2fadmin"), "/admin");
        let none = |p| normalize(p, Normalization::None).unwrap().path;
        assert_eq!(none("/a/../b"), "/a/../b");
    }
}
