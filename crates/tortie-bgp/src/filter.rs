//! Import/export route filters: Calico's BGPFilter rules, evaluated in memory.
//!
//! A [`Filter`] is an ordered list of rules, each for one address family. The first rule of the
//! route's family whose conditions all hold decides: `Reject` drops the route, `Accept` keeps it
//! after applying the rule's operations. When no rule matches the route is accepted — Calico
//! renders each BGPFilter as a BIRD function that falls through to the rest of the peer's
//! filter, which accepts. An empty filter accepts everything unchanged.
//!
//! Several BGPFilters named by one BGPPeer (`filters: [a, b]`) are [`Filter::chain`]ed: BIRD
//! calls their functions in order and the first `accept`/`reject` ends the whole filter, which
//! is the same as concatenating their rules.
//!
//! How the conditions map onto routes (mirroring what confd renders for BIRD):
//! * `cidr` + `matchOperator`: `Equal`/`NotEqual` compare the prefix exactly; `In` holds when
//!   the prefix lies inside `cidr` (equal or longer), `NotIn` is its negation. `prefixLength`
//!   narrows `In`/`NotIn` to prefix lengths `max(len(cidr), min) ..= min(32|128, max)`; with
//!   `Equal`/`NotEqual` it is refused, because the BIRD expression Calico renders for it
//!   (`net = [ … ]`) is a runtime type error that rejects every route reaching the rule.
//! * `source: RemotePeers`: the route was learned over BGP (always true on import).
//! * `peerType`: the session the filter is attached to is iBGP (same AS) or eBGP.
//! * `communities.values[0]`: the route carries that RFC 1997 (`aa:nn`) or RFC 8092
//!   (`aa:nn:mm`) community.
//! * `asPathPrefix`: the AS_PATH starts with these ASNs (leading AS_SEQUENCE segments; an
//!   AS_SET ends the comparable part).
//! * `priority`: the route's priority (BIRD's `krt_metric`, see below) equals the value.
//! * `interface`: never holds here. In BIRD it matches kernel/direct routes by interface name;
//!   the RIB only holds BGP-learned and explicitly originated routes, which have no interface
//!   (in BIRD `defined(ifname)` is false for them too), so such a rule is inert.
//!
//! Operations (only on `Accept`): `addCommunity` adds the community if absent,
//! `prependASPath` puts the listed ASNs in front of the AS_PATH in the listed order,
//! `setPriority` sets the route's priority. The priority is not a BGP attribute: Calico turns it
//! into the kernel route metric (`krt_metric`). On import it is kept with the route and reported
//! in [`crate::rib::Best::priority`] for the driver to use as the metric; on export it has no
//! effect on what is sent.

use std::fmt;
use std::sync::Arc;

use ipnet::IpNet;
use tortie_api::bgp::{BGPFilterSpec, BgpFilterRule, FilterOperation};

use crate::types::{AsSegment, Family, PathAttrs};

/// Which way a filter is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Routes received from the peer (`importV4`/`importV6`).
    Import,
    /// Routes advertised to the peer (`exportV4`/`exportV6`).
    Export,
}

/// `matchOperator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOperator {
    Equal,
    NotEqual,
    In,
    NotIn,
}

/// A prefix condition: `cidr`, `matchOperator` and the effective `prefixLength` bounds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CidrMatch {
    pub cidr: IpNet,
    pub op: MatchOperator,
    /// Inclusive prefix-length bounds used by `In`/`NotIn`; `len(cidr)..=32|128` by default.
    pub min_len: u8,
    pub max_len: u8,
}

impl CidrMatch {
    /// A condition without `prefixLength`.
    pub fn new(cidr: IpNet, op: MatchOperator) -> CidrMatch {
        CidrMatch {
            cidr: cidr.trunc(),
            op,
            min_len: cidr.prefix_len(),
            max_len: cidr.max_prefix_len(),
        }
    }

