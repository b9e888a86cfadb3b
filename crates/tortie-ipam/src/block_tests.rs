//! Unit tests of the pure block operations.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::*;

fn block(cidr: &str) -> AllocationBlock {
    AllocationBlock::new(cidr.parse().unwrap(), Some("host:n1".into()), None)
}

fn attrs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn none(_: IpAddr) -> bool {
    false
}

#[test]
fn new_block_is_empty_and_valid() {
    let b = block("10.0.0.0/29");
    assert_eq!(b.size(), 8);
    assert!(b.is_empty());
    assert_eq!(b.unallocated, (0..8).collect::<Vec<_>>());
    assert_eq!(b.host_affinity(), Some("n1"));
    b.validate().unwrap();
    let v6 = block("fd00::/122");
    assert_eq!(v6.size(), 64);
    assert_eq!(v6.ip_of(63), "fd00::3f".parse::<IpAddr>().unwrap());
}

#[test]
fn ordinals_and_addresses() {
    let b = block("10.0.0.8/29");
    assert_eq!(b.ip_of(0), "10.0.0.8".parse::<IpAddr>().unwrap());
    assert_eq!(b.ordinal_of("10.0.0.15".parse().unwrap()), Some(7));
    assert_eq!(b.ordinal_of("10.0.0.16".parse().unwrap()), None);
    assert_eq!(b.ordinal_of("fd00::1".parse().unwrap()), None);
}

#[test]
fn allocate_takes_fifo_and_bumps_sequence_once() {
    let mut b = block("10.0.0.0/29");
    let got = b.allocate(3, "h1", &attrs(&[("pod", "a")]), none);
    assert_eq!(got, vec![0, 1, 2]);
    assert_eq!(b.sequence_number, 1);
    assert_eq!(b.allocation_sequence(1), Some(1));
    assert_eq!(b.attributes.len(), 1, "one attribute shared by the three");
    assert_eq!(b.in_use(), 3);
    b.validate().unwrap();
}

#[test]
fn allocate_skips_reserved_addresses() {
    let mut b = block("10.0.0.0/29");
    let reserved = |ip: IpAddr| ip == "10.0.0.0".parse::<IpAddr>().unwrap();
    let got = b.allocate(8, "h", &BTreeMap::new(), reserved);
    assert_eq!(got, (1..8).collect::<Vec<_>>());
    assert_eq!(b.unallocated, vec![0], "reserved ordinal stays free");
    assert_eq!(b.free_count(reserved), 0);
    assert!(b.allocate(1, "h", &BTreeMap::new(), reserved).is_empty());
    assert_eq!(b.sequence_number, 1, "a no-op allocation does not write");
}

#[test]
fn allocate_more_than_free_returns_what_is_left() {
    let mut b = block("10.0.0.0/30");
    assert_eq!(b.allocate(10, "h", &BTreeMap::new(), none).len(), 4);
    assert!(b.allocate(1, "h", &BTreeMap::new(), none).is_empty());
}

#[test]
fn release_appends_at_back_fifo() {
    let mut b = block("10.0.0.0/30");
    b.allocate(2, "h", &BTreeMap::new(), none);
    let out = b.release(&[ReleaseTarget::any(0)]);
    assert_eq!(out.released, vec![(0, Some("h".to_string()))]);
    assert_eq!(b.unallocated, vec![2, 3, 0]);
    assert_eq!(b.allocate(1, "h2", &BTreeMap::new(), none), vec![2]);
    b.validate().unwrap();
}

#[test]
fn release_is_idempotent_and_reports_free() {
    let mut b = block("10.0.0.0/30");
    b.allocate(1, "h", &BTreeMap::new(), none);
    b.release(&[ReleaseTarget::any(0)]);
    let seq = b.sequence_number;
    let out = b.release(&[ReleaseTarget::any(0), ReleaseTarget::any(99)]);
    assert_eq!(out.not_allocated, vec![0, 99]);
    assert_eq!(b.sequence_number, seq, "nothing released, nothing written");
}

#[test]
fn stale_sequence_number_never_frees_a_reallocated_address() {
    let mut b = block("10.0.0.0/32");
    b.allocate(1, "old", &BTreeMap::new(), none);
    let stale = b.allocation_sequence(0).unwrap();
    b.release(&[ReleaseTarget::any(0)]);
    b.allocate(1, "old", &BTreeMap::new(), none);
    let out = b.release(&[ReleaseTarget {
        ordinal: 0,
        handle: Some("old".into()),
        sequence_number: Some(stale),
    }]);
    assert_eq!(out.skipped, vec![0]);
    assert_eq!(b.in_use(), 1);
}

