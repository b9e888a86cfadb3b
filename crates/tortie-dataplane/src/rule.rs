//! One [`RenderedRule`] → nft rule statements.
//!
//! A rule's match is written in a fixed order: family, protocol, ICMP, source and destination
//! addresses, ports, negated ports, then the action and a comment. `ports` and
//! `named_port_sets` of a side are ORed, which one nft rule cannot say when both are present,
//! so a rule becomes one nft rule per alternative: (source-port alternatives) ×
//! (destination-port alternatives).
//!
//! A rule that can never match (ports with a protocol that has none, an ICMP match for the
//! other family's ICMP) renders as nothing, whatever its action.

use std::collections::BTreeSet;

use ipnet::IpNet;
use tortie_calc::dataplane::{Family, RenderedRule, RenderedSide};
use tortie_calc::model::{Action, IcmpMatch, proto};

use crate::table::{comment, log_prefix, nft_name};

/// Mark bit: a policy or profile allowed the packet.
pub const MARK_ACCEPT: u32 = 0x10000;
/// Mark bit: a policy passed the packet to the next tier.
pub const MARK_PASS: u32 = 0x20000;
/// Mark bit of the staged policy preview only: the staged view denied the packet (the
/// preview goes on to the enforced chains, which decide).
pub const MARK_STAGED_DENY: u32 = 0x40000;
/// Start of the preview's log prefixes after [`LOG_PREFIX_START`]: `tortie staged allow
/// <rule>: ` and `tortie staged deny <rule>: `.
pub const STAGED_ALLOW: &str = "staged allow ";
pub const STAGED_DENY: &str = "staged deny ";
/// NFLOG group that Log rules send packets to (the agent's `policy_log` listener reads it).
pub const LOG_GROUP: u16 = 1;
/// Start of every Log rule's prefix: `tortie <rule comment>: ` (for example
/// `tortie knp/x/allow-web ingress[0]: `), cut to nft's 127 bytes.
pub const LOG_PREFIX_START: &str = "tortie ";

/// What kind of named set a rule refers to (to declare it if the model lacks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SetKind {
    Nets(Family),
    NamedPorts(Family),
}

/// Sets referenced by rendered rules: nft name → kind.
pub type SetRefs = BTreeSet<(String, SetKind)>;

/// The nft statements for one rule; records the named sets it references into `refs`.
pub fn render_rule(r: &RenderedRule, refs: &mut SetRefs) -> Vec<String> {
    render_rule_as(r, refs, action(r))
}

/// [`render_rule`] for the staged policy preview: an allow or a deny is logged as what the
/// staged view would do (`tortie staged allow|deny <rule>: `) and marked, never enforced; a
/// pass passes; a Log rule is left out (nothing to preview).
pub fn render_preview_rule(r: &RenderedRule, refs: &mut SetRefs) -> Vec<String> {
    let verdict = |what: &str, mark: u32| {
        format!(
            "{} meta mark set meta mark | {mark:#x} return",
            preview_log(&format!("{what}{}", r.comment))
        )
    };
    let action = match r.action {
        Action::Allow => verdict(STAGED_ALLOW, MARK_ACCEPT),
        Action::Deny => verdict(STAGED_DENY, MARK_STAGED_DENY),
        Action::Pass => action(r),
        Action::Log => return Vec::new(),
    };
    render_rule_as(r, refs, action)
}

/// The log statement of a preview verdict (`what` = `staged deny <identity>`).
pub fn preview_log(what: &str) -> String {
    format!(
        "log prefix {} group {LOG_GROUP}",
        log_prefix(&format!("{LOG_PREFIX_START}{what}: "))
    )
}

fn render_rule_as(r: &RenderedRule, refs: &mut SetRefs, action: String) -> Vec<String> {
    let Some(head) = head(r, refs) else {
        return Vec::new();
    };
    let ip = ip_kw(r.family);
    let src_alts = port_alternatives(ip, "saddr", "sport", &r.src, r.family, refs);
    let dst_alts = port_alternatives(ip, "daddr", "dport", &r.dst, r.family, refs);
    let mut tail = Vec::new();
    tail.extend(port_negations(ip, "saddr", "sport", &r.src, r.family, refs));
    tail.extend(port_negations(ip, "daddr", "dport", &r.dst, r.family, refs));
    tail.push(action);
    tail.push(comment(&r.comment));
    let mut out = Vec::new();
    for s in &src_alts {
        for d in &dst_alts {
            let parts: Vec<&str> = head
                .iter()
                .map(String::as_str)
                .chain(s.as_deref())
                .chain(d.as_deref())
                .chain(tail.iter().map(String::as_str))
                .collect();
            out.push(parts.join(" "));
        }
    }
    out
}