    /// Whether `prefix` satisfies the condition.
    pub fn matches(&self, prefix: &IpNet) -> bool {
        let inside = || {
            self.cidr.contains(prefix)
                && (self.min_len..=self.max_len).contains(&prefix.prefix_len())
        };
        match self.op {
            MatchOperator::Equal => *prefix == self.cidr,
            MatchOperator::NotEqual => *prefix != self.cidr,
            MatchOperator::In => inside(),
            MatchOperator::NotIn => !inside(),
        }
    }
}

/// `peerType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerType {
    Ebgp,
    Ibgp,
}

/// A community value to match or add.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Community {
    /// RFC 1997, `asn << 16 | value`.
    Standard(u32),
    /// RFC 8092.
    Large(u32, u32, u32),
}

impl Community {
    /// Parses `aa:nn` (16-bit parts) or `aa:nn:mm` (32-bit parts).
    pub fn parse(s: &str) -> Option<Community> {
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            [a, n] => Some(Community::Standard(
                (u32::from(a.parse::<u16>().ok()?) << 16) | u32::from(n.parse::<u16>().ok()?),
            )),
            [a, n, m] => Some(Community::Large(
                a.parse().ok()?,
                n.parse().ok()?,
                m.parse().ok()?,
            )),
            _ => None,
        }
    }

    fn is_on(&self, attrs: &PathAttrs) -> bool {
        match *self {
            Community::Standard(c) => attrs.communities.contains(&c),
            Community::Large(a, n, m) => attrs.large_communities.contains(&(a, n, m)),
        }
    }

    fn add_to(&self, attrs: &mut PathAttrs) {
        if self.is_on(attrs) {
            return;
        }
        match *self {
            Community::Standard(c) => attrs.communities.push(c),
            Community::Large(a, n, m) => attrs.large_communities.push((a, n, m)),
        }
    }
}

/// `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Accept,
    Reject,
}

/// One `operations[]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Operation {
    AddCommunity(Community),
    /// ASNs to put in front of the AS_PATH, in this order.
    PrependAsPath(Vec<u32>),
    /// The route priority (kernel metric); see the module docs.
    SetPriority(u32),
}

/// One rule. All conditions that are set must hold; none set = matches every route of
/// `family`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FilterRule {
    pub family: Family,
    pub cidr: Option<CidrMatch>,
    /// `source: RemotePeers`.
    pub remote_peers_only: bool,
    /// `interface`: kept for display; never matches (see the module docs).
    pub interface: Option<String>,
    pub peer_type: Option<PeerType>,
    pub community: Option<Community>,
    pub as_path_prefix: Vec<u32>,
    pub priority: Option<u32>,
    pub action: Action,
    pub operations: Vec<Operation>,
}

impl FilterRule {
    /// A rule for `family` with no conditions.
    pub fn new(family: Family, action: Action) -> FilterRule {
        FilterRule {
            family,
            cidr: None,
            remote_peers_only: false,
            interface: None,
            peer_type: None,
            community: None,
            as_path_prefix: Vec::new(),
            priority: None,
            action,
            operations: Vec::new(),
        }
    }

    fn matches(&self, r: &FilterInput<'_>) -> bool {
        Family::of(&r.prefix) == self.family
            && self.interface.is_none()
            && self.cidr.as_ref().is_none_or(|c| c.matches(&r.prefix))
            && (!self.remote_peers_only || r.from_peer)
            && self
                .peer_type
                .is_none_or(|t| (t == PeerType::Ebgp) == r.ebgp_session)
            && self.community.is_none_or(|c| c.is_on(r.attrs))
            && (self.as_path_prefix.is_empty()
                || as_path_starts_with(r.attrs, &self.as_path_prefix))
            && self.priority.is_none_or(|p| r.priority == Some(p))
    }
}

/// Whether the AS_PATH's leading AS_SEQUENCE segments start with `prefix`.
fn as_path_starts_with(attrs: &PathAttrs, prefix: &[u32]) -> bool {
    let mut want = prefix.iter();
    let mut next = want.next();
    for seg in &attrs.as_path {
        let AsSegment::Sequence(asns) = seg else {
            return false;
        };
        for asn in asns {
            match next {
                None => return true,
                Some(w) if w == asn => next = want.next(),
                Some(_) => return false,
            }
        }
    }
    next.is_none()
}

