//! Field paths such as `spec.http[0].route[1].weight`: how errors name the
//! value they are about, and how that value is found again in the YAML tree.

use std::fmt;

use crate::yaml::{Node, Pos, Value};

/// A borrowed path, built on the stack while walking a resource; it costs
/// nothing until an error turns it into a [`FieldPath`].
#[derive(Debug, Clone, Copy)]
pub enum Path<'a> {
    Root,
    /// A field of a typed object, by its camelCase name.
    Field(&'a Path<'a>, &'a str),
    /// A key of a free-form map (labels, headers, ...).
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl<'a> Path<'a> {
    pub fn field(&'a self, name: &'a str) -> Path<'a> {
        Path::Field(self, name)
    }

    pub fn key(&'a self, key: &'a str) -> Path<'a> {
        Path::Key(self, key)
    }

    pub fn index(&'a self, i: usize) -> Path<'a> {
        Path::Index(self, i)
    }

    pub fn to_path(&self) -> FieldPath {
        let mut segs = Vec::new();
        let mut at = self;
        loop {
            match at {
                Path::Root => break,
                Path::Field(parent, name) => {
                    segs.push(Seg::Field((*name).to_string()));
                    at = parent;
                }
                Path::Key(parent, key) => {
                    segs.push(Seg::Key((*key).to_string()));
                    at = parent;
                }
                Path::Index(parent, i) => {
                    segs.push(Seg::Index(*i));
                    at = parent;
                }
            }
        }
        segs.reverse();
        FieldPath(segs)
    }
}

/// One step of a [`FieldPath`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Field(String),
    Key(String),
    Index(usize),
}

/// An owned path from a document's root to one of its values.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct FieldPath(pub Vec<Seg>);

impl FieldPath {
    /// Where this path leads in `root`: the deepest node that exists on the
    /// way (a missing field is reported at the object that should hold it).
    pub fn locate(&self, root: &Node) -> Pos {
        let mut node = root;
        for seg in &self.0 {
            let next = match (seg, &node.value) {
                (Seg::Field(name), Value::Map(entries)) => entries
                    .iter()
                    .find(|(k, _)| k.as_str().is_some_and(|k| field_matches(k, name)))
                    .map(|(_, v)| v),
                (Seg::Key(key), Value::Map(entries)) => entries
                    .iter()
                    .find(|(k, _)| k.as_str() == Some(key))
                    .map(|(_, v)| v),
                (Seg::Index(i), Value::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.pos
    }
}

/// Whether a key as written names the camelCase field `name`; protobuf's
/// JSON mapping (and so Istio) also accepts the snake_case spelling.
pub fn field_matches(key: &str, name: &str) -> bool {
    key == name || (key.contains('_') && snake_to_camel(key) == name)
}

pub fn snake_to_camel(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for c in key.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Field(name) if i == 0 => f.write_str(name)?,
                Seg::Field(name) => write!(f, ".{name}")?,
                Seg::Key(key) => write!(f, "[{key}]")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}
