//! Many `tortie-ipam` processes on several nodes at once, against the embedded store and a
//! real etcd: no address is ever handed out twice and `ipam check` is clean afterwards. And a
//! crash test: allocating processes are killed at random points; after `check`/`fix` nothing
//! is lost or duplicated.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use support::*;
use tortie_ipam::Ipam;
use tortie_store::Store;

const NODES: usize = 4;
const PER_NODE: usize = 100;
const IN_FLIGHT: usize = 4;

/// Runs `cids` through `command` with at most IN_FLIGHT processes at once.
fn run_batch(command: &str, cids: &[String], conf: &Value) -> Vec<(String, bool, Value)> {
    let mut out = Vec::new();
    for chunk in cids.chunks(IN_FLIGHT) {
        let children: Vec<_> = chunk
            .iter()
            .map(|c| (c.clone(), spawn(&cni_env(command, c), &conf.to_string())))
            .collect();
        for (c, child) in children {
            let o = child.wait_with_output().expect("wait");
            let v = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
            out.push((c, o.status.success(), v));
        }
    }
    out
}

/// One node's workload: ADD 100, DEL every other one, ADD 50 more. Returns live cid → address.
fn node_workload(node: usize, url: &str) -> BTreeMap<String, String> {
    let conf = netconf(url, &format!("node-{node}"), json!({}));
    let first: Vec<String> = (0..PER_NODE).map(|i| format!("n{node}-a{i}")).collect();
    let mut live = BTreeMap::new();
    for (c, ok, v) in run_batch("ADD", &first, &conf) {
        assert!(ok, "ADD {c} failed: {v}");
        live.insert(c, addresses(&v)[0].clone());
    }
    let dels: Vec<String> = first.iter().step_by(2).cloned().collect();
    for (c, ok, v) in run_batch("DEL", &dels, &conf) {
        assert!(ok, "DEL {c} failed: {v}");
        live.remove(&c);
    }
    let second: Vec<String> = (0..PER_NODE / 2).map(|i| format!("n{node}-b{i}")).collect();
    for (c, ok, v) in run_batch("ADD", &second, &conf) {
        assert!(ok, "ADD {c} failed: {v}");
        live.insert(c, addresses(&v)[0].clone());
    }
    live
}

async fn concurrent_nodes(store: Arc<dyn Store>, url: String) {
    apply(store.as_ref(), &pool_yaml("stress", "10.240.0.0/22", 28)).await;
    let threads: Vec<_> = (0..NODES)
        .map(|n| {
            let url = url.clone();
            std::thread::spawn(move || node_workload(n, &url))
        })
        .collect();
    let mut live: BTreeMap<String, String> = BTreeMap::new();
    for t in threads {
        live.extend(t.join().expect("node thread"));
    }
    assert_eq!(live.len(), NODES * PER_NODE);
    let unique: BTreeSet<&String> = live.values().collect();
    assert_eq!(unique.len(), live.len(), "an address was handed out twice");
    let ipam = Ipam::new(store);
    for (cid, addr) in &live {
        let ips = ipam
            .ips_by_handle(&format!("k8s-pod-network.{cid}"))
            .await
            .expect("query");
        assert_eq!(ips.len(), 1, "{cid}");
        assert!(
            addr.starts_with(&format!("{}/", ips[0])),
            "{cid}: {addr} vs {ips:?}"
        );
    }
    let report = ipam.check().await.expect("check");
    assert!(report.is_clean(), "ipam check found problems: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_concurrently_on_the_embedded_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, url) = sqlite(dir.path()).await;
    concurrent_nodes(store, url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_concurrently_on_etcd() {
    let Some(etcd) = etcd_server::start_or_skip("four_nodes_concurrently_on_etcd").await else {
        return;
    };
    let url = etcd.url();
    let store = tortie_store::connect(&tortie_store::DatastoreUrl::parse(&url).expect("url"))
        .await
        .expect("connect");
    concurrent_nodes(store, url).await;
    drop(etcd);
}

/// A tiny deterministic PRNG (xorshift), seeded from the clock and printed for replay.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let seed = std::env::var("TORTIE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("crash test seed: TORTIE_TEST_SEED={seed}");
        Rng(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

async fn crash_and_recover(store: Arc<dyn Store>, url: String) {
    apply(store.as_ref(), &pool_yaml("crash", "10.241.0.0/24", 28)).await;
    let mut rng = Rng::seeded();
    let mut cids = Vec::new();
    let mut killed = 0;
    for round in 0..8 {
        let mut children = Vec::new();
        for i in 0..8 {
            let node = (round + i) % 3;
            let cid = format!("r{round}-{i}");
            let conf = netconf(&url, &format!("node-{node}"), json!({}));
            children.push(spawn(&cni_env("ADD", &cid), &conf.to_string()));
            cids.push((cid, node));
        }
        // The newest allocator dies at once (mid start-up or mid-allocation), so every run
        // crashes something; the others die at a random point, or finish.
        if let Some(last) = children.last_mut()
            && last.try_wait().ok().flatten().is_none()
        {
            last.kill().ok(); // SIGKILL, by PID
            killed += 1;
        }
        std::thread::sleep(Duration::from_millis(rng.next() % 40));
        for mut c in children {
            if rng.next().is_multiple_of(2) && c.try_wait().ok().flatten().is_none() {
                c.kill().ok(); // SIGKILL, by PID
                killed += 1;
            }
            c.wait().ok();
        }
    }
    eprintln!("killed {killed} of {} allocating processes", cids.len());
    assert!(killed > 0, "the crash test killed no allocator");
    let ipam = Ipam::new(store);
    let report = ipam.check().await.expect("check");
    eprintln!("after the crashes: {}", report.summary_line());
    ipam.fix(&report).await.expect("fix");
    let report = ipam.check().await.expect("check after fix");
    assert!(report.is_clean(), "problems remain after fix: {report:?}");
    // Nothing is duplicated: every handle's addresses are distinct across handles.
    let mut seen = BTreeSet::new();
    for (cid, _) in &cids {
        for ip in ipam
            .ips_by_handle(&format!("k8s-pod-network.{cid}"))
            .await
            .expect("query")
        {
            assert!(seen.insert(ip), "{ip} is held twice");
        }
    }
    // Nothing is lost: after the runtime's DELs every address is free again.
    for (cid, node) in &cids {
        let conf = netconf(&url, &format!("node-{node}"), json!({}));
        let (ok, v) = cmd("DEL", cid, &conf);
        assert!(ok, "DEL {cid}: {v}");
    }
    let usage = ipam.usage().await.expect("usage");
    let in_use: u128 = usage.pools.iter().map(|p| p.in_use).sum();
    assert_eq!(in_use, 0, "addresses were lost: {usage:?}");
    assert!(ipam.check().await.expect("final check").is_clean());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_allocators_lose_and_duplicate_nothing_on_the_embedded_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, url) = sqlite(dir.path()).await;
    crash_and_recover(store, url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_allocators_lose_and_duplicate_nothing_on_etcd() {
    let Some(etcd) = etcd_server::start_or_skip("killed_allocators_on_etcd").await else {
        return;
    };
    let url = etcd.url();
    let store = tortie_store::connect(&tortie_store::DatastoreUrl::parse(&url).expect("url"))
        .await
        .expect("connect");
    crash_and_recover(store, url).await;
    drop(etcd);
}
