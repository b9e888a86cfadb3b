//! The policy side of the agent's model: every resource policy depends on, compiled into a
//! [`World`], plus the pools (for natOutgoing) and the FelixConfiguration knobs the policy
//! dataplane reads: `defaultEndpointToHostAction` here, the failsafe ports through the world
//! (which `policy explain` reads the same way).
//!
//! Pure: updates in, a [`DataplaneModel`] out. A resource that does not decode or compile is
//! absent (it was rejected on write; a stale copy must not linger).

use std::collections::BTreeMap;

use ipnet::IpNet;
use tortie_api::Kind;
use tortie_api::resource::Resource;
use tortie_calc::World;
use tortie_calc::dataplane::{self, DataplaneModel, EndpointToHost, NatOutgoing, NodeConfig};
use tortie_calc::failsafe::FailsafeConfig;
use tortie_calc::graph::CalcGraph;
use tortie_calc::world::ResourceKey;
use tortie_store::KeyValue;

/// The node's interfaces and their addresses.
pub type Interfaces = BTreeMap<String, std::collections::BTreeSet<std::net::IpAddr>>;

/// Kinds the policy calculation reads.
fn policy_kind(k: Kind) -> bool {
    matches!(
        k,
        Kind::Tier
            | Kind::NetworkPolicy
            | Kind::GlobalNetworkPolicy
            | Kind::StagedNetworkPolicy
            | Kind::StagedGlobalNetworkPolicy
            | Kind::StagedKubernetesNetworkPolicy
            | Kind::K8sNetworkPolicy
            | Kind::Profile
            | Kind::Namespace
            | Kind::ServiceAccount
            | Kind::Pod
            | Kind::WorkloadEndpoint
            | Kind::HostEndpoint
            | Kind::NetworkSet
            | Kind::GlobalNetworkSet
    )
}

/// The policy inputs.
#[derive(Debug, Default)]
pub struct PolicyModel {
    /// The compiled world plus the incremental label index (a change costs only its delta).
    graph: CalcGraph,
    /// Storage key → the resource it holds (to remove it on delete).
    keys: BTreeMap<String, ResourceKey>,
    /// Pool key → (CIDR, natOutgoing).
    pools: BTreeMap<String, (IpNet, bool)>,
    /// FelixConfiguration name → (defaultEndpointToHostAction, failsafe ports): what policy
    /// reads of it, to tell whether an update changed anything.
    felix: BTreeMap<String, (Option<String>, FailsafeConfig)>,
    /// The node's own interfaces (not `lo`, not workloads') and their addresses, for host
    /// endpoints that name `expectedIPs` instead of an interface.
    host_interfaces: Interfaces,
}

impl PolicyModel {
    /// Absorbs a set; `true` if anything policy depends on changed.
    pub fn set(&mut self, kv: &KeyValue, res: Option<&Resource>) -> bool {
        let Some(res) = res else {
            return self.delete(&kv.key);
        };
        match res {
            Resource::IPPool(p) => {
                let entry = p
                    .spec()
                    .cidr
                    .parse::<IpNet>()
                    .ok()
                    .map(|c| (c.trunc(), p.spec().nat_outgoing));
                return match entry {
                    Some(e) => self.pools.insert(kv.key.clone(), e) != Some(e),
                    None => self.pools.remove(&kv.key).is_some(),
                };
            }
            Resource::FelixConfiguration(f) => {
                let v = (
                    f.spec().default_endpoint_to_host_action.clone(),
                    FailsafeConfig::of(f.spec()),
                );
                // The world resolves the failsafe ports per node.
                self.graph.upsert(res);
                return self.felix.insert(res.name().to_string(), v.clone()) != Some(v);
            }
            _ => {}
        }
        if !policy_kind(res.kind()) {
            return false;
        }
        let rk = ResourceKey::of(res);
        if let Some(old) = self.keys.insert(kv.key.clone(), rk.clone())
            && old != rk
        {
            self.graph.remove(&old);
        }
        self.graph.upsert(res);
        if let Some(e) = self.graph.world().errors().get(&rk) {
            tracing::warn!(resource = %rk, error = %e, "resource not enforced");
        }
        true
    }

    /// Absorbs a delete; `true` if anything policy depends on changed.
    pub fn delete(&mut self, key: &str) -> bool {
        if self.pools.remove(key).is_some() {
            return true;
        }
        if let Some(name) = key.strip_prefix(&Kind::FelixConfiguration.key_prefix()) {
            self.graph.remove(&ResourceKey {
                kind: Kind::FelixConfiguration,
                namespace: None,
                name: name.to_string(),
            });
            return self.felix.remove(name).is_some();
        }
        match self.keys.remove(key) {
            Some(rk) => {
                self.graph.remove(&rk);
                true
            }
            None => false,
        }
    }

    pub fn pool_cidrs(&self) -> Vec<IpNet> {
        self.pools.values().map(|(c, _)| *c).collect()
    }

    /// The compiled policy world.
    pub fn world(&self) -> &World {
        self.graph.world()
    }

