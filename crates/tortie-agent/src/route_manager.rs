//! The routes manager: absorbs desired routes without I/O ([`RouteManager::on_update`],
//! [`RouteManager::on_changes`]) and reconciles the kernel on [`RouteManager::apply`].
//!
//! Invariants:
//! - before [`RouteManager::on_in_sync`], `apply` does no I/O at all (not even a listing): a
//!   partial view of the datastore must never delete a working route;
//! - the first apply, the first after [`RouteManager::request_resync`] (the periodic resync)
//!   and the first after any failure read the tagged routes afresh and plan the whole change
//!   ([`crate::route::plan`], mark-and-sweep); an apply after a fully successful one knows the
//!   kernel holds the desired set it applied, so it plans only the destinations changed since
//!   ([`crate::route::plan_changes`]), without a listing;
//! - every op is attempted even after a failure, and all failures are returned; a failed
//!   apply stays dirty so the next one (a full one) retries;
//! - nothing is flushed: with the kernel already right, an apply changes nothing.

use std::collections::btree_map::Entry;
use std::time::Duration;

use ipnet::IpNet;

use crate::dataplane::{DataplaneError, NodeDataplane};
use crate::route::{
    Changed, KernelRoute, RouteOp, RouteSet, RouteTarget, diff, plan, plan_changes,
};

/// The outcome of an apply that ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Ops that succeeded.
    pub done: Vec<RouteOp>,
    /// Tagged routes in the kernel after the apply (assuming the ops did what they said).
    pub programmed: usize,
    /// Of which IPv6.
    pub programmed_v6: usize,
    /// Whether the kernel was listed and the whole table planned (else only the changes).
    pub full: bool,
    /// How long it took (measured by the caller's clock).
    pub elapsed: Duration,
}

/// An apply that did not fully succeed.
#[derive(Debug, thiserror::Error)]
#[error("{}", summary(.failures))]
pub struct ApplyError {
    /// Every failure, in op order.
    pub failures: Vec<DataplaneError>,
    /// What did succeed.
    pub report: ApplyReport,
}

fn summary(failures: &[DataplaneError]) -> String {
    let first = failures
        .first()
        .map(DataplaneError::chain)
        .unwrap_or_default();
    match failures.len() {
        0 | 1 => first,
        n => format!("{first} (and {} more)", n - 1),
    }
}

/// Whether an apply happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Not in sync yet: nothing was read or written.
    NotInSync,
    /// Reconciled.
    Applied(ApplyReport),
}

/// Owns the desired routes and when they must be pushed.
#[derive(Debug, Default)]
pub struct RouteManager {
    desired: RouteSet,
    in_sync: bool,
    dirty: bool,
    /// `Some` when the kernel's tagged routes are known without listing them (the last apply
    /// succeeded fully, so they are `desired` except here): every destination changed since,
    /// with the target the kernel holds there. `None`: unknown, the next apply lists them.
    was: Option<Changed>,
}

impl RouteManager {
    /// Empty, not in sync.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a new desired set; marks dirty if it differs.
    pub fn on_update(&mut self, desired: RouteSet) {
        for (dst, target) in diff(&self.desired, &desired) {
            self.set(dst, target);
        }
    }

    /// Takes changes to the desired set: `(dst, Some(target))` routes `dst` so, `(dst, None)`
    /// removes it. Marks dirty if anything differs.
    pub fn on_changes(&mut self, changes: impl IntoIterator<Item = (IpNet, Option<RouteTarget>)>) {
        for (dst, target) in changes {
            self.set(dst, target);
        }
    }

    fn set(&mut self, dst: IpNet, target: Option<RouteTarget>) {
        let before = match target {
            Some(t) => self.desired.insert(dst, t),
            None => self.desired.remove(&dst),
        };
        if before == target {
            return;
        }
        if let Some(was) = &mut self.was {
            match was.entry(dst) {
                Entry::Vacant(e) => {
                    e.insert(before);
                }
                Entry::Occupied(e) => {
                    if *e.get() == target {
                        e.remove();
                    }
                }
            }
        }
        self.dirty = true;
    }

