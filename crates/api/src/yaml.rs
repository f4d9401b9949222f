//! A YAML document tree that remembers where every node came from.
//!
//! Istio's YAML is read in two steps: the text becomes a tree of [`Node`]s,
//! each with its line and column, and the tree becomes typed resources (see
//! [`crate::de`]). Keeping the tree lets every later error, from a wrong type
//! to a validation rule, point at the line a person has to fix.
//!
//! Aliases are expanded when the tree is built, within a node budget so that a
//! "billion laughs" document is refused instead of exhausting memory; nesting
//! is bounded so nothing downstream can overflow the stack.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// Deepest nesting accepted; real Istio resources stay well below 30.
pub const MAX_DEPTH: usize = 128;
/// Most nodes one stream may expand to, aliases included.
pub const MAX_NODES: usize = 2_000_000;

/// A position in a source text; both numbers start at 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Pos {
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One node of a YAML document.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub pos: Pos,
    pub value: Value,
}

/// The content of a [`Node`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A scalar as written; `plain` scalars are typed by [`Node::resolve`].
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Entries in document order; keys are unique (checked when built).
    Map(Vec<(Node, Node)>),
}

/// What a scalar means under the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    /// An integer too large for `i64`.
    UInt(u64),
    Float(f64),
    Str(&'a str),
}

impl Scalar<'_> {
    /// The YAML type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool(_) => "boolean",
            Scalar::Int(_) | Scalar::UInt(_) => "integer",
            Scalar::Float(_) => "number",
            Scalar::Str(_) => "string",
        }
    }
}

