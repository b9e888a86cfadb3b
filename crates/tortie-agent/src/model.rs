//! The agent's in-memory view of the datastore, built from [`SyncUpdate`]s.
//!
//! Owns: node addresses, block affinities, per-block allocations (only the `node` attribute
//! matters here), and — for this node only — Pod labels and WorkloadEndpoint records; the BGP
//! inputs, including the decoded Secrets of the `--secrets-namespace` (BGP passwords).
//!
//! Invariants:
//! - pure: no I/O, no clock; applying the same set of final key values in any order gives the
//!   same model (every entry is keyed by its storage key's identity);
//! - a value that does not decode is treated as absent (like Felix's validation filter), so a
//!   bad record can never leave a stale entry behind;
//! - tombstoned IPAM records (`deleted: true`) are absent.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use tortie_api::Kind;
use tortie_api::endpoint::NodeSpec;
use tortie_api::resource::Resource;
use tortie_ipam::keys;
use tortie_ipam::model::{AffinityState, AllocationBlock, BlockAffinity};
use tortie_store::{KeyValue, Revision, SyncUpdate};

use crate::bgp_plan::{BgpInputs, BgpNode};
use crate::policy_model::PolicyModel;

/// Where every v3 and Kubernetes resource is stored.
const RESOURCES_ROOT: &str = "/calico/resources/v3/";

/// Labels of an object.
pub type Labels = BTreeMap<String, String>;

/// A node's underlay addresses (the next hops other nodes use).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeAddrs {
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

impl NodeAddrs {
    /// The address of the same family as `net`.
    pub fn for_family_of(&self, net: &IpNet) -> Option<IpAddr> {
        match net {
            IpNet::V4(_) => self.ipv4.map(IpAddr::V4),
            IpNet::V6(_) => self.ipv6.map(IpAddr::V6),
        }
    }

    /// Reads the addresses from a Node spec: `spec.bgp.ipv4Address`/`ipv6Address` first,
    /// then the first `CalicoNodeIP`/`InternalIP` entry of `spec.addresses` per family.
    pub fn from_spec(spec: &NodeSpec) -> Self {
        let mut out = NodeAddrs::default();
        if let Some(bgp) = &spec.bgp {
            out.set(parse_addr(&bgp.ipv4_address));
            out.set(parse_addr(&bgp.ipv6_address));
        }
        for a in &spec.addresses {
            if matches!(a.type_.as_str(), "" | "CalicoNodeIP" | "InternalIP") {
                match parse_addr(&a.address) {
                    Some(IpAddr::V4(v4)) if out.ipv4.is_none() => out.ipv4 = Some(v4),
                    Some(IpAddr::V6(v6)) if out.ipv6.is_none() => out.ipv6 = Some(v6),
                    _ => {}
                }
            }
        }
        out
    }

    fn set(&mut self, addr: Option<IpAddr>) {
        match addr {
            Some(IpAddr::V4(v4)) => self.ipv4 = Some(v4),
            Some(IpAddr::V6(v6)) => self.ipv6 = Some(v6),
            None => {}
        }
    }
}

/// Parses `10.0.0.5/24` or `10.0.0.5`.
fn parse_addr(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    s.parse::<IpNet>()
        .map(|n| n.addr())
        .or_else(|_| s.parse::<IpAddr>())
        .ok()
}

/// The routing-relevant datastore state of the whole cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoutingModel {
    /// Node name → underlay addresses.
    pub nodes: BTreeMap<String, NodeAddrs>,
    /// (node, block CIDR) → affinity state, from the affinity records.
    pub affinities: BTreeMap<(String, IpNet), AffinityState>,
    /// Block CIDR → allocated address → the `node` attribute of its allocation.
    pub allocations: BTreeMap<IpNet, BTreeMap<IpAddr, String>>,
}

/// A pod's identity: (namespace, name).
pub type PodId = (String, String);

/// A WorkloadEndpoint of one of this node's pods, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WepRecord {
    pub pod: PodId,
    pub labels: Labels,
    /// The stored JSON, rewritten (labels only) when labels need syncing.
    pub value: Vec<u8>,
    /// The CAS token.
    pub revision: Revision,
}

