//! Network namespaces and rtnetlink helpers shared by tortie's CNI plugin and node agent.
//!
//! The API is deliberately small:
//! - [`NetNs`]: a handle on a network namespace (a `/run/netns/NAME` path, any nsfs path, or
//!   the caller's own). [`NetNs::run`] runs a closure on a fresh thread that has entered the
//!   namespace; the thread never switches back, it just ends, so no other code ever runs in
//!   the wrong namespace (the aya `NetNsGuard` idea, without a restore step that could fail).
//! - [`netlink_handle_in`]: an [`rtnetlink::Handle`] whose socket was created inside a
//!   namespace (a netlink socket stays bound to the namespace it was created in), driven on
//!   the caller's tokio runtime.
//! - Plain async functions over a handle for links ([`link`]), addresses ([`addr`]), routes
//!   ([`route`]) and neighbours ([`neigh`]), and [`sysctl`] writes within a namespace.
//!
//! Routes are values ([`route::Route`]): built and unit-tested as data, turned into netlink
//! messages in one place. Many route changes at once go through a [`batch::RouteSocket`]:
//! a window of messages per `sendmsg`, every answer matched to its route.
//!
//! Every function that touches the kernel returns [`Error`], whose [`Error::errno`] lets
//! callers treat "already gone" or "already there" as success.
//!
//! ```no_run
//! # async fn demo() -> Result<(), tortie_netlink::Error> {
//! use tortie_netlink::route::{Route, RouteFilter, add_route, list_routes};
//! use tortie_netlink::{NetNs, netlink_handle_in};
//!
//! let node = NetNs::named("lab1-n1")?; // /run/netns/lab1-n1
//! let h = netlink_handle_in(&node)?; // inside a tokio runtime
//! let block = "10.244.3.0/26".parse().expect("cidr");
//! add_route(&h, &Route::blackhole(block).with_protocol(81)).await?;
//! let ours = list_routes(&h, &RouteFilter::protocol(81)).await?;
//! # let _ = ours; Ok(()) }
//! ```

pub mod addr;
pub mod batch;
pub mod error;
pub mod link;
pub mod monitor;
pub mod neigh;
pub mod netns;
pub mod route;
pub mod sysctl;
pub mod testing;

pub use error::Error;
pub use netns::{NetNs, netlink_handle_in};
pub use rtnetlink::Handle;

/// Route protocol tag (`proto 80` in `ip route`) on the host routes tortie's CNI plugin adds
/// towards workload veths, so the agent and cleanup can tell them from anyone else's.
pub const WORKLOAD_ROUTE_PROTOCOL: u8 = 80;
