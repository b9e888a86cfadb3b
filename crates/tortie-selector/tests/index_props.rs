//! Property test for the label index: after any sequence of selector and
//! endpoint updates/deletions, the index agrees with brute-force evaluation,
//! each call's changes are exactly the membership diff it caused, and
//! replaying all emitted changes reproduces the final membership.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use tortie_selector::index::{LabelIndex, MatchChange};
use tortie_selector::{Expr, Selector};

#[derive(Debug, Clone)]
enum Op {
    UpdateSelector(u8, Expr),
    DeleteSelector(u8),
    UpdateLabels(u8, BTreeMap<String, String>),
    DeleteLabels(u8),
    Rebalance,
}

fn op() -> impl Strategy<Value = Op> {
    let sel = common::expr(common::small_label(), common::small_value());
    prop_oneof![
        3 => (0..6u8, sel).prop_map(|(id, e)| Op::UpdateSelector(id, e)),
        1 => (0..6u8).prop_map(Op::DeleteSelector),
        5 => (0..10u8, common::small_labels()).prop_map(|(id, l)| Op::UpdateLabels(id, l)),
        1 => (0..10u8).prop_map(Op::DeleteLabels),
        1 => Just(Op::Rebalance),
    ]
}

/// The reference model: plain maps, evaluated exhaustively.
#[derive(Default)]
struct Model {
    selectors: BTreeMap<u8, Selector>,
    endpoints: BTreeMap<u8, BTreeMap<String, String>>,
}

impl Model {
    fn membership(&self) -> BTreeSet<(u8, u8)> {
        let mut out = BTreeSet::new();
        for (s, sel) in &self.selectors {
            for (e, labels) in &self.endpoints {
                if sel.evaluate(labels) {
                    out.insert((*s, *e));
                }
            }
        }
        out
    }
}

fn index_membership(idx: &LabelIndex<u8, u8>, model: &Model) -> BTreeSet<(u8, u8)> {
    let mut out = BTreeSet::new();
    for s in model.selectors.keys() {
        out.extend(idx.matches(s).map(|e| (*s, *e)));
    }
    out
}

fn apply(idx: &mut LabelIndex<u8, u8>, model: &mut Model, op: Op) -> Vec<MatchChange<u8, u8>> {
    match op {
        Op::UpdateSelector(id, e) => {
            let sel = Selector::new(e);
            model.selectors.insert(id, sel.clone());
            idx.update_selector(id, sel)
        }
        Op::DeleteSelector(id) => {
            model.selectors.remove(&id);
            idx.delete_selector(&id)
        }
        Op::UpdateLabels(id, labels) => {
            model.endpoints.insert(id, labels.clone());
            idx.update_labels(id, labels)
        }
        Op::DeleteLabels(id) => {
            model.endpoints.remove(&id);
            idx.delete_labels(&id)
        }
        Op::Rebalance => {
            idx.rebalance();
            Vec::new()
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn index_matches_brute_force(ops in proptest::collection::vec(op(), 1..60)) {
        let mut idx = LabelIndex::new();
        let mut model = Model::default();
        let mut replayed: BTreeSet<(u8, u8)> = BTreeSet::new();
        for op in ops {
            let before = model.membership();
            let changes = apply(&mut idx, &mut model, op.clone());
            let after = model.membership();

            let mut expected: Vec<MatchChange<u8, u8>> = before
                .difference(&after)
                .map(|&(selector, endpoint)| MatchChange { selector, endpoint, started: false })
                .chain(after.difference(&before).map(|&(selector, endpoint)| MatchChange {
                    selector,
                    endpoint,
                    started: true,
                }))
                .collect();
            expected.sort();
            let mut got = changes.clone();
            got.sort();
            prop_assert_eq!(&got, &expected, "changes after {:?}", op);

            for c in changes {
                if c.started {
                    prop_assert!(replayed.insert((c.selector, c.endpoint)));
                } else {
                    prop_assert!(replayed.remove(&(c.selector, c.endpoint)));
                }
            }
            prop_assert_eq!(&index_membership(&idx, &model), &after);
            prop_assert_eq!(&replayed, &after);
            for e in model.endpoints.keys() {
                let via_ep: BTreeSet<u8> = idx.selectors_matching(e).copied().collect();
                let want: BTreeSet<u8> = after.iter().filter(|(_, ep)| ep == e).map(|(s, _)| *s).collect();
                prop_assert_eq!(via_ep, want);
            }
        }
        prop_assert_eq!(idx.num_selectors(), model.selectors.len());
        prop_assert_eq!(idx.num_endpoints(), model.endpoints.len());
    }
}
