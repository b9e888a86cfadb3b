//! The policy side of the agent's model: every resource policy depends on, compiled into a
//! [`World`], plus the pools (for natOutgoing) and the FelixConfiguration knobs the policy
//! dataplane reads.
//!
//! Pure: updates in, a [`DataplaneModel`] out. A resource that does not decode or compile is
//! absent (it was rejected on write; a stale copy must not linger).

use std::collections::BTreeMap;

use ipnet::IpNet;
use tortie_api::Kind;
use tortie_api::resource::Resource;
use tortie_calc::World;
use tortie_calc::dataplane::{self, DataplaneModel, EndpointToHost, NatOutgoing, NodeConfig};
use tortie_calc::world::ResourceKey;
use tortie_store::KeyValue;

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
#[derive(Debug, Clone, Default)]
pub struct PolicyModel {
    world: World,
    /// Storage key → the resource it holds (to remove it on delete).
    keys: BTreeMap<String, ResourceKey>,
    /// Pool key → (CIDR, natOutgoing).
    pools: BTreeMap<String, (IpNet, bool)>,
    /// FelixConfiguration name → defaultEndpointToHostAction.
    felix: BTreeMap<String, Option<String>>,
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
                let v = f.spec().default_endpoint_to_host_action.clone();
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
            self.world.remove(&old);
        }
        self.world.upsert(res);
        if let Some(e) = self.world.errors().get(&rk) {
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
            return self.felix.remove(name).is_some();
        }
        match self.keys.remove(key) {
            Some(rk) => {
                self.world.remove(&rk);
                true
            }
            None => false,
        }
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    /// The node's `defaultEndpointToHostAction`: `node.<name>` config first, then `default`;
    /// Calico's default is Drop.
    fn endpoint_to_host(&self, node: &str) -> EndpointToHost {
        let v = self
            .felix
            .get(&format!("node.{node}"))
            .cloned()
            .flatten()
            .or_else(|| self.felix.get("default").cloned().flatten());
        match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("accept") => EndpointToHost::Accept,
            Some("return") => EndpointToHost::Return,
            _ => EndpointToHost::Drop,
        }
    }

    /// The desired dataplane of `node`.
    pub fn dataplane(&self, node: &str) -> DataplaneModel {
        let nat = NatOutgoing {
            masquerade_pools: self
                .pools
                .values()
                .filter(|(_, nat)| *nat)
                .map(|(c, _)| *c)
                .collect(),
            all_pools: self.pools.values().map(|(c, _)| *c).collect(),
        };
        dataplane::build(
            &self.world,
            &NodeConfig {
                node: node.to_string(),
                endpoint_to_host: self.endpoint_to_host(node),
                nat,
            },
        )
    }
}
