//! The kernel boundary of the agent: one trait, the netlink implementation, and a recording
//! fake for tests.
//!
//! [`NodeDataplane`] executes [`RouteOp`] values and lists the routes tagged
//! [`ROUTE_PROTOCOL`]; it never decides anything. [`NetlinkDataplane`] does it in the host
//! namespace given at construction (the agent's own, or `--host-netns`): listings through
//! rtnetlink, the ops of an apply in batches ([`tortie_netlink::batch::RouteSocket`]: a window
//! of messages per `sendmsg` on a blocking thread, every op's answer matched to it).

use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use ipnet::IpNet;
use tortie_netlink::batch::RouteSocket;
use tortie_netlink::route::{self as nl, Route, RouteFilter, RouteKind, RouteRequest};
use tortie_netlink::{Handle, NetNs};

use crate::route::{KernelRoute, ROUTE_PROTOCOL, RouteOp, RouteTarget, default_metric};

/// A dataplane failure.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// The host namespace could not be opened or no netlink socket made in it.
    #[error("cannot reach the host network namespace")]
    Open {
        #[source]
        source: Box<tortie_netlink::Error>,
    },
    /// Listing the tagged routes failed.
    #[error("listing routes")]
    List {
        #[source]
        source: Box<tortie_netlink::Error>,
    },
    /// One route change failed.
    #[error("{op}")]
    Op {
        op: RouteOp,
        #[source]
        source: Box<tortie_netlink::Error>,
    },
    /// A sysctl could not be set.
    #[error("setting sysctl {key}")]
    Sysctl {
        key: String,
        #[source]
        source: Box<tortie_netlink::Error>,
    },
    /// A failure injected by [`FakeDataplane`].
    #[error("{what}: {reason}")]
    Fake { what: String, reason: String },
}

/// The error and its sources, `: `-joined, for logs and the readiness reason.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}

impl DataplaneError {
    /// The whole chain as one line.
    pub fn chain(&self) -> String {
        error_chain(self)
    }

    /// `op` whose outcome never came back (a dataplane gave fewer results than ops, or its
    /// worker thread died): unknown, so a failure.
    pub fn missing_result(op: RouteOp) -> DataplaneError {
        DataplaneError::Op {
            op,
            source: Box::new(tortie_netlink::Error::Unanswered {
                what: op.to_string(),
                source: std::io::Error::other("the dataplane returned no result"),
            }),
        }
    }
}

/// Sysctls the agent asserts in the host namespace: `(key under /proc/sys, value, required)`.
/// IPv6 ones are optional (a host may have IPv6 disabled).
pub const SYSCTLS: [(&str, &str, bool); 2] = [
    ("net/ipv4/ip_forward", "1", true),
    ("net/ipv6/conf/all/forwarding", "1", false),
];

/// What the agent needs from the kernel.
#[async_trait]
pub trait NodeDataplane: Send + fmt::Debug {
    /// Every route in the main table tagged [`ROUTE_PROTOCOL`] that is a blackhole or a
    /// gateway route (the only shapes the agent creates). Other shapes are never returned,
    /// so never touched.
    async fn list_owned(&mut self) -> Result<Vec<KernelRoute>, DataplaneError>;

    /// Executes one change. Deleting a route that is already gone succeeds.
    async fn execute(&mut self, op: &RouteOp) -> Result<(), DataplaneError>;

    /// Executes `ops` in order, as [`NodeDataplane::execute`] would one by one: every op is
    /// attempted whatever happens to the others; one result per op, in op order.
    async fn execute_all(&mut self, ops: &[RouteOp]) -> Vec<Result<(), DataplaneError>> {
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(self.execute(op).await);
        }
        results
    }

    /// Sets [`SYSCTLS`].
    async fn assert_sysctls(&mut self) -> Result<(), DataplaneError>;
}

/// The kernel, through rtnetlink, in one network namespace.
#[derive(Debug)]
pub struct NetlinkDataplane {
    ns: NetNs,
    handle: Handle,
    /// For [`NodeDataplane::execute_all`]; out on a blocking thread during a batch, and
    /// opened again if that thread died with it.
    batch: Option<RouteSocket>,
}

