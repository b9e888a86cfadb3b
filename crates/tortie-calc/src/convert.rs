//! Resources → the compiled model (calico-reference §2.5 and §2.6).
//!
//! Inputs are expected to be defaulted and validated already (the CLI and the store only hold
//! such); what can still fail here (a selector that does not parse, a net that is not a CIDR)
//! is reported with the field path, and the policy is left out rather than half-compiled.

use std::collections::BTreeMap;

use ipnet::IpNet;
use tortie_api::k8s::{
    IntOrString, K8sNetworkPolicySpec, LabelSelector, NetworkPolicyPeer, NetworkPolicyPort,
};
use tortie_api::numorstring::Port;
use tortie_api::policy::{GlobalNetworkPolicySpec, NetworkPolicySpec, PolicyType, ProfileSpec};
use tortie_api::rule::{EntityRule, IcmpFields};
use tortie_selector::Selector;

use crate::model::{
    EntityMatch, IcmpMatch, Policy, PolicyId, PolicyKind, PortMatch, Profile, Rule, proto,
};

/// The label every namespaced endpoint carries.
pub const LABEL_NAMESPACE: &str = "projectcalico.org/namespace";
pub const LABEL_ORCHESTRATOR: &str = "projectcalico.org/orchestrator";
pub const LABEL_SERVICE_ACCOUNT: &str = "projectcalico.org/serviceaccount";
pub const LABEL_NAME: &str = "projectcalico.org/name";
pub const NAMESPACE_PREFIX: &str = "pcns.";
pub const SERVICE_ACCOUNT_PREFIX: &str = "pcsa.";
/// Kubernetes NetworkPolicies sit at this order in the default tier.
pub const K8S_POLICY_ORDER: f64 = 1000.0;

/// Why a resource could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {value:?}: {reason}")]
pub struct ConvertError {
    pub field: String,
    pub value: String,
    pub reason: String,
}

fn err(
    field: impl Into<String>,
    value: impl Into<String>,
    reason: impl Into<String>,
) -> ConvertError {
    ConvertError {
        field: field.into(),
        value: value.into(),
        reason: reason.into(),
    }
}

fn parse_sel(field: &str, s: &str) -> Result<Selector, ConvertError> {
    Selector::parse(s).map_err(|e| err(field, s, e.to_string()))
}

/// Quotes a label value for a selector.
fn quote(v: &str) -> String {
    if v.contains('\'') {
        format!("\"{v}\"")
    } else {
        format!("'{v}'")
    }
}

fn and_all(parts: Vec<String>) -> String {
    match parts.len() {
        0 => String::new(),
        1 => parts.into_iter().next().unwrap_or_default(),
        _ => parts
            .iter()
            .map(|p| format!("({p})"))
            .collect::<Vec<_>>()
            .join(" && "),
    }
}

/// Prefixes every label name of `sel` (e.g. `pcns.`), then rewrites `all()` to "any
/// namespaced endpoint" and `global()` to "only non-namespaced" when `namespace` is set.
fn prefix_selector(
    field: &str,
    sel: &str,
    prefix: &str,
    namespace: bool,
) -> Result<String, ConvertError> {
    let parsed = parse_sel(field, sel)?;
    let mapped = parsed.map_labels(|l| format!("{prefix}{l}"));
    let expr = rewrite_all_global(mapped.into_expr(), namespace);
    Ok(Selector::new(expr).canonical().to_string())
}

fn rewrite_all_global(e: tortie_selector::Expr, ns: bool) -> tortie_selector::Expr {
    use tortie_selector::Expr;
    if !ns {
        return e;
    }
    match e {
        Expr::All => Expr::Has {
            label: LABEL_NAMESPACE.into(),
        },
        Expr::Global => Expr::Not(Box::new(Expr::Has {
            label: LABEL_NAMESPACE.into(),
        })),
        Expr::Not(inner) => Expr::Not(Box::new(rewrite_all_global(*inner, ns))),
        Expr::And(v) => Expr::And(v.into_iter().map(|x| rewrite_all_global(x, ns)).collect()),
        Expr::Or(v) => Expr::Or(v.into_iter().map(|x| rewrite_all_global(x, ns)).collect()),
        other => other,
    }
}

