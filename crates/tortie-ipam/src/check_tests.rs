//! Unit tests of the consistency analysis.

use std::collections::BTreeMap;

use tortie_api::ipam::IPPoolSpec;

use super::*;

fn pool() -> Pool {
    let spec = IPPoolSpec {
        cidr: "10.0.0.0/24".into(),
        block_size: Some(29),
        ..IPPoolSpec::default()
    };
    Pool::from_spec("p", &spec).unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn stored(block: AllocationBlock, revision: Revision) -> StoredBlock {
    StoredBlock {
        key_cidr: block.cidr,
        block,
        revision,
    }
}

fn affinity(node: &str, cidr: &str, state: AffinityState) -> StoredAffinity {
    StoredAffinity {
        node: node.into(),
        cidr: net(cidr),
        affinity: BlockAffinity::host(node, net(cidr), state),
        revision: 7,
    }
}

fn handle(id: &str, counts: &[(&str, u64)]) -> StoredHandle {
    StoredHandle {
        handle: IpamHandle {
            handle_id: id.into(),
            block: counts.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
            deleted: false,
        },
        revision: 9,
    }
}

/// A consistent snapshot: one block of n1 with one allocation of handle h.
fn healthy() -> Snapshot {
    let mut b = AllocationBlock::new(net("10.0.0.0/29"), Some("host:n1".into()), None);
    let attrs = BTreeMap::from([
        ("namespace".to_string(), "ns".to_string()),
        ("pod".to_string(), "web".to_string()),
    ]);
    b.allocate(1, "h", &attrs, |_| false);
    Snapshot {
        pools: vec![pool()],
        blocks: vec![stored(b, 3)],
        affinities: vec![affinity("n1", "10.0.0.0/29", AffinityState::Confirmed)],
        handles: vec![handle("h", &[("10.0.0.0/29", 1)])],
        pods: [("ns".to_string(), "web".to_string())].into(),
        ..Snapshot::default()
    }
}

fn kinds(r: &CheckReport) -> Vec<String> {
    r.problems
        .iter()
        .map(|p| {
            let v = serde_json::to_value(p).unwrap();
            v["problem"].as_str().unwrap().to_string()
        })
        .collect()
}

#[test]
fn healthy_snapshot_is_clean() {
    let r = analyze(&healthy(), "t".into());
    assert!(r.is_clean(), "{r}");
    assert_eq!(r.summary.allocations, 1);
    assert_eq!(r.summary_line(), "Check complete; found 0 problems.");
}

#[test]
fn handle_counts_must_match() {
    let mut s = healthy();
    s.handles = vec![
        handle("h", &[("10.0.0.0/29", 2)]),
        handle("ghost", &[("10.0.0.0/29", 1)]),
    ];
    let r = analyze(&s, "t".into());
    assert_eq!(kinds(&r), ["handleMismatch", "handleMismatch"]);
    assert!(r.problems[1].to_string().contains("holds no addresses"));
    s.handles.clear();
    let r = analyze(&s, "t".into());
    assert_eq!(kinds(&r), ["missingHandle"]);
}

#[test]
fn affinity_problems() {
    let mut s = healthy();
    s.affinities = vec![
        affinity("n1", "10.0.0.0/29", AffinityState::Pending),
        affinity("n2", "10.0.0.0/29", AffinityState::Confirmed),
        affinity("n3", "10.0.0.8/29", AffinityState::Confirmed),
    ];
    let r = analyze(&s, "t".into());
    assert_eq!(
        kinds(&r),
        [
            "affinityNotConfirmed",
            "affinityMismatch",
            "affinityWithoutBlock"
        ]
    );
    s.affinities.clear();
    let r = analyze(&s, "t".into());
    assert_eq!(kinds(&r), ["blockWithoutAffinity"]);
}

#[test]
fn leaks_and_endpoint_addresses() {
    let mut s = healthy();
    s.pods.clear();
    let r = analyze(&s, "t".into());
    assert_eq!(kinds(&r), ["leakCandidate"]);
    s.workload_endpoints = vec![WorkloadEndpointInfo {
        key: "wep".into(),
        namespace: "ns".into(),
        pod: "web".into(),
        ips: vec!["10.0.0.0".parse().unwrap(), "10.0.0.5".parse().unwrap()],
    }];
    let r = analyze(&s, "t".into());
    assert_eq!(
        kinds(&r),
        ["inUseWithoutAllocation"],
        "the WEP keeps the pod alive"
    );
}

#[test]
fn structural_and_pool_problems() {
    let mut s = healthy();
    let mut outside = AllocationBlock::new(net("192.168.0.0/29"), None, None);
    outside.allocate(1, "h2", &BTreeMap::new(), |_| false);
    let mut broken = AllocationBlock::new(net("10.0.0.16/29"), None, None);
    broken.unallocated.pop();
    let mut overlapping = AllocationBlock::new(net("10.0.0.0/30"), None, None);
    overlapping.allocate(1, "h3", &BTreeMap::new(), |_| false);
    s.blocks.push(stored(outside, 4));
    s.blocks.push(stored(broken, 5));
    s.blocks.push(stored(overlapping, 6));
    s.handles.push(handle("h2", &[("192.168.0.0/29", 1)]));
    s.handles.push(handle("h3", &[("10.0.0.0/30", 1)]));
    s.invalid_records.push(("/k".into(), "bad json".into()));
    let r = analyze(&s, "t".into());
    assert_eq!(
        kinds(&r),
        [
            "invalidRecord",
            "blockOutsidePools",
            "invalidBlock",
            "duplicateAllocation"
        ]
    );
    assert_eq!(r.problem_count, 4);
    let json = serde_json::to_string(&r).unwrap();
    let back: CheckReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
}
