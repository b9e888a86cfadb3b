//! `check` (read a [`Snapshot`], analyse it) and `fix` (safe repairs of a report).
//!
//! Every repair re-reads what it is about to change and acts only if the problem is still
//! there, writing with CAS on the revision it just validated (and, where the report carries
//! one, only if the record is still at the reported revision). Repairs never release an
//! address unless it is a leak in the report *and* still a leak now: same handle, same
//! sequence number, no Pod and no WorkloadEndpoint, and every address of its handle is such
//! a leak.
//!
//! Limitation: a handle count "repaired" while an allocation is stalled between its handle
//! increment and its block write for the whole time between `check` and `fix` ends up one
//! too low. That can leak an address (found by the next check) but never duplicate one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tortie_api::Kind;
use tortie_store::{KeyValue, Revision};

use super::records::decode;
use super::{Ipam, is_race};
use crate::check::{
    CheckReport, Problem, Snapshot, StoredAffinity, StoredBlock, StoredHandle, analyze,
};
use crate::clock::format_time;
use crate::error::IpamError;
use crate::family::IpFamily;
use crate::keys;
use crate::model::{AffinityState, AllocationBlock, BlockAffinity, IpamHandle};

/// What `fix` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FixSummary {
    /// One line per repair made.
    pub fixed: Vec<String>,
    /// Problems left alone: gone, changed since the report, or not safely repairable.
    pub skipped: Vec<String>,
    /// Leaked addresses released, sorted.
    pub released: Vec<IpAddr>,
    /// Repairs that failed (the rest still ran).
    pub errors: Vec<String>,
}

/// A leak to release: address, block and sequence number from the report.
type Leak = (IpAddr, IpNet, Option<u64>, String, String);

impl Ipam {
    /// Reads every IPAM record and reports inconsistencies. Read-only.
    pub async fn check(&self) -> Result<CheckReport, IpamError> {
        let snap = self.snapshot().await?;
        Ok(analyze(&snap, format_time(self.clock.now())))
    }

    async fn snapshot(&self) -> Result<Snapshot, IpamError> {
        let mut snap = Snapshot {
            pools: self.load_pools().await?,
            ..Snapshot::default()
        };
        for family in IpFamily::ALL {
            for kv in self.store.list(&keys::block_prefix(family)).await?.items {
                match (
                    keys::parse_block_key(&kv.key),
                    decode::<AllocationBlock>(&kv),
                ) {
                    (Some(key_cidr), Ok(v)) if !v.value.deleted => snap.blocks.push(StoredBlock {
                        block: v.value,
                        key_cidr,
                        revision: v.rev,
                    }),
                    (Some(_), Ok(_)) => {}
                    (_, r) => snap.invalid_records.push(invalid(&kv, r.err())),
                }
            }
        }
        for kv in self.store.list(keys::AFFINITY_ROOT).await?.items {
            match (
                keys::parse_affinity_key(&kv.key),
                decode::<BlockAffinity>(&kv),
            ) {
                (Some((node, cidr)), Ok(v)) => snap.affinities.push(StoredAffinity {
                    node,
                    cidr,
                    affinity: v.value,
                    revision: v.rev,
                }),
                (_, r) => snap.invalid_records.push(invalid(&kv, r.err())),
            }
        }
        for kv in self.store.list(keys::HANDLE_PREFIX).await?.items {
            match (keys::parse_handle_key(&kv.key), decode::<IpamHandle>(&kv)) {
                (Some(id), Ok(mut v)) => {
                    v.value.handle_id = id.to_string();
                    snap.handles.push(StoredHandle {
                        handle: v.value,
                        revision: v.rev,
                    });
                }
                (_, r) => snap.invalid_records.push(invalid(&kv, r.err())),
            }
        }
        snap.workload_endpoints = self
            .load_workload_endpoints(&Kind::WorkloadEndpoint.key_prefix())
            .await?;
        snap.pods = self.load_pods().await?;
        Ok(snap)
    }