/// Puts `asns` in front of the AS_PATH in this order, extending the first AS_SEQUENCE or
/// starting a new one (RFC 4271 §5.1.2: a new segment when the first is a SET or would pass
/// 255 ASNs).
pub fn prepend_as_path(attrs: &mut PathAttrs, asns: &[u32]) {
    if asns.is_empty() {
        return;
    }
    if let Some(AsSegment::Sequence(first)) = attrs.as_path.first_mut()
        && first.len() + asns.len() <= 255
    {
        first.splice(0..0, asns.iter().copied());
        return;
    }
    for chunk in asns.rchunks(255) {
        attrs.as_path.insert(0, AsSegment::Sequence(chunk.to_vec()));
    }
}

/// What a filter sees of a route.
#[derive(Debug, Clone, Copy)]
pub struct FilterInput<'a> {
    pub prefix: IpNet,
    pub attrs: &'a PathAttrs,
    /// The route's priority (set by an import `setPriority`), if any.
    pub priority: Option<u32>,
    /// Learned from a BGP peer (`source: RemotePeers`), not locally originated.
    pub from_peer: bool,
    /// The session the filter belongs to is eBGP (different AS).
    pub ebgp_session: bool,
}

/// A filter's decision before operations are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted by the rule with this index (whose operations apply), or by default.
    Accept(Option<usize>),
    Reject,
}

/// An ordered rule list; see the module docs. `Default` = accept everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Filter {
    rules: Vec<FilterRule>,
}

impl Filter {
    pub fn new(rules: Vec<FilterRule>) -> Filter {
        Filter { rules }
    }

    /// The filters' rules one after another (BGPPeer `filters[]` order).
    pub fn chain(filters: Vec<Filter>) -> Filter {
        Filter {
            rules: filters.into_iter().flat_map(|f| f.rules).collect(),
        }
    }

    pub fn rules(&self) -> &[FilterRule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The first matching rule decides; none matches = accept.
    pub fn evaluate(&self, r: &FilterInput<'_>) -> Verdict {
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.matches(r) {
                return match rule.action {
                    Action::Accept if rule.operations.is_empty() => Verdict::Accept(None),
                    Action::Accept => Verdict::Accept(Some(i)),
                    Action::Reject => Verdict::Reject,
                };
            }
        }
        Verdict::Accept(None)
    }

    /// Applies the operations of the accepting rule `rule` (from [`Filter::evaluate`]).
    /// Returns the same `Arc` when nothing changes.
    pub fn apply(
        &self,
        rule: Option<usize>,
        attrs: &Arc<PathAttrs>,
        priority: Option<u32>,
    ) -> (Arc<PathAttrs>, Option<u32>) {
        let ops = match rule.and_then(|i| self.rules.get(i)) {
            Some(r) if !r.operations.is_empty() => &r.operations,
            _ => return (attrs.clone(), priority),
        };
        let mut out = PathAttrs::clone(attrs);
        let mut priority = priority;
        for op in ops {
            match op {
                Operation::AddCommunity(c) => c.add_to(&mut out),
                Operation::PrependAsPath(asns) => prepend_as_path(&mut out, asns),
                Operation::SetPriority(p) => priority = Some(*p),
            }
        }
        let attrs = if out == **attrs {
            attrs.clone()
        } else {
            Arc::new(out)
        };
        (attrs, priority)
    }

    /// Evaluates and applies in one go: `None` = rejected.
    pub fn run(
        &self,
        r: &FilterInput<'_>,
        attrs: &Arc<PathAttrs>,
    ) -> Option<(Arc<PathAttrs>, Option<u32>)> {
        match self.evaluate(r) {
            Verdict::Reject => None,
            Verdict::Accept(rule) => Some(self.apply(rule, attrs, r.priority)),
        }
    }

