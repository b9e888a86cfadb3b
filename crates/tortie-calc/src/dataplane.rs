//! The node-local dataplane model: plain data that a renderer (nftables today) turns into
//! kernel state. Built from a [`World`] for one node by [`build`].
//!
//! Shape (calico-reference §6.4, §6.5):
//! - one chain per (policy, direction) and per (profile, direction), shared by every local
//!   endpoint that uses it;
//! - per local workload interface, the ordered tiers of policy chains for ingress (traffic to
//!   the pod) and egress (traffic from the pod), then its profile chains;
//! - per local host endpoint interface (or `*` for the all-interfaces one), the same for
//!   traffic to the host's own processes (ingress, the INPUT hook) and from them (egress,
//!   the OUTPUT hook), plus the node's failsafe ports (§3.3); and, per host endpoint
//!   interface with any, the tiers of its `doNotTrack` policies (both directions, before
//!   conntrack), its `preDNAT` policies (ingress, before DNAT) and its `applyOnForward`
//!   policies for forwarded traffic (both directions) in [`HostEndpointExtras`]. A host
//!   endpoint without `interfaceName` governs the node's interfaces that hold one of its
//!   `expectedIPs` ([`NodeConfig::host_interfaces`], which the agent reads from the kernel);
//!   its addresses count for rule selectors either way;
//! - IP sets, one per (selector, family) and per (selector, named port, family), with their
//!   members, referenced by the rules;
//! - the pools, for natOutgoing.
//!
//! Rules keep their policy and rule identity (`comment`) so counters and logs name them.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use tortie_selector::Selector;

use crate::eval::{Addresses, PolicyClass};
use crate::failsafe::FailsafePort;
use crate::graph::Membership;
use crate::model::{
    Action, Direction, Endpoint, EndpointId, EntityMatch, IcmpMatch, Policy, PortMatch, Rule,
    TierDefault,
};
use crate::world::World;

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    pub fn of_net(n: &IpNet) -> Family {
        Family::of(&n.addr())
    }

    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];
}

/// Members of an IP set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum IpSetMembers {
    /// Addresses and CIDRs (selector sets: endpoint IPs and network-set CIDRs).
    Nets(BTreeSet<IpNet>),
    /// (address, protocol, port) triples (named-port sets).
    NamedPorts(BTreeSet<(IpAddr, u8, u16)>),
}

/// One IP set. Its name is `s4-…`/`s6-…` (selector) or `n4-…`/`n6-…` (named port), derived
/// from Calico's unique IDs so that identical selectors share a set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IpSet {
    pub family: Family,
    pub members: IpSetMembers,
}

/// One side of a rendered rule. Every field is ANDed; within `nets`, `ports` and
/// `named_port_sets` the entries are ORed (and `ports` OR `named_port_sets`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RenderedSide {
    pub nets: Vec<IpNet>,
    pub not_nets: Vec<IpNet>,
    /// Name of the IP set the address must be in.
    pub set: Option<String>,
    /// Name of the IP set the address must not be in.
    pub not_set: Option<String>,
    /// Inclusive port ranges.
    pub ports: Vec<(u16, u16)>,
    /// Named-port sets ((addr, proto, port) must be in one of them).
    pub named_port_sets: Vec<String>,
    pub not_ports: Vec<(u16, u16)>,
    pub not_named_port_sets: Vec<String>,
}

/// A rule as the dataplane sees it, for one family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RenderedRule {
    pub action: Action,
    pub family: Family,
    pub protocol: Option<u8>,
    pub not_protocol: Option<u8>,
    pub icmp: Option<IcmpMatch>,
    pub not_icmp: Option<IcmpMatch>,
    pub src: RenderedSide,
    pub dst: RenderedSide,
    /// `knp/x/allow-web ingress[0]`.
    pub comment: String,
}

/// A chain of rendered rules for one policy (or profile) and direction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyChain {
    pub rules: Vec<RenderedRule>,
}

/// One tier as an endpoint sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TierChains {
    pub tier: String,
    /// Policy chain names in order.
    pub policies: Vec<String>,
    /// End of tier: drop unless something passed (`false` for `defaultAction: Pass`).
    pub end_drop: bool,
}

