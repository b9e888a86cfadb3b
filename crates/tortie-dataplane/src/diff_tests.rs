use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::fixtures::{host_endpoint, model};
use crate::render::render;
use crate::table::{ChainDef, MapDef, NftTable, SetDef};

#[path = "../tests/support/table_gen.rs"]
mod table_gen;

/// An in-memory nft for the subset of the language our scripts use. Strict where nft is
/// strict (references must resolve; referenced objects cannot be deleted; no duplicate
/// objects) and stricter where it helps (adding an element twice is an error).
#[derive(Debug, Default)]
struct Kernel {
    table: Option<NftTable>,
}

fn refs_of(rule: &str) -> Vec<String> {
    let toks: Vec<&str> = rule.split_whitespace().collect();
    let mut v = Vec::new();
    for (i, t) in toks.iter().enumerate() {
        if let Some(name) = t.strip_prefix('@') {
            v.push(name.to_string());
        }
        if (*t == "jump" || *t == "goto")
            && let Some(n) = toks.get(i + 1)
        {
            v.push((*n).to_string());
        }
    }
    v
}

fn braces(s: &str) -> &str {
    s.trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim()
}

fn items(s: &str) -> Vec<String> {
    let inner = braces(s);
    if inner.is_empty() {
        return Vec::new();
    }
    inner.split(", ").map(str::to_string).collect()
}

fn referrers(t: &NftTable, name: &str) -> bool {
    t.chains
        .values()
        .flat_map(|c| &c.rules)
        .chain(t.maps.values().flat_map(|m| m.elements.values()))
        .any(|r| refs_of(r).iter().any(|x| x == name))
}

fn check_refs(t: &NftTable, text: &str) -> Result<(), String> {
    for r in refs_of(text) {
        if !t.chains.contains_key(&r) && !t.sets.contains_key(&r) && !t.maps.contains_key(&r) {
            return Err(format!("`{text}` references missing {r}"));
        }
    }
    Ok(())
}

impl Kernel {
    /// All or nothing, like an nft transaction.
    fn exec(&mut self, script: &str) -> Result<(), String> {
        let mut t = self.table.clone();
        let mut lines = script.lines();
        while let Some(line) = lines.next() {
            match line {
                "table inet tortie {}" => {
                    t.get_or_insert_with(NftTable::default);
                }
                "delete table inet tortie" => {
                    t.take().ok_or("delete of a missing table")?;
                }
                "table inet tortie {" => {
                    let new = parse_block(&mut lines)?;
                    if t.is_some() {
                        return Err("block merge into an existing table is not modelled".into());
                    }
                    t = Some(new);
                }
                _ => command(t.as_mut().ok_or("no table")?, line)?,
            }
        }
        self.table = t;
        Ok(())
    }
}

fn parse_set_parts<'a>(parts: impl Iterator<Item = &'a str>) -> SetDef {
    let mut s = SetDef {
        type_: String::new(),
        interval: false,
        elements: BTreeSet::new().into(),
    };
    for p in parts.map(str::trim) {
        if let Some(ty) = p.strip_prefix("type ") {
            s.type_ = ty.to_string();
        } else if p == "flags interval" {
            s.interval = true;
        } else if let Some(e) = p.strip_prefix("elements = ") {
            s.elements = std::sync::Arc::new(items(e).into_iter().collect());
        }
    }
    s
}

fn parse_map_parts<'a>(parts: impl Iterator<Item = &'a str>) -> Result<MapDef, String> {
    let mut m = MapDef {
        key_type: String::new(),
        elements: Default::default(),
    };
    for p in parts.map(str::trim) {
        if let Some(ty) = p.strip_prefix("type ") {
            m.key_type = ty.trim_end_matches(" : verdict").to_string();
        } else if let Some(e) = p.strip_prefix("elements = ") {
            for it in items(e) {
                let (k, v) = it.split_once(" : ").ok_or("bad map element")?;
                m.elements.insert(k.to_string(), v.to_string());
            }
        }
    }
    Ok(m)
}

