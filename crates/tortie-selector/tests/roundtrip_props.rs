//! Property tests for the parser and printer: parse ∘ print is the identity
//! on parser-shaped trees, canonical forms are stable, and no input string
//! makes the parser panic.

mod common;

use proptest::prelude::*;
use tortie_selector::{Expr, Selector};

/// True if a `Not` sits directly inside a `Not` (`!(!x)`), the one shape
/// whose canonical form `!!x` re-parses to something else (as in Calico).
fn has_double_not(e: &Expr) -> bool {
    match e {
        Expr::Not(inner) if matches!(inner.as_ref(), Expr::Not(_)) => true,
        _ => e.children().iter().any(has_double_not),
    }
}

/// Tiny deterministic PRNG so one proptest seed drives all spelling choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options[self.next(options.len())]
    }

    fn ws(&mut self) -> &'static str {
        self.pick(&["", "", " ", "\t", "  \t "])
    }
}

/// Writes `e` with randomly chosen, equivalent spellings: whitespace, quote
/// style, `notin`/`startswith`, redundant parentheses and `!!`, shuffled and
/// duplicated set members, trailing commas.
fn noisy(e: &Expr, r: &mut Rng, out: &mut String) {
    let quoted = |r: &mut Rng, v: &str| {
        let q = if v.contains('"') || (!v.contains('\'') && r.next(2) == 0) {
            '\''
        } else {
            '"'
        };
        format!("{q}{v}{q}")
    };
    let ws = |r: &mut Rng| r.ws().to_owned();
    let wide = |r: &mut Rng| r.pick(&[" ", "\t", "  "]).to_owned();
    if r.next(6) == 0 {
        out.push_str(&format!("({}", ws(r)));
        noisy_inner(e, r, out, &quoted, &ws, &wide);
        out.push_str(&format!("{})", ws(r)));
    } else {
        noisy_inner(e, r, out, &quoted, &ws, &wide);
    }
}

type Fmt<'a> = &'a dyn Fn(&mut Rng, &str) -> String;
type Ws<'a> = &'a dyn Fn(&mut Rng) -> String;

fn noisy_inner(e: &Expr, r: &mut Rng, out: &mut String, quoted: Fmt<'_>, ws: Ws<'_>, wide: Ws<'_>) {
    let op = |r: &mut Rng, label: &str, spellings: &[&str], word: bool, value: &str| {
        let sep = if word { wide(r) } else { ws(r) };
        let spelled = r.pick(spellings).replace(' ', &wide(r));
        format!("{label}{sep}{spelled}{}{}", ws(r), quoted(r, value))
    };
    let set = |r: &mut Rng,
               label: &str,
               spellings: &[&str],
               values: &std::collections::BTreeSet<String>| {
        let mut items: Vec<String> = values.iter().rev().map(|v| quoted(r, v)).collect();
        if let Some(first) = items.first().cloned()
            && r.next(3) == 0
        {
            items.push(first);
        }
        let trailing = if !items.is_empty() && r.next(3) == 0 {
            ","
        } else {
            ""
        };
        let spelled = r.pick(spellings).replace(' ', &wide(r));
        format!(
            "{label}{}{spelled}{}{{{}{}{trailing}}}",
            wide(r),
            ws(r),
            ws(r),
            items.join(&format!(",{}", ws(r)))
        )
    };
    let text = match e {
        Expr::All => format!("all({})", ws(r)),
        Expr::Global => format!("global({})", ws(r)),
        Expr::Has { label } => format!("has({}{label}{})", ws(r), ws(r)),
        Expr::Eq { label, value } => op(r, label, &["=="], false, value),
        Expr::Ne { label, value } => op(r, label, &["!="], false, value),
        Expr::Contains { label, value } => op(r, label, &["contains"], true, value),
        Expr::StartsWith { label, value } => {
            op(r, label, &["starts with", "startswith"], true, value)
        }
        Expr::EndsWith { label, value } => op(r, label, &["ends with", "endswith"], true, value),
        Expr::In { label, values } => set(r, label, &["in"], values),
        Expr::NotIn { label, values } => set(r, label, &["not in", "notin"], values),
        Expr::Not(inner) => {
            out.push_str(r.pick(&["!", "!!!", "! !\t!"]));
            out.push_str(&ws(r));
            let group = matches!(inner.as_ref(), Expr::And(_) | Expr::Or(_));
            return if group {
                noisy_inner(inner, r, out, quoted, ws, wide)
            } else {
                noisy(inner, r, out)
            };
        }
        Expr::And(ops) | Expr::Or(ops) => {
            let sep = if matches!(e, Expr::And(_)) {
                "&&"
            } else {
                "||"
            };
            out.push('(');
            for (i, op) in ops.iter().enumerate() {
                if i > 0 {
                    out.push_str(&format!("{}{sep}{}", ws(r), ws(r)));
                }
                if matches!(op, Expr::And(_) | Expr::Or(_)) {
                    noisy_inner(op, r, out, quoted, ws, wide);
                } else {
                    noisy(op, r, out);
                }
            }
            out.push(')');
            return;
        }
    };
    out.push_str(&text);
}

