//! tortie's node agent (`tortie agent`): the Felix part of Calico that a static-routing
//! cluster needs.
//!
//! One agent runs per node. It registers the node's `Node` record, follows the datastore
//! through the [`tortie_store::Syncer`] (everything under `/calico/`), and:
//! - programs the routes that let pods reach pods on other nodes — a route per remote block
//!   via that node's underlay IP, a blackhole per own block, `/32`s for borrowed addresses
//!   ([`calc`]) — reconciling the kernel by mark-and-sweep over routes tagged
//!   [`route::ROUTE_PROTOCOL`] ([`route_manager`]), never before the first full sync and
//!   never flushing;
//! - keeps WorkloadEndpoint labels equal to their Pod's labels for its own pods ([`labels`]);
//! - serves `/liveness`, `/readiness` and `/metrics` ([`http`], [`metrics`]);
//! - with `--routing bgp`, runs a BGP speaker ([`bgp`], planned by [`bgp_plan`]) that
//!   advertises the node's blocks and installs the routes its peers advertise;
//! - writes packets of Calico `Log` rules as structured `tortie::policy_log` events
//!   ([`policy_log`]).
//!
//! Layout: pure — [`model`], [`calc`], [`route`], [`labels`], [`readiness`], [`node`]'s
//! field merge; effectful — [`dataplane`] (the kernel boundary, with a recording fake),
//! [`main_loop`] (the one task owning all state), [`agent`] (start/stop, signals).

pub mod agent;
pub mod bgp;
pub mod bgp_plan;
pub mod calc;
pub mod config;
pub mod dataplane;
pub mod host_interfaces;
pub mod http;
pub mod label_writer;
pub mod labels;
pub mod main_loop;
pub mod metrics;
pub mod model;
pub mod node;
pub mod policy_dataplane;
pub mod policy_log;
pub mod policy_model;
pub mod readiness;
pub mod route;
pub mod route_manager;

pub use agent::{Agent, run};
pub use config::{AgentArgs, AgentConfig, ConfigError, Routing};
pub use dataplane::{FakeDataplane, NetlinkDataplane, NodeDataplane};
pub use route::ROUTE_PROTOCOL;