/// What applies to one local workload interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkloadChains {
    pub endpoint: EndpointId,
    /// Policy tiers for traffic to the pod.
    pub ingress: Vec<TierChains>,
    /// Policy tiers for traffic from the pod.
    pub egress: Vec<TierChains>,
    /// Profile chain names (per direction) in order; a missing profile is a deny-all chain.
    pub ingress_profiles: Vec<String>,
    pub egress_profiles: Vec<String>,
}

/// What applies to one local host endpoint: the same shape as a workload's, where ingress is
/// traffic arriving through the interface for the host's own processes and egress is traffic
/// the host's processes send through it. Without policies and profiles both end in a drop
/// (Calico: a host endpoint denies everything but the failsafe ports by default).
pub type HostEndpointChains = WorkloadChains;

/// A host endpoint's policy outside the filter INPUT/OUTPUT path, as tiers of policy chains
/// (the same `pi-`/`po-` chains). Tiers of untracked and pre-DNAT policy never end in a drop
/// (`end_drop` is false): what they do not decide goes on to the next stage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostEndpointExtras {
    /// `doNotTrack` policies, traffic arriving through the interface (raw prerouting).
    pub untracked_ingress: Vec<TierChains>,
    /// `doNotTrack` policies, the host's own traffic leaving through it (raw output).
    pub untracked_egress: Vec<TierChains>,
    /// `preDNAT` policies, traffic arriving through the interface (before DNAT).
    pub pre_dnat_ingress: Vec<TierChains>,
    /// `applyOnForward` policies, forwarded traffic arriving through the interface.
    pub forward_ingress: Vec<TierChains>,
    /// `applyOnForward` policies, forwarded traffic leaving through it.
    pub forward_egress: Vec<TierChains>,
}

impl HostEndpointExtras {
    pub fn is_empty(&self) -> bool {
        self.untracked_ingress.is_empty()
            && self.untracked_egress.is_empty()
            && self.pre_dnat_ingress.is_empty()
            && self.forward_ingress.is_empty()
            && self.forward_egress.is_empty()
    }
}

/// The key of the all-interfaces host endpoint in [`DataplaneModel::host_endpoints`].
pub const ALL_INTERFACES: &str = "*";

/// What happens to traffic from a pod to its own host after the pod's egress policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EndpointToHost {
    Drop,
    Accept,
    Return,
}

/// NAT for outgoing traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NatOutgoing {
    /// Pools with `natOutgoing: true` (sources to masquerade).
    pub masquerade_pools: BTreeSet<IpNet>,
    /// Every pool (destinations that are not masqueraded).
    pub all_pools: BTreeSet<IpNet>,
}

/// The whole desired dataplane of one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DataplaneModel {
    pub ip_sets: BTreeMap<String, IpSet>,
    /// Policy and profile chains by name (`pi-…`/`po-…` policies, `pri-…`/`pro-…` profiles).
    pub chains: BTreeMap<String, PolicyChain>,
    /// Local workloads by host interface name.
    pub workloads: BTreeMap<String, WorkloadChains>,
    /// Local host endpoints by interface name ([`ALL_INTERFACES`] for `interfaceName: *`).
    /// When an interface has several, the first by name wins.
    pub host_endpoints: BTreeMap<String, HostEndpointChains>,
    /// Untracked, pre-DNAT and forward policy of those host endpoints, only for the ones that
    /// have any (same keys).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub host_endpoint_extras: BTreeMap<String, HostEndpointExtras>,
    /// Always allowed to the host through a host endpoint (destination port; `net` = source).
    pub failsafe_inbound: Vec<FailsafePort>,
    /// Always allowed from the host through a host endpoint (destination port; `net` =
    /// destination).
    pub failsafe_outbound: Vec<FailsafePort>,
    pub endpoint_to_host: EndpointToHost,
    pub nat: NatOutgoing,
    /// Staged policy preview: per local workload interface whose policy the staged policies
    /// would change, its tiers and profiles under the staged view, naming preview chains
    /// (`s` + the chain name). Evaluated before the enforced chains; never decides a packet,
    /// only reports (Log) what the staged view would do.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub staged_workloads: BTreeMap<String, StagedWorkload>,
    /// The preview chains those name (policy and profile chains under the staged view).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub staged_chains: BTreeMap<String, PolicyChain>,
}

/// One direction of a workload's policy: tiers, then profiles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DirectionChains {
    pub tiers: Vec<TierChains>,
    pub profiles: Vec<String>,
}

