//! The per-packet decision (calico-reference §3.2), for one endpoint and one direction, with
//! the deciding tier, policy and rule: what `policy explain` prints.
//!
//! The nftables renderer compiles the same [`Policy`] values into chains, so this evaluator is
//! the specification the kernel is tested against (`tortie lab matrix` vs `policy matrix`).
//!
//! Host endpoints (§3.3) are decided for the host's own traffic: ingress = to the host's
//! processes, egress = from them. The node's failsafe ports ([`World::failsafe`]) allow
//! first; then `doNotTrack` policies, then (ingress) `preDNAT` policies, each deciding only
//! on an explicit allow or deny; then tiers and profiles as for pods, so a host endpoint
//! with neither denies. Traffic forwarded through a host endpoint is decided by
//! [`evaluate_forward`]. Which
//! interface a packet uses is not known here, so every host endpoint owning the address is
//! decided as if the packet used its interface; host endpoints without `interfaceName` are
//! decided too, although the kernel dataplane does not enforce them.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use tortie_selector::Selector;

use crate::dataplane::Family;
use crate::graph::Membership;
use crate::model::{
    Action, Direction, Endpoint, EndpointId, EntityMatch, NamedPort, Policy, PolicyId, PortMatch,
    Rule, TierDefault, proto,
};
use crate::world::{Labels, World};

/// The packet being decided (the first packet of a flow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: u8,
    pub src_port: u16,
    pub dst_port: u16,
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
}

/// Allowed or denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allow,
    Deny,
}

/// What decided.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "by", rename_all = "camelCase")]
pub enum Decider {
    /// A policy rule's Allow or Deny.
    Rule {
        tier: String,
        policy: PolicyId,
        rule: usize,
    },
    /// No policy in the tier allowed, denied or passed: the tier's default action (Deny).
    EndOfTier { tier: String },
    /// A profile's rule (after every applicable tier passed, or with no applicable tiers).
    Profile { profile: String, rule: usize },
    /// Profiles ran out without a decision.
    NoProfileMatched,
    /// The endpoint names a profile that does not exist: fail closed.
    MissingProfile { profile: String },
    /// The address is not a Calico endpoint, so no policy of this direction applies.
    NotAnEndpoint,
    /// Traffic from a pod to itself never leaves the pod.
    SameEndpoint,
    /// A failsafe port of the host endpoint's node: allowed before any policy (inbound:
    /// the destination port of traffic to the host; outbound: of traffic from it).
    Failsafe { protocol: String, port: u16 },
    /// Forwarded through a host endpoint that no `applyOnForward` policy selects in this
    /// direction: allowed (Calico).
    NoForwardPolicy,
    /// The host's own ICMPv6 neighbour/router discovery or MLD through a host endpoint:
    /// allowed before any policy, so that policy cannot cut IPv6 off the interface.
    NeighbourDiscovery { icmp_type: u8 },
}

/// ICMPv6 types a host endpoint always lets through: MLD (130–132, 143) and router and
/// neighbour discovery (133–136).
pub const HOST_ND_ICMPV6_TYPES: [u8; 8] = [130, 131, 132, 133, 134, 135, 136, 143];

/// A Log rule that matched on the way.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogHit {
    pub tier: String,
    pub policy: PolicyId,
    pub rule: usize,
}

/// A Pass on the way.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PassHit {
    pub tier: String,
    /// `None` when the tier's default action passed.
    pub policy: Option<PolicyId>,
    pub rule: Option<usize>,
}

/// One direction's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub outcome: Outcome,
    #[serde(flatten)]
    pub decider: Decider,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub passes: Vec<PassHit>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogHit>,
}

impl Verdict {
    fn new(outcome: Outcome, decider: Decider) -> Self {
        Verdict {
            outcome,
            decider,
            passes: Vec::new(),
            logs: Vec::new(),
        }
    }

    pub fn allowed(&self) -> bool {
        self.outcome == Outcome::Allow
    }
}