impl Node {
    /// The scalar's meaning, or `None` for a sequence or mapping.
    pub fn resolve(&self) -> Option<Scalar<'_>> {
        match &self.value {
            Value::Scalar { text, plain: true } => Some(resolve_plain(text)),
            Value::Scalar { text, plain: false } => Some(Scalar::Str(text)),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.resolve(), Some(Scalar::Null))
    }

    /// The text of a scalar, whatever it resolves to.
    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The value under `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    /// The key node and value node under `key` in a mapping.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_str() == Some(key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    /// The items of a sequence; none for any other node.
    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }

    /// A short description of the node's type, for error messages.
    pub fn describe(&self) -> String {
        match &self.value {
            Value::Seq(_) => "a list".to_string(),
            Value::Map(_) => "a mapping".to_string(),
            Value::Scalar { text, .. } => {
                let shown: String = text.chars().take(40).collect();
                let more = if shown.len() < text.len() { "..." } else { "" };
                match self.resolve() {
                    Some(Scalar::Null) => "null".to_string(),
                    Some(s) => format!("{} `{shown}{more}`", s.type_name()),
                    None => unreachable!("scalars always resolve"),
                }
            }
        }
    }
}

fn resolve_plain(text: &str) -> Scalar<'_> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Scalar::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        _ => {}
    }
    let first = text.as_bytes()[0];
    if !(first.is_ascii_digit() || matches!(first, b'-' | b'+' | b'.')) {
        return Scalar::Str(text);
    }
    if let Some(hex) = text.strip_prefix("0x") {
        return match u64::from_str_radix(hex, 16) {
            Ok(v) => int_scalar(v, false),
            Err(_) => Scalar::Str(text),
        };
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return match u64::from_str_radix(oct, 8) {
            Ok(v) => int_scalar(v, false),
            Err(_) => Scalar::Str(text),
        };
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        let negative = text.starts_with('-');
        return match digits.parse::<u64>() {
            Ok(v) => int_scalar(v, negative),
            // Out of range for any integer: YAML still calls it a number.
            Err(_) => text.parse().map(Scalar::Float).unwrap_or(Scalar::Str(text)),
        };
    }
    if is_float(digits) {
        if let Ok(v) = text.parse::<f64>() {
            return Scalar::Float(v);
        }
    }
    Scalar::Str(text)
}

fn int_scalar(v: u64, negative: bool) -> Scalar<'static> {
    match (negative, i64::try_from(v)) {
        (false, Ok(i)) => Scalar::Int(i),
        (false, Err(_)) => Scalar::UInt(v),
        (true, _) if v <= i64::MAX as u64 + 1 => Scalar::Int((v as i128).wrapping_neg() as i64),
        (true, _) => Scalar::Float(-(v as f64)),
    }
}

/// `( \.[0-9]+ | [0-9]+ ( \.[0-9]* )? ) ( [eE] [-+]? [0-9]+ )?` without sign.
fn is_float(s: &str) -> bool {
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], Some(&mantissa[i + 1..])),
        None => (mantissa, None),
    };
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(f) => digits(int) && digits(f) && !(int.is_empty() && f.is_empty()),
        None => !int.is_empty() && digits(int),
    };
    let exp_ok = match exp {
        Some(e) => {
            let e = e.strip_prefix(['-', '+']).unwrap_or(e);
            !e.is_empty() && digits(e)
        }
        None => true,
    };
    mantissa_ok && exp_ok
}

/// A document that is not YAML, or that weft refuses to expand.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// One document of a stream: its root node, or `None` when it is empty.
#[derive(Debug, Clone)]
pub struct Document {
    pub pos: Pos,
    pub root: Option<Node>,
}

/// Parses every document of a YAML (or JSON) stream.
pub fn parse_stream(text: &str) -> Result<Vec<Document>, SyntaxError> {
    parse_stream_at(text, 0)
}

/// Parses a stream that starts after `line_offset` lines of a larger text
/// (a piece from [`split_documents`]); positions are in the larger text.
pub fn parse_stream_at(text: &str, line_offset: u32) -> Result<Vec<Document>, SyntaxError> {
    Builder {
        line_offset,
        ..Builder::default()
    }
    .run(text)
}

/// Below this size a stream is parsed in one piece: threads cost more
/// than they save.
const SPLIT_MIN_BYTES: usize = 256 << 10;

/// Cuts a large stream into about `pieces` parts at document boundaries (a
/// `---` at the start of a line, which YAML never allows inside a
/// document's content), so the parts can be parsed in parallel. Returns
/// each part with the number of lines before it. A stream with directives
/// (`%YAML`) stays whole, since a directive belongs to the document after
/// it.
pub fn split_documents(text: &str, pieces: usize) -> Vec<(u32, &str)> {
    if pieces < 2 || text.len() < SPLIT_MIN_BYTES || text.starts_with('%') || text.contains("\n%") {
        return vec![(0, text)];
    }
    let bytes = text.as_bytes();
    let mut cuts = vec![0];
    for k in 1..pieces {
        let target = text.len() * k / pieces;
        let from = target.max(*cuts.last().unwrap_or(&0));
        let mut at = from;
        let cut = loop {
            match text[at..].find("\n---") {
                None => break None,
                Some(i) => {
                    let start = at + i + 1;
                    let after = bytes.get(start + 3).copied();
                    if matches!(after, None | Some(b' ' | b'\t' | b'\r' | b'\n')) {
                        break Some(start);
                    }
                    at = start;
                }
            }
        };
        match cut {
            Some(c) if c > *cuts.last().unwrap_or(&0) => cuts.push(c),
            Some(_) => {}
            None => break,
        }
    }
    cuts.push(text.len());
    let mut line = 0u32;
    let mut out = Vec::with_capacity(cuts.len() - 1);
    for w in cuts.windows(2) {
        out.push((line, &text[w[0]..w[1]]));
        let newlines = bytes[w[0]..w[1]].iter().filter(|b| **b == b'\n').count();
        line = line.saturating_add(u32::try_from(newlines).unwrap_or(u32::MAX));
    }
    out
}

fn marker_pos(line: usize, col: usize, line_offset: u32) -> Pos {
    Pos {
        line: u32::try_from(line)
            .unwrap_or(u32::MAX)
            .saturating_add(line_offset),
        col: u32::try_from(col + 1).unwrap_or(u32::MAX),
    }
}

/// A collection being built: where it starts, its anchor, the number of nodes
/// in it so far (so that an anchored subtree's size is known without a walk).
struct Open {
    pos: Pos,
    anchor: usize,
    size: usize,
    body: Body,
}

enum Body {
    Seq(Vec<Node>),
    /// Entries, the key waiting for its value, and an index of the keys once
    /// the map is large enough for a linear duplicate check to cost.
    Map(
        Vec<(Node, Node)>,
        Option<Node>,
        Option<HashMap<String, u32>>,
    ),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    /// Anchor id -> (node, number of nodes in it).
    anchors: HashMap<usize, (Node, usize)>,
    nodes: usize,
    docs: Vec<Document>,
    doc_pos: Pos,
    root: Option<Node>,
    /// Lines before this stream in the text it was cut from.
    line_offset: u32,
}

impl Builder {
    fn run(mut self, text: &str) -> Result<Vec<Document>, SyntaxError> {
        for event in Parser::new_from_str(text) {
            let (event, span) = event.map_err(|e| SyntaxError {
                pos: marker_pos(e.marker().line(), e.marker().col(), self.line_offset),
                message: e.info().to_string(),
            })?;
            let pos = marker_pos(span.start.line(), span.start.col(), self.line_offset);
            match event {
                Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
                Event::DocumentStart(_) => {
                    self.doc_pos = pos;
                    self.root = None;
                    self.anchors.clear();
                }
                Event::DocumentEnd => {
                    let root = self.root.take().filter(|n| !n.is_null());
                    self.docs.push(Document {
                        pos: self.doc_pos,
                        root,
                    });
                }
                Event::Alias(id) => {
                    let Some((node, size)) = self.anchors.get(&id) else {
                        return Err(SyntaxError {
                            pos,
                            message: "alias refers to an unknown anchor".into(),
                        });
                    };
                    let (mut node, size) = (node.clone(), *size);
                    self.count(size, pos)?;
                    node.pos = pos;
                    self.push(node, size, 0)?;
                }
                Event::Scalar(text, style, anchor, tag) => {
                    self.count(1, pos)?;
                    // A `!!str` tag makes a plain scalar a string, as quoting does.
                    let forced_str = tag.as_ref().is_some_and(|t| t.suffix == "str");
                    let plain = style == ScalarStyle::Plain && !forced_str;
                    let node = Node {
                        pos,
                        value: Value::Scalar {
                            text: text.into_owned(),
                            plain,
                        },
                    };
                    self.push(node, 1, anchor)?;
                }
                Event::SequenceStart(anchor, _) => {
                    self.open(pos, anchor, Body::Seq(Vec::new()))?;
                }
                Event::MappingStart(anchor, _) => {
                    self.open(pos, anchor, Body::Map(Vec::new(), None, None))?;
                }
                Event::SequenceEnd | Event::MappingEnd => {
                    let Some(open) = self.stack.pop() else {
                        unreachable!("the parser balances collection events");
                    };
                    let value = match open.body {
                        Body::Seq(items) => Value::Seq(items),
                        Body::Map(entries, _, _) => Value::Map(entries),
                    };
                    let node = Node {
                        pos: open.pos,
                        value,
                    };
                    self.push(node, open.size, open.anchor)?;
                }
            }
        }
        Ok(self.docs)
    }

    fn count(&mut self, n: usize, pos: Pos) -> Result<(), SyntaxError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(SyntaxError {
                pos,
                message: format!("document expands to more than {MAX_NODES} nodes (aliases?)"),
            });
        }
        Ok(())
    }

    fn open(&mut self, pos: Pos, anchor: usize, body: Body) -> Result<(), SyntaxError> {
        self.count(1, pos)?;
        if self.stack.len() >= MAX_DEPTH {
            return Err(SyntaxError {
                pos,
                message: format!("nesting deeper than {MAX_DEPTH} levels"),
            });
        }
        self.stack.push(Open {
            pos,
            anchor,
            size: 1,
            body,
        });
        Ok(())
    }

    fn push(&mut self, node: Node, size: usize, anchor: usize) -> Result<(), SyntaxError> {
        if anchor != 0 {
            self.anchors.insert(anchor, (node.clone(), size));
        }
        let Some(parent) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        parent.size += size;
        match &mut parent.body {
            Body::Seq(items) => items.push(node),
            Body::Map(_, key @ None, _) => *key = Some(node),
            Body::Map(entries, key, index) => {
                let k = key.take().expect("matched Some above");
                if let Some(text) = k.as_str() {
                    let first = match index {
                        Some(index) => index.get(text).copied(),
                        None => entries
                            .iter()
                            .find(|(e, _)| e.as_str() == Some(text))
                            .map(|(e, _)| e.pos.line),
                    };
                    if let Some(line) = first {
                        return Err(SyntaxError {
                            pos: k.pos,
                            message: format!("duplicate key `{text}` (first at line {line})"),
                        });
                    }
                    if index.is_none() && entries.len() >= 16 {
                        *index = Some(
                            entries
                                .iter()
                                .filter_map(|(e, _)| Some((e.as_str()?.to_string(), e.pos.line)))
                                .collect(),
                        );
                    }
                    if let Some(index) = index {
                        index.insert(text.to_string(), k.pos.line);
                    }
                }
                entries.push((k, node));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