fn parse_block<'a>(lines: &mut impl Iterator<Item = &'a str>) -> Result<NftTable, String> {
    let mut t = NftTable::default();
    loop {
        let line = lines.next().ok_or("unterminated table block")?.trim();
        if line == "}" {
            break;
        }
        let (kind, rest) = line.split_once(' ').ok_or("bad block line")?;
        let name = rest.trim_end_matches(" {").to_string();
        let mut body = Vec::new();
        loop {
            let l = lines.next().ok_or("unterminated object")?.trim();
            if l == "}" {
                break;
            }
            body.push(l);
        }
        match kind {
            "set" => {
                t.sets.insert(name, parse_set_parts(body.into_iter()));
            }
            "map" => {
                t.maps.insert(name, parse_map_parts(body.into_iter())?);
            }
            "chain" => {
                let hook = body
                    .first()
                    .filter(|l| l.starts_with("type "))
                    .map(|l| l.to_string());
                let skip = usize::from(hook.is_some());
                let rules = body[skip..].iter().map(|l| l.to_string()).collect();
                t.chains.insert(name, ChainDef { hook, rules });
            }
            k => return Err(format!("unknown object {k}")),
        }
    }
    let texts: Vec<String> = t
        .chains
        .values()
        .flat_map(|c| c.rules.clone())
        .chain(t.maps.values().flat_map(|m| m.elements.values().cloned()))
        .collect();
    for r in texts {
        check_refs(&t, &r)?;
    }
    Ok(t)
}

fn command(t: &mut NftTable, line: &str) -> Result<(), String> {
    let mut w = line.splitn(6, ' ');
    let (verb, obj, fam, tab, name) = (w.next(), w.next(), w.next(), w.next(), w.next());
    let rest = w.next().unwrap_or("");
    if (fam, tab) != (Some("inet"), Some("tortie")) {
        return Err(format!("bad command {line}"));
    }
    let name = name.ok_or("no name")?.to_string();
    let exists =
        t.chains.contains_key(&name) || t.sets.contains_key(&name) || t.maps.contains_key(&name);
    match (verb.unwrap_or(""), obj.unwrap_or("")) {
        ("add", "chain") if !exists => {
            let hook = (!rest.is_empty()).then(|| braces(rest).to_string());
            t.chains.insert(
                name,
                ChainDef {
                    hook,
                    rules: Vec::new(),
                },
            );
        }
        ("add", "set") if !exists => {
            t.sets
                .insert(name, parse_set_parts(braces(rest).split(';')));
        }
        ("add", "map") if !exists => {
            let m = parse_map_parts(braces(rest).split(';'))?;
            for v in m.elements.values() {
                check_refs(t, v)?;
            }
            t.maps.insert(name, m);
        }
        ("add", "rule") => {
            check_refs(t, rest)?;
            t.chains
                .get_mut(&name)
                .ok_or("no chain")?
                .rules
                .push(rest.to_string());
        }
        ("flush", "chain") => t.chains.get_mut(&name).ok_or("no chain")?.rules.clear(),
        ("add", "element") => {
            for it in items(rest) {
                if let Some(s) = t.sets.get_mut(&name) {
                    if !std::sync::Arc::make_mut(&mut s.elements).insert(it.clone()) {
                        return Err(format!("{line}: {it} exists"));
                    }
                } else {
                    let (k, v) = it.split_once(" : ").ok_or("bad map element")?;
                    check_refs(t, v)?;
                    let m = t.maps.get_mut(&name).ok_or("no set or map")?;
                    if m.elements.insert(k.to_string(), v.to_string()).is_some() {
                        return Err(format!("{line}: key {k} exists"));
                    }
                }
            }
        }
        ("delete", "element") => {
            for it in items(rest) {
                let gone = match (t.sets.get_mut(&name), t.maps.get_mut(&name)) {
                    (Some(s), _) => std::sync::Arc::make_mut(&mut s.elements).remove(&it),
                    (None, Some(m)) => m.elements.remove(&it).is_some(),
                    _ => false,
                };
                if !gone {
                    return Err(format!("{line}: {it} not found"));
                }
            }
        }
        ("delete", kind @ ("chain" | "set" | "map")) => {
            if referrers(t, &name) {
                return Err(format!("{line}: {name} is still referenced"));
            }
            let found = match kind {
                "chain" => t.chains.remove(&name).is_some(),
                "set" => t.sets.remove(&name).is_some(),
                _ => t.maps.remove(&name).is_some(),
            };
            if !found {
                return Err(format!("{line}: not found"));
            }
        }
        _ => return Err(format!("cannot run `{line}`")),
    }
    Ok(())
}

/// Objects that differ between `a` and `b`.
fn changed(a: &NftTable, b: &NftTable) -> BTreeSet<String> {
    fn diff<V: PartialEq>(a: &BTreeMap<String, V>, b: &BTreeMap<String, V>) -> Vec<String> {
        a.keys()
            .chain(b.keys())
            .filter(|k| a.get(*k) != b.get(*k))
            .cloned()
            .collect()
    }
    let mut v: BTreeSet<String> = diff(&a.sets, &b.sets).into_iter().collect();
    v.extend(diff(&a.maps, &b.maps));
    v.extend(diff(&a.chains, &b.chains));
    v
}

