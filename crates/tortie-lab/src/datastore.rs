//! The lab's datastore: starting etcd, opening the store, the cluster-wide setup calico-node
//! does at start-up (default pools, default tier), and the Pod records a kubelet would leave.
//!
//! Resources are written as the CLI writes them: the manifest JSON from
//! `Resource::to_value()` at `Resource::key()`, with `uid` and `creationTimestamp` stamped and
//! `resourceVersion` stripped (the store's revision is the version).

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tortie_api::k8s::{Container, ContainerPort, PodBody, PodSpec};
use tortie_api::{Kind, Object, ObjectMeta, Resource};
use tortie_store::{DatastoreUrl, Store, StoreError};

use crate::process;
use crate::spec::{PodRef, PortProto};
use crate::state::{Plan, ProcessRecord};

/// How long any one datastore operation may take.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(10);
/// Where Debian's etcd-server installs etcd; `TORTIE_ETCD_BIN` overrides.
pub const DEFAULT_ETCD_BIN: &str = "/usr/bin/etcd";
/// How long etcd gets to answer after starting.
const ETCD_STARTUP: Duration = Duration::from_secs(20);

/// The default pools calico-node creates when none exist: (name, cidr, blockSize, natOutgoing).
pub const DEFAULT_POOLS: [(&str, &str, i64, bool); 2] = [
    ("default-ipv4-ippool", "10.244.0.0/16", 26, true),
    ("default-ipv6-ippool", "fd00:10:244::/56", 122, false),
];

/// Runs a store operation with the lab's timeout.
pub async fn timed<T>(
    what: &str,
    f: impl Future<Output = Result<T, StoreError>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(STORE_TIMEOUT, f).await {
        Ok(r) => r.with_context(|| format!("datastore error while {what}")),
        Err(_) => bail!(
            "datastore did not answer within {}s while {what}",
            STORE_TIMEOUT.as_secs()
        ),
    }
}

/// Opens the store at `url`.
pub async fn open(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    let parsed = DatastoreUrl::parse(url)?;
    timed("connecting", tortie_store::connect(&parsed))
        .await
        .with_context(|| format!("cannot open datastore {url}"))
}

/// A free port on 127.0.0.1 (for etcd and the agents' health endpoints).
pub fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("cannot pick a free port on 127.0.0.1")?;
    Ok(l.local_addr()?.port())
}

/// A started etcd: its record, URL and child handle (to notice an early exit).
#[derive(Debug)]
pub struct StartedEtcd {
    pub record: ProcessRecord,
    pub url: String,
    child: std::process::Child,
}

/// Starts etcd for lab `plan` on free 127.0.0.1 ports with its data in the state dir. The
/// caller records the PID, then calls [`StartedEtcd::wait_ready`].
pub fn start_etcd(plan: &Plan) -> anyhow::Result<StartedEtcd> {
    let bin = std::env::var_os("TORTIE_ETCD_BIN").unwrap_or_else(|| DEFAULT_ETCD_BIN.into());
    if !Path::new(&bin).is_file() {
        bail!(
            "etcd not found at {} (install Debian's etcd-server, or set TORTIE_ETCD_BIN, or use --datastore embedded)",
            Path::new(&bin).display()
        );
    }
    let data = plan.etcd_dir();
    let (client, peer) = (free_port()?, free_port()?);
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut cmd = Command::new(&bin);
    cmd.arg(format!("--name={}", plan.lab))
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster={}={peer_url}", plan.lab))
        .arg("--initial-cluster-state=new")
        .arg("--logger=zap")
        .arg("--log-level=warn");
    let log = plan.state_dir().join("etcd.log");
    let child = process::spawn_logged(cmd, &log)
        .with_context(|| format!("cannot start {}", Path::new(&bin).display()))?;
    Ok(StartedEtcd {
        record: ProcessRecord {
            pid: child.id(),
            marker: format!("--data-dir={}", data.display()),
            log,
        },
        url: format!("etcd://127.0.0.1:{client}"),
        child,
    })
}

