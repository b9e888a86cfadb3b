//! [`Selector`]: a parsed expression together with its canonical string.
//!
//! Identity is the canonical string (as in Calico, where equal canonical
//! strings mean the same IP set): `Eq`, `Ord` and `Hash` compare it, and
//! [`Selector::unique_id`] hashes it. Serde uses the canonical string too.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha224};

use crate::ast::Expr;
use crate::error::ParseError;
use crate::labels::Labels;
use crate::parser::parse_expr;
use crate::restriction::{LabelRestrictions, label_restrictions};

/// A parsed label selector.
#[derive(Clone)]
pub struct Selector {
    expr: Expr,
    canonical: Box<str>,
    unique_id: OnceLock<Box<str>>,
}

impl Selector {
    /// Parses a selector; `""` (or only spaces/tabs) is `all()`.
    pub fn parse(input: &str) -> Result<Selector, ParseError> {
        parse_expr(input).map(Selector::new)
    }

    /// Wraps an expression (built by hand or rewritten from another
    /// selector), computing its canonical form.
    pub fn new(expr: Expr) -> Selector {
        let canonical = expr.to_string().into_boxed_str();
        Selector {
            expr,
            canonical,
            unique_id: OnceLock::new(),
        }
    }

    /// `all()`.
    pub fn all() -> Selector {
        Selector::new(Expr::All)
    }

    /// The syntax tree.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Consumes the selector, returning its syntax tree.
    pub fn into_expr(self) -> Expr {
        self.expr
    }

    /// Calico's canonical rendering (also what `Display` writes).
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// `"s:" + base64url-nopad(SHA-224("s:" + canonical))`, the ID IP-set
    /// names are derived from.
    pub fn unique_id(&self) -> &str {
        self.unique_id
            .get_or_init(|| make_unique_id("s", &self.canonical).into_boxed_str())
    }

    /// Evaluates the selector against `labels`.
    pub fn evaluate<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.expr.evaluate(labels)
    }

    /// Every label name the selector looks at.
    pub fn labels_referenced(&self) -> BTreeSet<&str> {
        self.expr.labels_referenced()
    }

    /// A new selector with every label name replaced by `f(name)`, e.g.
    /// `sel.map_labels(|l| format!("pcns.{l}"))`.
    pub fn map_labels(&self, f: impl Fn(&str) -> String) -> Selector {
        Selector::new(self.expr.map_labels(&f))
    }

    /// Necessary per-label conditions for a match (see
    /// [`crate::restriction`]).
    pub fn label_restrictions(&self) -> LabelRestrictions {
        label_restrictions(&self.expr)
    }
}

/// Calico's `hash.MakeUniqueID`: `prefix + ":" + base64url-nopad(SHA-224(prefix + ":" + content))`.
pub fn make_unique_id(prefix: &str, content: &str) -> String {
    let mut hasher = Sha224::new();
    hasher.update(prefix.as_bytes());
    hasher.update(b":");
    hasher.update(content.as_bytes());
    let digest = hasher.finalize();
    let mut out = String::with_capacity(prefix.len() + 1 + 38);
    out.push_str(prefix);
    out.push(':');
    URL_SAFE_NO_PAD.encode_string(digest, &mut out);
    out
}

impl Default for Selector {
    fn default() -> Self {
        Selector::all()
    }
}

impl FromStr for Selector {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.canonical)
    }
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Selector").field(&self.canonical).finish()
    }
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.canonical == other.canonical
    }
}

impl Eq for Selector {}

impl PartialOrd for Selector {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Selector {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.canonical.cmp(&other.canonical)
    }
}

impl std::hash::Hash for Selector {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.canonical.hash(state);
    }
}

impl From<Expr> for Selector {
    fn from(expr: Expr) -> Self {
        Selector::new(expr)
    }
}

impl serde::Serialize for Selector {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.canonical)
    }
}

impl<'de> serde::Deserialize<'de> for Selector {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Selector;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Calico selector string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Selector, E> {
                Selector::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visit)
    }
}