fn ip_kw(f: Family) -> &'static str {
    match f {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    }
}

/// Whether every nft rule of the side matches an address (which implies the family).
/// Named-port sets are alternatives to numeric ports, so they do not count.
fn side_has_addr(s: &RenderedSide) -> bool {
    !s.nets.is_empty()
        || !s.not_nets.is_empty()
        || s.set.is_some()
        || s.not_set.is_some()
        || !s.not_named_port_sets.is_empty()
}

fn side_has_ports(s: &RenderedSide) -> bool {
    !s.ports.is_empty()
        || !s.named_port_sets.is_empty()
        || !s.not_ports.is_empty()
        || !s.not_named_port_sets.is_empty()
}

/// Family, protocol, ICMP and address matches; `None` if the rule can never match.
fn head(r: &RenderedRule, refs: &mut SetRefs) -> Option<Vec<String>> {
    let mut parts = Vec::new();
    if !side_has_addr(&r.src) && !side_has_addr(&r.dst) {
        // `ip saddr` and friends imply the family; otherwise say it.
        parts.push(match r.family {
            Family::V4 => "meta nfproto ipv4".to_string(),
            Family::V6 => "meta nfproto ipv6".to_string(),
        });
    }
    let ports = side_has_ports(&r.src) || side_has_ports(&r.dst);
    match r.protocol {
        Some(p) if ports && !proto::has_ports(p) => return None,
        Some(p) => parts.push(format!("meta l4proto {}", proto_name(p))),
        // `th` reads the transport header of whatever protocol the packet has.
        None if ports => parts.push("meta l4proto { tcp, udp, sctp, udplite }".to_string()),
        None => {}
    }
    if let Some(p) = r.not_protocol {
        parts.push(format!("meta l4proto != {}", proto_name(p)));
    }
    if let Some(m) = r.icmp {
        parts.extend(icmp(r.family, r.protocol, m, false)?);
    }
    if let Some(m) = r.not_icmp {
        parts.extend(icmp(r.family, r.protocol, m, true)?);
    }
    let ip = ip_kw(r.family);
    parts.extend(addr_matches(ip, "saddr", &r.src, r.family, refs));
    parts.extend(addr_matches(ip, "daddr", &r.dst, r.family, refs));
    Some(parts)
}

/// nft spells a few protocols by name (`tcp`); numbers work for the rest.
pub(crate) fn proto_name(p: u8) -> String {
    match p {
        proto::ICMPV6 => "ipv6-icmp".to_string(),
        proto::ICMP | proto::TCP | proto::UDP | proto::SCTP | proto::UDPLITE => proto::name(p),
        n => n.to_string(),
    }
}

/// ICMP type/code for the rule's family; `None` (never matches) if the rule names another
/// protocol, including the other family's ICMP.
fn icmp(f: Family, protocol: Option<u8>, m: IcmpMatch, negated: bool) -> Option<Vec<String>> {
    let (kw, own) = match f {
        Family::V4 => ("icmp", proto::ICMP),
        Family::V6 => ("icmpv6", proto::ICMPV6),
    };
    if protocol.is_some_and(|p| p != own) {
        return None;
    }
    Some(match (m.code, negated) {
        (None, false) => vec![format!("{kw} type {}", m.type_)],
        (Some(c), false) => vec![format!("{kw} type {}", m.type_), format!("{kw} code {c}")],
        (None, true) => vec![format!("{kw} type != {}", m.type_)],
        (Some(c), true) => vec![format!("{kw} type . {kw} code != {{ {} . {c} }}", m.type_)],
    })
}

/// A set of CIDRs as an nft value: one element bare, several in braces. Overlapping and
/// adjacent CIDRs are merged first (nft rejects overlapping intervals).
pub(crate) fn nets_value(nets: &[IpNet]) -> String {
    let els = net_elements(nets);
    if els.len() == 1 {
        els.into_iter().next().unwrap_or_default()
    } else {
        format!("{{ {} }}", els.join(", "))
    }
}

/// CIDRs as nft elements, aggregated and sorted; host routes are written as addresses.
pub(crate) fn net_elements(nets: &[IpNet]) -> Vec<String> {
    IpNet::aggregate(&nets.to_vec())
        .into_iter()
        .map(|n| {
            if n.prefix_len() == n.max_prefix_len() {
                n.addr().to_string()
            } else {
                n.to_string()
            }
        })
        .collect()
}

