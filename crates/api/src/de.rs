//! serde over the YAML tree: typed resources from [`Node`]s, with errors that
//! name the field path and the position of the value that failed.
//!
//! The rules follow how Kubernetes and Istio read their objects:
//! - a struct field may be spelled camelCase or, as protobuf JSON allows,
//!   snake_case; unknown fields are refused by the types
//!   (`deny_unknown_fields`);
//! - a plain scalar has its YAML 1.2 type: `8080` is not a string, quote it;
//! - integers may also be written as quoted decimal strings (protobuf JSON);
//! - `null` reads as "not set" for options, lists, maps and objects.

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use crate::path::{FieldPath, Path, snake_to_camel};
use crate::yaml::{Node, Pos, Scalar, Value};

/// A value that does not fit its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub message: String,
    /// Where the value is; set by the innermost node that saw the error.
    pub at: Option<(FieldPath, Pos)>,
}

impl Error {
    fn at(mut self, path: &Path<'_>, pos: Pos) -> Self {
        if self.at.is_none() {
            self.at = Some((path.to_path(), pos));
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.at {
            Some((path, pos)) if !path.0.is_empty() => {
                write!(f, "{pos}: {path}: {}", self.message)
            }
            Some((_, pos)) => write!(f, "{pos}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error {
            message: msg.to_string(),
            at: None,
        }
    }
}

/// Reads `T` from `node`, whose place in the document is `path`.
pub fn from_node<'de, T: de::Deserialize<'de>>(
    node: &'de Node,
    path: &Path<'_>,
) -> Result<T, Error> {
    T::deserialize(NodeDe { node, path })
}

struct NodeDe<'a, 'p> {
    node: &'a Node,
    path: &'p Path<'p>,
}

impl<'a> NodeDe<'a, '_> {
    fn fail(&self, message: String) -> Error {
        Error { message, at: None }.at(self.path, self.node.pos)
    }

    fn expected(&self, what: &str) -> Error {
        self.fail(format!("expected {what}, found {}", self.node.describe()))
    }

    fn scalar(&self) -> Option<Scalar<'a>> {
        self.node.resolve()
    }

    /// An integer, also from a quoted decimal string as protobuf JSON allows.
    fn integer(&self) -> Result<i128, Error> {
        match self.scalar() {
            Some(Scalar::Int(i)) => Ok(i.into()),
            Some(Scalar::UInt(u)) => Ok(u.into()),
            Some(Scalar::Str(s)) if !s.is_empty() => {
                s.parse::<i128>().map_err(|_| self.expected("an integer"))
            }
            _ => Err(self.expected("an integer")),
        }
    }

    fn float(&self) -> Result<f64, Error> {
        match self.scalar() {
            Some(Scalar::Int(i)) => Ok(i as f64),
            Some(Scalar::UInt(u)) => Ok(u as f64),
            Some(Scalar::Float(f)) => Ok(f),
            Some(Scalar::Str(s)) => s.parse::<f64>().map_err(|_| self.expected("a number")),
            _ => Err(self.expected("a number")),
        }
    }

    fn located<T>(&self, r: Result<T, Error>) -> Result<T, Error> {
        r.map_err(|e| e.at(self.path, self.node.pos))
    }
}

macro_rules! int_method {
    ($method:ident, $visit:ident, $ty:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            let v = self.integer()?;
            let v = <$ty>::try_from(v)
                .map_err(|_| self.fail(format!("{v} is out of range for {}", stringify!($ty))))?;
            self.located(visitor.$visit(v))
        }
    };
}

