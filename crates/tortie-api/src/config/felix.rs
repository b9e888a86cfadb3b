//! `FelixConfiguration`: Felix's dataplane settings, cluster-wide (`default`), per node
//! (`node.<nodename>`) or for the nodes matching `nodeSelector`.
//!
//! Every field is optional: Calico stores only what was set and Felix fills in its own
//! defaults at runtime. Fields follow the order of Calico's `FelixConfigurationSpec`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::checks::{canonicalize_duration, drop_empty};
use crate::error::Errors;
use crate::kind::Kind;
use crate::meta::ObjectMeta;
use crate::numorstring::Port;
use crate::resource::CalicoSpec;

/// A failsafe port: traffic to/from it on host endpoints is always allowed (Calico `ProtoPort`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProtoPort {
    /// `TCP`, `UDP` or `SCTP`; Felix treats an empty protocol as TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    pub port: u16,
    /// Optional CIDR restricting the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<String>,
}

/// Overrides the liveness/readiness timeout of one Felix subcomponent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthTimeoutOverride {
    pub name: String,
    /// Go duration.
    pub timeout: String,
}

/// Deprecated single route-table range (`routeTableRange`), within 1..=250.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTableRange {
    pub min: i64,
    pub max: i64,
}

/// One entry of `routeTableRanges`: an inclusive range of Linux route-table indices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteTableIDRange {
    pub min: i64,
    pub max: i64,
}

impl RouteTableIDRange {
    /// Number of tables in the range (inclusive).
    pub fn len(&self) -> i64 {
        self.max.saturating_sub(self.min).saturating_add(1)
    }

    pub fn is_empty(&self) -> bool {
        self.len() <= 0
    }
}

/// BPF conntrack timer overrides; each is a duration such as `30s` or `Auto` (use the
/// kernel's `nf_conntrack_*` value).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BPFConntrackTimeouts {
    /// Felix default: 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_grace_period: Option<String>,
    /// Felix default: 20s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_syn_sent: Option<String>,
    /// Felix default: 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_established: Option<String>,
    /// Felix default: Auto.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_fins_seen: Option<String>,
    /// Felix default: 40s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_reset_seen: Option<String>,
    /// Felix default: 60s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_timeout: Option<String>,
    /// Felix default: 10m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generic_timeout: Option<String>,
    /// Felix default: 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_timeout: Option<String>,
}

impl BPFConntrackTimeouts {
    /// `(jsonName, value)` for every timer.
    pub fn entries(&self) -> [(&'static str, Option<&str>); 8] {
        [
            ("creationGracePeriod", self.creation_grace_period.as_deref()),
            ("tcpSynSent", self.tcp_syn_sent.as_deref()),
            ("tcpEstablished", self.tcp_established.as_deref()),
            ("tcpFinsSeen", self.tcp_fins_seen.as_deref()),
            ("tcpResetSeen", self.tcp_reset_seen.as_deref()),
            ("udpTimeout", self.udp_timeout.as_deref()),
            ("genericTimeout", self.generic_timeout.as_deref()),
            ("icmpTimeout", self.icmp_timeout.as_deref()),
        ]
    }
}

/// A DSCP value: a number, or a name such as `EF`, `AF11`, `CS1` (Calico `numorstring.DSCP`).
///
/// Calico's API accepts any `uint8` or string here (Felix checks the value when it loads it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dscp {
    Value(u8),
    Name(String),
}

impl fmt::Display for Dscp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dscp::Value(v) => write!(f, "{v}"),
            Dscp::Name(n) => f.write_str(n),
        }
    }
}

impl Serialize for Dscp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Dscp::Value(v) => s.serialize_u8(*v),
            Dscp::Name(n) => s.serialize_str(n),
        }
    }
}

impl<'de> Deserialize<'de> for Dscp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Num(i64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Num(n) => u8::try_from(n)
                .map(Dscp::Value)
                .map_err(|_| D::Error::custom(format!("DSCP value {n} is out of range 0-255"))),
            // Like Go's Uint8OrString: a string holding a uint8 is stored as the number.
            Raw::Str(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                match s.parse::<u8>() {
                    Ok(v) => Ok(Dscp::Value(v)),
                    Err(_) => Ok(Dscp::Name(s)),
                }
            }
            Raw::Str(s) => Ok(Dscp::Name(s)),
        }
    }
}

