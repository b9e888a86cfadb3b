//! The incremental calculation the agent runs: a [`World`] plus an incremental label index
//! (`tortie_selector::index::LabelIndex`) over every address contributor (endpoints and network
//! sets, with their effective labels) and every selector that policy uses (policies' endpoint
//! selectors and their rules' selectors).
//!
//! A change touches only what it affects: a pod's labels re-index that pod (the index finds
//! the selectors whose matches change); a namespace re-indexes its members; a policy
//! re-registers its own selectors. Building a node's dataplane model then reads matches from
//! the index instead of evaluating every selector against every endpoint.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use tortie_api::Kind;
use tortie_api::resource::Resource;
use tortie_selector::Selector;
use tortie_selector::index::LabelIndex;

use crate::dataplane::Family;
use crate::model::{Direction, Endpoint, EndpointId, NamedPort, PolicyId, Rule};
use crate::world::{ResourceKey, World};

/// Something whose addresses a selector can match.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ContribId {
    Endpoint(EndpointId),
    NetworkSet(Option<String>, String),
}

/// What the index matches on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SelKey {
    /// The endpoint selector of an enforced policy, by the policy's resource.
    Policy(ResourceKey),
    /// A rule selector, by canonical form (shared by every rule using it).
    Rule(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Contrib {
    namespace: Option<String>,
    nets: Vec<IpNet>,
    ports: Vec<NamedPort>,
}

/// Answers "which addresses does this selector match" and "which policies select this
/// endpoint" for [`crate::dataplane::build_with`].
pub trait Membership {
    /// Addresses (of family `f`) of everything `sel` selects.
    fn selector_members(&self, sel: &Selector, f: Family) -> BTreeSet<IpNet>;
    /// `(addr, protocol, port)` of every named port `port` on what `sel` (or everything)
    /// selects.
    fn named_port_members(
        &self,
        sel: Option<&Selector>,
        port: &str,
        f: Family,
    ) -> BTreeSet<(IpAddr, u8, u16)>;
    /// Ids of the enforced policies whose endpoint selector selects `ep`; `None` = check
    /// every policy.
    fn candidate_policies(&self, ep: &Endpoint) -> Option<BTreeSet<PolicyId>>;
}

/// The incremental graph.
#[derive(Debug, Default)]
pub struct CalcGraph {
    world: World,
    contribs: BTreeMap<ContribId, Contrib>,
    by_namespace: BTreeMap<String, BTreeSet<ContribId>>,
    index: LabelIndex<SelKey, ContribId>,
    /// Rule selectors registered per owning resource, and how many owners use each.
    owned: BTreeMap<ResourceKey, BTreeSet<String>>,
    refs: BTreeMap<String, usize>,
}

fn rule_selectors(rules: &[Rule], out: &mut BTreeMap<String, Selector>) {
    for r in rules {
        for side in [&r.source, &r.destination] {
            for s in [&side.selector, &side.not_selector].into_iter().flatten() {
                out.insert(s.canonical().to_string(), s.clone());
            }
        }
    }
}

impl CalcGraph {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn world(&self) -> &World {
        &self.world
    }

    /// Adds or replaces a resource.
    pub fn upsert(&mut self, r: &Resource) {
        let key = ResourceKey::of(r);
        let before = self.world.wep_endpoint_id(&key);
        self.world.upsert(r);
        self.refresh(&key, before);
    }

    /// Removes a resource.
    pub fn remove(&mut self, key: &ResourceKey) {
        let before = self.world.wep_endpoint_id(key);
        self.world.remove(key);
        self.refresh(key, before);
    }

    /// Re-indexes what `key` affects; `wep_before` is the endpoint id a WorkloadEndpoint
    /// had before the change (its pod name may have changed with it).
    fn refresh(&mut self, key: &ResourceKey, wep_before: Option<EndpointId>) {
        match key.kind {
            Kind::NetworkPolicy | Kind::GlobalNetworkPolicy | Kind::K8sNetworkPolicy => {
                self.refresh_policy(key)
            }
            Kind::Profile => {
                self.refresh_owned(key, |w| {
                    let mut sels = BTreeMap::new();
                    if let Some(p) = w.profile(&key.name) {
                        rule_selectors(&p.ingress, &mut sels);
                        rule_selectors(&p.egress, &mut sels);
                    }
                    sels
                });
                // Profile labels reach every endpoint naming the profile.
                let all: Vec<ContribId> = self.all_contrib_ids();
                for id in all {
                    self.refresh_contrib(&id);
                }
            }
            Kind::Pod => {
                let id = EndpointId::Workload {
                    namespace: key.namespace.clone().unwrap_or_default(),
                    name: key.name.clone(),
                };
                self.refresh_contrib(&ContribId::Endpoint(id));
            }
            Kind::WorkloadEndpoint => {
                // The endpoint's id is (namespace, pod); the pod name is in the WEP's spec.
                let now = self.world.wep_endpoint_id(key);
                for id in [wep_before, now]
                    .into_iter()
                    .flatten()
                    .collect::<BTreeSet<_>>()
                {
                    self.refresh_contrib(&ContribId::Endpoint(id));
                }
            }
            Kind::HostEndpoint => {
                self.refresh_contrib(&ContribId::Endpoint(EndpointId::Host {
                    name: key.name.clone(),
                }));
            }
            Kind::NetworkSet | Kind::GlobalNetworkSet => {
                self.refresh_contrib(&ContribId::NetworkSet(
                    key.namespace.clone(),
                    key.name.clone(),
                ));
            }
            // Namespace and service-account labels reach the namespace's members.
            Kind::Namespace | Kind::ServiceAccount => {
                let ns = match key.kind {
                    Kind::Namespace => key.name.clone(),
                    _ => key.namespace.clone().unwrap_or_default(),
                };
                let ids: Vec<ContribId> = self
                    .by_namespace
                    .get(&ns)
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect();
                for id in ids {
                    self.refresh_contrib(&id);
                }
            }
            _ => {}
        }
    }

    fn all_contrib_ids(&self) -> Vec<ContribId> {
        let mut ids: BTreeSet<ContribId> = self.contribs.keys().cloned().collect();
        ids.extend(
            self.world
                .endpoints()
                .into_iter()
                .map(|e| ContribId::Endpoint(e.id.clone())),
        );
        ids.extend(
            self.world
                .network_sets()
                .map(|s| ContribId::NetworkSet(s.namespace.clone(), s.name.clone())),
        );
        ids.into_iter().collect()
    }

    fn refresh_policy(&mut self, key: &ResourceKey) {
        let policy = self.world.policy(key).cloned();
        match &policy {
            Some(p) => {
                self.index
                    .update_selector(SelKey::Policy(key.clone()), p.selector.clone());
            }
            None => {
                self.index.delete_selector(&SelKey::Policy(key.clone()));
            }
        }
        self.refresh_owned(key, |_| {
            let mut sels = BTreeMap::new();
            if let Some(p) = &policy {
                for dir in Direction::BOTH {
                    rule_selectors(p.rules(dir).unwrap_or_default(), &mut sels);
                }
            }
            sels
        });
    }

    /// Replaces the rule selectors `key` owns, keeping per-selector reference counts.
    fn refresh_owned(
        &mut self,
        key: &ResourceKey,
        sels: impl FnOnce(&World) -> BTreeMap<String, Selector>,
    ) {
        let new = sels(&self.world);
        let old = self.owned.remove(key).unwrap_or_default();
        for (canon, sel) in &new {
            if old.contains(canon) {
                continue;
            }
            let n = self.refs.entry(canon.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                self.index
                    .update_selector(SelKey::Rule(canon.clone()), sel.clone());
            }
        }
        for canon in old.iter().filter(|c| !new.contains_key(*c)) {
            if let Some(n) = self.refs.get_mut(canon) {
                *n -= 1;
                if *n == 0 {
                    self.refs.remove(canon);
                    self.index.delete_selector(&SelKey::Rule(canon.clone()));
                }
            }
        }
        if !new.is_empty() {
            self.owned.insert(key.clone(), new.into_keys().collect());
        }
    }

    /// What the world says about a contributor now: (labels, contrib) or gone.
    fn current(&self, id: &ContribId) -> Option<(BTreeMap<String, String>, Contrib)> {
        match id {
            ContribId::Endpoint(eid) => {
                let e = self.world.endpoint(eid)?;
                let namespace = match eid {
                    EndpointId::Workload { namespace, .. } => Some(namespace.clone()),
                    EndpointId::Host { .. } => None,
                };
                Some((
                    self.world.effective_labels(e),
                    Contrib {
                        namespace,
                        nets: e.nets.clone(),
                        ports: e.ports.clone(),
                    },
                ))
            }
            ContribId::NetworkSet(ns, name) => {
                let s = self
                    .world
                    .network_sets()
                    .find(|s| &s.namespace == ns && &s.name == name)?;
                Some((
                    self.world.network_set_labels(s),
                    Contrib {
                        namespace: ns.clone(),
                        nets: s.nets.clone(),
                        ports: Vec::new(),
                    },
                ))
            }
        }
    }

    fn refresh_contrib(&mut self, id: &ContribId) {
        if let Some(old) = self.contribs.remove(id)
            && let Some(ns) = &old.namespace
            && let Some(set) = self.by_namespace.get_mut(ns)
        {
            set.remove(id);
        }
        match self.current(id) {
            Some((labels, c)) => {
                if let Some(ns) = &c.namespace {
                    self.by_namespace
                        .entry(ns.clone())
                        .or_default()
                        .insert(id.clone());
                }
                self.contribs.insert(id.clone(), c);
                self.index.update_labels(id.clone(), labels);
            }
            None => {
                self.index.delete_labels(id);
            }
        }
    }
}

impl Membership for CalcGraph {
    fn selector_members(&self, sel: &Selector, f: Family) -> BTreeSet<IpNet> {
        let key = SelKey::Rule(sel.canonical().to_string());
        if self.index.selector(&key).is_some() {
            self.index
                .matches(&key)
                .filter_map(|id| self.contribs.get(id))
                .flat_map(|c| c.nets.iter().filter(|n| Family::of_net(n) == f).copied())
                .collect()
        } else {
            // Not registered (a selector built outside a policy): evaluate directly.
            crate::dataplane::scan_members(&self.world, sel, f)
        }
    }

    fn named_port_members(
        &self,
        sel: Option<&Selector>,
        port: &str,
        f: Family,
    ) -> BTreeSet<(IpAddr, u8, u16)> {
        let mut out = BTreeSet::new();
        let mut add =
            |c: &Contrib| crate::eval::add_named_port(&mut out, &c.nets, &c.ports, port, f);
        match sel {
            Some(s) => {
                let key = SelKey::Rule(s.canonical().to_string());
                if self.index.selector(&key).is_some() {
                    for c in self
                        .index
                        .matches(&key)
                        .filter_map(|id| self.contribs.get(id))
                    {
                        add(c);
                    }
                } else {
                    return crate::dataplane::scan_named_ports(&self.world, Some(s), port, f);
                }
            }
            None => self.contribs.values().for_each(add),
        }
        out
    }

    fn candidate_policies(&self, ep: &Endpoint) -> Option<BTreeSet<PolicyId>> {
        Some(
            self.index
                .selectors_matching(&ContribId::Endpoint(ep.id.clone()))
                .filter_map(|k| match k {
                    SelKey::Policy(key) => self.world.policy(key).map(|p| p.id.clone()),
                    SelKey::Rule(_) => None,
                })
                .collect(),
        )
    }
}
