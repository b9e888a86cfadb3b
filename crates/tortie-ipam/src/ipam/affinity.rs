//! Block ownership: the two-phase claim of a block for a host, and the guarded release of a
//! block and its affinity.
//!
//! Claim (each step CAS): affinity `pending` → create the block with `affinity: host:<node>`
//! → affinity `confirmed`. If the block already exists and is ours (a crash after step 2, or
//! crash recovery of a confirmed affinity whose block vanished) we confirm; if it belongs to
//! someone else we delete our pending affinity and report [`Claim::Taken`].
//!
//! Release: affinity `pendingDeletion` → delete the block at the revision it was seen empty →
//! delete the affinity. A concurrent claim or allocation changes one of those revisions, so
//! at most one side wins and the loser backs off; the affinity is put back to `confirmed`
//! when the block survived.

use ipnet::IpNet;
use tortie_store::{Revision, StoreError};

use super::records::Versioned;
use super::{Ipam, MAX_RETRIES, is_race};
use crate::clock::format_time_seconds;
use crate::error::IpamError;
use crate::keys;
use crate::model::{AffinityState, AllocationBlock, BlockAffinity, host_affinity};

/// The outcome of a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// The host owns the block (newly or already).
    Ours,
    /// Another owner holds the block.
    Taken,
}

impl Ipam {
    /// Claims block `cidr` for `host` with the two-phase protocol.
    pub(crate) async fn claim_block(&self, host: &str, cidr: IpNet) -> Result<Claim, IpamError> {
        for _ in 0..MAX_RETRIES {
            let Some(aff_rev) = self.pend_affinity(host, cidr).await? else {
                return Ok(Claim::Ours);
            };
            match self.create_or_adopt_block(host, cidr).await? {
                Some(true) => {}
                Some(false) => {
                    self.drop_pending_affinity(host, &cidr, aff_rev).await?;
                    return Ok(Claim::Taken);
                }
                None => continue,
            }
            self.confirm_affinity(host, &cidr, aff_rev).await?;
            tracing::debug!(%host, %cidr, "claimed block");
            return Ok(Claim::Ours);
        }
        Err(IpamError::TooManyRetries {
            what: format!("claiming block {cidr} for {host}"),
            attempts: MAX_RETRIES,
        })
    }

