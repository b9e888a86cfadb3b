//! Assignment: `auto_assign` (the hot path) and `assign_ip` (one specific address).
//!
//! Per family, `auto_assign` tries in order: the host's confirmed affine blocks (crash
//! recovery re-creates a confirmed affinity's missing block), new blocks claimed along the
//! hostname-seeded walk while under the block cap (then reclaiming other hosts' long-empty
//! blocks), and finally borrowing from other hosts' blocks unless `strictAffinity`. A request
//! that cannot be met in full is rolled back (every granted address released, guarded by its
//! handle and sequence number), so callers never see partial success.
//!
//! Cost on the hot path (the host has an affine block with room): a fixed number of store
//! calls (config, reservations, pools, the host's own affinities, one block, the handle, two
//! writes) whatever the number of blocks in the cluster.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;
use tortie_api::Kind;
use tortie_selector::Selector;

use super::affinity::Claim;
use super::{Ipam, MAX_RETRIES, is_race};
use crate::block::OrdinalError;
use crate::clock::{age, parse_time};
use crate::config::IpamConfig;
use crate::error::IpamError;
use crate::family::{IpFamily, ip_to_u128};
use crate::keys;
use crate::model::AffinityState;
use crate::pool::{CandidateWalk, Pool, Reservations, automatic_pools, explicit_pools};
use crate::request::{ATTR_NODE, AssignIpRequest, AutoAssignRequest, AutoAssignResult};

/// Another host's empty block may be reclaimed once its affinity is this old (Calico's
/// `EmptyBlockMinReclaimAge`).
pub const EMPTY_BLOCK_MIN_RECLAIM_AGE: Duration = Duration::from_secs(60);

/// One address granted during a request (for results and rollback).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Granted {
    pub ip: IpAddr,
    pub block: IpNet,
    pub seq: u64,
}

/// Everything one family's assignment needs.
struct FamilyCtx<'a> {
    handle: &'a str,
    attrs: &'a BTreeMap<String, String>,
    host: &'a str,
    family: IpFamily,
    pools: Vec<&'a Pool>,
    config: IpamConfig,
    reservations: &'a Reservations,
    cap: u32,
}

/// How a block may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    /// Only if affine to our host.
    Affine,
    /// Any block except virtual ones.
    Borrow,
}

fn with_node(attrs: &BTreeMap<String, String>, host: &str) -> BTreeMap<String, String> {
    let mut a = attrs.clone();
    a.entry(ATTR_NODE.to_string())
        .or_insert_with(|| host.to_string());
    a
}

