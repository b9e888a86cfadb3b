//! BGP kinds: BGPConfiguration, BGPPeer and BGPFilter.

use serde::{Deserialize, Serialize};

use crate::error::Errors;
use crate::kind::Kind;
use crate::meta::ObjectMeta;
use crate::numorstring::AsNumber;
use crate::resource::CalicoSpec;
use crate::validate;

/// `{cidr}` entries of the service advertisement lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CidrEntry {
    pub cidr: String,
}

/// A named BGP community.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Community {
    pub name: String,
    pub value: String,
}

/// Communities to attach to a prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefixAdvertisement {
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
}

/// A reference to a key in a Kubernetes Secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    pub name: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optional: Option<bool>,
}

/// `password: {secretKeyRef}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpPassword {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<SecretKeyRef>,
}

/// BGPConfiguration spec (`default` or `node.<name>`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPConfigurationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_to_node_mesh_enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    #[serde(
        default,
        rename = "serviceLoadBalancerIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_load_balancer_ips: Vec<CidrEntry>,
    #[serde(
        default,
        rename = "serviceExternalIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_external_ips: Vec<CidrEntry>,
    #[serde(
        default,
        rename = "serviceClusterIPs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub service_cluster_ips: Vec<CidrEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<Community>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefix_advertisements: Vec<PrefixAdvertisement>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_password: Option<BgpPassword>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_mesh_max_restart_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_interfaces: Vec<String>,
    #[serde(
        default,
        rename = "localWorkloadPeeringIPV4",
        skip_serializing_if = "Option::is_none"
    )]
    pub local_workload_peering_ipv4: Option<String>,
    #[serde(
        default,
        rename = "localWorkloadPeeringIPV6",
        skip_serializing_if = "Option::is_none"
    )]
    pub local_workload_peering_ipv6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_load_balancer_aggregation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_cluster_routes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_normal_route_priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_normal_route_priority: Option<i64>,
}

const LOG_LEVELS: [&str; 8] = [
    "Trace", "Debug", "Info", "Warning", "Error", "Fatal", "Panic", "None",
];

/// Checks a community value: `aa:nn` (16-bit each) or large `aa:nn:mm` (32-bit each).
pub fn is_community(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    match parts.len() {
        2 => parts.iter().all(|p| p.parse::<u16>().is_ok()),
        3 => parts.iter().all(|p| p.parse::<u32>().is_ok()),
        _ => false,
    }
}

fn validate_cidr_list(errs: &mut Errors, field: &str, list: &[CidrEntry]) {
    errs.at(field, |errs| {
        for (i, e) in list.iter().enumerate() {
            errs.idx(i, |errs| {
                validate::strict_cidr(errs, "cidr", &e.cidr);
            });
        }
    });
}

/// `ignoredInterfaces` entries: an interface name, optionally ending in `*`.
fn is_ignored_interface(s: &str) -> bool {
    let base = s.strip_suffix('*').unwrap_or(s);
    !base.is_empty()
        && base.len() <= 15
        && base
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// BGPFilter `interface` matches: interface names with `*` wildcards.
fn is_filter_interface(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '*'))
}

impl BGPConfigurationSpec {
    fn validate_mesh(&self, meta: &ObjectMeta, errs: &mut Errors) {
        if meta.name != "default" {
            if self.as_number.is_some() {
                errs.add(
                    "asNumber",
                    self.as_number.map(|a| a.0),
                    "can only be set on the default BGPConfiguration",
                );
            }
            if self.node_to_node_mesh_enabled.is_some() {
                errs.add(
                    "nodeToNodeMeshEnabled",
                    self.node_to_node_mesh_enabled,
                    "can only be set on the default BGPConfiguration",
                );
            }
        }
        if self.node_to_node_mesh_enabled == Some(false) {
            if self.node_mesh_password.is_some() {
                errs.add(
                    "nodeMeshPassword",
                    "secretKeyRef",
                    "requires nodeToNodeMeshEnabled",
                );
            }
            if let Some(t) = &self.node_mesh_max_restart_time {
                errs.add(
                    "nodeMeshMaxRestartTime",
                    t,
                    "requires nodeToNodeMeshEnabled",
                );
            }
        }
        for (i, iface) in self.ignored_interfaces.iter().enumerate() {
            if !is_ignored_interface(iface) {
                errs.add(
                    "ignoredInterfaces",
                    iface,
                    format!(
                        "ignoredInterfaces[{i}] is not an interface name (optionally ending in '*')"
                    ),
                );
            }
        }
    }

