//! Pure operations on one [`AllocationBlock`]: allocate, allocate a specific ordinal,
//! release with a sequence-number guard, and queries. No I/O: the driver reads a block,
//! mutates a copy with these functions and CAS-writes it back, so a failed write never
//! leaves a half-mutated block anywhere.
//!
//! Invariants every mutation keeps (see [`AllocationBlock::validate`]):
//! - an ordinal is either allocated (`allocations[o] = Some(attr)`) or listed exactly once in
//!   `unallocated`, never both;
//! - `unallocated` is FIFO: allocation pops from the front, release appends at the back, so
//!   the longest-idle address is reused first;
//! - each mutating call that changes anything bumps `sequenceNumber` exactly once, and every
//!   ordinal it allocates records that new number in `sequenceNumberForAllocation`; a release
//!   guarded by a stale number is skipped, so it can never free a re-allocated address;
//! - attributes are shared by allocations with the same handle and attributes, and an
//!   attribute no allocation references is dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::family::{IpFamily, ip_to_u128, net_size, u128_to_ip};
use crate::model::{AllocationAttribute, AllocationBlock};

/// Largest block tortie handles: a /20 (v4) or /116 (v6) is 4096 addresses.
pub const MAX_BLOCK_ADDRESSES: usize = 4096;

/// One address to release, with optional guards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseTarget {
    pub ordinal: usize,
    /// Release only if the allocation still belongs to this handle.
    pub handle: Option<String>,
    /// Release only if the allocation still carries this sequence number.
    pub sequence_number: Option<u64>,
}

impl ReleaseTarget {
    /// An unguarded release of `ordinal`.
    pub fn any(ordinal: usize) -> Self {
        Self {
            ordinal,
            handle: None,
            sequence_number: None,
        }
    }
}

/// What a release did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReleaseOutcome {
    /// Released ordinals and the handle each belonged to.
    pub released: Vec<(usize, Option<String>)>,
    /// Ordinals that were free already (or out of range).
    pub not_allocated: Vec<usize>,
    /// Ordinals whose guard did not match: left allocated.
    pub skipped: Vec<usize>,
}

impl ReleaseOutcome {
    /// Released addresses per handle.
    pub fn handle_counts(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (_, h) in &self.released {
            if let Some(h) = h {
                *out.entry(h.clone()).or_insert(0) += 1;
            }
        }
        out
    }
}

/// A specific ordinal could not be allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrdinalError {
    /// The ordinal is outside the block.
    OutOfRange,
    /// The ordinal is allocated, to this handle if it has one.
    Taken { handle: Option<String> },
}

/// One allocated address of a block.
#[derive(Debug, Clone, Copy)]
pub struct Allocated<'a> {
    pub ordinal: usize,
    pub ip: IpAddr,
    pub attr: &'a AllocationAttribute,
    pub sequence_number: Option<u64>,
}

impl AllocationBlock {
    /// An empty block for `cidr` (host bits of `cidr` are cleared).
    pub fn new(cidr: IpNet, affinity: Option<String>, claim_time: Option<String>) -> Self {
        let cidr = cidr.trunc();
        let size = usize::try_from(net_size(&cidr)).unwrap_or(usize::MAX);
        let size = size.min(MAX_BLOCK_ADDRESSES);
        Self {
            cidr,
            affinity,
            affinity_claim_time: claim_time,
            strict_affinity: false,
            allocations: vec![None; size],
            unallocated: (0..size).collect(),
            attributes: Vec::new(),
            sequence_number: 0,
            sequence_number_for_allocation: BTreeMap::new(),
            deleted: false,
        }
    }

    /// Number of addresses (ordinals) in the block.
    pub fn size(&self) -> usize {
        self.allocations.len()
    }

    /// The block's address family.
    pub fn family(&self) -> IpFamily {
        IpFamily::of_net(&self.cidr)
    }

    /// The node this block is affine to, for `host:<node>` affinities.
    pub fn host_affinity(&self) -> Option<&str> {
        self.affinity.as_deref()?.strip_prefix("host:")
    }

    /// The address at `ordinal`.
    pub fn ip_of(&self, ordinal: usize) -> IpAddr {
        let base = ip_to_u128(self.cidr.network());
        u128_to_ip(self.family(), base.wrapping_add(ordinal as u128))
    }

    /// The ordinal of `ip`, if it is inside the block.
    pub fn ordinal_of(&self, ip: IpAddr) -> Option<usize> {
        if !self.cidr.contains(&ip) {
            return None;
        }
        let off = ip_to_u128(ip) - ip_to_u128(self.cidr.network());
        usize::try_from(off).ok().filter(|o| *o < self.size())
    }