/// Spec of a `FelixConfiguration` (Calico `FelixConfigurationSpec`): 188 optional fields.
///
/// Durations are Go duration strings; [`CalicoSpec::apply_defaults`] rewrites them in Go's
/// canonical form (`90s` becomes `1m30s`) as Calico does when it stores them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FelixConfigurationSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_internal_dataplane_driver: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_driver: Option<String>,
    /// Go duration. Deprecated in Calico.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataplane_watchdog_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_support: Option<bool>,
    /// Go duration. Felix default: 90s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_refresh_interval: Option<String>,
    /// Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_refresh_interval: Option<String>,
    /// Go duration. Felix default: 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables_refresh_interval: Option<String>,
    /// Go duration. Felix default: 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables_post_write_check_interval: Option<String>,
    /// Go duration. Felix default: 50ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables_lock_probe_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_detect_override: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature_gates: Option<String>,
    /// Go duration. Felix default: 90s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipsets_refresh_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ipset_size: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables_backend: Option<String>,
    /// Go duration. Felix default: 90s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp_refresh_interval: Option<String>,
    /// Go duration. Felix default: 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netlink_timeout: Option<String>,
    /// Felix default: 127.0.0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_addr: Option<String>,
    /// Felix default: 8775.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata_port: Option<i64>,
    /// Felix default: Empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openstack_region: Option<String>,
    /// Felix default: cali.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_prefix: Option<String>,
    /// Felix default: kube-ipvs0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface_exclude: Option<String>,
    /// Felix default: insert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_insert_mode: Option<String>,
    /// Felix default: Drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_endpoint_to_host_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables_filter_allow_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables_mangle_allow_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables_filter_deny_action: Option<String>,
    /// Felix default: calico-packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_action_rate_limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_action_rate_limit_burst: Option<i64>,
    /// Felix default: /var/log/calico/felix.log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_file_path: Option<String>,
    /// Felix default: Info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_file: Option<String>,
    /// Felix default: Info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_screen: Option<String>,
    /// Felix default: Info.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_severity_sys: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_debug_filename_regex: Option<String>,
    /// Felix default: nil (unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip_enabled: Option<bool>,
    /// Felix default: 0 (auto-detect).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "ipipMTU")]
    pub ipip_mtu: Option<i64>,
    /// Felix default: nil (unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_enabled: Option<bool>,
    /// Felix default: 0 (auto-detect).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "vxlanMTU")]
    pub vxlan_mtu: Option<i64>,
    /// Felix default: 0 (auto-detect).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "vxlanMTUV6"
    )]
    pub vxlan_mtu_v6: Option<i64>,
    /// Felix default: 4789.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_port: Option<i64>,
    /// Felix default: 4096.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "vxlanVNI")]
    pub vxlan_vni: Option<i64>,
    /// Felix default: false.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "allowVXLANPacketsFromWorkloads"
    )]
    pub allow_vxlan_packets_from_workloads: Option<bool>,
    /// Felix default: false.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "allowIPIPPacketsFromWorkloads"
    )]
    pub allow_ipip_packets_from_workloads: Option<bool>,
    /// Go duration. Felix default: 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporting_interval: Option<String>,
    /// Go duration. Felix default: 90s.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "reportingTTL"
    )]
    pub reporting_ttl: Option<String>,
    /// Felix default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_reporting_enabled: Option<bool>,
    /// Go duration. Felix default: 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_reporting_delay: Option<String>,
    /// Felix default: /var/run/calico.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_status_path_prefix: Option<String>,
    /// Felix default: 0xffff0000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables_mark_mask: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_conntrack_invalid_check: Option<bool>,
    /// Felix default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_enabled: Option<bool>,
    /// Felix default: localhost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_host: Option<String>,
    /// Felix default: 9099.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_port: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_timeout_overrides: Option<Vec<HealthTimeoutOverride>>,
    /// Felix default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_enabled: Option<bool>,
    /// Felix default: empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_host: Option<String>,
    /// Felix default: 9091.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_port: Option<i64>,
    /// Felix default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_go_metrics_enabled: Option<bool>,
    /// Felix default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_process_metrics_enabled: Option<bool>,
    /// Felix default: true.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "prometheusWireGuardMetricsEnabled"
    )]
    pub prometheus_wireguard_metrics_enabled: Option<bool>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "prometheusMetricsCAFile"
    )]
    pub prometheus_metrics_ca_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_cert_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_key_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prometheus_metrics_client_auth: Option<String>,
    /// Felix default: tcp:22, udp:68, tcp:179, tcp:2379, tcp:2380, tcp:5473, tcp:6443, tcp:6666, tcp:6667.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failsafe_inbound_host_ports: Option<Vec<ProtoPort>>,
    /// Felix default: udp:53, udp:67, tcp:179, tcp:2379, tcp:2380, tcp:5473, tcp:6443, tcp:6666, tcp:6667.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failsafe_outbound_host_ports: Option<Vec<ProtoPort>>,
    /// Felix default: 30000:32767.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_node_port_ranges: Option<Vec<Port>>,
    /// Felix default: Empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_sync_path_prefix: Option<String>,
    /// Felix default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_reporting_enabled: Option<bool>,
    /// Go duration. Felix default: 300s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_reporting_initial_delay: Option<String>,
    /// Go duration. Felix default: 86400s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_reporting_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_port_range: Option<Port>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_outgoing_address: Option<String>,
    /// Felix default: IPPoolsOnly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_outgoing_exclusions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_route_source_address: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "deviceRouteSourceAddressIPv6"
    )]
    pub device_route_source_address_ipv6: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_route_protocol: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_external_routes: Option<bool>,
    /// Felix default: EnabledIPIPOnly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program_cluster_routes: Option<String>,
    /// Felix default: Enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_forwarding: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_nodes_list: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_memory_profile_path: Option<String>,
    /// Felix default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_disable_log_dropping: Option<bool>,
    /// Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_simulate_calc_graph_hang_after: Option<String>,
    /// Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_simulate_dataplane_hang_after: Option<String>,
    /// Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_simulate_dataplane_apply_delay: Option<String>,
    /// Felix default: localhost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debug_port: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "iptablesNATOutgoingInterfaceFilter"
    )]
    pub iptables_nat_outgoing_interface_filter: Option<String>,
    /// Felix default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar_acceleration_enabled: Option<bool>,
    /// Felix default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp_enabled: Option<bool>,
    /// Felix default: false.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "genericXDPEnabled"
    )]
    pub generic_xdp_enabled: Option<bool>,
    /// Felix default: Auto.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nftables_mode: Option<String>,
    /// Felix default: Disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nftables_flow_table_offload: Option<String>,
    /// Felix default: "".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nftables_flow_table_data_iface_pattern: Option<String>,
    /// Go duration. Felix default: 90s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nftables_refresh_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nftables_filter_allow_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nftables_mangle_allow_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nftables_filter_deny_action: Option<String>,
    /// Felix default: 0xffff0000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nftables_mark_mask: Option<i64>,
    /// Felix default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_enabled: Option<bool>,
    /// Felix default: TunnelAddress.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "bpfOverlayHostSourceIP"
    )]
    pub bpf_overlay_host_source_ip: Option<String>,
    /// Felix default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_disable_unprivileged: Option<bool>,
    /// Felix default: Auto.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "bpfJITHardening"
    )]
    pub bpf_jit_hardening: Option<String>,
    /// Felix default: Off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_log_level: Option<String>,
    /// Felix default: Off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_conntrack_log_level: Option<String>,
    /// Felix default: Userspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_conntrack_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_conntrack_timeouts: Option<BPFConntrackTimeouts>,
    /// Go duration. Felix default: unset - read from net.ipv4.ipfrag_time.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "bpfIPFragTimeout"
    )]
    pub bpf_ip_frag_timeout: Option<String>,
    /// Felix default: unset - means all debug logs are emitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_log_filters: Option<BTreeMap<String, String>>,
    /// Felix default: unset - means logs are emitted when BPFLogLevel id debug and BPFLogFilters not set..
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "bpfCTLBLogFilter"
    )]
    pub bpf_ctlb_log_filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_data_iface_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_l3_iface_pattern: Option<String>,
    /// Deprecated in Calico. Felix default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_connect_time_load_balancing_enabled: Option<bool>,
    /// Felix default: TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_connect_time_load_balancing: Option<String>,
    /// Felix default: Enabled.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "bpfHostNetworkedNATWithoutCTLB"
    )]
    pub bpf_host_networked_nat_without_ctlb: Option<String>,
    /// Felix default: Tunnel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_external_service_mode: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "bpfDSROptoutCIDRs"
    )]
    pub bpf_dsr_optout_cidrs: Option<Vec<String>>,
    /// Felix default: 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_ext_to_service_connmark: Option<i64>,
    /// Felix default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_kube_proxy_iptables_cleanup_enabled: Option<bool>,
    /// Go duration. Felix default: 1s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_kube_proxy_min_sync_period: Option<String>,
    /// Felix default: 10256.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_kube_proxy_healthz_port: Option<i64>,
    /// Felix default: 20000:29999.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "bpfPSNATPorts"
    )]
    pub bpf_psnat_ports: Option<Port>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "bpfMapSizeNATFrontend"
    )]
    pub bpf_map_size_nat_frontend: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "bpfMapSizeNATBackend"
    )]
    pub bpf_map_size_nat_backend: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "bpfMapSizeNATAffinity"
    )]
    pub bpf_map_size_nat_affinity: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_map_size_route: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_map_size_conntrack: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_map_size_per_cpu_conntrack: Option<i64>,
    /// Felix default: DoubleIfFull.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_map_size_conntrack_scaling: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_map_size_conntrack_cleanup_queue: Option<i64>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "bpfMapSizeIPSets"
    )]
    pub bpf_map_size_ip_sets: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_map_size_if_state: Option<i64>,
    /// Felix default: true - bypass Linux conntrack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_host_conntrack_bypass: Option<bool>,
    /// Felix default: true.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "bpfIPFragmentReassemblyEnabled"
    )]
    pub bpf_ip_fragment_reassembly_enabled: Option<bool>,
    /// Felix default: Loose.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "bpfEnforceRPF"
    )]
    pub bpf_enforce_rpf: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_policy_debug_enabled: Option<bool>,
    /// Felix default: docker+.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_force_track_packets_from_ifaces: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "bpfDisableGROForIfaces"
    )]
    pub bpf_disable_gro_for_ifaces: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "bpfExcludeCIDRsFromNAT"
    )]
    pub bpf_exclude_cidrs_from_nat: Option<Vec<String>>,
    /// Felix default: 1.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "bpfExportBufferSizeMB"
    )]
    pub bpf_export_buffer_size_mb: Option<i64>,
    /// Felix default: Disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub istio_ambient_mode: Option<String>,
    /// Felix default: 23.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "istioDSCPMark"
    )]
    pub istio_dscp_mark: Option<Dscp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_v2_path: Option<String>,
    /// Felix default: Continuous.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_logs_policy_evaluation_mode: Option<String>,
    /// Felix default: Enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_redirect_to_peer: Option<String>,
    /// Felix default: Netkit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_attach_type: Option<String>,
    /// Go duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_logs_flush_interval: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_logs_collector_debug_trace: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_logs_goldmane_server: Option<String>,
    /// Felix default: Disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow_logs_local_reporter: Option<String>,
    /// Felix default: Disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_profiling: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_table_ranges: Option<Vec<RouteTableIDRange>>,
    /// Deprecated in Calico.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_table_range: Option<RouteTableRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_sync_disabled: Option<bool>,
    /// Felix default: 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_normal_route_priority: Option<i64>,
    /// Felix default: 512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4_elevated_route_priority: Option<i64>,
    /// Felix default: 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_normal_route_priority: Option<i64>,
    /// Felix default: 512.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6_elevated_route_priority: Option<i64>,
    /// Go duration. Felix default: 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_migration_route_convergence_time: Option<String>,
    /// Felix default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_enabled: Option<bool>,
    /// Felix default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_enabled_v6: Option<bool>,
    /// Felix default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_threading_enabled: Option<bool>,
    /// Felix default: 51820.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_listening_port: Option<i64>,
    /// Felix default: 51821.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_listening_port_v6: Option<i64>,
    /// Felix default: 99.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_routing_rule_priority: Option<i64>,
    /// Felix default: wireguard.cali.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_interface_name: Option<String>,
    /// Felix default: wg-v6.cali.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_interface_name_v6: Option<String>,
    /// Felix default: 1440.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "wireguardMTU"
    )]
    pub wireguard_mtu: Option<i64>,
    /// Felix default: 1420.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "wireguardMTUV6"
    )]
    pub wireguard_mtu_v6: Option<i64>,
    /// Felix default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_host_encryption_enabled: Option<bool>,
    /// Go duration. Felix default: 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wireguard_keep_alive: Option<String>,
    /// Felix default: DoNothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_src_dst_check: Option<String>,
    /// Felix default: Drop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_loop_prevention: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_source_spoofing: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu_iface_pattern: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "floatingIPs"
    )]
    pub floating_ips: Option<String>,
    /// Felix default: Disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_subnet_l2_reachability: Option<String>,
    /// Go duration. Felix default: 120s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_subnet_l2_reachability_refresh_interval: Option<String>,
    /// Felix default: Disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub windows_manage_firewall_rules: Option<String>,
    /// Felix default: 40.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "goGCThreshold"
    )]
    pub go_gc_threshold: Option<i64>,
    /// Felix default: -1.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "goMemoryLimitMB"
    )]
    pub go_memory_limit_mb: Option<i64>,
    /// Felix default: -1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub go_max_procs: Option<i64>,
    /// Felix default: false.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "requireMTUFile"
    )]
    pub require_mtu_file: Option<bool>,
    /// Felix default: 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_maglev_max_endpoints_per_service: Option<i64>,
    /// Felix default: 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bpf_maglev_max_services: Option<i64>,
}

