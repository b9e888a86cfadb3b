//! The nft transaction that turns one [`NftTable`] into another. Pure.
//!
//! A full script replaces the table atomically: `table inet tortie {}` (creates it if absent),
//! `delete table inet tortie`, then the whole definition. nft commits the file as one
//! transaction, so the old rules enforce until the new ones do.
//!
//! An incremental script touches only objects that differ, in an order where every
//! reference resolves at every step:
//! 1. add new chains, empty (jumps and map verdicts can then name them);
//! 2. add new sets with their elements; in existing sets delete removed elements, then add
//!    new ones (deleting first keeps interval elements from overlapping);
//! 3. add new maps with their elements; in existing maps replace changed elements and add new
//!    ones;
//! 4. rules: `flush chain` and re-add for existing chains whose rules changed; add the rules
//!    of new chains;
//! 5. flush removed chains (drops their references), delete removed map elements, delete
//!    removed maps, delete removed chains, delete removed sets.
//!
//! A change nft cannot make in place (a set's type or flags, a map's key type, a chain's
//! hook) yields the full script instead.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::render::SetDelta;
use crate::table::{ChainDef, MapDef, NftTable, SetDef, TABLE, join, map_elements, set_body};

/// The script that turns `old` into `new`; `None` means "unknown": a full replace. Empty when
/// nothing changed.
pub fn script(old: Option<&NftTable>, new: &NftTable) -> String {
    match old {
        None => full_script(new),
        Some(old) if old == new => String::new(),
        Some(old) if !compatible(old, new) => full_script(new),
        Some(old) => incremental(old, new),
    }
}

/// [`script`] when some sets' element changes are already known (`deltas`, from
/// [`crate::render::render_moving`]): those sets are not compared, their deltas are written.
/// The flag says the script is nothing but those deltas (nothing else differs), so the
/// caller may apply them as element updates instead of running it.
pub fn script_with_deltas(
    old: &NftTable,
    new: &NftTable,
    deltas: &BTreeMap<String, SetDelta>,
) -> (String, bool) {
    if !compatible(old, new) {
        return (full_script(new), false);
    }
    let rest = incremental_with(old, new, deltas, false);
    if rest.is_empty() {
        let mut s = String::new();
        for (name, d) in deltas {
            write_delta(&mut s, name, d);
        }
        (s, true)
    } else {
        (incremental_with(old, new, deltas, true), false)
    }
}

/// Atomic replace of the whole table; works whether or not it exists.
pub fn full_script(new: &NftTable) -> String {
    format!(
        "table {TABLE} {{}}\ndelete table {TABLE}\n{}",
        new.definition()
    )
}

/// Whether every object present in both can be changed in place.
fn compatible(old: &NftTable, new: &NftTable) -> bool {
    let sets = old.sets.iter().all(|(n, o)| {
        new.sets
            .get(n)
            .is_none_or(|s| s.type_ == o.type_ && s.interval == o.interval)
    });
    let maps = old
        .maps
        .iter()
        .all(|(n, o)| new.maps.get(n).is_none_or(|m| m.key_type == o.key_type));
    let chains = old
        .chains
        .iter()
        .all(|(n, o)| new.chains.get(n).is_none_or(|c| c.hook == o.hook));
    sets && maps && chains
}

fn added<'a, V>(
    old: &BTreeMap<String, V>,
    new: &'a BTreeMap<String, V>,
) -> Vec<(&'a String, &'a V)> {
    new.iter().filter(|(k, _)| !old.contains_key(*k)).collect()
}

fn removed<'a, V>(old: &'a BTreeMap<String, V>, new: &BTreeMap<String, V>) -> Vec<&'a String> {
    old.keys().filter(|k| !new.contains_key(*k)).collect()
}

fn incremental(old: &NftTable, new: &NftTable) -> String {
    incremental_with(old, new, &BTreeMap::new(), true)
}

