//! Label restrictions: necessary conditions on individual labels that any
//! matching label set must satisfy, derived from the syntax tree (Calico's
//! `LabelRestrictions`).
//!
//! For `a == "x" && has(b)` the restrictions are "a present with value in
//! {x}" and "b present". They are *lower bounds*: a label set that violates
//! one can never match, but one that satisfies all of them may still not
//! match (`a contains "x"` only restricts `a` to be present). The label index
//! uses them to pick candidate endpoints and candidate selectors; soundness
//! (never excluding a real match) is what matters, and is checked against
//! brute-force evaluation in the property tests.
//!
//! Rules (same as Calico): leaves `==`/`in` restrict presence and values;
//! `has`/`contains`/`starts with`/`ends with` restrict presence; `!has`
//! requires absence; other negations, `!=`, `not in`, `all()`, `global()`
//! restrict nothing. `&&` merges (values intersect); `||` keeps only what
//! every branch requires (values unite).

use std::collections::{BTreeMap, BTreeSet};

use crate::ast::Expr;

/// What a selector requires of one label.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelRestriction {
    /// The label must be present.
    pub must_be_present: bool,
    /// The label must be absent.
    pub must_be_absent: bool,
    /// If `Some`, the label's value must be one of these. An empty set means
    /// the selector cannot match anything.
    pub one_of: Option<BTreeSet<String>>,
}

impl LabelRestriction {
    /// False when the restriction is self-contradictory (the selector can
    /// never match).
    pub fn is_satisfiable(&self) -> bool {
        !(self.must_be_present && self.must_be_absent)
            && self.one_of.as_ref().is_none_or(|v| !v.is_empty())
    }
}

/// Per-label restrictions, keyed by label name.
pub type LabelRestrictions = BTreeMap<String, LabelRestriction>;

/// Computes the label restrictions of `expr`.
pub fn label_restrictions(expr: &Expr) -> LabelRestrictions {
    match expr {
        Expr::Eq { label, value } => {
            single(label, true, false, Some(BTreeSet::from([value.clone()])))
        }
        Expr::In { label, values } => single(label, true, false, Some(values.clone())),
        Expr::Has { label }
        | Expr::Contains { label, .. }
        | Expr::StartsWith { label, .. }
        | Expr::EndsWith { label, .. } => single(label, true, false, None),
        Expr::Not(inner) => match inner.as_ref() {
            Expr::Has { label } => single(label, false, true, None),
            _ => LabelRestrictions::new(),
        },
        Expr::And(ops) => and_restrictions(ops),
        Expr::Or(ops) => or_restrictions(ops),
        Expr::All | Expr::Global | Expr::Ne { .. } | Expr::NotIn { .. } => LabelRestrictions::new(),
    }
}

fn single(
    label: &str,
    must_be_present: bool,
    must_be_absent: bool,
    one_of: Option<BTreeSet<String>>,
) -> LabelRestrictions {
    BTreeMap::from([(
        label.to_owned(),
        LabelRestriction {
            must_be_present,
            must_be_absent,
            one_of,
        },
    )])
}

fn and_restrictions(ops: &[Expr]) -> LabelRestrictions {
    let mut acc = LabelRestrictions::new();
    for op in ops {
        for (label, r) in label_restrictions(op) {
            let base = acc.entry(label).or_default();
            base.must_be_present |= r.must_be_present;
            base.must_be_absent |= r.must_be_absent;
            base.one_of = match (base.one_of.take(), r.one_of) {
                (None, other) | (other, None) => other,
                (Some(a), Some(b)) => Some(a.intersection(&b).cloned().collect()),
            };
        }
    }
    acc
}

fn or_restrictions(ops: &[Expr]) -> LabelRestrictions {
    let Some((first, rest)) = ops.split_first() else {
        // An empty `||` never matches; claiming nothing is still sound.
        return LabelRestrictions::new();
    };
    let mut acc = label_restrictions(first);
    for op in rest {
        let other = label_restrictions(op);
        acc = acc
            .into_iter()
            .filter_map(|(label, r)| {
                let o = other.get(&label).cloned().unwrap_or_default();
                let must_be_present = r.must_be_present && o.must_be_present;
                let one_of = match (must_be_present, r.one_of, o.one_of) {
                    (true, Some(a), Some(b)) => Some(a.union(&b).cloned().collect()),
                    _ => None,
                };
                let merged = LabelRestriction {
                    must_be_present,
                    must_be_absent: r.must_be_absent && o.must_be_absent,
                    one_of,
                };
                (merged.must_be_present || merged.must_be_absent).then_some((label, merged))
            })
            .collect();
    }
    acc
}