    /// The datastore view is complete: applies may touch the kernel from now on.
    pub fn on_in_sync(&mut self) {
        self.in_sync = true;
        self.dirty = true;
    }

    /// Asks the next apply to re-read the kernel and plan everything, even though nothing
    /// changed (periodic resync, repairing outside interference).
    pub fn request_resync(&mut self) {
        self.was = None;
        self.dirty = true;
    }

    /// Whether an apply would do anything.
    pub fn needs_apply(&self) -> bool {
        self.in_sync && self.dirty
    }

    /// The desired routes.
    pub fn desired(&self) -> &RouteSet {
        &self.desired
    }

    /// Reconciles the kernel with the desired routes.
    pub async fn apply(&mut self, dp: &mut dyn NodeDataplane) -> Result<ApplyOutcome, ApplyError> {
        if !self.in_sync {
            return Ok(ApplyOutcome::NotInSync);
        }
        let full = self.was.is_none();
        let ops = if let Some(was) = &self.was {
            plan_changes(&self.desired, was)
        } else {
            let actual: Vec<KernelRoute> = match dp.list_owned().await {
                Ok(a) => a,
                Err(e) => {
                    return Err(ApplyError {
                        failures: vec![e],
                        report: ApplyReport {
                            full,
                            ..ApplyReport::default()
                        },
                    });
                }
            };
            plan(&self.desired, &actual)
        };
        let results = dp.execute_all(&ops).await;
        let mut report = ApplyReport {
            full,
            programmed: self.desired.len(),
            programmed_v6: self.desired.keys().filter(|n| n.addr().is_ipv6()).count(),
            ..ApplyReport::default()
        };
        let mut failures = Vec::new();
        let mut results = results.into_iter();
        for op in ops {
            match results.next() {
                Some(Ok(())) => report.done.push(op),
                Some(Err(e)) => failures.push(e),
                None => failures.push(DataplaneError::missing_result(op)),
            }
        }
        if failures.is_empty() {
            self.dirty = false;
            self.was = Some(Changed::new());
            Ok(ApplyOutcome::Applied(report))
        } else {
            self.was = None;
            Err(ApplyError { failures, report })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::FakeDataplane;
    use crate::route::RouteTarget;
    use ipnet::IpNet;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn desired() -> RouteSet {
        RouteSet::from([
            (net("10.0.0.0/26"), RouteTarget::Blackhole),
            (
                net("10.0.0.64/26"),
                RouteTarget::Via("198.18.0.12".parse().unwrap()),
            ),
        ])
    }

    #[tokio::test]
    async fn nothing_happens_before_in_sync() {
        let fake = FakeDataplane::new();
        let mut dp = fake.clone();
        let mut m = RouteManager::new();
        m.on_update(desired());
        assert!(!m.needs_apply());
        assert_eq!(m.apply(&mut dp).await.unwrap(), ApplyOutcome::NotInSync);
        assert_eq!(fake.state().lists, 0);
        assert!(fake.state().ops.is_empty());
    }

    #[tokio::test]
    async fn applies_then_is_idempotent() {
        let fake = FakeDataplane::new();
        let mut dp = fake.clone();
        let mut m = RouteManager::new();
        m.on_update(desired());
        m.on_in_sync();
        let ApplyOutcome::Applied(r) = m.apply(&mut dp).await.unwrap() else {
            panic!("not applied");
        };
        assert_eq!(r.done.len(), 2);
        assert_eq!(r.programmed, 2);
        assert!(!m.needs_apply());
        assert_eq!(
            fake.owned_lines(),
            ["blackhole 10.0.0.0/26", "10.0.0.64/26 via 198.18.0.12"]
        );
        // A restarted manager over the same kernel changes nothing.
        let mut again = RouteManager::new();
        again.on_update(desired());
        again.on_in_sync();
        let ApplyOutcome::Applied(r) = again.apply(&mut dp).await.unwrap() else {
            panic!("not applied");
        };
        assert!(r.done.is_empty());
        assert_eq!(fake.state().ops.len(), 2);
    }

    #[tokio::test]
    async fn failures_are_collected_and_the_rest_still_applies() {
        let fake = FakeDataplane::new();
        fake.state().fail_dsts.insert(net("10.0.0.0/26"));
        fake.state().foreign.insert((net("10.0.0.64/26"), 0));
        let mut dp = fake.clone();
        let mut m = RouteManager::new();
        let mut want = desired();
        want.insert(net("10.0.1.0/26"), RouteTarget::Blackhole);
        m.on_update(want);
        m.on_in_sync();
        let err = m.apply(&mut dp).await.unwrap_err();
        assert_eq!(err.failures.len(), 2);
        assert!(
            err.to_string().contains("add 10.0.0.0/26 blackhole"),
            "{err}"
        );
        assert!(err.to_string().contains("(and 1 more)"), "{err}");
        assert_eq!(fake.owned_lines(), ["blackhole 10.0.1.0/26"]);
        assert!(m.needs_apply(), "a failed apply stays dirty");
        // The foreign route is still there, untouched.
        assert!(fake.state().foreign.contains(&(net("10.0.0.64/26"), 0)));
    }

    #[tokio::test]
    async fn stale_tagged_routes_are_swept_after_in_sync() {
        let fake = FakeDataplane::new();
        let mut dp = fake.clone();
        dp.execute(&RouteOp::Add {
            dst: net("10.9.0.0/26"),
            target: RouteTarget::Blackhole,
        })
        .await
        .unwrap();
        let mut m = RouteManager::new();
        m.on_update(desired());
        m.on_in_sync();
        m.apply(&mut dp).await.unwrap();
        assert_eq!(
            fake.owned_lines(),
            ["blackhole 10.0.0.0/26", "10.0.0.64/26 via 198.18.0.12"]
        );
    }

    fn via(s: &str) -> RouteTarget {
        RouteTarget::Via(s.parse().unwrap())
    }

    async fn applied(m: &mut RouteManager, dp: &mut FakeDataplane) -> ApplyReport {
        match m.apply(dp).await.unwrap() {
            ApplyOutcome::Applied(r) => r,
            ApplyOutcome::NotInSync => panic!("not applied"),
        }
    }

    #[tokio::test]
    async fn applies_after_a_successful_one_plan_only_the_changes_without_listing() {
        let fake = FakeDataplane::new();
        let mut dp = fake.clone();
        let mut m = RouteManager::new();
        m.on_update(desired());
        m.on_in_sync();
        assert!(applied(&mut m, &mut dp).await.full);
        assert_eq!(fake.state().lists, 1);

        m.on_changes([
            (net("10.0.0.64/26"), Some(via("198.18.0.13"))),
            (net("10.0.0.0/26"), None),
            (net("fd00::/122"), Some(RouteTarget::Blackhole)),
            (net("10.0.5.0/26"), None), // not there: no change
        ]);
        assert!(m.needs_apply());
        let r = applied(&mut m, &mut dp).await;
        assert!(!r.full);
        assert_eq!(fake.state().lists, 1, "no listing");
        let text: Vec<String> = r.done.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "add fd00::/122 blackhole",
                "replace 10.0.0.64/26 via 198.18.0.12 with via 198.18.0.13",
                "delete blackhole 10.0.0.0/26",
            ]
        );
        assert_eq!((r.programmed, r.programmed_v6), (2, 1));
        assert_eq!(
            fake.owned_lines(),
            ["10.0.0.64/26 via 198.18.0.13", "blackhole fd00::/122"]
        );
        assert!(!m.needs_apply());
    }

