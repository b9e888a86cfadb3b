//! Shared test fixtures: resources written as the CLI stores them, and store wrappers that
//! count calls or force interleavings.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use serde_json::{Value, json};
use tortie_api::Kind;
use tortie_ipam::{AutoAssignRequest, FakeClock, Ipam};
use tortie_store::hooked::{HookedStore, StoreHook, StoreOp};
use tortie_store::{Store, StoreError};

pub async fn put(store: &dyn Store, key: &str, value: Value) {
    let bytes = serde_json::to_vec(&value).unwrap();
    store.update(key, &bytes, None).await.unwrap();
}

fn manifest(kind: Kind, name: &str, ns: Option<&str>, labels: Value, spec: Value) -> Value {
    let mut meta = json!({ "name": name, "labels": labels });
    if let Some(ns) = ns {
        meta["namespace"] = json!(ns);
    }
    json!({
        "apiVersion": kind.info().api_version,
        "kind": kind.name(),
        "metadata": meta,
        "spec": spec,
    })
}

/// An IPPool; `extra` fields are merged into its spec.
pub async fn pool(store: &dyn Store, name: &str, cidr: &str, block_size: u8, extra: Value) {
    let mut spec = json!({ "cidr": cidr, "blockSize": block_size });
    if let Value::Object(m) = extra {
        for (k, v) in m {
            spec[k] = v;
        }
    }
    let v = manifest(Kind::IPPool, name, None, json!({}), spec);
    put(store, &Kind::IPPool.key(None, name), v).await;
}

pub async fn node(store: &dyn Store, name: &str, labels: Value) {
    let v = manifest(Kind::Node, name, None, labels, json!({}));
    put(store, &Kind::Node.key(None, name), v).await;
}

pub async fn namespace(store: &dyn Store, name: &str, labels: Value) {
    let v = json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": { "name": name, "labels": labels },
    });
    put(store, &Kind::Namespace.key(None, name), v).await;
}

pub async fn reservation(store: &dyn Store, name: &str, cidrs: &[&str]) {
    let v = manifest(
        Kind::IPReservation,
        name,
        None,
        json!({}),
        json!({ "reservedCIDRs": cidrs }),
    );
    put(store, &Kind::IPReservation.key(None, name), v).await;
}

pub async fn ipam_config(store: &dyn Store, strict: bool, max_blocks: i64) {
    let v = manifest(
        Kind::IPAMConfiguration,
        "default",
        None,
        json!({}),
        json!({ "strictAffinity": strict, "maxBlocksPerHost": max_blocks }),
    );
    put(store, &Kind::IPAMConfiguration.key(None, "default"), v).await;
}

pub async fn pod(store: &dyn Store, ns: &str, name: &str) {
    let v = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": ns },
        "spec": { "containers": [{ "name": "c", "image": "busybox" }] },
    });
    put(store, &Kind::Pod.key(Some(ns), name), v).await;
}

pub async fn delete_pod(store: &dyn Store, ns: &str, name: &str) {
    let _ = store.delete(&Kind::Pod.key(Some(ns), name), None).await;
}

pub async fn wep(store: &dyn Store, ns: &str, pod: &str, node: &str, ips: &[IpAddr]) {
    let name = format!("{node}-k8s-{pod}-eth0");
    let nets: Vec<String> = ips
        .iter()
        .map(|ip| match ip {
            IpAddr::V4(_) => format!("{ip}/32"),
            IpAddr::V6(_) => format!("{ip}/128"),
        })
        .collect();
    let spec = json!({
        "orchestrator": "k8s", "node": node, "pod": pod, "endpoint": "eth0",
        "ipNetworks": nets, "interfaceName": "cali0123456789a",
    });
    let v = manifest(Kind::WorkloadEndpoint, &name, Some(ns), json!({}), spec);
    put(store, &Kind::WorkloadEndpoint.key(Some(ns), &name), v).await;
}

/// An IPAM over `store` with a fake clock.
pub fn ipam_with_clock(store: Arc<dyn Store>) -> (Ipam, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock::at_epoch_2025());
    (Ipam::new(store).with_clock(clock.clone()), clock)
}

/// A request for `v4` IPv4 addresses.
pub fn req(handle: &str, host: &str, v4: usize) -> AutoAssignRequest {
    AutoAssignRequest {
        num_v4: v4,
        handle: handle.into(),
        hostname: host.into(),
        ..AutoAssignRequest::default()
    }
}

/// A request for a pod (namespace/pod attributes set).
pub fn pod_req(handle: &str, host: &str, ns: &str, pod: &str) -> AutoAssignRequest {
    let mut r = req(handle, host, 1);
    r.attrs = BTreeMap::from([
        ("namespace".to_string(), ns.to_string()),
        ("pod".to_string(), pod.to_string()),
    ]);
    r.namespace = Some(ns.to_string());
    r
}

/// Counts calls to the wrapped store (the hook of [`CountingStore`]).
#[derive(Debug, Default)]
pub struct Counts {
    pub gets: AtomicUsize,
    pub lists: AtomicUsize,
    /// Items returned by all lists.
    pub listed: AtomicUsize,
    pub writes: AtomicUsize,
}

impl Counts {
    pub fn reset(&self) {
        for c in [&self.gets, &self.lists, &self.listed, &self.writes] {
            c.store(0, Ordering::SeqCst);
        }
    }

    /// (gets, lists, listed items, writes)
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        (
            self.gets.load(Ordering::SeqCst),
            self.lists.load(Ordering::SeqCst),
            self.listed.load(Ordering::SeqCst),
            self.writes.load(Ordering::SeqCst),
        )
    }
}

#[async_trait]
impl StoreHook for Counts {
    async fn before(&self, op: StoreOp) -> Result<(), StoreError> {
        let counter = match op {
            StoreOp::Get => &self.gets,
            StoreOp::List => &self.lists,
            op if op.is_write() => &self.writes,
            _ => return Ok(()),
        };
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn listed(&self, items: usize) {
        self.listed.fetch_add(items, Ordering::SeqCst);
    }
}

/// An in-memory store that counts calls.
pub type CountingStore = HookedStore<Counts>;

/// Yields to the scheduler before every read and write, so tasks on one thread interleave
/// between each read and write (and CAS races really happen).
#[derive(Debug, Default)]
pub struct Yield;

#[async_trait]
impl StoreHook for Yield {
    async fn before(&self, op: StoreOp) -> Result<(), StoreError> {
        if matches!(op, StoreOp::Get | StoreOp::List) || op.is_write() {
            tokio::task::yield_now().await;
        }
        Ok(())
    }
}

/// An in-memory store that yields before every read and write.
pub type YieldingStore = HookedStore<Yield>;
