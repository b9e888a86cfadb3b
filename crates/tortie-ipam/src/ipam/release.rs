//! Release by address and by handle. Both are idempotent: releasing a free address or an
//! unknown handle succeeds. Each block is CAS-written first, then the handle counts are
//! decremented.
//!
//! `ipCooldownSeconds` is not implemented: a released address goes straight back to the end
//! of its block's FIFO free list, so it is the last to be reused.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use tortie_store::Revision;

use super::assign::check_handle;
use super::{Ipam, MAX_RETRIES, is_race};
use crate::block::{ReleaseOutcome, ReleaseTarget};
use crate::error::IpamError;
use crate::keys;
use crate::model::IpamHandle;

impl Ipam {
    /// Releases `ips`; returns those that were not allocated, sorted.
    pub async fn release_ips(&self, ips: &[IpAddr]) -> Result<Vec<IpAddr>, IpamError> {
        let wanted: BTreeSet<IpAddr> = ips.iter().copied().collect();
        let pools = self.load_pools().await?;
        let mut by_block: BTreeMap<IpNet, Vec<IpAddr>> = BTreeMap::new();
        let mut not_allocated = Vec::new();
        for ip in wanted {
            match self.find_block_of(&pools, ip).await? {
                Some(b) => by_block.entry(b.value.cidr).or_default().push(ip),
                None => not_allocated.push(ip),
            }
        }
        for (cidr, ips) in by_block {
            let targets = ips
                .iter()
                .map(|ip| ordinal_in(&cidr, *ip))
                .map(ReleaseTarget::any)
                .collect::<Vec<_>>();
            match self.release_in_block(cidr, &targets).await? {
                Some((out, block)) => {
                    not_allocated.extend(out.not_allocated.iter().map(|o| block.ip_of(*o)));
                }
                None => not_allocated.extend(ips),
            }
        }
        not_allocated.sort();
        Ok(not_allocated)
    }

    /// Releases every address of `handle` and deletes the handle; returns the addresses
    /// released, sorted. A missing handle releases nothing.
    pub async fn release_by_handle(&self, handle: &str) -> Result<Vec<IpAddr>, IpamError> {
        check_handle(handle)?;
        let Some(h) = self
            .get_json::<IpamHandle>(&keys::handle_key(handle))
            .await?
        else {
            return Ok(Vec::new());
        };
        let mut released = Vec::new();
        for cidr in h.value.block.keys().filter_map(|c| c.parse::<IpNet>().ok()) {
            let Some(block) = self.get_block(&cidr).await? else {
                continue;
            };
            let targets = block.value.targets_for_handle(handle);
            if targets.is_empty() {
                continue;
            }
            if let Some((out, b)) = self.release_in_block(cidr, &targets).await? {
                released.extend(out.released.iter().map(|(o, _)| b.ip_of(*o)));
            }
        }
        // Drop entries for blocks that hold nothing of this handle any more.
        self.resync_handle(handle, None, &[]).await?;
        released.sort();
        Ok(released)
    }

    /// Releases `ips` of block `cidr` only if each is still held by `handle` with the given
    /// sequence number (GC, repair and rollback use this so a stale view never frees a
    /// re-allocated address). Returns the addresses released.
    pub(crate) async fn release_guarded(
        &self,
        cidr: IpNet,
        handle: &str,
        ips: &[(IpAddr, u64)],
    ) -> Result<Vec<IpAddr>, IpamError> {
        let targets: Vec<ReleaseTarget> = ips
            .iter()
            .map(|(ip, seq)| ReleaseTarget {
                ordinal: ordinal_in(&cidr, *ip),
                handle: Some(handle.to_string()),
                sequence_number: Some(*seq),
            })
            .collect();
        Ok(match self.release_in_block(cidr, &targets).await? {
            Some((out, b)) => out.released.iter().map(|(o, _)| b.ip_of(*o)).collect(),
            None => Vec::new(),
        })
    }

    /// Applies `targets` to block `cidr` (CAS loop), then decrements the handles of what was
    /// released. `None` if the block does not exist. Returns the outcome and the block
    /// written (or read, when nothing changed).
    async fn release_in_block(
        &self,
        cidr: IpNet,
        targets: &[ReleaseTarget],
    ) -> Result<Option<(ReleaseOutcome, crate::model::AllocationBlock)>, IpamError> {
        for _ in 0..MAX_RETRIES {
            let Some(v) = self.get_block(&cidr).await? else {
                return Ok(None);
            };
            let mut block = v.value.clone();
            let out = block.release(targets);
            if out.released.is_empty() {
                return Ok(Some((out, block)));
            }
            match self.put_block(&block, v.rev).await? {
                Ok(_) => {
                    for (handle, n) in out.handle_counts() {
                        self.decrement_handle(&handle, &cidr, n).await?;
                    }
                    return Ok(Some((out, block)));
                }
                Err(e) if is_race(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::TooManyRetries {
            what: format!("releasing from block {cidr}"),
            attempts: MAX_RETRIES,
        })
    }

    /// Rewrites `handle`'s per-block counts to what the blocks actually hold, looking at the
    /// blocks it records plus `extra` ones; deletes it when it holds nothing. With
    /// `expected = Some(rev)` it acts only if the handle is still at that revision and gives
    /// up on a race. Returns whether it wrote.
    pub(crate) async fn resync_handle(
        &self,
        handle: &str,
        expected: Option<Revision>,
        extra: &[IpNet],
    ) -> Result<bool, IpamError> {
        let key = keys::handle_key(handle);
        for _ in 0..MAX_RETRIES {
            let Some(mut h) = self.get_json::<IpamHandle>(&key).await? else {
                return Ok(false);
            };
            if expected.is_some_and(|r| r != h.rev) {
                return Ok(false);
            }
            let mut blocks: BTreeSet<IpNet> = h
                .value
                .block
                .keys()
                .filter_map(|c| c.parse().ok())
                .collect();
            blocks.extend(extra.iter().copied());
            let mut actual = BTreeMap::new();
            for cidr in blocks {
                if let Some(b) = self.get_block(&cidr).await?
                    && let Some(n) = b.value.handle_counts().get(handle)
                {
                    actual.insert(cidr.to_string(), *n);
                }
            }
            if actual == h.value.block {
                return Ok(false);
            }
            let written = if actual.is_empty() {
                self.store.delete(&key, Some(h.rev)).await
            } else {
                h.value.block = actual;
                self.update_json(&key, &h.value, h.rev).await?
            };
            match written {
                Ok(_) => return Ok(true),
                Err(e) if is_race(&e) && expected.is_none() => continue,
                Err(e) if is_race(&e) => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::TooManyRetries {
            what: format!("re-counting handle {handle}"),
            attempts: MAX_RETRIES,
        })
    }
}

/// The ordinal of `ip` in block `cidr` (out of range yields a value `release` rejects).
fn ordinal_in(cidr: &IpNet, ip: IpAddr) -> usize {
    let off = crate::family::ip_to_u128(ip).wrapping_sub(crate::family::ip_to_u128(cidr.network()));
    usize::try_from(off).unwrap_or(usize::MAX)
}
