//! Everything policy depends on, compiled and indexed: tiers, policies, profiles, namespaces,
//! service accounts, endpoints (pods, WorkloadEndpoints, HostEndpoints) and network sets.
//!
//! Resources are upserted and removed one at a time; the compiled view is kept in sync, so a
//! change costs only its own compilation. Profiles `kns.<ns>` and `ksa.<ns>.<sa>` are
//! synthesised from Namespaces and ServiceAccounts, as Calico's Kubernetes integration does,
//! and exist even when the Namespace record does not (Kubernetes always has the namespace of
//! a pod); `projectcalico-default-allow` (allow everything both ways, what auto host endpoints
//! use) exists as in Calico; any other profile an endpoint names but the store lacks is a
//! fail-closed deny-all.
//!
//! FelixConfigurations are kept only for what policy decisions read: the failsafe ports
//! ([`World::failsafe`]).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;
use tortie_api::Kind;
use tortie_api::policy::StagedAction;
use tortie_api::resource::Resource;

use crate::convert::{
    self, ConvertError, LABEL_NAME, LABEL_NAMESPACE, LABEL_ORCHESTRATOR, LABEL_SERVICE_ACCOUNT,
    NAMESPACE_PREFIX, SERVICE_ACCOUNT_PREFIX,
};
use crate::failsafe::{self, Failsafe, FailsafeConfig};
use crate::model::{
    Endpoint, EndpointId, NamedPort, NetworkSet, Policy, PolicyId, PolicyKind, Profile, Tier,
    TierDefault,
};

pub type Labels = BTreeMap<String, String>;

/// Calico's built-in profile that allows everything in both directions (auto host endpoints
/// carry it so that creating them changes nothing).
pub const DEFAULT_ALLOW_PROFILE: &str = "projectcalico-default-allow";

/// A staged policy and what it would do when enforced.
#[derive(Debug, Clone, PartialEq)]
pub struct Staged {
    pub policy: Policy,
    /// `stagedAction: Delete`: previews removing the enforced policy of the same name.
    pub delete: bool,
}

/// The identity of a stored resource.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: String,
}

impl ResourceKey {
    pub fn of(r: &Resource) -> Self {
        ResourceKey {
            kind: r.kind(),
            namespace: r.namespace().map(str::to_string),
            name: r.name().to_string(),
        }
    }
}

impl std::fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{:?} {ns}/{}", self.kind, self.name),
            None => write!(f, "{:?} {}", self.kind, self.name),
        }
    }
}

/// The compiled cluster.
#[derive(Debug, Clone, Default)]
pub struct World {
    tiers: BTreeMap<String, Tier>,
    policies: BTreeMap<ResourceKey, Policy>,
    staged: BTreeMap<ResourceKey, Staged>,
    profiles: BTreeMap<String, Profile>,
    namespaces: BTreeMap<String, Labels>,
    service_accounts: BTreeMap<(String, String), Labels>,
    /// Pods from Pod records (offline input, or before the CNI wrote the WEP).
    pods: BTreeMap<(String, String), Endpoint>,
    /// WorkloadEndpoints, keyed by the resource key; they win over Pod records.
    weps: BTreeMap<ResourceKey, Endpoint>,
    /// Endpoint id → the WorkloadEndpoint resources that have it (lookups by id).
    wep_ids: BTreeMap<EndpointId, std::collections::BTreeSet<ResourceKey>>,
    heps: BTreeMap<String, Endpoint>,
    network_sets: BTreeMap<ResourceKey, NetworkSet>,
    /// FelixConfiguration name → its failsafe settings.
    felix: BTreeMap<String, FailsafeConfig>,
    /// Resources that could not be compiled, with why.
    errors: BTreeMap<ResourceKey, ConvertError>,
}