    fn validate_communities(&self, errs: &mut Errors) {
        if !self.communities.is_empty() && self.prefix_advertisements.is_empty() {
            errs.add(
                "communities",
                self.communities.len(),
                "communities are only used by prefixAdvertisements, and there are none",
            );
        }
        if self.communities.len() > 500 {
            errs.add(
                "communities",
                self.communities.len(),
                "at most 500 communities",
            );
        }
        errs.at("communities", |errs| {
            for (i, c) in self.communities.iter().enumerate() {
                errs.idx(i, |errs| {
                    if !is_community(&c.value) {
                        errs.add(
                            "value",
                            &c.value,
                            "must be a community aa:nn or a large community aa:nn:mm",
                        );
                    }
                    if c.name.is_empty() {
                        errs.missing("name", "a community needs a name");
                    }
                });
            }
        });
        errs.at("prefixAdvertisements", |errs| {
            for (i, p) in self.prefix_advertisements.iter().enumerate() {
                errs.idx(i, |errs| {
                    validate::strict_cidr(errs, "cidr", &p.cidr);
                    if p.communities.is_empty() {
                        errs.missing(
                            "communities",
                            "a prefix advertisement needs at least one community",
                        );
                    }
                    for c in &p.communities {
                        let known = self.communities.iter().any(|k| &k.name == c);
                        if !known && !is_community(c) {
                            errs.add(
                                "communities",
                                c,
                                "neither a defined community name nor a community value",
                            );
                        }
                    }
                });
            }
        });
    }
}

impl CalicoSpec for BGPConfigurationSpec {
    const KIND: Kind = Kind::BGPConfiguration;

    fn apply_defaults(&mut self, _meta: &mut ObjectMeta) {
        self.log_severity_screen
            .get_or_insert_with(|| "Info".to_string());
        self.service_load_balancer_aggregation
            .get_or_insert_with(|| "Enabled".to_string());
    }

    fn validate(&self, meta: &ObjectMeta, errs: &mut Errors) {
        self.validate_mesh(meta, errs);
        if let Some(l) = &self.log_severity_screen {
            validate::one_of(errs, "logSeverityScreen", l, &LOG_LEVELS);
        }
        validate_cidr_list(
            errs,
            "serviceLoadBalancerIPs",
            &self.service_load_balancer_ips,
        );
        validate_cidr_list(errs, "serviceExternalIPs", &self.service_external_ips);
        validate_cidr_list(errs, "serviceClusterIPs", &self.service_cluster_ips);
        self.validate_communities(errs);
        if let Some(p) = self.listen_port
            && !(1..=65535).contains(&p)
        {
            errs.add("listenPort", p, "must be 1-65535");
        }
        if let Some(d) = &self.node_mesh_max_restart_time {
            validate::duration(errs, "nodeMeshMaxRestartTime", d);
        }
        if let Some(b) = &self.bind_mode {
            validate::one_of(errs, "bindMode", b, &["None", "NodeIP"]);
        }
        for (field, v) in [
            (
                "localWorkloadPeeringIPV4",
                &self.local_workload_peering_ipv4,
            ),
            (
                "localWorkloadPeeringIPV6",
                &self.local_workload_peering_ipv6,
            ),
        ] {
            if let Some(ip) = v {
                validate::ip(errs, field, ip);
            }
        }
        if let Some(a) = &self.service_load_balancer_aggregation {
            validate::one_of(
                errs,
                "serviceLoadBalancerAggregation",
                a,
                &["Enabled", "Disabled"],
            );
        }
        if let Some(p) = &self.program_cluster_routes {
            let allowed = [
                "Enabled",
                "Disabled",
                "EnabledIPIPOnly",
                "EnabledNoEncapOnly",
            ];
            validate::one_of(errs, "programClusterRoutes", p, &allowed);
        }
        for (field, v) in [
            ("ipv4NormalRoutePriority", self.ipv4_normal_route_priority),
            ("ipv6NormalRoutePriority", self.ipv6_normal_route_priority),
        ] {
            if let Some(p) = v
                && !(1..=2_147_483_646).contains(&p)
            {
                errs.add(field, p, "must be 1-2147483646");
            }
        }
    }
}