/// Applies one random edit (delete a span, duplicate a span, insert a
/// fragment) at a char boundary.
fn mutate(s: &str, r: &mut Rng) -> String {
    let cuts: Vec<usize> = s.char_indices().map(|(i, _)| i).chain([s.len()]).collect();
    let a = cuts[r.next(cuts.len())];
    let b = cuts[r.next(cuts.len())];
    let (lo, hi) = (a.min(b), a.max(b));
    match r.next(3) {
        0 => format!("{}{}", &s[..lo], &s[hi..]),
        1 => format!("{}{}", &s[..hi], &s[lo..]),
        _ => {
            let piece = r.pick(&[
                "(", ")", "!", "&&", "||", "'", "\"", "{", "}", ",", " ", "in", "has(", "==", "\n",
            ]);
            format!("{}{piece}{}", &s[..lo], &s[lo..])
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn parse_of_print_is_identity(e in common::expr(common::any_label(), common::any_value())) {
        let printed = e.to_string();
        let parsed = Selector::parse(&printed)
            .map_err(|err| TestCaseError::fail(format!("{printed:?}: {err}")))?;
        prop_assert_eq!(parsed.expr(), &e);
        prop_assert_eq!(parsed.canonical(), printed.as_str());
    }

    #[test]
    fn arbitrary_strings_never_panic(s in any::<String>()) {
        if let Ok(sel) = Selector::parse(&s) {
            let again = Selector::parse(sel.canonical()).expect("canonical re-parses");
            let third = Selector::parse(again.canonical()).expect("stable");
            prop_assert_eq!(third.canonical(), again.canonical());
        }
    }

    #[test]
    fn noisy_spellings_parse_to_the_same_tree(
        e in common::expr(common::any_label(), common::any_value()),
        seed in 1..u64::MAX,
    ) {
        let mut text = String::new();
        noisy(&e, &mut Rng(seed), &mut text);
        let parsed = Selector::parse(&text)
            .map_err(|err| TestCaseError::fail(format!("{text:?}: {err}")))?;
        prop_assert_eq!(parsed.expr(), &e, "from {:?}", text);
    }

    #[test]
    fn mutated_selectors_never_panic_and_round_trip(
        e in common::expr(common::small_label(), common::small_value()),
        seed in 1..u64::MAX,
        l in common::small_labels(),
    ) {
        let mut r = Rng(seed);
        let mut text = String::new();
        noisy(&e, &mut r, &mut text);
        let s = mutate(&text, &mut r);
        let Ok(sel) = Selector::parse(&s) else { return Ok(()); };
        let again = Selector::parse(sel.canonical())
            .map_err(|err| TestCaseError::fail(format!("{:?}: {err}", sel.canonical())))?;
        if !has_double_not(sel.expr()) {
            prop_assert_eq!(again.expr(), sel.expr());
        }
        prop_assert_eq!(again.evaluate(&l), sel.evaluate(&l));
    }
}