impl WorkloadChains {
    /// One direction's tiers and profiles.
    pub fn direction(&self, dir: Direction) -> DirectionChains {
        let (tiers, profiles) = match dir {
            Direction::Ingress => (&self.ingress, &self.ingress_profiles),
            Direction::Egress => (&self.egress, &self.egress_profiles),
        };
        DirectionChains {
            tiers: tiers.clone(),
            profiles: profiles.clone(),
        }
    }
}

/// A workload's policy under the staged view, for each direction where it differs from the
/// enforced one (naming preview chains).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StagedWorkload {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<DirectionChains>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub egress: Option<DirectionChains>,
}

/// The preview chain of chain `name` (`pi-knp/x/a` → `spi-knp/x/a`).
pub fn staged_chain_name(name: &str) -> String {
    format!("s{name}")
}

/// Inputs that are not policy: felix configuration and pools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub node: String,
    pub endpoint_to_host: EndpointToHost,
    pub nat: NatOutgoing,
    /// `failsafeInboundHostPorts` ([`crate::failsafe::default_inbound`] when unset).
    pub failsafe_inbound: Vec<FailsafePort>,
    /// `failsafeOutboundHostPorts` ([`crate::failsafe::default_outbound`] when unset).
    pub failsafe_outbound: Vec<FailsafePort>,
    /// The node's own (non-workload) interfaces and their addresses: a host endpoint without
    /// `interfaceName` governs the interfaces that hold one of its `expectedIPs`.
    pub host_interfaces: BTreeMap<String, BTreeSet<IpAddr>>,
}

impl NodeConfig {
    /// Calico's defaults for `node`: endpoint-to-host Drop, no NAT, default failsafe ports.
    pub fn new(node: impl Into<String>) -> Self {
        NodeConfig {
            node: node.into(),
            endpoint_to_host: EndpointToHost::Drop,
            nat: NatOutgoing::default(),
            failsafe_inbound: crate::failsafe::default_inbound(),
            failsafe_outbound: crate::failsafe::default_outbound(),
            host_interfaces: BTreeMap::new(),
        }
    }
}

/// The interfaces a host endpoint governs on this node: its `interfaceName` (or `*`); without
/// one, every interface in `host_interfaces` holding one of its `expectedIPs` (as Felix).
fn host_endpoint_interfaces(
    ep: &Endpoint,
    host_interfaces: &BTreeMap<String, BTreeSet<IpAddr>>,
) -> Vec<String> {
    if !ep.interface.is_empty() {
        return vec![ep.interface.clone()];
    }
    host_interfaces
        .iter()
        .filter(|(_, addrs)| ep.nets.iter().any(|n| addrs.contains(&n.addr())))
        .map(|(iface, _)| iface.clone())
        .collect()
}

/// Chain name of a policy direction: `pi-<id>` / `po-<id>` (id `knp/x/name` with `/` → `.`
/// would be ambiguous, so the id is kept and the renderer quotes names).
pub fn policy_chain_name(p: &Policy, dir: Direction) -> String {
    let pre = match dir {
        Direction::Ingress => "pi",
        Direction::Egress => "po",
    };
    format!("{pre}-{}", p.id)
}

/// Chain name of a profile direction.
pub fn profile_chain_name(name: &str, dir: Direction) -> String {
    let pre = match dir {
        Direction::Ingress => "pri",
        Direction::Egress => "pro",
    };
    format!("{pre}-{name}")
}

fn fam_tag(f: Family) -> char {
    match f {
        Family::V4 => '4',
        Family::V6 => '6',
    }
}

/// Name of the selector set for a family: `s4-<id>`.
pub fn selector_set_name(sel: &Selector, f: Family) -> String {
    let id = sel.unique_id();
    format!("s{}-{}", fam_tag(f), id.trim_start_matches("s:"))
}

/// Name of a named-port set: `n4-<id>`.
pub fn named_port_set_name(sel: Option<&Selector>, port: &str, f: Family) -> String {
    let content = format!("{}:{port}", sel.map(Selector::canonical).unwrap_or("all()"));
    let id = tortie_selector::make_unique_id("n", &content);
    format!("n{}-{}", fam_tag(f), id.trim_start_matches("n:"))
}

/// Addresses of family `f` of everything `sel` selects, by evaluating it against every
/// contributor.
pub fn scan_members(world: &World, sel: &Selector, f: Family) -> BTreeSet<IpNet> {
    Addresses::new(world).selector_members(sel, f)
}

