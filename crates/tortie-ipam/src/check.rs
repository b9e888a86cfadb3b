//! The consistency check, pure: [`analyze`] turns a [`Snapshot`] of every IPAM record (and
//! the WorkloadEndpoints and Pods that prove allocations live) into a [`CheckReport`].
//!
//! What counts as a problem:
//! - records that do not decode, and blocks that break their structural invariants;
//! - blocks outside every pool; one address allocated in two (overlapping) blocks;
//! - allocations without a handle ID, or whose handle record is missing;
//! - handles whose per-block counts differ from the blocks (including handles with no
//!   addresses at all, e.g. after a crash between the handle increment and the block write);
//! - affinities with no block, not confirmed, or naming a node the block does not name;
//!   blocks affine to a node with no affinity record;
//! - addresses a WorkloadEndpoint uses that are not allocated;
//! - allocations for a pod (`namespace` + `pod` attributes) whose Pod and WorkloadEndpoint
//!   are both gone: leak candidates.
//!
//! Snapshots are read key range by key range, not atomically: run against a busy cluster the
//! report can show transient problems, which is why every repair re-validates under CAS.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tortie_store::Revision;

use crate::model::{AffinityState, AllocationBlock, BlockAffinity, IpamHandle};
use crate::pool::Pool;
use crate::request::{ATTR_NAMESPACE, ATTR_POD};

/// A block as read, with its revision.
#[derive(Debug, Clone)]
pub struct StoredBlock {
    pub block: AllocationBlock,
    /// The CIDR named by the key.
    pub key_cidr: IpNet,
    pub revision: Revision,
}

/// An affinity as read.
#[derive(Debug, Clone)]
pub struct StoredAffinity {
    pub node: String,
    pub cidr: IpNet,
    pub affinity: BlockAffinity,
    pub revision: Revision,
}

/// A handle as read (`handle.handle_id` is the ID from the key).
#[derive(Debug, Clone)]
pub struct StoredHandle {
    pub handle: IpamHandle,
    pub revision: Revision,
}

/// What a WorkloadEndpoint says about its pod and addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadEndpointInfo {
    pub key: String,
    pub namespace: String,
    pub pod: String,
    pub ips: Vec<IpAddr>,
}

/// Everything the check looks at.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub pools: Vec<Pool>,
    pub blocks: Vec<StoredBlock>,
    pub affinities: Vec<StoredAffinity>,
    pub handles: Vec<StoredHandle>,
    /// Records that did not decode: key and reason.
    pub invalid_records: Vec<(String, String)>,
    pub workload_endpoints: Vec<WorkloadEndpointInfo>,
    /// `(namespace, name)` of every stored Pod.
    pub pods: BTreeSet<(String, String)>,
}