    #[tokio::test]
    async fn changes_undone_before_the_apply_give_no_ops() {
        let fake = FakeDataplane::new();
        let mut dp = fake.clone();
        let mut m = RouteManager::new();
        m.on_update(desired());
        m.on_in_sync();
        applied(&mut m, &mut dp).await;
        let ops_before = fake.state().ops.len();
        m.on_changes([(net("10.0.0.64/26"), None)]);
        m.on_changes([(net("10.0.9.0/26"), Some(RouteTarget::Blackhole))]);
        m.on_update(desired());
        let r = applied(&mut m, &mut dp).await;
        assert!(r.done.is_empty());
        assert_eq!(fake.state().ops.len(), ops_before);
    }

    #[tokio::test]
    async fn a_resync_lists_again_and_repairs_drift() {
        let fake = FakeDataplane::new();
        let mut dp = fake.clone();
        let mut m = RouteManager::new();
        m.on_update(desired());
        m.on_in_sync();
        applied(&mut m, &mut dp).await;
        // Behind the manager's back: one route gone, a stray tagged one added.
        fake.state().owned.retain(|r| r.dst != net("10.0.0.0/26"));
        dp.execute(&RouteOp::Add {
            dst: net("10.9.0.0/26"),
            target: RouteTarget::Blackhole,
        })
        .await
        .unwrap();
        assert!(!m.needs_apply(), "nothing changed as far as it knows");
        m.request_resync();
        let r = applied(&mut m, &mut dp).await;
        assert!(r.full);
        assert_eq!(fake.state().lists, 2);
        assert_eq!(
            fake.owned_lines(),
            ["blackhole 10.0.0.0/26", "10.0.0.64/26 via 198.18.0.12"]
        );
    }

