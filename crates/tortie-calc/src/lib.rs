//! The calculation graph and policy simulator.
//!
//! Resources go in ([`world::World`]); out come
//! - verdicts with the deciding tier, policy and rule ([`eval`]), which `policy explain` and
//!   `policy matrix` print, and
//! - the node-local dataplane model ([`dataplane::DataplaneModel`]): per-endpoint (workload
//!   and host endpoint) ordered policy lists, shared policy chains, the IP sets their rules
//!   reference and the failsafe ports ([`failsafe`]), which the nftables renderer turns into
//!   kernel state.
//!
//! Both come from the same compiled policy model ([`model`]), built once from the v3 and
//! Kubernetes resources by [`convert`], so the simulator and the kernel tell the same story.
//!
//! Pure: no I/O, no clock; outputs are ordered (BTreeMap) and do not depend on input order.

pub mod convert;
pub mod dataplane;
pub mod eval;
pub mod failsafe;
pub mod graph;
pub mod matrix;
pub mod model;
pub mod world;

pub use model::{Direction, PolicyId, PolicyKind};
pub use world::World;
