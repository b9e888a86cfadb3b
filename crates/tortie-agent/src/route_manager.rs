//! The routes manager: absorbs desired routes without I/O ([`RouteManager::on_update`]) and
//! reconciles the kernel on [`RouteManager::apply`].
//!
//! Invariants:
//! - before [`RouteManager::on_in_sync`], `apply` does no I/O at all (not even a listing): a
//!   partial view of the datastore must never delete a working route;
//! - every apply reads the tagged routes afresh, plans the whole change as data
//!   ([`crate::route::plan`]) and executes it, attempting every op even after a failure and
//!   returning all failures; a failed apply stays dirty so the next one retries;
//! - nothing is flushed: with the kernel already right, an apply changes nothing.

use std::time::Duration;

use crate::dataplane::{DataplaneError, NodeDataplane};
use crate::route::{KernelRoute, RouteOp, RouteSet, plan};

/// The outcome of an apply that ran.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Ops that succeeded.
    pub done: Vec<RouteOp>,
    /// Tagged routes in the kernel after the apply (assuming the ops did what they said).
    pub programmed: usize,
    /// Of which IPv6.
    pub programmed_v6: usize,
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
}

impl RouteManager {
    /// Empty, not in sync.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes a new desired set; marks dirty if it differs.
    pub fn on_update(&mut self, desired: RouteSet) {
        if desired != self.desired {
            self.desired = desired;
            self.dirty = true;
        }
    }

    /// The datastore view is complete: applies may touch the kernel from now on.
    pub fn on_in_sync(&mut self) {
        self.in_sync = true;
        self.dirty = true;
    }

    /// Asks the next apply to re-read the kernel even though nothing changed (periodic
    /// resync, repairing outside interference).
    pub fn request_resync(&mut self) {
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
        let actual: Vec<KernelRoute> = match dp.list_owned().await {
            Ok(a) => a,
            Err(e) => {
                return Err(ApplyError {
                    failures: vec![e],
                    report: ApplyReport::default(),
                });
            }
        };
        let ops = plan(&self.desired, &actual);
        let mut report = ApplyReport::default();
        let mut failures = Vec::new();
        for op in ops {
            match dp.execute(&op).await {
                Ok(()) => report.done.push(op),
                Err(e) => failures.push(e),
            }
        }
        report.programmed = self.desired.len();
        report.programmed_v6 = self.desired.keys().filter(|n| n.addr().is_ipv6()).count();
        if failures.is_empty() {
            self.dirty = false;
            Ok(ApplyOutcome::Applied(report))
        } else {
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
}
