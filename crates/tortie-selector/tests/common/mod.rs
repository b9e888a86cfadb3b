//! Shared proptest strategies: random selector syntax trees in the shape the
//! parser produces (no `Not` directly inside `Not`, `&&`/`||` with at least
//! two operands, values never holding both quote characters).

#![allow(
    dead_code,
    reason = "each test binary uses a different subset of these helpers; `expect` would be unfulfilled in some"
)]

use std::collections::BTreeMap;

use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;
use tortie_selector::Expr;

/// A random expression over the given label and value strategies.
pub fn expr(
    label: BoxedStrategy<String>,
    value: BoxedStrategy<String>,
) -> impl Strategy<Value = Expr> {
    let lv = (label.clone(), value.clone());
    let leaf = prop_oneof![
        Just(Expr::All),
        Just(Expr::Global),
        label.clone().prop_map(|label| Expr::Has { label }),
        lv.clone()
            .prop_map(|(label, value)| Expr::Eq { label, value }),
        lv.clone()
            .prop_map(|(label, value)| Expr::Ne { label, value }),
        lv.clone()
            .prop_map(|(label, value)| Expr::Contains { label, value }),
        lv.clone()
            .prop_map(|(label, value)| Expr::StartsWith { label, value }),
        lv.prop_map(|(label, value)| Expr::EndsWith { label, value }),
        (label.clone(), btree_set(value.clone(), 0..4))
            .prop_map(|(label, values)| Expr::In { label, values }),
        (label, btree_set(value, 0..4)).prop_map(|(label, values)| Expr::NotIn { label, values }),
    ];
    leaf.prop_recursive(4, 48, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| match e {
                Expr::Not(operand) => *operand,
                other => Expr::Not(Box::new(other)),
            }),
            vec(inner.clone(), 2..5).prop_map(Expr::And),
            vec(inner, 2..5).prop_map(Expr::Or),
        ]
    })
}

/// Any label name in the Calico charset.
pub fn any_label() -> BoxedStrategy<String> {
    "[A-Za-z0-9_./-]{1,16}".boxed()
}

/// Any string that can be written as a quoted literal.
pub fn any_value() -> BoxedStrategy<String> {
    any::<String>()
        .prop_filter("both quote kinds", |v| {
            !(v.contains('"') && v.contains('\''))
        })
        .boxed()
}

/// A small label alphabet so that random selectors and endpoints overlap.
pub fn small_label() -> BoxedStrategy<String> {
    prop::sample::select(vec!["a", "b", "c", "d"])
        .prop_map(str::to_owned)
        .boxed()
}

/// A small value alphabet (including a prefix/suffix pair for
/// `contains`/`starts with`).
pub fn small_value() -> BoxedStrategy<String> {
    prop::sample::select(vec!["x", "y", "z", "xy", ""])
        .prop_map(str::to_owned)
        .boxed()
}

/// Label sets over the small alphabets.
pub fn small_labels() -> impl Strategy<Value = BTreeMap<String, String>> {
    btree_map(small_label(), small_value(), 0..4)
}
