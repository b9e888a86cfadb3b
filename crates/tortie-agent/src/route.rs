//! Routes as plain data: what we want, what the kernel has, and the operations between them.
//!
//! Ownership: tortie's routes live in the main table and carry [`ROUTE_PROTOCOL`]. Only routes
//! with that tag are ever listed as ours, replaced or deleted; every other route (the CNI's
//! per-pod dev routes, the underlay's connected routes, an operator's static routes) is
//! invisible to the reconciler.
//!
//! [`plan`] is the mark-and-sweep: desired routes missing or different in the kernel are added
//! or replaced; tagged routes nobody wants are deleted. It is pure, deterministic, and yields
//! nothing when the kernel already matches, so a restarted agent leaves working routes alone.
//!
//! [`plan_changes`] is the same plan when the kernel is known without reading it (it holds the
//! previous desired set): only the destinations that changed are looked at. [`diff`] lists
//! those changes between two desired sets.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;

/// The `proto` value the agent stamps on the routes it owns (`ip route show proto 81`).
///
/// 81 is unassigned in iproute2's `rt_protos` and Linux's `RTPROT_*` values. It differs from
/// the CNI plugin's tag for per-pod device routes (80, `tortie_netlink::WORKLOAD_ROUTE_PROTOCOL`)
/// so the agent's sweep can never remove a pod's route.
pub const ROUTE_PROTOCOL: u8 = 81;

/// The metric the kernel gives a route added without one: 0 for IPv4, 1024 for IPv6.
pub fn default_metric(dst: &IpNet) -> u32 {
    match dst {
        IpNet::V4(_) => 0,
        IpNet::V6(_) => 1024,
    }
}

/// What a route does with matching packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteTarget {
    /// Drop (`blackhole`).
    Blackhole,
    /// Forward to this next hop on the underlay.
    Via(IpAddr),
}

impl fmt::Display for RouteTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteTarget::Blackhole => f.write_str("blackhole"),
            RouteTarget::Via(gw) => write!(f, "via {gw}"),
        }
    }
}

/// Desired routes: destination → target. One route per destination.
pub type RouteSet = BTreeMap<IpNet, RouteTarget>;

/// One tortie-tagged route found in the kernel's main table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelRoute {
    pub dst: IpNet,
    pub target: RouteTarget,
    /// The route's metric (`RTA_PRIORITY`); the agent writes [`default_metric`].
    pub metric: u32,
}

impl fmt::Display for KernelRoute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.target {
            RouteTarget::Blackhole => write!(f, "blackhole {}", self.dst)?,
            RouteTarget::Via(gw) => write!(f, "{} via {gw}", self.dst)?,
        }
        if self.metric != default_metric(&self.dst) {
            write!(f, " metric {}", self.metric)?;
        }
        Ok(())
    }
}

/// One change to the kernel. Adds and replaces write [`default_metric`] and [`ROUTE_PROTOCOL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteOp {
    /// Create a route; fails if any route (ours or not) already has this destination and metric.
    Add { dst: IpNet, target: RouteTarget },
    /// Atomically change our default-metric route at `dst` (no gap in forwarding).
    Replace {
        dst: IpNet,
        from: RouteTarget,
        to: RouteTarget,
    },
    /// Remove exactly this tagged route.
    Delete(KernelRoute),
}

impl RouteOp {
    /// Short kind name, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            RouteOp::Add { .. } => "add",
            RouteOp::Replace { .. } => "replace",
            RouteOp::Delete(_) => "delete",
        }
    }
}

impl fmt::Display for RouteOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteOp::Add { dst, target } => write!(f, "add {dst} {target}"),
            RouteOp::Replace { dst, from, to } => write!(f, "replace {dst} {from} with {to}"),
            RouteOp::Delete(r) => write!(f, "delete {r}"),
        }
    }
}

