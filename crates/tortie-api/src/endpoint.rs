//! Endpoint kinds: HostEndpoint, WorkloadEndpoint, NetworkSet, GlobalNetworkSet and Node.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Errors;
use crate::kind::Kind;
use crate::meta::ObjectMeta;
use crate::numorstring::{AsNumber, Protocol, is_port_name};
use crate::resource::CalicoSpec;
use crate::validate;

/// A named port on an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointPort {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<u16>,
    #[serde(default, rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

fn validate_ports(errs: &mut Errors, ports: &[EndpointPort]) {
    errs.at("ports", |errs| {
        for (i, p) in ports.iter().enumerate() {
            errs.idx(i, |errs| {
                if p.name.is_empty() && p.host_port.is_none() {
                    errs.missing("name", "a port needs a name (or a hostPort)");
                } else if !p.name.is_empty() && !is_port_name(&p.name) {
                    errs.add(
                        "name",
                        &p.name,
                        "must be a port name (1-15 of a-z, 0-9, '-')",
                    );
                }
                if !p.protocol.supports_ports() {
                    errs.add(
                        "protocol",
                        p.protocol.to_string(),
                        "must be TCP, UDP or SCTP",
                    );
                }
                if p.port == 0 {
                    errs.add("port", p.port, "must be 1-65535");
                }
                if let Some(ip) = &p.host_ip {
                    validate::ip(errs, "hostIP", ip);
                }
            });
        }
    });
}

fn validate_nets(errs: &mut Errors, field: &str, nets: &[String]) {
    errs.at(field, |errs| {
        for (i, n) in nets.iter().enumerate() {
            errs.idx(i, |errs| {
                validate::cidr(errs, "", n);
            });
        }
    });
}

/// NetworkSet spec (namespaced).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NetworkSetSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<String>,
}

impl CalicoSpec for NetworkSetSpec {
    const KIND: Kind = Kind::NetworkSet;

    fn validate(&self, meta: &ObjectMeta, errs: &mut Errors) {
        validate::no_reserved_labels(errs, &meta.labels);
        validate_nets(errs, "nets", &self.nets);
    }
}

/// GlobalNetworkSet spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GlobalNetworkSetSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nets: Vec<String>,
}

impl CalicoSpec for GlobalNetworkSetSpec {
    const KIND: Kind = Kind::GlobalNetworkSet;

    fn validate(&self, meta: &ObjectMeta, errs: &mut Errors) {
        validate::no_reserved_labels(errs, &meta.labels);
        validate_nets(errs, "nets", &self.nets);
    }
}

/// HostEndpoint spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostEndpointSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_name: String,
    #[serde(default, rename = "expectedIPs", skip_serializing_if = "Vec::is_empty")]
    pub expected_ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
}

impl CalicoSpec for HostEndpointSpec {
    const KIND: Kind = Kind::HostEndpoint;

    fn validate(&self, _meta: &ObjectMeta, errs: &mut Errors) {
        if self.node.is_empty() {
            errs.missing("node", "a HostEndpoint needs a node");
        } else {
            validate::dns1123_subdomain(errs, "node", &self.node);
        }
        if self.interface_name.is_empty() && self.expected_ips.is_empty() {
            errs.missing(
                "interfaceName",
                "a HostEndpoint needs interfaceName or expectedIPs",
            );
        }
        if !self.interface_name.is_empty() && self.interface_name != "*" {
            validate::interface_name(errs, "interfaceName", &self.interface_name);
        }
        errs.at("expectedIPs", |errs| {
            for (i, ip) in self.expected_ips.iter().enumerate() {
                errs.idx(i, |errs| {
                    validate::ip(errs, "", ip);
                });
            }
        });
        errs.at("profiles", |errs| {
            for (i, p) in self.profiles.iter().enumerate() {
                errs.idx(i, |errs| validate::NameRule::Profile.check(errs, "", p));
            }
        });
        validate_ports(errs, &self.ports);
    }
}

/// A floating-IP NAT mapping on a workload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IpNat {
    #[serde(rename = "internalIP")]
    pub internal_ip: String,
    #[serde(rename = "externalIP")]
    pub external_ip: String,
}

/// WorkloadEndpoint spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkloadEndpointSpec {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub orchestrator: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub workload: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node: String,
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "String::is_empty"
    )]
    pub container_id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pod: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub service_account_name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_networks: Vec<String>,
    #[serde(default, rename = "ipNATs", skip_serializing_if = "Vec::is_empty")]
    pub ip_nats: Vec<IpNat>,
    #[serde(
        default,
        rename = "ipv4Gateway",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv4_gateway: String,
    #[serde(
        default,
        rename = "ipv6Gateway",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv6_gateway: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub profiles: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub interface_name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<EndpointPort>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_spoofed_source_prefixes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos_controls: Option<Value>,
}

/// Escapes one WorkloadEndpoint name segment: every `-` is doubled.
fn escape_segment(s: &str) -> String {
    s.replace('-', "--")
}