/// The object each command of an incremental script targets.
fn targets(script: &str) -> Vec<String> {
    script
        .lines()
        .map(|l| l.split(' ').nth(4).unwrap_or_default().to_string())
        .collect()
}

#[test]
fn unchanged_tables_need_no_script() {
    let t = render(&model());
    assert_eq!(script(Some(&t), &t), "");
}

#[test]
fn full_script_replaces_atomically() {
    let t = render(&model());
    let s = script(None, &t);
    assert!(s.starts_with("table inet tortie {}\ndelete table inet tortie\ntable inet tortie {\n"));
    assert!(s.ends_with(&t.definition()));
    let mut k = Kernel::default();
    k.exec(&s).expect("from nothing");
    k.exec(&s).expect("over itself");
    assert_eq!(k.table.as_ref(), Some(&t));
}

#[test]
fn one_member_and_one_policy_change() {
    let a = render(&model());
    let mut m = model();
    if let Some(tortie_calc::dataplane::IpSetMembers::Nets(n)) =
        m.ip_sets.get_mut("s4-a").map(|s| &mut s.members)
    {
        n.insert("10.244.3.7/32".parse().expect("net"));
        n.remove(&"10.244.1.10/32".parse().expect("net"));
    }
    let chain = m.chains.get_mut("pi-knp/x/allow-a").expect("chain");
    chain.rules[0].dst.ports = vec![(443, 443)];
    let b = render(&m);
    let s = script(Some(&a), &b);
    let want = "\
delete element inet tortie s4-a { 10.244.1.10 }
add element inet tortie s4-a { 10.244.3.7 }
flush chain inet tortie pi-knp/x/allow-a
add rule inet tortie pi-knp/x/allow-a meta l4proto tcp ip saddr @s4-a th dport 443 meta mark set meta mark | 0x10000 return comment \"knp/x/allow-a ingress[0]\"
add rule inet tortie pi-knp/x/allow-a meta l4proto tcp ip saddr @s4-a ip daddr . meta l4proto . th dport @n4-b meta mark set meta mark | 0x10000 return comment \"knp/x/allow-a ingress[0]\"
";
    assert_eq!(s, want);
}

