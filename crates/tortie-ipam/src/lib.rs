//! Calico-compatible block IPAM over tortie's revisioned [`Store`](tortie_store::Store).
//!
//! Pools (IPPool resources) are carved into blocks (default /26, /122 for IPv6); a node
//! claims blocks (block affinity) and allocates addresses from them without contention;
//! handles group an owner's addresses. Records use Calico's etcd key layout and JSON shapes
//! (see [`keys`] and [`model`]), so the data is the same a Calico cluster on etcd keeps.
//!
//! Layout:
//! - pure: [`block`] (allocate/release inside one block), [`pool`] (pool selection,
//!   reservations, the hostname-seeded block walk), [`check`] (consistency analysis),
//!   [`usage`], [`config`], [`keys`], [`model`];
//! - effectful: [`Ipam`], the driver: every write is a CAS on the record's revision with at
//!   most [`MAX_RETRIES`] attempts, and no partially mutated record is ever written.
//!
//! Safety invariants (checked by the property and concurrency tests):
//! - no address is ever allocated twice;
//! - every allocated address belongs to exactly one handle, and handle counts equal the
//!   blocks' allocations whenever no operation is in flight;
//! - a host's confirmed affinities and the blocks' `affinity` fields agree;
//! - a release (by address, handle, GC or repair) frees exactly what it names, and a release
//!   based on an old view never frees an address that was re-allocated since (per-address
//!   sequence numbers).
//!
//! Deliberate differences from Calico: a request that cannot be met in full releases what it
//! got and fails (no partial results); `ipCooldownSeconds` is ignored (FIFO reuse instead);
//! `maxBlocksPerHost` is honoured without requiring `strictAffinity`; explicitly requested
//! pools ignore selectors; IPReservations apply to automatic assignment only.

pub mod block;
pub mod check;
pub mod clock;
pub mod config;
pub mod error;
pub mod family;
mod ipam;
pub mod keys;
pub mod model;
pub mod pool;
pub mod request;
pub mod usage;

pub use check::{CheckReport, Problem};
pub use clock::{Clock, FakeClock, SystemClock};
pub use error::IpamError;
pub use family::IpFamily;
pub use ipam::{EMPTY_BLOCK_MIN_RECLAIM_AGE, FixSummary, Ipam, MAX_RETRIES};
pub use request::{
    AllocationInfo, AssignIpRequest, AutoAssignRequest, AutoAssignResult, GcPolicy, GcSummary,
};
pub use usage::{BlockUsage, BorrowedIp, PoolUsage, Usage};