/// Named-port members, by evaluation.
pub fn scan_named_ports(
    world: &World,
    sel: Option<&Selector>,
    port: &str,
    f: Family,
) -> BTreeSet<(IpAddr, u8, u16)> {
    Addresses::new(world).named_port_members(sel, port, f)
}

struct Builder<'a> {
    contributors: &'a dyn Membership,
    ip_sets: BTreeMap<String, IpSet>,
}

impl Builder<'_> {
    /// The set of `sel`'s addresses of family `f`, computed once per build.
    fn selector_set(&mut self, sel: &Selector, f: Family) -> String {
        let name = selector_set_name(sel, f);
        if !self.ip_sets.contains_key(&name) {
            let members = self.contributors.selector_members(sel, f);
            let set = IpSet {
                family: f,
                members: IpSetMembers::Nets(members),
            };
            self.ip_sets.insert(name.clone(), set);
        }
        name
    }

    fn side(&mut self, m: &EntityMatch, f: Family) -> Option<RenderedSide> {
        let fam_nets = |nets: &[IpNet]| -> Vec<IpNet> {
            nets.iter()
                .filter(|n| Family::of_net(n) == f)
                .copied()
                .collect()
        };
        let nets = fam_nets(&m.nets);
        if !m.nets.is_empty() && nets.is_empty() {
            return None; // only the other family's CIDRs: never matches this family
        }
        let mut side = RenderedSide {
            nets,
            not_nets: fam_nets(&m.not_nets),
            ..RenderedSide::default()
        };
        if let Some(sel) = &m.selector {
            side.set = Some(self.selector_set(sel, f));
        }
        if let Some(sel) = &m.not_selector {
            side.not_set = Some(self.selector_set(sel, f));
        }
        let mut ports =
            |list: &[PortMatch], ranges: &mut Vec<(u16, u16)>, sets: &mut Vec<String>| {
                for p in list {
                    match p {
                        PortMatch::Range(a, b) => ranges.push((*a, *b)),
                        PortMatch::Named(n) => {
                            let name = named_port_set_name(m.selector.as_ref(), n, f);
                            if !self.ip_sets.contains_key(&name) {
                                let members =
                                    self.contributors
                                        .named_port_members(m.selector.as_ref(), n, f);
                                let set = IpSet {
                                    family: f,
                                    members: IpSetMembers::NamedPorts(members),
                                };
                                self.ip_sets.insert(name.clone(), set);
                            }
                            sets.push(name);
                        }
                    }
                }
            };
        ports(&m.ports, &mut side.ports, &mut side.named_port_sets);
        ports(
            &m.not_ports,
            &mut side.not_ports,
            &mut side.not_named_port_sets,
        );
        Some(side)
    }

    fn rules(&mut self, owner: &str, dir: Direction, rules: &[Rule]) -> Vec<RenderedRule> {
        let mut out = Vec::new();
        for r in rules {
            for f in Family::BOTH {
                if r.ip_version.is_some_and(|v| (v == 4) != (f == Family::V4)) {
                    continue;
                }
                let (Some(src), Some(dst)) =
                    (self.side(&r.source, f), self.side(&r.destination, f))
                else {
                    continue;
                };
                out.push(RenderedRule {
                    action: r.action,
                    family: f,
                    protocol: r.protocol,
                    not_protocol: r.not_protocol,
                    icmp: r.icmp,
                    not_icmp: r.not_icmp,
                    src,
                    dst,
                    comment: format!("{owner} {dir}[{}]", r.index),
                });
            }
        }
        out
    }
}

/// Builds the dataplane model of `cfg.node` from the world.
///
/// Only what the node needs is rendered: chains of policies and profiles that select a local
/// endpoint, and the IP sets their rules reference.
pub fn build(world: &World, cfg: &NodeConfig) -> DataplaneModel {
    build_with(world, cfg, &Addresses::new(world))
}

