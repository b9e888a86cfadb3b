//! The compiled policy model: what every policy kind becomes once defaults, namespace scoping
//! and the Kubernetes → Calico translation are done (calico-reference §2.5, §2.6).
//!
//! Selectors here are final: a rule's `selector` already carries its namespace scope and
//! service-account clause, a policy's `selector` its namespace and service-account scope.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;
use serde::Serialize;
use tortie_selector::Selector;

/// Ingress or egress, from the point of view of the endpoint a policy applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of a policy, as Felix's chain IDs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum PolicyKind {
    NetworkPolicy,
    GlobalNetworkPolicy,
    KubernetesNetworkPolicy,
    StagedNetworkPolicy,
    StagedGlobalNetworkPolicy,
    StagedKubernetesNetworkPolicy,
}

impl PolicyKind {
    /// Felix's short kind (`np`, `gnp`, `knp`, `snp`, `sgnp`, `sknp`).
    pub fn short(self) -> &'static str {
        match self {
            PolicyKind::NetworkPolicy => "np",
            PolicyKind::GlobalNetworkPolicy => "gnp",
            PolicyKind::KubernetesNetworkPolicy => "knp",
            PolicyKind::StagedNetworkPolicy => "snp",
            PolicyKind::StagedGlobalNetworkPolicy => "sgnp",
            PolicyKind::StagedKubernetesNetworkPolicy => "sknp",
        }
    }

    /// The resource kind a user writes.
    pub fn kind_name(self) -> &'static str {
        match self {
            PolicyKind::NetworkPolicy => "NetworkPolicy",
            PolicyKind::GlobalNetworkPolicy => "GlobalNetworkPolicy",
            PolicyKind::KubernetesNetworkPolicy => "KubernetesNetworkPolicy",
            PolicyKind::StagedNetworkPolicy => "StagedNetworkPolicy",
            PolicyKind::StagedGlobalNetworkPolicy => "StagedGlobalNetworkPolicy",
            PolicyKind::StagedKubernetesNetworkPolicy => "StagedKubernetesNetworkPolicy",
        }
    }

    /// Staged kinds are evaluated for preview only, never enforced.
    pub fn staged(self) -> bool {
        matches!(
            self,
            PolicyKind::StagedNetworkPolicy
                | PolicyKind::StagedGlobalNetworkPolicy
                | PolicyKind::StagedKubernetesNetworkPolicy
        )
    }
}

/// A policy's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct PolicyId {
    pub kind: PolicyKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

impl PolicyId {
    /// Calico's tie-break string within a tier: `<name>/<namespace>/<kind>`.
    fn tie_break(&self) -> (&str, &str, PolicyKind) {
        (
            &self.name,
            self.namespace.as_deref().unwrap_or(""),
            self.kind,
        )
    }
}

impl Ord for PolicyId {
    fn cmp(&self, other: &Self) -> Ordering {
        self.tie_break().cmp(&other.tie_break())
    }
}

impl PartialOrd for PolicyId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for PolicyId {
    /// `knp/x/allow-web`, `gnp/deny-all`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}/{}", self.kind.short(), ns, self.name),
            None => write!(f, "{}/{}", self.kind.short(), self.name),
        }
    }
}

/// A rule's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Action {
    Allow,
    Deny,
    Log,
    Pass,
}

impl From<tortie_api::rule::Action> for Action {
    fn from(a: tortie_api::rule::Action) -> Self {
        match a {
            tortie_api::rule::Action::Allow => Action::Allow,
            tortie_api::rule::Action::Deny => Action::Deny,
            tortie_api::rule::Action::Log => Action::Log,
            tortie_api::rule::Action::Pass => Action::Pass,
        }
    }
}

