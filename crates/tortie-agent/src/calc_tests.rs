//! Golden tests for [`desired_routes`]: one cluster, fed to the model in many orders.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipnet::IpNet;
use tortie_api::Kind;
use tortie_ipam::keys;
use tortie_ipam::model::{AffinityState, AllocationBlock, BlockAffinity};
use tortie_store::{KeyValue, SyncUpdate};

use super::*;
use crate::model::Model;

fn set(key: String, value: serde_json::Value, rev: i64) -> SyncUpdate {
    SyncUpdate::Set(KeyValue {
        key,
        value: serde_json::to_vec(&value).unwrap(),
        create_revision: rev,
        mod_revision: rev,
    })
}

fn node(name: &str, v4: &str, v6: &str) -> SyncUpdate {
    let mut bgp = serde_json::Map::new();
    if !v4.is_empty() {
        bgp.insert("ipv4Address".into(), v4.into());
    }
    if !v6.is_empty() {
        bgp.insert("ipv6Address".into(), v6.into());
    }
    let value = serde_json::json!({
        "apiVersion": "projectcalico.org/v3", "kind": "Node",
        "metadata": {"name": name}, "spec": {"bgp": bgp},
    });
    set(Kind::Node.key(None, name), value, 1)
}

fn affinity(node: &str, cidr: &str, state: AffinityState) -> SyncUpdate {
    let cidr: IpNet = cidr.parse().unwrap();
    let value = serde_json::to_value(BlockAffinity::host(node, cidr, state)).unwrap();
    set(keys::affinity_key(node, &cidr), value, 1)
}

/// A block affine to `owner` (or unaffined) with `(ordinal, node attribute)` allocations.
fn block(cidr: &str, owner: Option<&str>, allocs: &[(usize, Option<&str>)]) -> SyncUpdate {
    let cidr: IpNet = cidr.parse().unwrap();
    let mut b = AllocationBlock::new(cidr, owner.map(tortie_ipam::model::host_affinity), None);
    for (ordinal, node) in allocs {
        let mut attrs = BTreeMap::new();
        if let Some(n) = node {
            attrs.insert("node".to_string(), n.to_string());
        }
        b.allocate_ordinal(*ordinal, &format!("h{ordinal}"), &attrs)
            .unwrap();
    }
    set(keys::block_key(&cidr), serde_json::to_value(b).unwrap(), 1)
}

/// The cluster every golden test uses; `n1` is the agent's node.
fn cluster() -> Vec<SyncUpdate> {
    use AffinityState::{Confirmed, Pending, PendingDeletion};
    vec![
        node("n1", "198.18.0.11/24", "fd00:198:18::11/64"),
        node("n2", "198.18.0.12/24", "fd00:198:18::12/64"),
        node("n3", "198.18.0.13/24", ""),
        affinity("n1", "10.244.1.0/26", Confirmed),
        affinity("n1", "fd00:10:244:1::/122", Confirmed),
        affinity("n2", "10.244.2.0/26", Confirmed),
        affinity("n2", "fd00:10:244:2::/122", Confirmed),
        affinity("n2", "10.244.2.64/26", Pending),
        affinity("n2", "10.244.2.128/26", PendingDeletion),
        affinity("n3", "10.244.3.0/26", Confirmed),
        affinity("n3", "fd00:10:244:3::/122", Confirmed),
        affinity("n4", "10.244.4.0/26", Confirmed),
        block(
            "10.244.1.0/26",
            Some("n1"),
            &[(1, Some("n1")), (2, Some("n2")), (3, None)],
        ),
        block(
            "10.244.2.0/26",
            Some("n2"),
            &[(5, Some("n1")), (6, Some("n2")), (7, Some("n3"))],
        ),
        block("fd00:10:244:1::/122", Some("n1"), &[(5, Some("n2"))]),
        block("10.244.9.0/26", None, &[(1, Some("n2"))]),
    ]
}

const GOLDEN: &str = "\
10.244.1.0/26 blackhole
10.244.1.2/32 via 198.18.0.12
10.244.2.0/26 via 198.18.0.12
10.244.2.7/32 via 198.18.0.13
10.244.3.0/26 via 198.18.0.13
10.244.9.1/32 via 198.18.0.12
fd00:10:244:1::/122 blackhole
fd00:10:244:1::5/128 via fd00:198:18::12
fd00:10:244:2::/122 via fd00:198:18::12
unresolved 10.244.4.0/26 n4
unresolved fd00:10:244:3::/122 n3
";