/// The operations that turn `actual` (tortie-tagged kernel routes) into `desired`.
///
/// Adds and replaces come first, then deletes, each in destination order.
pub fn plan(desired: &RouteSet, actual: &[KernelRoute]) -> Vec<RouteOp> {
    let mut by_dst: BTreeMap<IpNet, Vec<KernelRoute>> = BTreeMap::new();
    for r in actual {
        by_dst.entry(r.dst).or_default().push(*r);
    }
    for routes in by_dst.values_mut() {
        routes.sort();
        routes.dedup();
    }
    let mut writes = Vec::new();
    let mut deletes = Vec::new();
    for (dst, routes) in &by_dst {
        let Some(want) = desired.get(dst) else {
            deletes.extend(routes.iter().copied().map(RouteOp::Delete));
            continue;
        };
        let metric = default_metric(dst);
        let keep = routes
            .iter()
            .position(|r| r.metric == metric && r.target == *want)
            .or_else(|| routes.iter().position(|r| r.metric == metric));
        match keep {
            Some(i) if routes[i].target != *want => writes.push(RouteOp::Replace {
                dst: *dst,
                from: routes[i].target,
                to: *want,
            }),
            Some(_) => {}
            None => writes.push(RouteOp::Add {
                dst: *dst,
                target: *want,
            }),
        }
        deletes.extend(
            routes
                .iter()
                .enumerate()
                .filter(|(j, _)| Some(*j) != keep)
                .map(|(_, r)| RouteOp::Delete(*r)),
        );
    }
    for (dst, target) in desired {
        if !by_dst.contains_key(dst) {
            writes.push(RouteOp::Add {
                dst: *dst,
                target: *target,
            });
        }
    }
    writes.sort();
    writes.extend(deletes);
    writes
}

/// Per changed destination, the target there before the change (`None`: no route).
pub type Changed = BTreeMap<IpNet, Option<RouteTarget>>;

/// The changes that turn `old` into `new`: `(dst, target in new)` for every destination whose
/// target differs (`None`: gone from `new`), in destination order.
pub fn diff(old: &RouteSet, new: &RouteSet) -> Vec<(IpNet, Option<RouteTarget>)> {
    let gone = old
        .keys()
        .filter(|dst| !new.contains_key(dst))
        .map(|dst| (*dst, None));
    let changed = new
        .iter()
        .filter(|(dst, target)| old.get(dst) != Some(target))
        .map(|(dst, target)| (*dst, Some(*target)));
    let by_dst: BTreeMap<IpNet, Option<RouteTarget>> = gone.chain(changed).collect();
    by_dst.into_iter().collect()
}