/// Everything the rule matcher needs to know about addresses, computed once.
#[derive(Debug)]
pub struct Addresses {
    contributors: Vec<(Labels, Vec<IpNet>, Vec<NamedPort>)>,
}

impl Addresses {
    pub fn new(world: &World) -> Self {
        Addresses {
            contributors: world
                .contributors()
                .into_iter()
                .map(|(l, n, p)| (l, n.to_vec(), p.to_vec()))
                .collect(),
        }
    }

    fn selected(&self, sel: &Selector, ip: IpAddr) -> bool {
        self.contributors
            .iter()
            .any(|(l, nets, _)| nets.iter().any(|n| n.contains(&ip)) && sel.evaluate(l))
    }

    /// Addresses of family `f` of everything `sel` selects.
    pub fn selector_members(&self, sel: &Selector, f: Family) -> BTreeSet<IpNet> {
        self.contributors
            .iter()
            .filter(|(l, _, _)| sel.evaluate(l))
            .flat_map(|(_, nets, _)| nets.iter().filter(|n| Family::of_net(n) == f).copied())
            .collect()
    }

    /// `(addr, protocol, port)` of named port `port` on what `sel` (or everything) selects.
    pub fn named_port_members(
        &self,
        sel: Option<&Selector>,
        port: &str,
        f: Family,
    ) -> BTreeSet<(IpAddr, u8, u16)> {
        let mut out = BTreeSet::new();
        for (l, nets, ports) in &self.contributors {
            if sel.is_none_or(|s| s.evaluate(l)) {
                add_named_port(&mut out, nets, ports, port, f);
            }
        }
        out
    }

    fn named_port(
        &self,
        sel: Option<&Selector>,
        name: &str,
        ip: IpAddr,
        proto: u8,
        port: u16,
    ) -> bool {
        self.contributors.iter().any(|(l, nets, ports)| {
            nets.iter().any(|n| n.contains(&ip))
                && ports
                    .iter()
                    .any(|p| p.name == name && p.protocol == proto && p.port == port)
                && sel.is_none_or(|s| s.evaluate(l))
        })
    }
}

/// Adds `(addr, protocol, port)` of the named port `port` of one address owner.
pub(crate) fn add_named_port(
    out: &mut BTreeSet<(IpAddr, u8, u16)>,
    nets: &[IpNet],
    ports: &[NamedPort],
    port: &str,
    f: Family,
) {
    for p in ports.iter().filter(|p| p.name == port) {
        for n in nets.iter().filter(|n| Family::of_net(n) == f) {
            out.insert((n.addr(), p.protocol, p.port));
        }
    }
}

/// Membership by evaluation: the non-incremental [`Membership`], for one-off builds.
impl Membership for Addresses {
    fn selector_members(&self, sel: &Selector, f: Family) -> BTreeSet<IpNet> {
        Addresses::selector_members(self, sel, f)
    }

    fn named_port_members(
        &self,
        sel: Option<&Selector>,
        port: &str,
        f: Family,
    ) -> BTreeSet<(IpAddr, u8, u16)> {
        Addresses::named_port_members(self, sel, port, f)
    }

    fn candidate_policies(&self, _ep: &crate::model::Endpoint) -> Option<BTreeSet<PolicyId>> {
        None
    }
}

fn port_matches(
    addrs: &Addresses,
    list: &[PortMatch],
    sel: Option<&Selector>,
    ip: IpAddr,
    protocol: u8,
    port: u16,
) -> bool {
    list.iter().any(|pm| match pm {
        PortMatch::Range(lo, hi) => (*lo..=*hi).contains(&port),
        PortMatch::Named(n) => addrs.named_port(sel, n, ip, protocol, port),
    })
}

