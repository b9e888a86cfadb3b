//! Concurrency: tasks acting as different nodes hammer one shared store with assignments
//! and releases while a collector task releases empty blocks and runs GC. A store wrapper
//! yields before every call so reads and CAS writes of different tasks interleave. No
//! address may ever be held twice, and `check()` must be clean at the end.

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use support::*;
use tortie_ipam::model::AllocationBlock;
use tortie_ipam::{GcPolicy, IpFamily, Ipam, IpamError, keys};
use tortie_store::Store;

const NODES: usize = 6;
const ROUNDS: usize = 120;

type Held = Arc<Mutex<BTreeMap<IpAddr, String>>>;

/// A tiny deterministic PRNG per task.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

async fn node_task(ipam: Ipam, node: usize, held: Held) -> usize {
    let host = format!("node-{node}");
    let mut rng = 0x9e37_79b9_7f4a_7c15 ^ (node as u64 + 1);
    let mut mine: Vec<String> = Vec::new();
    let mut granted = 0;
    for round in 0..ROUNDS {
        let roll = next(&mut rng) % 10;
        if roll < 6 || mine.is_empty() {
            let handle = format!("k8s-pod-network.{host}-{round}");
            let n = 1 + (next(&mut rng) % 2) as usize;
            match ipam.auto_assign(&req(&handle, &host, n)).await {
                Ok(got) => {
                    let mut map = held.lock().unwrap();
                    for net in got.ipv4 {
                        let prev = map.insert(net.addr(), handle.clone());
                        assert!(
                            prev.is_none(),
                            "{} granted to {handle} while held by {prev:?}",
                            net.addr()
                        );
                    }
                    granted += n;
                    mine.push(handle);
                }
                Err(IpamError::Exhausted { .. }) => {}
                Err(e) => panic!("{host}: {e}"),
            }
        } else {
            let i = (next(&mut rng) as usize) % mine.len();
            let handle = mine.swap_remove(i);
            let ips: Vec<IpAddr> = {
                let mut map = held.lock().unwrap();
                let ips: Vec<IpAddr> = map
                    .iter()
                    .filter(|(_, h)| **h == handle)
                    .map(|(ip, _)| *ip)
                    .collect();
                for ip in &ips {
                    map.remove(ip);
                }
                ips
            };
            if roll == 9 {
                assert!(ipam.release_ips(&ips).await.unwrap().is_empty());
            } else {
                let mut released = ipam.release_by_handle(&handle).await.unwrap();
                released.sort();
                assert_eq!(released, ips, "{host} released {handle}");
            }
        }
    }
    granted
}

async fn collector(ipam: Ipam, stop: Arc<std::sync::atomic::AtomicBool>) {
    let policy = GcPolicy {
        grace: Duration::ZERO,
        ..GcPolicy::default()
    };
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        ipam.release_empty_blocks(Duration::ZERO).await.unwrap();
        let s = ipam.gc(&policy).await.unwrap();
        assert!(s.released.is_empty(), "nothing is orphaned: {s:?}");
        tokio::task::yield_now().await;
    }
}

async fn store_contents(store: &dyn Store) -> BTreeMap<IpAddr, String> {
    let mut out = BTreeMap::new();
    for kv in store
        .list(&keys::block_prefix(IpFamily::V4))
        .await
        .unwrap()
        .items
    {
        let b: AllocationBlock = serde_json::from_slice(&kv.value).unwrap();
        for a in b.allocated() {
            let prev = out.insert(a.ip, a.attr.handle_id.clone().unwrap());
            assert!(prev.is_none(), "{} is in two blocks", a.ip);
        }
    }
    out
}

async fn hammer(strict: bool) {
    let store: Arc<dyn Store> = Arc::new(YieldingStore::default());
    pool(&*store, "pool", "10.40.0.0/26", 29, json!({})).await;
    ipam_config(&*store, strict, 0).await;
    let ipam = Ipam::new(store.clone());
    let held: Held = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gc = tokio::spawn(collector(ipam.clone(), stop.clone()));
    let tasks: Vec<_> = (0..NODES)
        .map(|n| tokio::spawn(node_task(ipam.clone(), n, held.clone())))
        .collect();
    let mut granted = 0;
    for t in tasks {
        granted += t.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    gc.await.unwrap();
    assert!(granted > 100, "too little work done: {granted}");
    let expected = held.lock().unwrap().clone();
    assert_eq!(store_contents(&*store).await, expected);
    let report = ipam.check().await.unwrap();
    assert!(report.is_clean(), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_nodes_never_share_an_address() {
    hammer(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_nodes_with_strict_affinity() {
    hammer(true).await;
}

#[tokio::test(flavor = "current_thread")]
async fn many_tasks_one_handle_each_on_one_node() {
    let store: Arc<dyn Store> = Arc::new(YieldingStore::default());
    pool(&*store, "pool", "10.41.0.0/24", 26, json!({})).await;
    let ipam = Ipam::new(store.clone());
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let ipam = ipam.clone();
            tokio::spawn(async move {
                let got = ipam
                    .auto_assign(&req(&format!("h{i}"), "busy-node", 1))
                    .await
                    .unwrap();
                got.ipv4[0].addr()
            })
        })
        .collect();
    let mut ips = Vec::new();
    for t in tasks {
        ips.push(t.await.unwrap());
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 64);
    let report = ipam.check().await.unwrap();
    assert!(report.is_clean(), "{report}");
    let affs = store
        .list(&keys::host_affinity_prefix("busy-node", IpFamily::V4))
        .await
        .unwrap();
    assert!(
        affs.items.len() <= 2,
        "racing claims of one node stay bounded: {}",
        affs.items.len()
    );
}
