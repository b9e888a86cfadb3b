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

use std::collections::BTreeSet;

use crate::Selector;

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

/// How the index handles one selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    pub(super) anchor: Anchor,
    /// Every label the selector reads.
    pub(super) refs: Vec<String>,
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
        let required: Vec<(String, Option<BTreeSet<String>>)> = restrictions
            .into_iter()
            .filter(|(_, r)| r.must_be_present)
            .map(|(label, r)| (label, r.one_of))
            .collect();
        let refs = selector
            .labels_referenced()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let anchor = if !satisfiable {
            Anchor::Never
        } else {
            required
                .iter()
                .min_by_key(|(key, values)| {
                    let width = values.as_ref().map_or(usize::MAX, BTreeSet::len);
                    (endpoint_count(key, values.as_ref()), width)
                })
                .map_or(Anchor::Unrestricted, |(key, values)| match values {
                    Some(values) => Anchor::Values(key.clone(), values.clone()),
                    None => Anchor::Key(key.clone()),
                })
        };
        Plan { anchor, refs }
    }
}