/// One inconsistency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "problem",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Problem {
    InvalidRecord {
        key: String,
        reason: String,
    },
    InvalidBlock {
        cidr: IpNet,
        reason: String,
    },
    BlockOutsidePools {
        cidr: IpNet,
        in_use: usize,
    },
    DuplicateAllocation {
        ip: IpAddr,
        blocks: Vec<IpNet>,
    },
    AllocationWithoutHandle {
        ip: IpAddr,
        block: IpNet,
    },
    /// Allocations whose handle record is missing; `counts` per block.
    MissingHandle {
        handle: String,
        ips: Vec<IpAddr>,
        counts: BTreeMap<String, u64>,
    },
    /// The handle's counts differ from the blocks (`actual` empty: it holds nothing).
    HandleMismatch {
        handle: String,
        revision: Revision,
        recorded: BTreeMap<String, u64>,
        actual: BTreeMap<String, u64>,
    },
    AffinityWithoutBlock {
        node: String,
        cidr: IpNet,
        state: AffinityState,
        revision: Revision,
    },
    AffinityNotConfirmed {
        node: String,
        cidr: IpNet,
        state: AffinityState,
        revision: Revision,
    },
    AffinityMismatch {
        node: String,
        cidr: IpNet,
        revision: Revision,
        block_affinity: Option<String>,
    },
    BlockWithoutAffinity {
        cidr: IpNet,
        node: String,
        block_revision: Revision,
    },
    InUseWithoutAllocation {
        ip: IpAddr,
        workload_endpoint: String,
    },
    LeakCandidate {
        ip: IpAddr,
        block: IpNet,
        handle: String,
        namespace: String,
        pod: String,
        sequence_number: Option<u64>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Problem::*;
        match self {
            InvalidRecord { key, reason } => write!(f, "record {key} is invalid: {reason}"),
            InvalidBlock { cidr, reason } => write!(f, "block {cidr} is invalid: {reason}"),
            BlockOutsidePools { cidr, in_use } => {
                write!(f, "block {cidr} ({in_use} in use) is outside every pool")
            }
            DuplicateAllocation { ip, blocks } => write!(
                f,
                "address {ip} is allocated in several blocks: {}",
                join(blocks)
            ),
            AllocationWithoutHandle { ip, block } => {
                write!(f, "address {ip} in block {block} has no handle")
            }
            MissingHandle { handle, ips, .. } => write!(
                f,
                "handle {handle} holds {} but has no handle record",
                join(ips)
            ),
            HandleMismatch {
                handle,
                recorded,
                actual,
                ..
            } if actual.is_empty() => {
                write!(
                    f,
                    "handle {handle} records {recorded:?} but holds no addresses"
                )
            }
            HandleMismatch {
                handle,
                recorded,
                actual,
                ..
            } => write!(
                f,
                "handle {handle} records {recorded:?} but blocks hold {actual:?}"
            ),
            InUseWithoutAllocation {
                ip,
                workload_endpoint,
            } => write!(
                f,
                "address {ip} is used by {workload_endpoint} but not allocated"
            ),
            LeakCandidate {
                ip,
                handle,
                namespace,
                pod,
                ..
            } => write!(
                f,
                "address {ip} (handle {handle}) belongs to pod {namespace}/{pod}, which no longer exists"
            ),
            _ => self.fmt_affinity(f),
        }
    }
}

impl Problem {
    fn fmt_affinity(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Problem::*;
        match self {
            AffinityWithoutBlock {
                node, cidr, state, ..
            } => write!(
                f,
                "{state} affinity of node {node} to block {cidr}, which does not exist"
            ),
            AffinityNotConfirmed {
                node, cidr, state, ..
            } => write!(
                f,
                "affinity of node {node} to block {cidr} is stuck in state {state}"
            ),
            AffinityMismatch {
                node,
                cidr,
                block_affinity,
                ..
            } => write!(
                f,
                "node {node} has an affinity to block {cidr}, whose affinity is {}",
                block_affinity.as_deref().unwrap_or("empty")
            ),
            BlockWithoutAffinity { cidr, node, .. } => write!(
                f,
                "block {cidr} is affine to node {node}, which has no affinity record for it"
            ),
            _ => Ok(()),
        }
    }
}

fn join<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Counts of what was checked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckSummary {
    pub pools: usize,
    pub blocks: usize,
    pub affinities: usize,
    pub handles: usize,
    pub allocations: usize,
    pub workload_endpoints: usize,
}

/// The result of `ipam check`. Serialises as JSON for `-o json` and `--from-report`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckReport {
    /// When the check ran (RFC 3339).
    pub checked_at: String,
    pub summary: CheckSummary,
    pub problem_count: usize,
    pub problems: Vec<Problem>,
}

impl CheckReport {
    /// True when no problem was found.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// `Check complete; found N problems.` (calicoctl's wording).
    pub fn summary_line(&self) -> String {
        format!("Check complete; found {} problems.", self.problems.len())
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.summary;
        writeln!(
            f,
            "Checked {} pools, {} blocks, {} affinities, {} handles, {} allocations, {} workload endpoints.",
            s.pools, s.blocks, s.affinities, s.handles, s.allocations, s.workload_endpoints
        )?;
        for p in &self.problems {
            writeln!(f, "- {p}")?;
        }
        writeln!(f, "{}", self.summary_line())
    }
}

