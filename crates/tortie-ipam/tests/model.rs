//! Property test: random sequences of assign / release / GC on four nodes sharing a small
//! pool (a /27 carved into four /29 blocks, so claims, exhaustion and borrowing are common),
//! with strictAffinity on and off, checked against a model of who holds which address.
//! After every step:
//! - the blocks hold exactly the model's addresses, each under the model's handle (so no
//!   address is handed out twice and a release frees exactly what was allocated);
//! - no address is in two blocks; handle records equal the blocks' counts;
//! - every block's affinity has a confirmed affinity record and vice versa;
//! - `check()` reports nothing but the leak candidates the model expects (pods deleted and
//!   not yet collected);
//! - auto-assigned addresses are never reserved, never borrowed under strictAffinity, and
//!   never push a node over its block cap.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::json;
use support::*;
use tortie_ipam::model::{AffinityState, AllocationBlock, BlockAffinity, IpamHandle};
use tortie_ipam::{FakeClock, GcPolicy, IpFamily, Ipam, IpamError, Problem, keys};
use tortie_store::Store;
use tortie_store::memory::MemoryStore;

const NODES: usize = 4;
const POOL: &str = "10.30.0.0/27";
const RESERVED: [&str; 2] = ["10.30.0.3", "10.30.0.29"];

#[derive(Debug, Clone)]
enum Op {
    Auto { node: usize, n: usize, pod: bool },
    AssignIp { node: usize, offset: u8 },
    ReleaseIp { pick: usize, stray: bool },
    ReleaseHandle { pick: usize },
    DeletePod { pick: usize },
    Gc { grace_zero: bool },
    ReleaseEmpty,
    Advance { secs: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..NODES, 1..=4usize, any::<bool>()).prop_map(|(node, n, pod)| Op::Auto { node, n, pod }),
        2 => (0..NODES, 0u8..32).prop_map(|(node, offset)| Op::AssignIp { node, offset }),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(pick, stray)| Op::ReleaseIp { pick, stray }),
        3 => any::<usize>().prop_map(|pick| Op::ReleaseHandle { pick }),
        1 => any::<usize>().prop_map(|pick| Op::DeletePod { pick }),
        1 => any::<bool>().prop_map(|grace_zero| Op::Gc { grace_zero }),
        2 => Just(Op::ReleaseEmpty),
        1 => (1u64..120).prop_map(|secs| Op::Advance { secs }),
    ]
}

/// Who holds what, as far as the test knows.
#[derive(Debug, Default)]
struct Model {
    held: BTreeMap<IpAddr, String>,
    /// Handle → its pod, for pod allocations.
    pods: BTreeMap<String, String>,
    /// Handles whose pod was deleted (leaks until GC'd).
    orphaned: BTreeSet<String>,
}

impl Model {
    fn handles(&self) -> Vec<String> {
        let set: BTreeSet<&String> = self.held.values().collect();
        set.into_iter().cloned().collect()
    }

    fn ips_of(&self, handle: &str) -> Vec<IpAddr> {
        self.held
            .iter()
            .filter(|(_, h)| *h == handle)
            .map(|(ip, _)| *ip)
            .collect()
    }

    fn forget(&mut self, ips: &[IpAddr]) {
        for ip in ips {
            self.held.remove(ip);
        }
        let live: BTreeSet<String> = self.held.values().cloned().collect();
        self.orphaned.retain(|h| live.contains(h));
    }
}

struct Harness {
    store: Arc<dyn Store>,
    ipam: Ipam,
    clock: Arc<FakeClock>,
    strict: bool,
    cap: usize,
    model: Model,
    next: usize,
}

fn node_name(i: usize) -> String {
    format!("node-{i}")
}

impl Harness {
    async fn new(strict: bool, cap: usize) -> Self {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        pool(&*store, "pool", POOL, 29, json!({})).await;
        reservation(&*store, "res", &RESERVED).await;
        ipam_config(&*store, strict, cap as i64).await;
        let clock = Arc::new(FakeClock::at_epoch_2025());
        let ipam = Ipam::new(store.clone()).with_clock(clock.clone());
        let cap = if cap == 0 { 20 } else { cap };
        Self {
            store,
            ipam,
            clock,
            strict,
            cap,
            model: Model::default(),
            next: 0,
        }
    }

    fn fresh_handle(&mut self) -> String {
        self.next += 1;
        format!("k8s-pod-network.c{}", self.next)
    }

