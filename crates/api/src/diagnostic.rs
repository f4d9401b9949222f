//! What loading and validation say about the input: errors, warnings and
//! notes, each naming file, line, column, resource and field.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::path::FieldPath;
use crate::yaml::Pos;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// The input is refused.
    Error,
    /// The input is accepted but probably not what was meant.
    Warning,
    /// Information, such as a kind weft skips.
    Note,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "error",
            Level::Warning => "warning",
            Level::Note => "note",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub level: Level,
    pub file: Arc<str>,
    pub pos: Pos,
    /// `Kind namespace/name` of the resource, when known.
    pub origin: Option<String>,
    /// The field the message is about, when it is about one.
    pub path: Option<FieldPath>,
    pub message: String,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        self.level == Level::Error
    }
}

/// `FILE:LINE:COL: Kind namespace/name: spec.path[0].field: message`
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: ", self.file, self.pos)?;
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        if let Some(path) = self.path.as_ref().filter(|p| !p.0.is_empty()) {
            write!(f, "{path}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// The JSON form used by `weft validate --output json`.
#[derive(Debug, Serialize)]
pub struct DiagnosticJson<'a> {
    pub level: Level,
    pub file: &'a str,
    pub line: u32,
    pub column: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: &'a str,
}

impl<'a> From<&'a Diagnostic> for DiagnosticJson<'a> {
    fn from(d: &'a Diagnostic) -> Self {
        DiagnosticJson {
            level: d.level,
            file: &d.file,
            line: d.pos.line,
            column: d.pos.col,
            resource: d.origin.as_deref(),
            field: d
                .path
                .as_ref()
                .filter(|p| !p.0.is_empty())
                .map(ToString::to_string),
            message: &d.message,
        }
    }
}