fn side_matches(addrs: &Addresses, m: &EntityMatch, ip: IpAddr, protocol: u8, port: u16) -> bool {
    if !m.nets.is_empty() && !m.nets.iter().any(|n| n.contains(&ip)) {
        return false;
    }
    if m.not_nets.iter().any(|n| n.contains(&ip)) {
        return false;
    }
    if let Some(sel) = &m.selector
        && !addrs.selected(sel, ip)
    {
        return false;
    }
    if let Some(sel) = &m.not_selector
        && addrs.selected(sel, ip)
    {
        return false;
    }
    let ports_ok = m.ports.is_empty()
        || (proto::has_ports(protocol)
            && port_matches(addrs, &m.ports, m.selector.as_ref(), ip, protocol, port));
    if !ports_ok {
        return false;
    }
    if !m.not_ports.is_empty()
        && (!proto::has_ports(protocol)
            || port_matches(addrs, &m.not_ports, m.selector.as_ref(), ip, protocol, port))
    {
        return false;
    }
    true
}

/// Whether a rule matches a packet.
pub fn rule_matches(addrs: &Addresses, r: &Rule, pkt: &Packet) -> bool {
    let v = if pkt.src.is_ipv4() { 4 } else { 6 };
    if r.ip_version.is_some_and(|iv| iv != v) {
        return false;
    }
    // A rule naming CIDRs of the other family does not apply to this family at all.
    let fam_ok =
        |nets: &[IpNet]| nets.is_empty() || nets.iter().any(|n| (n.addr().is_ipv4()) == (v == 4));
    if !fam_ok(&r.source.nets) || !fam_ok(&r.destination.nets) {
        return false;
    }
    if r.protocol.is_some_and(|p| p != pkt.protocol) {
        return false;
    }
    if r.not_protocol.is_some_and(|p| p == pkt.protocol) {
        return false;
    }
    let icmp_hit = |m: &crate::model::IcmpMatch| {
        pkt.icmp_type == Some(m.type_) && m.code.is_none_or(|c| pkt.icmp_code == Some(c))
    };
    if let Some(m) = &r.icmp
        && !icmp_hit(m)
    {
        return false;
    }
    if let Some(m) = &r.not_icmp
        && icmp_hit(m)
    {
        return false;
    }
    side_matches(addrs, &r.source, pkt.src, pkt.protocol, pkt.src_port)
        && side_matches(addrs, &r.destination, pkt.dst, pkt.protocol, pkt.dst_port)
}

/// Which policies a decision runs (calico-reference §3.3): the filter path of workloads and
/// of the host's own traffic, or one of a host endpoint's extra classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum PolicyClass {
    /// Every policy that is neither `preDNAT` nor `doNotTrack` (the filter INPUT/OUTPUT path
    /// of host endpoints, `applyOnForward` or not, and all workload policy).
    Normal,
    /// Forwarded traffic through a host endpoint: `applyOnForward` policies that are neither
    /// `preDNAT` nor `doNotTrack`.
    Forward,
    /// `preDNAT` policies (host endpoints, ingress, before DNAT).
    PreDnat,
    /// `doNotTrack` policies (host endpoints, before conntrack).
    Untracked,
}

impl PolicyClass {
    /// Whether `p` belongs to this class.
    pub fn includes(self, p: &Policy) -> bool {
        match self {
            PolicyClass::Normal => !p.pre_dnat && !p.do_not_track,
            PolicyClass::Forward => p.apply_on_forward && !p.pre_dnat && !p.do_not_track,
            PolicyClass::PreDnat => p.pre_dnat,
            PolicyClass::Untracked => p.do_not_track,
        }
    }

    /// Whether a tier that neither allowed, denied nor passed drops (only the filter paths;
    /// untracked and pre-DNAT policy leaves undecided packets to the later stages).
    pub fn end_of_tier_drop(self) -> bool {
        matches!(self, PolicyClass::Normal | PolicyClass::Forward)
    }
}