    #[tokio::test]
    async fn after_a_failure_the_next_apply_is_full() {
        let fake = FakeDataplane::new();
        let mut dp = fake.clone();
        let mut m = RouteManager::new();
        m.on_update(desired());
        m.on_in_sync();
        applied(&mut m, &mut dp).await;
        fake.state().fail_dsts.insert(net("10.0.1.0/26"));
        m.on_changes([
            (net("10.0.1.0/26"), Some(RouteTarget::Blackhole)),
            (net("10.0.2.0/26"), Some(RouteTarget::Blackhole)),
        ]);
        let err = m.apply(&mut dp).await.unwrap_err();
        assert_eq!(err.failures.len(), 1);
        assert!(!err.report.full);
        assert_eq!(err.report.done.len(), 1, "the other change went in");
        assert!(m.needs_apply());
        fake.state().fail_dsts.clear();
        let r = applied(&mut m, &mut dp).await;
        assert!(r.full, "a failure forgets the kernel");
        assert_eq!(fake.state().lists, 2);
        assert_eq!(r.done.len(), 1);
        assert_eq!(fake.owned_lines().len(), 4);
    }

    #[tokio::test]
    async fn a_failed_listing_is_reported_and_retried_in_full() {
        #[derive(Debug)]
        struct NoList;
        #[async_trait::async_trait]
        impl NodeDataplane for NoList {
            async fn list_owned(&mut self) -> Result<Vec<KernelRoute>, DataplaneError> {
                Err(DataplaneError::Fake {
                    what: "list".into(),
                    reason: "injected".into(),
                })
            }
            async fn execute(&mut self, _op: &RouteOp) -> Result<(), DataplaneError> {
                Ok(())
            }
            async fn assert_sysctls(&mut self) -> Result<(), DataplaneError> {
                Ok(())
            }
        }
        let mut m = RouteManager::new();
        m.on_update(desired());
        m.on_in_sync();
        let err = m.apply(&mut NoList).await.unwrap_err();
        assert!(err.report.full && err.report.done.is_empty());
        assert!(m.needs_apply());
    }
}