/// BGPPeer spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPPeerSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(default, rename = "peerIP", skip_serializing_if = "String::is_empty")]
    pub peer_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_selector: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer_selector: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_original_next_hop: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_hop_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<BgpPassword>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    #[serde(
        default,
        rename = "failureDetectionMode",
        skip_serializing_if = "Option::is_none"
    )]
    pub failure_detection_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_restart_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bird_gateway_mode: Option<String>,
    #[serde(
        default,
        rename = "numAllowedLocalASNumbers",
        skip_serializing_if = "Option::is_none"
    )]
    pub num_allowed_local_as_numbers: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_security: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable_by: Option<String>,
    #[serde(
        default,
        rename = "localASNumber",
        skip_serializing_if = "Option::is_none"
    )]
    pub local_as_number: Option<AsNumber>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub local_workload_selector: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse_peering: Option<String>,
}

/// Parses `ip`, `ip:port` or `[v6]:port`.
pub fn parse_peer_ip(s: &str) -> Option<(std::net::IpAddr, Option<u16>)> {
    if let Ok(ip) = s.parse() {
        return Some((ip, None));
    }
    let sa: std::net::SocketAddr = s.parse().ok()?;
    Some((sa.ip(), Some(sa.port())))
}

impl BGPPeerSpec {
    fn validate_options(&self, errs: &mut Errors) {
        let enums: [(&str, &Option<String>, &[&str]); 6] = [
            (
                "nextHopMode",
                &self.next_hop_mode,
                &["Auto", "Self", "Keep"],
            ),
            (
                "sourceAddress",
                &self.source_address,
                &["UseNodeIP", "None"],
            ),
            (
                "failureDetectionMode",
                &self.failure_detection_mode,
                &["None", "BFDIfDirectlyConnected"],
            ),
            (
                "restartMode",
                &self.restart_mode,
                &["GracefulRestart", "LongLivedGracefulRestart"],
            ),
            (
                "birdGatewayMode",
                &self.bird_gateway_mode,
                &["Recursive", "DirectIfDirectlyConnected"],
            ),
            ("reversePeering", &self.reverse_peering, &["Auto", "Manual"]),
        ];
        for (field, v, allowed) in enums {
            if let Some(v) = v {
                validate::one_of(errs, field, v, allowed);
            }
        }
        for (field, v) in [
            ("maxRestartTime", &self.max_restart_time),
            ("keepaliveTime", &self.keepalive_time),
        ] {
            if let Some(d) = v {
                validate::duration(errs, field, d);
            }
        }
        if let Some(n) = self.num_allowed_local_as_numbers
            && !(0..=10).contains(&n)
        {
            errs.add("numAllowedLocalASNumbers", n, "must be 0-10");
        }
        if let Some(t) = self.ttl_security
            && !(0..=255).contains(&t)
        {
            errs.add("ttlSecurity", t, "must be 0-255");
        }
        if let Some(r) = &self.reachable_by {
            validate::ip(errs, "reachableBy", r);
        }
        for (i, f) in self.filters.iter().enumerate() {
            errs.at("filters", |errs| {
                errs.idx(i, |errs| validate::dns1123_subdomain(errs, "", f))
            });
        }
    }
}

impl CalicoSpec for BGPPeerSpec {
    const KIND: Kind = Kind::BGPPeer;