pub(crate) fn check_handle(handle: &str) -> Result<(), IpamError> {
    match keys::handle_problem(handle) {
        Some(reason) => Err(IpamError::InvalidHandle {
            handle: handle.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

fn check_hostname(host: &str) -> Result<(), IpamError> {
    if host.is_empty() || host.contains('/') {
        return Err(IpamError::InvalidRequest {
            reason: format!("hostname {host:?} must be non-empty and contain no '/'"),
        });
    }
    Ok(())
}

impl Ipam {
    /// Assigns `num_v4` IPv4 and `num_v6` IPv6 addresses to `handle` on `hostname`.
    /// All or nothing: on error nothing stays allocated by this call.
    pub async fn auto_assign(
        &self,
        req: &AutoAssignRequest,
    ) -> Result<AutoAssignResult, IpamError> {
        if req.num_v4 == 0 && req.num_v6 == 0 {
            return Ok(AutoAssignResult::default());
        }
        check_handle(&req.handle)?;
        check_hostname(&req.hostname)?;
        let config = self.load_config().await?;
        let reservations = self.load_reservations().await?;
        let all_pools = self.load_pools().await?;
        let attrs = with_node(&req.attrs, &req.hostname);
        let mut ctxs = Vec::new();
        for (family, n, requested) in [
            (IpFamily::V4, req.num_v4, &req.ipv4_pools),
            (IpFamily::V6, req.num_v6, &req.ipv6_pools),
        ] {
            if n == 0 {
                continue;
            }
            let pools = self.pools_for(req, &all_pools, family, requested).await?;
            let ctx = FamilyCtx {
                handle: &req.handle,
                attrs: &attrs,
                host: &req.hostname,
                family,
                pools,
                config,
                reservations: &reservations,
                cap: config.block_cap(req.max_blocks_per_host),
            };
            ctxs.push((ctx, n));
        }
        let mut granted = Vec::new();
        for (ctx, n) in &ctxs {
            if let Err(e) = self.assign_family(ctx, *n, &mut granted).await {
                self.roll_back(ctx.handle, &granted).await;
                return Err(e);
            }
        }
        let mut out = AutoAssignResult::default();
        for g in granted {
            let net = IpNet::new(g.ip, g.block.prefix_len()).unwrap_or(g.block);
            match IpFamily::of(g.ip) {
                IpFamily::V4 => out.ipv4.push(net),
                IpFamily::V6 => out.ipv6.push(net),
            }
        }
        Ok(out)
    }

    /// The pools a request may use for `family`: the requested ones, else every matching
    /// Automatic pool.
    async fn pools_for<'p>(
        &self,
        req: &AutoAssignRequest,
        pools: &'p [Pool],
        family: IpFamily,
        requested: &[String],
    ) -> Result<Vec<&'p Pool>, IpamError> {
        if !requested.is_empty() {
            return explicit_pools(pools, requested, family, req.intended_use);
        }
        let all = Selector::all();
        let candidates = || pools.iter().filter(|p| !p.disabled && p.family() == family);
        let node_labels = if candidates().any(|p| p.node_selector != all) {
            self.load_labels(&Kind::Node.key(None, &req.hostname))
                .await?
        } else {
            BTreeMap::new()
        };
        let ns_labels = match &req.namespace {
            Some(ns) if candidates().any(|p| p.namespace_selector.is_some()) => {
                self.load_labels(&Kind::Namespace.key(None, ns)).await?
            }
            _ => BTreeMap::new(),
        };
        let chosen = automatic_pools(pools, family, req.intended_use, &node_labels, &ns_labels);
        if chosen.is_empty() {
            return Err(IpamError::NoMatchingPools {
                family,
                hostname: req.hostname.clone(),
            });
        }
        Ok(chosen)
    }

    async fn assign_family(
        &self,
        ctx: &FamilyCtx<'_>,
        want: usize,
        granted: &mut Vec<Granted>,
    ) -> Result<(), IpamError> {
        let mut need = want;
        let affinities = self.list_host_affinities(ctx.host, ctx.family).await?;
        let mut owned = affinities.len();
        // Confirmed affinities in the selected pools, by pool order then CIDR.
        let mut mine: Vec<(usize, IpNet)> = affinities
            .iter()
            .filter(|(_, a)| a.value.state == AffinityState::Confirmed)
            .filter_map(|(cidr, _)| {
                let idx = ctx.pools.iter().position(|p| p.has_block(cidr))?;
                Some((idx, *cidr))
            })
            .collect();
        mine.sort();
        // Try the block that last had room first; the rest keep pool/CIDR order.
        let hint = self.hint(ctx.host);
        mine.sort_by_key(|(_, cidr)| Some(*cidr) != hint);
        for (_, cidr) in mine {
            if need == 0 {
                break;
            }
            let got = self.fill_affine(ctx, cidr, need, granted).await?;
            if got > 0 {
                self.set_hint(ctx.host, cidr);
            }
            need -= got;
        }
        while need > 0 && ctx.config.auto_allocate_blocks && owned < ctx.cap as usize {
            let Some(cidr) = self.claim_new_block(ctx).await? else {
                break;
            };
            owned += 1;
            self.set_hint(ctx.host, cidr);
            let got = self.allocate_in_block(ctx, cidr, need, Use::Affine, granted);
            need -= got.await?.unwrap_or(0);
        }
        if need > 0 && !ctx.config.strict_affinity {
            need -= self.borrow(ctx, need, granted).await?;
        }
        if need > 0 {
            tracing::debug!(host = ctx.host, family = %ctx.family, need, owned, cap = ctx.cap, "exhausted");
            return Err(IpamError::Exhausted {
                pools: ctx.pools.iter().map(|p| p.name.clone()).collect(),
            });
        }
        Ok(())
    }

    /// Allocates from one of our confirmed affine blocks, re-creating it if it vanished.
    async fn fill_affine(
        &self,
        ctx: &FamilyCtx<'_>,
        cidr: IpNet,
        need: usize,
        granted: &mut Vec<Granted>,
    ) -> Result<usize, IpamError> {
        if let Some(n) = self
            .allocate_in_block(ctx, cidr, need, Use::Affine, granted)
            .await?
        {
            return Ok(n);
        }
        tracing::info!(host = ctx.host, %cidr, "affine block missing; re-creating it");
        if self.claim_block(ctx.host, cidr).await? == Claim::Taken {
            return Ok(0);
        }
        let got = self.allocate_in_block(ctx, cidr, need, Use::Affine, granted);
        Ok(got.await?.unwrap_or(0))
    }

    /// Allocates up to `n` addresses from block `cidr`: handle first, then the block (CAS),
    /// undoing the handle increment on a lost race. `None` if the block does not exist.
    async fn allocate_in_block(
        &self,
        ctx: &FamilyCtx<'_>,
        cidr: IpNet,
        n: usize,
        mode: Use,
        granted: &mut Vec<Granted>,
    ) -> Result<Option<usize>, IpamError> {
        for _ in 0..MAX_RETRIES {
            let Some(v) = self.get_block(&cidr).await? else {
                return Ok(None);
            };
            let usable = match mode {
                Use::Affine => v.value.host_affinity() == Some(ctx.host),
                Use::Borrow => !is_virtual(v.value.affinity.as_deref()),
            };
            if !usable {
                return Ok(Some(0));
            }
            let mut block = v.value.clone();
            let ords = block.allocate(n, ctx.handle, ctx.attrs, |ip| ctx.reservations.contains(ip));
            if ords.is_empty() {
                return Ok(Some(0));
            }
            let count = ords.len() as u64;
            self.increment_handle(ctx.handle, &cidr, count).await?;
            match self.put_block(&block, v.rev).await? {
                Ok(_) => {
                    granted.extend(ords.iter().map(|o| Granted {
                        ip: block.ip_of(*o),
                        block: cidr,
                        seq: block.sequence_number,
                    }));
                    return Ok(Some(ords.len()));
                }
                Err(e) if is_race(&e) => {
                    self.decrement_handle(ctx.handle, &cidr, count).await?;
                }
                Err(e) => {
                    if let Err(undo) = self.decrement_handle(ctx.handle, &cidr, count).await {
                        tracing::warn!(error = %undo, handle = ctx.handle, "could not undo handle increment");
                    }
                    return Err(e.into());
                }
            }
        }
        Err(IpamError::TooManyRetries {
            what: format!("allocating from block {cidr}"),
            attempts: MAX_RETRIES,
        })
    }

    /// Finds and claims a block for the host: the first unclaimed, not wholly reserved
    /// candidate along each pool's walk; failing that, another host's block that has been
    /// empty for [`EMPTY_BLOCK_MIN_RECLAIM_AGE`].
    async fn claim_new_block(&self, ctx: &FamilyCtx<'_>) -> Result<Option<IpNet>, IpamError> {
        // Fast path: the block keys alone tell which CIDRs are held, so finding a free one
        // does not read (or decode) every block in the datastore.
        let listed = self
            .store
            .list_keys(&keys::block_prefix(ctx.family))
            .await?;
        let held: Vec<IpNet> = listed
            .keys
            .iter()
            .filter_map(|(k, _)| keys::parse_block_key(k))
            .collect();
        if let Some(cidr) = self
            .claim_first_free(ctx, &Occupied::of(held.iter()))
            .await?
        {
            return Ok(Some(cidr));
        }
        // Slow path (the pools are nearly full): read the blocks, so tombstoned blocks count
        // as free and long-empty blocks of other hosts can be reclaimed.
        let blocks = self.list_blocks(ctx.family).await?;
        if let Some(cidr) = self
            .claim_first_free(ctx, &Occupied::of(blocks.keys()))
            .await?
        {
            return Ok(Some(cidr));
        }
        let now = self.clock.now();
        for pool in &ctx.pools {
            let walk = CandidateWalk::new(pool, ctx.host);
            let mut empty: Vec<_> = blocks
                .values()
                .filter(|b| pool.has_block(&b.value.cidr) && b.value.is_empty())
                .filter(|b| b.value.host_affinity().is_some_and(|h| h != ctx.host))
                .filter(|b| {
                    let claimed = b.value.affinity_claim_time.as_deref().and_then(parse_time);
                    claimed.is_none_or(|t| age(now, t) >= EMPTY_BLOCK_MIN_RECLAIM_AGE)
                })
                .collect();
            empty.sort_by_key(|b| walk.position(&b.value.cidr));
            for b in empty {
                if self.release_block(b).await?
                    && self.claim_block(ctx.host, b.value.cidr).await? == Claim::Ours
                {
                    tracing::info!(host = ctx.host, cidr = %b.value.cidr, "reclaimed empty block");
                    return Ok(Some(b.value.cidr));
                }
            }
        }
        Ok(None)
    }

    /// Claims the first candidate along each pool's walk that overlaps no held block and is
    /// not wholly reserved.
    async fn claim_first_free(
        &self,
        ctx: &FamilyCtx<'_>,
        taken: &Occupied,
    ) -> Result<Option<IpNet>, IpamError> {
        for pool in &ctx.pools {
            let mut walk = CandidateWalk::new(pool, ctx.host);
            while let Some(cidr) = walk.next() {
                if let Some(r) = ctx.reservations.covering(&cidr) {
                    walk.skip_past(r);
                    continue;
                }
                if taken.overlaps(&cidr) {
                    continue;
                }
                if self.claim_block(ctx.host, cidr).await? == Claim::Ours {
                    return Ok(Some(cidr));
                }
            }
        }
        Ok(None)
    }

    /// Borrows addresses from other hosts' (or unaffined) blocks, in walk order.
    async fn borrow(
        &self,
        ctx: &FamilyCtx<'_>,
        need: usize,
        granted: &mut Vec<Granted>,
    ) -> Result<usize, IpamError> {
        let blocks = self.list_blocks(ctx.family).await?;
        let mut got = 0;
        for pool in &ctx.pools {
            let walk = CandidateWalk::new(pool, ctx.host);
            let mut cands: Vec<IpNet> = blocks
                .values()
                .filter(|b| pool.has_block(&b.value.cidr))
                .filter(|b| !is_virtual(b.value.affinity.as_deref()))
                .filter(|b| b.value.free_count(|ip| ctx.reservations.contains(ip)) > 0)
                .map(|b| b.value.cidr)
                .collect();
            cands.sort_by_key(|c| walk.position(c));
            for cidr in cands {
                if got == need {
                    return Ok(got);
                }
                let n = self.allocate_in_block(ctx, cidr, need - got, Use::Borrow, granted);
                got += n.await?.unwrap_or(0);
            }
        }
        Ok(got)
    }

    /// Releases what a failed request granted, guarded by handle and sequence number.
    /// Best effort: failures are logged (`check` will report any leftovers).
    async fn roll_back(&self, handle: &str, granted: &[Granted]) {
        let mut by_block: BTreeMap<IpNet, Vec<(IpAddr, u64)>> = BTreeMap::new();
        for g in granted {
            by_block.entry(g.block).or_default().push((g.ip, g.seq));
        }
        for (cidr, ips) in by_block {
            if let Err(e) = self.release_guarded(cidr, handle, &ips).await {
                tracing::warn!(%cidr, handle, error = %e, "rollback failed");
            }
        }
    }

    /// Assigns the specific address `req.ip` to `req.handle`. Returns it block-masked.
    /// Assigning an address the same handle already holds succeeds (idempotent).
    pub async fn assign_ip(&self, req: &AssignIpRequest) -> Result<IpNet, IpamError> {
        check_handle(&req.handle)?;
        check_hostname(&req.hostname)?;
        let pools = self.load_pools().await?;
        let Some(pool) = pools
            .iter()
            .find(|p| !p.disabled && p.net.contains(&req.ip))
        else {
            return Err(IpamError::NotInPool { ip: req.ip });
        };
        let cidr = pool.block_for(req.ip);
        let attrs = with_node(&req.attrs, &req.hostname);
        let masked = IpNet::new(req.ip, cidr.prefix_len()).unwrap_or(cidr);
        for _ in 0..MAX_RETRIES {
            let Some(v) = self.get_block(&cidr).await? else {
                self.claim_block(&req.hostname, cidr).await?;
                continue;
            };
            let mut block = v.value.clone();
            let ordinal = block
                .ordinal_of(req.ip)
                .ok_or(IpamError::NotInPool { ip: req.ip })?;
            match block.allocate_ordinal(ordinal, &req.handle, &attrs) {
                Ok(_) => {}
                Err(OrdinalError::Taken { handle }) if handle.as_deref() == Some(&req.handle) => {
                    return Ok(masked);
                }
                Err(OrdinalError::Taken { handle }) => {
                    return Err(IpamError::InUse {
                        ip: req.ip,
                        handle: handle.unwrap_or_else(|| "<none>".to_string()),
                    });
                }
                Err(OrdinalError::OutOfRange) => return Err(IpamError::NotInPool { ip: req.ip }),
            }
            self.increment_handle(&req.handle, &cidr, 1).await?;
            match self.put_block(&block, v.rev).await? {
                Ok(_) => return Ok(masked),
                Err(e) if is_race(&e) => self.decrement_handle(&req.handle, &cidr, 1).await?,
                Err(e) => {
                    self.decrement_handle(&req.handle, &cidr, 1).await?;
                    return Err(e.into());
                }
            }
        }
        Err(IpamError::TooManyRetries {
            what: format!("assigning {}", req.ip),
            attempts: MAX_RETRIES,
        })
    }
}

/// The address ranges of existing blocks, to skip candidates that collide with a block of
/// another size (left over from a pool re-created with a different blockSize).
struct Occupied(BTreeMap<u128, u128>);

impl Occupied {
    fn of<'a>(blocks: impl Iterator<Item = &'a IpNet>) -> Self {
        Occupied(
            blocks
                .map(|b| (ip_to_u128(b.network()), ip_to_u128(b.broadcast())))
                .collect(),
        )
    }

    fn overlaps(&self, cidr: &IpNet) -> bool {
        let (start, end) = (ip_to_u128(cidr.network()), ip_to_u128(cidr.broadcast()));
        self.0
            .range(..=end)
            .next_back()
            .is_some_and(|(_, last)| *last >= start)
    }
}

fn is_virtual(affinity: Option<&str>) -> bool {
    affinity.is_some_and(|a| a.starts_with("virtual:"))
}
