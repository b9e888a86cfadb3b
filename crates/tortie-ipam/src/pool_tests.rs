//! Unit tests of pool selection, reservations and the candidate walk.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

fn spec(cidr: &str) -> IPPoolSpec {
    IPPoolSpec {
        cidr: cidr.into(),
        ..IPPoolSpec::default()
    }
}

fn pool(name: &str, cidr: &str, f: impl FnOnce(&mut IPPoolSpec)) -> Pool {
    let mut s = spec(cidr);
    f(&mut s);
    Pool::from_spec(name, &s).unwrap()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_apply() {
    let p = pool("p", "10.0.0.0/16", |_| {});
    assert_eq!(p.block_size, 26);
    assert_eq!(p.allowed_uses, [AllowedUse::Workload, AllowedUse::Tunnel]);
    assert_eq!(p.assignment_mode, AssignmentMode::Automatic);
    assert!(p.namespace_selector.is_none());
    assert_eq!(p.block_count(), 1024);
    let v6 = pool("p6", "fd00::/64", |_| {});
    assert_eq!(v6.block_size, 122);
    assert_eq!(v6.block_count(), 1 << 58);
}

#[test]
fn rejects_bad_specs() {
    assert!(Pool::from_spec("x", &spec("nonsense")).is_err());
    let mut s = spec("10.0.0.0/24");
    s.block_size = Some(20);
    assert!(Pool::from_spec("x", &s).is_err(), "block larger than pool");
    s.block_size = Some(16);
    s.cidr = "10.0.0.0/8".into();
    assert!(Pool::from_spec("x", &s).is_err(), "block too large");
    let mut s = spec("10.0.0.0/24");
    s.node_selector = "a ==".into();
    assert!(Pool::from_spec("x", &s).is_err());
}

#[test]
fn block_geometry() {
    let p = pool("p", "10.0.0.0/26", |s| s.block_size = Some(29));
    assert_eq!(p.block_count(), 8);
    assert_eq!(p.block_at(3).to_string(), "10.0.0.24/29");
    assert_eq!(p.block_index(&"10.0.0.24/29".parse().unwrap()), 3);
    assert_eq!(
        p.block_for("10.0.0.30".parse().unwrap()).to_string(),
        "10.0.0.24/29"
    );
    assert!(p.has_block(&"10.0.0.8/29".parse().unwrap()));
    assert!(!p.has_block(&"10.0.0.0/28".parse().unwrap()));
    assert!(!p.has_block(&"10.0.1.0/29".parse().unwrap()));
}

#[test]
fn walk_visits_every_block_once_from_a_host_seeded_start() {
    let p = pool("p", "10.0.0.0/24", |s| s.block_size = Some(29));
    let a: Vec<IpNet> = CandidateWalk::new(&p, "node-a").collect();
    let set: BTreeSet<IpNet> = a.iter().copied().collect();
    assert_eq!(a.len(), 32);
    assert_eq!(set.len(), 32);
    let again: Vec<IpNet> = CandidateWalk::new(&p, "node-a").collect();
    assert_eq!(a, again, "deterministic per host");
    let starts: BTreeSet<IpNet> = ["node-a", "node-b", "node-c", "node-d", "node-e"]
        .iter()
        .map(|h| CandidateWalk::new(&p, h).next().unwrap())
        .collect();
    assert!(
        starts.len() > 1,
        "different hosts start at different blocks"
    );
    let w = CandidateWalk::new(&p, "node-a");
    for (i, c) in a.iter().enumerate() {
        assert_eq!(w.position(c), i as u128);
    }
}

#[test]
fn walk_skips_reservations_without_missing_free_blocks() {
    let p = pool("p", "10.0.0.0/24", |s| s.block_size = Some(29));
    let reserved: IpNet = "10.0.0.0/25".parse().unwrap();
    for host in ["a", "b", "c", "d", "e", "f"] {
        let mut w = CandidateWalk::new(&p, host);
        let mut seen = BTreeSet::new();
        while let Some(c) = w.next() {
            if reserved.contains(&c.network()) {
                w.skip_past(&reserved);
            } else {
                seen.insert(c);
            }
        }
        assert_eq!(
            seen.len(),
            16,
            "host {host}: every unreserved block is visited"
        );
    }
}

#[test]
fn fnv1_matches_reference_values() {
    // FNV-1 32: offset basis for empty input; "a" → 0x050c5d7e.
    assert_eq!(fnv1_32(b""), 0x811c_9dc5);
    assert_eq!(fnv1_32(b"a"), 0x050c_5d7e);
}

#[test]
fn reservations() {
    let r = Reservations::new(vec![
        Reservations::parse_entry("10.0.0.5").unwrap(),
        Reservations::parse_entry("10.0.0.8/29").unwrap(),
        Reservations::parse_entry("10.0.0.9/32").unwrap(),
    ]);
    assert!(r.contains("10.0.0.5".parse().unwrap()));
    assert!(!r.contains("10.0.0.6".parse().unwrap()));
    assert!(r.covering(&"10.0.0.8/29".parse().unwrap()).is_some());
    assert!(r.covering(&"10.0.0.0/29".parse().unwrap()).is_none());
    assert_eq!(r.count_in(&"10.0.0.0/28".parse().unwrap()), 9);
    assert_eq!(r.count_in(&"10.0.0.8/30".parse().unwrap()), 4);
}

#[test]
fn automatic_selection_filters_and_sorts() {
    let pools = vec![
        pool("z-default", "10.0.0.0/16", |_| {}),
        pool("a-disabled", "10.1.0.0/16", |s| s.disabled = true),
        pool("b-manual", "10.2.0.0/16", |s| {
            s.assignment_mode = Some(AssignmentMode::Manual)
        }),
        pool("c-rack1", "10.3.0.0/16", |s| {
            s.node_selector = "rack == 'r1'".into()
        }),
        pool("d-lb", "10.4.0.0/16", |s| {
            s.allowed_uses = vec![AllowedUse::LoadBalancer]
        }),
        pool("e-prod", "10.5.0.0/16", |s| {
            s.namespace_selector = "env == 'prod'".into()
        }),
        pool("f-v6", "fd00::/48", |_| {}),
    ];
    let names = |v: Vec<&Pool>| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    let none = BTreeMap::new();
    let got = automatic_pools(&pools, IpFamily::V4, AllowedUse::Workload, &none, &none);
    assert_eq!(names(got), ["z-default"]);
    let r1 = labels(&[("rack", "r1")]);
    let prod = labels(&[("env", "prod")]);
    let got = automatic_pools(&pools, IpFamily::V4, AllowedUse::Workload, &r1, &prod);
    assert_eq!(names(got), ["c-rack1", "e-prod", "z-default"]);
    let got = automatic_pools(&pools, IpFamily::V4, AllowedUse::LoadBalancer, &none, &none);
    assert_eq!(names(got), ["d-lb"]);
    let got = automatic_pools(&pools, IpFamily::V6, AllowedUse::Workload, &none, &none);
    assert_eq!(names(got), ["f-v6"]);
}

#[test]
fn explicit_selection_errors_name_the_pool() {
    let pools = vec![
        pool("default", "10.0.0.0/16", |_| {}),
        pool("off", "10.1.0.0/16", |s| s.disabled = true),
        pool("manual", "10.2.0.0/16", |s| {
            s.assignment_mode = Some(AssignmentMode::Manual)
        }),
        pool("v6", "fd00::/48", |_| {}),
    ];
    let req = |r: &[&str]| r.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let v4 = IpFamily::V4;
    let w = AllowedUse::Workload;
    let e = explicit_pools(&pools, &req(&["nope"]), v4, w).unwrap_err();
    assert_eq!(e.to_string(), "requested pool nope does not exist");
    let e = explicit_pools(&pools, &req(&["off"]), v4, w).unwrap_err();
    assert_eq!(e.to_string(), "requested pool off is disabled");
    let e = explicit_pools(&pools, &req(&["v6"]), v4, w).unwrap_err();
    assert_eq!(e.to_string(), "requested pool v6 is not an IPv4 pool");
    let e = explicit_pools(&pools, &req(&["default"]), v4, AllowedUse::LoadBalancer).unwrap_err();
    assert!(e.to_string().contains("does not allow use LoadBalancer"));
    let ok = explicit_pools(&pools, &req(&["manual", "10.0.0.0/16", "manual"]), v4, w).unwrap();
    let names: Vec<&str> = ok.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["manual", "default"]);
}
