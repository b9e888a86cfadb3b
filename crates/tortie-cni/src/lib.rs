//! Container Network Interface support: the spec's types (results, errors, environment) and
//! tortie's plugins. `tortie-cni` ([`net_plugin`]) is the interface plugin that wires pods the
//! way Calico does and records WorkloadEndpoints; `tortie-ipam` ([`ipam_plugin`]) is a CNI
//! IPAM plugin backed by tortie's block IPAM, which `tortie-cni` also calls in-process.
//!
//! Supported spec versions: 0.3.0, 0.3.1, 0.4.0, 1.0.0 and 1.1.0 (GC and STATUS).

pub mod config;
pub mod env;
pub mod ipam_plugin;
pub mod naming;
pub mod net_plugin;
pub mod spec;
pub mod wep;
pub mod wiring;