    /// Repairs what `report` found, safely; keeps going past failures.
    pub async fn fix(&self, report: &CheckReport) -> Result<FixSummary, IpamError> {
        let mut summary = FixSummary::default();
        let mut leaks: BTreeMap<String, Vec<Leak>> = BTreeMap::new();
        for p in &report.problems {
            if let Problem::LeakCandidate {
                ip,
                block,
                handle,
                namespace,
                pod,
                sequence_number,
            } = p
            {
                let leak = (
                    *ip,
                    *block,
                    *sequence_number,
                    namespace.clone(),
                    pod.clone(),
                );
                leaks.entry(handle.clone()).or_default().push(leak);
                continue;
            }
            match self.fix_one(p).await {
                Ok(Some(done)) => summary.fixed.push(done),
                Ok(None) => summary.skipped.push(p.to_string()),
                Err(e) => summary.errors.push(format!("{p}: {e}")),
            }
        }
        for (handle, list) in &leaks {
            match self.release_leaks(handle, list).await {
                Ok(released) if released.is_empty() => {
                    summary
                        .skipped
                        .push(format!("leak of handle {handle}: no longer a leak"));
                }
                Ok(released) => {
                    summary.fixed.push(format!(
                        "released {} leaked by handle {handle}",
                        list_ips(&released)
                    ));
                    summary.released.extend(released);
                }
                Err(e) => summary.errors.push(format!("leak of handle {handle}: {e}")),
            }
        }
        summary.released.sort();
        Ok(summary)
    }

    /// Repairs one problem; `Some(description)` if it did.
    async fn fix_one(&self, p: &Problem) -> Result<Option<String>, IpamError> {
        Ok(match p {
            Problem::HandleMismatch {
                handle,
                revision,
                actual,
                ..
            } => {
                let extra: Vec<IpNet> = actual.keys().filter_map(|c| c.parse().ok()).collect();
                self.resync_handle(handle, Some(*revision), &extra)
                    .await?
                    .then(|| format!("re-counted handle {handle}"))
            }
            Problem::MissingHandle { handle, counts, .. } => self
                .recreate_handle(handle, counts)
                .await?
                .then(|| format!("re-created handle {handle}")),
            Problem::AffinityWithoutBlock {
                node,
                cidr,
                revision,
                ..
            }
            | Problem::AffinityMismatch {
                node,
                cidr,
                revision,
                ..
            } => self
                .drop_stale_affinity(node, cidr, *revision)
                .await?
                .then(|| format!("deleted affinity of {node} to {cidr}")),
            Problem::AffinityNotConfirmed {
                node,
                cidr,
                revision,
                ..
            } => self.settle_affinity(node, cidr, *revision).await?,
            Problem::BlockWithoutAffinity { cidr, node, .. } => self
                .recreate_affinity(node, cidr)
                .await?
                .then(|| format!("re-created affinity of {node} to {cidr}")),
            _ => None,
        })
    }