/// The ordered tiers with their ordered policies of `class` that apply to an endpoint in a
/// direction.
pub fn applicable_class<'p>(
    world: &World,
    policies: impl IntoIterator<Item = &'p Policy>,
    labels: &Labels,
    dir: Direction,
    class: PolicyClass,
) -> Vec<(crate::model::Tier, Vec<&'p Policy>)> {
    let mut by_tier: std::collections::BTreeMap<String, Vec<&Policy>> = Default::default();
    for p in policies {
        if p.rules(dir).is_none() || !class.includes(p) {
            continue;
        }
        if p.selector.evaluate(labels) {
            by_tier.entry(p.tier.clone()).or_default().push(p);
        }
    }
    let mut out: Vec<(crate::model::Tier, Vec<&Policy>)> = by_tier
        .into_iter()
        .filter_map(|(t, mut ps)| {
            // A policy naming a tier that does not exist is not rendered (Calico rejects it).
            let tier = world.tier(&t)?.into_owned();
            ps.sort_by(|a, b| a.cmp_order(b));
            Some((tier, ps))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp_order(&b.0));
    out
}

/// The Pass and Log rules a packet met on its way to a verdict.
#[derive(Default)]
struct Hits {
    passes: Vec<PassHit>,
    logs: Vec<LogHit>,
}

impl Hits {
    fn into_verdict(self, mut v: Verdict) -> Verdict {
        v.passes = self.passes;
        v.logs = self.logs;
        v
    }
}

/// The policy stages a packet meets at one endpoint in one direction.
struct Stages<'a> {
    world: &'a World,
    addrs: &'a Addresses,
    policies: &'a [Policy],
    labels: Labels,
    dir: Direction,
    pkt: &'a Packet,
}

impl<'a> Stages<'a> {
    /// The policy stages of endpoint `ep` in direction `dir`.
    fn of(
        world: &'a World,
        addrs: &'a Addresses,
        policies: &'a [Policy],
        ep: &Endpoint,
        dir: Direction,
        pkt: &'a Packet,
    ) -> Stages<'a> {
        Stages {
            world,
            addrs,
            policies,
            labels: world.effective_labels(ep),
            dir,
            pkt,
        }
    }

    /// Runs the tiers of each class in turn; the first verdict decides.
    fn run(&self, classes: &[PolicyClass], hits: &mut Hits) -> Option<Verdict> {
        classes
            .iter()
            .find_map(|&class| self.run_tiers(class, hits))
    }

    /// Runs `class`'s tiers. `Some` when a rule allowed or denied, or a tier ended in a
    /// drop; `None` when every tier passed or (untracked and pre-DNAT) left the packet
    /// undecided.
    fn run_tiers(&self, class: PolicyClass, hits: &mut Hits) -> Option<Verdict> {
        let Stages {
            world,
            addrs,
            policies,
            dir,
            pkt,
            ..
        } = *self;
        let (passes, logs) = (&mut hits.passes, &mut hits.logs);
        let labels = &self.labels;
        for (tier, ps) in applicable_class(world, policies, labels, dir, class) {
            let mut passed = false;
            'policies: for p in ps {
                for r in p.rules(dir).unwrap_or_default() {
                    if !rule_matches(addrs, r, pkt) {
                        continue;
                    }
                    match r.action {
                        Action::Log => logs.push(LogHit {
                            tier: tier.name.clone(),
                            policy: p.id.clone(),
                            rule: r.index,
                        }),
                        Action::Allow | Action::Deny => {
                            let outcome = if r.action == Action::Allow {
                                Outcome::Allow
                            } else {
                                Outcome::Deny
                            };
                            return Some(Verdict::new(
                                outcome,
                                Decider::Rule {
                                    tier: tier.name.clone(),
                                    policy: p.id.clone(),
                                    rule: r.index,
                                },
                            ));
                        }
                        Action::Pass => {
                            passes.push(PassHit {
                                tier: tier.name.clone(),
                                policy: Some(p.id.clone()),
                                rule: Some(r.index),
                            });
                            passed = true;
                            break 'policies;
                        }
                    }
                }
            }
            if passed {
                continue;
            }
            match tier.default_action {
                TierDefault::Deny if class.end_of_tier_drop() => {
                    return Some(Verdict::new(
                        Outcome::Deny,
                        Decider::EndOfTier { tier: tier.name },
                    ));
                }
                TierDefault::Deny => {}
                TierDefault::Pass => passes.push(PassHit {
                    tier: tier.name.clone(),
                    policy: None,
                    rule: None,
                }),
            }
        }
        None
    }
}