    /// How many addresses are allocated.
    pub fn in_use(&self) -> usize {
        self.allocations.iter().filter(|a| a.is_some()).count()
    }

    /// True when nothing is allocated.
    pub fn is_empty(&self) -> bool {
        self.allocations.iter().all(Option::is_none)
    }

    /// The sequence number recorded for an allocated ordinal.
    pub fn allocation_sequence(&self, ordinal: usize) -> Option<u64> {
        self.sequence_number_for_allocation
            .get(&ordinal.to_string())
            .copied()
    }

    /// The attribute of an allocated ordinal (`None` if free or dangling).
    pub fn allocation(&self, ordinal: usize) -> Option<&AllocationAttribute> {
        let idx = (*self.allocations.get(ordinal)?)?;
        self.attributes.get(idx)
    }

    /// Every allocated address, in ordinal order. Dangling attribute indexes are reported by
    /// [`AllocationBlock::validate`] and use an empty attribute here.
    pub fn allocated(&self) -> impl Iterator<Item = Allocated<'_>> + '_ {
        static EMPTY: AllocationAttribute = AllocationAttribute {
            handle_id: None,
            secondary: BTreeMap::new(),
            alternate: BTreeMap::new(),
            released_at: None,
        };
        self.allocations
            .iter()
            .enumerate()
            .filter_map(move |(ordinal, a)| {
                let idx = (*a)?;
                Some(Allocated {
                    ordinal,
                    ip: self.ip_of(ordinal),
                    attr: self.attributes.get(idx).unwrap_or(&EMPTY),
                    sequence_number: self.allocation_sequence(ordinal),
                })
            })
    }

    /// Allocated addresses per handle.
    pub fn handle_counts(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for a in self.allocated() {
            if let Some(h) = &a.attr.handle_id {
                *out.entry(h.clone()).or_insert(0) += 1;
            }
        }
        out
    }

    /// Free addresses that are not reserved.
    pub fn free_count(&self, reserved: impl Fn(IpAddr) -> bool) -> usize {
        self.unallocated
            .iter()
            .filter(|o| !reserved(self.ip_of(**o)))
            .count()
    }

    /// Allocates up to `n` free, unreserved ordinals to `handle` with `attrs`, taking them in
    /// FIFO order. Returns the ordinals (fewer than `n` if the block runs out); the block is
    /// untouched when none could be allocated.
    pub fn allocate(
        &mut self,
        n: usize,
        handle: &str,
        attrs: &BTreeMap<String, String>,
        reserved: impl Fn(IpAddr) -> bool,
    ) -> Vec<usize> {
        let mut picked = Vec::new();
        let mut keep = Vec::with_capacity(self.unallocated.len());
        for &o in &self.unallocated {
            if picked.len() < n && !reserved(self.ip_of(o)) {
                picked.push(o);
            } else {
                keep.push(o);
            }
        }
        if picked.is_empty() {
            return picked;
        }
        self.unallocated = keep;
        self.sequence_number += 1;
        let attr = self.attribute_index(handle, attrs);
        for &o in &picked {
            self.allocations[o] = Some(attr);
            self.sequence_number_for_allocation
                .insert(o.to_string(), self.sequence_number);
        }
        picked
    }

    /// Allocates exactly `ordinal` to `handle`; returns the allocation's sequence number.
    pub fn allocate_ordinal(
        &mut self,
        ordinal: usize,
        handle: &str,
        attrs: &BTreeMap<String, String>,
    ) -> Result<u64, OrdinalError> {
        match self.allocations.get(ordinal) {
            None => return Err(OrdinalError::OutOfRange),
            Some(Some(_)) => {
                let handle = self.allocation(ordinal).and_then(|a| a.handle_id.clone());
                return Err(OrdinalError::Taken { handle });
            }
            Some(None) => {}
        }
        self.unallocated.retain(|o| *o != ordinal);
        self.sequence_number += 1;
        let attr = self.attribute_index(handle, attrs);
        self.allocations[ordinal] = Some(attr);
        self.sequence_number_for_allocation
            .insert(ordinal.to_string(), self.sequence_number);
        Ok(self.sequence_number)
    }