/// What one update changed, so the driver recomputes only what depends on it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changed {
    /// Routing inputs changed.
    pub routes: bool,
    /// The labels of this pod's endpoints may need syncing.
    pub pod: Option<PodId>,
    /// This node's own Node record changed or went away.
    pub own_node: bool,
    /// Something policy depends on changed.
    pub policy: bool,
    /// A BGP input (BGPConfiguration, BGPPeer, BGPFilter, a Node's BGP fields, a Secret of
    /// the secrets namespace) changed.
    pub bgp: bool,
}

/// The agent's whole model.
#[derive(Debug)]
pub struct Model {
    node_name: String,
    routing: RoutingModel,
    /// This node's pods → their labels.
    pods: BTreeMap<PodId, Labels>,
    /// WEP storage key → record, for this node's k8s endpoints.
    weps: BTreeMap<String, WepRecord>,
    own_node_present: bool,
    policy: PolicyModel,
    bgp: BgpInputs,
}

enum KeyKind {
    Node(String),
    Block(IpNet),
    Affinity(String, IpNet),
    Pod(PodId),
    Wep,
    Other,
}

fn classify(key: &str) -> KeyKind {
    if let Some(name) = key.strip_prefix(&Kind::Node.key_prefix()) {
        return KeyKind::Node(name.to_string());
    }
    if key.starts_with(keys::AFFINITY_ROOT) {
        return match keys::parse_affinity_key(key) {
            Some((host, cidr)) => KeyKind::Affinity(host, cidr),
            None => KeyKind::Other,
        };
    }
    if let Some(cidr) = keys::parse_block_key(key) {
        return KeyKind::Block(cidr);
    }
    if let Some(rest) = key.strip_prefix(&Kind::Pod.key_prefix()) {
        return match rest.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() => {
                KeyKind::Pod((ns.to_string(), name.to_string()))
            }
            _ => KeyKind::Other,
        };
    }
    if key.starts_with(&Kind::WorkloadEndpoint.key_prefix()) {
        return KeyKind::Wep;
    }
    KeyKind::Other
}

fn decode_resource(kv: &KeyValue) -> Option<Resource> {
    let value: serde_json::Value = serde_json::from_slice(&kv.value).ok()?;
    match tortie_api::codec::from_stored(value) {
        Ok(r) => Some(r),
        Err(error) => {
            tracing::warn!(key = %kv.key, %error, "ignoring undecodable resource");
            None
        }
    }
}

impl Model {
    /// An empty model for the agent of `node_name`.
    pub fn new(node_name: impl Into<String>) -> Self {
        Self {
            node_name: node_name.into(),
            routing: RoutingModel::default(),
            pods: BTreeMap::new(),
            weps: BTreeMap::new(),
            own_node_present: false,
            policy: PolicyModel::default(),
            bgp: BgpInputs::default(),
        }
    }

    /// Reads BGP passwords from the Secrets of `namespace` (the agent's
    /// `--secrets-namespace`); call before applying updates.
    pub fn with_secrets_namespace(mut self, namespace: &str) -> Self {
        self.bgp.secrets.namespace = namespace.to_string();
        self.bgp.secrets.by_name.clear();
        self
    }

    /// The policy inputs.
    pub fn policy(&self) -> &PolicyModel {
        &self.policy
    }

    /// The policy inputs, to change what does not come from the datastore.
    pub fn policy_mut(&mut self) -> &mut PolicyModel {
        &mut self.policy
    }

    /// The BGP inputs.
    pub fn bgp(&self) -> &BgpInputs {
        &self.bgp
    }

    /// This agent's node name.
    pub fn node_name(&self) -> &str {
        &self.node_name
    }

    /// The routing inputs.
    pub fn routing(&self) -> &RoutingModel {
        &self.routing
    }

    /// Whether this node's Node record exists.
    pub fn own_node_present(&self) -> bool {
        self.own_node_present
    }

    /// Labels of one of this node's pods.
    pub fn pod_labels(&self, pod: &PodId) -> Option<&Labels> {
        self.pods.get(pod)
    }

    /// This node's pods.
    pub fn pods(&self) -> impl Iterator<Item = &PodId> {
        self.pods.keys()
    }

