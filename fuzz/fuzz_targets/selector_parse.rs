//! Fuzz target: any UTF-8 input either fails to parse (without panicking) or
//! parses to a selector whose canonical form re-parses to the same tree
//! (parse ∘ print = id), is a fixed point, and evaluates identically.

#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use tortie_selector::{Expr, Selector};

/// `!(!x)` is kept as two negations and printed `!!x`, which re-parses as
/// `x` — Calico does the same — so tree equality is only checked without it.
fn has_double_not(e: &Expr) -> bool {
    match e {
        Expr::Not(inner) if matches!(inner.as_ref(), Expr::Not(_)) => true,
        _ => e.children().iter().any(has_double_not),
    }
}

fn label_sets() -> Vec<BTreeMap<String, String>> {
    let sets: [&[(&str, &str)]; 4] = [
        &[],
        &[("a", "x")],
        &[("a", "y"), ("b", "x")],
        &[("a", ""), ("b", "xy"), ("c", "'"), ("k8s-app", "\"")],
    ];
    sets.iter()
        .map(|s| s.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sel) = Selector::parse(text) else {
        return;
    };
    let again = Selector::parse(sel.canonical()).expect("canonical form must re-parse");
    if !has_double_not(sel.expr()) {
        assert_eq!(again.expr(), sel.expr(), "tree changed through {:?}", sel.canonical());
        assert_eq!(again.canonical(), sel.canonical());
    }
    let third = Selector::parse(again.canonical()).expect("canonical form must re-parse");
    assert_eq!(third.canonical(), again.canonical(), "canonical form is not a fixed point");
    for labels in label_sets() {
        assert_eq!(sel.evaluate(&labels), again.evaluate(&labels));
    }
});
