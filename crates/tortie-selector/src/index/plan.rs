//! Per-selector index plan, derived from the selector's label restrictions
//! when the selector is added.
//!
//! * `anchor`: one label every match must carry (optionally with the set of
//!   allowed values), picked among the selector's required labels as the
//!   one fewest endpoints satisfy when the selector is added. It narrows the
//!   endpoints scanned then, and it is where the selector is filed in the
//!   trigger index: only endpoints satisfying the anchor ever look at the
//!   selector. A
//!   selector with no required label is [`Anchor::Unrestricted`] (it may
//!   match an endpoint carrying none of its labels: `all()`, `k != "v"`,
//!   `!has(k)`, an `||` over different keys); an unsatisfiable one
//!   (`a == "x" && a == "y"`) is [`Anchor::Never`] and filed nowhere.
//! * `refs`: every label the selector reads; a change to any other label
//!   cannot change its result.
//! * `required`: every label a match must carry, with its allowed values
//!   and the top-level leaf tests on it. When the selector is added, the
//!   index scans the cheapest of these: a value set's posting lists, or the
//!   distinct values of the key filtered by the leaf tests (so
//!   `app starts with "web-"` only visits endpoints whose `app` value starts
//!   with `web-`), or all endpoints carrying the key.

use std::collections::BTreeSet;

use crate::{Expr, Selector};

/// Where a selector is filed in the trigger index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Anchor {
    /// Unsatisfiable: matches nothing.
    Never,
    /// No required label.
    Unrestricted,
    /// Requires `key` with any value.
    Key(String),
    /// Requires `key` with one of these values.
    Values(String, BTreeSet<String>),
}

/// A label every match must carry, with what is known about its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Requirement {
    pub(super) key: String,
    /// The value must be one of these (`None`: no such restriction).
    pub(super) values: Option<BTreeSet<String>>,
    /// Leaf tests on this key that are top-level conjuncts of the selector
    /// (`k starts with "x"`, `k != "y"`, ...): each must hold on the value.
    pub(super) value_tests: Vec<Expr>,
}

/// How the index handles one selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    pub(super) anchor: Anchor,
    /// Every label the selector reads.
    pub(super) refs: Vec<String>,
    /// Labels every match carries (empty unless the selector is satisfiable).
    pub(super) required: Vec<Requirement>,
}

impl Plan {
    /// Builds the plan; `endpoint_count(key, values)` reports how many
    /// endpoints currently satisfy a candidate anchor, and the least
    /// populated one wins (ties: a value anchor with fewer values first).
    pub(super) fn new(
        selector: &Selector,
        endpoint_count: impl Fn(&str, Option<&BTreeSet<String>>) -> usize,
    ) -> Plan {
        let restrictions = selector.label_restrictions();
        let satisfiable = restrictions.values().all(|r| r.is_satisfiable());
        let refs = selector
            .labels_referenced()
            .into_iter()
            .map(str::to_owned)
            .collect();
        if !satisfiable {
            return Plan {
                anchor: Anchor::Never,
                refs,
                required: Vec::new(),
            };
        }
        let mut conjuncts = Vec::new();
        collect_conjuncts(selector.expr(), &mut conjuncts);
        let required: Vec<Requirement> = restrictions
            .into_iter()
            .filter(|(_, r)| r.must_be_present)
            .map(|(key, r)| Requirement {
                value_tests: conjuncts
                    .iter()
                    .filter(|e| e.label() == Some(key.as_str()) && !matches!(e, Expr::Has { .. }))
                    .map(|e| (*e).clone())
                    .collect(),
                key,
                values: r.one_of,
            })
            .collect();
        let anchor = required
            .iter()
            .min_by_key(|r| {
                let width = r.values.as_ref().map_or(usize::MAX, BTreeSet::len);
                (endpoint_count(&r.key, r.values.as_ref()), width)
            })
            .map_or(Anchor::Unrestricted, |r| match &r.values {
                Some(values) => Anchor::Values(r.key.clone(), values.clone()),
                None => Anchor::Key(r.key.clone()),
            });
        Plan {
            anchor,
            refs,
            required,
        }
    }
}

/// The operands of the top-level `&&` (flattening nested ones), or the
/// expression itself.
fn collect_conjuncts<'a>(expr: &'a Expr, out: &mut Vec<&'a Expr>) {
    match expr {
        Expr::And(ops) => ops.iter().for_each(|op| collect_conjuncts(op, out)),
        other => out.push(other),
    }
}
