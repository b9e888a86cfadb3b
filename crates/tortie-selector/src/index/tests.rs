//! Unit tests for the label index: plans, trigger narrowing and the emitted
//! change stream. Randomised equivalence with brute force lives in
//! `tests/index_props.rs`.

use std::collections::BTreeMap;

use super::plan::{Anchor, Plan};
use super::{LabelIndex, MatchChange};
use crate::{Labels, Selector};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).expect(s)
}

fn ch(
    selector: &'static str,
    endpoint: &'static str,
    started: bool,
) -> MatchChange<&'static str, &'static str> {
    MatchChange {
        selector,
        endpoint,
        started,
    }
}

fn plan(s: &str) -> Plan {
    Plan::new(&sel(s), |key, _| if key == "rare" { 1 } else { 10 })
}

#[test]
fn plans() {
    let p = plan("a == 'x' && b != 'y'");
    assert_eq!(
        p.anchor,
        Anchor::Values("a".into(), ["x".to_owned()].into())
    );
    assert_eq!(p.refs, vec!["a".to_owned(), "b".to_owned()]);
    // Fewest endpoints wins, then a value anchor over a presence anchor, then fewer values.
    assert_eq!(
        plan("a == 'x' && has(rare)").anchor,
        Anchor::Key("rare".into())
    );
    assert_eq!(
        plan("has(b) && a == 'x'").anchor,
        Anchor::Values("a".into(), ["x".to_owned()].into())
    );
    assert_eq!(
        plan("b in {'1', '2'} && a == 'x'").anchor,
        Anchor::Values("a".into(), ["x".to_owned()].into())
    );
    for unrestricted in ["!has(a)", "all()", "a == 'x' || b == 'y'", "a not in {'x'}"] {
        assert_eq!(
            plan(unrestricted).anchor,
            Anchor::Unrestricted,
            "{unrestricted}"
        );
    }
    assert_eq!(plan("a == 'x' && a == 'y'").anchor, Anchor::Never);
    assert_eq!(plan("has(a) && !has(a)").anchor, Anchor::Never);
    assert_eq!(plan("a in {}").anchor, Anchor::Never);
}

#[test]
fn selector_then_endpoints() {
    let mut idx: LabelIndex<&str, &str> = LabelIndex::new();
    assert!(idx.update_selector("web", sel("app == 'web'")).is_empty());
    assert_eq!(
        idx.update_labels("ep1", labels(&[("app", "web")])),
        vec![ch("web", "ep1", true)]
    );
    assert!(
        idx.update_labels("ep2", labels(&[("app", "db")]))
            .is_empty()
    );
    assert_eq!(idx.matches(&"web").collect::<Vec<_>>(), vec![&"ep1"]);
    // Changing an unrelated label changes nothing.
    assert!(
        idx.update_labels("ep1", labels(&[("app", "web"), ("x", "1")]))
            .is_empty()
    );
    // Swap the values.
    assert_eq!(
        idx.update_labels("ep1", labels(&[("app", "db")])),
        vec![ch("web", "ep1", false)]
    );
    assert_eq!(
        idx.update_labels("ep2", labels(&[("app", "web")])),
        vec![ch("web", "ep2", true)]
    );
    assert_eq!(idx.delete_labels(&"ep2"), vec![ch("web", "ep2", false)]);
    assert_eq!(idx.num_matches(&"web"), 0);
}

#[test]
fn endpoints_then_selectors() {
    let mut idx: LabelIndex<&str, &str> = LabelIndex::new();
    idx.update_labels("a", labels(&[("role", "db"), ("env", "prod")]));
    idx.update_labels("b", labels(&[("role", "db")]));
    idx.update_labels("c", labels(&[("role", "web"), ("env", "prod")]));
    assert_eq!(
        idx.update_selector("s", sel("role == 'db' && env == 'prod'")),
        vec![ch("s", "a", true)]
    );
    assert_eq!(
        idx.update_selector("s", sel("env == 'prod'")),
        vec![ch("s", "c", true)]
    );
    assert_eq!(
        idx.update_selector("s", sel("!has(env)")),
        vec![ch("s", "a", false), ch("s", "b", true), ch("s", "c", false)]
    );
    // Same canonical form: no-op.
    assert!(idx.update_selector("s", sel("! has( env )")).is_empty());
    assert_eq!(idx.selectors_matching(&"b").collect::<Vec<_>>(), vec![&"s"]);
    assert_eq!(idx.delete_selector(&"s"), vec![ch("s", "b", false)]);
    assert_eq!(idx.selectors_matching(&"b").count(), 0);
    assert!(idx.delete_selector(&"s").is_empty());
}