/// IP protocol numbers used by name.
pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
    pub const UDPLITE: u8 = 136;

    /// `tcp`, `udp`, `sctp`, ... or the number.
    pub fn name(p: u8) -> String {
        match p {
            ICMP => "icmp".into(),
            TCP => "tcp".into(),
            UDP => "udp".into(),
            ICMPV6 => "icmpv6".into(),
            SCTP => "sctp".into(),
            UDPLITE => "udplite".into(),
            n => n.to_string(),
        }
    }

    /// Parses a protocol name (any case) or number.
    pub fn parse(s: &str) -> Option<u8> {
        match s.to_ascii_lowercase().as_str() {
            "icmp" => Some(ICMP),
            "tcp" => Some(TCP),
            "udp" => Some(UDP),
            "icmpv6" => Some(ICMPV6),
            "sctp" => Some(SCTP),
            "udplite" => Some(UDPLITE),
            n => n.parse().ok(),
        }
    }

    /// Protocols that have ports.
    pub fn has_ports(p: u8) -> bool {
        matches!(p, TCP | UDP | SCTP | UDPLITE)
    }
}

/// One entry of `ports`/`notPorts`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum PortMatch {
    /// Inclusive range (a single port is `min == max`).
    Range(u16, u16),
    /// A named port, resolved against the endpoints' declared ports.
    Named(String),
}

impl fmt::Display for PortMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortMatch::Range(a, b) if a == b => write!(f, "{a}"),
            PortMatch::Range(a, b) => write!(f, "{a}:{b}"),
            PortMatch::Named(n) => f.write_str(n),
        }
    }
}

/// ICMP type and optional code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct IcmpMatch {
    pub type_: u8,
    pub code: Option<u8>,
}

/// One side (source or destination) of a rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EntityMatch {
    /// ORed; empty = any.
    pub nets: Vec<IpNet>,
    /// The address must be in none of these.
    pub not_nets: Vec<IpNet>,
    /// Final selector (namespace scope and service accounts folded in); the address must
    /// belong to an endpoint or network set it selects.
    #[serde(serialize_with = "ser_opt_selector")]
    pub selector: Option<Selector>,
    /// The address must belong to no endpoint or network set this selects (not namespace
    /// scoped, as in Calico).
    #[serde(serialize_with = "ser_opt_selector")]
    pub not_selector: Option<Selector>,
    /// ORed; empty = any.
    pub ports: Vec<PortMatch>,
    pub not_ports: Vec<PortMatch>,
}

fn ser_opt_selector<S: serde::Serializer>(sel: &Option<Selector>, s: S) -> Result<S::Ok, S::Error> {
    match sel {
        Some(sel) => s.serialize_str(sel.canonical()),
        None => s.serialize_none(),
    }
}

impl EntityMatch {
    /// Whether the side matches every packet.
    pub fn is_any(&self) -> bool {
        self.nets.is_empty()
            && self.not_nets.is_empty()
            && self.selector.is_none()
            && self.not_selector.is_none()
            && self.ports.is_empty()
            && self.not_ports.is_empty()
    }
}

/// A compiled rule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    /// Position in the policy's rule list of this direction (0-based).
    pub index: usize,
    pub action: Action,
    /// 4 or 6: the rule applies only to that family.
    pub ip_version: Option<u8>,
    pub protocol: Option<u8>,
    pub not_protocol: Option<u8>,
    pub icmp: Option<IcmpMatch>,
    pub not_icmp: Option<IcmpMatch>,
    pub source: EntityMatch,
    pub destination: EntityMatch,
    /// `metadata.annotations`, shown by explain and in logs.
    pub annotations: BTreeMap<String, String>,
}

/// How a tier ends when no policy in it decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TierDefault {
    Deny,
    Pass,
}

/// A tier.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tier {
    pub name: String,
    /// Calico treats a missing order as 1,000,000 (the default tier's).
    pub order: f64,
    pub default_action: TierDefault,
}

/// The default tier's order.
pub const DEFAULT_TIER_ORDER: f64 = 1_000_000.0;

impl Tier {
    /// The built-in `default` tier.
    pub fn default_tier() -> Tier {
        Tier {
            name: "default".into(),
            order: DEFAULT_TIER_ORDER,
            default_action: TierDefault::Deny,
        }
    }