impl NetlinkDataplane {
    /// Connects to the namespace at `path`, or the agent's own when `None`. Must be called
    /// inside a tokio runtime.
    pub fn open(path: Option<&std::path::Path>) -> Result<Self, DataplaneError> {
        let ns = match path {
            Some(p) => NetNs::open(p),
            None => NetNs::current(),
        }
        .map_err(|e| DataplaneError::Open {
            source: Box::new(e),
        })?;
        let open_err = |e| DataplaneError::Open {
            source: Box::new(e),
        };
        let handle = tortie_netlink::netlink_handle_in(&ns).map_err(open_err)?;
        let batch = RouteSocket::open(&ns).map_err(open_err)?;
        Ok(Self {
            ns,
            handle,
            batch: Some(batch),
        })
    }
}

/// The netlink request for `op`.
fn request(op: &RouteOp) -> RouteRequest {
    match *op {
        RouteOp::Add { dst, target } => RouteRequest::Add(to_route(dst, target)),
        RouteOp::Replace { dst, to, .. } => RouteRequest::Replace(to_route(dst, to)),
        RouteOp::Delete(k) => RouteRequest::Delete(to_route(k.dst, k.target).with_metric(k.metric)),
    }
}

/// The netlink route for a desired `dst → target`.
fn to_route(dst: IpNet, target: RouteTarget) -> Route {
    let r = match target {
        RouteTarget::Blackhole => Route::blackhole(dst),
        RouteTarget::Via(gw) => Route::via(dst, gw),
    };
    let r = r.with_protocol(ROUTE_PROTOCOL);
    match dst {
        IpNet::V4(_) => r,
        IpNet::V6(_) => r.with_metric(default_metric(&dst)),
    }
}

/// The agent's view of a kernel route, if it has a shape the agent creates.
fn from_route(r: &Route) -> Option<KernelRoute> {
    let target = match (r.kind, r.gateway) {
        (RouteKind::Blackhole, None) => RouteTarget::Blackhole,
        (RouteKind::Unicast, Some(gw)) => RouteTarget::Via(gw),
        _ => return None,
    };
    Some(KernelRoute {
        dst: r.dst,
        target,
        metric: r.metric.unwrap_or(0),
    })
}

#[async_trait]
impl NodeDataplane for NetlinkDataplane {
    async fn list_owned(&mut self) -> Result<Vec<KernelRoute>, DataplaneError> {
        let routes = nl::list_routes(&self.handle, &RouteFilter::protocol(ROUTE_PROTOCOL))
            .await
            .map_err(|e| DataplaneError::List {
                source: Box::new(e),
            })?;
        Ok(routes.iter().filter_map(from_route).collect())
    }

    async fn execute(&mut self, op: &RouteOp) -> Result<(), DataplaneError> {
        let result = match request(op) {
            RouteRequest::Add(r) => nl::add_route(&self.handle, &r).await,
            RouteRequest::Replace(r) => nl::replace_route(&self.handle, &r).await,
            RouteRequest::Delete(r) => nl::delete_route(&self.handle, &r).await.map(|_| ()),
        };
        result.map_err(|e| DataplaneError::Op {
            op: *op,
            source: Box::new(e),
        })
    }

    async fn execute_all(&mut self, ops: &[RouteOp]) -> Vec<Result<(), DataplaneError>> {
        if ops.is_empty() {
            return Vec::new();
        }
        let mut socket = match self.batch.take() {
            Some(s) => s,
            None => match RouteSocket::open(&self.ns) {
                Ok(s) => s,
                Err(e) => {
                    let chain = error_chain(&e);
                    return ops
                        .iter()
                        .map(|op| {
                            Err(DataplaneError::Op {
                                op: *op,
                                source: Box::new(tortie_netlink::Error::Unanswered {
                                    what: op.to_string(),
                                    source: std::io::Error::other(chain.clone()),
                                }),
                            })
                        })
                        .collect();
                }
            },
        };
        let requests: Vec<RouteRequest> = ops.iter().map(request).collect();
        // The kernel does the work inside `sendmsg`: off the runtime's worker threads.
        let joined = tokio::task::spawn_blocking(move || {
            let results = socket.execute(&requests);
            (socket, results)
        })
        .await;
        match joined {
            Ok((socket, results)) => {
                self.batch = Some(socket);
                ops.iter()
                    .zip(results)
                    .map(|(op, r)| {
                        r.map_err(|e| DataplaneError::Op {
                            op: *op,
                            source: Box::new(e),
                        })
                    })
                    .collect()
            }
            Err(_) => ops
                .iter()
                .map(|op| Err(DataplaneError::missing_result(*op)))
                .collect(),
        }
    }