impl<'de> de::Deserializer<'de> for NodeDe<'de, '_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let r = match &self.node.value {
            Value::Seq(items) => visitor.visit_seq(SeqDe::new(items, self.path)),
            Value::Map(entries) => visitor.visit_map(MapDe::new(entries, self.path, None)),
            Value::Scalar { .. } => match self.scalar() {
                Some(Scalar::Null) | None => visitor.visit_unit(),
                Some(Scalar::Bool(b)) => visitor.visit_bool(b),
                Some(Scalar::Int(i)) => visitor.visit_i64(i),
                Some(Scalar::UInt(u)) => visitor.visit_u64(u),
                Some(Scalar::Float(f)) => visitor.visit_f64(f),
                Some(Scalar::Str(s)) => visitor.visit_borrowed_str(s),
            },
        };
        self.located(r)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.scalar() {
            Some(Scalar::Bool(b)) => self.located(visitor.visit_bool(b)),
            _ => Err(self.expected("true or false")),
        }
    }

    int_method!(deserialize_i8, visit_i8, i8);
    int_method!(deserialize_i16, visit_i16, i16);
    int_method!(deserialize_i32, visit_i32, i32);
    int_method!(deserialize_i64, visit_i64, i64);
    int_method!(deserialize_u8, visit_u8, u8);
    int_method!(deserialize_u16, visit_u16, u16);
    int_method!(deserialize_u32, visit_u32, u32);
    int_method!(deserialize_u64, visit_u64, u64);

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let f = self.float()?;
        self.located(visitor.visit_f32(f as f32))
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        let f = self.float()?;
        self.located(visitor.visit_f64(f))
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.scalar() {
            Some(Scalar::Str(s)) => self.located(visitor.visit_borrowed_str(s)),
            // Go's decoder leaves a string empty for null; so does Istio.
            Some(Scalar::Null) => self.located(visitor.visit_borrowed_str("")),
            Some(_) => Err(self.fail(format!(
                "expected a string, found {} (quote it)",
                self.node.describe()
            ))),
            None => Err(self.expected("a string")),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.scalar() {
            Some(Scalar::Str(s)) => self.located(visitor.visit_borrowed_bytes(s.as_bytes())),
            _ => Err(self.expected("a string")),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.node.is_null() {
            self.located(visitor.visit_none())
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        if self.node.is_null() {
            self.located(visitor.visit_unit())
        } else {
            Err(self.expected("null"))
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        let path = self.path;
        let pos = self.node.pos;
        visitor
            .visit_newtype_struct(self)
            .map_err(|e| e.at(path, pos))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Seq(items) => self.located(visitor.visit_seq(SeqDe::new(items, self.path))),
            _ if self.node.is_null() => self.located(visitor.visit_seq(SeqDe::new(&[], self.path))),
            _ => Err(self.expected("a list")),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Map(entries) => {
                self.located(visitor.visit_map(MapDe::new(entries, self.path, None)))
            }
            _ if self.node.is_null() => {
                self.located(visitor.visit_map(MapDe::new(&[], self.path, None)))
            }
            _ => Err(self.expected("a mapping")),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match &self.node.value {
            Value::Map(entries) => {
                self.located(visitor.visit_map(MapDe::new(entries, self.path, Some(fields))))
            }
            _ if self.node.is_null() => {
                self.located(visitor.visit_map(MapDe::new(&[], self.path, Some(fields))))
            }
            _ => Err(self.expected("an object")),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match (&self.node.value, self.scalar()) {
            (_, Some(Scalar::Str(s))) => {
                let r = visitor.visit_enum(s.into_deserializer());
                self.located(r.map_err(|e: Error| {
                    if e.message.starts_with("unknown variant") {
                        Error {
                            message: format!(
                                "unknown value `{s}`, expected one of: {}",
                                variants.join(", ")
                            ),
                            at: None,
                        }
                    } else {
                        e
                    }
                }))
            }
            (Value::Map(entries), _) if entries.len() == 1 => {
                let (k, v) = &entries[0];
                let name = k.as_str().unwrap_or_default();
                let path = self.path.field(name);
                let r = visitor.visit_enum(EnumDe {
                    name,
                    value: NodeDe {
                        node: v,
                        path: &path,
                    },
                });
                self.located(r)
            }
            _ => Err(self.fail(format!(
                "expected one of: {}, found {}",
                variants.join(", "),
                self.node.describe()
            ))),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

struct SeqDe<'a, 'p> {
    items: &'a [Node],
    path: &'p Path<'p>,
    next: usize,
}

impl<'a, 'p> SeqDe<'a, 'p> {
    fn new(items: &'a [Node], path: &'p Path<'p>) -> Self {
        SeqDe {
            items,
            path,
            next: 0,
        }
    }
}

impl<'de> de::SeqAccess<'de> for SeqDe<'de, '_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        let Some(node) = self.items.get(self.next) else {
            return Ok(None);
        };
        let path = self.path.index(self.next);
        self.next += 1;
        seed.deserialize(NodeDe { node, path: &path })
            .map(Some)
            .map_err(|e| e.at(&path, node.pos))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len() - self.next)
    }
}

struct MapDe<'a, 'p> {
    entries: &'a [(Node, Node)],
    path: &'p Path<'p>,
    /// The fields of the struct being read; `None` for a free-form map.
    fields: Option<&'static [&'static str]>,
    next: usize,
    /// The name the current key was read as.
    key: Option<&'a str>,
}

impl<'a, 'p> MapDe<'a, 'p> {
    fn new(
        entries: &'a [(Node, Node)],
        path: &'p Path<'p>,
        fields: Option<&'static [&'static str]>,
    ) -> Self {
        MapDe {
            entries,
            path,
            fields,
            next: 0,
            key: None,
        }
    }

    /// The struct field a key names, accepting the snake_case spelling.
    fn field_name(&self, key: &'a str) -> &'a str {
        let Some(fields) = self.fields else {
            return key;
        };
        if key.contains('_') && !fields.contains(&key) {
            let camel = snake_to_camel(key);
            if let Some(f) = fields.iter().find(|f| **f == camel) {
                return f;
            }
        }
        key
    }
}

impl<'de> de::MapAccess<'de> for MapDe<'de, '_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((k, _)) = self.entries.get(self.next) else {
            return Ok(None);
        };
        let Some(text) = k.as_str() else {
            return Err(Error {
                message: format!("keys must be strings, found {}", k.describe()),
                at: None,
            }
            .at(self.path, k.pos));
        };
        let name = self.field_name(text);
        let r = seed.deserialize(de::value::BorrowedStrDeserializer::new(name));
        let at = if self.fields.is_some() {
            self.path.field(name)
        } else {
            self.path.key(name)
        };
        let fields = self.fields;
        let r = r.map_err(|e: de::value::Error| {
            <Error as de::Error>::custom(unknown_field_hint(&e.to_string(), text, fields))
                .at(&at, k.pos)
        });
        self.key = Some(name);
        r.map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let (_, node) = &self.entries[self.next];
        self.next += 1;
        let name = self.key.take().unwrap_or("");
        let path = if self.fields.is_some() {
            self.path.field(name)
        } else {
            self.path.key(name)
        };
        seed.deserialize(NodeDe { node, path: &path })
            .map_err(|e| e.at(&path, node.pos))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len() - self.next)
    }
}