    /// The node's `defaultEndpointToHostAction`: `node.<name>` config first, then `default`;
    /// Calico's default is Drop.
    fn endpoint_to_host(&self, node: &str) -> EndpointToHost {
        let v = self
            .felix
            .get(&format!("node.{node}"))
            .and_then(|(e2h, _)| e2h.clone())
            .or_else(|| self.felix.get("default").and_then(|(e2h, _)| e2h.clone()));
        match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("accept") => EndpointToHost::Accept,
            Some("return") => EndpointToHost::Return,
            _ => EndpointToHost::Drop,
        }
    }

    /// Takes the node's interfaces as read from the kernel, keeping the ones host endpoints
    /// can govern (not `lo`, not workload interfaces); `true` if that changed anything.
    pub fn set_host_interfaces(&mut self, all: &Interfaces) -> bool {
        let mine: Interfaces = all
            .iter()
            .filter(|(name, _)| tortie_dataplane::render::can_be_host_endpoint(name))
            .map(|(n, a)| (n.clone(), a.clone()))
            .collect();
        if mine == self.host_interfaces {
            return false;
        }
        self.host_interfaces = mine;
        true
    }

    /// The desired dataplane of `node`.
    pub fn dataplane(&self, node: &str) -> DataplaneModel {
        // `node.<name>` FelixConfiguration, then `default`, then Calico's defaults.
        let failsafe = self.graph.world().failsafe(node);
        let nat = NatOutgoing {
            masquerade_pools: self
                .pools
                .values()
                .filter(|(_, nat)| *nat)
                .map(|(c, _)| *c)
                .collect(),
            all_pools: self.pools.values().map(|(c, _)| *c).collect(),
        };
        dataplane::build_with(
            self.graph.world(),
            &NodeConfig {
                node: node.to_string(),
                endpoint_to_host: self.endpoint_to_host(node),
                nat,
                failsafe_inbound: failsafe.inbound,
                failsafe_outbound: failsafe.outbound,
                host_interfaces: self.host_interfaces.clone(),
            },
            &self.graph,
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use tortie_calc::failsafe::{self, FailsafePort};
    use tortie_calc::model::proto;

    use super::*;

    fn kv_res(kind: Kind, v: Value) -> (KeyValue, Resource) {
        let name = v["metadata"]["name"].as_str().expect("name").to_string();
        let res = tortie_api::codec::from_stored(v.clone()).expect("decodes");
        let kv = KeyValue {
            key: kind.key(None, &name),
            value: serde_json::to_vec(&v).expect("json"),
            create_revision: 1,
            mod_revision: 1,
        };
        (kv, res)
    }

    fn felix(name: &str, spec: Value) -> (KeyValue, Resource) {
        kv_res(
            Kind::FelixConfiguration,
            json!({"apiVersion": "projectcalico.org/v3", "kind": "FelixConfiguration",
                   "metadata": {"name": name}, "spec": spec}),
        )
    }

    #[test]
    fn failsafe_ports_follow_felix_configuration() {
        let mut m = PolicyModel::default();
        let (kv, res) = kv_res(
            Kind::HostEndpoint,
            json!({"apiVersion": "projectcalico.org/v3", "kind": "HostEndpoint",
                   "metadata": {"name": "n1-eth0"},
                   "spec": {"node": "n1", "interfaceName": "eth0"}}),
        );
        assert!(m.set(&kv, Some(&res)));
        let d = m.dataplane("n1");
        assert_eq!(d.host_endpoints.len(), 1);
        assert_eq!(d.failsafe_inbound, failsafe::default_inbound());
        assert_eq!(d.failsafe_outbound, failsafe::default_outbound());

        let (kv, res) = felix(
            "default",
            json!({"failsafeInboundHostPorts": [{"protocol": "TCP", "port": 2222}],
                   "defaultEndpointToHostAction": "Accept"}),
        );
        assert!(m.set(&kv, Some(&res)));
        assert!(!m.set(&kv, Some(&res)), "same again: no change");
        let (node_kv, node_res) = felix("node.n1", json!({"failsafeOutboundHostPorts": []}));
        assert!(m.set(&node_kv, Some(&node_res)));
        let d = m.dataplane("n1");
        assert_eq!(d.failsafe_inbound, [FailsafePort::new(proto::TCP, 2222)]);
        assert!(d.failsafe_outbound.is_empty(), "node.n1 disables them");
        assert_eq!(d.endpoint_to_host, EndpointToHost::Accept);
        assert_eq!(
            m.dataplane("n2").failsafe_outbound,
            failsafe::default_outbound()
        );

        assert!(m.delete(&kv.key));
        assert!(m.delete(&node_kv.key));
        let d = m.dataplane("n1");
        assert_eq!(d.failsafe_inbound, failsafe::default_inbound());
        assert_eq!(d.failsafe_outbound, failsafe::default_outbound());
        assert_eq!(d.endpoint_to_host, EndpointToHost::Drop);
    }

    #[test]
    fn host_endpoints_by_address_follow_the_host_interfaces() {
        let mut m = PolicyModel::default();
        let (kv, res) = kv_res(
            Kind::HostEndpoint,
            json!({"apiVersion": "projectcalico.org/v3", "kind": "HostEndpoint",
                   "metadata": {"name": "n1-main"},
                   "spec": {"node": "n1", "expectedIPs": ["198.18.0.11"]}}),
        );
        assert!(m.set(&kv, Some(&res)));
        assert!(
            m.dataplane("n1").host_endpoints.is_empty(),
            "no interfaces known"
        );
        let ip: std::net::IpAddr = "198.18.0.11".parse().expect("ip");
        let all: Interfaces = [
            ("lo".to_string(), [ip].into()),
            ("calia1".to_string(), [ip].into()),
            ("eth0".to_string(), [ip].into()),
        ]
        .into();
        assert!(m.set_host_interfaces(&all));
        assert!(!m.set_host_interfaces(&all), "same again: no change");
        let d = m.dataplane("n1");
        let ifaces: Vec<&str> = d.host_endpoints.keys().map(String::as_str).collect();
        assert_eq!(ifaces, ["eth0"], "never lo or a workload interface");
        assert!(m.set_host_interfaces(&Interfaces::new()));
        assert!(m.dataplane("n1").host_endpoints.is_empty());
    }
}