/// The incremental script; the sets in `deltas` get their deltas written when
/// `write_deltas`, and are left out otherwise.
fn incremental_with(
    old: &NftTable,
    new: &NftTable,
    deltas: &BTreeMap<String, SetDelta>,
    write_deltas: bool,
) -> String {
    let mut s = String::new();
    for (name, c) in added(&old.chains, &new.chains) {
        add_chain(&mut s, name, c);
    }
    for (name, set) in added(&old.sets, &new.sets) {
        add_set(&mut s, name, set);
    }
    for (name, set) in &new.sets {
        if let Some(d) = deltas.get(name) {
            if write_deltas {
                write_delta(&mut s, name, d);
            }
        } else if let Some(o) = old.sets.get(name) {
            update_set(&mut s, name, o, set);
        }
    }
    for (name, m) in added(&old.maps, &new.maps) {
        add_map(&mut s, name, m);
    }
    let mut gone_map_elements = String::new();
    for (name, m) in &new.maps {
        if let Some(o) = old.maps.get(name) {
            update_map(&mut s, &mut gone_map_elements, name, o, m);
        }
    }
    for (name, c) in &new.chains {
        match old.chains.get(name) {
            None => add_rules(&mut s, name, &c.rules),
            Some(o) if o.rules != c.rules => {
                let _ = writeln!(s, "flush chain {TABLE} {name}");
                add_rules(&mut s, name, &c.rules);
            }
            Some(_) => {}
        }
    }
    let gone_chains = removed(&old.chains, &new.chains);
    for name in &gone_chains {
        if old.chains.get(*name).is_some_and(|c| !c.rules.is_empty()) {
            let _ = writeln!(s, "flush chain {TABLE} {name}");
        }
    }
    s.push_str(&gone_map_elements);
    for name in removed(&old.maps, &new.maps) {
        let _ = writeln!(s, "delete map {TABLE} {name}");
    }
    for name in &gone_chains {
        let _ = writeln!(s, "delete chain {TABLE} {name}");
    }
    for name in removed(&old.sets, &new.sets) {
        let _ = writeln!(s, "delete set {TABLE} {name}");
    }
    s
}

fn write_delta(s: &mut String, name: &str, d: &SetDelta) {
    for (verb, addrs) in [("delete", &d.removed), ("add", &d.added)] {
        if !addrs.is_empty() {
            let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
            let _ = writeln!(s, "{verb} element {TABLE} {name} {{ {} }}", join(&list));
        }
    }
}

fn add_chain(s: &mut String, name: &str, c: &ChainDef) {
    match &c.hook {
        Some(h) => {
            let _ = writeln!(s, "add chain {TABLE} {name} {{ {h} }}");
        }
        None => {
            let _ = writeln!(s, "add chain {TABLE} {name}");
        }
    }
}

fn add_rules(s: &mut String, chain: &str, rules: &[String]) {
    for r in rules {
        let _ = writeln!(s, "add rule {TABLE} {chain} {r}");
    }
}

fn add_set(s: &mut String, name: &str, set: &SetDef) {
    let mut body = set_body(set).join("; ");
    if !set.elements.is_empty() {
        let _ = write!(body, "; elements = {{ {} }}", join(set.elements.iter()));
    }
    let _ = writeln!(s, "add set {TABLE} {name} {{ {body}; }}");
}

fn update_set(s: &mut String, name: &str, old: &SetDef, new: &SetDef) {
    if std::sync::Arc::ptr_eq(&old.elements, &new.elements) {
        return; // carried over unchanged from the previous rendering
    }
    let gone: BTreeSet<&String> = old.elements.difference(&new.elements).collect();
    let fresh: BTreeSet<&String> = new.elements.difference(&old.elements).collect();
    if !gone.is_empty() {
        let _ = writeln!(s, "delete element {TABLE} {name} {{ {} }}", join(gone));
    }
    if !fresh.is_empty() {
        let _ = writeln!(s, "add element {TABLE} {name} {{ {} }}", join(fresh));
    }
}

fn add_map(s: &mut String, name: &str, m: &MapDef) {
    let mut body = format!("type {} : verdict", m.key_type);
    if !m.elements.is_empty() {
        let _ = write!(body, "; elements = {{ {} }}", map_elements(&m.elements));
    }
    let _ = writeln!(s, "add map {TABLE} {name} {{ {body}; }}");
}

/// Writes replacements and additions to `s`, deletions of vanished keys to `later`.
fn update_map(s: &mut String, later: &mut String, name: &str, old: &MapDef, new: &MapDef) {
    let changed: Vec<&String> = new
        .elements
        .iter()
        .filter(|(k, v)| old.elements.get(*k).is_some_and(|o| o != *v))
        .map(|(k, _)| k)
        .collect();
    if !changed.is_empty() {
        let _ = writeln!(
            s,
            "delete element {TABLE} {name} {{ {} }}",
            join(changed.iter().copied())
        );
    }
    let fresh: Vec<(&String, &String)> = new
        .elements
        .iter()
        .filter(|(k, v)| old.elements.get(*k) != Some(*v))
        .collect();
    if !fresh.is_empty() {
        let _ = writeln!(
            s,
            "add element {TABLE} {name} {{ {} }}",
            map_elements(fresh)
        );
    }
    let gone: Vec<&String> = old
        .elements
        .keys()
        .filter(|k| !new.elements.contains_key(*k))
        .collect();
    if !gone.is_empty() {
        let _ = writeln!(later, "delete element {TABLE} {name} {{ {} }}", join(gone));
    }
}

#[cfg(test)]
#[path = "diff_tests.rs"]
mod tests;