/// [`build`] with membership answered by `m` (the agent passes its incremental
/// [`crate::graph::CalcGraph`], so nothing is evaluated against every endpoint).
pub fn build_with(world: &World, cfg: &NodeConfig, m: &dyn Membership) -> DataplaneModel {
    let mut b = Builder {
        contributors: m,
        ip_sets: BTreeMap::new(),
    };
    let all: Vec<&Policy> = world.policies().collect();
    let by_id: BTreeMap<&crate::model::PolicyId, &Policy> =
        all.iter().map(|p| (&p.id, *p)).collect();
    let policies_for = |ep: &Endpoint| -> Vec<&Policy> {
        match m.candidate_policies(ep) {
            None => all.clone(),
            Some(ids) => ids.iter().filter_map(|id| by_id.get(id).copied()).collect(),
        }
    };
    let mut chains: BTreeMap<String, PolicyChain> = BTreeMap::new();
    let mut workloads = BTreeMap::new();
    let mut host_endpoints = BTreeMap::new();
    let mut host_endpoint_extras = BTreeMap::new();
    // Host endpoints come in name order, so an interface claimed by several (by name or by
    // address) gets the one with the smallest name, as Felix resolves them.
    for ep in world.endpoints() {
        if ep.node != cfg.node {
            continue;
        }
        match ep.id {
            EndpointId::Workload { .. } => {
                if ep.interface.is_empty() {
                    continue;
                }
                let c = endpoint_chains(world, &policies_for(ep), ep, &mut b, &mut chains);
                workloads.insert(ep.interface.clone(), c);
            }
            EndpointId::Host { .. } => {
                let ifaces: Vec<String> = host_endpoint_interfaces(ep, &cfg.host_interfaces)
                    .into_iter()
                    .filter(|i| !host_endpoints.contains_key(i))
                    .collect();
                if ifaces.is_empty() {
                    continue;
                }
                let policies = policies_for(ep);
                let c = endpoint_chains(world, &policies, ep, &mut b, &mut chains);
                let x = host_endpoint_extras_of(world, &policies, ep, &mut b, &mut chains);
                for iface in ifaces {
                    if !x.is_empty() {
                        host_endpoint_extras.insert(iface.clone(), x.clone());
                    }
                    host_endpoints.insert(iface, c.clone());
                }
            }
        }
    }
    let (staged_workloads, staged_chains) = staged_preview(world, cfg, &workloads, &chains, &mut b);
    DataplaneModel {
        ip_sets: b.ip_sets,
        chains,
        workloads,
        staged_workloads,
        staged_chains,
        host_endpoints,
        host_endpoint_extras,
        failsafe_inbound: cfg.failsafe_inbound.clone(),
        failsafe_outbound: cfg.failsafe_outbound.clone(),
        endpoint_to_host: cfg.endpoint_to_host,
        nat: cfg.nat.clone(),
    }
}

/// The staged preview of the local workloads (see [`DataplaneModel::staged_workloads`]):
/// each workload's chains under [`World::staged_view`], per direction where they differ from
/// the enforced ones (`workloads`, `chains`), renamed to preview chains.
fn staged_preview(
    world: &World,
    cfg: &NodeConfig,
    workloads: &BTreeMap<String, WorkloadChains>,
    chains: &BTreeMap<String, PolicyChain>,
    b: &mut Builder<'_>,
) -> (
    BTreeMap<String, StagedWorkload>,
    BTreeMap<String, PolicyChain>,
) {
    let mut out = BTreeMap::new();
    let mut preview = BTreeMap::new();
    if world.staged().next().is_none() {
        return (out, preview);
    }
    let view = world.staged_view();
    let view: Vec<&Policy> = view.iter().collect();
    let mut view_chains: BTreeMap<String, PolicyChain> = BTreeMap::new();
    for ep in world.endpoints() {
        if ep.node != cfg.node
            || ep.interface.is_empty()
            || !matches!(ep.id, EndpointId::Workload { .. })
        {
            continue;
        }
        let Some(enforced) = workloads.get(&ep.interface) else {
            continue;
        };
        let staged = endpoint_chains(world, &view, ep, b, &mut view_chains);
        let mut differs = |was: DirectionChains, now: DirectionChains| {
            let names: Vec<&String> = now
                .tiers
                .iter()
                .flat_map(|t| &t.policies)
                .chain(&now.profiles)
                .collect();
            if was == now && names.iter().all(|n| chains.get(*n) == view_chains.get(*n)) {
                return None;
            }
            for n in names {
                if let Some(c) = view_chains.get(n) {
                    preview.insert(staged_chain_name(n), c.clone());
                }
            }
            Some(renamed(now))
        };
        let mut side = |dir| differs(enforced.direction(dir), staged.direction(dir));
        let w = StagedWorkload {
            ingress: side(Direction::Ingress),
            egress: side(Direction::Egress),
        };
        if w != StagedWorkload::default() {
            out.insert(ep.interface.clone(), w);
        }
    }
    (out, preview)
}

