//! Pure pool logic: effective pools from IPPool specs, IPReservations, pool selection for a
//! request, and the hostname-seeded walk over a pool's candidate blocks.
//!
//! Invariants:
//! - selection only ever returns enabled pools of the requested family that allow the
//!   intended use; automatic selection additionally requires `assignmentMode: Automatic`, a
//!   matching `nodeSelector` and a matching `namespaceSelector`; results are sorted by name;
//! - a [`CandidateWalk`] visits every block of its pool exactly once, starting at an index
//!   derived from FNV-1 32 of the hostname (so one host retries the same order and different
//!   hosts diverge), wrapping around once.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use tortie_api::ipam::{AllowedUse, AssignmentMode, IPPoolSpec};
use tortie_selector::Selector;

use crate::block::MAX_BLOCK_ADDRESSES;
use crate::error::IpamError;
use crate::family::{IpFamily, ip_to_u128, net_size, u128_to_ip};

/// An IPPool with defaults applied and selectors parsed.
#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    pub net: IpNet,
    pub block_size: u8,
    pub disabled: bool,
    pub node_selector: Selector,
    /// `None` when the pool has no namespaceSelector.
    pub namespace_selector: Option<Selector>,
    pub allowed_uses: Vec<AllowedUse>,
    pub assignment_mode: AssignmentMode,
}

impl Pool {
    /// Builds the effective pool, applying Calico's defaults to fields left unset.
    pub fn from_spec(name: &str, spec: &IPPoolSpec) -> Result<Pool, String> {
        let net: IpNet = spec
            .cidr
            .parse()
            .map_err(|_| format!("cidr {:?} is not a CIDR", spec.cidr))?;
        let net = net.trunc();
        let family = IpFamily::of_net(&net);
        let default = match family {
            IpFamily::V4 => tortie_api::ipam::DEFAULT_BLOCK_SIZE_V4,
            IpFamily::V6 => tortie_api::ipam::DEFAULT_BLOCK_SIZE_V6,
        };
        let block_size = match spec.block_size {
            None => default,
            Some(b) => u8::try_from(b).map_err(|_| format!("blockSize {b} is out of range"))?,
        };
        if block_size < net.prefix_len() || block_size > family.bits() {
            return Err(format!("blockSize {block_size} does not fit pool {net}"));
        }
        if u32::from(family.bits() - block_size) > MAX_BLOCK_ADDRESSES.trailing_zeros() {
            return Err(format!("blockSize {block_size} makes blocks too large"));
        }
        let node_selector = Selector::parse(&spec.node_selector)
            .map_err(|e| format!("nodeSelector {:?}: {e}", spec.node_selector))?;
        let namespace_selector = match spec.namespace_selector.trim() {
            "" => None,
            s => Some(Selector::parse(s).map_err(|e| format!("namespaceSelector {s:?}: {e}"))?),
        };
        let allowed_uses = if spec.allowed_uses.is_empty() {
            vec![AllowedUse::Workload, AllowedUse::Tunnel]
        } else {
            spec.allowed_uses.clone()
        };
        Ok(Pool {
            name: name.to_string(),
            net,
            block_size,
            disabled: spec.disabled,
            node_selector,
            namespace_selector,
            allowed_uses,
            assignment_mode: spec.assignment_mode.unwrap_or(AssignmentMode::Automatic),
        })
    }

    /// The pool's address family.
    pub fn family(&self) -> IpFamily {
        IpFamily::of_net(&self.net)
    }

    /// True if `use_` is among the pool's allowed uses.
    pub fn allows(&self, use_: AllowedUse) -> bool {
        self.allowed_uses.contains(&use_)
    }

    /// True if `cidr` is one of this pool's blocks.
    pub fn has_block(&self, cidr: &IpNet) -> bool {
        cidr.prefix_len() == self.block_size && self.net.contains(&cidr.network())
    }

    /// The block of this pool containing `ip` (which must be inside the pool).
    pub fn block_for(&self, ip: IpAddr) -> IpNet {
        IpNet::new(ip, self.block_size)
            .map(|n| n.trunc())
            .unwrap_or(self.net)
    }

    /// Number of blocks in the pool (saturating).
    pub fn block_count(&self) -> u128 {
        let shift = u32::from(self.block_size - self.net.prefix_len());
        1u128.checked_shl(shift).unwrap_or(u128::MAX)
    }

    /// The block with index `idx` (0-based from the pool's start).
    pub fn block_at(&self, idx: u128) -> IpNet {
        let host_bits = u32::from(self.family().bits() - self.block_size);
        let base = ip_to_u128(self.net.network());
        let offset = idx.checked_shl(host_bits).unwrap_or(0);
        let ip = u128_to_ip(self.family(), base.wrapping_add(offset));
        IpNet::new(ip, self.block_size).unwrap_or(self.net)
    }

    /// The index of block `cidr` within the pool.
    pub fn block_index(&self, cidr: &IpNet) -> u128 {
        let host_bits = u32::from(self.family().bits() - self.block_size);
        let off = ip_to_u128(cidr.network()) - ip_to_u128(self.net.network());
        off.checked_shr(host_bits).unwrap_or(0)
    }

    /// Number of addresses in the pool.
    pub fn size(&self) -> u128 {
        net_size(&self.net)
    }
}

/// IPReservation CIDRs, merged. Automatic assignment never hands these out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reservations {
    nets: Vec<IpNet>,
}

