//! Per-selector index plan, derived once from the selector's label
//! restrictions when the selector is added.
//!
//! * `required`: labels every match must carry, optionally with the set of
//!   values allowed. Any one of them narrows the candidate endpoints, and
//!   each of them lets the index find the selector from an endpoint's label.
//! * `other_refs`: labels the selector looks at without requiring them
//!   (`!=`, `not in`, `!has`, one side of an `||`, ...). A change to one of
//!   these on an endpoint must re-evaluate the selector.
//! * a selector with no required label is *unrestricted*: it may match an
//!   endpoint that carries none of its labels, so every new endpoint is
//!   checked against it.
//! * an unsatisfiable selector (e.g. `a == "x" && a == "y"`) matches nothing
//!   and is not registered anywhere.

use std::collections::BTreeSet;

use crate::Selector;

/// How the index narrows candidates for one selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Plan {
    pub(super) satisfiable: bool,
    /// Required labels with their allowed values (`None`: any value).
    pub(super) required: Vec<(String, Option<BTreeSet<String>>)>,
    /// Referenced labels that are not in `required`.
    pub(super) other_refs: Vec<String>,
}

impl Plan {
    pub(super) fn new(selector: &Selector) -> Plan {
        let restrictions = selector.label_restrictions();
        let satisfiable = restrictions.values().all(|r| r.is_satisfiable());
        let mut required = Vec::new();
        for (label, r) in restrictions {
            if r.must_be_present {
                required.push((label, r.one_of));
            }
        }
        let other_refs = selector
            .labels_referenced()
            .into_iter()
            .filter(|l| !required.iter().any(|(r, _)| r == l))
            .map(str::to_owned)
            .collect();
        Plan {
            satisfiable,
            required,
            other_refs,
        }
    }

    /// True if the selector can match an endpoint without any of its labels.
    pub(super) fn is_unrestricted(&self) -> bool {
        self.satisfiable && self.required.is_empty()
    }
}
