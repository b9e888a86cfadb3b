//! Read-only queries: addresses of a handle, one address's allocation, usage.

use std::net::IpAddr;

use ipnet::IpNet;

use super::Ipam;
use super::assign::check_handle;
use crate::error::IpamError;
use crate::family::IpFamily;
use crate::keys;
use crate::model::IpamHandle;
use crate::request::{ATTR_NODE, AllocationInfo};
use crate::usage::{Usage, compute_usage};

impl Ipam {
    /// The addresses held by `handle`, sorted (empty for an unknown handle).
    pub async fn ips_by_handle(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        check_handle(handle)?;
        let Some(h) = self
            .get_json::<IpamHandle>(&keys::handle_key(handle))
            .await?
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for cidr in h.value.block.keys().filter_map(|c| c.parse::<IpNet>().ok()) {
            if let Some(b) = self.get_block(&cidr).await? {
                out.extend(
                    b.value
                        .allocated()
                        .filter(|a| a.attr.handle_id.as_deref() == Some(handle))
                        .map(|a| a.ip),
                );
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The allocation of `ip`, or `None` if it is not allocated.
    pub async fn ip_info(&self, ip: IpAddr) -> Result<Option<AllocationInfo>, IpamError> {
        let pools = self.load_pools().await?;
        let Some(b) = self.find_block_of(&pools, ip).await? else {
            return Ok(None);
        };
        let block = &b.value;
        let Some(ordinal) = block.ordinal_of(ip) else {
            return Ok(None);
        };
        let Some(attr) = block.allocation(ordinal) else {
            return Ok(None);
        };
        let owner = block.host_affinity();
        let borrowed = attr
            .secondary
            .get(ATTR_NODE)
            .is_some_and(|n| Some(n.as_str()) != owner);
        Ok(Some(AllocationInfo {
            ip,
            block: block.cidr,
            handle: attr.handle_id.clone(),
            attrs: attr.secondary.clone(),
            block_affinity: block.affinity.clone(),
            sequence_number: block.allocation_sequence(ordinal),
            borrowed,
        }))
    }

    /// Usage per pool and per block, and the borrowed addresses.
    pub async fn usage(&self) -> Result<Usage, IpamError> {
        let pools = self.load_pools().await?;
        let reservations = self.load_reservations().await?;
        let mut blocks = Vec::new();
        for family in IpFamily::ALL {
            blocks.extend(
                self.list_blocks(family)
                    .await?
                    .into_values()
                    .map(|v| v.value),
            );
        }
        Ok(compute_usage(&pools, &blocks, &reservations))
    }
}
