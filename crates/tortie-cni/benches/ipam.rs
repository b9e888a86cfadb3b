//! Benchmark B8: IPAM allocations per second and p50/p99 latency.
//!
//! * library calls (`Ipam::auto_assign`) on the in-memory store, the embedded SQLite store
//!   and a real etcd;
//! * the `tortie-ipam` CNI binary invoked as a runtime invokes it (one process per ADD), on
//!   SQLite and etcd, beside Debian's `host-local` IPAM plugin invoked the same way;
//! * allocation latency as the number of blocks in the datastore grows (10 → 1000).
//!
//! Run: `cargo bench -p tortie-cni --bench ipam` (builds the binary in release first).
//! Everything stays on 127.0.0.1 and in temp dirs.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{apply, cni_env, etcd_server, invoke, netconf, pool_yaml};
use tortie_api::ipam::AllowedUse;
use tortie_ipam::{AutoAssignRequest, Ipam};
use tortie_store::Store;

const HOST_LOCAL: &str = "/usr/lib/cni/host-local";

struct Stats {
    n: usize,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
}

fn stats(mut samples: Vec<Duration>, total: Duration) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    Stats {
        n: samples.len(),
        per_sec: samples.len() as f64 / total.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
    }
}

fn row(name: &str, s: &Stats, baseline: Option<&Stats>) {
    let ratio = baseline
        .map(|b| format!("{:.2}x", s.per_sec / b.per_sec))
        .unwrap_or_default();
    println!(
        "| {name} | {} | {:.0} | {:.3} | {:.3} | {ratio} |",
        s.n,
        s.per_sec,
        s.p50.as_secs_f64() * 1e3,
        s.p99.as_secs_f64() * 1e3
    );
}

fn request(handle: String, node: &str) -> AutoAssignRequest {
    AutoAssignRequest {
        num_v4: 1,
        num_v6: 0,
        handle,
        attrs: BTreeMap::new(),
        hostname: node.to_string(),
        ipv4_pools: Vec::new(),
        ipv6_pools: Vec::new(),
        namespace: None,
        max_blocks_per_host: None,
        intended_use: AllowedUse::Workload,
    }
}

async fn library(store: Arc<dyn Store>, n: usize, tag: &str) -> Stats {
    apply(store.as_ref(), &pool_yaml("bench", "10.128.0.0/14", 26)).await;
    let ipam = Ipam::new(store);
    let mut samples = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        // maxBlocksPerHost (20 × /26) caps one node at 1280 addresses: spread over nodes.
        let node = format!("node-{}", i / 1000);
        ipam.auto_assign(&request(format!("{tag}.{i}"), &node))
            .await
            .expect("allocate");
        samples.push(t.elapsed());
    }
    stats(samples, start.elapsed())
}