impl Reservations {
    /// Merges the given CIDRs (overlaps and adjacency collapse).
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self {
            nets: IpNet::aggregate(&nets),
        }
    }

    /// Parses a `reservedCIDRs` entry: a CIDR or a bare address.
    pub fn parse_entry(s: &str) -> Option<IpNet> {
        s.parse::<IpNet>()
            .map(|n| n.trunc())
            .ok()
            .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
    }

    /// The merged CIDRs.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    /// True if `ip` is reserved.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The reservation wholly covering `block`, if any.
    pub fn covering(&self, block: &IpNet) -> Option<&IpNet> {
        self.nets
            .iter()
            .find(|n| n.prefix_len() <= block.prefix_len() && n.contains(&block.network()))
    }

    /// How many addresses of `net` are reserved.
    pub fn count_in(&self, net: &IpNet) -> u128 {
        self.nets
            .iter()
            .map(|r| {
                if r.contains(&net.network()) && r.prefix_len() <= net.prefix_len() {
                    net_size(net)
                } else if net.contains(&r.network()) && net.prefix_len() <= r.prefix_len() {
                    net_size(r)
                } else {
                    0
                }
            })
            .sum()
    }
}

/// Resolves pools the caller asked for by name or CIDR. They must exist, be enabled, be of
/// `family` and allow `intended_use`; selectors and `assignmentMode` are not consulted
/// (an explicit request may use a Manual pool). Order and duplicates follow the request.
pub fn explicit_pools<'p>(
    pools: &'p [Pool],
    requested: &[String],
    family: IpFamily,
    intended_use: AllowedUse,
) -> Result<Vec<&'p Pool>, IpamError> {
    let mut out: Vec<&Pool> = Vec::new();
    for r in requested {
        let as_net = r.parse::<IpNet>().ok().map(|n| n.trunc());
        let found = pools
            .iter()
            .find(|p| p.name == *r)
            .or_else(|| pools.iter().find(|p| Some(p.net) == as_net));
        let Some(p) = found else {
            return Err(IpamError::PoolNotFound { pool: r.clone() });
        };
        if p.disabled {
            return Err(IpamError::PoolDisabled {
                pool: p.name.clone(),
            });
        }
        if p.family() != family {
            return Err(IpamError::PoolWrongFamily {
                pool: p.name.clone(),
                family,
            });
        }
        if !p.allows(intended_use) {
            return Err(IpamError::PoolUseNotAllowed {
                pool: p.name.clone(),
                intended_use,
            });
        }
        if !out.iter().any(|q| q.name == p.name) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Pools usable automatically: enabled, of `family`, allowing `intended_use`, Automatic,
/// selecting the node and the namespace (a request without a namespace is matched against
/// empty namespace labels). Sorted by name.
pub fn automatic_pools<'p>(
    pools: &'p [Pool],
    family: IpFamily,
    intended_use: AllowedUse,
    node_labels: &BTreeMap<String, String>,
    namespace_labels: &BTreeMap<String, String>,
) -> Vec<&'p Pool> {
    let mut out: Vec<&Pool> = pools
        .iter()
        .filter(|p| !p.disabled && p.family() == family && p.allows(intended_use))
        .filter(|p| p.assignment_mode == AssignmentMode::Automatic)
        .filter(|p| p.node_selector.evaluate(node_labels))
        .filter(|p| {
            p.namespace_selector
                .as_ref()
                .is_none_or(|s| s.evaluate(namespace_labels))
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// FNV-1 (32-bit) of `bytes`, the hash Calico seeds its block walk with.
pub fn fnv1_32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h = h.wrapping_mul(0x0100_0193);
        h ^= u32::from(*b);
    }
    h
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The walk's first block index for `hostname` in a pool of `n` blocks.
pub fn walk_start(hostname: &str, n: u128) -> u128 {
    let a = splitmix64(u64::from(fnv1_32(hostname.as_bytes())));
    let b = splitmix64(a);
    ((u128::from(a) << 64) | u128::from(b)) % n.max(1)
}

/// Every block of a pool once, from a hostname-seeded start, wrapping around.
#[derive(Debug, Clone)]
pub struct CandidateWalk<'p> {
    pool: &'p Pool,
    start: u128,
    n: u128,
    visited: u128,
}

impl<'p> CandidateWalk<'p> {
    /// The walk of `pool` for `hostname`.
    pub fn new(pool: &'p Pool, hostname: &str) -> Self {
        let n = pool.block_count();
        Self {
            pool,
            start: walk_start(hostname, n),
            n,
            visited: 0,
        }
    }

    /// Where `cidr` falls in this walk's order (0 = first); used to order existing blocks.
    pub fn position(&self, cidr: &IpNet) -> u128 {
        let idx = self.pool.block_index(cidr);
        idx.wrapping_add(self.n).wrapping_sub(self.start) % self.n
    }

    /// Skips the candidates inside `reserved` that follow the one just returned, so a large
    /// reservation costs one step instead of one per block.
    pub fn skip_past(&mut self, reserved: &IpNet) {
        if self.visited == 0 {
            return;
        }
        let last = ip_to_u128(reserved.broadcast()).min(ip_to_u128(self.pool.net.broadcast()));
        let last_ip = u128_to_ip(self.pool.family(), last);
        let last_idx = self.pool.block_index(&self.pool.block_for(last_ip));
        let cur = self.start.wrapping_add(self.visited - 1) % self.n;
        // Never skip across the wrap point (the end of the pool, or back to `start`).
        let segment_end = if cur >= self.start {
            self.n - 1
        } else {
            self.start - 1
        };
        let target = last_idx.min(segment_end);
        if target > cur {
            self.visited = (self.visited + (target - cur)).min(self.n);
        }
    }
}

impl Iterator for CandidateWalk<'_> {
    type Item = IpNet;

    fn next(&mut self) -> Option<IpNet> {
        if self.visited >= self.n {
            return None;
        }
        let idx = self.start.wrapping_add(self.visited) % self.n;
        self.visited += 1;
        Some(self.pool.block_at(idx))
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
