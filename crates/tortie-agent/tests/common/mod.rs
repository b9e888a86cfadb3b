//! Shared fixtures: datastore records as tortie writes them, a store whose first listing can
//! be held back (to observe the agent before `InSync`), a tiny HTTP client, and network
//! namespace guards for the root tests.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ipnet::IpNet;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tortie_api::Kind;
use tortie_ipam::keys;
use tortie_ipam::model::{AffinityState, AllocationBlock, BlockAffinity, host_affinity};
use tortie_store::hooked::{HookedStore, StoreHook, StoreOp};
use tortie_store::{Revision, Store, StoreError};

// ---------------------------------------------------------------------------------------
// Records

pub async fn put(store: &dyn Store, key: &str, value: &Value) -> Revision {
    store
        .update(key, &serde_json::to_vec(value).unwrap(), None)
        .await
        .unwrap()
}

pub fn manifest(kind: Kind, name: &str, ns: Option<&str>, labels: Value, spec: Value) -> Value {
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

/// A Node with underlay addresses (`""` for none).
pub async fn node(store: &dyn Store, name: &str, v4: &str, v6: &str) {
    let mut bgp = serde_json::Map::new();
    if !v4.is_empty() {
        bgp.insert("ipv4Address".into(), v4.into());
    }
    if !v6.is_empty() {
        bgp.insert("ipv6Address".into(), v6.into());
    }
    let v = manifest(Kind::Node, name, None, json!({}), json!({ "bgp": bgp }));
    put(store, &Kind::Node.key(None, name), &v).await;
}

/// An IPPool.
pub async fn pool(store: &dyn Store, name: &str, cidr: &str, block_size: u8) {
    let spec = json!({ "cidr": cidr, "blockSize": block_size });
    let v = manifest(Kind::IPPool, name, None, json!({}), spec);
    put(store, &Kind::IPPool.key(None, name), &v).await;
}

/// A block affinity record.
pub async fn affinity(store: &dyn Store, node: &str, cidr: &str, state: AffinityState) {
    let cidr: IpNet = cidr.parse().unwrap();
    let v = serde_json::to_value(BlockAffinity::host(node, cidr, state)).unwrap();
    put(store, &keys::affinity_key(node, &cidr), &v).await;
}

/// A block affine to `owner` with `(ordinal, node attribute)` allocations.
pub async fn block(store: &dyn Store, cidr: &str, owner: &str, allocs: &[(usize, &str)]) {
    let cidr: IpNet = cidr.parse().unwrap();
    let mut b = AllocationBlock::new(cidr, Some(host_affinity(owner)), None);
    for (ordinal, node) in allocs {
        let attrs = BTreeMap::from([("node".to_string(), node.to_string())]);
        b.allocate_ordinal(*ordinal, &format!("h-{node}-{ordinal}"), &attrs)
            .unwrap();
    }
    put(
        store,
        &keys::block_key(&cidr),
        &serde_json::to_value(b).unwrap(),
    )
    .await;
}

/// A Pod on `node`.
pub async fn pod(store: &dyn Store, ns: &str, name: &str, node: &str, labels: Value) {
    let v = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": ns, "labels": labels },
        "spec": { "nodeName": node },
    });
    put(store, &Kind::Pod.key(Some(ns), name), &v).await;
}

/// The WorkloadEndpoint the CNI plugin writes for a pod; returns its key.
pub async fn wep(store: &dyn Store, ns: &str, pod: &str, node: &str, labels: Value) -> String {
    let name = format!(
        "{}-k8s-{}-eth0",
        node.replace('-', "--"),
        pod.replace('-', "--")
    );
    let mut labels = labels;
    labels["projectcalico.org/namespace"] = json!(ns);
    labels["projectcalico.org/orchestrator"] = json!("k8s");
    let spec = json!({
        "orchestrator": "k8s", "node": node, "pod": pod, "endpoint": "eth0",
        "interfaceName": "cali0123456789a", "ipNetworks": ["10.244.1.9/32"],
    });
    let v = manifest(Kind::WorkloadEndpoint, &name, Some(ns), labels, spec);
    let key = Kind::WorkloadEndpoint.key(Some(ns), &name);
    put(store, &key, &v).await;
    key
}

/// The labels stored at `key`.
pub async fn labels_at(store: &dyn Store, key: &str) -> Value {
    let kv = store.get(key).await.unwrap().expect("record exists");
    let v: Value = serde_json::from_slice(&kv.value).unwrap();
    v["metadata"]["labels"].clone()
}

// ---------------------------------------------------------------------------------------
// A store whose `list` waits for a gate

