//! Errors for decoding and validating resources.
//!
//! A [`FieldError`] names the field path (`spec.ingress[0].action`), the offending value and
//! the reason; a [`DecodeError`] adds where the document came from (file, document index,
//! first line of the document).

use std::fmt;

/// One validation failure on one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path from the document root, e.g. `spec.ingress[0].destination.ports[1]`.
    pub path: String,
    /// The offending value as the user wrote it (JSON-ish rendering); empty for missing fields.
    pub value: String,
    /// Why it is wrong.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.reason)
        } else if self.value.is_empty() {
            write!(f, "field {}: {}", self.path, self.reason)
        } else {
            write!(f, "field {} = {}: {}", self.path, self.value, self.reason)
        }
    }
}

/// Collects field errors while walking a resource, tracking the current path.
#[derive(Debug, Default)]
pub struct Errors {
    path: Vec<String>,
    errors: Vec<FieldError>,
}

impl Errors {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` with `segment` pushed onto the path (`.name` or `[i]`).
    pub fn at<R>(&mut self, segment: impl Into<String>, f: impl FnOnce(&mut Self) -> R) -> R {
        self.path.push(segment.into());
        let r = f(self);
        self.path.pop();
        r
    }

    /// Runs `f` for list element `i`.
    pub fn idx<R>(&mut self, i: usize, f: impl FnOnce(&mut Self) -> R) -> R {
        self.at(format!("[{i}]"), f)
    }

    /// The current path rendered with `field` appended.
    pub fn path_of(&self, field: &str) -> String {
        let mut out = String::new();
        for seg in self
            .path
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(field))
        {
            if seg.is_empty() {
                continue;
            }
            if !out.is_empty() && !seg.starts_with('[') {
                out.push('.');
            }
            out.push_str(seg);
        }
        out
    }

    /// Records an error on `field` (relative to the current path).
    pub fn add(&mut self, field: &str, value: impl fmt::Debug, reason: impl Into<String>) {
        let value = format!("{value:?}");
        self.errors.push(FieldError {
            path: self.path_of(field),
            value,
            reason: reason.into(),
        });
    }

    /// Records an error at an absolute path (ignoring the current position).
    pub fn add_abs(&mut self, path: &str, value: impl fmt::Debug, reason: impl Into<String>) {
        self.errors.push(FieldError {
            path: path.to_string(),
            value: format!("{value:?}"),
            reason: reason.into(),
        });
    }

    /// Records an error with no value (a missing or conflicting field).
    pub fn missing(&mut self, field: &str, reason: impl Into<String>) {
        self.errors.push(FieldError {
            path: self.path_of(field),
            value: String::new(),
            reason: reason.into(),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn into_vec(self) -> Vec<FieldError> {
        self.errors
    }
}

/// Where a document came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// The file name, or `-` for standard input.
    pub file: String,
    /// 0-based index of the YAML document within the file.
    pub document: usize,
    /// 1-based line where the document starts.
    pub line: usize,
    /// For `List` items: the item index.
    pub item: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: document {} (line {})",
            self.file, self.document, self.line
        )?;
        if let Some(i) = self.item {
            write!(f, ", items[{i}]")?;
        }
        Ok(())
    }
}

/// A document that could not be turned into a valid resource.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DecodeError {
    #[error("{origin}: invalid {format}: {message}")]
    Syntax {
        origin: Origin,
        format: &'static str,
        message: String,
    },
    #[error("{origin}: {message}")]
    Header { origin: Origin, message: String },
    #[error("{origin}: {kind} {name:?}: {}", render_fields(.errors))]
    Invalid {
        origin: Origin,
        kind: crate::kind::Kind,
        name: String,
        errors: Vec<FieldError>,
    },
}

impl DecodeError {
    /// The field errors, if this is a validation failure.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            DecodeError::Invalid { errors, .. } => errors,
            _ => &[],
        }
    }
}

fn render_fields(errors: &[FieldError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
