//! The lab's state file and its naming and address plan.
//!
//! Everything a lab makes is named from the lab name `L` (letters and digits only, so the
//! prefix `L-` of one lab never matches another lab's names):
//! - state dir `/run/tortie/lab/L/` holding `state.json`, a `lock` file, logs and the
//!   embedded store;
//! - network namespaces `L-fab` (the fabric bridge), `L-n<i>` (nodes), `L-h-<host>` (hosts),
//!   `L-p<hash>` (pods).
//!
//! Addresses (inside the lab's namespaces only, see `test-network.md`): node `i` (1-based)
//! gets 198.18.0.(10+i)/24 and fd00:198:18::(10+i)/64 on its `eth0`; host `k` gets
//! 198.18.0.(100+k)/24 and fd00:198:18::(100+k)/64. The IPv6 group repeats the IPv4 octet's
//! decimal digits so the two read alike.
//!
//! `state.json` is rewritten atomically (temp file + rename) under the `lock` file's flock.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::spec::PortProto;

/// Parent of every lab's state dir.
pub const LAB_ROOT: &str = "/run/tortie/lab";
/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// Version of the `state.json` format.
pub const STATE_VERSION: u32 = 1;
/// Most nodes a lab may have (node addresses end at .10+N).
pub const MAX_NODES: usize = 50;
/// Most hosts a lab may have (host addresses end at .100+K).
pub const MAX_HOSTS: usize = 150;
/// Prefix length of the underlay IPv4 subnet.
pub const UNDERLAY_V4_PREFIX: u8 = 24;
/// Prefix length of the underlay IPv6 subnet.
pub const UNDERLAY_V6_PREFIX: u8 = 64;
/// Name of the bridge inside the fabric namespace.
pub const BRIDGE: &str = "br0";
/// How long to wait for another lab command holding the lock.
const LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors reading or writing lab state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "invalid lab name {name:?}: use 1-16 lower-case letters and digits, starting with a letter"
    )]
    BadName { name: String },
    #[error("no lab named {name:?} (start one with `tortie lab up --name {name}`)")]
    Missing { name: String },
    #[error("cannot {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt (`tortie lab down` still removes the lab)")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("lab state is locked by another command; gave up after {}s", LOCK_TIMEOUT.as_secs())]
    LockTimeout,
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| StateError::Io {
        action,
        path,
        source,
    }
}

/// Checks a lab name: 1-16 of `[a-z0-9]`, starting with a letter.
pub fn validate_name(name: &str) -> Result<(), StateError> {
    let ok = (1..=16).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(StateError::BadName {
            name: name.to_string(),
        })
    }
}

/// Names and addresses derived from a lab name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub lab: String,
}

impl Plan {
    pub fn new(lab: &str) -> Result<Self, StateError> {
        validate_name(lab)?;
        Ok(Plan {
            lab: lab.to_string(),
        })
    }

    /// The prefix every namespace of this lab starts with.
    pub fn prefix(&self) -> String {
        format!("{}-", self.lab)
    }

    pub fn state_dir(&self) -> PathBuf {
        Path::new(LAB_ROOT).join(&self.lab)
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join("state.json")
    }

    pub fn fabric_netns(&self) -> String {
        format!("{}-fab", self.lab)
    }

    /// The Kubernetes node name of node `i` (1-based).
    pub fn node_name(i: usize) -> String {
        format!("n{i}")
    }

    pub fn node_netns(&self, i: usize) -> String {
        format!("{}-n{i}", self.lab)
    }

    pub fn node_ipv4(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, octet(10 + i))
    }

    pub fn node_ipv6(i: usize) -> Ipv6Addr {
        underlay_v6(10 + i)
    }

    pub fn host_netns(&self, host: &str) -> String {
        format!("{}-h-{host}", self.lab)
    }

    pub fn host_ipv4(k: usize) -> Ipv4Addr {
        Ipv4Addr::new(198, 18, 0, octet(100 + k))
    }

    pub fn host_ipv6(k: usize) -> Ipv6Addr {
        underlay_v6(100 + k)
    }

    /// The pod namespace: `L-p` and the first 10 hex digits of sha256("NS/NAME").
    pub fn pod_netns(&self, namespace: &str, name: &str) -> String {
        let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
        let hex: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
        format!("{}-p{hex}", self.lab)
    }

    /// Whether `netns` belongs to this lab.
    pub fn owns_netns(&self, netns: &str) -> bool {
        netns.starts_with(&self.prefix())
    }

    /// The dir holding the etcd data when the lab runs etcd.
    pub fn etcd_dir(&self) -> PathBuf {
        self.state_dir().join("etcd")
    }
}

fn octet(n: usize) -> u8 {
    u8::try_from(n).unwrap_or(u8::MAX)
}

/// fd00:198:18::N where the last group spells N's decimal digits (N = 11 -> `::11`).
fn underlay_v6(n: usize) -> Ipv6Addr {
    let group = u16::from_str_radix(&n.to_string(), 16).unwrap_or(0);
    Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, group)
}

