//! Unit tests for lexing, parsing, canonical rendering and evaluation edge
//! cases. Calico's tokenizer table is restated here because the lexer is
//! private; the parser/evaluation tables live in `tests/calico_vectors.rs`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::lexer::{Tok, tokenize};
use crate::{Expr, Labels, MAX_NESTING_DEPTH, Overlay, ParseErrorKind, Selector};

fn toks(input: &str) -> Option<Vec<Tok<'_>>> {
    tokenize(input)
        .ok()
        .map(|ts| ts.into_iter().map(|t| t.tok).collect())
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// libcalico-go `tokenizer_test.go` vectors.
#[test]
fn calico_tokenizer_table() {
    use Tok::*;
    let a512 = "a".repeat(512);
    let in512 = format!(r#"{a512} == "value""#);
    let cases: Vec<(&str, Option<Vec<Tok<'_>>>)> = vec![
        (r#"a=="b""#, Some(vec![Label("a"), Eq, Str("b"), Eof])),
        (r#"a!="b""#, Some(vec![Label("a"), Ne, Str("b"), Eof])),
        (r#"a != "b""#, Some(vec![Label("a"), Ne, Str("b"), Eof])),
        (
            r#"(a=="b")"#,
            Some(vec![LParen, Label("a"), Eq, Str("b"), RParen, Eof]),
        ),
        (
            r#"label == "value""#,
            Some(vec![Label("label"), Eq, Str("value"), Eof]),
        ),
        (
            r#"label contains "value""#,
            Some(vec![Label("label"), Contains, Str("value"), Eof]),
        ),
        (
            r#"contains contains "contains""#,
            Some(vec![Label("contains"), Contains, Str("contains"), Eof]),
        ),
        (
            "contains contains 'contains'",
            Some(vec![Label("contains"), Contains, Str("contains"), Eof]),
        ),
        (
            r#"label contains"value""#,
            Some(vec![Label("label"), Contains, Str("value"), Eof]),
        ),
        (
            r#"label startswith "value""#,
            Some(vec![Label("label"), StartsWith, Str("value"), Eof]),
        ),
        (
            r#"label endswith "value""#,
            Some(vec![Label("label"), EndsWith, Str("value"), Eof]),
        ),
        (
            r#"label starts with "value""#,
            Some(vec![Label("label"), StartsWith, Str("value"), Eof]),
        ),
        (
            r#"startswith starts with "value""#,
            Some(vec![Label("startswith"), StartsWith, Str("value"), Eof]),
        ),
        (
            r#"label ends with "value""#,
            Some(vec![Label("label"), EndsWith, Str("value"), Eof]),
        ),
        (
            r#"endswith ends with "value""#,
            Some(vec![Label("endswith"), EndsWith, Str("value"), Eof]),
        ),
        (
            r#"label starts  with "value""#,
            Some(vec![Label("label"), StartsWith, Str("value"), Eof]),
        ),
        (
            r#"label ends  with "value""#,
            Some(vec![Label("label"), EndsWith, Str("value"), Eof]),
        ),
        (&in512, Some(vec![Label(&a512), Eq, Str("value"), Eof])),
        (r#"label == "value"#, None),
        ("label == 'value", None),
        (r#"label = "value""#, None),
        ("all(", None),
        ("global(", None),
        ("has()", None),
        ("has(foo", None),
        ("has( foo ", None),
        (r#"a == "b" & has(foo)"#, None),
        (r#"a == "b" | has(foo)"#, None),
        (r#"label starts foo "value""#, None),
        (r#"label inf "value""#, None),
        (r#"label ends foo "value""#, None),
        (r#"label ends withs "value""#, None),
        (r#"label squiggles "value""#, None),
        (
            r#"a not in "bar" && !has(foo) || b in c"#,
            Some(vec![
                Label("a"),
                NotIn,
                Str("bar"),
                And,
                Not,
                Has("foo"),
                Or,
                Label("b"),
                In,
                Label("c"),
                Eof,
            ]),
        ),
        ("has(calico/k8s_ns)", Some(vec![Has("calico/k8s_ns"), Eof])),
        (
            "has(calico/k8s_ns/role)",
            Some(vec![Has("calico/k8s_ns/role"), Eof]),
        ),
        (
            "has(calico/k8s_NS-.1/role)",
            Some(vec![Has("calico/k8s_NS-.1/role"), Eof]),
        ),
        (
            r#"calico/k8s_ns == "kube-system" && k8s-app == "kube-dns""#,
            Some(vec![
                Label("calico/k8s_ns"),
                Eq,
                Str("kube-system"),
                And,
                Label("k8s-app"),
                Eq,
                Str("kube-dns"),
                Eof,
            ]),
        ),
        (
            r#"a  not  in  "bar"  &&  ! has( foo )  ||  b  in  c "#,
            Some(vec![
                Label("a"),
                NotIn,
                Str("bar"),
                And,
                Not,
                Has("foo"),
                Or,
                Label("b"),
                In,
                Label("c"),
                Eof,
            ]),
        ),
        (
            r#"a notin"bar"&&!has(foo)||b in"c""#,
            Some(vec![
                Label("a"),
                NotIn,
                Str("bar"),
                And,
                Not,
                Has("foo"),
                Or,
                Label("b"),
                In,
                Str("c"),
                Eof,
            ]),
        ),
        (
            "a not in {}",
            Some(vec![Label("a"), NotIn, LBrace, RBrace, Eof]),
        ),
        (
            r#"a not in {"a"}"#,
            Some(vec![Label("a"), NotIn, LBrace, Str("a"), RBrace, Eof]),
        ),
        (
            r#"a not in {"a","B"}"#,
            Some(vec![
                Label("a"),
                NotIn,
                LBrace,
                Str("a"),
                Comma,
                Str("B"),
                RBrace,
                Eof,
            ]),
        ),
        ("global()", Some(vec![Global, Eof])),
        ("global( )", Some(vec![Global, Eof])),
        ("all()", Some(vec![All, Eof])),
        ("all( )", Some(vec![All, Eof])),
    ];
    for (input, want) in cases {
        assert_eq!(toks(input), want, "tokenizing {input:?}");
    }
}

#[test]
fn token_positions_are_byte_offsets() {
    let ts = tokenize(r#"  ab == "x" && has( c )"#).expect("lexes");
    let pos: Vec<usize> = ts.iter().map(|t| t.pos).collect();
    assert_eq!(pos, vec![2, 5, 8, 12, 15, 23]);
}

#[test]
fn error_positions_and_messages() {
    let err = Selector::parse("app xyz").unwrap_err();
    assert_eq!(err.position, 4);
    assert_eq!(
        err.to_string(),
        r#"expected operator after label "app" at position 4"#
    );
    let cases: &[(&str, usize)] = &[
        ("a", 1),
        ("a ", 2),
        ("a && b", 2),
        (r#"a == "x"#, 5),
        ("a = 'x'", 2),
        ("a == b", 5),
        ("a in 'x'", 5),
        (r#"a in {"x" "y"}"#, 10),
        ("(has(a)", 7),
        ("has(a) has(b)", 7),
        ("é", 0),
        ("has(a)\n", 6),
        ("!", 1),
        ("x & y", 2),
    ];
    for (input, pos) in cases {
        let err = Selector::parse(input).expect_err(input);
        assert_eq!(err.position, *pos, "{input:?}: {err}");
    }
}

#[test]
fn multi_word_operators_and_word_boundaries() {
    for ok in [
        "a notin {}",
        "a not\t in {}",
        "a startswith 'x'",
        "a starts \t with'x'",
        "a in{}",
        "a contains'x'",
        "in in {'in'}",
        "not not in {}",
        "has == 'x'",
        "all == 'x'",
    ] {
        assert!(Selector::parse(ok).is_ok(), "{ok:?}");
    }
    for bad in [
        "a notinx {}",
        "a containsx 'x'",
        "a in.x {}",
        "a starts with-'x'",
        "has (a)",
    ] {
        assert!(Selector::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn newline_is_not_whitespace() {
    assert!(Selector::parse("has(a)\n").is_err());
    assert!(Selector::parse("\thas(a) \t").is_ok());
    assert!(Selector::parse("\r").is_err());
}

#[test]
fn sets_allow_empty_and_trailing_comma() {
    let sel = Selector::parse("a in {'x', 'y',}").expect("parses");
    assert_eq!(sel.canonical(), r#"a in {"x", "y"}"#);
    let empty = Selector::parse("a in {}").expect("parses");
    assert_eq!(empty.canonical(), "a in {}");
    assert!(!empty.evaluate(&labels(&[("a", "x")])));
    assert!(
        Selector::parse("a not in {}")
            .expect("p")
            .evaluate(&labels(&[]))
    );
    assert!(Selector::parse("a in {,}").is_err());
    assert!(Selector::parse("a in {'x',,}").is_err());
}

#[test]
fn canonical_quoting_and_grouping() {
    let cases = [
        (r#"a == 'say "hi"'"#, r#"a == 'say "hi"'"#),
        ("a in {'\"', \"'\"}", r#"a in {'"', "'"}"#),
        (
            "a == 'x' && (b == 'y' || has(c))",
            r#"(a == "x" && (b == "y" || has(c)))"#,
        ),
        (
            "a == 'x' && b == 'y' && c == 'z'",
            r#"(a == "x" && b == "y" && c == "z")"#,
        ),
        (
            "(a == 'x' && b == 'y') && c == 'z'",
            r#"((a == "x" && b == "y") && c == "z")"#,
        ),
        ("!(a == 'x')", r#"!a == "x""#),
        ("!!(a == 'x')", r#"a == "x""#),
        ("!(!has(a))", "!!has(a)"),
        ("!all()", "!all()"),
        ("global() || all()", "(global() || all())"),
        ("a == ''", r#"a == """#),
    ];
    for (input, want) in cases {
        assert_eq!(
            Selector::parse(input).expect(input).canonical(),
            want,
            "{input:?}"
        );
    }
}

#[test]
fn double_negation_through_parens_is_kept_like_calico() {
    // Calico keeps Not(Not(x)) for `!(!x)` and renders `!!x`, which re-parses
    // as plain x: the one case where canonicalisation is not idempotent.
    let sel = Selector::parse("!(!has(a))").expect("parses");
    assert_eq!(
        sel.expr(),
        &Expr::Not(Box::new(Expr::Not(Box::new(Expr::Has {
            label: "a".into()
        }))))
    );
    let again = Selector::parse(sel.canonical()).expect("parses");
    assert_eq!(again.canonical(), "has(a)");
    assert_ne!(sel.unique_id(), again.unique_id());
}

#[test]
fn evaluation_semantics() {
    let l = labels(&[("a", "hello"), ("b", "")]);
    let check = |s: &str, want: bool| {
        assert_eq!(Selector::parse(s).expect(s).evaluate(&l), want, "{s:?}");
    };
    check("a contains 'ell'", true);
    check("a contains ''", true);
    check("z contains ''", false);
    check("z starts with ''", false);
    check("b == ''", true);
    check("has(b)", true);
    check("z != 'x'", true);
    check("z not in {'x'}", true);
    check("a ends with 'llo' && a starts with 'he'", true);
    check("!has(z) && !has(a)", false);
    check("global()", true);
}

#[test]
fn hand_built_edge_cases_render_and_evaluate() {
    let and = Selector::new(Expr::And(vec![]));
    assert_eq!(and.canonical(), "all()");
    assert!(and.evaluate(&labels(&[])));
    let or = Selector::new(Expr::Or(vec![]));
    assert_eq!(or.canonical(), "!all()");
    assert!(!or.evaluate(&labels(&[])));
    let one = Selector::new(Expr::Or(vec![Expr::All]));
    assert_eq!(one.canonical(), "(all())");
}

#[test]
fn nesting_limit() {
    let ok = format!(
        "{}has(a){}",
        "(".repeat(MAX_NESTING_DEPTH),
        ")".repeat(MAX_NESTING_DEPTH)
    );
    assert!(Selector::parse(&ok).is_ok());
    let deep = format!(
        "{}has(a){}",
        "(".repeat(MAX_NESTING_DEPTH + 1),
        ")".repeat(MAX_NESTING_DEPTH + 1)
    );
    let err = Selector::parse(&deep).expect_err("too deep");
    assert!(matches!(err.kind, ParseErrorKind::TooDeep { .. }));
    // Repeated `!` collapses and adds no depth.
    assert!(Selector::parse(&format!("{}has(a)", "!".repeat(100_000))).is_ok());
    assert!(Selector::parse(&"(".repeat(100_000)).is_err());
}

#[test]
fn labels_referenced_and_map_labels() {
    let sel =
        Selector::parse("a == 'x' && (has(b) || c not in {'y'}) && !a != 'z' && all()").expect("p");
    assert_eq!(sel.labels_referenced(), BTreeSet::from(["a", "b", "c"]));
    let ns = sel.map_labels(|l| format!("pcns.{l}"));
    assert_eq!(
        ns.labels_referenced(),
        BTreeSet::from(["pcns.a", "pcns.b", "pcns.c"])
    );
    assert_eq!(
        ns.canonical(),
        r#"(pcns.a == "x" && (has(pcns.b) || pcns.c not in {"y"}) && !pcns.a != "z" && all())"#
    );
}

#[test]
fn label_sources() {
    let sel = Selector::parse("app == 'web' && env == 'prod'").expect("p");
    let ep = labels(&[("app", "web")]);
    let profile = labels(&[("app", "db"), ("env", "prod")]);
    assert!(sel.evaluate(&Overlay::new(&ep, &profile)));
    assert!(!sel.evaluate(&Overlay::new(&profile, &ep)));
    let hm: HashMap<String, String> =
        [("app".into(), "web".into()), ("env".into(), "prod".into())].into();
    assert!(sel.evaluate(&hm));
    let dynamic: &dyn Labels = &hm;
    assert!(sel.evaluate(dynamic));
}

#[test]
fn serde_uses_canonical_string() {
    let sel = Selector::parse("b == 'x'&&has(a)").expect("p");
    let json = serde_json::to_string(&sel).expect("ser");
    assert_eq!(json, r#""(b == \"x\" && has(a))""#);
    let back: Selector = serde_json::from_str(&json).expect("de");
    assert_eq!(back, sel);
    let err = serde_json::from_str::<Selector>(r#""a ==""#).expect_err("bad selector");
    assert!(err.to_string().contains("expected string literal"), "{err}");
}

#[test]
fn identity_is_the_canonical_string() {
    let a = Selector::parse("x == 'a' && y in {'b','c','b'}").expect("p");
    let b: Selector = r#"(x=="a"&&y in {"c", "b"})"#.parse().expect("p");
    assert_eq!(a, b);
    assert_eq!(a.unique_id(), b.unique_id());
    assert_eq!(Selector::default().canonical(), "all()");
    assert_eq!(a.unique_id().len(), 2 + 38);
}

#[test]
fn label_set_lookup_and_iteration() {
    use crate::LabelSet;
    let map = labels(&[("b", "2"), ("a", "1"), ("ccc", ""), ("é", "ü")]);
    let set = LabelSet::from(&map);
    assert_eq!(set.len(), 4);
    assert_eq!(
        set.iter().collect::<Vec<_>>(),
        vec![("a", "1"), ("b", "2"), ("ccc", ""), ("é", "ü")]
    );
    for (k, v) in &map {
        assert_eq!(set.get(k), Some(v.as_str()));
    }
    for missing in ["", "0", "aa", "c", "d", "zz"] {
        assert_eq!(set.get(missing), None);
    }
    assert_eq!(set.to_map(), map);
    assert!(LabelSet::default().is_empty());
    assert_eq!(LabelSet::default().get("a"), None);
    assert_eq!(
        format!("{set:?}"),
        r#"{"a": "1", "b": "2", "ccc": "", "é": "ü"}"#
    );
}
