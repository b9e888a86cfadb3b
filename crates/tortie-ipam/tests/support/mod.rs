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
use tortie_store::memory::MemoryStore;
use tortie_store::{KeyValue, ListResult, Revision, Store, StoreError, WatchStream};

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

/// Counts calls to the wrapped store.
#[derive(Debug, Default)]
pub struct CountingStore {
    pub inner: MemoryStore,
    pub gets: AtomicUsize,
    pub lists: AtomicUsize,
    /// Items returned by all lists.
    pub listed: AtomicUsize,
    pub writes: AtomicUsize,
}

impl CountingStore {
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
impl Store for CountingStore {
    fn describe(&self) -> String {
        "counting".into()
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<ListResult, StoreError> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        let r = self.inner.list(prefix).await?;
        self.listed.fetch_add(r.items.len(), Ordering::SeqCst);
        Ok(r)
    }
    async fn create(&self, key: &str, value: &[u8]) -> Result<Revision, StoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.create(key, value).await
    }
    async fn update(
        &self,
        key: &str,
        value: &[u8],
        expected: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.update(key, value, expected).await
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.delete(key, expected).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, from).await
    }
    async fn revision(&self) -> Result<Revision, StoreError> {
        self.inner.revision().await
    }
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
}

/// Yields to the scheduler before every call, so tasks on one thread interleave between
/// each read and write (and CAS races really happen).
#[derive(Debug, Default)]
pub struct YieldingStore {
    pub inner: MemoryStore,
}

#[async_trait]
impl Store for YieldingStore {
    fn describe(&self) -> String {
        "yielding".into()
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        tokio::task::yield_now().await;
        self.inner.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<ListResult, StoreError> {
        tokio::task::yield_now().await;
        self.inner.list(prefix).await
    }
    async fn create(&self, key: &str, value: &[u8]) -> Result<Revision, StoreError> {
        tokio::task::yield_now().await;
        self.inner.create(key, value).await
    }
    async fn update(
        &self,
        key: &str,
        value: &[u8],
        expected: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        tokio::task::yield_now().await;
        self.inner.update(key, value, expected).await
    }
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<Revision, StoreError> {
        tokio::task::yield_now().await;
        self.inner.delete(key, expected).await
    }
    async fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        self.inner.watch(prefix, from).await
    }
    async fn revision(&self) -> Result<Revision, StoreError> {
        self.inner.revision().await
    }
    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }
}
