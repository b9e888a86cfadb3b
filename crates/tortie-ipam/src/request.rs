//! Requests to and answers from [`crate::Ipam`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tortie_api::ipam::AllowedUse;

/// Attribute key under which the allocating node is recorded (as Calico's CNI plugin does).
pub const ATTR_NODE: &str = "node";
/// Attribute key of the pod's namespace.
pub const ATTR_NAMESPACE: &str = "namespace";
/// Attribute key of the pod's name.
pub const ATTR_POD: &str = "pod";

/// Handle ID Calico's CNI plugin uses for a pod on network `network` (conf `name`).
pub fn pod_handle_id(network: &str, container_id: &str) -> String {
    format!("{network}.{container_id}")
}

/// Handle of a node's IPIP tunnel address.
pub fn ipip_tunnel_handle_id(node: &str) -> String {
    format!("ipip-tunnel-addr-{node}")
}

/// Handle of a node's IPv4 VXLAN tunnel address.
pub fn vxlan_tunnel_handle_id(node: &str) -> String {
    format!("vxlan-tunnel-addr-{node}")
}

/// Handle of a node's IPv6 VXLAN tunnel address.
pub fn vxlan_v6_tunnel_handle_id(node: &str) -> String {
    format!("vxlan-v6-tunnel-addr-{node}")
}

/// Handle of a node's IPv4 WireGuard address.
pub fn wireguard_tunnel_handle_id(node: &str) -> String {
    format!("wireguard-tunnel-addr-{node}")
}

/// Automatic assignment of some addresses of each family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoAssignRequest {
    pub num_v4: usize,
    pub num_v6: usize,
    /// Owner of the addresses, e.g. `k8s-pod-network.<containerID>`.
    pub handle: String,
    /// Stored with each address (`namespace`, `pod`, `node`, `timestamp`, ...). `node` is
    /// filled in from `hostname` when absent.
    pub attrs: BTreeMap<String, String>,
    /// The node asking; blocks are claimed for it.
    pub hostname: String,
    /// Pool names or CIDRs to use, in order; empty = every matching Automatic pool.
    pub ipv4_pools: Vec<String>,
    pub ipv6_pools: Vec<String>,
    /// The pod's namespace, for pools' namespaceSelector.
    pub namespace: Option<String>,
    /// A tighter cap on this host's blocks than IPAMConfiguration's.
    pub max_blocks_per_host: Option<u32>,
    pub intended_use: AllowedUse,
}

impl Default for AutoAssignRequest {
    fn default() -> Self {
        Self {
            num_v4: 0,
            num_v6: 0,
            handle: String::new(),
            attrs: BTreeMap::new(),
            hostname: String::new(),
            ipv4_pools: Vec::new(),
            ipv6_pools: Vec::new(),
            namespace: None,
            max_blocks_per_host: None,
            intended_use: AllowedUse::Workload,
        }
    }
}

/// Addresses granted, block-masked (e.g. `10.244.3.17/26`); narrow to /32 or /128 for use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoAssignResult {
    pub ipv4: Vec<IpNet>,
    pub ipv6: Vec<IpNet>,
}

/// Assignment of one specific address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignIpRequest {
    pub ip: IpAddr,
    pub handle: String,
    pub attrs: BTreeMap<String, String>,
    /// The node asking; claims the block for it if the block does not exist yet.
    pub hostname: String,
}

/// Everything known about one allocated address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllocationInfo {
    pub ip: IpAddr,
    /// The block holding the address.
    pub block: IpNet,
    pub handle: Option<String>,
    pub attrs: BTreeMap<String, String>,
    /// The node the block is affine to (`host:<node>`), if any.
    pub block_affinity: Option<String>,
    pub sequence_number: Option<u64>,
    /// True when the allocating node (attribute `node`) is not the block's owner.
    pub borrowed: bool,
}

/// What [`crate::Ipam::gc`] may release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcPolicy {
    /// An orphaned allocation is released only once it has been seen orphaned for this long
    /// (zero: on first sight).
    pub grace: Duration,
    /// Handles the runtime says are live (CNI GC `cni.dev/valid-attachments`). When set, every
    /// allocation matching `handle_prefix` whose handle is not listed is orphaned unless a Pod
    /// or WorkloadEndpoint for its `namespace`/`pod` attributes exists.
    pub valid_handles: Option<BTreeSet<String>>,
    /// Only allocations whose handle starts with this are considered.
    pub handle_prefix: Option<String>,
}

impl Default for GcPolicy {
    /// Calico's kube-controllers default: 15 minutes' grace, Pod/WEP-based only.
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(15 * 60),
            valid_handles: None,
            handle_prefix: None,
        }
    }
}

/// What one GC pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GcSummary {
    /// Allocations looked at.
    pub scanned: usize,
    /// Allocations found orphaned.
    pub orphaned: usize,
    /// Orphans still inside their grace period (or held back because their handle has a live
    /// address).
    pub waiting: usize,
    /// Addresses released, sorted.
    pub released: Vec<IpAddr>,
}