    /// Releases `targets`, honouring their guards. Changes (and bumps the sequence number)
    /// only if something was released.
    pub fn release(&mut self, targets: &[ReleaseTarget]) -> ReleaseOutcome {
        let mut out = ReleaseOutcome::default();
        for t in targets {
            let Some(attr) = self.allocation_or_dangling(t.ordinal) else {
                out.not_allocated.push(t.ordinal);
                continue;
            };
            let handle = attr.handle_id.clone();
            let handle_ok = t.handle.is_none() || t.handle == handle;
            let seq_ok = t.sequence_number.is_none()
                || t.sequence_number == self.allocation_sequence(t.ordinal);
            if !(handle_ok && seq_ok) {
                out.skipped.push(t.ordinal);
                continue;
            }
            self.allocations[t.ordinal] = None;
            self.unallocated.push(t.ordinal);
            self.sequence_number_for_allocation
                .remove(&t.ordinal.to_string());
            out.released.push((t.ordinal, handle));
        }
        if !out.released.is_empty() {
            self.sequence_number += 1;
            self.drop_unused_attributes();
        }
        out
    }

    /// Release targets for every address of `handle` in this block.
    pub fn targets_for_handle(&self, handle: &str) -> Vec<ReleaseTarget> {
        self.allocated()
            .filter(|a| a.attr.handle_id.as_deref() == Some(handle))
            .map(|a| ReleaseTarget {
                ordinal: a.ordinal,
                handle: Some(handle.to_string()),
                sequence_number: None,
            })
            .collect()
    }

    /// Checks the structural invariants; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.cidr.addr() != self.cidr.network() {
            return Err(format!("cidr {} has host bits set", self.cidr));
        }
        let expected = net_size(&self.cidr);
        if expected > MAX_BLOCK_ADDRESSES as u128 {
            return Err(format!(
                "block {} is larger than {MAX_BLOCK_ADDRESSES} addresses",
                self.cidr
            ));
        }
        if self.allocations.len() as u128 != expected {
            return Err(format!(
                "has {} allocation slots, expected {expected}",
                self.allocations.len()
            ));
        }
        for (o, a) in self.allocations.iter().enumerate() {
            if let Some(i) = a
                && *i >= self.attributes.len()
            {
                return Err(format!("ordinal {o} refers to missing attribute {i}"));
            }
        }
        let mut seen = BTreeSet::new();
        for &o in &self.unallocated {
            match self.allocations.get(o) {
                None => return Err(format!("unallocated ordinal {o} is out of range")),
                Some(Some(_)) => return Err(format!("ordinal {o} is both allocated and free")),
                Some(None) if !seen.insert(o) => {
                    return Err(format!("ordinal {o} is listed twice as free"));
                }
                Some(None) => {}
            }
        }
        let free = self.allocations.len() - self.in_use();
        if free != seen.len() {
            return Err(format!(
                "{} free ordinals are missing from the unallocated list",
                free - seen.len()
            ));
        }
        Ok(())
    }

    /// The attribute of `ordinal` if allocated; an allocated ordinal with a dangling index
    /// yields an empty attribute so it can still be released.
    fn allocation_or_dangling(&self, ordinal: usize) -> Option<AllocationAttribute> {
        let idx = (*self.allocations.get(ordinal)?)?;
        Some(self.attributes.get(idx).cloned().unwrap_or_default())
    }

    /// The index of the attribute for `(handle, attrs)`, adding it if new.
    fn attribute_index(&mut self, handle: &str, attrs: &BTreeMap<String, String>) -> usize {
        let found = self.attributes.iter().position(|a| {
            a.handle_id.as_deref() == Some(handle)
                && a.secondary == *attrs
                && a.alternate.is_empty()
                && a.released_at.is_none()
        });
        found.unwrap_or_else(|| {
            self.attributes.push(AllocationAttribute {
                handle_id: Some(handle.to_string()),
                secondary: attrs.clone(),
                ..AllocationAttribute::default()
            });
            self.attributes.len() - 1
        })
    }

    /// Removes attributes no allocation refers to, renumbering the rest.
    fn drop_unused_attributes(&mut self) {
        let used: BTreeSet<usize> = self.allocations.iter().flatten().copied().collect();
        let dangling = used.last().is_some_and(|i| *i >= self.attributes.len());
        if dangling || used.len() == self.attributes.len() {
            return;
        }
        let mut remap = BTreeMap::new();
        let old = std::mem::take(&mut self.attributes);
        for (i, a) in old.into_iter().enumerate() {
            if used.contains(&i) {
                remap.insert(i, self.attributes.len());
                self.attributes.push(a);
            }
        }
        for slot in self.allocations.iter_mut().flatten() {
            if let Some(n) = remap.get(slot) {
                *slot = *n;
            }
        }
    }
}

#[cfg(test)]
#[path = "block_tests.rs"]
mod tests;