/// serde lists every field after "unknown field"; a person needs the closest one.
fn unknown_field_hint(message: &str, key: &str, fields: Option<&[&str]>) -> String {
    let Some(fields) = fields.filter(|_| message.starts_with("unknown field")) else {
        return message.to_string();
    };
    let closest = fields
        .iter()
        .map(|f| (edit_distance(&key.to_lowercase(), &f.to_lowercase()), f))
        .filter(|(d, _)| *d <= 2 && d * 2 <= key.len())
        .min();
    match closest {
        Some((_, f)) => format!("unknown field `{key}` (did you mean `{f}`?)"),
        None if fields.is_empty() => format!("unknown field `{key}`: this object has no fields"),
        None => format!(
            "unknown field `{key}`, expected one of: {}",
            fields.join(", ")
        ),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

struct EnumDe<'a, 'p> {
    name: &'a str,
    value: NodeDe<'a, 'p>,
}

impl<'de, 'p> de::EnumAccess<'de> for EnumDe<'de, 'p> {
    type Error = Error;
    type Variant = NodeDe<'de, 'p>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Self::Variant), Error> {
        let v = seed
            .deserialize(de::value::BorrowedStrDeserializer::<de::value::Error>::new(
                self.name,
            ))
            .map_err(<Error as de::Error>::custom)?;
        Ok((v, self.value))
    }
}

impl<'de> de::VariantAccess<'de> for NodeDe<'de, '_> {
    type Error = Error;

    fn unit_variant(self) -> Result<(), Error> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, Error> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        de::Deserializer::deserialize_struct(self, "", fields, visitor)
    }
}

#[cfg(test)]
mod tests;
