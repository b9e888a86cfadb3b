//! The effectful IPAM driver over a [`Store`].
//!
//! Every write is a compare-and-swap on the record's mod revision (or a create that fails if
//! the key exists), retried from a fresh read at most [`MAX_RETRIES`] times. A block is
//! mutated in memory with the pure functions of [`crate::block`] and written whole, so a lost
//! race never persists a half-mutated block.
//!
//! Write ordering (what a crash can leave behind, and who repairs it):
//! - allocate: handle `+n` first, then the block. A crash in between leaves a handle count
//!   too high (`check` reports it, `fix` repairs it); on a lost block race the increment is
//!   undone before retrying;
//! - release: block first, then handle `-n`. A crash in between leaves a handle count too
//!   high, as above. Never the other way round, so a handle never under-counts its addresses
//!   because of a crash;
//! - claim: affinity `pending` → block with `affinity: host:<node>` → affinity `confirmed`.
//!   A pending affinity is never treated as ownership;
//! - block release: affinity `pendingDeletion` → delete the block (CAS on the revision at
//!   which it was seen empty) → delete the affinity. If the block changed, the affinity goes
//!   back to `confirmed`.

mod affinity;
mod assign;
mod gc;
mod query;
mod records;
mod release;
mod repair;
mod workloads;

pub use assign::EMPTY_BLOCK_MIN_RECLAIM_AGE;
pub use repair::FixSummary;

use std::sync::Arc;

use tortie_store::{Store, StoreError};

use crate::clock::{Clock, SystemClock};

/// Most attempts of any compare-and-swap loop.
pub const MAX_RETRIES: usize = 100;

/// Calico block IPAM over a shared store. Cheap to clone; clones share the store and clock.
#[derive(Debug, Clone)]
pub struct Ipam {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Per host: the affine block that last had room, tried first next time. Only a hint for
    /// ordering (a long-lived caller such as the agent or a benchmark skips reading full
    /// blocks); correctness never depends on it.
    hints: Arc<std::sync::Mutex<std::collections::BTreeMap<String, ipnet::IpNet>>>,
}

impl Ipam {
    /// IPAM over `store`, using the system clock.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            clock: Arc::new(SystemClock),
            hints: Arc::default(),
        }
    }

    /// Replaces the clock (grace periods, claim times).
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
    }

    pub(crate) fn hint(&self, host: &str) -> Option<ipnet::IpNet> {
        self.hints.lock().ok().and_then(|h| h.get(host).copied())
    }

    pub(crate) fn set_hint(&self, host: &str, block: ipnet::IpNet) {
        if let Ok(mut h) = self.hints.lock() {
            h.insert(host.to_string(), block);
        }
    }

    /// The store this IPAM works on.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// True for the errors a CAS loop answers by re-reading: the record changed, vanished or
/// appeared under us.
pub(crate) fn is_race(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::Conflict { .. }
            | StoreError::NotFound { .. }
            | StoreError::AlreadyExists { .. }
    )
}