impl WorkloadEndpointSpec {
    /// Calico's WorkloadEndpoint name: `<node>-<orch>-<workload>-<endpoint>` with every '-'
    /// inside a segment doubled (`k8s` uses the pod, `cni` the container ID).
    pub fn expected_name(&self) -> Option<String> {
        if self.node.is_empty() || self.orchestrator.is_empty() || self.endpoint.is_empty() {
            return None;
        }
        let workload = match self.orchestrator.as_str() {
            "k8s" => &self.pod,
            "cni" => &self.container_id,
            _ => &self.workload,
        };
        if workload.is_empty() {
            return None;
        }
        Some(
            [&self.node, &self.orchestrator, workload, &self.endpoint]
                .iter()
                .map(|s| escape_segment(s))
                .collect::<Vec<_>>()
                .join("-"),
        )
    }

    fn validate_nats(&self, errs: &mut Errors) {
        let nets: Vec<ipnet::IpNet> = self
            .ip_networks
            .iter()
            .filter_map(|n| validate::parse_cidr(n))
            .collect();
        errs.at("ipNATs", |errs| {
            for (i, n) in self.ip_nats.iter().enumerate() {
                errs.idx(i, |errs| {
                    let int = validate::ip(errs, "internalIP", &n.internal_ip);
                    let ext = validate::ip(errs, "externalIP", &n.external_ip);
                    if let (Some(int), Some(ext)) = (int, ext) {
                        if int.is_ipv4() != ext.is_ipv4() {
                            errs.add(
                                "externalIP",
                                &n.external_ip,
                                "must be the same IP family as internalIP",
                            );
                        }
                        if !nets.iter().any(|net| net.contains(&int)) {
                            errs.add(
                                "internalIP",
                                &n.internal_ip,
                                "must be one of the endpoint's ipNetworks (ipNATs)",
                            );
                        }
                    }
                });
            }
        });
    }
}

/// Label carrying an endpoint's namespace.
pub const NAMESPACE_LABEL: &str = "projectcalico.org/namespace";
/// Label carrying an endpoint's orchestrator.
pub const ORCHESTRATOR_LABEL: &str = "projectcalico.org/orchestrator";

impl CalicoSpec for WorkloadEndpointSpec {
    const KIND: Kind = Kind::WorkloadEndpoint;

    fn apply_defaults(&mut self, meta: &mut ObjectMeta) {
        if let Some(ns) = &meta.namespace {
            meta.labels.insert(NAMESPACE_LABEL.to_string(), ns.clone());
        }
        if !self.orchestrator.is_empty() {
            meta.labels
                .insert(ORCHESTRATOR_LABEL.to_string(), self.orchestrator.clone());
        }
    }

    fn validate(&self, meta: &ObjectMeta, errs: &mut Errors) {
        if let Some(expected) = self.expected_name()
            && meta.name != expected
        {
            errs.add_abs(
                "metadata.name",
                &meta.name,
                format!("does not match the endpoint's identifiers; expected {expected:?}"),
            );
        }
        let id_ok = self.container_id.is_empty()
            || (self
                .container_id
                .starts_with(|c: char| c.is_ascii_alphanumeric())
                && self
                    .container_id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')));
        if !id_ok {
            errs.add(
                "containerID",
                &self.container_id,
                "must start with a letter or digit and contain only letters, digits, '-' and '_'",
            );
        }
        self.validate_nats(errs);
        if !self.node.is_empty() {
            validate::dns1123_subdomain(errs, "node", &self.node);
        }
        errs.at("ipNetworks", |errs| {
            for (i, n) in self.ip_networks.iter().enumerate() {
                errs.idx(i, |errs| {
                    if let Some(net) = validate::cidr(errs, "", n)
                        && net.prefix_len() != net.max_prefix_len()
                    {
                        errs.add("", n, "workload networks must be /32 (IPv4) or /128 (IPv6)");
                    }
                });
            }
        });
        if !self.ipv4_gateway.is_empty() {
            validate::ip(errs, "ipv4Gateway", &self.ipv4_gateway);
        }
        if !self.ipv6_gateway.is_empty() {
            validate::ip(errs, "ipv6Gateway", &self.ipv6_gateway);
        }
        if !self.interface_name.is_empty() {
            validate::interface_name(errs, "interfaceName", &self.interface_name);
        }
        if !self.mac.is_empty() {
            validate::mac(errs, "mac", &self.mac);
        }
        errs.at("profiles", |errs| {
            for (i, p) in self.profiles.iter().enumerate() {
                errs.idx(i, |errs| validate::NameRule::Profile.check(errs, "", p));
            }
        });
        validate_ports(errs, &self.ports);
        validate_nets(
            errs,
            "allowSpoofedSourcePrefixes",
            &self.allow_spoofed_source_prefixes,
        );
    }
}

/// `spec.bgp` of a Node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeBgpSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_number: Option<AsNumber>,
    #[serde(
        default,
        rename = "ipv4Address",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv4_address: String,
    #[serde(
        default,
        rename = "ipv6Address",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv6_address: String,
    #[serde(
        default,
        rename = "ipv4IPIPTunnelAddr",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv4_ipip_tunnel_addr: String,
    #[serde(
        default,
        rename = "routeReflectorClusterID",
        skip_serializing_if = "String::is_empty"
    )]
    pub route_reflector_cluster_id: String,
}