/// Blocks every `list` until the gate opens, so the syncer cannot reach `InSync`.
#[derive(Debug)]
pub struct Gate(watch::Receiver<bool>);

#[async_trait]
impl StoreHook for Gate {
    async fn before(&self, op: StoreOp) -> Result<(), StoreError> {
        if op == StoreOp::List {
            let mut gate = self.0.clone();
            let _ = gate.wait_for(|open| *open).await;
        }
        Ok(())
    }
}

/// A store whose listings wait for a gate.
pub type GatedStore = HookedStore<Gate>;

/// A closed gate over `inner`, and the sender that opens it (`send(true)`).
pub fn gated(inner: Arc<dyn Store>) -> (Arc<GatedStore>, watch::Sender<bool>) {
    let (tx, rx) = watch::channel(false);
    (Arc::new(HookedStore::new(inner, Gate(rx))), tx)
}

// ---------------------------------------------------------------------------------------
// HTTP

/// `GET path` on loopback; returns (status, body). Bounded by a 5 s timeout.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    assert!(addr.ip().is_loopback(), "tests only talk to loopback");
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        String::from_utf8_lossy(&buf).into_owned()
    };
    let text = tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .expect("HTTP answer within 5s");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Polls `f` every 50 ms until it returns `Some`, at most `limit` (and 400 tries).
pub async fn wait_for<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    for _ in 0..400 {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > limit {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {:?} waiting for {what}", start.elapsed());
}

// ---------------------------------------------------------------------------------------
// Root and namespaces

/// True when running as root. Otherwise prints why the test is skipped, and fails under
/// `CI=true` (CI runs as root, so a skip there would hide a broken setup).
pub fn root_or_skip(test: &str) -> bool {
    tortie_netlink::testing::root_or_skip(test)
}

/// Runs `ip ARGS`; panics with its stderr on failure.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Namespaces created by a test, deleted on drop (also on panic).
#[derive(Debug)]
pub struct NetnsGuard {
    pub prefix: String,
    names: Vec<String>,
}

impl NetnsGuard {
    /// A guard whose namespaces are named `ta<pid>-<tag>-…`.
    pub fn new(tag: &str) -> Self {
        let prefix = format!("ta{}-{tag}", std::process::id());
        // Leftovers of an earlier run with the same pid.
        for line in ip(&["netns", "list"]).lines() {
            if let Some(name) = line.split_whitespace().next()
                && name.starts_with(&format!("{prefix}-"))
            {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
            }
        }
        Self {
            prefix,
            names: Vec::new(),
        }
    }

    /// Creates `<prefix>-<suffix>` with loopback up; returns its name.
    pub fn add(&mut self, suffix: &str) -> String {
        let name = format!("{}-{suffix}", self.prefix);
        ip(&["netns", "add", &name]);
        self.names.push(name.clone());
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        name
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        for name in self.names.drain(..).rev() {
            let ok = Command::new("ip")
                .args(["netns", "del", &name])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                eprintln!("warning: could not delete network namespace {name}");
            }
        }
    }
}

/// Connects `a` and `b` with a veth pair named `eth0` on both sides, up, with the given
/// addresses (IPv6 without DAD). Only namespaces the test created are touched.
pub fn link_nodes(a: &str, a_addrs: &[&str], b: &str, b_addrs: &[&str]) {
    static PAIRS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = PAIRS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp_a = format!("v{}-{n}a", std::process::id() % 100_000);
    let tmp_b = format!("v{}-{n}b", std::process::id() % 100_000);
    ip(&[
        "-n", a, "link", "add", &tmp_a, "type", "veth", "peer", "name", &tmp_b, "netns", b,
    ]);
    ip(&["-n", a, "link", "set", &tmp_a, "name", "eth0"]);
    ip(&["-n", b, "link", "set", &tmp_b, "name", "eth0"]);
    for (ns, addrs) in [(a, a_addrs), (b, b_addrs)] {
        for addr in addrs {
            if addr.contains(':') {
                ip(&["-n", ns, "addr", "add", addr, "dev", "eth0", "nodad"]);
            } else {
                ip(&["-n", ns, "addr", "add", addr, "dev", "eth0"]);
            }
        }
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
    }
}

/// `ip route show` lines in `ns` for both families, filtered by `ip route` selectors.
pub fn routes(ns: &str, selector: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for family in ["-4", "-6"] {
        let mut args = vec!["-n", ns, family, "route", "show"];
        args.extend_from_slice(selector);
        out.extend(
            ip(&args)
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty()),
        );
    }
    out.sort();
    out
}