    fn validate(&self, _meta: &ObjectMeta, errs: &mut Errors) {
        if !self.node.is_empty() && !self.node_selector.is_empty() {
            errs.add(
                "nodeSelector",
                &self.node_selector,
                "node and nodeSelector cannot both be set",
            );
        }
        if !self.node.is_empty() {
            validate::dns1123_subdomain(errs, "node", &self.node);
        }
        if !self.peer_ip.is_empty() && !self.peer_selector.is_empty() {
            errs.add(
                "peerSelector",
                &self.peer_selector,
                "peerIP and peerSelector cannot both be set",
            );
        }
        let peer = if self.peer_ip.is_empty() {
            None
        } else {
            parse_peer_ip(&self.peer_ip)
        };
        if !self.peer_ip.is_empty() && peer.is_none_or(|(_, port)| port == Some(0)) {
            errs.add(
                "peerIP",
                &self.peer_ip,
                "must be an IP, IP:port or [IPv6]:port with a port of 1-65535",
            );
        }
        if self.as_number.is_some() && !self.peer_selector.is_empty() {
            errs.add(
                "asNumber",
                self.as_number.map(|a| a.0),
                "cannot be set with peerSelector (the peers' own AS numbers are used)",
            );
        }
        if self.keep_original_next_hop == Some(true) && self.next_hop_mode.is_some() {
            errs.add(
                "nextHopMode",
                &self.next_hop_mode,
                "cannot be set together with keepOriginalNextHop",
            );
        }
        if !self.local_workload_selector.is_empty() {
            if !self.peer_ip.is_empty() {
                errs.add(
                    "peerIP",
                    &self.peer_ip,
                    "cannot be set with localWorkloadSelector",
                );
            }
            if !self.peer_selector.is_empty() {
                errs.add(
                    "peerSelector",
                    &self.peer_selector,
                    "cannot be set with localWorkloadSelector",
                );
            }
            if self.as_number.is_none() {
                errs.missing("asNumber", "localWorkloadSelector peers need an asNumber");
            }
        }
        if let Some(r) = &self.reachable_by {
            match (peer, r.parse::<std::net::IpAddr>()) {
                (None, _) => errs.add("reachableBy", r, "requires peerIP"),
                (Some((p, _)), Ok(g)) if p.is_ipv4() != g.is_ipv4() => {
                    errs.add("reachableBy", r, "must be the same IP family as peerIP");
                }
                _ => {}
            }
        }
        for (field, sel) in [
            ("nodeSelector", &self.node_selector),
            ("peerSelector", &self.peer_selector),
            ("localWorkloadSelector", &self.local_workload_selector),
        ] {
            if !sel.is_empty() {
                validate::selector(errs, field, sel);
            }
        }
        self.validate_options(errs);
    }
}

/// A BGPFilter rule's prefix-length bounds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefixLength {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<i64>,
}

/// One BGPFilter rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BgpFilterRule {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_length: Option<PrefixLength>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub match_operator: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub peer_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub communities: Option<CommunityMatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_path_prefix: Option<Vec<i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    pub action: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<FilterOperation>,
}

/// A BGPFilter community match (one value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommunityMatch {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// `{value}` of addCommunity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommunityValue {
    pub value: String,
}

/// `{prefix}` of prependASPath.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AsPathPrepend {
    #[serde(default)]
    pub prefix: Vec<AsNumber>,
}

/// `{value}` of setPriority.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriorityValue {
    pub value: i64,
}

/// One BGPFilter operation: exactly one field is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilterOperation {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_community: Option<CommunityValue>,
    #[serde(
        default,
        rename = "prependASPath",
        skip_serializing_if = "Option::is_none"
    )]
    pub prepend_as_path: Option<AsPathPrepend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_priority: Option<PriorityValue>,
}

fn validate_operations(errs: &mut Errors, ops: &[FilterOperation]) {
    errs.at("operations", |errs| {
        for (i, op) in ops.iter().enumerate() {
            errs.idx(i, |errs| {
                let set = usize::from(op.add_community.is_some())
                    + usize::from(op.prepend_as_path.is_some())
                    + usize::from(op.set_priority.is_some());
                if set != 1 {
                    errs.add("", set, "operations: each operation sets exactly one of addCommunity, prependASPath, setPriority");
                }
                if let Some(c) = &op.add_community
                    && !is_community(&c.value)
                {
                    errs.at("addCommunity", |errs| errs.add("value", &c.value, "must be a community aa:nn or aa:nn:mm"));
                }
                if let Some(p) = &op.set_priority
                    && !(1..=2_147_483_646).contains(&p.value)
                {
                    errs.at("setPriority", |errs| errs.add("value", p.value, "must be 1-2147483646"));
                }
            });
        }
    });
}

