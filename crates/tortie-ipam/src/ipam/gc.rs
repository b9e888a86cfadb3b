//! Garbage collection: leaked allocations (`gc`) and empty blocks
//! (`release_empty_blocks`).
//!
//! Both remember what they saw in the store, under `/tortie/ipam/v1/observations/`, so a
//! short-lived process (the CNI plugin's GC command, a CLI run) and a long-lived controller
//! share one memory of "first seen" times and a restart does not reset grace periods:
//! - a leak observation names the address, its handle and sequence number, and when the
//!   allocation was first seen orphaned. If the allocation changes (re-allocated), the
//!   observation starts over. An orphan is released only once observed for `grace`, only if
//!   every address of its handle is a confirmed orphan, and only after re-checking, right
//!   before the release, that its Pod and WorkloadEndpoint are still gone; the release is
//!   guarded by handle and sequence number;
//! - an empty-block observation names the block's create revision and sequence number. A
//!   block is released only when a later call sees it still empty and unchanged (same create
//!   revision and sequence number) at least `min_age` after the first observation.
//!
//! Observations that no longer apply are deleted on each pass.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use super::records::{Versioned, decode};
use super::{Ipam, is_race};
use crate::clock::{age, format_time, parse_time};
use crate::error::IpamError;
use crate::family::IpFamily;
use crate::keys;
use crate::model::{AllocationBlock, EmptyBlockObservation, LeakObservation};
use crate::request::{ATTR_NAMESPACE, ATTR_POD, GcPolicy, GcSummary};
use tortie_api::Kind;

/// One orphaned allocation.
#[derive(Debug, Clone)]
struct Orphan {
    ip: IpAddr,
    block: IpNet,
    seq: u64,
    pod: Option<(String, String)>,
}

impl Ipam {
    /// Releases allocations whose workload no longer exists, once they have been orphaned
    /// for `policy.grace`. Never releases an allocation with live evidence (see
    /// [`GcPolicy`]); allocations without `namespace`/`pod` attributes and not governed by
    /// `valid_handles` are assumed live.
    pub async fn gc(&self, policy: &GcPolicy) -> Result<GcSummary, IpamError> {
        let now = self.clock.now();
        let mut summary = GcSummary::default();
        let (orphans, live) = self.find_orphans(policy, &mut summary).await?;
        summary.orphaned = orphans.values().map(Vec::len).sum();
        let confirmed = self.observe_orphans(&orphans, policy.grace, now).await?;
        for (handle, list) in &orphans {
            let ready = list.iter().all(|o| confirmed.contains(&o.ip));
            if live.contains(handle) || !ready {
                summary.waiting += list.len();
                continue;
            }
            let released = self.release_orphans(handle, list).await?;
            summary.waiting += list.len() - released.len();
            for ip in &released {
                self.forget(&keys::leak_observation_key(*ip)).await?;
            }
            summary.released.extend(released);
        }
        summary.released.sort();
        Ok(summary)
    }

    /// Classifies every governed allocation: orphans by handle, and handles with a live
    /// address.
    async fn find_orphans(
        &self,
        policy: &GcPolicy,
        summary: &mut GcSummary,
    ) -> Result<(BTreeMap<String, Vec<Orphan>>, BTreeSet<String>), IpamError> {
        let pods = self.load_pods().await?;
        let weps = self
            .load_workload_endpoints(&Kind::WorkloadEndpoint.key_prefix())
            .await?;
        let wep_pods: BTreeSet<(String, String)> =
            weps.into_iter().map(|w| (w.namespace, w.pod)).collect();
        let mut orphans: BTreeMap<String, Vec<Orphan>> = BTreeMap::new();
        let mut live = BTreeSet::new();
        for family in IpFamily::ALL {
            for b in self.list_blocks(family).await?.into_values() {
                for a in b.value.allocated() {
                    let Some(handle) = &a.attr.handle_id else {
                        continue;
                    };
                    if policy
                        .handle_prefix
                        .as_ref()
                        .is_some_and(|p| !handle.starts_with(p.as_str()))
                    {
                        continue;
                    }
                    summary.scanned += 1;
                    let pod = match (
                        a.attr.secondary.get(ATTR_NAMESPACE),
                        a.attr.secondary.get(ATTR_POD),
                    ) {
                        (Some(ns), Some(p)) => Some((ns.clone(), p.clone())),
                        _ => None,
                    };
                    let exists = pod
                        .as_ref()
                        .map(|k| pods.contains(k) || wep_pods.contains(k));
                    let orphaned = match &policy.valid_handles {
                        Some(valid) => !valid.contains(handle) && exists != Some(true),
                        None => exists == Some(false),
                    };
                    match (orphaned, a.sequence_number) {
                        (true, Some(seq)) => {
                            orphans.entry(handle.clone()).or_default().push(Orphan {
                                ip: a.ip,
                                block: b.value.cidr,
                                seq,
                                pod,
                            })
                        }
                        _ => {
                            live.insert(handle.clone());
                        }
                    }
                }
            }
        }
        Ok((orphans, live))
    }