/// The selector of one side of a rule, with namespace scope and service accounts folded in
/// exactly as Calico's rule conversion does.
fn entity_selector(
    field: &str,
    er: &EntityRule,
    policy_ns: Option<&str>,
) -> Result<Option<Selector>, ConvertError> {
    let ns_sel = if !er.namespace_selector.trim().is_empty() {
        Some(prefix_selector(
            &format!("{field}.namespaceSelector"),
            &er.namespace_selector,
            NAMESPACE_PREFIX,
            true,
        )?)
    } else {
        policy_ns.map(|ns| format!("{LABEL_NAMESPACE} == {}", quote(ns)))
    };
    let mut parts = Vec::new();
    if let Some(sa) = &er.service_accounts {
        let mut sa_parts = Vec::new();
        if !sa.selector.trim().is_empty() {
            sa_parts.push(prefix_selector(
                &format!("{field}.serviceAccounts.selector"),
                &sa.selector,
                SERVICE_ACCOUNT_PREFIX,
                false,
            )?);
        }
        if !sa.names.is_empty() {
            let names: Vec<String> = sa.names.iter().map(|n| quote(n)).collect();
            sa_parts.push(format!(
                "{LABEL_SERVICE_ACCOUNT} in {{ {} }}",
                names.join(", ")
            ));
        }
        let s = and_all(sa_parts);
        if !s.is_empty() {
            parts.push(s);
        }
    }
    if !er.selector.trim().is_empty() {
        parse_sel(&format!("{field}.selector"), &er.selector)?;
        parts.push(er.selector.clone());
    }
    let mut sel = and_all(parts);
    if let Some(ns_sel) = ns_sel
        && (!sel.is_empty()
            || !er.not_selector.trim().is_empty()
            || !er.namespace_selector.trim().is_empty())
    {
        sel = if sel.is_empty() {
            ns_sel
        } else {
            format!("({ns_sel}) && ({sel})")
        };
    }
    if sel.is_empty() {
        return Ok(None);
    }
    parse_sel(&format!("{field}.selector"), &sel).map(Some)
}

/// Parses a list of CIDRs or bare IPs, naming the bad entry `field[i]`.
pub fn nets(field: &str, list: &[String]) -> Result<Vec<IpNet>, ConvertError> {
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            parse_net(s).ok_or_else(|| err(format!("{field}[{i}]"), s, "not an IP or CIDR"))
        })
        .collect()
}

/// Parses a CIDR or a bare IP, normalised to the network.
pub fn parse_net(s: &str) -> Option<IpNet> {
    let s = s.trim();
    if let Ok(n) = s.parse::<IpNet>() {
        return Some(n.trunc());
    }
    s.parse::<std::net::IpAddr>().ok().map(IpNet::from)
}

fn ports(list: &[Port]) -> Vec<PortMatch> {
    list.iter()
        .map(|p| match p {
            Port::Range { min, max } => PortMatch::Range(*min, *max),
            Port::Named(n) => PortMatch::Named(n.clone()),
        })
        .collect()
}

fn entity(
    field: &str,
    er: &EntityRule,
    policy_ns: Option<&str>,
) -> Result<EntityMatch, ConvertError> {
    let not_selector = if er.not_selector.trim().is_empty() {
        None
    } else {
        Some(parse_sel(
            &format!("{field}.notSelector"),
            &er.not_selector,
        )?)
    };
    Ok(EntityMatch {
        nets: nets(&format!("{field}.nets"), &er.nets)?,
        not_nets: nets(&format!("{field}.notNets"), &er.not_nets)?,
        selector: entity_selector(field, er, policy_ns)?,
        not_selector,
        ports: ports(&er.ports),
        not_ports: ports(&er.not_ports),
    })
}

