//! Test vectors from libcalico-go's own selector tests
//! (`lib/selector/parser/parser_test.go`, `label_restriction_test.go`),
//! restated as Rust tables: (selector, label sets that match, label sets that
//! don't), rejected selectors, canonical forms with unique IDs, label
//! prefixing, and label restrictions. Every case agrees with Calico.

use std::collections::{BTreeMap, BTreeSet};

use tortie_selector::Selector;
use tortie_selector::restriction::LabelRestriction;

type Pairs = &'static [(&'static str, &'static str)];

fn labels(pairs: Pairs) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// (selector, matching label sets, non-matching label sets).
const EVAL_CASES: &[(&str, &[Pairs], &[Pairs])] = &[
    (
        r#"a == "b""#,
        &[&[("a", "b")], &[("a", "b"), ("c", "d")]],
        &[&[], &[("a", "c")], &[("c", "d")]],
    ),
    (
        r#"a == "b" && c == "d""#,
        &[&[("a", "b"), ("c", "d")]],
        &[
            &[],
            &[("a", "b"), ("c", "e")],
            &[("a", "c"), ("c", "d")],
            &[("c", "d")],
            &[("a", "b")],
        ],
    ),
    (
        r#"a == "b" || c == "d""#,
        &[&[("a", "b"), ("c", "d")], &[("a", "b")], &[("c", "d")]],
        &[&[], &[("a", "e"), ("c", "e")], &[("c", "e")], &[("a", "e")]],
    ),
    (
        r#"a in {"'", '"', "c"}"#,
        &[&[("a", "c")], &[("a", "\"")], &[("a", "'")]],
        &[&[], &[("a", "e")]],
    ),
    (
        r#"a not in {"'", '"', "c"}"#,
        &[&[], &[("a", "e")]],
        &[&[("a", "c")], &[("a", "\"")], &[("a", "'")]],
    ),
    ("a == 'a'", &[&[("a", "a")]], &[]),
    (r#"a == "a""#, &[&[("a", "a")]], &[]),
    (r#"a != "b""#, &[&[("a", "a")]], &[]),
    (r#"a != "a""#, &[&[]], &[]),
    (
        r#"a contains "a""#,
        &[&[("a", "a")], &[("a", "bab")], &[("a", "aaa"), ("b", "c")]],
        &[&[], &[("a", "b")], &[("b", "aaa")]],
    ),
    (
        r#"a starts with "a""#,
        &[&[("a", "a")], &[("a", "abb")], &[("a", "aaa"), ("b", "c")]],
        &[&[], &[("a", "b")], &[("a", "baa")], &[("b", "aaa")]],
    ),
    (
        r#"a ends with "a""#,
        &[&[("a", "a")], &[("a", "bba")], &[("a", "aaa"), ("b", "c")]],
        &[&[], &[("a", "b")], &[("a", "aab")], &[("b", "aaa")]],
    ),
    (r#"a in {"a"}"#, &[&[("a", "a")]], &[]),
    (r#"!a in {"a"}"#, &[&[("a", "b")]], &[]),
    (r#"a in {"a", "b"}"#, &[&[("a", "a")]], &[]),
    (r#"a in {"a", "b"}"#, &[&[("a", "b")]], &[]),
    (r#"a not in {"d", "e"}"#, &[&[("a", "a")]], &[]),
    ("has(a)", &[&[("a", "b")]], &[]),
    ("!has(a)", &[&[("b", "b")]], &[]),
    ("", &[&[]], &[]),
    (" ", &[&[]], &[]),
    ("", &[&[("a", "b")]], &[]),
    ("all()", &[&[]], &[]),
    (" all()", &[&[]], &[]),
    (" all()", &[&[("a", "b")]], &[]),
    ("global()", &[&[]], &[]),
    (" global()", &[&[]], &[]),
    (" global()", &[&[("a", "b")]], &[]),
    ("a == 'a'", &[], &[&[("a", "b")]]),
    ("a == 'a'", &[], &[&[]]),
    (r#"a != "a""#, &[], &[&[("a", "a")]]),
    ("a != 'a'", &[], &[&[("a", "a")]]),
    (r#"a in {"a"}"#, &[], &[&[("a", "b")]]),
    (r#"a not in {"a"}"#, &[], &[&[("a", "a")]]),
    (r#"a in {"a", "b"}"#, &[], &[&[("a", "c")]]),
    ("has(b)", &[], &[&[("a", "b")]]),
    ("!!has(b)", &[], &[&[("a", "b")]]),
    ("! has(a)", &[], &[&[("a", "b")]]),
    ("!has(a)", &[], &[&[("a", "b")]]),
    ("!!! has(a)", &[], &[&[("a", "b")]]),
    ("!!!has(a)", &[], &[&[("a", "b")]]),
    ("!! ! has(a)", &[], &[&[("a", "b")]]),
    ("! !!has(a)", &[], &[&[("a", "b")]]),
    // Boolean expressions.
    (
        "a == 'a1' && b == 'b1'",
        &[&[("a", "a1"), ("b", "b1")]],
        &[],
    ),
    (
        "a == 'a1' && b != 'b1'",
        &[],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    (
        "a != 'a1' && b == 'b1'",
        &[],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    (
        "a != 'a1' && b != 'b1'",
        &[],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    (
        "a != 'a1' && !b == 'b1'",
        &[],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    (
        "!a == 'a1' && b == 'b1'",
        &[],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    ("has(a) && !has(b)", &[&[("a", "a")]], &[]),
    ("!has(b) && has(a)", &[&[("a", "a")]], &[]),
    ("!(!has(a) || has(b))", &[&[("a", "a")]], &[]),
    ("!(has(b) || !has(a))", &[&[("a", "a")]], &[]),
    (
        "a == 'a1' || b == 'b1'",
        &[&[("a", "a1"), ("b", "b1")]],
        &[],
    ),
    (
        "a == 'a1' || b != 'b1'",
        &[&[("a", "a1"), ("b", "b1")]],
        &[],
    ),
    (
        "a != 'a1' || b == 'b1'",
        &[&[("a", "a1"), ("b", "b1")]],
        &[],
    ),
    (
        "a != 'a1' || b != 'b1'",
        &[],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
    (
        "! a == 'a1' || ! b == 'b1'",
        &[],
        &[&[("a", "a1"), ("b", "b1")]],
    ),
];

#[test]
fn calico_evaluation_table() {
    for (input, matching, non_matching) in EVAL_CASES {
        let sel = Selector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        // Calico also checks the canonical form evaluates the same way.
        let reparsed = Selector::parse(sel.canonical()).expect("canonical form re-parses");
        for (s, label) in [(&sel, "parsed"), (&reparsed, "canonical")] {
            for m in *matching {
                assert!(
                    s.evaluate(&labels(m)),
                    "{label} {input:?} should match {m:?}"
                );
            }
            for m in *non_matching {
                assert!(
                    !s.evaluate(&labels(m)),
                    "{label} {input:?} should not match {m:?}"
                );
            }
        }
        assert_eq!(sel.unique_id(), sel.clone().unique_id());
    }
}

/// Inputs Calico rejects (from the parser and tokenizer tests).
const BAD_SELECTORS: &[&str] = &[
    "b == b",
    "b contains b",
    "b starts with b",
    "b ends with b",
    "'b1' == b",
    "b",
    "a b",
    "!",
    r#"foo == "bar" &"#,
    r#"foo == "bar" |"#,
    "foo != ||",
    r#"foo in {"", ||"#,
    r#"foo in """#,
    r#""FOO"#,
    r#""FOO'"#,
    "'FOO",
    "(",
    r#"(a == "foo""#,
    ")",
    "()",
    "%",
    r#"a == "b" && %"#,
    r#"a == "b" || %"#,
    "a ",
    "has(foo) &&",
    // Tokenizer-level rejections.
    r#"label == "value"#,
    "label == 'value",
    r#"label = "value""#,
    "all(",
    "global(",
    "has()",
    "has(foo",
    "has( foo ",
    r#"a == "b" & has(foo)"#,
    r#"a == "b" | has(foo)"#,
    r#"label starts foo "value""#,
    r#"label inf "value""#,
    r#"label ends foo "value""#,
    r#"label ends withs "value""#,
    r#"label squiggles "value""#,
];

#[test]
fn calico_bad_selectors_are_rejected() {
    for input in BAD_SELECTORS {
        assert!(
            Selector::parse(input).is_err(),
            "{input:?} should be rejected"
        );
    }
    let long = format!(r#"{} == "value""#, "a".repeat(513));
    assert!(Selector::parse(&long).is_err());
    let max = format!(r#"{} == "value""#, "a".repeat(512));
    assert!(Selector::parse(&max).is_ok());
}

/// (input, canonical form, unique ID or "" when Calico's table has none).
const CANONICAL_CASES: &[(&str, &str, &str)] = &[
    ("", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    (
        " all() ",
        "all()",
        "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug",
    ),
    (
        " (all() )",
        "all()",
        "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug",
    ),
    (
        "! (has( b)||! has(a ))",
        "!(has(b) || !has(a))",
        "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q",
    ),
    (
        r#"! (a == "b"&&! c != "d")"#,
        r#"!(a == "b" && !c != "d")"#,
        "s:lh3haoY1ikTRkd4UZu0nWSaIBknYLPJLX16d-w",
    ),
    (r#"a == "'""#, r#"a == "'""#, ""),
    (r#"a == '"'"#, r#"a == '"'"#, ""),
    (r#"a contains '"'"#, r#"a contains '"'"#, ""),
    (r#"a contains "'""#, r#"a contains "'""#, ""),
    (r#"a startswith '"'"#, r#"a starts with '"'"#, ""),
    (r#"a endswith "'""#, r#"a ends with "'""#, ""),
    (r#"a!='"'"#, r#"a != '"'"#, ""),
    (r#"a in {"d"}"#, r#"a in {"d"}"#, ""),
    (r#"a in {"a", "b"}"#, r#"a in {"a", "b"}"#, ""),
    (r#"a in {"d", "a", "b"}"#, r#"a in {"a", "b", "d"}"#, ""),
    (
        r#"a in {"z", "x", "y", "a"}"#,
        r#"a in {"a", "x", "y", "z"}"#,
        "",
    ),
    (
        r#"a in {"z", "z", "x", "y", "x", "a"}"#,
        r#"a in {"a", "x", "y", "z"}"#,
        "",
    ),
];

#[test]
fn calico_canonical_forms_and_unique_ids() {
    for (input, canonical, uid) in CANONICAL_CASES {
        let sel = Selector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(sel.canonical(), *canonical, "canonical form of {input:?}");
        assert_eq!(sel.to_string(), *canonical);
        let round = Selector::parse(canonical).expect("canonical re-parses");
        assert_eq!(round.canonical(), *canonical);
        assert_eq!(round.unique_id(), sel.unique_id());
        if !uid.is_empty() {
            assert_eq!(sel.unique_id(), *uid, "unique ID of {input:?}");
        }
    }
}

/// Calico's `PrefixVisitor` cases, via `map_labels`.
const PREFIX_CASES: &[(&str, &str)] = &[
    ("k == 'v'", r#"visited/k == "v""#),
    ("k != 'v'", r#"visited/k != "v""#),
    ("k contains 'v'", r#"visited/k contains "v""#),
    ("k starts with 'v'", r#"visited/k starts with "v""#),
    ("k ends with 'v'", r#"visited/k ends with "v""#),
    (
        "k == 'v' && x == 'y'",
        r#"(visited/k == "v" && visited/x == "y")"#,
    ),
    (
        "k == 'v' || has(x)",
        r#"(visited/k == "v" || has(visited/x))"#,
    ),
    ("!(k == 'v')", r#"!visited/k == "v""#),
    ("k in {'v'}", r#"visited/k in {"v"}"#),
    ("k not in {'v'}", r#"visited/k not in {"v"}"#),
    (
        "!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
        r#"!(!((visited/k == "v" && has(visited/t)) || all()) && visited/a in {"b", "c"})"#,
    ),
];

#[test]
fn calico_prefix_visitor() {
    for (input, expected) in PREFIX_CASES {
        let sel = Selector::parse(input).expect("parses");
        let mapped = sel.map_labels(|l| format!("visited/{l}"));
        assert_eq!(mapped.canonical(), *expected, "prefixing {input:?}");
    }
}

/// (label, must_be_present, must_be_absent, one_of).
type Restr = (&'static str, bool, bool, Option<&'static [&'static str]>);

const RESTRICTION_CASES: &[(&str, &[Restr])] = &[
    ("", &[]),
    ("all()", &[]),
    ("global()", &[]),
    ("a == 'value'", &[("a", true, false, Some(&["value"]))]),
    ("has(a)", &[("a", true, false, None)]),
    (
        "a in {'v1','v2'}",
        &[("a", true, false, Some(&["v1", "v2"]))],
    ),
    ("a not in {'v1','v2'}", &[]),
    ("a contains 'foo'", &[("a", true, false, None)]),
    ("a ends with 'foo'", &[("a", true, false, None)]),
    ("a starts with 'foo'", &[("a", true, false, None)]),
    ("a != 'value'", &[]),
    (
        "a == 'v1' && a == 'v1'",
        &[("a", true, false, Some(&["v1"]))],
    ),
    ("a == 'v1' && a == 'v2'", &[("a", true, false, Some(&[]))]),
    ("a == 'v1' && has(a)", &[("a", true, false, Some(&["v1"]))]),
    (
        "a in {'v1','v2'} && a in {'v2','v3'} ",
        &[("a", true, false, Some(&["v2"]))],
    ),
    (
        "a in {'v1','v2', 'v3'} && a in {'v2','v3'} ",
        &[("a", true, false, Some(&["v2", "v3"]))],
    ),
    ("has(a) && a == 'v1'", &[("a", true, false, Some(&["v1"]))]),
    ("has(a) && !has(a)", &[("a", true, true, None)]),
    (
        "a == 'v1' && b == 'v2'",
        &[
            ("a", true, false, Some(&["v1"])),
            ("b", true, false, Some(&["v2"])),
        ],
    ),
    ("a == 'v1' && all()", &[("a", true, false, Some(&["v1"]))]),
    ("all() && a == 'v1'", &[("a", true, false, Some(&["v1"]))]),
    (
        "a == 'v1' || a == 'v2'",
        &[("a", true, false, Some(&["v1", "v2"]))],
    ),
    ("has(a) || a == 'v2'", &[("a", true, false, None)]),
    ("a=='v2' || has(a)", &[("a", true, false, None)]),
    ("a=='v2' || has(b)", &[]),
    ("a=='v2' || (has(b) && has(a))", &[("a", true, false, None)]),
    ("a == 'v1' || b == 'v2'", &[]),
    ("a == 'v1' || all()", &[]),
    ("all() || b == 'v2'", &[]),
    ("!(a == 'value')", &[]),
    ("!has(a)", &[("a", false, true, None)]),
    ("!!has(a)", &[("a", true, false, None)]),
];

#[test]
fn calico_label_restrictions() {
    for (input, expected) in RESTRICTION_CASES {
        let want: BTreeMap<String, LabelRestriction> = expected
            .iter()
            .map(|(l, p, a, v)| {
                let r = LabelRestriction {
                    must_be_present: *p,
                    must_be_absent: *a,
                    one_of: v.map(|vs| vs.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>()),
                };
                ((*l).to_owned(), r)
            })
            .collect();
        let sel = Selector::parse(input).expect("parses");
        assert_eq!(sel.label_restrictions(), want, "restrictions of {input:?}");
        if !input.is_empty() {
            // Adding "all() &&" in front changes nothing.
            let prefixed = Selector::parse(&format!("all() && ({input})")).expect("parses");
            assert_eq!(prefixed.label_restrictions(), want, "all() && ({input})");
        }
    }
}