    /// Records first-seen times; returns the orphans seen for at least `grace`. Deletes
    /// observations of addresses that are no longer orphans.
    async fn observe_orphans(
        &self,
        orphans: &BTreeMap<String, Vec<Orphan>>,
        grace: Duration,
        now: SystemTime,
    ) -> Result<BTreeSet<IpAddr>, IpamError> {
        let mut seen: BTreeMap<IpAddr, Versioned<LeakObservation>> = BTreeMap::new();
        for kv in self.store.list(keys::LEAK_OBSERVATION_PREFIX).await?.items {
            match decode::<LeakObservation>(&kv) {
                Ok(v) => {
                    seen.insert(v.value.ip, v);
                }
                Err(_) => self.forget(&kv.key).await?,
            }
        }
        let mut confirmed = BTreeSet::new();
        let mut current = BTreeSet::new();
        for (handle, list) in orphans {
            for o in list {
                current.insert(o.ip);
                let prior = seen
                    .get(&o.ip)
                    .filter(|v| v.value.handle == *handle && v.value.sequence_number == o.seq);
                let first = prior.and_then(|v| parse_time(&v.value.first_seen));
                let first = match first {
                    Some(t) => t,
                    None if grace.is_zero() => now,
                    None => {
                        let obs = LeakObservation {
                            ip: o.ip,
                            handle: handle.clone(),
                            sequence_number: o.seq,
                            first_seen: format_time(now),
                        };
                        self.put_observation(
                            &keys::leak_observation_key(o.ip),
                            &obs,
                            seen.get(&o.ip).map(|v| v.rev),
                        )
                        .await?;
                        now
                    }
                };
                if age(now, first) >= grace {
                    confirmed.insert(o.ip);
                }
            }
        }
        for (ip, v) in &seen {
            if !current.contains(ip) {
                self.forget_at(&keys::leak_observation_key(*ip), v.rev)
                    .await?;
            }
        }
        Ok(confirmed)
    }

    /// Re-validates a handle's orphans right before releasing them.
    async fn release_orphans(
        &self,
        handle: &str,
        list: &[Orphan],
    ) -> Result<Vec<IpAddr>, IpamError> {
        let pods: BTreeSet<&(String, String)> =
            list.iter().filter_map(|o| o.pod.as_ref()).collect();
        for (ns, pod) in pods {
            if self.workload_exists(ns, pod).await? {
                return Ok(Vec::new());
            }
        }
        let mut by_block: BTreeMap<IpNet, Vec<(IpAddr, u64)>> = BTreeMap::new();
        for o in list {
            by_block.entry(o.block).or_default().push((o.ip, o.seq));
        }
        let mut released = Vec::new();
        for (cidr, ips) in by_block {
            released.extend(self.release_guarded(cidr, handle, &ips).await?);
        }
        if !released.is_empty() {
            tracing::info!(
                handle,
                released = released.len(),
                "released leaked addresses"
            );
        }
        Ok(released)
    }

    /// Releases blocks seen empty and unchanged on two calls at least `min_age` apart.
    /// Returns how many blocks were released.
    pub async fn release_empty_blocks(&self, min_age: Duration) -> Result<usize, IpamError> {
        let now = self.clock.now();
        let mut seen: BTreeMap<IpNet, Versioned<EmptyBlockObservation>> = BTreeMap::new();
        for kv in self
            .store
            .list(keys::EMPTY_BLOCK_OBSERVATION_PREFIX)
            .await?
            .items
        {
            match decode::<EmptyBlockObservation>(&kv) {
                Ok(v) => {
                    seen.insert(v.value.cidr, v);
                }
                Err(_) => self.forget(&kv.key).await?,
            }
        }
        let mut empty = BTreeSet::new();
        let mut released = 0;
        for family in IpFamily::ALL {
            for b in self.list_blocks(family).await?.into_values() {
                let virtual_owner = b
                    .value
                    .affinity
                    .as_deref()
                    .is_some_and(|a| a.starts_with("virtual:"));
                if !b.value.is_empty() || virtual_owner {
                    continue;
                }
                let cidr = b.value.cidr;
                empty.insert(cidr);
                let prior = seen.get(&cidr);
                let same = prior.filter(|o| {
                    o.value.create_revision == b.create_rev
                        && o.value.sequence_number == b.value.sequence_number
                });
                match same.and_then(|o| parse_time(&o.value.first_seen)) {
                    Some(first) if age(now, first) >= min_age => {
                        if self.release_block(&b).await? {
                            released += 1;
                            self.forget(&keys::empty_block_observation_key(&cidr))
                                .await?;
                        }
                    }
                    Some(_) => {}
                    None => self.observe_empty(&b, now, prior.map(|o| o.rev)).await?,
                }
            }
        }
        for (cidr, v) in &seen {
            if !empty.contains(cidr) {
                self.forget_at(&keys::empty_block_observation_key(cidr), v.rev)
                    .await?;
            }
        }
        Ok(released)
    }

    async fn observe_empty(
        &self,
        b: &Versioned<AllocationBlock>,
        now: SystemTime,
        prior: Option<tortie_store::Revision>,
    ) -> Result<(), IpamError> {
        let obs = EmptyBlockObservation {
            cidr: b.value.cidr,
            create_revision: b.create_rev,
            sequence_number: b.value.sequence_number,
            first_seen: format_time(now),
        };
        self.put_observation(
            &keys::empty_block_observation_key(&b.value.cidr),
            &obs,
            prior,
        )
        .await
    }

    /// Creates or CAS-replaces an observation; losing a race to another GC is fine.
    async fn put_observation<T: serde::Serialize>(
        &self,
        key: &str,
        value: &T,
        prior: Option<tortie_store::Revision>,
    ) -> Result<(), IpamError> {
        let written = match prior {
            Some(rev) => self.update_json(key, value, rev).await?,
            None => self.create_json(key, value).await?,
        };
        match written {
            Ok(_) => Ok(()),
            Err(e) if is_race(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an observation, whatever its revision; absent is fine.
    async fn forget(&self, key: &str) -> Result<(), IpamError> {
        match self.store.delete(key, None).await {
            Ok(_) => Ok(()),
            Err(e) if is_race(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an observation if it is still at `rev`.
    async fn forget_at(&self, key: &str, rev: tortie_store::Revision) -> Result<(), IpamError> {
        match self.store.delete(key, Some(rev)).await {
            Ok(_) => Ok(()),
            Err(e) if is_race(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