/// The operations that turn the kernel into `desired` when its tagged routes are known to be
/// exactly `desired` (one route per destination, at [`default_metric`]) except at the
/// destinations of `was`, which hold the target given there (`None`: no route).
///
/// Equal to [`plan`] over that kernel, in the same order, but in the size of `was`.
pub fn plan_changes(desired: &RouteSet, was: &Changed) -> Vec<RouteOp> {
    let want: RouteSet = was
        .keys()
        .filter_map(|dst| Some((*dst, *desired.get(dst)?)))
        .collect();
    let kernel: Vec<KernelRoute> = was
        .iter()
        .filter_map(|(dst, target)| {
            Some(KernelRoute {
                dst: *dst,
                target: (*target)?,
                metric: default_metric(dst),
            })
        })
        .collect();
    plan(&want, &kernel)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn via(s: &str) -> RouteTarget {
        RouteTarget::Via(s.parse().unwrap())
    }
    fn kr(dst: &str, target: RouteTarget, metric: u32) -> KernelRoute {
        KernelRoute {
            dst: net(dst),
            target,
            metric,
        }
    }

    #[test]
    fn matching_kernel_gives_no_ops() {
        let desired = RouteSet::from([
            (net("10.0.0.0/26"), RouteTarget::Blackhole),
            (net("10.0.0.64/26"), via("198.18.0.12")),
        ]);
        let actual = [
            kr("10.0.0.64/26", via("198.18.0.12"), 0),
            kr("10.0.0.0/26", RouteTarget::Blackhole, 0),
        ];
        assert!(plan(&desired, &actual).is_empty());
    }

    #[test]
    fn adds_replaces_and_sweeps() {
        let desired = RouteSet::from([
            (net("10.0.0.0/26"), RouteTarget::Blackhole),
            (net("10.0.0.64/26"), via("198.18.0.13")),
        ]);
        let actual = [
            kr("10.0.0.64/26", via("198.18.0.12"), 0),
            kr("10.0.0.64/26", via("198.18.0.12"), 5),
            kr("10.9.0.0/26", via("198.18.0.12"), 0),
        ];
        let ops = plan(&desired, &actual);
        let text: Vec<String> = ops.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "add 10.0.0.0/26 blackhole",
                "replace 10.0.0.64/26 via 198.18.0.12 with via 198.18.0.13",
                "delete 10.0.0.64/26 via 198.18.0.12 metric 5",
                "delete 10.9.0.0/26 via 198.18.0.12",
            ]
        );
    }

    #[test]
    fn a_route_at_another_metric_is_not_reused() {
        let desired = RouteSet::from([(net("10.0.0.0/26"), RouteTarget::Blackhole)]);
        let actual = [kr("10.0.0.0/26", RouteTarget::Blackhole, 7)];
        let ops = plan(&desired, &actual);
        assert_eq!(
            ops,
            [
                RouteOp::Add {
                    dst: net("10.0.0.0/26"),
                    target: RouteTarget::Blackhole
                },
                RouteOp::Delete(actual[0]),
            ]
        );
    }

    #[test]
    fn ipv6_routes_sit_at_metric_1024() {
        let desired = RouteSet::from([(net("fd00::/122"), RouteTarget::Blackhole)]);
        let actual = [kr("fd00::/122", RouteTarget::Blackhole, 1024)];
        assert!(plan(&desired, &actual).is_empty());
        assert_eq!(actual[0].to_string(), "blackhole fd00::/122");
    }

    #[test]
    fn empty_desired_sweeps_everything_tagged() {
        let actual = [kr("fd00::/122", via("fd00:198:18::12"), 1024)];
        assert_eq!(
            plan(&RouteSet::new(), &actual),
            [RouteOp::Delete(actual[0])]
        );
    }

    /// A small deterministic generator (no dependency for one test).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self, n: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % n
        }
        fn set(&mut self) -> RouteSet {
            let mut s = RouteSet::new();
            for _ in 0..self.next(40) {
                let i = self.next(64) as u8;
                let dst = if self.next(4) == 0 {
                    net(&format!("fd00:0:{i}::/64"))
                } else {
                    net(&format!("10.0.{i}.0/24"))
                };
                let target = match self.next(3) {
                    0 => RouteTarget::Blackhole,
                    1 => via("198.18.0.12"),
                    _ => via("198.18.0.13"),
                };
                s.insert(dst, target);
            }
            s
        }
    }

    /// The kernel holding exactly `set`, as [`plan`] sees it.
    fn kernel_of(set: &RouteSet) -> Vec<KernelRoute> {
        set.iter()
            .map(|(dst, target)| KernelRoute {
                dst: *dst,
                target: *target,
                metric: default_metric(dst),
            })
            .collect()
    }

    #[test]
    fn diff_lists_exactly_the_changes() {
        let old = RouteSet::from([
            (net("10.0.0.0/26"), RouteTarget::Blackhole),
            (net("10.0.0.64/26"), via("198.18.0.12")),
            (net("10.0.1.0/26"), via("198.18.0.12")),
        ]);
        let new = RouteSet::from([
            (net("10.0.0.0/26"), RouteTarget::Blackhole),
            (net("10.0.0.64/26"), via("198.18.0.13")),
            (net("10.0.2.0/26"), via("198.18.0.12")),
        ]);
        assert_eq!(
            diff(&old, &new),
            [
                (net("10.0.0.64/26"), Some(via("198.18.0.13"))),
                (net("10.0.1.0/26"), None),
                (net("10.0.2.0/26"), Some(via("198.18.0.12"))),
            ]
        );
        assert!(diff(&new, &new).is_empty());
    }

    #[test]
    fn incremental_plan_equals_the_full_plan_over_the_known_kernel() {
        let mut g = Lcg(7);
        for _ in 0..500 {
            let old = g.set();
            let new = g.set();
            let was: Changed = diff(&old, &new)
                .into_iter()
                .map(|(dst, _)| (dst, old.get(&dst).copied()))
                .collect();
            let ops = plan_changes(&new, &was);
            assert_eq!(ops, plan(&new, &kernel_of(&old)), "{old:?} -> {new:?}");
            // Applying `diff` to `old` gives `new`.
            let mut patched = old.clone();
            for (dst, t) in diff(&old, &new) {
                match t {
                    Some(t) => patched.insert(dst, t),
                    None => patched.remove(&dst),
                };
            }
            assert_eq!(patched, new);
        }
    }

    #[test]
    fn unchanged_destinations_in_was_give_no_ops() {
        let desired = RouteSet::from([(net("10.0.0.0/26"), RouteTarget::Blackhole)]);
        let was = Changed::from([
            (net("10.0.0.0/26"), Some(RouteTarget::Blackhole)),
            (net("10.0.9.0/26"), None),
        ]);
        assert!(plan_changes(&desired, &was).is_empty());
    }
}