impl CalicoSpec for FelixConfigurationSpec {
    const KIND: Kind = Kind::FelixConfiguration;

    /// What Calico does to a FelixConfiguration on create and update:
    ///
    /// * Go's JSON round trip: durations in canonical form, empty strings of Go's plain
    ///   `string` fields dropped, `bpfLogLevel` always present (it has no `omitempty`);
    /// * libcalico-go's `setDefaults`: `floatingIPs: Disabled`,
    ///   `bpfConnectTimeLoadBalancing: TCP` and `bpfHostNetworkedNATWithoutCTLB: Enabled`
    ///   when unset, and the deprecated `bpfConnectTimeLoadBalancingEnabled`, when set,
    ///   overriding both;
    /// * CRD schema defaults: `nftablesMode: Auto`, `nftablesFlowTableOffload: Disabled`.
    fn apply_defaults(&mut self, _meta: &mut ObjectMeta) {
        self.normalize();

        self.floating_ips.get_or_insert_with(|| "Disabled".into());
        self.bpf_connect_time_load_balancing
            .get_or_insert_with(|| "TCP".into());
        self.bpf_host_networked_nat_without_ctlb
            .get_or_insert_with(|| "Enabled".into());
        if let Some(enabled) = self.bpf_connect_time_load_balancing_enabled {
            self.bpf_host_networked_nat_without_ctlb = Some("Disabled".into());
            let ctlb = if enabled { "Enabled" } else { "Disabled" };
            self.bpf_connect_time_load_balancing = Some(ctlb.into());
        }

        self.nftables_mode.get_or_insert_with(|| "Auto".into());
        self.nftables_flow_table_offload
            .get_or_insert_with(|| "Disabled".into());
    }