/// The failsafe port a host endpoint's packet hits, if any.
fn failsafe_hit(world: &World, node: &str, dir: Direction, pkt: &Packet) -> Option<Verdict> {
    let fs = world.failsafe(node);
    let (list, peer) = match dir {
        Direction::Ingress => (&fs.inbound, pkt.src),
        Direction::Egress => (&fs.outbound, pkt.dst),
    };
    list.iter()
        .any(|f| f.matches(pkt.protocol, pkt.dst_port, peer))
        .then(|| {
            Verdict::new(
                Outcome::Allow,
                Decider::Failsafe {
                    protocol: proto::name(pkt.protocol),
                    port: pkt.dst_port,
                },
            )
        })
}

/// Decides a packet *forwarded* through the host endpoint `hep_id`: arriving through its
/// interface (`Ingress`) or leaving through it (`Egress`). Calico's order: on the way in,
/// `doNotTrack` then `preDNAT` policy (both skipped for a failsafe port, which they accept
/// before policy; an allow there skips the forward policy, a deny drops, no verdict goes
/// on), then the `applyOnForward` policies, which allow when none applies in the direction
/// and otherwise end each tier in a drop (no profiles, no failsafe). On the way out only the
/// `applyOnForward` policies apply. Workload policy of a pod at either end is decided
/// separately ([`evaluate`]).
pub fn evaluate_forward(
    world: &World,
    addrs: &Addresses,
    policies: &[Policy],
    hep_id: &EndpointId,
    dir: Direction,
    pkt: &Packet,
) -> Verdict {
    let Some(ep) = world
        .endpoint(hep_id)
        .filter(|ep| matches!(ep.id, EndpointId::Host { .. }))
    else {
        return Verdict::new(Outcome::Allow, Decider::NotAnEndpoint);
    };
    let stages = Stages::of(world, addrs, policies, ep, dir, pkt);
    use PolicyClass::{Forward, PreDnat, Untracked};
    let classes: &[PolicyClass] =
        if dir == Direction::Ingress && failsafe_hit(world, &ep.node, dir, pkt).is_none() {
            &[Untracked, PreDnat, Forward]
        } else {
            &[Forward]
        };
    let mut hits = Hits::default();
    let v = stages
        .run(classes, &mut hits)
        .unwrap_or_else(|| Verdict::new(Outcome::Allow, Decider::NoForwardPolicy));
    hits.into_verdict(v)
}

/// Evaluates one direction for the endpoint `ep_id` under `policies` (enforced ones, or a
/// staged view).
pub fn evaluate(
    world: &World,
    addrs: &Addresses,
    policies: &[Policy],
    ep_id: &EndpointId,
    dir: Direction,
    pkt: &Packet,
) -> Verdict {
    let Some(ep) = world.endpoint(ep_id) else {
        return Verdict::new(Outcome::Allow, Decider::NotAnEndpoint);
    };
    let host = matches!(ep.id, EndpointId::Host { .. });
    // Failsafe ports are checked before any policy (Calico's `cali-failsafe-in/out`, in the
    // raw, mangle and filter paths alike).
    if host && let Some(v) = failsafe_hit(world, &ep.node, dir, pkt) {
        return v;
    }
    if host
        && pkt.protocol == proto::ICMPV6
        && let Some(t) = pkt.icmp_type.filter(|t| HOST_ND_ICMPV6_TYPES.contains(t))
    {
        return Verdict::new(Outcome::Allow, Decider::NeighbourDiscovery { icmp_type: t });
    }
    // Then Calico's order: doNotTrack (raw), preDNAT (ingress only), then the filter path.
    // The first two decide only on an explicit allow or deny.
    use PolicyClass::{Normal, PreDnat, Untracked};
    let classes: &[PolicyClass] = match (host, dir) {
        (true, Direction::Ingress) => &[Untracked, PreDnat, Normal],
        (true, Direction::Egress) => &[Untracked, Normal],
        (false, _) => &[Normal],
    };
    let stages = Stages::of(world, addrs, policies, ep, dir, pkt);
    let mut hits = Hits::default();
    if let Some(v) = stages.run(classes, &mut hits) {
        return hits.into_verdict(v);
    }
    for name in &ep.profiles {
        let Some(profile) = world.profile(name) else {
            let v = Verdict::new(
                Outcome::Deny,
                Decider::MissingProfile {
                    profile: name.clone(),
                },
            );
            return hits.into_verdict(v);
        };
        for r in profile.rules(dir) {
            if !rule_matches(addrs, r, pkt) {
                continue;
            }
            let outcome = match r.action {
                Action::Allow => Outcome::Allow,
                Action::Deny => Outcome::Deny,
                // Log continues; Pass in a profile ends the profile (Calico treats it as
                // "next profile").
                Action::Log => continue,
                Action::Pass => break,
            };
            let v = Verdict::new(
                outcome,
                Decider::Profile {
                    profile: name.clone(),
                    rule: r.index,
                },
            );
            return hits.into_verdict(v);
        }
    }
    hits.into_verdict(Verdict::new(Outcome::Deny, Decider::NoProfileMatched))
}

