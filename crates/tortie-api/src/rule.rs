//! Policy rules (`Rule`, `EntityRule`) and their validation, mirroring Calico's v3 validator.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::Errors;
use crate::numorstring::{Port, Protocol};
use crate::validate;

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    Allow,
    Deny,
    Log,
    Pass,
}

/// ICMP type/code match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IcmpFields {
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "type")]
    pub type_: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
}

/// Match on the endpoint's service account.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
}

/// Match on a Kubernetes service's endpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceMatch {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
}

/// HTTP match (enforced only by an L7 proxy; carried and validated, not enforced at L3/4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<BTreeMap<String, String>>,
}

/// Rule metadata; annotations are rendered as rule comments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleMetadata {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The source or destination side of a rule.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntityRule {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_nets: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub selector: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub not_selector: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace_selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_ports: Vec<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_accounts: Option<ServiceAccountMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<ServiceMatch>,
}

impl EntityRule {
    pub fn is_empty(&self) -> bool {
        *self == EntityRule::default()
    }
}

/// One policy rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    pub action: Action,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_protocol: Option<Protocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpFields>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "notICMP")]
    pub not_icmp: Option<IcmpFields>,
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub source: EntityRule,
    #[serde(default, skip_serializing_if = "EntityRule::is_empty")]
    pub destination: EntityRule,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<RuleMetadata>,
}

/// Maximum rules per direction.
pub const MAX_RULES: usize = 1024;

/// Which direction a rule list belongs to (services rules differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

/// Validates a list of rules under field `field` (`ingress` or `egress`).
pub fn validate_rules(errs: &mut Errors, field: &str, rules: &[Rule], dir: Direction) {
    if rules.len() > MAX_RULES {
        errs.add(
            field,
            rules.len(),
            format!("at most {MAX_RULES} rules are allowed"),
        );
    }
    errs.at(field, |errs| {
        for (i, r) in rules.iter().enumerate() {
            errs.idx(i, |errs| validate_rule(errs, r, dir));
        }
    });
}

fn validate_icmp(errs: &mut Errors, field: &str, icmp: &IcmpFields, proto: Option<&Protocol>) {
    let proto_num = proto.and_then(Protocol::number);
    if !matches!(proto_num, Some(1 | 58)) {
        errs.add(
            field,
            format!("{icmp:?}"),
            "ICMP matches require protocol ICMP or ICMPv6",
        );
    }
    errs.at(field, |errs| {
        if let Some(t) = icmp.type_
            && !(0..=254).contains(&t)
        {
            errs.add("type", t, "ICMP type must be 0-254");
        }
        if let Some(c) = icmp.code {
            if icmp.type_.is_none() {
                errs.add("code", c, "an ICMP code requires a type");
            }
            if !(0..=255).contains(&c) {
                errs.add("code", c, "ICMP code must be 0-255");
            }
        }
    });
}

fn validate_rule(errs: &mut Errors, r: &Rule, dir: Direction) {
    if let Some(v) = r.ip_version
        && v != 4
        && v != 6
    {
        errs.add("ipVersion", v, "must be 4 or 6");
    }
    for (field, p) in [("protocol", &r.protocol), ("notProtocol", &r.not_protocol)] {
        if let Some(p) = p
            && !p.is_valid()
        {
            errs.add(
                field,
                p.to_string(),
                "must be TCP, UDP, ICMP, ICMPv6, SCTP, UDPLite or 1-255",
            );
        }
    }
    for p in [&r.protocol, &r.not_protocol].into_iter().flatten() {
        match (p.number(), r.ip_version) {
            (Some(1), Some(6)) => errs.add("ipVersion", 6, format!("protocol {p} is IPv4-only")),
            (Some(58), Some(4)) => errs.add("ipVersion", 4, format!("protocol {p} is IPv6-only")),
            _ => {}
        }
    }
    if let Some(icmp) = &r.icmp {
        validate_icmp(errs, "icmp", icmp, r.protocol.as_ref());
    }
    if let Some(icmp) = &r.not_icmp {
        validate_icmp(errs, "notICMP", icmp, r.protocol.as_ref());
    }
    let mut family = r.ip_version;
    errs.at("source", |errs| {
        validate_entity(errs, &r.source, r, &mut family, dir, true)
    });
    errs.at("destination", |errs| {
        validate_entity(errs, &r.destination, r, &mut family, dir, false)
    });
    if let Some(http) = &r.http {
        validate_http(errs, http, r, dir);
    }
    if let Some(m) = &r.metadata {
        errs.at("metadata", |errs| {
            errs.at("annotations", |errs| {
                for k in m.annotations.keys() {
                    validate::label_key(errs, k);
                }
            })
        });
    }
}