#[test]
fn unrestricted_selectors_see_new_endpoints() {
    let mut idx: LabelIndex<&str, &str> = LabelIndex::new();
    idx.update_selector("all", sel("all()"));
    idx.update_selector("ne", sel("a != 'x'"));
    idx.update_selector("or", sel("a == 'x' || b == 'y'"));
    assert_eq!(idx.num_unrestricted_selectors(), 3);
    assert_eq!(
        idx.update_labels("e", labels(&[("c", "1")])),
        vec![ch("all", "e", true), ch("ne", "e", true)]
    );
    assert_eq!(
        idx.update_labels("e", labels(&[("a", "x")])),
        vec![ch("ne", "e", false), ch("or", "e", true)]
    );
    assert_eq!(
        idx.update_labels("e", labels(&[("a", "x"), ("b", "y")])),
        vec![]
    );
    assert_eq!(
        idx.update_labels("e", labels(&[("b", "y")])),
        vec![ch("ne", "e", true)]
    );
}

#[test]
fn impossible_selector_matches_nothing() {
    let mut idx: LabelIndex<u32, u32> = LabelIndex::new();
    idx.update_labels(1, labels(&[("a", "x")]));
    assert!(
        idx.update_selector(7, sel("a == 'x' && a == 'y'"))
            .is_empty()
    );
    assert!(idx.update_labels(2, labels(&[("a", "y")])).is_empty());
    assert_eq!(idx.update_selector(7, sel("a in {'x', 'y'}")).len(), 2);
}

#[test]
fn in_set_and_has_narrowing() {
    let mut idx: LabelIndex<u32, u32> = LabelIndex::new();
    for i in 0..100u32 {
        let tier = ["web", "db", "cache", "queue"][(i % 4) as usize];
        let mut l = labels(&[("tier", tier)]);
        if i % 10 == 0 {
            l.insert("special".into(), i.to_string());
        }
        idx.update_labels(i, l);
    }
    idx.update_selector(1, sel("tier in {'db', 'cache'}"));
    idx.update_selector(2, sel("has(special) && tier == 'web'"));
    idx.update_selector(3, sel("special contains '5'"));
    assert_eq!(idx.num_matches(&1), 50);
    assert_eq!(
        idx.matches(&2).copied().collect::<Vec<_>>(),
        vec![0, 20, 40, 60, 80]
    );
    assert_eq!(idx.matches(&3).copied().collect::<Vec<_>>(), vec![50]);
    assert!(idx.is_match(&1, &1));
    assert_eq!(
        idx.selector(&3).map(Selector::canonical),
        Some(r#"special contains "5""#)
    );
    assert_eq!(idx.labels(&50).and_then(|l| l.get("special")), Some("50"));
    assert_eq!((idx.num_selectors(), idx.num_endpoints()), (3, 100));
}

#[test]
fn rebalance_moves_selectors_to_rarer_anchors() {
    let mut idx: LabelIndex<u32, u32> = LabelIndex::new();
    // Added blind: ties go to the narrower value set, so `tier` wins.
    idx.update_selector(1, sel("app in {'a', 'b'} && tier == 'db'"));
    let anchor = |idx: &LabelIndex<u32, u32>| idx.selectors.get(&1).map(|e| e.plan.anchor.clone());
    assert_eq!(
        anchor(&idx),
        Some(Anchor::Values("tier".into(), ["db".to_owned()].into()))
    );
    for i in 0..20 {
        let app = if i == 0 { "a" } else { "z" };
        idx.update_labels(i, labels(&[("app", app), ("tier", "db")]));
    }
    idx.rebalance();
    assert_eq!(
        anchor(&idx),
        Some(Anchor::Values(
            "app".into(),
            ["a".to_owned(), "b".to_owned()].into()
        ))
    );
    assert_eq!(idx.matches(&1).copied().collect::<Vec<_>>(), vec![0]);
    assert_eq!(
        idx.update_labels(5, labels(&[("app", "b"), ("tier", "db")]))
            .len(),
        1
    );
}

#[test]
fn value_tests_narrow_the_scan() {
    let mut idx: LabelIndex<u32, u32> = LabelIndex::new();
    for i in 0..50u32 {
        idx.update_labels(i, labels(&[("app", &format!("web-{i}")), ("x", "1")]));
    }
    let plan = Plan::new(
        &sel("app starts with 'web-1' && app != 'web-10' && has(x)"),
        |_, _| 0,
    );
    let lists = idx.narrowest_lists(&plan);
    // web-1, web-11..web-19 (web-10 excluded by the != test).
    assert_eq!(lists.iter().map(|s| s.len()).sum::<usize>(), 10);
    assert_eq!(
        idx.update_selector(
            9,
            sel("app starts with 'web-1' && app != 'web-10' && has(x)")
        )
        .len(),
        10
    );
}