impl World {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a world from resources; the ones that do not compile are kept in `errors`.
    pub fn from_resources<'a>(resources: impl IntoIterator<Item = &'a Resource>) -> World {
        let mut w = World::new();
        for r in resources {
            w.upsert(r);
        }
        w
    }

    /// Adds or replaces one resource. Kinds that policy does not read are ignored.
    pub fn upsert(&mut self, r: &Resource) {
        let key = ResourceKey::of(r);
        self.remove(&key);
        if let Err(e) = self.insert(&key, r) {
            self.errors.insert(key, e);
        }
    }

    /// Removes a resource.
    pub fn remove(&mut self, key: &ResourceKey) {
        self.errors.remove(key);
        match key.kind {
            Kind::Tier => {
                self.tiers.remove(&key.name);
            }
            Kind::Profile => {
                self.profiles.remove(&key.name);
            }
            Kind::Namespace => {
                self.namespaces.remove(&key.name);
            }
            Kind::ServiceAccount => {
                if let Some(ns) = &key.namespace {
                    self.service_accounts
                        .remove(&(ns.clone(), key.name.clone()));
                }
            }
            Kind::Pod => {
                if let Some(ns) = &key.namespace {
                    self.pods.remove(&(ns.clone(), key.name.clone()));
                }
            }
            Kind::WorkloadEndpoint => {
                if let Some(e) = self.weps.remove(key)
                    && let Some(keys) = self.wep_ids.get_mut(&e.id)
                {
                    keys.remove(key);
                    if keys.is_empty() {
                        self.wep_ids.remove(&e.id);
                    }
                }
            }
            Kind::HostEndpoint => {
                self.heps.remove(&key.name);
            }
            Kind::NetworkSet | Kind::GlobalNetworkSet => {
                self.network_sets.remove(key);
            }
            Kind::FelixConfiguration => {
                self.felix.remove(&key.name);
            }
            _ => {
                self.policies.remove(key);
                self.staged.remove(key);
            }
        }
    }

    fn insert(&mut self, key: &ResourceKey, r: &Resource) -> Result<(), ConvertError> {
        let ns = key.namespace.as_deref().unwrap_or("default");
        let name = key.name.as_str();
        match r {
            Resource::Tier(o) => {
                let t = &o.body.spec;
                self.tiers.insert(
                    name.to_string(),
                    Tier {
                        name: name.to_string(),
                        order: t.order.unwrap_or(crate::model::DEFAULT_TIER_ORDER),
                        default_action: match t.default_action {
                            Some(tortie_api::rule::Action::Pass) => TierDefault::Pass,
                            _ => TierDefault::Deny,
                        },
                    },
                );
            }
            Resource::NetworkPolicy(o) => {
                let p = convert::network_policy(PolicyKind::NetworkPolicy, ns, name, &o.body.spec)?;
                self.policies.insert(key.clone(), p);
            }
            Resource::GlobalNetworkPolicy(o) => {
                let p = convert::global_network_policy(
                    PolicyKind::GlobalNetworkPolicy,
                    name,
                    &o.body.spec,
                )?;
                self.policies.insert(key.clone(), p);
            }
            Resource::K8sNetworkPolicy(o) => {
                let p = convert::k8s_network_policy(
                    PolicyKind::KubernetesNetworkPolicy,
                    ns,
                    name,
                    &o.body.spec,
                )?;
                self.policies.insert(key.clone(), p);
            }
            Resource::StagedNetworkPolicy(o) => {
                let spec = &o.body.spec.0;
                let p = convert::network_policy(PolicyKind::StagedNetworkPolicy, ns, name, spec)?;
                self.insert_staged(key, p, spec.staged_action);
            }
            Resource::StagedGlobalNetworkPolicy(o) => {
                let spec = &o.body.spec.0;
                let p = convert::global_network_policy(
                    PolicyKind::StagedGlobalNetworkPolicy,
                    name,
                    spec,
                )?;
                self.insert_staged(key, p, spec.staged_action);
            }
            Resource::StagedKubernetesNetworkPolicy(o) => {
                let spec = &o.body.spec.0;
                let p = convert::k8s_network_policy(
                    PolicyKind::StagedKubernetesNetworkPolicy,
                    ns,
                    name,
                    spec,
                )?;
                self.insert_staged(key, p, spec.staged_action);
            }
            Resource::Profile(o) => {
                let p = convert::profile(name, &o.body.spec)?;
                self.profiles.insert(name.to_string(), p);
            }
            Resource::Namespace(o) => {
                self.namespaces
                    .insert(name.to_string(), o.metadata.labels.clone());
            }
            Resource::ServiceAccount(o) => {
                self.service_accounts.insert(
                    (ns.to_string(), name.to_string()),
                    o.metadata.labels.clone(),
                );
            }
            Resource::Pod(o) => {
                if let Some(ep) = pod_endpoint(ns, name, &o.metadata.labels, &o.body) {
                    self.pods.insert((ns.to_string(), name.to_string()), ep);
                }
            }
            Resource::WorkloadEndpoint(o) => {
                let s = &o.body.spec;
                let pod = if s.pod.is_empty() {
                    name.to_string()
                } else {
                    s.pod.clone()
                };
                let nets = convert::nets("spec.ipNetworks", &s.ip_networks)?;
                let ports = named_ports(&s.ports);
                let id = EndpointId::Workload {
                    namespace: ns.to_string(),
                    name: pod,
                };
                self.wep_ids
                    .entry(id.clone())
                    .or_default()
                    .insert(key.clone());
                self.weps.insert(
                    key.clone(),
                    Endpoint {
                        id,
                        node: s.node.clone(),
                        labels: o.metadata.labels.clone(),
                        profiles: s.profiles.clone(),
                        nets,
                        ports,
                        interface: s.interface_name.clone(),
                    },
                );
            }
            Resource::HostEndpoint(o) => {
                let s = &o.body.spec;
                let nets = convert::nets("spec.expectedIPs", &s.expected_ips)?;
                let ports = named_ports(&s.ports);
                self.heps.insert(
                    name.to_string(),
                    Endpoint {
                        id: EndpointId::Host {
                            name: name.to_string(),
                        },
                        node: s.node.clone(),
                        labels: o.metadata.labels.clone(),
                        profiles: s.profiles.clone(),
                        nets,
                        ports,
                        interface: s.interface_name.clone(),
                    },
                );
            }
            Resource::NetworkSet(o) => {
                let nets = convert::nets("spec.nets", &o.body.spec.nets)?;
                let mut labels = o.metadata.labels.clone();
                labels.insert(LABEL_NAMESPACE.into(), ns.to_string());
                self.network_sets.insert(
                    key.clone(),
                    NetworkSet {
                        namespace: Some(ns.to_string()),
                        name: name.to_string(),
                        labels,
                        nets,
                    },
                );
            }
            Resource::FelixConfiguration(o) => {
                self.felix
                    .insert(name.to_string(), FailsafeConfig::of(o.spec()));
            }
            Resource::GlobalNetworkSet(o) => {
                let nets = convert::nets("spec.nets", &o.body.spec.nets)?;
                self.network_sets.insert(
                    key.clone(),
                    NetworkSet {
                        namespace: None,
                        name: name.to_string(),
                        labels: o.metadata.labels.clone(),
                        nets,
                    },
                );
            }
            _ => {}
        }
        Ok(())
    }

    fn insert_staged(&mut self, key: &ResourceKey, policy: Policy, action: Option<StagedAction>) {
        match action {
            Some(StagedAction::Ignore) | Some(StagedAction::Learn) => {}
            a => {
                self.staged.insert(
                    key.clone(),
                    Staged {
                        policy,
                        delete: a == Some(StagedAction::Delete),
                    },
                );
            }
        }
    }

    /// Resources that failed to compile.
    pub fn errors(&self) -> &BTreeMap<ResourceKey, ConvertError> {
        &self.errors
    }

    /// A tier by name; `default` always exists.
    pub fn tier(&self, name: &str) -> Option<Cow<'_, Tier>> {
        match self.tiers.get(name) {
            Some(t) => Some(Cow::Borrowed(t)),
            None if name == "default" => Some(Cow::Owned(Tier::default_tier())),
            None => None,
        }
    }

    /// The enforced policy stored as `key`, if it compiled.
    pub fn policy(&self, key: &ResourceKey) -> Option<&Policy> {
        self.policies.get(key)
    }

    /// Enforced policies.
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values()
    }

    /// Staged policies.
    pub fn staged(&self) -> impl Iterator<Item = &Staged> {
        self.staged.values()
    }

    /// The policies a staged preview enforces: every enforced policy, with each staged policy
    /// replacing (or, for `Delete`, removing) its enforced namesake.
    pub fn staged_view(&self) -> Vec<Policy> {
        let enforced_kind = |k: PolicyKind| match k {
            PolicyKind::StagedNetworkPolicy => PolicyKind::NetworkPolicy,
            PolicyKind::StagedGlobalNetworkPolicy => PolicyKind::GlobalNetworkPolicy,
            PolicyKind::StagedKubernetesNetworkPolicy => PolicyKind::KubernetesNetworkPolicy,
            k => k,
        };
        let mut out: BTreeMap<PolicyId, Policy> = self
            .policies
            .values()
            .map(|p| (p.id.clone(), p.clone()))
            .collect();
        for s in self.staged.values() {
            let id = PolicyId {
                kind: enforced_kind(s.policy.id.kind),
                ..s.policy.id.clone()
            };
            if s.delete {
                out.remove(&id);
            } else {
                out.insert(id, s.policy.clone());
            }
        }
        out.into_values().collect()
    }

    /// Every endpoint: WorkloadEndpoints, pods without one, and host endpoints.
    pub fn endpoints(&self) -> Vec<&Endpoint> {
        let mut out: Vec<&Endpoint> = self.weps.values().collect();
        out.extend(
            self.pods
                .values()
                .filter(|p| !self.wep_ids.contains_key(&p.id)),
        );
        out.extend(self.heps.values());
        out
    }

    /// Host endpoints only, by name.
    pub fn host_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.heps.values()
    }

    /// Workload endpoints only (deduplicated as in [`World::endpoints`]), sorted by id.
    pub fn workloads(&self) -> Vec<&Endpoint> {
        let mut v: Vec<&Endpoint> = self
            .endpoints()
            .into_iter()
            .filter(|e| matches!(e.id, EndpointId::Workload { .. }))
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v.dedup_by(|a, b| a.id == b.id);
        v
    }

    pub fn network_sets(&self) -> impl Iterator<Item = &NetworkSet> {
        self.network_sets.values()
    }

    /// The endpoint with this id.
    pub fn endpoint(&self, id: &EndpointId) -> Option<&Endpoint> {
        match id {
            EndpointId::Workload { namespace, name } => self
                .wep_ids
                .get(id)
                .and_then(|keys| keys.iter().next())
                .and_then(|k| self.weps.get(k))
                .or_else(|| self.pods.get(&(namespace.clone(), name.clone()))),
            EndpointId::Host { name } => self.heps.get(name),
        }
    }

    /// The endpoint id a stored WorkloadEndpoint resource has, if it is present.
    pub fn wep_endpoint_id(&self, key: &ResourceKey) -> Option<EndpointId> {
        self.weps.get(key).map(|e| e.id.clone())
    }

    /// The endpoint owning an address, if any.
    pub fn endpoint_by_ip(&self, ip: IpAddr) -> Option<&Endpoint> {
        self.endpoints()
            .into_iter()
            .find(|e| e.nets.iter().any(|n| n.contains(&ip)))
    }

    /// A profile: stored, or synthesised for `kns.`/`ksa.` names and
    /// [`DEFAULT_ALLOW_PROFILE`]. `None` = missing.
    pub fn profile(&self, name: &str) -> Option<Cow<'_, Profile>> {
        if let Some(p) = self.profiles.get(name) {
            return Some(Cow::Borrowed(p));
        }
        if name == DEFAULT_ALLOW_PROFILE {
            return Some(Cow::Owned(Profile::allow_all(name, Labels::new())));
        }
        if let Some(ns) = name.strip_prefix("kns.") {
            let mut labels: Labels = self
                .namespaces
                .get(ns)
                .into_iter()
                .flatten()
                .map(|(k, v)| (format!("{NAMESPACE_PREFIX}{k}"), v.clone()))
                .collect();
            labels.insert(format!("{NAMESPACE_PREFIX}{LABEL_NAME}"), ns.to_string());
            return Some(Cow::Owned(Profile::allow_all(name, labels)));
        }
        if let Some(rest) = name.strip_prefix("ksa.")
            && let Some((ns, sa)) = rest.split_once('.')
        {
            let mut labels: Labels = self
                .service_accounts
                .get(&(ns.to_string(), sa.to_string()))
                .into_iter()
                .flatten()
                .map(|(k, v)| (format!("{SERVICE_ACCOUNT_PREFIX}{k}"), v.clone()))
                .collect();
            labels.insert(
                format!("{SERVICE_ACCOUNT_PREFIX}{LABEL_NAME}"),
                sa.to_string(),
            );
            return Some(Cow::Owned(Profile::no_rules(name, labels)));
        }
        None
    }

    /// An endpoint's labels with its profiles' `labelsToApply` underneath (own labels win,
    /// earlier profiles win over later ones).
    pub fn effective_labels(&self, ep: &Endpoint) -> Labels {
        let mut out = Labels::new();
        for name in ep.profiles.iter().rev() {
            if let Some(p) = self.profile(name) {
                out.extend(p.labels_to_apply.clone());
            }
        }
        out.extend(ep.labels.clone());
        out
    }

    /// A network set's labels (namespaced ones inherit their namespace's profile labels).
    pub fn network_set_labels(&self, ns: &NetworkSet) -> Labels {
        let mut out = Labels::new();
        if let Some(n) = &ns.namespace
            && let Some(p) = self.profile(&format!("kns.{n}"))
        {
            out.extend(p.labels_to_apply.clone());
        }
        out.extend(ns.labels.clone());
        out
    }

    /// Every address contributor a rule selector can match: (labels, nets, named ports).
    pub fn contributors(&self) -> Vec<(Labels, &[IpNet], &[NamedPort])> {
        let mut out: Vec<(Labels, &[IpNet], &[NamedPort])> = self
            .endpoints()
            .into_iter()
            .map(|e| {
                (
                    self.effective_labels(e),
                    e.nets.as_slice(),
                    e.ports.as_slice(),
                )
            })
            .collect();
        out.extend(
            self.network_sets
                .values()
                .map(|s| (self.network_set_labels(s), s.nets.as_slice(), &[][..])),
        );
        out
    }

    /// The failsafe ports of `node`: FelixConfiguration `node.<node>`, then `default`, per
    /// parameter, then Calico's defaults.
    pub fn failsafe(&self, node: &str) -> Failsafe {
        failsafe::resolve(
            self.felix.get(&format!("node.{node}")),
            self.felix.get("default"),
        )
    }
}

