//! Crash injection: the store stops accepting writes after a random number of them, in the
//! middle of an operation (a process killed between two writes). Afterwards `check` +
//! `fix` must leave a clean, consistent state without losing or duplicating any address
//! the model knows about, and the orchestrator's retry (DEL of the crashed handle) must
//! release whatever the crashed operation left behind.

mod support;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;
use proptest::prelude::*;
use serde_json::json;
use support::*;
use tortie_ipam::model::AllocationBlock;
use tortie_ipam::{IpFamily, Ipam, IpamError, keys};
use tortie_store::hooked::{HookedStore, StoreHook, StoreOp};
use tortie_store::memory::MemoryStore;
use tortie_store::{Store, StoreError};

/// Accepts `budget` more writes, then fails every write (negative budget: unlimited).
#[derive(Debug)]
struct Crash {
    budget: AtomicI64,
}

#[async_trait]
impl StoreHook for Crash {
    async fn before(&self, op: StoreOp) -> Result<(), StoreError> {
        if !op.is_write() {
            return Ok(());
        }
        let left = self.budget.load(Ordering::SeqCst);
        if left < 0 {
            return Ok(());
        }
        if left == 0 {
            return Err(StoreError::Unavailable {
                datastore: "crashing".into(),
                reason: "process killed".into(),
            });
        }
        self.budget.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

type CrashingStore = HookedStore<Crash>;

#[derive(Debug, Clone)]
enum Op {
    Assign { node: usize, n: usize },
    ReleaseHandle { pick: usize },
    ReleaseIp { pick: usize },
    ReleaseEmpty,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0..3usize, 1..=3usize).prop_map(|(node, n)| Op::Assign { node, n }),
        3 => any::<usize>().prop_map(|pick| Op::ReleaseHandle { pick }),
        1 => any::<usize>().prop_map(|pick| Op::ReleaseIp { pick }),
        1 => Just(Op::ReleaseEmpty),
    ]
}

struct Harness {
    store: Arc<CrashingStore>,
    ipam: Ipam,
    held: BTreeMap<IpAddr, String>,
    next: usize,
}

impl Harness {
    /// Runs `op`; with `crash_after = Some(k)` the store dies after k writes. Returns the
    /// handle a crashed assignment or handle release was working on.
    async fn run(&mut self, op: &Op, crash_after: Option<i64>) -> Option<String> {
        self.store
            .budget
            .store(crash_after.unwrap_or(-1), Ordering::SeqCst);
        let out = self.apply(op).await;
        self.store.budget.store(-1, Ordering::SeqCst);
        out
    }

    async fn apply(&mut self, op: &Op) -> Option<String> {
        match *op {
            Op::Assign { node, n } => {
                self.next += 1;
                let handle = format!("k8s-pod-network.c{}", self.next);
                match self
                    .ipam
                    .auto_assign(&req(&handle, &format!("node-{node}"), n))
                    .await
                {
                    Ok(got) => {
                        for net in got.ipv4 {
                            assert!(self.held.insert(net.addr(), handle.clone()).is_none());
                        }
                        None
                    }
                    Err(IpamError::Exhausted { .. }) => None,
                    Err(_) => Some(handle),
                }
            }
            Op::ReleaseHandle { pick } => {
                let handles: Vec<String> = self.held.values().cloned().collect();
                let handle = handles.get(pick % handles.len().max(1))?.clone();
                match self.ipam.release_by_handle(&handle).await {
                    Ok(_) => {
                        self.held.retain(|_, h| *h != handle);
                        None
                    }
                    Err(_) => Some(handle),
                }
            }
            Op::ReleaseIp { pick } => {
                let ips: Vec<IpAddr> = self.held.keys().copied().collect();
                let ip = *ips.get(pick % ips.len().max(1))?;
                // A crashed release by IP is retried by IP.
                while self.ipam.release_ips(&[ip]).await.is_err() {
                    self.store.budget.store(-1, Ordering::SeqCst);
                }
                self.held.remove(&ip);
                None
            }
            Op::ReleaseEmpty => {
                let _ = self
                    .ipam
                    .release_empty_blocks(std::time::Duration::ZERO)
                    .await;
                None
            }
        }
    }

    async fn allocations(&self) -> BTreeMap<IpAddr, String> {
        let mut out = BTreeMap::new();
        let blocks = self
            .store
            .list(&keys::block_prefix(IpFamily::V4))
            .await
            .unwrap();
        for kv in blocks.items {
            let b: AllocationBlock = serde_json::from_slice(&kv.value).unwrap();
            for a in b.allocated() {
                let prev = out.insert(a.ip, a.attr.handle_id.clone().unwrap());
                assert!(prev.is_none(), "{} allocated twice", a.ip);
            }
        }
        out
    }

    /// check → fix → clean; then the orchestrator retries the DEL of the crashed handle.
    async fn recover(&mut self, crashed: Option<String>) {
        let report = self.ipam.check().await.unwrap();
        let fixed = self.ipam.fix(&report).await.unwrap();
        assert!(fixed.errors.is_empty(), "{fixed:?}");
        let after = self.ipam.check().await.unwrap();
        assert!(after.is_clean(), "after fix of\n{report}\nstill:\n{after}");
        if let Some(h) = crashed {
            self.ipam.release_by_handle(&h).await.unwrap();
            self.held.retain(|_, owner| *owner != h);
        }
        assert_eq!(
            self.allocations().await,
            self.held,
            "addresses lost or leaked"
        );
        assert!(self.ipam.check().await.unwrap().is_clean());
    }
}

fn run_case(ops: &[(Op, Option<i64>)]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = Arc::new(CrashingStore::new(
            Arc::new(MemoryStore::new()),
            Crash {
                budget: AtomicI64::new(-1),
            },
        ));
        pool(&*store, "pool", "10.50.0.0/27", 29, json!({})).await;
        let ipam = Ipam::new(store.clone());
        let mut h = Harness {
            store,
            ipam,
            held: BTreeMap::new(),
            next: 0,
        };
        for (op, crash) in ops {
            let crashed = h.run(op, *crash).await;
            h.recover(crashed).await;
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn check_and_fix_recover_from_a_crash_at_any_write(
        ops in prop::collection::vec((op(), prop::option::weighted(0.4, 0i64..8)), 1..25),
    ) {
        run_case(&ops);
    }
}