/// BGPFilter spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BGPFilterSpec {
    #[serde(default, rename = "exportV4", skip_serializing_if = "Vec::is_empty")]
    pub export_v4: Vec<BgpFilterRule>,
    #[serde(default, rename = "importV4", skip_serializing_if = "Vec::is_empty")]
    pub import_v4: Vec<BgpFilterRule>,
    #[serde(default, rename = "exportV6", skip_serializing_if = "Vec::is_empty")]
    pub export_v6: Vec<BgpFilterRule>,
    #[serde(default, rename = "importV6", skip_serializing_if = "Vec::is_empty")]
    pub import_v6: Vec<BgpFilterRule>,
}

fn validate_filter_rule(errs: &mut Errors, r: &BgpFilterRule, v4: bool) {
    validate::one_of(errs, "action", &r.action, &["Accept", "Reject"]);
    if !r.match_operator.is_empty() {
        validate::one_of(
            errs,
            "matchOperator",
            &r.match_operator,
            &["Equal", "NotEqual", "In", "NotIn"],
        );
    }
    match (r.cidr.is_empty(), r.match_operator.is_empty()) {
        (false, true) => errs.missing("matchOperator", "a cidr needs a matchOperator"),
        (true, false) => errs.missing("cidr", "a matchOperator needs a cidr"),
        _ => {}
    }
    if !r.cidr.is_empty()
        && let Some(net) = validate::strict_cidr(errs, "cidr", &r.cidr)
        && net.addr().is_ipv4() != v4
    {
        errs.add(
            "cidr",
            &r.cidr,
            format!(
                "an IPv{} filter needs an IPv{} cidr",
                if v4 { 4 } else { 6 },
                if v4 { 4 } else { 6 }
            ),
        );
    }
    if let Some(pl) = &r.prefix_length {
        let max_len = if v4 { 32 } else { 128 };
        errs.at("prefixLength", |errs| {
            for (f, v) in [("min", pl.min), ("max", pl.max)] {
                if let Some(v) = v
                    && !(0..=max_len).contains(&v)
                {
                    errs.add(f, v, format!("must be 0-{max_len}"));
                }
            }
            if let (Some(a), Some(b)) = (pl.min, pl.max)
                && a > b
            {
                errs.add("min", a, "must not exceed max");
            }
        });
    }
    if !r.source.is_empty() {
        validate::one_of(errs, "source", &r.source, &["RemotePeers"]);
    }
    if !r.peer_type.is_empty() {
        validate::one_of(errs, "peerType", &r.peer_type, &["eBGP", "iBGP"]);
    }
    if !r.interface.is_empty() && !is_filter_interface(&r.interface) {
        errs.add(
            "interface",
            &r.interface,
            "not a valid interface name or pattern",
        );
    }
    if r.prefix_length.is_some() && r.cidr.is_empty() {
        errs.add("prefixLength", "set", "prefixLength requires a cidr");
    }
    if let Some(c) = &r.communities {
        errs.at("communities", |errs| {
            if c.values.len() > 1 {
                errs.add(
                    "values",
                    &c.values,
                    "at most one community value may be matched",
                );
            }
            for v in &c.values {
                if !is_community(v) {
                    errs.add("values", v, "must be a community aa:nn or aa:nn:mm");
                }
            }
        });
    }
    validate_operations(errs, &r.operations);
    if !r.operations.is_empty() && r.action != "Accept" {
        errs.add(
            "operations",
            r.operations.len(),
            "operations are allowed only with action Accept",
        );
    }
}

impl CalicoSpec for BGPFilterSpec {
    const KIND: Kind = Kind::BGPFilter;

    fn validate(&self, _meta: &ObjectMeta, errs: &mut Errors) {
        for (field, list, v4) in [
            ("exportV4", &self.export_v4, true),
            ("importV4", &self.import_v4, true),
            ("exportV6", &self.export_v6, false),
            ("importV6", &self.import_v6, false),
        ] {
            errs.at(field, |errs| {
                for (i, r) in list.iter().enumerate() {
                    errs.idx(i, |errs| validate_filter_rule(errs, r, v4));
                }
            });
        }
    }
}