fn binary_adds(conf: &serde_json::Value, n: usize, bin: Option<&str>) -> Stats {
    let mut samples = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let env = cni_env("ADD", &format!("bench-{i}"));
        let t = Instant::now();
        let out = match bin {
            None => invoke(&env, conf),
            Some(b) => {
                let mut child = Command::new(b)
                    .env_clear()
                    .envs(&env)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn");
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(conf.to_string().as_bytes())
                    .expect("stdin");
                child.wait_with_output().expect("wait")
            }
        };
        samples.push(t.elapsed());
        assert!(
            out.status.success(),
            "ADD failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    stats(samples, start.elapsed())
}

async fn sqlite_store(dir: &Path) -> (Arc<dyn Store>, String) {
    support::sqlite(dir).await
}

/// Allocation latency on a node whose block has room, with `blocks` other blocks stored.
async fn flat_in_blocks(blocks: usize) -> Stats {
    let store: Arc<dyn Store> = Arc::new(tortie_store::memory::MemoryStore::new());
    apply(store.as_ref(), &pool_yaml("bench", "10.128.0.0/14", 26)).await;
    let ipam = Ipam::new(store);
    for b in 0..blocks {
        ipam.auto_assign(&request(format!("fill.{b}"), &format!("filler-{b}")))
            .await
            .expect("fill");
    }
    let mut samples = Vec::new();
    let start = Instant::now();
    for i in 0..300 {
        // 60 per node: each node fills its first block, then claims a second one.
        let node = format!("probe-{}", i / 60);
        let t = Instant::now();
        ipam.auto_assign(&request(format!("probe.{i}"), &node))
            .await
            .expect("allocate");
        samples.push(t.elapsed());
    }
    stats(samples, start.elapsed())
}

fn ensure_release_binary() {
    // The support module points at the binary cargo built for this bench profile.
    assert!(
        Path::new(support::IPAM_BIN).exists(),
        "{} missing",
        support::IPAM_BIN
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benches; nothing to list here.
    }
    ensure_release_binary();
    println!("B8: IPAM allocations (one IPv4 address per request, one node, /26 blocks)\n");
    println!("| what | n | allocs/s | p50 ms | p99 ms | vs host-local |");
    println!("| --- | --- | --- | --- | --- | --- |");

    let mem = library(
        Arc::new(tortie_store::memory::MemoryStore::new()),
        20_000,
        "mem",
    )
    .await;
    row("library, in-memory store", &mem, None);
    let dir = tempfile::tempdir().expect("tempdir");
    let (sq, sq_url) = sqlite_store(dir.path()).await;
    let lib_sq = library(sq.clone(), 2_000, "lib").await;
    row("library, embedded SQLite", &lib_sq, None);

    let etcd = etcd_server::start_or_skip("bench ipam").await;
    let lib_etcd = match &etcd {
        Some(e) => {
            let s =
                tortie_store::connect(&tortie_store::DatastoreUrl::parse(&e.url()).expect("url"))
                    .await
                    .expect("etcd");
            Some(library(s, 1_000, "lib").await)
        }
        None => None,
    };
    if let Some(s) = &lib_etcd {
        row("library, etcd", s, None);
    }

    let hl_dir = tempfile::tempdir().expect("tempdir");
    let hl_conf = json!({"cniVersion": "1.0.0", "name": "bench", "type": "ptp",
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.132.0.0/16"}]], "dataDir": hl_dir.path()}});
    let host_local = Path::new(HOST_LOCAL)
        .exists()
        .then(|| binary_adds(&hl_conf, 300, Some(HOST_LOCAL)));
    match &host_local {
        Some(h) => row("host-local binary (file store)", h, None),
        None => println!(
            "| host-local binary | skipped: {HOST_LOCAL} missing (apt-get install containernetworking-plugins) | | | | |"
        ),
    }
    // On a node the agent keeps the store file open, so a CNI invocation is never its only
    // user; without that, each process is the file's first and last user, and SQLite runs
    // WAL recovery on open and a checkpoint (two more fsyncs) on close.
    let bin_sq = binary_adds(&netconf(&sq_url, "node-2", json!({})), 300, None);
    row(
        "tortie-ipam binary, embedded SQLite (file held open, as by the agent)",
        &bin_sq,
        host_local.as_ref(),
    );
    drop(sq);
    let bin_sq_cold = binary_adds(&netconf(&sq_url, "node-3", json!({})), 300, None);
    row(
        "tortie-ipam binary, embedded SQLite (no other user of the file)",
        &bin_sq_cold,
        host_local.as_ref(),
    );
    if let Some(e) = &etcd {
        let bin_etcd = binary_adds(&netconf(&e.url(), "node-2", json!({})), 300, None);
        row("tortie-ipam binary, etcd", &bin_etcd, host_local.as_ref());
    }
    drop(etcd);

    println!("\nAllocation latency vs number of blocks in the datastore (in-memory store)\n");
    println!("| blocks stored | n | allocs/s | p50 ms | p99 ms | |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for blocks in [10, 100, 1000] {
        let s = flat_in_blocks(blocks).await;
        row(&blocks.to_string(), &s, None);
    }
}
