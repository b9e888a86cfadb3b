//! A proptest strategy for small, self-consistent [`NftTable`]s whose rules are valid nft:
//! shared by the diff unit tests (against an in-memory interpreter) and the root tests
//! (against the kernel). The including module must have `NftTable`, `SetDef`, `MapDef` and
//! `ChainDef` in scope.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::{ChainDef, MapDef, NftTable, SetDef};

/// Chains in jump order: a chain only jumps to later ones (nft rejects loops).
pub const CHAINS: [&str; 4] = ["c-a", "c-b", "c-c", "c-d"];
const ADDRS: [&str; 5] = [
    "10.0.0.1",
    "10.0.0.2",
    "10.1.0.0/16",
    "10.2.0.0/24",
    "10.3.0.9",
];
const TRIPLES: [&str; 3] = [
    "10.0.0.1 . 6 . 80",
    "10.0.0.2 . 17 . 53",
    "10.0.0.1 . 6 . 8080",
];
const KEYS: [&str; 3] = ["\"calia1\"", "\"calib2\"", "\"calic3\""];
const HOOKS: [&str; 2] = [
    "type filter hook forward priority filter; policy accept;",
    "type filter hook input priority filter; policy accept;",
];

fn subset<T: Clone + Ord>(items: &[T], bits: u32) -> BTreeSet<T> {
    items
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, t)| t.clone())
        .collect()
}

/// Raw choices from which a consistent table is built.
#[derive(Debug, Clone)]
pub struct Choices {
    sets: [(bool, u32); 3],
    chains: [(bool, Vec<u8>); 4],
    /// `c-a`'s hook: 0 none, 1 forward, 2 input.
    hook: u8,
    map: (bool, Vec<(u8, u8)>),
}

pub fn choices() -> impl Strategy<Value = Choices> {
    let set = || (any::<bool>(), 0u32..32);
    let chain = || (any::<bool>(), proptest::collection::vec(0u8..8, 0..5));
    (
        [set(), set(), set()],
        [chain(), chain(), chain(), chain()],
        0u8..3,
        (
            any::<bool>(),
            proptest::collection::vec((0u8..3, 0u8..4), 0..4),
        ),
    )
        .prop_map(|(sets, chains, hook, map)| Choices {
            sets,
            chains,
            hook,
            map,
        })
}

/// Builds the table; every reference resolves.
pub fn build(c: &Choices) -> NftTable {
    let mut t = NftTable::default();
    let interval = |els: BTreeSet<String>| SetDef {
        type_: "ipv4_addr".into(),
        interval: true,
        elements: els.into(),
    };
    let addrs: Vec<String> = ADDRS.iter().map(|s| s.to_string()).collect();
    let triples: Vec<String> = TRIPLES.iter().map(|s| s.to_string()).collect();
    if c.sets[0].0 {
        t.sets
            .insert("s4-a".into(), interval(subset(&addrs, c.sets[0].1)));
    }
    if c.sets[1].0 {
        t.sets
            .insert("s4-b".into(), interval(subset(&addrs, c.sets[1].1)));
    }
    if c.sets[2].0 {
        t.sets.insert(
            "n4-a".into(),
            SetDef {
                type_: "ipv4_addr . inet_proto . inet_service".into(),
                interval: false,
                elements: subset(&triples, c.sets[2].1).into(),
            },
        );
    }
    let present: Vec<usize> = (0..CHAINS.len()).filter(|&i| c.chains[i].0).collect();
    if c.map.0 {
        // Only `c-a` dispatches through the map, so targets are the later chains (no loops,
        // and never a base chain).
        let targets: Vec<&str> = present
            .iter()
            .filter(|&&i| i != 0)
            .map(|&i| CHAINS[i])
            .collect();
        let mut elements = BTreeMap::new();
        if !targets.is_empty() {
            for &(k, v) in &c.map.1 {
                let target = targets[usize::from(v) % targets.len()];
                let verb = if v % 2 == 0 { "goto" } else { "jump" };
                elements.insert(KEYS[usize::from(k)].to_string(), format!("{verb} {target}"));
            }
        }
        t.maps.insert(
            "m-a".into(),
            MapDef {
                key_type: "ifname".into(),
                elements,
            },
        );
    }
    for &i in &present {
        let later: Vec<&str> = present
            .iter()
            .filter(|&&j| j > i)
            .map(|&j| CHAINS[j])
            .collect();
        let rules = c.chains[i]
            .1
            .iter()
            .filter_map(|&r| rule(r, i == 0, &t, &later))
            .collect();
        let hook = if i == 0 && c.hook > 0 {
            Some(HOOKS[usize::from(c.hook - 1)].to_string())
        } else {
            None
        };
        t.chains.insert(CHAINS[i].into(), ChainDef { hook, rules });
    }
    t
}

fn rule(r: u8, first: bool, t: &NftTable, later: &[&str]) -> Option<String> {
    Some(match r {
        0 => "drop comment \"zero\"".to_string(),
        1 => "meta nfproto ipv4 meta mark set meta mark | 0x10000 return".to_string(),
        2 if t.sets.contains_key("s4-a") => "ip saddr @s4-a drop".to_string(),
        3 if t.sets.contains_key("s4-b") => "ip daddr != @s4-b accept".to_string(),
        4 if t.sets.contains_key("n4-a") => {
            "ip daddr . meta l4proto . th dport @n4-a accept".to_string()
        }
        5 if first && t.maps.contains_key("m-a") => "iifname vmap @m-a".to_string(),
        6 if !later.is_empty() => format!("meta mark & 0x20000 == 0 jump {}", later[0]),
        7 if !later.is_empty() => format!("jump {}", later[later.len() - 1]),
        _ => return None,
    })
}