/// Runs every check over `snap`. `checked_at` is stamped into the report.
pub fn analyze(snap: &Snapshot, checked_at: String) -> CheckReport {
    let mut problems: Vec<Problem> = snap
        .invalid_records
        .iter()
        .map(|(key, reason)| Problem::InvalidRecord {
            key: key.clone(),
            reason: reason.clone(),
        })
        .collect();
    let valid = check_blocks(snap, &mut problems);
    let allocations = check_allocations(snap, &valid, &mut problems);
    check_affinities(snap, &valid, &mut problems);
    CheckReport {
        checked_at,
        summary: CheckSummary {
            pools: snap.pools.len(),
            blocks: snap.blocks.len(),
            affinities: snap.affinities.len(),
            handles: snap.handles.len(),
            allocations,
            workload_endpoints: snap.workload_endpoints.len(),
        },
        problem_count: problems.len(),
        problems,
    }
}

/// Structural checks; returns the blocks sound enough to look inside, by CIDR.
fn check_blocks<'s>(
    snap: &'s Snapshot,
    problems: &mut Vec<Problem>,
) -> BTreeMap<IpNet, &'s StoredBlock> {
    let mut valid = BTreeMap::new();
    for sb in &snap.blocks {
        let b = &sb.block;
        let reason = if sb.key_cidr != b.cidr {
            Err(format!("stored under key for {}", sb.key_cidr))
        } else {
            b.validate()
        };
        if let Err(reason) = reason {
            problems.push(Problem::InvalidBlock {
                cidr: sb.key_cidr,
                reason,
            });
            continue;
        }
        if !snap.pools.iter().any(|p| p.net.contains(&b.cidr.network())) {
            problems.push(Problem::BlockOutsidePools {
                cidr: b.cidr,
                in_use: b.in_use(),
            });
        }
        valid.insert(b.cidr, sb);
    }
    valid
}

/// Per-handle tallies of what the blocks hold.
#[derive(Default)]
struct Tally {
    /// Address → the blocks allocating it.
    owners: BTreeMap<IpAddr, Vec<IpNet>>,
    /// Handle → block CIDR → count.
    counts: BTreeMap<String, BTreeMap<String, u64>>,
    /// Handle → addresses.
    ips_of: BTreeMap<String, Vec<IpAddr>>,
}

/// Allocation, handle, WorkloadEndpoint and leak checks; returns the number of allocations.
fn check_allocations(
    snap: &Snapshot,
    blocks: &BTreeMap<IpNet, &StoredBlock>,
    problems: &mut Vec<Problem>,
) -> usize {
    let mut t = Tally::default();
    for (cidr, sb) in blocks {
        for a in sb.block.allocated() {
            t.owners.entry(a.ip).or_default().push(*cidr);
            let Some(h) = &a.attr.handle_id else {
                problems.push(Problem::AllocationWithoutHandle {
                    ip: a.ip,
                    block: *cidr,
                });
                continue;
            };
            *t.counts
                .entry(h.clone())
                .or_default()
                .entry(cidr.to_string())
                .or_insert(0) += 1;
            t.ips_of.entry(h.clone()).or_default().push(a.ip);
        }
    }
    for (ip, blocks) in &t.owners {
        if blocks.len() > 1 {
            problems.push(Problem::DuplicateAllocation {
                ip: *ip,
                blocks: blocks.clone(),
            });
        }
    }
    check_handles(snap, &t, problems);
    for w in &snap.workload_endpoints {
        for ip in &w.ips {
            if !t.owners.contains_key(ip) {
                problems.push(Problem::InUseWithoutAllocation {
                    ip: *ip,
                    workload_endpoint: w.key.clone(),
                });
            }
        }
    }
    problems.extend(leak_candidates(snap, blocks));
    t.owners.values().map(Vec::len).sum()
}