fn set_ref(name: &str, kind: SetKind, refs: &mut SetRefs) -> String {
    let n = nft_name(name);
    refs.insert((n.clone(), kind));
    n
}

fn addr_matches(
    ip: &str,
    addr: &str,
    s: &RenderedSide,
    f: Family,
    refs: &mut SetRefs,
) -> Vec<String> {
    let mut v = Vec::new();
    if !s.nets.is_empty() {
        v.push(format!("{ip} {addr} {}", nets_value(&s.nets)));
    }
    if !s.not_nets.is_empty() {
        v.push(format!("{ip} {addr} != {}", nets_value(&s.not_nets)));
    }
    if let Some(set) = &s.set {
        let n = set_ref(set, SetKind::Nets(f), refs);
        v.push(format!("{ip} {addr} @{n}"));
    }
    if let Some(set) = &s.not_set {
        let n = set_ref(set, SetKind::Nets(f), refs);
        v.push(format!("{ip} {addr} != @{n}"));
    }
    v
}

/// Port ranges as an nft value, merged and sorted.
fn ports_value(ranges: &[(u16, u16)]) -> String {
    let mut r: Vec<(u16, u16)> = ranges.iter().map(|&(a, b)| (a.min(b), a.max(b))).collect();
    r.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::new();
    for (a, b) in r {
        match merged.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let els: Vec<String> = merged
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    if els.len() == 1 {
        els.into_iter().next().unwrap_or_default()
    } else {
        format!("{{ {} }}", els.join(", "))
    }
}

/// The ORed port alternatives of a side: `[None]` when it has no port match.
fn port_alternatives(
    ip: &str,
    addr: &str,
    port: &str,
    s: &RenderedSide,
    f: Family,
    refs: &mut SetRefs,
) -> Vec<Option<String>> {
    let mut v = Vec::new();
    if !s.ports.is_empty() {
        v.push(Some(format!("th {port} {}", ports_value(&s.ports))));
    }
    for set in &s.named_port_sets {
        let n = set_ref(set, SetKind::NamedPorts(f), refs);
        v.push(Some(format!("{ip} {addr} . meta l4proto . th {port} @{n}")));
    }
    if v.is_empty() {
        v.push(None);
    }
    v
}

fn port_negations(
    ip: &str,
    addr: &str,
    port: &str,
    s: &RenderedSide,
    f: Family,
    refs: &mut SetRefs,
) -> Vec<String> {
    let mut v = Vec::new();
    if !s.not_ports.is_empty() {
        v.push(format!("th {port} != {}", ports_value(&s.not_ports)));
    }
    for set in &s.not_named_port_sets {
        let n = set_ref(set, SetKind::NamedPorts(f), refs);
        v.push(format!("{ip} {addr} . meta l4proto . th {port} != @{n}"));
    }
    v
}

fn action(r: &RenderedRule) -> String {
    match r.action {
        Action::Allow => format!("meta mark set meta mark | {MARK_ACCEPT:#x} return"),
        Action::Pass => format!("meta mark set meta mark | {MARK_PASS:#x} return"),
        Action::Deny => "drop".to_string(),
        Action::Log => format!(
            "log prefix {} group {LOG_GROUP}",
            log_prefix(&format!("{LOG_PREFIX_START}{}: ", r.comment))
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(action: Action, family: Family) -> RenderedRule {
        RenderedRule {
            action,
            family,
            protocol: None,
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            src: RenderedSide::default(),
            dst: RenderedSide::default(),
            comment: "knp/x/allow ingress[0]".to_string(),
        }
    }

    fn one(r: &RenderedRule) -> String {
        let v = render_rule(r, &mut SetRefs::new());
        assert_eq!(v.len(), 1, "{v:?}");
        v.into_iter().next().unwrap_or_default()
    }

    #[test]
    fn bare_rules_name_their_family() {
        assert_eq!(
            one(&rule(Action::Allow, Family::V4)),
            "meta nfproto ipv4 meta mark set meta mark | 0x10000 return comment \"knp/x/allow ingress[0]\""
        );
        assert_eq!(
            one(&rule(Action::Deny, Family::V6)),
            "meta nfproto ipv6 drop comment \"knp/x/allow ingress[0]\""
        );
        assert!(one(&rule(Action::Pass, Family::V6)).contains("meta mark | 0x20000 return"));
        assert!(
            one(&rule(Action::Log, Family::V4))
                .contains("log prefix \"tortie knp/x/allow ingress[0]: \" group 1 comment")
        );
    }

    #[test]
    fn addresses_protocols_and_ports() {
        let mut r = rule(Action::Allow, Family::V4);
        r.protocol = Some(proto::TCP);
        r.src.nets = vec![
            "10.0.0.0/8".parse().expect("net"),
            "10.1.0.0/16".parse().expect("net"),
            "192.168.1.1/32".parse().expect("net"),
        ];
        r.src.not_set = Some("s4-abc".into());
        r.dst.set = Some("s4-def".into());
        r.dst.ports = vec![(8080, 8080), (80, 80), (8000, 8081)];
        r.dst.not_ports = vec![(8001, 8001)];
        let mut refs = SetRefs::new();
        let v = render_rule(&r, &mut refs);
        assert_eq!(
            v,
            vec![
                "meta l4proto tcp ip saddr { 10.0.0.0/8, 192.168.1.1 } ip saddr != @s4-abc \
                 ip daddr @s4-def th dport { 80, 8000-8081 } th dport != 8001 \
                 meta mark set meta mark | 0x10000 return comment \"knp/x/allow ingress[0]\""
            ]
        );
        assert_eq!(refs.len(), 2);
    }

    #[test]
    fn named_ports_or_numeric_ports_split_into_alternatives() {
        let mut r = rule(Action::Deny, Family::V6);
        r.src.ports = vec![(1000, 2000)];
        r.dst.ports = vec![(80, 80)];
        r.dst.named_port_sets = vec!["n6-a".into(), "n6-b".into()];
        r.dst.not_named_port_sets = vec!["n6-c".into()];
        let v = render_rule(&r, &mut SetRefs::new());
        assert_eq!(v.len(), 3, "{v:#?}");
        assert!(v[0].starts_with("meta l4proto { tcp, udp, sctp, udplite } th sport 1000-2000 th dport 80 ip6 daddr . meta l4proto . th dport != @n6-c drop"));
        assert!(
            v[1].contains("th sport 1000-2000 ip6 daddr . meta l4proto . th dport @n6-a ip6 daddr")
        );
        assert!(v[2].contains("@n6-b"));
        for x in &v {
            assert!(!x.contains("meta nfproto"), "family implied by ip6: {x}");
        }
    }

    #[test]
    fn numeric_alternative_keeps_the_family() {
        let mut r = rule(Action::Allow, Family::V4);
        r.protocol = Some(proto::TCP);
        r.dst.ports = vec![(80, 80)];
        r.dst.named_port_sets = vec!["n4-a".into()];
        let v = render_rule(&r, &mut SetRefs::new());
        assert_eq!(v.len(), 2);
        assert!(v[0].starts_with("meta nfproto ipv4 meta l4proto tcp th dport 80 meta mark"));
        assert!(v[1].contains("ip daddr . meta l4proto . th dport @n4-a meta mark"));
    }

    #[test]
    fn impossible_rules_render_nothing() {
        let mut r = rule(Action::Deny, Family::V4);
        r.protocol = Some(proto::ICMP);
        r.dst.ports = vec![(80, 80)];
        assert!(render_rule(&r, &mut SetRefs::new()).is_empty());
        let mut r = rule(Action::Allow, Family::V4);
        r.protocol = Some(proto::ICMPV6);
        r.icmp = Some(IcmpMatch {
            type_: 128,
            code: None,
        });
        assert!(render_rule(&r, &mut SetRefs::new()).is_empty());
        r.protocol = Some(proto::TCP);
        r.icmp = None;
        r.not_icmp = Some(IcmpMatch {
            type_: 3,
            code: None,
        });
        assert!(render_rule(&r, &mut SetRefs::new()).is_empty());
    }

    #[test]
    fn icmp_matches() {
        let mut r = rule(Action::Allow, Family::V4);
        r.protocol = Some(proto::ICMP);
        r.icmp = Some(IcmpMatch {
            type_: 8,
            code: Some(0),
        });
        assert!(
            one(&r).starts_with("meta nfproto ipv4 meta l4proto icmp icmp type 8 icmp code 0 ")
        );
        let mut r = rule(Action::Allow, Family::V6);
        r.protocol = Some(proto::ICMPV6);
        r.not_icmp = Some(IcmpMatch {
            type_: 128,
            code: Some(1),
        });
        r.not_protocol = Some(proto::UDP);
        assert!(one(&r).starts_with(
            "meta nfproto ipv6 meta l4proto ipv6-icmp meta l4proto != udp icmpv6 type . icmpv6 code != { 128 . 1 } "
        ));
    }
}