    /// Creates a missing handle record with the counts the blocks hold now.
    async fn recreate_handle(
        &self,
        handle: &str,
        counts: &BTreeMap<String, u64>,
    ) -> Result<bool, IpamError> {
        let key = keys::handle_key(handle);
        if self.store.get(&key).await?.is_some() {
            return Ok(false);
        }
        let mut actual = BTreeMap::new();
        for cidr in counts.keys().filter_map(|c| c.parse::<IpNet>().ok()) {
            if let Some(b) = self.get_block(&cidr).await?
                && let Some(n) = b.value.handle_counts().get(handle)
            {
                actual.insert(cidr.to_string(), *n);
            }
        }
        if actual.is_empty() {
            return Ok(false);
        }
        let h = IpamHandle {
            handle_id: handle.to_string(),
            block: actual,
            deleted: false,
        };
        match self.create_json(&key, &h).await? {
            Ok(_) => Ok(true),
            Err(e) if is_race(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads `node`'s affinity to `cidr` if it is still at `revision`.
    async fn affinity_at(
        &self,
        node: &str,
        cidr: &IpNet,
        revision: Revision,
    ) -> Result<Option<BlockAffinity>, IpamError> {
        let a = self
            .get_json::<BlockAffinity>(&keys::affinity_key(node, cidr))
            .await?;
        Ok(a.filter(|a| a.rev == revision).map(|a| a.value))
    }

    /// Deletes an affinity (still at `revision`) whose block is gone or belongs to another.
    async fn drop_stale_affinity(
        &self,
        node: &str,
        cidr: &IpNet,
        revision: Revision,
    ) -> Result<bool, IpamError> {
        if self.affinity_at(node, cidr, revision).await?.is_none() {
            return Ok(false);
        }
        let block = self.get_block(cidr).await?;
        if block.is_some_and(|b| b.value.host_affinity() == Some(node)) {
            return Ok(false);
        }
        self.delete_if_unchanged(&keys::affinity_key(node, cidr), revision)
            .await
    }

    /// A pending / pendingDeletion affinity (still at `revision`): confirm it if the block
    /// is the node's, delete it otherwise.
    async fn settle_affinity(
        &self,
        node: &str,
        cidr: &IpNet,
        revision: Revision,
    ) -> Result<Option<String>, IpamError> {
        let Some(a) = self.affinity_at(node, cidr, revision).await? else {
            return Ok(None);
        };
        if a.state == AffinityState::Confirmed {
            return Ok(None);
        }
        let key = keys::affinity_key(node, cidr);
        let ours = self
            .get_block(cidr)
            .await?
            .is_some_and(|b| b.value.host_affinity() == Some(node));
        if !ours {
            let done = self.delete_if_unchanged(&key, revision).await?;
            return Ok(done.then(|| format!("deleted {} affinity of {node} to {cidr}", a.state)));
        }
        let confirmed = BlockAffinity::host(node, *cidr, AffinityState::Confirmed);
        match self.update_json(&key, &confirmed, revision).await? {
            Ok(_) => Ok(Some(format!("confirmed affinity of {node} to {cidr}"))),
            Err(e) if is_race(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a confirmed affinity for a block affine to `node` that has none.
    async fn recreate_affinity(&self, node: &str, cidr: &IpNet) -> Result<bool, IpamError> {
        let owned = self
            .get_block(cidr)
            .await?
            .is_some_and(|b| b.value.host_affinity() == Some(node));
        if !owned {
            return Ok(false);
        }
        let a = BlockAffinity::host(node, *cidr, AffinityState::Confirmed);
        match self
            .create_json(&keys::affinity_key(node, cidr), &a)
            .await?
        {
            Ok(_) => Ok(true),
            Err(e) if is_race(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete_if_unchanged(&self, key: &str, revision: Revision) -> Result<bool, IpamError> {
        match self.store.delete(key, Some(revision)).await {
            Ok(_) => Ok(true),
            Err(e) if is_race(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Releases a handle's reported leaks if every address the handle holds now is one of
    /// them (same sequence number) and each pod is still gone.
    async fn release_leaks(&self, handle: &str, leaks: &[Leak]) -> Result<Vec<IpAddr>, IpamError> {
        let reported: BTreeMap<IpAddr, Option<u64>> =
            leaks.iter().map(|(ip, _, seq, _, _)| (*ip, *seq)).collect();
        let mut blocks: BTreeSet<IpNet> = leaks.iter().map(|l| l.1).collect();
        if let Some(h) = self
            .get_json::<IpamHandle>(&keys::handle_key(handle))
            .await?
        {
            blocks.extend(h.value.block.keys().filter_map(|c| c.parse::<IpNet>().ok()));
        }
        let mut current: BTreeMap<IpNet, Vec<(IpAddr, u64)>> = BTreeMap::new();
        for cidr in &blocks {
            let Some(b) = self.get_block(cidr).await? else {
                continue;
            };
            for a in b
                .value
                .allocated()
                .filter(|a| a.attr.handle_id.as_deref() == Some(handle))
            {
                let Some(seq) = a.sequence_number else {
                    return Ok(Vec::new());
                };
                if reported.get(&a.ip) != Some(&Some(seq)) {
                    return Ok(Vec::new());
                }
                current.entry(*cidr).or_default().push((a.ip, seq));
            }
        }
        let pods: BTreeSet<(&str, &str)> =
            leaks.iter().map(|l| (l.3.as_str(), l.4.as_str())).collect();
        for (ns, pod) in pods {
            if self.workload_exists(ns, pod).await? {
                return Ok(Vec::new());
            }
        }
        let mut released = Vec::new();
        for (cidr, ips) in current {
            released.extend(self.release_guarded(cidr, handle, &ips).await?);
        }
        Ok(released)
    }
}

fn invalid(kv: &KeyValue, err: Option<IpamError>) -> (String, String) {
    let reason = err.map_or_else(|| "key does not parse".to_string(), |e| e.to_string());
    (kv.key.clone(), reason)
}

fn list_ips(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