/// Handle records against the tallies.
fn check_handles(snap: &Snapshot, t: &Tally, problems: &mut Vec<Problem>) {
    let stored: BTreeSet<&str> = snap
        .handles
        .iter()
        .map(|h| h.handle.handle_id.as_str())
        .collect();
    for sh in &snap.handles {
        let actual = t
            .counts
            .get(&sh.handle.handle_id)
            .cloned()
            .unwrap_or_default();
        if actual != sh.handle.block {
            problems.push(Problem::HandleMismatch {
                handle: sh.handle.handle_id.clone(),
                revision: sh.revision,
                recorded: sh.handle.block.clone(),
                actual,
            });
        }
    }
    for (h, c) in &t.counts {
        if !stored.contains(h.as_str()) {
            problems.push(Problem::MissingHandle {
                handle: h.clone(),
                ips: t.ips_of.get(h).cloned().unwrap_or_default(),
                counts: c.clone(),
            });
        }
    }
}

/// Pod allocations whose Pod and WorkloadEndpoint are both gone.
fn leak_candidates(snap: &Snapshot, blocks: &BTreeMap<IpNet, &StoredBlock>) -> Vec<Problem> {
    let wep_pods: BTreeSet<(&str, &str)> = snap
        .workload_endpoints
        .iter()
        .map(|w| (w.namespace.as_str(), w.pod.as_str()))
        .collect();
    let mut leaks = Vec::new();
    for (cidr, sb) in blocks {
        for a in sb.block.allocated() {
            let (Some(h), Some(ns), Some(pod)) = (
                &a.attr.handle_id,
                a.attr.secondary.get(ATTR_NAMESPACE),
                a.attr.secondary.get(ATTR_POD),
            ) else {
                continue;
            };
            let key = (ns.clone(), pod.clone());
            if !snap.pods.contains(&key) && !wep_pods.contains(&(ns.as_str(), pod.as_str())) {
                leaks.push(Problem::LeakCandidate {
                    ip: a.ip,
                    block: *cidr,
                    handle: h.clone(),
                    namespace: ns.clone(),
                    pod: pod.clone(),
                    sequence_number: a.sequence_number,
                });
            }
        }
    }
    leaks
}

/// Affinity ↔ block agreement.
fn check_affinities(
    snap: &Snapshot,
    blocks: &BTreeMap<IpNet, &StoredBlock>,
    problems: &mut Vec<Problem>,
) {
    let mut recorded: BTreeSet<(&str, IpNet)> = BTreeSet::new();
    for a in &snap.affinities {
        recorded.insert((a.node.as_str(), a.cidr));
        let state = a.affinity.state;
        match blocks.get(&a.cidr) {
            None => problems.push(Problem::AffinityWithoutBlock {
                node: a.node.clone(),
                cidr: a.cidr,
                state,
                revision: a.revision,
            }),
            Some(sb) if sb.block.host_affinity() != Some(a.node.as_str()) => {
                problems.push(Problem::AffinityMismatch {
                    node: a.node.clone(),
                    cidr: a.cidr,
                    revision: a.revision,
                    block_affinity: sb.block.affinity.clone(),
                });
            }
            Some(_) if state != AffinityState::Confirmed => {
                problems.push(Problem::AffinityNotConfirmed {
                    node: a.node.clone(),
                    cidr: a.cidr,
                    state,
                    revision: a.revision,
                });
            }
            Some(_) => {}
        }
    }
    for (cidr, sb) in blocks {
        if let Some(node) = sb.block.host_affinity()
            && !recorded.contains(&(node, *cidr))
        {
            problems.push(Problem::BlockWithoutAffinity {
                cidr: *cidr,
                node: node.to_string(),
                block_revision: sb.revision,
            });
        }
    }
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