    /// A BGPFilter's rules for one direction, both families: `importV4` then `importV6` (or
    /// the export pair). Each rule only applies to routes of its own family, so the order
    /// between the two lists does not matter.
    pub fn from_spec(spec: &BGPFilterSpec, direction: Direction) -> Result<Filter, FilterError> {
        let v4 = Filter::from_spec_family(spec, direction, Family::Ipv4Unicast)?;
        let v6 = Filter::from_spec_family(spec, direction, Family::Ipv6Unicast)?;
        Ok(Filter::chain(vec![v4, v6]))
    }

    /// The rules of one direction and family of a BGPFilter (`importV4` etc.).
    pub fn from_spec_family(
        spec: &BGPFilterSpec,
        direction: Direction,
        family: Family,
    ) -> Result<Filter, FilterError> {
        let (field, rules) = match (direction, family) {
            (Direction::Import, Family::Ipv4Unicast) => ("importV4", &spec.import_v4),
            (Direction::Import, Family::Ipv6Unicast) => ("importV6", &spec.import_v6),
            (Direction::Export, Family::Ipv4Unicast) => ("exportV4", &spec.export_v4),
            (Direction::Export, Family::Ipv6Unicast) => ("exportV6", &spec.export_v6),
        };
        let rules = rules
            .iter()
            .enumerate()
            .map(|(i, r)| convert_rule(r, family, &format!("{field}[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(Filter { rules })
    }
}

/// A BGPFilter rule that cannot be turned into a [`FilterRule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    /// The field path, e.g. `importV4[2].cidr`.
    pub field: String,
    pub value: String,
    pub reason: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}: {}", self.field, self.value, self.reason)
    }
}

impl std::error::Error for FilterError {}

