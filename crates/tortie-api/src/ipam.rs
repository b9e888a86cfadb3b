//! IPAM kinds: IPPool, IPReservation and IPAMConfiguration.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::Errors;
use crate::kind::Kind;
use crate::meta::ObjectMeta;
use crate::resource::CalicoSpec;
use crate::validate;

/// Default IPv4 block prefix length.
pub const DEFAULT_BLOCK_SIZE_V4: u8 = 26;
/// Default IPv6 block prefix length.
pub const DEFAULT_BLOCK_SIZE_V6: u8 = 122;

/// Encapsulation mode for IPIP and VXLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EncapMode {
    Never,
    Always,
    CrossSubnet,
}

/// What addresses from a pool may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AllowedUse {
    Workload,
    Tunnel,
    LoadBalancer,
}

/// Whether a pool is used automatically or only on explicit request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssignmentMode {
    Automatic,
    Manual,
}

/// Deprecated v1-style `ipip: {enabled, mode}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LegacyIpip {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// IPPool spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPPoolSpec {
    #[serde(default)]
    pub cidr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_mode: Option<EncapMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip_mode: Option<EncapMode>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nat_outgoing: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    #[serde(
        default,
        rename = "disableBGPExport",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub disable_bgp_export: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<i64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub node_selector: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace_selector: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_uses: Vec<AllowedUse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignment_mode: Option<AssignmentMode>,
    /// Deprecated: use `ipipMode`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipip: Option<LegacyIpip>,
    /// Deprecated: use `natOutgoing`.
    #[serde(
        default,
        rename = "nat-outgoing",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub nat_outgoing_v1: bool,
}

impl IPPoolSpec {
    /// The parsed pool CIDR, if valid.
    pub fn net(&self) -> Option<IpNet> {
        self.cidr.parse().ok()
    }
}

fn reserved_overlap(net: &IpNet) -> Option<&'static str> {
    let ranges: [(&str, &str); 4] = [
        ("169.254.0.0/16", "the IPv4 link-local range 169.254.0.0/16"),
        ("224.0.0.0/4", "the IPv4 multicast range 224.0.0.0/4"),
        ("fe80::/10", "the IPv6 link-local range fe80::/10"),
        ("ff00::/8", "the IPv6 multicast range ff00::/8"),
    ];
    for (cidr, what) in ranges {
        let r: IpNet = cidr.parse().ok()?;
        if r.contains(&net.network()) || net.contains(&r.network()) {
            return Some(what);
        }
    }
    let loopback = match net {
        IpNet::V4(n) => n.contains(&std::net::Ipv4Addr::LOCALHOST) || n.addr().is_loopback(),
        IpNet::V6(n) => n.contains(&std::net::Ipv6Addr::LOCALHOST) && n.prefix_len() > 0,
    };
    loopback.then_some("the loopback range")
}

impl IPPoolSpec {
    fn validate_load_balancer(&self, errs: &mut Errors, ipip: EncapMode, vxlan: EncapMode) {
        if self.allowed_uses.len() > 1 {
            errs.add(
                "allowedUses",
                &self.allowed_uses,
                "LoadBalancer cannot be combined with other uses",
            );
        }
        if ipip != EncapMode::Never {
            errs.add("ipipMode", ipip, "LoadBalancer pools cannot use IPIP");
        }
        if vxlan != EncapMode::Never {
            errs.add("vxlanMode", vxlan, "LoadBalancer pools cannot use VXLAN");
        }
        if self.disable_bgp_export {
            errs.add(
                "disableBGPExport",
                true,
                "LoadBalancer pools must be exported over BGP",
            );
        }
        if !self.node_selector.is_empty() && self.node_selector.trim() != "all()" {
            errs.add(
                "nodeSelector",
                &self.node_selector,
                "LoadBalancer pools must use nodeSelector all()",
            );
        }
    }
}

impl CalicoSpec for IPPoolSpec {
    const KIND: Kind = Kind::IPPool;

    fn apply_defaults(&mut self, _meta: &mut ObjectMeta) {
        if let Some(net) = self.net()
            && net.addr() == net.network()
        {
            self.cidr = net.to_string();
        }
        if self.block_size.is_none()
            && let Some(net) = self.net()
        {
            let size = if net.addr().is_ipv4() {
                DEFAULT_BLOCK_SIZE_V4
            } else {
                DEFAULT_BLOCK_SIZE_V6
            };
            self.block_size = Some(i64::from(size));
        }
        if self.ipip_mode.is_none() {
            let legacy = self.ipip.as_ref().filter(|l| l.enabled != Some(false));
            self.ipip_mode = Some(match legacy.and_then(|l| l.mode.as_deref()) {
                Some("cross-subnet") => EncapMode::CrossSubnet,
                _ if legacy.is_some() => EncapMode::Always,
                _ => EncapMode::Never,
            });
        }
        self.vxlan_mode.get_or_insert(EncapMode::Never);
        if self.nat_outgoing_v1 {
            self.nat_outgoing = true;
        }
        if self.node_selector.is_empty() {
            self.node_selector = "all()".to_string();
        }
        if self.allowed_uses.is_empty() {
            self.allowed_uses = vec![AllowedUse::Workload, AllowedUse::Tunnel];
        }
        self.assignment_mode
            .get_or_insert(AssignmentMode::Automatic);
    }