fn icmp(field: &str, f: &Option<IcmpFields>) -> Result<Option<IcmpMatch>, ConvertError> {
    let Some(f) = f else { return Ok(None) };
    let Some(t) = f.type_ else { return Ok(None) };
    let type_ = u8::try_from(t)
        .map_err(|_| err(format!("{field}.type"), t.to_string(), "must be 0-254"))?;
    let code = match f.code {
        Some(c) => Some(
            u8::try_from(c)
                .map_err(|_| err(format!("{field}.code"), c.to_string(), "must be 0-255"))?,
        ),
        None => None,
    };
    Ok(Some(IcmpMatch { type_, code }))
}

fn protocol(
    field: &str,
    p: &Option<tortie_api::numorstring::Protocol>,
) -> Result<Option<u8>, ConvertError> {
    match p {
        None => Ok(None),
        Some(p) => p
            .number()
            .map(Some)
            .ok_or_else(|| err(field, p.to_string(), "unknown protocol")),
    }
}

/// Compiles the rules of one direction of a v3 policy or profile.
pub fn rules(
    field: &str,
    list: &[tortie_api::rule::Rule],
    policy_ns: Option<&str>,
) -> Result<Vec<Rule>, ConvertError> {
    list.iter()
        .enumerate()
        .map(|(i, r)| {
            let f = format!("{field}[{i}]");
            let ip_version = match r.ip_version {
                None => None,
                Some(4) => Some(4),
                Some(6) => Some(6),
                Some(v) => {
                    return Err(err(
                        format!("{f}.ipVersion"),
                        v.to_string(),
                        "must be 4 or 6",
                    ));
                }
            };
            Ok(Rule {
                index: i,
                action: r.action.into(),
                ip_version,
                protocol: protocol(&format!("{f}.protocol"), &r.protocol)?,
                not_protocol: protocol(&format!("{f}.notProtocol"), &r.not_protocol)?,
                icmp: icmp(&format!("{f}.icmp"), &r.icmp)?,
                not_icmp: icmp(&format!("{f}.notICMP"), &r.not_icmp)?,
                source: entity(&format!("{f}.source"), &r.source, policy_ns)?,
                destination: entity(&format!("{f}.destination"), &r.destination, policy_ns)?,
                annotations: r
                    .metadata
                    .as_ref()
                    .map(|m| m.annotations.clone())
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Calico's `types` default: egress-only if only egress rules, both if both, else ingress.
fn types_or_default(types: &Option<Vec<PolicyType>>, ingress: bool, egress: bool) -> (bool, bool) {
    match types {
        Some(t) if !t.is_empty() => (
            t.contains(&PolicyType::Ingress),
            t.contains(&PolicyType::Egress),
        ),
        _ => match (ingress, egress) {
            (false, true) => (false, true),
            (true, true) => (true, true),
            _ => (true, false),
        },
    }
}

fn tier_name(t: &str) -> String {
    if t.trim().is_empty() {
        "default".into()
    } else {
        t.to_string()
    }
}

/// The user's `selector` (checked), if set.
fn own_selector(spec_selector: &str) -> Result<Option<String>, ConvertError> {
    if spec_selector.trim().is_empty() {
        return Ok(None);
    }
    parse_sel("spec.selector", spec_selector)?;
    Ok(Some(spec_selector.to_string()))
}

/// `serviceAccountSelector`, its labels `pcsa.`-prefixed, if set.
fn service_account_part(sa_selector: &str) -> Result<Option<String>, ConvertError> {
    if sa_selector.trim().is_empty() {
        return Ok(None);
    }
    prefix_selector(
        "spec.serviceAccountSelector",
        sa_selector,
        SERVICE_ACCOUNT_PREFIX,
        false,
    )
    .map(Some)
}

/// What the two v3 policy kinds share once their endpoint selector is built.
struct V3Parts<'a> {
    id: PolicyId,
    tier: &'a str,
    order: Option<f64>,
    selector: Selector,
    types: &'a Option<Vec<PolicyType>>,
    ingress: &'a [tortie_api::rule::Rule],
    egress: &'a [tortie_api::rule::Rule],
    /// The namespace rule selectors are scoped to (namespaced policies).
    rule_ns: Option<&'a str>,
}

impl V3Parts<'_> {
    /// The policy, with `types` defaulted and the rules of each applied direction compiled.
    fn into_policy(self) -> Result<Policy, ConvertError> {
        let (ing, egr) = types_or_default(
            self.types,
            !self.ingress.is_empty(),
            !self.egress.is_empty(),
        );
        Ok(Policy {
            id: self.id,
            tier: tier_name(self.tier),
            order: self.order,
            selector: self.selector,
            ingress: ing
                .then(|| rules("spec.ingress", self.ingress, self.rule_ns))
                .transpose()?,
            egress: egr
                .then(|| rules("spec.egress", self.egress, self.rule_ns))
                .transpose()?,
            do_not_track: false,
            pre_dnat: false,
            apply_on_forward: false,
        })
    }
}

/// A Calico NetworkPolicy (or the spec of a StagedNetworkPolicy).
pub fn network_policy(
    kind: PolicyKind,
    namespace: &str,
    name: &str,
    spec: &NetworkPolicySpec,
) -> Result<Policy, ConvertError> {
    // Calico's order: selector, namespace scope, service accounts.
    let parts: Vec<String> = [
        own_selector(&spec.selector)?,
        Some(format!("{LABEL_NAMESPACE} == {}", quote(namespace))),
        service_account_part(&spec.service_account_selector)?,
    ]
    .into_iter()
    .flatten()
    .collect();
    V3Parts {
        id: PolicyId {
            kind,
            namespace: Some(namespace.to_string()),
            name: name.to_string(),
        },
        tier: &spec.tier,
        order: spec.order,
        selector: parse_sel("spec.selector", &and_all(parts))?,
        types: &spec.types,
        ingress: &spec.ingress,
        egress: &spec.egress,
        rule_ns: Some(namespace),
    }
    .into_policy()
}

/// A GlobalNetworkPolicy (or the spec of a StagedGlobalNetworkPolicy).
pub fn global_network_policy(
    kind: PolicyKind,
    name: &str,
    spec: &GlobalNetworkPolicySpec,
) -> Result<Policy, ConvertError> {
    // Calico's order: selector, service accounts, namespace selector.
    let ns_part = if spec.namespace_selector.trim().is_empty() {
        None
    } else {
        Some(prefix_selector(
            "spec.namespaceSelector",
            &spec.namespace_selector,
            NAMESPACE_PREFIX,
            true,
        )?)
    };
    let parts: Vec<String> = [
        own_selector(&spec.selector)?,
        service_account_part(&spec.service_account_selector)?,
        ns_part,
    ]
    .into_iter()
    .flatten()
    .collect();
    let selector = if parts.is_empty() {
        Selector::all()
    } else {
        parse_sel("spec.selector", &and_all(parts))?
    };
    let policy = V3Parts {
        id: PolicyId {
            kind,
            namespace: None,
            name: name.to_string(),
        },
        tier: &spec.tier,
        order: spec.order,
        selector,
        types: &spec.types,
        ingress: &spec.ingress,
        egress: &spec.egress,
        rule_ns: None,
    }
    .into_policy()?;
    Ok(Policy {
        do_not_track: spec.do_not_track,
        pre_dnat: spec.pre_dnat,
        apply_on_forward: spec.apply_on_forward,
        ..policy
    })
}

/// A Kubernetes LabelSelector as a Calico selector (no orchestrator clause).
pub fn k8s_label_selector(field: &str, ls: &LabelSelector) -> Result<String, ConvertError> {
    let mut parts = Vec::new();
    for (k, v) in &ls.match_labels {
        parts.push(format!("{k} == {}", quote(v)));
    }
    for (i, e) in ls.match_expressions.iter().enumerate() {
        let vals = || {
            e.values
                .iter()
                .map(|v| quote(v))
                .collect::<Vec<_>>()
                .join(", ")
        };
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in {{ {} }}", e.key, vals()),
            "NotIn" => format!("{} not in {{ {} }}", e.key, vals()),
            "Exists" => format!("has({})", e.key),
            "DoesNotExist" => format!("! has({})", e.key),
            op => {
                return Err(err(
                    format!("{field}.matchExpressions[{i}].operator"),
                    op,
                    "must be In, NotIn, Exists or DoesNotExist",
                ));
            }
        });
    }
    let s = parts.join(" && ");
    if !s.is_empty() {
        parse_sel(field, &s)?;
    }
    Ok(s)
}

fn k8s_pod_selector(field: &str, ls: &LabelSelector) -> Result<String, ConvertError> {
    let base = format!("{LABEL_ORCHESTRATOR} == 'k8s'");
    let rest = k8s_label_selector(field, ls)?;
    Ok(if rest.is_empty() {
        base
    } else {
        format!("{base} && {rest}")
    })
}

/// One converted peer: selector / namespace selector or nets.
fn k8s_peer(field: &str, peer: &NetworkPolicyPeer) -> Result<EntityRule, ConvertError> {
    if let Some(ib) = &peer.ip_block {
        return Ok(EntityRule {
            nets: vec![ib.cidr.clone()],
            not_nets: ib.except.clone(),
            ..EntityRule::default()
        });
    }
    let selector = match &peer.pod_selector {
        Some(ps) => k8s_pod_selector(&format!("{field}.podSelector"), ps)?,
        None => format!("{LABEL_ORCHESTRATOR} == 'k8s'"),
    };
    let namespace_selector = match &peer.namespace_selector {
        None => String::new(),
        Some(ns) => {
            let s = k8s_label_selector(&format!("{field}.namespaceSelector"), ns)?;
            if s.is_empty() { "all()".into() } else { s }
        }
    };
    Ok(EntityRule {
        selector,
        namespace_selector,
        ..EntityRule::default()
    })
}

/// A protocol (`None` = any) and its ports (empty = any port).
type ProtoPorts = (Option<String>, Vec<Port>);

/// Groups K8s ports per protocol: `(protocol, ports)`; `None` ports means any port.
fn k8s_ports(field: &str, list: &[NetworkPolicyPort]) -> Result<Vec<ProtoPorts>, ConvertError> {
    if list.is_empty() {
        return Ok(vec![(None, Vec::new())]);
    }
    let mut by_proto: BTreeMap<String, Option<Vec<Port>>> = BTreeMap::new();
    for (i, p) in list.iter().enumerate() {
        let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let entry = by_proto.entry(proto).or_insert_with(|| Some(Vec::new()));
        let Some(port) = &p.port else {
            // A protocol with no port: any port of that protocol.
            *entry = None;
            continue;
        };
        let port = match port {
            IntOrString::Int(n) => {
                let lo = u16::try_from(*n).ok().filter(|n| *n >= 1).ok_or_else(|| {
                    err(
                        format!("{field}[{i}].port"),
                        n.to_string(),
                        "must be 1-65535",
                    )
                })?;
                let hi = match p.end_port {
                    None => lo,
                    Some(e) => u16::try_from(e).ok().filter(|e| *e >= lo).ok_or_else(|| {
                        err(
                            format!("{field}[{i}].endPort"),
                            e.to_string(),
                            "must be between port and 65535",
                        )
                    })?,
                };
                Port::Range { min: lo, max: hi }
            }
            IntOrString::String(s) => match s.parse::<u16>() {
                Ok(n) if n >= 1 => Port::single(n),
                _ => Port::Named(s.clone()),
            },
        };
        if let Some(v) = entry {
            v.push(port);
        }
    }
    Ok(by_proto
        .into_iter()
        .map(|(proto, ports)| (Some(proto), ports.unwrap_or_default()))
        .collect())
}

fn api_proto(p: &str) -> tortie_api::numorstring::Protocol {
    tortie_api::numorstring::Protocol::Name(p.to_string())
}

/// A Kubernetes NetworkPolicy (or the spec of a StagedKubernetesNetworkPolicy) as a Calico
/// policy in the default tier at order 1000.
pub fn k8s_network_policy(
    kind: PolicyKind,
    namespace: &str,
    name: &str,
    spec: &K8sNetworkPolicySpec,
) -> Result<Policy, ConvertError> {
    let ns = Some(namespace);
    let pod_sel = k8s_pod_selector("spec.podSelector", &spec.pod_selector)?;
    let selector = parse_sel(
        "spec.podSelector",
        &format!("({pod_sel}) && {LABEL_NAMESPACE} == {}", quote(namespace)),
    )?;
    let convert_dir = |dir: &str,
                       list: &[tortie_api::k8s::NetworkPolicyRule]|
     -> Result<Vec<Rule>, ConvertError> {
        let mut api_rules = Vec::new();
        for (i, r) in list.iter().enumerate() {
            let f = format!("spec.{dir}[{i}]");
            let peers = if dir == "ingress" { &r.from } else { &r.to };
            let peer_rules: Vec<EntityRule> = if peers.is_empty() {
                vec![EntityRule::default()]
            } else {
                peers
                    .iter()
                    .enumerate()
                    .map(|(j, p)| {
                        k8s_peer(
                            &format!("{f}.{}[{j}]", if dir == "ingress" { "from" } else { "to" }),
                            p,
                        )
                    })
                    .collect::<Result<_, _>>()?
            };
            for (proto, ports) in k8s_ports(&format!("{f}.ports"), &r.ports)? {
                for peer in &peer_rules {
                    let mut rule = tortie_api::rule::Rule {
                        action: tortie_api::rule::Action::Allow,
                        ip_version: None,
                        protocol: proto.as_deref().map(api_proto),
                        not_protocol: None,
                        icmp: None,
                        not_icmp: None,
                        source: EntityRule::default(),
                        destination: EntityRule::default(),
                        http: None,
                        metadata: None,
                    };
                    let port_side = EntityRule {
                        ports: ports.clone(),
                        ..EntityRule::default()
                    };
                    if dir == "ingress" {
                        rule.source = peer.clone();
                        rule.destination = port_side;
                    } else {
                        rule.destination = EntityRule {
                            ports: ports.clone(),
                            ..peer.clone()
                        };
                    }
                    api_rules.push(rule);
                }
            }
        }
        rules(&format!("spec.{dir}"), &api_rules, ns)
    };
    let types: Vec<PolicyType> = if spec.policy_types.is_empty() {
        let mut t = vec![PolicyType::Ingress];
        if !spec.egress.is_empty() {
            t.push(PolicyType::Egress);
        }
        t
    } else {
        spec.policy_types.clone()
    };
    let ingress = if types.contains(&PolicyType::Ingress) {
        Some(convert_dir("ingress", &spec.ingress)?)
    } else {
        None
    };
    let egress = if types.contains(&PolicyType::Egress) {
        Some(convert_dir("egress", &spec.egress)?)
    } else {
        None
    };
    Ok(Policy {
        id: PolicyId {
            kind,
            namespace: Some(namespace.to_string()),
            name: name.to_string(),
        },
        tier: "default".into(),
        order: Some(K8S_POLICY_ORDER),
        selector,
        ingress,
        egress,
        do_not_track: false,
        pre_dnat: false,
        apply_on_forward: false,
    })
}

/// A Profile resource.
pub fn profile(name: &str, spec: &ProfileSpec) -> Result<Profile, ConvertError> {
    Ok(Profile {
        name: name.to_string(),
        ingress: rules("spec.ingress", &spec.ingress, None)?,
        egress: rules("spec.egress", &spec.egress, None)?,
        labels_to_apply: spec.labels_to_apply.clone(),
    })
}

/// Protocol number of a Kubernetes/Calico port protocol name (`TCP` when absent).
pub fn port_protocol(p: Option<&str>) -> Option<u8> {
    proto::parse(p.unwrap_or("TCP"))
}