    /// This node's endpoints of `pod`, by storage key.
    pub fn weps_of<'a>(
        &'a self,
        pod: &'a PodId,
    ) -> impl Iterator<Item = (&'a String, &'a WepRecord)> + 'a {
        self.weps.iter().filter(move |(_, w)| &w.pod == pod)
    }

    /// The revision of the endpoint stored at `key`, if it is one of this node's.
    pub fn wep_revision(&self, key: &str) -> Option<Revision> {
        self.weps.get(key).map(|w| w.revision)
    }

    /// Applies one syncer update. `InSync` and `Status` change nothing here.
    pub fn apply(&mut self, update: &SyncUpdate) -> Changed {
        match update {
            SyncUpdate::Set(kv) => self.set(kv),
            SyncUpdate::Deleted { key, .. } => self.delete(key),
            SyncUpdate::InSync | SyncUpdate::Status(_) => Changed::default(),
        }
    }

    fn set(&mut self, kv: &KeyValue) -> Changed {
        let (policy, bgp) = if kv.key.starts_with(RESOURCES_ROOT) {
            let res = decode_resource(kv);
            (
                self.policy.set(kv, res.as_ref()),
                self.set_bgp(&kv.key, res.as_ref()),
            )
        } else {
            (false, false)
        };
        Changed {
            policy,
            bgp,
            ..self.set_routing(kv)
        }
    }

    /// Keeps the BGP inputs; `res` is the decoded value at `key`, `None` when deleted or bad.
    fn set_bgp(&mut self, key: &str, res: Option<&Resource>) -> bool {
        fn put<T: PartialEq>(map: &mut BTreeMap<String, T>, name: &str, v: Option<T>) -> bool {
            match v {
                Some(v) if map.get(name) == Some(&v) => false,
                Some(v) => {
                    map.insert(name.to_string(), v);
                    true
                }
                None => map.remove(name).is_some(),
            }
        }
        let b = &mut self.bgp;
        if let Some(name) = key.strip_prefix(&Kind::BGPConfiguration.key_prefix()) {
            let v = match res {
                Some(Resource::BGPConfiguration(o)) => Some(o.spec().clone()),
                _ => None,
            };
            return put(&mut b.configs, name, v);
        }
        if let Some(name) = key.strip_prefix(&Kind::BGPPeer.key_prefix()) {
            let v = match res {
                Some(Resource::BGPPeer(o)) => Some(o.spec().clone()),
                _ => None,
            };
            return put(&mut b.peers, name, v);
        }
        if let Some(name) = key.strip_prefix(&Kind::BGPFilter.key_prefix()) {
            let v = match res {
                Some(Resource::BGPFilter(o)) => Some(o.spec().clone()),
                _ => None,
            };
            return put(&mut b.filters, name, v);
        }
        if let Some(name) = key.strip_prefix(&Kind::Secret.namespace_prefix(&b.secrets.namespace)) {
            // Decoded once here; a value that is not base64 makes the Secret absent.
            let v = match res {
                Some(Resource::Secret(o)) => o.body.decoded().ok(),
                _ => None,
            };
            return put(&mut b.secrets.by_name, name, v);
        }
        if let Some(name) = key.strip_prefix(&Kind::Node.key_prefix()) {
            let v = match res {
                Some(Resource::Node(n)) => {
                    let bgp = n.spec().bgp.as_ref();
                    Some(BgpNode {
                        addrs: NodeAddrs::from_spec(n.spec()),
                        labels: n.metadata.labels.clone(),
                        as_number: bgp.and_then(|b| b.as_number).map(|a| a.0),
                        rr_cluster_id: bgp.and_then(|b| b.route_reflector_cluster_id.parse().ok()),
                    })
                }
                _ => None,
            };
            return put(&mut b.nodes, name, v);
        }
        false
    }

    fn set_routing(&mut self, kv: &KeyValue) -> Changed {
        match classify(&kv.key) {
            KeyKind::Node(name) => {
                let addrs = match decode_resource(kv) {
                    Some(Resource::Node(node)) => Some(NodeAddrs::from_spec(node.spec())),
                    _ => None,
                };
                self.set_node(name, addrs)
            }
            KeyKind::Block(cidr) => {
                let block = serde_json::from_slice::<AllocationBlock>(&kv.value)
                    .ok()
                    .filter(|b| !b.deleted);
                self.set_block(cidr, block.as_ref())
            }
            KeyKind::Affinity(host, cidr) => {
                let state = serde_json::from_slice::<BlockAffinity>(&kv.value)
                    .ok()
                    .filter(|a| !a.deleted)
                    .map(|a| a.state);
                self.set_affinity(host, cidr, state)
            }
            KeyKind::Pod(id) => {
                let labels = match decode_resource(kv) {
                    Some(Resource::Pod(pod))
                        if pod.body.spec.node_name.as_deref() == Some(&self.node_name) =>
                    {
                        Some(pod.metadata.labels)
                    }
                    _ => None,
                };
                self.set_pod(id, labels)
            }
            KeyKind::Wep => self.set_wep(kv),
            KeyKind::Other => Changed::default(),
        }
    }

    fn delete(&mut self, key: &str) -> Changed {
        let policy = self.policy.delete(key);
        let bgp = self.set_bgp(key, None);
        Changed {
            policy,
            bgp,
            ..self.delete_routing(key)
        }
    }

    fn delete_routing(&mut self, key: &str) -> Changed {
        match classify(key) {
            KeyKind::Node(name) => self.set_node(name, None),
            KeyKind::Block(cidr) => self.set_block(cidr, None),
            KeyKind::Affinity(host, cidr) => self.set_affinity(host, cidr, None),
            KeyKind::Pod(id) => self.set_pod(id, None),
            KeyKind::Wep => {
                let pod = self.weps.remove(key).map(|w| w.pod);
                Changed {
                    pod,
                    ..Changed::default()
                }
            }
            KeyKind::Other => Changed::default(),
        }
    }

    fn set_node(&mut self, name: String, addrs: Option<NodeAddrs>) -> Changed {
        let own_node = name == self.node_name;
        if own_node {
            self.own_node_present = addrs.is_some();
        }
        let routes = match addrs {
            Some(a) => self.routing.nodes.insert(name, a) != Some(a),
            None => self.routing.nodes.remove(&name).is_some(),
        };
        Changed {
            routes,
            own_node,
            ..Changed::default()
        }
    }

    fn set_block(&mut self, cidr: IpNet, block: Option<&AllocationBlock>) -> Changed {
        let allocs: Option<BTreeMap<IpAddr, String>> = block.map(|b| {
            b.allocated()
                .filter_map(|a| Some((a.ip, a.attr.secondary.get("node")?.clone())))
                .collect()
        });
        let routes = match allocs {
            Some(a) => self.routing.allocations.insert(cidr, a.clone()) != Some(a),
            None => self.routing.allocations.remove(&cidr).is_some(),
        };
        Changed {
            routes,
            ..Changed::default()
        }
    }

    fn set_affinity(&mut self, host: String, cidr: IpNet, state: Option<AffinityState>) -> Changed {
        let key = (host, cidr);
        let routes = match state {
            Some(s) => self.routing.affinities.insert(key, s) != Some(s),
            None => self.routing.affinities.remove(&key).is_some(),
        };
        Changed {
            routes,
            ..Changed::default()
        }
    }

    fn set_pod(&mut self, id: PodId, labels: Option<Labels>) -> Changed {
        let changed = match labels {
            Some(l) => self.pods.insert(id.clone(), l.clone()) != Some(l),
            None => self.pods.remove(&id).is_some(),
        };
        Changed {
            pod: changed.then_some(id),
            ..Changed::default()
        }
    }

    fn set_wep(&mut self, kv: &KeyValue) -> Changed {
        let record = match decode_resource(kv) {
            Some(Resource::WorkloadEndpoint(wep))
                if wep.spec().node == self.node_name
                    && wep.spec().orchestrator == "k8s"
                    && !wep.spec().pod.is_empty() =>
            {
                let ns = wep
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".to_string());
                Some(WepRecord {
                    pod: (ns, wep.spec().pod.clone()),
                    labels: wep.metadata.labels,
                    value: kv.value.clone(),
                    revision: kv.mod_revision,
                })
            }
            _ => None,
        };
        let pod = match record {
            Some(r) => {
                let pod = r.pod.clone();
                let old = self.weps.insert(kv.key.clone(), r);
                // A record that moved to another pod (should not happen) re-checks both.
                old.map(|o| o.pod).filter(|p| *p != pod).or(Some(pod))
            }
            None => self.weps.remove(&kv.key).map(|w| w.pod),
        };
        Changed {
            pod,
            ..Changed::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: serde_json::Value, rev: i64) -> SyncUpdate {
        SyncUpdate::Set(KeyValue {
            key: key.to_string(),
            value: serde_json::to_vec(&value).unwrap(),
            create_revision: rev,
            mod_revision: rev,
        })
    }

    #[test]
    fn node_addresses_from_bgp_then_addresses() {
        let mut m = Model::new("n1");
        let node = serde_json::json!({
            "apiVersion": "projectcalico.org/v3", "kind": "Node",
            "metadata": {"name": "n2"},
            "spec": {"bgp": {"ipv4Address": "198.18.0.12/24"},
                     "addresses": [{"address": "fd00:198:18::12/64", "type": "CalicoNodeIP"}]}
        });
        let c = m.apply(&kv(&Kind::Node.key(None, "n2"), node, 3));
        assert!(c.routes && !c.own_node);
        assert_eq!(
            m.routing().nodes["n2"],
            NodeAddrs {
                ipv4: Some("198.18.0.12".parse().unwrap()),
                ipv6: Some("fd00:198:18::12".parse().unwrap()),
            }
        );
        let d = m.apply(&SyncUpdate::Deleted {
            key: Kind::Node.key(None, "n2"),
            revision: 4,
        });
        assert!(d.routes);
        assert!(m.routing().nodes.is_empty());
    }

    #[test]
    fn undecodable_values_are_absent() {
        let mut m = Model::new("n1");
        let key = keys::affinity_key("n2", &"10.0.0.0/26".parse().unwrap());
        m.apply(&kv(
            &key,
            serde_json::json!({"state": "confirmed", "node": "n2"}),
            1,
        ));
        assert_eq!(m.routing().affinities.len(), 1);
        let c = m.apply(&kv(&key, serde_json::json!({"state": 7}), 2));
        assert!(c.routes);
        assert!(m.routing().affinities.is_empty());
    }

    #[test]
    fn only_this_nodes_pods_are_kept() {
        let mut m = Model::new("n1");
        let pod = |node: &str| {
            serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "a", "namespace": "x", "labels": {"app": "web"}},
                "spec": {"nodeName": node}})
        };
        let key = Kind::Pod.key(Some("x"), "a");
        let c = m.apply(&kv(&key, pod("n2"), 1));
        assert_eq!(c.pod, None);
        let c = m.apply(&kv(&key, pod("n1"), 2));
        let id = ("x".to_string(), "a".to_string());
        assert_eq!(c.pod, Some(id.clone()));
        assert_eq!(m.pod_labels(&id).unwrap()["app"], "web");
        // Same labels again: nothing to do.
        assert_eq!(m.apply(&kv(&key, pod("n1"), 3)).pod, None);
    }

    #[test]
    fn secrets_of_the_secrets_namespace_are_bgp_inputs() {
        let mut m = Model::new("n1").with_secrets_namespace("kube-system");
        let secret = |ns: &str, b64: &str| {
            serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "bgp", "namespace": ns},
                "type": "Opaque", "data": {"pw": b64}})
        };
        // Another namespace's Secret is not read.
        let other = Kind::Secret.key(Some("calico-system"), "bgp");
        assert!(!m.apply(&kv(&other, secret("calico-system", "b25l"), 1)).bgp);
        assert!(m.bgp().secrets.by_name.is_empty());
        let key = Kind::Secret.key(Some("kube-system"), "bgp");
        assert!(m.apply(&kv(&key, secret("kube-system", "b25l"), 2)).bgp);
        assert_eq!(m.bgp().secrets.by_name["bgp"]["pw"], b"one");
        assert!(
            !m.apply(&kv(&key, secret("kube-system", "b25l"), 3)).bgp,
            "unchanged"
        );
        assert!(m.apply(&kv(&key, secret("kube-system", "dHdv"), 4)).bgp);
        assert_eq!(m.bgp().secrets.by_name["bgp"]["pw"], b"two");
        let dbg = format!("{:?}", m.bgp());
        assert!(
            dbg.contains("pw") && !dbg.contains("116, 119, 111"),
            "{dbg}"
        );
        let gone = m.apply(&SyncUpdate::Deleted { key, revision: 5 });
        assert!(gone.bgp);
        assert!(m.bgp().secrets.by_name.is_empty());
    }
}
