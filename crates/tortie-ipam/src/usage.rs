//! Address usage per pool and per block, and the list of borrowed addresses — the data
//! behind `tortie ipam show`. Pure: computed from pools, blocks and reservations.
//!
//! For every pool and block: `total = in_use + reserved + free`, where `reserved` counts
//! reserved addresses that are not in use.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::model::AllocationBlock;
use crate::pool::{Pool, Reservations};
use crate::request::{ATTR_NAMESPACE, ATTR_NODE, ATTR_POD};

/// Usage of the whole IPAM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Per pool, sorted by name.
    pub pools: Vec<PoolUsage>,
    /// Per block, sorted by CIDR.
    pub blocks: Vec<BlockUsage>,
    /// Addresses allocated by a node other than the block's owner, sorted by address.
    pub borrowed: Vec<BorrowedIp>,
}

/// Usage of one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsage {
    pub name: String,
    pub cidr: IpNet,
    pub disabled: bool,
    pub block_size: u8,
    pub total: u128,
    pub in_use: u128,
    pub reserved: u128,
    pub free: u128,
    /// Blocks allocated from the pool.
    pub blocks: usize,
}

/// Usage of one block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockUsage {
    pub cidr: IpNet,
    /// The pool containing the block (`None` if it is outside every pool).
    pub pool: Option<String>,
    /// The block's affinity, e.g. `host:node-1`.
    pub affinity: Option<String>,
    pub total: u64,
    pub in_use: u64,
    pub reserved: u64,
    pub free: u64,
}

/// An address used by a node that does not own its block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BorrowedIp {
    pub ip: IpAddr,
    pub block: IpNet,
    pub borrowing_node: String,
    pub block_owner: Option<String>,
    pub handle: Option<String>,
    /// `namespace/pod`, or the allocation's `type` attribute.
    pub allocated_to: Option<String>,
}

/// What an allocation's attributes say it belongs to.
pub(crate) fn allocated_to(attrs: &BTreeMap<String, String>) -> Option<String> {
    match (attrs.get(ATTR_NAMESPACE), attrs.get(ATTR_POD)) {
        (Some(ns), Some(pod)) => Some(format!("{ns}/{pod}")),
        _ => attrs.get("type").cloned(),
    }
}

/// Computes usage.
pub fn compute_usage(
    pools: &[Pool],
    blocks: &[AllocationBlock],
    reservations: &Reservations,
) -> Usage {
    let mut usage = Usage::default();
    let mut sorted: Vec<&AllocationBlock> = blocks.iter().collect();
    sorted.sort_by_key(|b| b.cidr);
    for b in &sorted {
        let pool = pools.iter().find(|p| p.net.contains(&b.cidr.network()));
        let reserved = b
            .unallocated
            .iter()
            .filter(|o| reservations.contains(b.ip_of(**o)))
            .count() as u64;
        let total = b.size() as u64;
        let in_use = b.in_use() as u64;
        usage.blocks.push(BlockUsage {
            cidr: b.cidr,
            pool: pool.map(|p| p.name.clone()),
            affinity: b.affinity.clone(),
            total,
            in_use,
            reserved,
            free: total.saturating_sub(in_use + reserved),
        });
        for a in b.allocated() {
            let Some(node) = a.attr.secondary.get(ATTR_NODE) else {
                continue;
            };
            if Some(node.as_str()) != b.host_affinity() {
                usage.borrowed.push(BorrowedIp {
                    ip: a.ip,
                    block: b.cidr,
                    borrowing_node: node.clone(),
                    block_owner: b.host_affinity().map(str::to_string),
                    handle: a.attr.handle_id.clone(),
                    allocated_to: allocated_to(&a.attr.secondary),
                });
            }
        }
    }
    for p in pools {
        let mine: Vec<&&AllocationBlock> = sorted
            .iter()
            .filter(|b| p.net.contains(&b.cidr.network()))
            .collect();
        let in_use: u128 = mine.iter().map(|b| b.in_use() as u128).sum();
        let reserved_in_use: u128 = mine
            .iter()
            .flat_map(|b| b.allocated())
            .filter(|a| reservations.contains(a.ip))
            .count() as u128;
        let reserved = reservations
            .count_in(&p.net)
            .saturating_sub(reserved_in_use);
        let total = p.size();
        usage.pools.push(PoolUsage {
            name: p.name.clone(),
            cidr: p.net,
            disabled: p.disabled,
            block_size: p.block_size,
            total,
            in_use,
            reserved,
            free: total.saturating_sub(in_use).saturating_sub(reserved),
            blocks: mine.len(),
        });
    }
    usage.pools.sort_by(|a, b| a.name.cmp(&b.name));
    usage.borrowed.sort_by_key(|b| b.ip);
    usage
}

#[cfg(test)]
mod tests {
    use super::*;
    use tortie_api::ipam::IPPoolSpec;

    #[test]
    fn counts_in_use_reserved_free_and_borrowed() {
        let spec = IPPoolSpec {
            cidr: "10.0.0.0/28".into(),
            block_size: Some(29),
            ..IPPoolSpec::default()
        };
        let pool = Pool::from_spec("p", &spec).unwrap();
        let res = Reservations::new(vec!["10.0.0.0/31".parse().unwrap()]);
        let mut b =
            AllocationBlock::new("10.0.0.0/29".parse().unwrap(), Some("host:a".into()), None);
        let mine = BTreeMap::from([("node".to_string(), "a".to_string())]);
        let theirs = BTreeMap::from([
            ("node".to_string(), "b".to_string()),
            ("namespace".to_string(), "ns".to_string()),
            ("pod".to_string(), "web".to_string()),
        ]);
        b.allocate(2, "h1", &mine, |ip| res.contains(ip));
        b.allocate(1, "h2", &theirs, |ip| res.contains(ip));
        b.allocate_ordinal(0, "h3", &mine).unwrap();
        let u = compute_usage(&[pool], &[b], &res);
        let bu = &u.blocks[0];
        assert_eq!((bu.total, bu.in_use, bu.reserved, bu.free), (8, 4, 1, 3));
        let pu = &u.pools[0];
        assert_eq!((pu.total, pu.in_use, pu.reserved, pu.free), (16, 4, 1, 11));
        assert_eq!(pu.blocks, 1);
        assert_eq!(u.borrowed.len(), 1);
        assert_eq!(u.borrowed[0].borrowing_node, "b");
        assert_eq!(u.borrowed[0].allocated_to.as_deref(), Some("ns/web"));
        let json = serde_json::to_value(&u).unwrap();
        assert_eq!(json["pools"][0]["inUse"], 4);
    }
}