    async fn assert_sysctls(&mut self) -> Result<(), DataplaneError> {
        let ns = self.ns.clone();
        let results = tokio::task::spawn_blocking(move || {
            SYSCTLS.map(|(key, value, required)| {
                let r = tortie_netlink::sysctl::write_sysctls(
                    &ns,
                    &[(key.to_string(), value.to_string())],
                );
                (key, required, r)
            })
        })
        .await
        .map_err(|e| DataplaneError::Fake {
            what: "sysctl task".into(),
            reason: e.to_string(),
        })?;
        for (key, required, r) in results {
            match r {
                Ok(()) => {}
                Err(e) if !required && e.is_not_found() => {
                    tracing::debug!(key, "optional sysctl absent");
                }
                Err(e) => {
                    return Err(DataplaneError::Sysctl {
                        key: key.to_string(),
                        source: Box::new(e),
                    });
                }
            }
        }
        Ok(())
    }
}

/// State of a [`FakeDataplane`].
#[derive(Debug, Default)]
pub struct FakeState {
    /// Tagged routes.
    pub owned: BTreeSet<KernelRoute>,
    /// Routes of others: (dst, metric).
    pub foreign: BTreeSet<(IpNet, u32)>,
    /// Every op executed successfully, in order.
    pub ops: Vec<RouteOp>,
    /// Ops to these destinations fail.
    pub fail_dsts: BTreeSet<IpNet>,
    /// Calls of `list_owned`.
    pub lists: usize,
    /// Calls of `assert_sysctls`.
    pub sysctl_calls: usize,
}

/// A recording in-memory kernel. Clones share state, so a test keeps one to inspect.
#[derive(Debug, Clone, Default)]
pub struct FakeDataplane {
    state: Arc<Mutex<FakeState>>,
}

impl FakeDataplane {
    /// An empty kernel.
    pub fn new() -> Self {
        Self::default()
    }

    /// Locks the state for inspection or setup.
    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The tagged routes as `dst → target` lines, sorted.
    pub fn owned_lines(&self) -> Vec<String> {
        self.state().owned.iter().map(ToString::to_string).collect()
    }
}

fn fake_err(what: impl fmt::Display, reason: &str) -> DataplaneError {
    DataplaneError::Fake {
        what: what.to_string(),
        reason: reason.to_string(),
    }
}

#[async_trait]
impl NodeDataplane for FakeDataplane {
    async fn list_owned(&mut self) -> Result<Vec<KernelRoute>, DataplaneError> {
        let mut s = self.state();
        s.lists += 1;
        Ok(s.owned.iter().copied().collect())
    }

    async fn execute(&mut self, op: &RouteOp) -> Result<(), DataplaneError> {
        let mut s = self.state();
        let dst = match op {
            RouteOp::Add { dst, .. } | RouteOp::Replace { dst, .. } => *dst,
            RouteOp::Delete(k) => k.dst,
        };
        if s.fail_dsts.contains(&dst) {
            return Err(fake_err(op, "injected failure"));
        }
        let metric = default_metric(&dst);
        match *op {
            RouteOp::Add { dst, target } => {
                let taken = s.foreign.contains(&(dst, metric))
                    || s.owned.iter().any(|r| r.dst == dst && r.metric == metric);
                if taken {
                    return Err(fake_err(op, "File exists (os error 17)"));
                }
                s.owned.insert(KernelRoute {
                    dst,
                    target,
                    metric,
                });
            }
            RouteOp::Replace { dst, to, .. } => {
                s.owned.retain(|r| !(r.dst == dst && r.metric == metric));
                s.owned.insert(KernelRoute {
                    dst,
                    target: to,
                    metric,
                });
            }
            RouteOp::Delete(k) => {
                s.owned.remove(&k);
            }
        }
        s.ops.push(*op);
        Ok(())
    }

    async fn assert_sysctls(&mut self) -> Result<(), DataplaneError> {
        self.state().sysctl_calls += 1;
        Ok(())
    }
}