/// A process the lab started, with a string its command line must contain for the lab to
/// signal it (guards against PID reuse).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRecord {
    pub pid: u32,
    pub marker: String,
    pub log: PathBuf,
}

/// The datastore the lab runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatastoreState {
    /// `embedded` or `etcd`.
    pub kind: String,
    /// The URL every component uses, e.g. `file:/run/tortie/lab/lab/store.db`.
    pub url: String,
    /// The etcd server, when `kind` is `etcd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd: Option<ProcessRecord>,
}

/// A node's agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentState {
    pub process: ProcessRecord,
    /// `127.0.0.1:PORT` serving `/readiness`.
    pub health: String,
}

/// One node: a namespace on the fabric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    pub name: String,
    pub netns: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    /// The node's veth end in the fabric namespace.
    pub fabric_link: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentState>,
}

/// A plain host on the fabric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostState {
    pub name: String,
    pub index: usize,
    pub netns: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    pub fabric_link: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serve: Vec<PortProto>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ProcessRecord>,
}

/// A pod wired by the CNI plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub netns: String,
    pub container_id: String,
    /// Addresses from the CNI result, without prefix length, IPv4 first.
    pub ips: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub serve: Vec<PortProto>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ProcessRecord>,
}

impl PodState {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The whole `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabState {
    pub version: u32,
    pub name: String,
    pub created: String,
    pub fabric_netns: String,
    pub datastore: DatastoreState,
    pub nodes: Vec<NodeState>,
    /// Keyed by host name.
    #[serde(default)]
    pub hosts: BTreeMap<String, HostState>,
    /// Keyed by `NS/NAME`.
    #[serde(default)]
    pub pods: BTreeMap<String, PodState>,
    /// `static` or `bgp` (the agents' `--routing`); empty in labs made before it existed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub routing: String,
}

impl LabState {
    pub fn plan(&self) -> Plan {
        Plan {
            lab: self.name.clone(),
        }
    }

    pub fn node(&self, name: &str) -> Option<&NodeState> {
        self.nodes
            .iter()
            .find(|n| n.name == name || n.netns == name)
    }

    /// The smallest host index not in use.
    pub fn next_host_index(&self) -> Option<usize> {
        (1..=MAX_HOSTS).find(|k| self.hosts.values().all(|h| h.index != *k))
    }

    /// Every process the lab recorded.
    pub fn processes(&self) -> Vec<ProcessRecord> {
        let agents = self.nodes.iter().filter_map(|n| n.agent.as_ref());
        let pods = self.pods.values().filter_map(|p| p.server.clone());
        let hosts = self.hosts.values().filter_map(|h| h.server.clone());
        pods.chain(hosts)
            .chain(agents.map(|a| a.process.clone()))
            .chain(self.datastore.etcd.clone())
            .collect()
    }

    /// Reads `state.json` of lab `plan`.
    pub fn load(plan: &Plan) -> Result<LabState, StateError> {
        let path = plan.state_file();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StateError::Missing {
                    name: plan.lab.clone(),
                });
            }
            Err(e) => return Err(io("read", &path)(e)),
        };
        serde_json::from_slice(&text).map_err(|source| StateError::Corrupt { path, source })
    }

    /// Writes `state.json` atomically.
    pub fn save(&self) -> Result<(), StateError> {
        let plan = self.plan();
        write_atomic(&plan.state_file(), &self.to_json())
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

/// Writes `path` by writing a temp file next to it, syncing it and renaming it over.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("rename into place", path))
}

/// An exclusive lock on a lab's state; released on drop.
#[derive(Debug)]
pub struct StateLock {
    _lock: Flock<File>,
}

impl StateLock {
    /// Takes the lab's lock, waiting at most 30 s for other commands.
    pub fn acquire(plan: &Plan) -> Result<StateLock, StateError> {
        let path = plan.state_dir().join("lock");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io("open", &path))?;
        let deadline = Instant::now() + LOCK_TIMEOUT;
        loop {
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => return Ok(StateLock { _lock: lock }),
                Err((f, _)) if Instant::now() < deadline => {
                    file = f;
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(_) => return Err(StateError::LockTimeout),
            }
        }
    }
}

/// Locks, loads, lets `f` change the state, saves. Returns what `f` returned.
pub fn update<T>(
    plan: &Plan,
    f: impl FnOnce(&mut LabState) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let _lock = StateLock::acquire(plan)?;
    let mut state = LabState::load(plan)?;
    let out = f(&mut state)?;
    state.save()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Protocol;

    fn sample() -> LabState {
        let plan = Plan::new("lab").unwrap();
        let node = NodeState {
            name: Plan::node_name(1),
            netns: plan.node_netns(1),
            ipv4: Plan::node_ipv4(1),
            ipv6: Plan::node_ipv6(1),
            fabric_link: "n1".into(),
            agent: Some(AgentState {
                process: ProcessRecord {
                    pid: 42,
                    marker: "/run/netns/lab-n1".into(),
                    log: "/run/tortie/lab/lab/agent-n1.log".into(),
                },
                health: "127.0.0.1:9099".into(),
            }),
        };
        let host = HostState {
            name: "ext".into(),
            index: 1,
            netns: plan.host_netns("ext"),
            ipv4: Plan::host_ipv4(1),
            ipv6: Plan::host_ipv6(1),
            fabric_link: "h1".into(),
            serve: vec![PortProto::new(80, Protocol::Tcp)],
            server: None,
        };
        let pod = PodState {
            namespace: "x".into(),
            name: "a".into(),
            node: "n1".into(),
            netns: plan.pod_netns("x", "a"),
            container_id: "c0ffee".into(),
            ips: vec!["10.244.0.1".into(), "fd00:10:244::1".into()],
            labels: BTreeMap::from([("app".into(), "web".into())]),
            serve: vec![PortProto::new(80, Protocol::Udp)],
            server: Some(ProcessRecord {
                pid: 43,
                marker: plan.pod_netns("x", "a"),
                log: "/tmp/x".into(),
            }),
        };
        LabState {
            version: STATE_VERSION,
            name: "lab".into(),
            created: "2025-01-01T00:00:00Z".into(),
            fabric_netns: plan.fabric_netns(),
            datastore: DatastoreState {
                kind: "embedded".into(),
                url: "file:/run/tortie/lab/lab/store.db".into(),
                etcd: None,
            },
            nodes: vec![node],
            hosts: BTreeMap::from([("ext".into(), host)]),
            pods: BTreeMap::from([("x/a".into(), pod)]),
            routing: String::new(),
        }
    }

    #[test]
    fn state_round_trips_through_json() {
        let s = sample();
        let back: LabState = serde_json::from_slice(&s.to_json()).unwrap();
        assert_eq!(back, s);
        let v: serde_json::Value = serde_json::from_slice(&s.to_json()).unwrap();
        assert_eq!(v["nodes"][0]["ipv4"], "198.18.0.11");
        assert_eq!(v["nodes"][0]["ipv6"], "fd00:198:18::11");
        assert_eq!(v["pods"]["x/a"]["serve"][0], "80/udp");
        assert_eq!(v["nodes"][0]["agent"]["process"]["pid"], 42);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn lab_names() {
        for good in ["lab", "l", "tl1234a", "abcdefghijklmnop"] {
            validate_name(good).unwrap();
        }
        for bad in [
            "",
            "Lab",
            "1lab",
            "la-b",
            "la_b",
            "abcdefghijklmnopq",
            "a/b",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn address_plan() {
        assert_eq!(Plan::node_ipv4(1).to_string(), "198.18.0.11");
        assert_eq!(Plan::node_ipv4(3).to_string(), "198.18.0.13");
        assert_eq!(Plan::node_ipv6(1).to_string(), "fd00:198:18::11");
        assert_eq!(Plan::node_ipv6(MAX_NODES).to_string(), "fd00:198:18::60");
        assert_eq!(Plan::host_ipv4(1).to_string(), "198.18.0.101");
        assert_eq!(Plan::host_ipv6(1).to_string(), "fd00:198:18::101");
        assert_eq!(Plan::host_ipv4(MAX_HOSTS).to_string(), "198.18.0.250");
        assert_eq!(Plan::host_ipv6(MAX_HOSTS).to_string(), "fd00:198:18::250");
    }

    #[test]
    fn names_carry_the_lab_prefix_and_never_match_another_lab() {
        let a = Plan::new("lab").unwrap();
        let b = Plan::new("lab2").unwrap();
        let names = [
            a.fabric_netns(),
            a.node_netns(1),
            a.host_netns("ext"),
            a.pod_netns("x", "a"),
        ];
        for n in &names {
            assert!(a.owns_netns(n), "{n}");
            assert!(!b.owns_netns(n), "{n}");
        }
        for n in [b.fabric_netns(), b.node_netns(1)] {
            assert!(!a.owns_netns(&n), "{n}");
        }
        let p = a.pod_netns("x", "a");
        assert_eq!(p.len(), "lab-p".len() + 10);
        assert_eq!(p, a.pod_netns("x", "a"));
        assert_ne!(p, a.pod_netns("x", "b"));
        assert_eq!(a.state_dir(), Path::new("/run/tortie/lab/lab"));
    }

    #[test]
    fn host_indexes_reuse_the_smallest_free_one() {
        let mut s = sample();
        assert_eq!(s.next_host_index(), Some(2));
        s.hosts.clear();
        assert_eq!(s.next_host_index(), Some(1));
    }

    #[test]
    fn processes_lists_every_record() {
        let pids: Vec<u32> = sample().processes().iter().map(|p| p.pid).collect();
        assert_eq!(pids, vec![43, 42]);
    }

    #[test]
    fn node_lookup_by_name_or_netns() {
        let s = sample();
        assert!(s.node("n1").is_some());
        assert!(s.node("lab-n1").is_some());
        assert!(s.node("n2").is_none());
    }
}
