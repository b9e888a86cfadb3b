//! The selector syntax tree, its evaluation and its canonical rendering.
//!
//! [`Expr`] is public so other crates can build and rewrite selectors (e.g.
//! prefix namespace-selector labels with `pcns.`, or replace `all()` with
//! `has(projectcalico.org/namespace)`). Its `Display` is Calico's canonical
//! form, byte for byte:
//!
//! * `k == "v"`, `k != "v"`, `k contains "v"`, `k starts with "v"`,
//!   `k ends with "v"` — double quotes unless the value contains `"`, then
//!   single quotes;
//! * `k in {"a", "b"}` / `k not in {...}` — sorted, de-duplicated (a
//!   [`BTreeSet`] keeps that invariant by construction);
//! * `has(k)`, `all()`, `global()`; `!` written directly before its operand;
//! * every `&&` / `||` node wrapped in parentheses: `(a == "x" && has(b))`.
//!
//! Trees built by hand can hold things the parser never produces; rendering
//! stays total for them: an empty `And` renders as `all()` and an empty `Or`
//! as `!all()` (their evaluation results), a one-element `And`/`Or` keeps its
//! parentheses, and labels/values are written verbatim (a label outside the
//! label charset or a value holding both quote characters will not re-parse).

use std::collections::BTreeSet;
use std::fmt;

use crate::labels::Labels;

/// A selector expression.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Expr {
    /// `all()`: matches everything.
    All,
    /// `global()`: matches everything as a plain expression; only special
    /// when rewritten inside a namespaceSelector.
    Global,
    /// `has(label)`: the label is present.
    Has {
        /// Label name.
        label: String,
    },
    /// `label == "value"`: present and equal.
    Eq {
        /// Label name.
        label: String,
        /// Value compared against.
        value: String,
    },
    /// `label != "value"`: absent, or present with another value.
    Ne {
        /// Label name.
        label: String,
        /// Value compared against.
        value: String,
    },
    /// `label contains "value"`: present and containing the substring.
    Contains {
        /// Label name.
        label: String,
        /// Substring looked for.
        value: String,
    },
    /// `label starts with "value"`: present and having the prefix.
    StartsWith {
        /// Label name.
        label: String,
        /// Required prefix.
        value: String,
    },
    /// `label ends with "value"`: present and having the suffix.
    EndsWith {
        /// Label name.
        label: String,
        /// Required suffix.
        value: String,
    },
    /// `label in {...}`: present and its value in the set.
    In {
        /// Label name.
        label: String,
        /// Accepted values.
        values: BTreeSet<String>,
    },
    /// `label not in {...}`: absent, or its value not in the set.
    NotIn {
        /// Label name.
        label: String,
        /// Rejected values.
        values: BTreeSet<String>,
    },
    /// `!operand`.
    Not(Box<Expr>),
    /// `(a && b && ...)`; an empty list is true.
    And(Vec<Expr>),
    /// `(a || b || ...)`; an empty list is false.
    Or(Vec<Expr>),
}