fn validate_http(errs: &mut Errors, http: &HttpMatch, r: &Rule, dir: Direction) {
    if r.action != Action::Allow {
        errs.add(
            "http",
            format!("{:?}", r.action),
            "HTTP matches are allowed only on Allow rules",
        );
    }
    if dir == Direction::Egress {
        errs.add(
            "http",
            "egress",
            "HTTP matches are allowed only on ingress rules",
        );
    }
    if let Some(p) = &r.protocol
        && p.number() != Some(6)
    {
        errs.add(
            "http",
            p.to_string(),
            "HTTP matches require protocol TCP (or none)",
        );
    }
    {
        errs.at("http", |errs| {
            let mut seen = std::collections::BTreeSet::new();
            for m in &http.methods {
                if !seen.insert(m) {
                    errs.add("methods", m, "duplicate HTTP method");
                }
            }
            if http.methods.len() > 20 {
                errs.add("methods", http.methods.len(), "at most 20 methods");
            }
            if http.paths.len() > 20 {
                errs.add("paths", http.paths.len(), "at most 20 paths");
            }
            for (i, p) in http.paths.iter().enumerate() {
                let ok = p.len() == 1 && (p.contains_key("exact") || p.contains_key("prefix"));
                let good_path = p.values().all(|v| {
                    v.starts_with('/') && !v.contains(['?', '#']) && !v.contains(char::is_whitespace)
                });
                if !ok {
                    errs.add("paths", p, format!("paths[{i}] needs exactly one of exact or prefix"));
                } else if !good_path {
                    errs.add("paths", p, format!("paths[{i}] must start with '/' and contain no query, fragment or spaces"));
                }
            }
        });
    }
}

fn net_family(
    errs: &mut Errors,
    field: &str,
    nets: &[String],
    family: &mut Option<i64>,
) -> Vec<IpNet> {
    let mut out = Vec::new();
    errs.at(field, |errs| {
        for (i, n) in nets.iter().enumerate() {
            errs.idx(i, |errs| {
                if let Some(net) = validate::cidr(errs, "", n) {
                    let v = if net.addr().is_ipv4() { 4 } else { 6 };
                    match *family {
                        Some(f) if f != v => errs.add(
                            "",
                            n,
                            format!("IPv{v} network in a rule that is IPv{f} (by ipVersion or other nets)"),
                        ),
                        _ => *family = Some(v),
                    }
                    out.push(net);
                }
            });
        }
    });
    out
}

fn validate_ports(errs: &mut Errors, field: &str, ports: &[Port], r: &Rule) {
    let numeric = ports.iter().any(|p| !p.is_named());
    if numeric && !r.protocol.as_ref().is_some_and(Protocol::supports_ports) {
        errs.add(
            field,
            ports.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "numeric ports require protocol TCP, UDP, SCTP or UDPLite",
        );
    }
    for p in ports {
        if let Port::Range { min: 0, .. } = p {
            errs.add(field, p.to_string(), "port 0 is not allowed");
        }
    }
    if ports.len() > 50 {
        errs.add(field, ports.len(), "at most 50 ports");
    }
}

fn validate_entity(
    errs: &mut Errors,
    e: &EntityRule,
    r: &Rule,
    family: &mut Option<i64>,
    dir: Direction,
    is_source: bool,
) {
    net_family(errs, "nets", &e.nets, family);
    let not_nets = net_family(errs, "notNets", &e.not_nets, family);
    if not_nets.iter().any(|n| n.prefix_len() == 0) {
        errs.add(
            "notNets",
            &e.not_nets,
            "a notNets entry of /0 matches nothing",
        );
    }
    if e.nets.len() > 256 {
        errs.add("nets", e.nets.len(), "at most 256 networks");
    }
    if e.not_nets.len() > 256 {
        errs.add("notNets", e.not_nets.len(), "at most 256 networks");
    }
    for (field, sel) in [
        ("selector", &e.selector),
        ("notSelector", &e.not_selector),
        ("namespaceSelector", &e.namespace_selector),
    ] {
        if !sel.is_empty() {
            validate::selector(errs, field, sel);
        }
    }
    for (field, sel) in [("selector", &e.selector), ("notSelector", &e.not_selector)] {
        if sel.contains("global()") {
            errs.add(
                field,
                sel,
                "global() is only valid as a whole namespaceSelector",
            );
        }
    }
    if e.namespace_selector.contains("global()") && e.namespace_selector.trim() != "global()" {
        errs.add(
            "namespaceSelector",
            &e.namespace_selector,
            "global() must be the whole namespaceSelector",
        );
    }
    validate_ports(errs, "ports", &e.ports, r);
    validate_ports(errs, "notPorts", &e.not_ports, r);
    if let Some(sa) = &e.service_accounts {
        errs.at("serviceAccounts", |errs| {
            if !sa.selector.is_empty() {
                validate::selector(errs, "selector", &sa.selector);
            }
            for (i, n) in sa.names.iter().enumerate() {
                errs.idx(i, |errs| validate::dns1123_subdomain(errs, "names", n));
            }
        });
    }
    if let Some(svc) = &e.services {
        errs.at("services", |errs| {
            if svc.name.is_empty() {
                errs.missing("name", "a service match needs a name");
            }
            if svc.namespace.is_empty() {
                errs.missing("namespace", "a service match needs a namespace");
            }
        });
        let conflicts = [
            ("selector", !e.selector.is_empty()),
            ("notSelector", !e.not_selector.is_empty()),
            ("namespaceSelector", !e.namespace_selector.is_empty()),
            ("nets", !e.nets.is_empty()),
            ("notNets", !e.not_nets.is_empty()),
            ("serviceAccounts", e.service_accounts.is_some()),
            ("notPorts", !e.not_ports.is_empty()),
            ("ports", !e.ports.is_empty() && !is_source),
        ];
        for (field, set) in conflicts {
            if set {
                errs.add(field, &svc.name, "cannot be combined with services");
            }
        }
        match (dir, is_source) {
            (Direction::Egress, true) => errs.add(
                "services",
                &svc.name,
                "egress rules may match services only in destination",
            ),
            (Direction::Ingress, false) => errs.add(
                "services",
                &svc.name,
                "ingress rules may match services only in source",
            ),
            _ => {}
        }
    }
}