impl StartedEtcd {
    /// Waits (at most 20 s) until etcd answers.
    pub async fn wait_ready(mut self) -> anyhow::Result<()> {
        let log = self.record.log.clone();
        let deadline = Instant::now() + ETCD_STARTUP;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "etcd exited with {status} (log {}):\n{}",
                    log.display(),
                    tail(&log)
                );
            }
            let attempt = tokio::time::timeout(Duration::from_secs(2), async {
                let store = open(&self.url).await?;
                timed("reading the revision", store.revision()).await
            })
            .await;
            match attempt {
                Ok(Ok(_)) => return Ok(()),
                _ if Instant::now() >= deadline => bail!(
                    "etcd did not answer on {} within {}s (log {}):\n{}",
                    self.url,
                    ETCD_STARTUP.as_secs(),
                    log.display(),
                    tail(&log)
                ),
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// The last lines of a log file.
pub fn tail(path: &Path) -> String {
    tail_lines(path, 15)
}

/// The last `n` lines of a log file (empty when it cannot be read).
pub fn tail_lines(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Stamps a new object and renders what the store holds.
fn to_stored(res: &mut Resource) -> Vec<u8> {
    let m = res.meta_mut();
    if m.uid.is_none() {
        m.uid = Some(uuid::Uuid::new_v4().to_string());
    }
    if m.creation_timestamp.is_none() {
        m.creation_timestamp = Some(now_rfc3339());
    }
    tortie_api::codec::to_stored(res)
}

/// Decodes, defaults and validates one built-in manifest.
fn builtin(manifest: &Value) -> anyhow::Result<Resource> {
    let text = manifest.to_string();
    let (_, res) = tortie_api::codec::decode("<lab>", &text, "default")
        .pop()
        .ok_or_else(|| anyhow!("built-in manifest did not decode"))?
        .map_err(|e| anyhow!("built-in manifest: {e}"))?;
    Ok(res)
}

async fn create_if_absent(store: &dyn Store, mut res: Resource) -> anyhow::Result<bool> {
    let key = res.key();
    match timed("creating", store.create(&key, &to_stored(&mut res))).await {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.downcast_ref(), Some(StoreError::AlreadyExists { .. })) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Creates the default pools unless any pool exists, and the default tier, as calico-node
/// and the API server do. Returns the names of the pools it created.
pub async fn seed(store: &dyn Store) -> anyhow::Result<Vec<String>> {
    let mut created = Vec::new();
    let pools = timed("listing pools", store.list(&Kind::IPPool.key_prefix())).await?;
    if pools.items.is_empty() {
        for (name, cidr, block, nat) in DEFAULT_POOLS {
            let pool = builtin(&json!({
                "apiVersion": "projectcalico.org/v3",
                "kind": "IPPool",
                "metadata": {"name": name},
                "spec": {
                    "cidr": cidr,
                    "blockSize": block,
                    "natOutgoing": nat,
                    "ipipMode": "Never",
                    "vxlanMode": "Never",
                    "nodeSelector": "all()",
                },
            }))?;
            if create_if_absent(store, pool).await? {
                created.push(name.to_string());
            }
        }
    }
    let tier = builtin(&json!({
        "apiVersion": "projectcalico.org/v3",
        "kind": "Tier",
        "metadata": {"name": "default"},
        "spec": {},
    }))?;
    create_if_absent(store, tier).await?;
    Ok(created)
}

/// The core/v1 Pod a kubelet-backed cluster would hold for a lab pod.
pub fn pod_resource(
    pod: &PodRef,
    node: &str,
    labels: &BTreeMap<String, String>,
    serve: &[PortProto],
    service_account: Option<&str>,
) -> anyhow::Result<Resource> {
    let ports = serve
        .iter()
        .map(|p| ContainerPort {
            name: Some(format!("serve-{}-{}", p.port, p.protocol)),
            container_port: i64::from(p.port),
            protocol: Some(p.protocol.k8s().to_string()),
            host_port: None,
            host_ip: None,
        })
        .collect();
    let mut metadata = ObjectMeta::named(&pod.name, Some(&pod.namespace));
    metadata.labels = labels.clone();
    let spec = PodSpec {
        node_name: Some(node.to_string()),
        service_account_name: service_account.map(str::to_string),
        containers: vec![Container {
            name: "main".into(),
            ports,
            other: BTreeMap::new(),
        }],
        ..PodSpec::default()
    };
    let mut res = Resource::Pod(Object {
        metadata,
        body: PodBody {
            spec,
            status: Some(json!({"phase": "Pending"})),
        },
    });
    res.default_and_validate().map_err(|errs| {
        let msgs: Vec<String> = errs.iter().map(ToString::to_string).collect();
        anyhow!("pod {pod}: {}", msgs.join("; "))
    })?;
    Ok(res)
}

/// Writes (creates or replaces) a Pod record.
pub async fn put_pod(store: &dyn Store, mut res: Resource) -> anyhow::Result<()> {
    let key = res.key();
    timed(
        "writing the Pod",
        store.update(&key, &to_stored(&mut res), None),
    )
    .await?;
    Ok(())
}

/// Records the pod's IPs in its status as the kubelet does (`Running`, `podIP`, `podIPs`),
/// keeping whatever else changed meanwhile (e.g. labels). Bounded compare-and-swap retries.
pub async fn set_pod_ips(store: &dyn Store, pod: &PodRef, ips: &[String]) -> anyhow::Result<()> {
    const ATTEMPTS: usize = 5;
    let key = Kind::Pod.key(Some(&pod.namespace), &pod.name);
    for _ in 0..ATTEMPTS {
        let Some(kv) = timed("reading the Pod", store.get(&key)).await? else {
            bail!("the Pod record {pod} vanished");
        };
        let mut v: Value = serde_json::from_slice(&kv.value)
            .with_context(|| format!("stored Pod {pod} is not JSON"))?;
        v["status"] = json!({
            "phase": "Running",
            "podIP": ips.first(),
            "podIPs": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
        });
        let bytes = serde_json::to_vec(&v)?;
        match timed(
            "updating the Pod",
            store.update(&key, &bytes, Some(kv.mod_revision)),
        )
        .await
        {
            Ok(_) => return Ok(()),
            Err(e) if matches!(e.downcast_ref(), Some(StoreError::Conflict { .. })) => continue,
            Err(e) => return Err(e),
        }
    }
    bail!("the Pod record {pod} kept changing; gave up after {ATTEMPTS} attempts")
}

/// Deletes a Pod record; an absent one counts as deleted.
pub async fn delete_pod(store: &dyn Store, pod: &PodRef) -> anyhow::Result<()> {
    let key = Kind::Pod.key(Some(&pod.namespace), &pod.name);
    match timed("deleting the Pod", store.delete(&key, None)).await {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.downcast_ref(), Some(StoreError::NotFound { .. })) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Protocol;
    use tortie_store::memory::MemoryStore;

    #[tokio::test]
    async fn seed_creates_default_pools_once_and_respects_existing_pools() {
        let store = MemoryStore::new();
        let created = seed(&store).await.unwrap();
        assert_eq!(created, ["default-ipv4-ippool", "default-ipv6-ippool"]);
        let kv = store
            .get(&Kind::IPPool.key(None, "default-ipv4-ippool"))
            .await
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&kv.value).unwrap();
        assert_eq!(v["spec"]["cidr"], "10.244.0.0/16");
        assert_eq!(v["spec"]["blockSize"], 26);
        assert_eq!(v["spec"]["natOutgoing"], true);
        assert!(v["metadata"].get("resourceVersion").is_none());
        assert!(v["metadata"]["uid"].is_string());
        let v6 = store
            .get(&Kind::IPPool.key(None, "default-ipv6-ippool"))
            .await
            .unwrap()
            .unwrap();
        let v6: Value = serde_json::from_slice(&v6.value).unwrap();
        assert_eq!(v6["spec"]["blockSize"], 122);
        assert!(
            store
                .get(&Kind::Tier.key(None, "default"))
                .await
                .unwrap()
                .is_some()
        );
        assert!(seed(&store).await.unwrap().is_empty());

        let other = MemoryStore::new();
        let mut pool = builtin(
            &json!({"apiVersion": "projectcalico.org/v3", "kind": "IPPool",
            "metadata": {"name": "mine"}, "spec": {"cidr": "10.9.0.0/16"}}),
        )
        .unwrap();
        other
            .create(&pool.key(), &to_stored(&mut pool))
            .await
            .unwrap();
        assert!(seed(&other).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn pod_records_carry_node_labels_ports_and_ips() {
        let store = MemoryStore::new();
        let pod: PodRef = "x/a".parse().unwrap();
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let serve = [
            PortProto::new(80, Protocol::Tcp),
            PortProto::new(81, Protocol::Udp),
        ];
        let res = pod_resource(&pod, "n1", &labels, &serve, Some("sa-a")).unwrap();
        assert_eq!(res.key(), "/calico/resources/v3/core/pods/x/a");
        put_pod(&store, res).await.unwrap();
        set_pod_ips(&store, &pod, &["10.244.0.5".into()])
            .await
            .unwrap();
        let kv = store
            .get("/calico/resources/v3/core/pods/x/a")
            .await
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(&kv.value).unwrap();
        assert_eq!(v["kind"], "Pod");
        assert_eq!(v["metadata"]["labels"]["app"], "web");
        assert_eq!(v["spec"]["nodeName"], "n1");
        assert_eq!(v["spec"]["containers"][0]["ports"][1]["containerPort"], 81);
        assert_eq!(v["spec"]["containers"][0]["ports"][1]["protocol"], "UDP");
        assert_eq!(
            v["spec"]["containers"][0]["ports"][1]["name"],
            "serve-81-udp"
        );
        assert_eq!(v["spec"]["serviceAccountName"], "sa-a");
        assert_eq!(v["status"]["podIP"], "10.244.0.5");
        let back = tortie_api::codec::from_stored(v).unwrap();
        assert_eq!(back.kind(), Kind::Pod);
        delete_pod(&store, &pod).await.unwrap();
        delete_pod(&store, &pod).await.unwrap();
    }

    #[test]
    fn bad_labels_are_refused_with_the_field() {
        let pod: PodRef = "x/a".parse().unwrap();
        let labels = BTreeMap::from([("bad key!".to_string(), "v".to_string())]);
        let err = pod_resource(&pod, "n1", &labels, &[], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("labels"), "{err}");
    }
}