#[test]
fn removing_a_workload_unhooks_before_deleting() {
    let a = render(&model());
    let mut m = model();
    m.workloads.remove("calib2");
    m.chains.remove("pi-knp/x/allow-a");
    m.ip_sets.clear();
    let b = render(&m);
    let s = script(Some(&a), &b);
    let want = "\
flush chain inet tortie fw-calib2
flush chain inet tortie pi-knp/x/allow-a
flush chain inet tortie tw-calib2
delete element inet tortie fw-dispatch { \"calib2\" }
delete element inet tortie tw-dispatch { \"calib2\" }
delete chain inet tortie fw-calib2
delete chain inet tortie pi-knp/x/allow-a
delete chain inet tortie tw-calib2
delete set inet tortie n4-b
delete set inet tortie s4-a
";
    assert_eq!(s, want);
    let mut k = Kernel::default();
    k.exec(&script(None, &a)).expect("full");
    k.exec(&s).expect("incremental");
    assert_eq!(k.table.as_ref(), Some(&b));
}

#[test]
fn adding_a_workload_declares_chains_first() {
    let mut m = model();
    m.workloads.remove("calib2");
    let a = render(&m);
    let b = render(&model());
    let s = script(Some(&a), &b);
    let first_map = s
        .find("add element inet tortie fw-dispatch")
        .expect("map add");
    let chain = s
        .find("add chain inet tortie fw-calib2")
        .expect("chain add");
    assert!(chain < first_map, "{s}");
    assert!(s.contains("add element inet tortie fw-dispatch { \"calib2\" : goto fw-calib2 }"));
    let mut k = Kernel::default();
    k.exec(&script(None, &a)).expect("full");
    k.exec(&s).expect("incremental");
    assert_eq!(k.table.as_ref(), Some(&b));
}

#[test]
fn host_endpoints_come_and_go_incrementally() {
    let plain = render(&model());
    let mut m = model();
    m.host_endpoints.insert(
        "eth0".into(),
        host_endpoint("n1-eth0", &["pi-knp/x/allow-a"], &[]),
    );
    m.host_endpoints
        .insert("*".into(), host_endpoint("n1-all", &[], &["kns.x"]));
    let heps = render(&m);
    let mut fewer = m.clone();
    fewer.host_endpoints.remove("*");
    fewer.failsafe_inbound.clear();
    let fewer = render(&fewer);
    for (a, b) in [
        (&plain, &heps),
        (&heps, &fewer),
        (&fewer, &plain),
        (&heps, &plain),
    ] {
        let s = script(Some(a), b);
        assert!(!s.contains("delete table"), "{s}");
        let mut k = Kernel::default();
        k.exec(&script(None, a)).expect("full");
        k.exec(&s).unwrap_or_else(|e| panic!("{e}\n{s}"));
        assert_eq!(k.table.as_ref(), Some(b), "{s}");
    }
    // Adding them hooks `output` and fills the maps; dropping them unhooks it again.
    let s = script(Some(&plain), &heps);
    assert!(s.contains("add chain inet tortie output { type filter hook output priority filter; policy accept; }"), "{s}");
    assert!(s.contains("add map inet tortie fh-dispatch"), "{s}");
    let s = script(Some(&heps), &plain);
    assert!(s.contains("delete chain inet tortie output"), "{s}");
}

#[test]
fn incompatible_changes_rebuild() {
    let a = render(&model());
    let mut b = a.clone();
    if let Some(s) = b.sets.get_mut("s4-a") {
        s.interval = !s.interval;
    }
    assert_eq!(script(Some(&a), &b), full_script(&b));
    let mut b = a.clone();
    if let Some(c) = b.chains.get_mut("input") {
        c.hook = Some("type filter hook input priority 10; policy accept;".into());
    }
    assert_eq!(script(Some(&a), &b), full_script(&b));
}

#[test]
fn interpreter_catches_bad_orders() {
    let a = render(&model());
    let mut k = Kernel::default();
    k.exec(&script(None, &a)).expect("full");
    let e = k
        .exec("delete chain inet tortie fw-calia1")
        .expect_err("still mapped");
    assert!(e.contains("referenced"), "{e}");
    let e = k
        .exec("add rule inet tortie fw-calia1 jump nowhere")
        .expect_err("missing target");
    assert!(e.contains("missing"), "{e}");
    assert_eq!(k.table.as_ref(), Some(&a), "failed scripts change nothing");
}

fn compatible_pair(a: &NftTable, b: &NftTable) -> bool {
    a.chains
        .iter()
        .all(|(n, c)| b.chains.get(n).is_none_or(|d| d.hook == c.hook))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn incremental_scripts_reach_the_new_table(
        ca in table_gen::choices(),
        cb in table_gen::choices(),
    ) {
        let (a, b) = (table_gen::build(&ca), table_gen::build(&cb));
        let mut k = Kernel::default();
        k.exec(&script(None, &a)).map_err(TestCaseError::fail)?;
        prop_assert_eq!(k.table.as_ref(), Some(&a));
        let s = script(Some(&a), &b);
        k.exec(&s).map_err(|e| TestCaseError::fail(format!("{e}\n{s}")))?;
        prop_assert_eq!(k.table.as_ref(), Some(&b));
    }

    #[test]
    fn incremental_scripts_touch_only_changed_objects(
        ca in table_gen::choices(),
        cb in table_gen::choices(),
    ) {
        let (a, b) = (table_gen::build(&ca), table_gen::build(&cb));
        let s = script(Some(&a), &b);
        if a == b {
            prop_assert_eq!(s, "");
        } else if compatible_pair(&a, &b) {
            prop_assert!(!s.contains("delete table"), "{}", s);
            let changed = changed(&a, &b);
            for t in targets(&s) {
                prop_assert!(changed.contains(&t), "{} not changed:\n{}", t, s);
            }
        } else {
            prop_assert_eq!(s, full_script(&b));
        }
    }

    #[test]
    fn full_scripts_do_not_depend_on_the_old_table(
        ca in table_gen::choices(),
        cb in table_gen::choices(),
    ) {
        let (a, b) = (table_gen::build(&ca), table_gen::build(&cb));
        let full = script(None, &b);
        prop_assert_eq!(&full, &full_script(&b));
        for start in [None, Some(a)] {
            let mut k = Kernel { table: start };
            k.exec(&full).map_err(TestCaseError::fail)?;
            prop_assert_eq!(k.table.as_ref(), Some(&b));
        }
    }
}