    async fn affinity_count(&self, node: usize) -> usize {
        let prefix = keys::host_affinity_prefix(&node_name(node), IpFamily::V4);
        self.store.list(&prefix).await.unwrap().items.len()
    }

    async fn apply(&mut self, op: &Op) {
        match *op {
            Op::Auto { node, n, pod } => self.auto(node, n, pod).await,
            Op::AssignIp { node, offset } => self.assign_ip(node, offset).await,
            Op::ReleaseIp { pick, stray } => self.release_ip(pick, stray).await,
            Op::ReleaseHandle { pick } => self.release_handle(pick).await,
            Op::DeletePod { pick } => self.delete_pod(pick).await,
            Op::Gc { grace_zero } => self.gc(grace_zero).await,
            Op::ReleaseEmpty => {
                self.ipam
                    .release_empty_blocks(Duration::from_secs(30))
                    .await
                    .unwrap();
            }
            Op::Advance { secs } => self.clock.advance(Duration::from_secs(secs)),
        }
    }

    async fn auto(&mut self, node: usize, n: usize, with_pod: bool) {
        let handle = self.fresh_handle();
        let host = node_name(node);
        let mut r = req(&handle, &host, n);
        if with_pod {
            let name = format!("pod-{}", self.next);
            pod(&*self.store, "ns", &name).await;
            r = pod_req(&handle, &host, "ns", &name);
            r.num_v4 = n;
            self.model.pods.insert(handle.clone(), name);
        }
        let before = self.affinity_count(node).await;
        match self.ipam.auto_assign(&r).await {
            Ok(got) => {
                assert_eq!(got.ipv4.len(), n);
                for net in &got.ipv4 {
                    let ip = net.addr();
                    assert!(
                        !RESERVED.contains(&ip.to_string().as_str()),
                        "reserved {ip} handed out"
                    );
                    let prev = self.model.held.insert(ip, handle.clone());
                    assert!(prev.is_none(), "{ip} handed out twice (was {prev:?})");
                    let info = self.ipam.ip_info(ip).await.unwrap().unwrap();
                    if self.strict {
                        assert_eq!(
                            info.block_affinity,
                            Some(format!("host:{host}")),
                            "borrowed under strict"
                        );
                    }
                }
                let after = self.affinity_count(node).await;
                assert!(
                    after <= before.max(self.cap),
                    "block cap exceeded: {before} -> {after}"
                );
            }
            Err(IpamError::Exhausted { pools }) => {
                assert_eq!(pools, ["pool"]);
                assert!(
                    self.ipam.ips_by_handle(&handle).await.unwrap().is_empty(),
                    "not rolled back"
                );
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    async fn assign_ip(&mut self, node: usize, offset: u8) {
        let ip: IpAddr = format!("10.30.0.{offset}").parse().unwrap();
        let handle = self.fresh_handle();
        let r = tortie_ipam::AssignIpRequest {
            ip,
            handle: handle.clone(),
            attrs: BTreeMap::new(),
            hostname: node_name(node),
        };
        match (self.ipam.assign_ip(&r).await, self.model.held.get(&ip)) {
            (Ok(net), None) => {
                assert_eq!(net.addr(), ip);
                self.model.held.insert(ip, handle);
            }
            (Err(IpamError::InUse { handle: h, .. }), Some(owner)) => assert_eq!(&h, owner),
            (got, owner) => panic!("assign_ip {ip}: {got:?} but model owner {owner:?}"),
        }
    }

    async fn release_ip(&mut self, pick: usize, stray: bool) {
        let ip = if stray || self.model.held.is_empty() {
            format!("10.30.0.{}", pick % 32).parse().unwrap()
        } else {
            *self
                .model
                .held
                .keys()
                .nth(pick % self.model.held.len())
                .unwrap()
        };
        let not = self.ipam.release_ips(&[ip]).await.unwrap();
        assert_eq!(
            not.is_empty(),
            self.model.held.contains_key(&ip),
            "release of {ip}"
        );
        self.model.forget(&[ip]);
    }

    async fn release_handle(&mut self, pick: usize) {
        let handles = self.model.handles();
        let handle = match handles.len() {
            0 => "k8s-pod-network.none".to_string(),
            n => handles[pick % n].clone(),
        };
        let released = self.ipam.release_by_handle(&handle).await.unwrap();
        assert_eq!(
            released,
            self.model.ips_of(&handle),
            "release of handle {handle}"
        );
        self.model.forget(&released);
    }

    async fn delete_pod(&mut self, pick: usize) {
        let live: Vec<String> = self
            .model
            .handles()
            .into_iter()
            .filter(|h| self.model.pods.contains_key(h) && !self.model.orphaned.contains(h))
            .collect();
        if live.is_empty() {
            return;
        }
        let handle = live[pick % live.len()].clone();
        delete_pod(&*self.store, "ns", &self.model.pods[&handle]).await;
        self.model.orphaned.insert(handle);
    }

    async fn gc(&mut self, grace_zero: bool) {
        let grace = if grace_zero {
            Duration::ZERO
        } else {
            Duration::from_secs(60)
        };
        let policy = GcPolicy {
            grace,
            ..GcPolicy::default()
        };
        let s = self.ipam.gc(&policy).await.unwrap();
        let orphan_ips: BTreeSet<IpAddr> = self
            .model
            .orphaned
            .iter()
            .flat_map(|h| self.model.ips_of(h))
            .collect();
        let released: BTreeSet<IpAddr> = s.released.iter().copied().collect();
        assert!(
            released.is_subset(&orphan_ips),
            "GC released a live address"
        );
        if grace_zero {
            assert_eq!(released, orphan_ips, "grace 0 releases every orphan");
        }
        self.model.forget(&s.released);
    }

    async fn verify(&self) {
        let blocks = self
            .store
            .list(&keys::block_prefix(IpFamily::V4))
            .await
            .unwrap();
        let mut actual: BTreeMap<IpAddr, String> = BTreeMap::new();
        let mut counts: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        let mut owners: BTreeSet<(String, String)> = BTreeSet::new();
        for kv in &blocks.items {
            let b: AllocationBlock = serde_json::from_slice(&kv.value).unwrap();
            b.validate().unwrap();
            if let Some(h) = b.host_affinity() {
                owners.insert((h.to_string(), b.cidr.to_string()));
            }
            for a in b.allocated() {
                let h = a.attr.handle_id.clone().unwrap();
                assert!(
                    actual.insert(a.ip, h.clone()).is_none(),
                    "{} in two blocks",
                    a.ip
                );
                *counts
                    .entry(h)
                    .or_default()
                    .entry(b.cidr.to_string())
                    .or_insert(0) += 1;
            }
        }
        assert_eq!(actual, self.model.held, "blocks differ from the model");
        let handles = self.store.list(keys::HANDLE_PREFIX).await.unwrap();
        let mut recorded = BTreeMap::new();
        for kv in &handles.items {
            let h: IpamHandle = serde_json::from_slice(&kv.value).unwrap();
            recorded.insert(h.handle_id.clone(), h.block);
        }
        assert_eq!(recorded, counts, "handle records differ from the blocks");
        let affs = self.store.list(keys::AFFINITY_ROOT).await.unwrap();
        let mut confirmed = BTreeSet::new();
        for kv in &affs.items {
            let a: BlockAffinity = serde_json::from_slice(&kv.value).unwrap();
            assert_eq!(
                a.state,
                AffinityState::Confirmed,
                "{} left {}",
                kv.key,
                a.state
            );
            let (node, cidr) = keys::parse_affinity_key(&kv.key).unwrap();
            confirmed.insert((node, cidr.to_string()));
        }
        assert_eq!(confirmed, owners, "affinities differ from the blocks");
        let report = self.ipam.check().await.unwrap();
        let leaks: BTreeSet<IpAddr> = report
            .problems
            .iter()
            .map(|p| match p {
                Problem::LeakCandidate { ip, .. } => *ip,
                other => panic!("unexpected problem: {other}"),
            })
            .collect();
        let expected: BTreeSet<IpAddr> = self
            .model
            .orphaned
            .iter()
            .flat_map(|h| self.model.ips_of(h))
            .collect();
        assert_eq!(leaks, expected, "leak candidates");
    }
}

fn run(strict: bool, cap: usize, ops: &[Op]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut h = Harness::new(strict, cap).await;
        for op in ops {
            h.apply(op).await;
            h.verify().await;
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_without_strict_affinity(ops in prop::collection::vec(op(), 1..45)) {
        run(false, 0, &ops);
    }

    #[test]
    fn invariants_hold_with_strict_affinity(
        cap in prop_oneof![Just(0usize), Just(2usize)],
        ops in prop::collection::vec(op(), 1..45),
    ) {
        run(true, cap, &ops);
    }
}