#[test]
fn handle_guard_protects_other_owners() {
    let mut b = block("10.0.0.0/30");
    b.allocate(1, "a", &BTreeMap::new(), none);
    b.allocate(1, "b", &BTreeMap::new(), none);
    let mut targets = b.targets_for_handle("a");
    targets.push(ReleaseTarget {
        ordinal: 1,
        handle: Some("a".into()),
        sequence_number: None,
    });
    let out = b.release(&targets);
    assert_eq!(out.released.len(), 1);
    assert_eq!(out.skipped, vec![1]);
    assert_eq!(b.handle_counts(), BTreeMap::from([("b".to_string(), 1)]));
}

#[test]
fn unused_attributes_are_dropped_and_indexes_renumbered() {
    let mut b = block("10.0.0.0/29");
    b.allocate(1, "a", &attrs(&[("pod", "a")]), none);
    b.allocate(1, "b", &attrs(&[("pod", "b")]), none);
    b.allocate(1, "c", &attrs(&[("pod", "c")]), none);
    assert_eq!(b.attributes.len(), 3);
    b.release(&[ReleaseTarget::any(0)]);
    assert_eq!(b.attributes.len(), 2);
    assert_eq!(
        b.allocation(1).unwrap().handle_id.as_deref(),
        Some("b"),
        "ordinal 1 still points at b after renumbering"
    );
    assert_eq!(b.allocation(2).unwrap().handle_id.as_deref(), Some("c"));
    b.validate().unwrap();
}

#[test]
fn same_handle_different_attrs_get_separate_attributes() {
    let mut b = block("10.0.0.0/29");
    b.allocate(1, "a", &attrs(&[("pod", "x")]), none);
    b.allocate(1, "a", &attrs(&[("pod", "y")]), none);
    b.allocate(1, "a", &attrs(&[("pod", "x")]), none);
    assert_eq!(b.attributes.len(), 2);
}

#[test]
fn allocate_specific_ordinal() {
    let mut b = block("10.0.0.0/29");
    let seq = b.allocate_ordinal(5, "h", &BTreeMap::new()).unwrap();
    assert_eq!(b.allocation_sequence(5), Some(seq));
    assert!(!b.unallocated.contains(&5));
    assert_eq!(
        b.allocate_ordinal(5, "other", &BTreeMap::new()),
        Err(OrdinalError::Taken {
            handle: Some("h".into())
        })
    );
    assert_eq!(
        b.allocate_ordinal(8, "h", &BTreeMap::new()),
        Err(OrdinalError::OutOfRange)
    );
    assert_eq!(b.allocate(8, "x", &BTreeMap::new(), none).len(), 7);
    b.validate().unwrap();
}

#[test]
fn validate_catches_corruption() {
    let mut b = block("10.0.0.0/30");
    b.allocate(1, "h", &BTreeMap::new(), none);
    let mut dup = b.clone();
    dup.unallocated.push(0);
    assert!(
        dup.validate()
            .unwrap_err()
            .contains("both allocated and free")
    );
    let mut missing = b.clone();
    missing.unallocated.pop();
    assert!(missing.validate().unwrap_err().contains("missing"));
    let mut dangling = b.clone();
    dangling.allocations[0] = Some(7);
    assert!(
        dangling
            .validate()
            .unwrap_err()
            .contains("missing attribute")
    );
    let mut short = b.clone();
    short.allocations.pop();
    assert!(short.validate().is_err());
    let mut twice = b;
    twice.unallocated.push(1);
    assert!(twice.validate().unwrap_err().contains("twice"));
}

#[test]
fn handle_counts_and_iteration() {
    let mut b = block("10.0.0.0/29");
    b.allocate(2, "a", &BTreeMap::new(), none);
    b.allocate(1, "b", &BTreeMap::new(), none);
    let ips: Vec<String> = b.allocated().map(|a| a.ip.to_string()).collect();
    assert_eq!(ips, ["10.0.0.0", "10.0.0.1", "10.0.0.2"]);
    assert_eq!(
        b.handle_counts(),
        BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 1)])
    );
    let out = b.release(&b.targets_for_handle("a"));
    assert_eq!(out.handle_counts(), BTreeMap::from([("a".to_string(), 2)]));
}