fn err(field: &str, name: &str, value: impl fmt::Display, reason: &str) -> FilterError {
    FilterError {
        field: if name.is_empty() {
            field.to_string()
        } else {
            format!("{field}.{name}")
        },
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

fn to_u32(field: &str, name: &str, v: i64) -> Result<u32, FilterError> {
    u32::try_from(v).map_err(|_| err(field, name, v, "must be 0-4294967295"))
}

fn convert_rule(r: &BgpFilterRule, family: Family, at: &str) -> Result<FilterRule, FilterError> {
    let action = match r.action.as_str() {
        "Accept" => Action::Accept,
        "Reject" => Action::Reject,
        a => return Err(err(at, "action", a, "must be Accept or Reject")),
    };
    let mut rule = FilterRule::new(family, action);
    rule.cidr = convert_cidr(r, family, at)?;
    rule.remote_peers_only = match r.source.as_str() {
        "" => false,
        "RemotePeers" => true,
        s => return Err(err(at, "source", s, "must be RemotePeers")),
    };
    if !r.interface.is_empty() {
        rule.interface = Some(r.interface.clone());
    }
    rule.peer_type = match r.peer_type.as_str() {
        "" => None,
        "eBGP" => Some(PeerType::Ebgp),
        "iBGP" => Some(PeerType::Ibgp),
        t => return Err(err(at, "peerType", t, "must be eBGP or iBGP")),
    };
    if let Some(c) = &r.communities {
        let f = "communities.values";
        rule.community = match c.values.as_slice() {
            [v] => Some(Community::parse(v).ok_or_else(|| {
                err(
                    at,
                    f,
                    v,
                    "must be a community aa:nn or a large community aa:nn:mm",
                )
            })?),
            vs => {
                let reason = "exactly one community value must be given";
                return Err(err(at, f, format!("{vs:?}"), reason));
            }
        };
    }
    for v in r.as_path_prefix.iter().flatten() {
        rule.as_path_prefix.push(to_u32(at, "asPathPrefix", *v)?);
    }
    rule.priority = r.priority.map(|p| to_u32(at, "priority", p)).transpose()?;
    if !r.operations.is_empty() && action != Action::Accept {
        let reason = "operations are allowed only with action Accept";
        return Err(err(at, "operations", r.operations.len(), reason));
    }
    for (i, op) in r.operations.iter().enumerate() {
        rule.operations
            .push(convert_op(op, &format!("{at}.operations[{i}]"))?);
    }
    Ok(rule)
}

fn convert_cidr(
    r: &BgpFilterRule,
    family: Family,
    at: &str,
) -> Result<Option<CidrMatch>, FilterError> {
    let op = match r.match_operator.as_str() {
        "" => None,
        "Equal" => Some(MatchOperator::Equal),
        "NotEqual" => Some(MatchOperator::NotEqual),
        "In" => Some(MatchOperator::In),
        "NotIn" => Some(MatchOperator::NotIn),
        o => {
            let reason = "must be Equal, NotEqual, In or NotIn";
            return Err(err(at, "matchOperator", o, reason));
        }
    };
    let (cidr, op) = match (r.cidr.as_str(), op) {
        ("", None) => {
            if let Some(pl) = &r.prefix_length {
                return Err(err(
                    at,
                    "prefixLength",
                    format!("{pl:?}"),
                    "requires a cidr",
                ));
            }
            return Ok(None);
        }
        ("", Some(_)) => {
            return Err(err(at, "cidr", "", "matchOperator needs a cidr"));
        }
        (c, None) => return Err(err(at, "matchOperator", "", &format!("cidr {c} needs one"))),
        (c, Some(op)) => (c, op),
    };
    let net: IpNet = cidr.parse().map_err(|_| {
        err(
            at,
            "cidr",
            cidr,
            "not a CIDR (e.g. 10.0.0.0/16 or fd00::/64)",
        )
    })?;
    if Family::of(&net) != family {
        let reason = match family {
            Family::Ipv4Unicast => "an IPv4 rule needs an IPv4 cidr",
            Family::Ipv6Unicast => "an IPv6 rule needs an IPv6 cidr",
        };
        return Err(err(at, "cidr", cidr, reason));
    }
    let mut m = CidrMatch::new(net, op);
    if let Some(pl) = &r.prefix_length {
        if matches!(op, MatchOperator::Equal | MatchOperator::NotEqual) {
            let reason = "prefixLength only applies with matchOperator In or NotIn";
            return Err(err(at, "prefixLength", format!("{pl:?}"), reason));
        }
        let bits = net.max_prefix_len();
        let bound = |name: &str, v: Option<i64>| -> Result<Option<u8>, FilterError> {
            v.map(|v| {
                u8::try_from(v)
                    .ok()
                    .filter(|v| *v <= bits)
                    .ok_or_else(|| err(at, name, v, &format!("must be 0-{bits}")))
            })
            .transpose()
        };
        let min = bound("prefixLength.min", pl.min)?;
        let max = bound("prefixLength.max", pl.max)?;
        if let (Some(a), Some(b)) = (min, max)
            && a > b
        {
            return Err(err(at, "prefixLength.min", a, "must not exceed max"));
        }
        m.min_len = m.min_len.max(min.unwrap_or(0));
        m.max_len = m.max_len.min(max.unwrap_or(bits));
    }
    Ok(Some(m))
}

fn convert_op(op: &FilterOperation, at: &str) -> Result<Operation, FilterError> {
    match (&op.add_community, &op.prepend_as_path, &op.set_priority) {
        (Some(c), None, None) => Community::parse(&c.value)
            .map(Operation::AddCommunity)
            .ok_or_else(|| {
                let reason = "must be a community aa:nn or a large community aa:nn:mm";
                err(at, "addCommunity.value", &c.value, reason)
            }),
        (None, Some(p), None) => Ok(Operation::PrependAsPath(
            p.prefix.iter().map(|a| a.0).collect(),
        )),
        (None, None, Some(p)) => {
            to_u32(at, "setPriority.value", p.value).map(Operation::SetPriority)
        }
        _ => Err(err(
            at,
            "",
            "",
            "exactly one of addCommunity, prependASPath, setPriority must be set",
        )),
    }
}