    fn validate(&self, _meta: &ObjectMeta, errs: &mut Errors) {
        if self.cidr.is_empty() {
            errs.missing("cidr", "an IPPool needs a cidr");
            return;
        }
        let Some(net) = validate::strict_cidr(errs, "cidr", &self.cidr) else {
            return;
        };
        if net.addr() != net.network() {
            errs.add(
                "cidr",
                &self.cidr,
                format!("host bits are set; did you mean {}?", net.trunc()),
            );
        }
        if let Some(what) = reserved_overlap(&net) {
            errs.add("cidr", &self.cidr, format!("overlaps {what}"));
        }
        let v4 = net.addr().is_ipv4();
        if let Some(bs) = self.block_size {
            let (lo, hi) = if v4 { (20, 32) } else { (116, 128) };
            if !(lo..=hi).contains(&bs) {
                errs.add(
                    "blockSize",
                    bs,
                    format!(
                        "must be {lo}-{hi} for an IPv{} pool",
                        if v4 { 4 } else { 6 }
                    ),
                );
            } else if bs < i64::from(net.prefix_len()) {
                errs.add(
                    "blockSize",
                    bs,
                    format!(
                        "must not be smaller than the pool prefix /{}",
                        net.prefix_len()
                    ),
                );
            }
        }
        let ipip = self.ipip_mode.unwrap_or(EncapMode::Never);
        let vxlan = self.vxlan_mode.unwrap_or(EncapMode::Never);
        if ipip != EncapMode::Never && vxlan != EncapMode::Never {
            errs.add(
                "vxlanMode",
                vxlan,
                "ipipMode and vxlanMode cannot both be enabled",
            );
        }
        if !v4 && ipip != EncapMode::Never {
            errs.add("ipipMode", ipip, "IPIP is not supported for IPv6 pools");
        }
        if let Some(l) = &self.ipip
            && let Some(m) = &l.mode
        {
            errs.at("ipip", |errs| {
                validate::one_of(errs, "mode", m, &["always", "cross-subnet"])
            });
        }
        for (field, sel) in [
            ("nodeSelector", &self.node_selector),
            ("namespaceSelector", &self.namespace_selector),
        ] {
            if !sel.is_empty() {
                validate::selector(errs, field, sel);
                if sel.contains("global()") {
                    errs.add(field, sel, "global() is not valid here");
                }
            }
        }
        if !self.namespace_selector.is_empty() && self.allowed_uses.contains(&AllowedUse::Tunnel) {
            errs.add(
                "namespaceSelector",
                &self.namespace_selector,
                "a pool with allowedUse Tunnel cannot have a namespaceSelector",
            );
        }
        if self.allowed_uses.contains(&AllowedUse::LoadBalancer) {
            self.validate_load_balancer(errs, ipip, vxlan);
        }
    }
}

/// IPReservation: addresses IPAM must never hand out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPReservationSpec {
    #[serde(default, rename = "reservedCIDRs")]
    pub reserved_cidrs: Vec<String>,
}

impl CalicoSpec for IPReservationSpec {
    const KIND: Kind = Kind::IPReservation;

    fn validate(&self, _meta: &ObjectMeta, errs: &mut Errors) {
        errs.at("reservedCIDRs", |errs| {
            for (i, c) in self.reserved_cidrs.iter().enumerate() {
                errs.idx(i, |errs| {
                    validate::cidr(errs, "", c);
                });
            }
        });
    }
}

/// IPAMConfiguration (singleton `default`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IPAMConfigurationSpec {
    #[serde(default)]
    pub strict_affinity: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_blocks_per_host: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_allocate_blocks: Option<bool>,
    #[serde(
        default,
        rename = "kubeVirtVMAddressPersistence",
        skip_serializing_if = "Option::is_none"
    )]
    pub kube_virt_vm_address_persistence: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_cooldown_seconds: Option<i64>,
}

/// Effective maximum blocks per host when `maxBlocksPerHost` is 0 or unset.
pub const DEFAULT_MAX_BLOCKS_PER_HOST: i64 = 20;

impl CalicoSpec for IPAMConfigurationSpec {
    const KIND: Kind = Kind::IPAMConfiguration;

    fn apply_defaults(&mut self, _meta: &mut ObjectMeta) {
        self.auto_allocate_blocks.get_or_insert(true);
    }

    fn validate(&self, _meta: &ObjectMeta, errs: &mut Errors) {
        if let Some(m) = self.max_blocks_per_host
            && m < 0
        {
            errs.add("maxBlocksPerHost", m, "must be 0 (meaning 20) or more");
        }
        if let Some(m) = self.max_blocks_per_host
            && m > 1_000_000
        {
            errs.add("maxBlocksPerHost", m, "must be at most 1000000");
        }
        if !self.strict_affinity && self.auto_allocate_blocks == Some(false) {
            errs.add(
                "autoAllocateBlocks",
                false,
                "must be true unless strictAffinity is true",
            );
        }
        if let Some(v) = &self.kube_virt_vm_address_persistence {
            validate::one_of(
                errs,
                "kubeVirtVMAddressPersistence",
                v,
                &["Enabled", "Disabled"],
            );
        }
        if let Some(c) = self.ip_cooldown_seconds
            && !(0..=1200).contains(&c)
        {
            errs.add("ipCooldownSeconds", c, "must be 0-1200");
        }
    }
}