    /// Phase 2: creates the block for `host`. `Some(true)` if it is ours (created now, or
    /// existing with our affinity), `Some(false)` if another owner has it, `None` if it
    /// vanished while we looked (start the claim again).
    ///
    /// An existing block of ours is re-written (same content, new revision): that defeats a
    /// release that saw it empty before we pended the affinity and is about to delete it at
    /// the old revision.
    async fn create_or_adopt_block(
        &self,
        host: &str,
        cidr: IpNet,
    ) -> Result<Option<bool>, IpamError> {
        let now = format_time_seconds(self.clock.now());
        let block = AllocationBlock::new(cidr, Some(host_affinity(host)), Some(now));
        match self.create_json(&keys::block_key(&cidr), &block).await? {
            Ok(_) => return Ok(Some(true)),
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let Some(existing) = self.get_block(&cidr).await? else {
            return Ok(None);
        };
        if existing.value.host_affinity() != Some(host) {
            return Ok(Some(false));
        }
        match self.put_block(&existing.value, existing.rev).await? {
            Ok(_) => Ok(Some(true)),
            // Written by someone else meanwhile, which also defeats a stale release: look
            // again at who owns it.
            Err(StoreError::Conflict { .. }) => Ok(self
                .get_block(&cidr)
                .await?
                .map(|b| b.value.host_affinity() == Some(host))),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Phase 1: puts `host`'s affinity for `cidr` in state pending and returns its revision;
    /// `None` if the host already holds a confirmed affinity and the block is its own.
    async fn pend_affinity(&self, host: &str, cidr: IpNet) -> Result<Option<Revision>, IpamError> {
        let key = keys::affinity_key(host, &cidr);
        let pending = BlockAffinity::host(host, cidr, AffinityState::Pending);
        for _ in 0..MAX_RETRIES {
            let written = match self.get_json::<BlockAffinity>(&key).await? {
                None => self.create_json(&key, &pending).await?,
                Some(v) => {
                    if v.value.state == AffinityState::Confirmed
                        && let Some(b) = self.get_block(&cidr).await?
                        && b.value.host_affinity() == Some(host)
                    {
                        return Ok(None);
                    }
                    // Take over a crashed claim, a stalled release, or recover a confirmed
                    // affinity whose block vanished: any concurrent CAS on it now fails.
                    self.update_json(&key, &pending, v.rev).await?
                }
            };
            match written {
                Ok(rev) => return Ok(Some(rev)),
                Err(e) if is_race(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(IpamError::TooManyRetries {
            what: format!("claiming affinity of {host} to {cidr}"),
            attempts: MAX_RETRIES,
        })
    }

    /// Phase 3: marks the affinity confirmed. If someone changed it meanwhile (a repair
    /// confirmed or removed it) we re-read: confirmed is success, absent is re-created (the
    /// block is ours).
    async fn confirm_affinity(
        &self,
        host: &str,
        cidr: &IpNet,
        mut rev: Revision,
    ) -> Result<(), IpamError> {
        let key = keys::affinity_key(host, cidr);
        let confirmed = BlockAffinity::host(host, *cidr, AffinityState::Confirmed);
        for _ in 0..MAX_RETRIES {
            match self.update_json(&key, &confirmed, rev).await? {
                Ok(_) => return Ok(()),
                Err(e) if is_race(&e) => {}
                Err(e) => return Err(e.into()),
            }
            match self.get_json::<BlockAffinity>(&key).await? {
                Some(v) if v.value.state == AffinityState::Confirmed => return Ok(()),
                Some(v) => rev = v.rev,
                None => match self.create_json(&key, &confirmed).await? {
                    Ok(_) => return Ok(()),
                    Err(e) if is_race(&e) => {}
                    Err(e) => return Err(e.into()),
                },
            }
        }
        Err(IpamError::TooManyRetries {
            what: format!("confirming affinity of {host} to {cidr}"),
            attempts: MAX_RETRIES,
        })
    }

    /// Deletes our pending affinity after losing a block to another owner. Losing this race
    /// too (someone else changed it) is fine: they own it now.
    async fn drop_pending_affinity(
        &self,
        host: &str,
        cidr: &IpNet,
        rev: Revision,
    ) -> Result<(), IpamError> {
        match self
            .store
            .delete(&keys::affinity_key(host, cidr), Some(rev))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_race(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Releases an empty block and its owner's affinity, guarded by `seen` (the block as it
    /// was observed empty). Returns whether the block was deleted. Skips blocks whose
    /// affinity is pending (a claim in flight).
    pub(crate) async fn release_block(
        &self,
        seen: &Versioned<AllocationBlock>,
    ) -> Result<bool, IpamError> {
        if !seen.value.is_empty() {
            return Ok(false);
        }
        let cidr = seen.value.cidr;
        let owner = seen.value.host_affinity().map(str::to_string);
        let mut aff_rev = None;
        if let Some(host) = &owner {
            let key = keys::affinity_key(host, &cidr);
            if let Some(a) = self.get_json::<BlockAffinity>(&key).await? {
                if a.value.state == AffinityState::Pending {
                    return Ok(false);
                }
                let marking = BlockAffinity::host(host, cidr, AffinityState::PendingDeletion);
                match self.update_json(&key, &marking, a.rev).await? {
                    Ok(rev) => aff_rev = Some(rev),
                    Err(e) if is_race(&e) => return Ok(false),
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let deleted = self
            .store
            .delete(&keys::block_key(&cidr), Some(seen.rev))
            .await;
        let (Some(host), Some(rev)) = (&owner, aff_rev) else {
            return match deleted {
                Ok(_) => Ok(true),
                Err(e) if is_race(&e) => Ok(false),
                Err(e) => Err(e.into()),
            };
        };
        match deleted {
            Ok(_) => {
                self.delete_affinity_quietly(host, &cidr, rev).await?;
                tracing::debug!(%host, %cidr, "released empty block");
                Ok(true)
            }
            Err(StoreError::NotFound { .. }) => {
                self.delete_affinity_quietly(host, &cidr, rev).await?;
                Ok(false)
            }
            Err(e) if is_race(&e) => {
                self.restore_affinity(host, &cidr, rev).await?;
                Ok(false)
            }
            Err(e) => {
                self.restore_affinity(host, &cidr, rev).await?;
                Err(e.into())
            }
        }
    }

    async fn delete_affinity_quietly(
        &self,
        host: &str,
        cidr: &IpNet,
        rev: Revision,
    ) -> Result<(), IpamError> {
        match self
            .store
            .delete(&keys::affinity_key(host, cidr), Some(rev))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_race(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Puts a `pendingDeletion` affinity back to `confirmed` after the block survived.
    async fn restore_affinity(
        &self,
        host: &str,
        cidr: &IpNet,
        rev: Revision,
    ) -> Result<(), IpamError> {
        let key = keys::affinity_key(host, cidr);
        let confirmed = BlockAffinity::host(host, *cidr, AffinityState::Confirmed);
        match self.update_json(&key, &confirmed, rev).await? {
            Ok(_) => Ok(()),
            Err(e) if is_race(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
#[path = "affinity_tests.rs"]
mod tests;