/// `d` naming preview chains.
fn renamed(mut d: DirectionChains) -> DirectionChains {
    for t in &mut d.tiers {
        for p in &mut t.policies {
            *p = staged_chain_name(p);
        }
    }
    for p in &mut d.profiles {
        *p = staged_chain_name(p);
    }
    d
}

/// The tiers of `class`'s policies for an endpoint and direction, adding their chains.
fn class_tiers(
    world: &World,
    policies: &[&Policy],
    labels: &crate::world::Labels,
    dir: Direction,
    class: PolicyClass,
    b: &mut Builder<'_>,
    chains: &mut BTreeMap<String, PolicyChain>,
) -> Vec<TierChains> {
    crate::eval::applicable_class(world, policies.iter().copied(), labels, dir, class)
        .into_iter()
        .map(|(tier, ps)| {
            let names = ps
                .iter()
                .map(|p| {
                    let name = policy_chain_name(p, dir);
                    if !chains.contains_key(&name) {
                        let rules =
                            b.rules(&p.id.to_string(), dir, p.rules(dir).unwrap_or_default());
                        chains.insert(name.clone(), PolicyChain { rules });
                    }
                    name
                })
                .collect();
            TierChains {
                tier: tier.name.clone(),
                policies: names,
                end_drop: class.end_of_tier_drop() && tier.default_action == TierDefault::Deny,
            }
        })
        .collect()
}

/// A host endpoint's untracked, pre-DNAT and forward tiers.
fn host_endpoint_extras_of(
    world: &World,
    policies: &[&Policy],
    ep: &Endpoint,
    b: &mut Builder<'_>,
    chains: &mut BTreeMap<String, PolicyChain>,
) -> HostEndpointExtras {
    let labels = world.effective_labels(ep);
    let mut tiers = |dir, class| class_tiers(world, policies, &labels, dir, class, b, chains);
    HostEndpointExtras {
        untracked_ingress: tiers(Direction::Ingress, PolicyClass::Untracked),
        untracked_egress: tiers(Direction::Egress, PolicyClass::Untracked),
        pre_dnat_ingress: tiers(Direction::Ingress, PolicyClass::PreDnat),
        forward_ingress: tiers(Direction::Ingress, PolicyClass::Forward),
        forward_egress: tiers(Direction::Egress, PolicyClass::Forward),
    }
}

/// The tiers and profiles of one endpoint, adding the policy and profile chains it uses.
fn endpoint_chains(
    world: &World,
    policies: &[&Policy],
    ep: &Endpoint,
    b: &mut Builder<'_>,
    chains: &mut BTreeMap<String, PolicyChain>,
) -> WorkloadChains {
    let labels = world.effective_labels(ep);
    let mut tiers_of = |dir: Direction, chains: &mut BTreeMap<String, PolicyChain>| {
        class_tiers(
            world,
            policies,
            &labels,
            dir,
            PolicyClass::Normal,
            b,
            chains,
        )
    };
    let ingress = tiers_of(Direction::Ingress, chains);
    let egress = tiers_of(Direction::Egress, chains);
    let mut profiles_of = |dir: Direction, chains: &mut BTreeMap<String, PolicyChain>| {
        ep.profiles
            .iter()
            .map(|name| {
                let chain = profile_chain_name(name, dir);
                if !chains.contains_key(&chain) {
                    let rules = match world.profile(name) {
                        Some(p) => b.rules(&format!("profile/{name}"), dir, p.rules(dir)),
                        // Fail closed: a missing profile denies everything.
                        None => Family::BOTH
                            .into_iter()
                            .map(|f| RenderedRule {
                                action: Action::Deny,
                                family: f,
                                protocol: None,
                                not_protocol: None,
                                icmp: None,
                                not_icmp: None,
                                src: RenderedSide::default(),
                                dst: RenderedSide::default(),
                                comment: format!("profile/{name} missing: deny"),
                            })
                            .collect(),
                    };
                    chains.insert(chain.clone(), PolicyChain { rules });
                }
                chain
            })
            .collect::<Vec<_>>()
    };
    let ingress_profiles = profiles_of(Direction::Ingress, chains);
    let egress_profiles = profiles_of(Direction::Egress, chains);
    WorkloadChains {
        endpoint: ep.id.clone(),
        ingress,
        egress,
        ingress_profiles,
        egress_profiles,
    }
}