/// A node address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeAddress {
    pub address: String,
    #[serde(default, rename = "type", skip_serializing_if = "String::is_empty")]
    pub type_: String,
}

/// An orchestrator reference.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrchRef {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_name: String,
    pub orchestrator: String,
}

/// WireGuard interface addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeWireguardSpec {
    #[serde(
        default,
        rename = "interfaceIPv4Address",
        skip_serializing_if = "String::is_empty"
    )]
    pub interface_ipv4_address: String,
    #[serde(
        default,
        rename = "interfaceIPv6Address",
        skip_serializing_if = "String::is_empty"
    )]
    pub interface_ipv6_address: String,
}

/// Node spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<NodeBgpSpec>,
    #[serde(
        default,
        rename = "ipv4VXLANTunnelAddr",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv4_vxlan_tunnel_addr: String,
    #[serde(
        default,
        rename = "vxlanTunnelMACAddr",
        skip_serializing_if = "String::is_empty"
    )]
    pub vxlan_tunnel_mac_addr: String,
    #[serde(
        default,
        rename = "ipv6VXLANTunnelAddr",
        skip_serializing_if = "String::is_empty"
    )]
    pub ipv6_vxlan_tunnel_addr: String,
    #[serde(
        default,
        rename = "vxlanTunnelMACAddrV6",
        skip_serializing_if = "String::is_empty"
    )]
    pub vxlan_tunnel_mac_addr_v6: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub orch_refs: Vec<OrchRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard: Option<NodeWireguardSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<NodeAddress>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Value>,
}

impl CalicoSpec for NodeSpec {
    const KIND: Kind = Kind::Node;

    fn validate(&self, _meta: &ObjectMeta, errs: &mut Errors) {
        if let Some(wg) = &self.wireguard {
            errs.at("wireguard", |errs| {
                for (field, v) in [
                    ("interfaceIPv4Address", &wg.interface_ipv4_address),
                    ("interfaceIPv6Address", &wg.interface_ipv6_address),
                ] {
                    if !v.is_empty() {
                        validate::ip(errs, field, v);
                    }
                }
            });
        }
        if let Some(bgp) = &self.bgp {
            if bgp.ipv4_address.is_empty() && bgp.ipv6_address.is_empty() {
                errs.missing("bgp", "bgp needs ipv4Address or ipv6Address");
            }
            errs.at("bgp", |errs| {
                for (field, v, want_v4) in [
                    ("ipv4Address", &bgp.ipv4_address, true),
                    ("ipv6Address", &bgp.ipv6_address, false),
                ] {
                    if !v.is_empty()
                        && let Some(net) = validate::cidr(errs, field, v)
                        && net.addr().is_ipv4() != want_v4
                    {
                        errs.add(
                            field,
                            v,
                            format!("must be an IPv{} address", if want_v4 { 4 } else { 6 }),
                        );
                    }
                }
                if !bgp.ipv4_ipip_tunnel_addr.is_empty() {
                    validate::ip(errs, "ipv4IPIPTunnelAddr", &bgp.ipv4_ipip_tunnel_addr);
                }
                if !bgp.route_reflector_cluster_id.is_empty()
                    && bgp
                        .route_reflector_cluster_id
                        .parse::<std::net::Ipv4Addr>()
                        .is_err()
                {
                    errs.add(
                        "routeReflectorClusterID",
                        &bgp.route_reflector_cluster_id,
                        "must be an IPv4-formatted ID",
                    );
                }
            });
        }
        for (field, v) in [
            ("ipv4VXLANTunnelAddr", &self.ipv4_vxlan_tunnel_addr),
            ("ipv6VXLANTunnelAddr", &self.ipv6_vxlan_tunnel_addr),
        ] {
            if !v.is_empty() {
                validate::ip(errs, field, v);
            }
        }
        for (field, v) in [
            ("vxlanTunnelMACAddr", &self.vxlan_tunnel_mac_addr),
            ("vxlanTunnelMACAddrV6", &self.vxlan_tunnel_mac_addr_v6),
        ] {
            if !v.is_empty() {
                validate::mac(errs, field, v);
            }
        }
        errs.at("addresses", |errs| {
            for (i, a) in self.addresses.iter().enumerate() {
                errs.idx(i, |errs| {
                    validate::cidr(errs, "address", &a.address);
                    if !a.type_.is_empty() {
                        validate::one_of(
                            errs,
                            "type",
                            &a.type_,
                            &["CalicoNodeIP", "InternalIP", "ExternalIP"],
                        );
                    }
                });
            }
        });
    }
}
