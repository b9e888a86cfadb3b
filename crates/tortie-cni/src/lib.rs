//! Container Network Interface support: the spec's types (results, errors, environment) and
//! tortie's plugins. `tortie-ipam` is a CNI IPAM plugin backed by tortie's block IPAM.
//!
//! Supported spec versions: 0.3.0, 0.3.1, 0.4.0, 1.0.0 and 1.1.0 (GC and STATUS).

pub mod config;
pub mod env;
pub mod ipam_plugin;
pub mod spec;