    /// Sort key: order, then name.
    pub fn cmp_order(&self, other: &Tier) -> Ordering {
        self.order
            .total_cmp(&other.order)
            .then_with(|| self.name.cmp(&other.name))
    }
}

/// A compiled policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    pub id: PolicyId,
    pub tier: String,
    /// Absent sorts last.
    pub order: Option<f64>,
    /// Which endpoints it applies to (namespace and service-account scope folded in).
    #[serde(serialize_with = "ser_selector")]
    pub selector: Selector,
    /// `None` when the policy's types do not include ingress.
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
    pub do_not_track: bool,
    pub pre_dnat: bool,
    pub apply_on_forward: bool,
}

fn ser_selector<S: serde::Serializer>(sel: &Selector, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(sel.canonical())
}

impl Policy {
    pub fn staged(&self) -> bool {
        self.id.kind.staged()
    }

    /// The rules of a direction, if the policy applies in it.
    pub fn rules(&self, dir: Direction) -> Option<&[Rule]> {
        match dir {
            Direction::Ingress => self.ingress.as_deref(),
            Direction::Egress => self.egress.as_deref(),
        }
    }

    /// Sort key within a tier: order (absent = +inf), then `name/namespace/kind`.
    pub fn cmp_order(&self, other: &Policy) -> Ordering {
        let a = self.order.unwrap_or(f64::INFINITY);
        let b = other.order.unwrap_or(f64::INFINITY);
        a.total_cmp(&b).then_with(|| self.id.cmp(&other.id))
    }
}

/// A compiled profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Profile {
    pub name: String,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
    pub labels_to_apply: BTreeMap<String, String>,
}

impl Profile {
    pub fn rules(&self, dir: Direction) -> &[Rule] {
        match dir {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }

    /// A profile that allows everything in both directions (Kubernetes namespace profiles).
    pub fn allow_all(name: &str, labels_to_apply: BTreeMap<String, String>) -> Profile {
        let allow = Rule {
            index: 0,
            action: Action::Allow,
            ip_version: None,
            protocol: None,
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            source: EntityMatch::default(),
            destination: EntityMatch::default(),
            annotations: BTreeMap::new(),
        };
        Profile {
            name: name.into(),
            ingress: vec![allow.clone()],
            egress: vec![allow],
            labels_to_apply,
        }
    }

    /// A profile with no rules (service-account profiles): it never decides.
    pub fn no_rules(name: &str, labels_to_apply: BTreeMap<String, String>) -> Profile {
        Profile {
            name: name.into(),
            ingress: Vec::new(),
            egress: Vec::new(),
            labels_to_apply,
        }
    }
}

/// A declared named port of an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct NamedPort {
    pub name: String,
    pub protocol: u8,
    pub port: u16,
}

/// What kind of thing an endpoint is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum EndpointId {
    /// A pod (WorkloadEndpoint): namespace and pod name (or WEP name outside Kubernetes).
    Workload { namespace: String, name: String },
    /// A HostEndpoint.
    Host { name: String },
}

impl fmt::Display for EndpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointId::Workload { namespace, name } => write!(f, "{namespace}/{name}"),
            EndpointId::Host { name } => write!(f, "hostendpoint/{name}"),
        }
    }
}

/// A workload or host endpoint: what policy applies to and what rule selectors match.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Endpoint {
    pub id: EndpointId,
    pub node: String,
    /// Own labels (for pods: pod labels plus the `projectcalico.org/*` ones).
    pub labels: BTreeMap<String, String>,
    /// Profiles in order.
    pub profiles: Vec<String>,
    /// Addresses (/32 and /128 for pods; HEP `expectedIPs`).
    pub nets: Vec<IpNet>,
    pub ports: Vec<NamedPort>,
    /// Host-side interface (pods) or the HEP's `interfaceName` (may be `*` or empty).
    pub interface: String,
}

/// A NetworkSet or GlobalNetworkSet: labels and CIDRs that rule selectors can match.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkSet {
    pub namespace: Option<String>,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub nets: Vec<IpNet>,
}