    fn validate(&self, meta: &ObjectMeta, errs: &mut Errors) {
        self.check(meta, errs);
    }
}

impl FelixConfigurationSpec {
    /// Rewrites the spec as Go's decode/encode of `FelixConfigurationSpec` would leave it.
    fn normalize(&mut self) {
        for d in [
            &mut self.dataplane_watchdog_timeout,
            &mut self.route_refresh_interval,
            &mut self.interface_refresh_interval,
            &mut self.iptables_refresh_interval,
            &mut self.iptables_post_write_check_interval,
            &mut self.iptables_lock_probe_interval,
            &mut self.ipsets_refresh_interval,
            &mut self.xdp_refresh_interval,
            &mut self.netlink_timeout,
            &mut self.reporting_interval,
            &mut self.reporting_ttl,
            &mut self.endpoint_reporting_delay,
            &mut self.usage_reporting_initial_delay,
            &mut self.usage_reporting_interval,
            &mut self.debug_simulate_calc_graph_hang_after,
            &mut self.debug_simulate_dataplane_hang_after,
            &mut self.debug_simulate_dataplane_apply_delay,
            &mut self.nftables_refresh_interval,
            &mut self.bpf_ip_frag_timeout,
            &mut self.bpf_kube_proxy_min_sync_period,
            &mut self.flow_logs_flush_interval,
            &mut self.live_migration_route_convergence_time,
            &mut self.wireguard_keep_alive,
            &mut self.local_subnet_l2_reachability_refresh_interval,
        ] {
            canonicalize_duration(d);
        }

        // Go `string` fields tagged `omitempty`: "" is the same as unset.
        for s in [
            &mut self.dataplane_driver,
            &mut self.feature_detect_override,
            &mut self.feature_gates,
            &mut self.metadata_addr,
            &mut self.openstack_region,
            &mut self.interface_prefix,
            &mut self.interface_exclude,
            &mut self.chain_insert_mode,
            &mut self.default_endpoint_to_host_action,
            &mut self.iptables_filter_allow_action,
            &mut self.iptables_mangle_allow_action,
            &mut self.iptables_filter_deny_action,
            &mut self.log_prefix,
            &mut self.log_file_path,
            &mut self.log_severity_file,
            &mut self.log_severity_screen,
            &mut self.log_severity_sys,
            &mut self.log_debug_filename_regex,
            &mut self.endpoint_status_path_prefix,
            &mut self.prometheus_metrics_host,
            &mut self.policy_sync_path_prefix,
            &mut self.nat_outgoing_address,
            &mut self.device_route_source_address,
            &mut self.device_route_source_address_ipv6,
            &mut self.ip_forwarding,
            &mut self.debug_memory_profile_path,
            &mut self.iptables_nat_outgoing_interface_filter,
            &mut self.nftables_flow_table_data_iface_pattern,
            &mut self.nftables_filter_allow_action,
            &mut self.nftables_mangle_allow_action,
            &mut self.nftables_filter_deny_action,
            &mut self.bpf_conntrack_log_level,
            &mut self.bpf_ctlb_log_filter,
            &mut self.bpf_data_iface_pattern,
            &mut self.bpf_l3_iface_pattern,
            &mut self.bpf_external_service_mode,
            &mut self.bpf_map_size_conntrack_scaling,
            &mut self.bpf_enforce_rpf,
            &mut self.bpf_disable_gro_for_ifaces,
            &mut self.cgroup_v2_path,
            &mut self.bpf_redirect_to_peer,
            &mut self.bpf_profiling,
            &mut self.route_source,
            &mut self.wireguard_interface_name,
            &mut self.wireguard_interface_name_v6,
            &mut self.service_loop_prevention,
            &mut self.workload_source_spoofing,
            &mut self.mtu_iface_pattern,
        ] {
            drop_empty(s);
        }
        // `bpfLogLevel` has no `omitempty`: Calico always writes it, empty when unset.
        self.bpf_log_level.get_or_insert_with(String::new);

        // A plain (non-pointer) slice with `omitempty`: an empty list is dropped.
        if self
            .health_timeout_overrides
            .as_ref()
            .is_some_and(Vec::is_empty)
        {
            self.health_timeout_overrides = None;
        }
        for o in self.health_timeout_overrides.iter_mut().flatten() {
            let mut t = Some(std::mem::take(&mut o.timeout));
            canonicalize_duration(&mut t);
            o.timeout = t.unwrap_or_default();
        }
        for p in [
            &mut self.failsafe_inbound_host_ports,
            &mut self.failsafe_outbound_host_ports,
        ]
        .into_iter()
        .flatten()
        .flatten()
        {
            drop_empty(&mut p.protocol);
            drop_empty(&mut p.net);
        }
    }
}