/// A flow's full story: egress at the source endpoint, ingress at the destination endpoint,
/// enforced and (when staged policies exist) previewed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub packet: Packet,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<EndpointId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<EndpointId>,
    pub outcome: Outcome,
    pub egress: Verdict,
    pub ingress: Verdict,
    /// Host endpoint policy of the traffic forwarded out of the source's node (a pod's
    /// traffic leaving its node), when that node has a host endpoint to forward it through.
    #[serde(rename = "forwardEgress", skip_serializing_if = "Option::is_none")]
    pub forward_egress: Option<ForwardVerdict>,
    /// The same for the traffic forwarded into the destination pod's node.
    #[serde(rename = "forwardIngress", skip_serializing_if = "Option::is_none")]
    pub forward_ingress: Option<ForwardVerdict>,
    /// What the staged policies would make of it, when there are any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub staged: Option<Box<StagedExplanation>>,
}

/// The staged preview of a flow.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StagedExplanation {
    pub outcome: Outcome,
    pub egress: Verdict,
    pub ingress: Verdict,
    #[serde(rename = "forwardEgress", skip_serializing_if = "Option::is_none")]
    pub forward_egress: Option<ForwardVerdict>,
    #[serde(rename = "forwardIngress", skip_serializing_if = "Option::is_none")]
    pub forward_ingress: Option<ForwardVerdict>,
}

/// A verdict of host endpoint policy on forwarded traffic ([`evaluate_forward`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForwardVerdict {
    /// The host endpoint the traffic is forwarded through.
    #[serde(rename = "hostEndpoint")]
    pub host_endpoint: EndpointId,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Decides a flow between two addresses (either may be a Calico endpoint or not).
pub fn explain(world: &World, addrs: &Addresses, pkt: &Packet) -> Explanation {
    let from = world.endpoint_by_ip(pkt.src).map(|e| e.id.clone());
    let to = world.endpoint_by_ip(pkt.dst).map(|e| e.id.clone());
    let enforced: Vec<Policy> = world.policies().cloned().collect();
    let (egress, ingress) = both(world, addrs, &enforced, from.as_ref(), to.as_ref(), pkt);
    let path = ForwardPath::of(world, from.as_ref(), to.as_ref());
    let (forward_egress, forward_ingress) = path.verdicts(world, addrs, &enforced, pkt);
    let outcome = combine(&[&egress, &ingress], [&forward_egress, &forward_ingress]);
    let staged = (world.staged().next().is_some()).then(|| {
        let view = world.staged_view();
        let (egress, ingress) = both(world, addrs, &view, from.as_ref(), to.as_ref(), pkt);
        let (forward_egress, forward_ingress) = path.verdicts(world, addrs, &view, pkt);
        Box::new(StagedExplanation {
            outcome: combine(&[&egress, &ingress], [&forward_egress, &forward_ingress]),
            egress,
            ingress,
            forward_egress,
            forward_ingress,
        })
    });
    Explanation {
        packet: *pkt,
        from,
        to,
        outcome,
        egress,
        ingress,
        forward_egress,
        forward_ingress,
        staged,
    }
}