fn render(out: &CalcOutput) -> String {
    let mut s = String::new();
    for (dst, target) in &out.routes {
        writeln!(s, "{dst} {target}").unwrap();
    }
    for u in &out.unresolved {
        writeln!(s, "unresolved {} {}", u.dst, u.node).unwrap();
    }
    s
}

fn calc_of(updates: &[SyncUpdate]) -> String {
    let mut m = Model::new("n1");
    for u in updates {
        m.apply(u);
    }
    render(&desired_routes(m.routing(), "n1"))
}

/// A deterministic shuffle (xorshift), so failures reproduce.
fn shuffled<T: Clone>(items: &[T], seed: u64) -> Vec<T> {
    let mut v = items.to_vec();
    let mut x = seed.max(1);
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let j = usize::try_from(x % (i as u64 + 1)).unwrap();
        v.swap(i, j);
    }
    v
}

#[test]
fn golden_cluster_routes() {
    assert_eq!(calc_of(&cluster()), GOLDEN);
}

#[test]
fn order_does_not_matter() {
    let updates = cluster();
    let mut reversed = updates.clone();
    reversed.reverse();
    assert_eq!(calc_of(&reversed), GOLDEN);
    for seed in 1..=50 {
        assert_eq!(calc_of(&shuffled(&updates, seed)), GOLDEN, "seed {seed}");
    }
}

#[test]
fn history_before_the_final_values_does_not_matter() {
    // Split: stale values and since-deleted keys come first; squashed: only final values.
    let mut with_history = vec![
        node("n2", "198.18.0.99/24", ""),
        affinity("n2", "10.244.2.0/26", AffinityState::Pending),
        affinity("n5", "10.244.5.0/26", AffinityState::Confirmed),
        block("10.244.1.0/26", Some("n1"), &[(9, Some("n3"))]),
    ];
    with_history.push(SyncUpdate::Deleted {
        key: keys::affinity_key("n5", &"10.244.5.0/26".parse().unwrap()),
        revision: 2,
    });
    with_history.extend(shuffled(&cluster(), 7));
    assert_eq!(calc_of(&with_history), GOLDEN);
}

#[test]
fn removing_a_remote_affinity_removes_its_route() {
    let mut updates = cluster();
    updates.push(SyncUpdate::Deleted {
        key: keys::affinity_key("n3", &"10.244.3.0/26".parse().unwrap()),
        revision: 9,
    });
    let out = calc_of(&updates);
    assert!(!out.contains("10.244.3.0/26"), "{out}");
    assert!(out.contains("10.244.2.7/32 via 198.18.0.13"), "{out}");
}

#[test]
fn pending_affinities_are_ignored() {
    let updates = vec![
        node("n2", "198.18.0.12/24", ""),
        affinity("n2", "10.0.0.0/26", AffinityState::Pending),
        affinity("n1", "10.0.1.0/26", AffinityState::Pending),
    ];
    assert_eq!(calc_of(&updates), "");
}

#[test]
fn own_block_claimed_by_two_nodes_stays_ours() {
    let updates = vec![
        node("a", "198.18.0.10/24", ""),
        affinity("a", "10.0.0.0/26", AffinityState::Confirmed),
        affinity("n1", "10.0.0.0/26", AffinityState::Confirmed),
    ];
    assert_eq!(calc_of(&updates), "10.0.0.0/26 blackhole\n");
}

#[test]
fn ipv6_needs_the_nodes_ipv6_address() {
    let updates = vec![
        node("n2", "198.18.0.12/24", "fd00:198:18::12/64"),
        affinity("n2", "fd00:10:244:2::/122", AffinityState::Confirmed),
    ];
    assert_eq!(
        calc_of(&updates),
        "fd00:10:244:2::/122 via fd00:198:18::12\n"
    );
    let v4_only = vec![
        node("n2", "198.18.0.12/24", ""),
        affinity("n2", "fd00:10:244:2::/122", AffinityState::Confirmed),
    ];
    assert_eq!(calc_of(&v4_only), "unresolved fd00:10:244:2::/122 n2\n");
}