impl Expr {
    /// Evaluates the expression against a set of labels (Calico semantics:
    /// `!=` and `not in` are true when the label is absent; every other
    /// label test needs the label present).
    pub fn evaluate<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        match self {
            Expr::All | Expr::Global => true,
            Expr::Has { label } => labels.get(label).is_some(),
            Expr::Eq { label, value } => labels.get(label) == Some(value.as_str()),
            Expr::Ne { label, value } => labels.get(label) != Some(value.as_str()),
            Expr::Contains { label, value } => labels
                .get(label)
                .is_some_and(|v| v.contains(value.as_str())),
            Expr::StartsWith { label, value } => labels
                .get(label)
                .is_some_and(|v| v.starts_with(value.as_str())),
            Expr::EndsWith { label, value } => labels
                .get(label)
                .is_some_and(|v| v.ends_with(value.as_str())),
            Expr::In { label, values } => labels.get(label).is_some_and(|v| values.contains(v)),
            Expr::NotIn { label, values } => !labels.get(label).is_some_and(|v| values.contains(v)),
            Expr::Not(inner) => !inner.evaluate(labels),
            Expr::And(operands) => operands.iter().all(|e| e.evaluate(labels)),
            Expr::Or(operands) => operands.iter().any(|e| e.evaluate(labels)),
        }
    }

    /// The label name this node tests, if it is a leaf label test.
    pub fn label(&self) -> Option<&str> {
        match self {
            Expr::Has { label }
            | Expr::Eq { label, .. }
            | Expr::Ne { label, .. }
            | Expr::Contains { label, .. }
            | Expr::StartsWith { label, .. }
            | Expr::EndsWith { label, .. }
            | Expr::In { label, .. }
            | Expr::NotIn { label, .. } => Some(label),
            Expr::All | Expr::Global | Expr::Not(_) | Expr::And(_) | Expr::Or(_) => None,
        }
    }

    /// Direct children of a `Not`/`And`/`Or` node (empty for leaves).
    pub fn children(&self) -> &[Expr] {
        match self {
            Expr::Not(inner) => std::slice::from_ref(inner.as_ref()),
            Expr::And(operands) | Expr::Or(operands) => operands,
            _ => &[],
        }
    }

    /// Every label name the expression looks at, sorted and de-duplicated.
    pub fn labels_referenced(&self) -> BTreeSet<&str> {
        let mut out = BTreeSet::new();
        self.collect_labels(&mut out);
        out
    }

    fn collect_labels<'a>(&'a self, out: &mut BTreeSet<&'a str>) {
        if let Some(label) = self.label() {
            out.insert(label);
        }
        for child in self.children() {
            child.collect_labels(out);
        }
    }

    /// A copy with every label name replaced by `f(name)` (values are left
    /// alone), like Calico's `PrefixVisitor`.
    pub fn map_labels(&self, f: &impl Fn(&str) -> String) -> Expr {
        let mut out = self.clone();
        out.map_labels_in_place(f);
        out
    }

    fn map_labels_in_place(&mut self, f: &impl Fn(&str) -> String) {
        match self {
            Expr::Has { label }
            | Expr::Eq { label, .. }
            | Expr::Ne { label, .. }
            | Expr::Contains { label, .. }
            | Expr::StartsWith { label, .. }
            | Expr::EndsWith { label, .. }
            | Expr::In { label, .. }
            | Expr::NotIn { label, .. } => *label = f(label),
            Expr::Not(inner) => inner.map_labels_in_place(f),
            Expr::And(operands) | Expr::Or(operands) => {
                for op in operands {
                    op.map_labels_in_place(f);
                }
            }
            Expr::All | Expr::Global => {}
        }
    }

    /// Writes the canonical form into `out`.
    fn write_canonical<W: fmt::Write>(&self, out: &mut W) -> fmt::Result {
        match self {
            Expr::All => out.write_str("all()"),
            Expr::Global => out.write_str("global()"),
            Expr::Has { label } => write!(out, "has({label})"),
            Expr::Eq { label, value } => write_op(out, label, " == ", value),
            Expr::Ne { label, value } => write_op(out, label, " != ", value),
            Expr::Contains { label, value } => write_op(out, label, " contains ", value),
            Expr::StartsWith { label, value } => write_op(out, label, " starts with ", value),
            Expr::EndsWith { label, value } => write_op(out, label, " ends with ", value),
            Expr::In { label, values } => write_set(out, label, " in {", values),
            Expr::NotIn { label, values } => write_set(out, label, " not in {", values),
            Expr::Not(inner) => {
                out.write_char('!')?;
                inner.write_canonical(out)
            }
            Expr::And(ops) if ops.is_empty() => out.write_str("all()"),
            Expr::Or(ops) if ops.is_empty() => out.write_str("!all()"),
            Expr::And(ops) => write_group(out, ops, " && "),
            Expr::Or(ops) => write_group(out, ops, " || "),
        }
    }
}

fn write_quoted<W: fmt::Write>(out: &mut W, value: &str) -> fmt::Result {
    let quote = if value.contains('"') { '\'' } else { '"' };
    out.write_char(quote)?;
    out.write_str(value)?;
    out.write_char(quote)
}

fn write_op<W: fmt::Write>(out: &mut W, label: &str, op: &str, value: &str) -> fmt::Result {
    out.write_str(label)?;
    out.write_str(op)?;
    write_quoted(out, value)
}

fn write_set<W: fmt::Write>(
    out: &mut W,
    label: &str,
    op: &str,
    values: &BTreeSet<String>,
) -> fmt::Result {
    out.write_str(label)?;
    out.write_str(op)?;
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.write_str(", ")?;
        }
        write_quoted(out, value)?;
    }
    out.write_char('}')
}

fn write_group<W: fmt::Write>(out: &mut W, ops: &[Expr], sep: &str) -> fmt::Result {
    out.write_char('(')?;
    for (i, op) in ops.iter().enumerate() {
        if i > 0 {
            out.write_str(sep)?;
        }
        op.write_canonical(out)?;
    }
    out.write_char(')')
}

impl fmt::Display for Expr {
    /// The canonical form (see the module docs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_canonical(f)
    }
}