/// The host endpoints a flow is forwarded through: out of the source pod's node when the
/// destination is elsewhere, into the destination pod's node when the source is elsewhere.
#[derive(Debug, Default)]
struct ForwardPath {
    out_of: Option<EndpointId>,
    into: Option<EndpointId>,
}

impl ForwardPath {
    fn of(world: &World, from: Option<&EndpointId>, to: Option<&EndpointId>) -> ForwardPath {
        let node_of =
            |id: Option<&EndpointId>| id.and_then(|id| world.endpoint(id)).map(|e| e.node.clone());
        let pod_node = |id: Option<&EndpointId>| {
            id.filter(|id| matches!(id, EndpointId::Workload { .. }))
                .and_then(|_| node_of(id))
        };
        let (src_node, dst_node) = (node_of(from), node_of(to));
        let through = |pod: Option<String>, other: &Option<String>| {
            pod.filter(|n| other.as_ref() != Some(n))
                .and_then(|n| forwarding_host_endpoint(world, &n))
        };
        ForwardPath {
            out_of: through(pod_node(from), &dst_node),
            into: through(pod_node(to), &src_node),
        }
    }

    fn verdicts(
        &self,
        world: &World,
        addrs: &Addresses,
        policies: &[Policy],
        pkt: &Packet,
    ) -> (Option<ForwardVerdict>, Option<ForwardVerdict>) {
        let v = |hep: &Option<EndpointId>, dir| {
            hep.as_ref().map(|id| ForwardVerdict {
                host_endpoint: id.clone(),
                verdict: evaluate_forward(world, addrs, policies, id, dir, pkt),
            })
        };
        (
            v(&self.out_of, Direction::Egress),
            v(&self.into, Direction::Ingress),
        )
    }
}

/// The host endpoint traffic between `node`'s pods and other nodes is forwarded through, as
/// far as the model can tell without the node's routes: its only host endpoint for a named
/// interface (or given by `expectedIPs`), else its all-interfaces (`*`) one. A node with
/// several is ambiguous and gets none (the kernel picks by interface).
pub fn forwarding_host_endpoint(world: &World, node: &str) -> Option<EndpointId> {
    let heps: Vec<&Endpoint> = world.host_endpoints().filter(|e| e.node == node).collect();
    let specific: Vec<&&Endpoint> = heps.iter().filter(|e| e.interface != "*").collect();
    match specific.as_slice() {
        [one] => Some(one.id.clone()),
        [] => heps
            .iter()
            .find(|e| e.interface == "*")
            .map(|e| e.id.clone()),
        _ => None,
    }
}

fn both(
    world: &World,
    addrs: &Addresses,
    policies: &[Policy],
    from: Option<&EndpointId>,
    to: Option<&EndpointId>,
    pkt: &Packet,
) -> (Verdict, Verdict) {
    if from.is_some() && from == to {
        let v = Verdict::new(Outcome::Allow, Decider::SameEndpoint);
        return (v.clone(), v);
    }
    let side = |id: Option<&EndpointId>, dir| match id {
        Some(id) => evaluate(world, addrs, policies, id, dir, pkt),
        None => Verdict::new(Outcome::Allow, Decider::NotAnEndpoint),
    };
    (side(from, Direction::Egress), side(to, Direction::Ingress))
}

fn combine(sides: &[&Verdict], forwarded: [&Option<ForwardVerdict>; 2]) -> Outcome {
    let forwarded_ok = forwarded
        .iter()
        .all(|f| f.as_ref().is_none_or(|f| f.verdict.allowed()));
    if sides.iter().all(|v| v.allowed()) && forwarded_ok {
        Outcome::Allow
    } else {
        Outcome::Deny
    }
}