/// An endpoint's declared named ports (ports with an unknown protocol are left out).
fn named_ports(ports: &[tortie_api::endpoint::EndpointPort]) -> Vec<NamedPort> {
    ports
        .iter()
        .filter_map(|p| {
            Some(NamedPort {
                name: p.name.clone(),
                protocol: p.protocol.number()?,
                port: p.port,
            })
        })
        .collect()
}

/// A Pod record as Kubernetes' Calico integration sees it: labels plus the
/// `projectcalico.org/*` ones, profiles `kns.<ns>` and `ksa.<ns>.<sa>`, addresses from the
/// status (or Calico's CNI annotations), named ports from every container.
fn pod_endpoint(
    ns: &str,
    name: &str,
    labels: &Labels,
    body: &tortie_api::k8s::PodBody,
) -> Option<Endpoint> {
    if body.spec.host_network {
        return None;
    }
    let sa = body
        .spec
        .service_account_name
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    let mut l = labels.clone();
    l.insert(LABEL_NAMESPACE.into(), ns.to_string());
    l.insert(LABEL_ORCHESTRATOR.into(), "k8s".into());
    if sa.len() < 63 {
        l.insert(LABEL_SERVICE_ACCOUNT.into(), sa.clone());
    }
    let mut nets = Vec::new();
    if let Some(status) = &body.status {
        let mut ips: Vec<&str> = Vec::new();
        if let Some(Value::Array(list)) = status.get("podIPs") {
            ips.extend(list.iter().filter_map(|v| v.get("ip")?.as_str()));
        }
        if ips.is_empty()
            && let Some(Value::String(ip)) = status.get("podIP")
        {
            ips.push(ip);
        }
        nets.extend(ips.into_iter().filter_map(convert::parse_net));
    }
    let ports = body
        .spec
        .containers
        .iter()
        .chain(&body.spec.init_containers)
        .flat_map(|c| &c.ports)
        .filter_map(|p| {
            Some(NamedPort {
                name: p.name.clone()?,
                protocol: convert::port_protocol(p.protocol.as_deref())?,
                port: u16::try_from(p.container_port).ok()?,
            })
        })
        .collect();
    Some(Endpoint {
        id: EndpointId::Workload {
            namespace: ns.to_string(),
            name: name.to_string(),
        },
        node: body.spec.node_name.clone().unwrap_or_default(),
        labels: l,
        profiles: vec![format!("kns.{ns}"), format!("ksa.{ns}.{sa}")],
        nets,
        ports,
        interface: String::new(),
    })
}

#[cfg(test)]
#[path = "world_tests.rs"]
mod tests;
