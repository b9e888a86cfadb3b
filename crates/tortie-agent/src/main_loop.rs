//! The agent's one long-lived task: it owns the model, the routes manager, the readiness
//! state and the label-sync bookkeeping, and drives them from the syncer, timers and the
//! label writer's results.
//!
//! Order of work: register the Node (retrying), start the syncer, then loop. Updates are
//! absorbed in batches (no I/O), routes recomputed, and one apply is scheduled shortly after
//! (coalescing bursts); a batch of BGP-learned changes updates the desired routes at its
//! prefixes only. Nothing touches the kernel before the first `InSync`. A failed apply is
//! retried with backoff; every `resync_interval` the kernel is re-read (a full
//! mark-and-sweep; applies in between plan only what changed) and sysctls re-asserted.
//! Shutdown leaves every route in place.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use tokio::time::{MissedTickBehavior, sleep_until};
use tortie_store::{Revision, Store, SyncStatus, SyncUpdate, Syncer};

use crate::bgp::{Bgp, BgpEvent, BgpPeerRow, BgpView};
use crate::bgp_plan;
use crate::calc;
use crate::config::Routing;
use crate::dataplane::{NodeDataplane, error_chain};
use crate::label_writer::{self, WriteOutcome, WriteResult};
use crate::labels::{LabelWrite, label_writes};
use crate::metrics::{FamilyLabel, Metrics, OpLabel, ResultLabel};
use crate::model::{Model, PodId};
use crate::node::{NodeRegistration, register};
use crate::policy_dataplane::PolicyDataplane;
use crate::readiness::{Readiness, ReadinessEvent};
use crate::route::{RouteSet, RouteTarget};
use crate::route_manager::{ApplyOutcome, RouteManager};

/// The syncer's prefix: resources and IPAM.
pub const SYNC_PREFIX: &str = "/calico/";
/// Delay between the first update of a burst and the apply it triggers.
pub const APPLY_COALESCE: Duration = Duration::from_millis(10);
/// Most syncer updates absorbed before recomputing.
pub const MAX_BATCH: usize = 1024;
/// Period of the liveness heartbeat.
pub const HEARTBEAT_PERIOD: Duration = Duration::from_secs(5);
/// Retry backoff bounds (registration, failed applies, failed label writes).
pub const MIN_BACKOFF: Duration = Duration::from_millis(500);
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long a registration attempt may take.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// With BGP routing, how long the first route programming after a start waits for every peer
/// to send its whole table (End-of-RIB), so a restart never withdraws routes that are about
/// to be learned again.
pub const BGP_INITIAL_WAIT: Duration = Duration::from_secs(30);
/// How soon a plan whose speaker could not start is applied again.
pub const BGP_START_RETRY: Duration = Duration::from_secs(1);

/// Inputs and outputs the loop is wired to.
#[derive(Debug)]
pub struct Wiring {
    pub store: Arc<dyn Store>,
    pub dataplane: Box<dyn NodeDataplane>,
    /// Where policy goes (nftables in the real agent).
    pub policy: Box<dyn PolicyDataplane>,
    /// The `/status` snapshot.
    pub status_tx: watch::Sender<AgentStatus>,
    pub registration: NodeRegistration,
    pub resync_interval: Duration,
    pub metrics: Arc<Metrics>,
    pub readiness_tx: watch::Sender<Result<(), String>>,
    pub heartbeat_tx: watch::Sender<Instant>,
    pub shutdown: watch::Receiver<bool>,
    pub routing: Routing,
    /// The host network namespace (for the BGP speaker's sockets).
    pub host_netns: Option<std::path::PathBuf>,
    /// The BGP peers and plan problems for `/bgp` and `node status`.
    pub bgp_tx: watch::Sender<BgpView>,
    /// The namespace whose Secrets hold BGP passwords.
    pub secrets_namespace: String,
    /// The host namespace's interfaces and addresses (for host endpoints by `expectedIPs`),
    /// from [`crate::host_interfaces::watch`]: `None` until its first reading; the sender is
    /// gone when the agent runs no watch.
    pub host_interfaces: watch::Receiver<Option<crate::policy_model::Interfaces>>,
}

/// What `/status` reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentStatus {
    pub in_sync: bool,
    /// The newest datastore revision the agent has absorbed.
    pub revision: Revision,
    /// The policy dataplane reflects the datastore as of this revision.
    pub policy_revision: Revision,
}

/// Exponential backoff.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self { next: MIN_BACKOFF }
    }
    fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        d
    }
    fn reset(&mut self) {
        self.next = MIN_BACKOFF;
    }
}

/// Aborts its task when dropped, so no task outlives the loop that spawned it.
struct TaskGuard(tokio::task::JoinHandle<()>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The loop's state.
struct MainLoop {
    w: Wiring,
    model: Model,
    routes: RouteManager,
    readiness: Readiness,
    in_sync: bool,
    apply_at: Option<tokio::time::Instant>,
    apply_backoff: Backoff,
    sysctls_due: bool,
    /// WEP key → revision a label write is (or was) in flight for.
    in_flight: BTreeMap<String, Revision>,
    label_tx: mpsc::Sender<LabelWrite>,
    label_retry: BTreeSet<PodId>,
    label_retry_at: Option<tokio::time::Instant>,
    unresolved: usize,
    /// With BGP: the routes from the datastore that stay under the learned ones (the node's
    /// own blackholes), kept so a batch of learned changes updates only its prefixes.
    bgp_base: RouteSet,
    /// A re-registration in progress (the own Node record vanished).
    reregister: Option<TaskGuard>,
    /// The policy dataplane; `None` while an apply runs on a blocking thread.
    policy: Option<Box<dyn PolicyDataplane>>,
    policy_at: Option<tokio::time::Instant>,
    policy_dirty: bool,
    policy_backoff: Backoff,
    status: AgentStatus,
    /// The BGP speaker, with `--routing bgp`.
    bgp: Option<Bgp>,
    bgp_at: Option<tokio::time::Instant>,
    /// With BGP: route programming is held until peers have sent their tables, or this time.
    bgp_hold_until: Option<tokio::time::Instant>,
    /// When the loop started (the first policy apply waits a while for host interfaces).
    started: Instant,
    /// Policy went ahead before the host interfaces were read (warned once).
    host_interfaces_late: bool,
}

/// Runs the loop until shutdown.
pub async fn run(mut w: Wiring) -> anyhow::Result<()> {
    let (label_tx, label_rx, label_task) = label_writer::spawn(w.store.clone());
    let _label_task = TaskGuard(label_task);
    let node = w.registration.name.clone();
    let policy = std::mem::replace(&mut w.policy, Box::new(crate::policy_dataplane::NoPolicy));
    let bgp = (w.routing == Routing::Bgp).then(|| Bgp::new(w.host_netns.clone()));
    let model = Model::new(node).with_secrets_namespace(&w.secrets_namespace);
    let mut lp = MainLoop {
        w,
        model,
        routes: RouteManager::new(),
        readiness: Readiness::new(),
        in_sync: false,
        apply_at: None,
        apply_backoff: Backoff::new(),
        sysctls_due: true,
        in_flight: BTreeMap::new(),
        label_tx,
        label_retry: BTreeSet::new(),
        label_retry_at: None,
        unresolved: 0,
        bgp_base: RouteSet::new(),
        reregister: None,
        policy: Some(policy),
        policy_at: None,
        policy_dirty: true,
        policy_backoff: Backoff::new(),
        status: AgentStatus::default(),
        bgp,
        bgp_at: None,
        bgp_hold_until: None,
        started: Instant::now(),
        host_interfaces_late: false,
    };
    lp.publish();
    lp.run(label_rx).await
}

impl MainLoop {
    async fn run(&mut self, mut label_rx: mpsc::Receiver<WriteResult>) -> anyhow::Result<()> {
        if !self.register_until_done().await {
            return Ok(());
        }
        let (_syncer, mut sync_rx) = Syncer::new(self.w.store.clone(), SYNC_PREFIX).start();
        let period = self.w.resync_interval;
        let mut resync = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        resync.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut heartbeat = tokio::time::interval(HEARTBEAT_PERIOD);
        let mut shutdown = self.w.shutdown.clone();
        let mut host_interfaces = self.w.host_interfaces.clone();
        loop {
            let apply_at = self.apply_at;
            let label_at = self.label_retry_at;
            let policy_at = self.policy_at;
            let bgp_at = self.bgp_at;
            tokio::select! {
                // Timers before the update stream, so a flood of updates cannot starve them.
                biased;
                _ = shutdown.changed() => break,
                _ = heartbeat.tick() => {
                    self.w.heartbeat_tx.send_replace(Instant::now());
                }
                () = sleep_until_opt(apply_at) => self.apply().await,
                () = sleep_until_opt(policy_at) => self.apply_policy().await,
                _ = resync.tick() => {
                    self.on_resync();
                    self.check_policy_drift().await;
                }
                () = sleep_until_opt(label_at) => self.retry_labels(),
                () = sleep_until_opt(bgp_at) => self.apply_bgp().await,
                ev = next_bgp_event(&mut self.bgp) => match ev {
                    BgpEvent::Routes(changes) => self.on_bgp_routes(changes),
                    BgpEvent::Status => self.on_bgp_status(),
                },
                Some(result) = label_rx.recv() => self.on_label_result(result),
                Ok(()) = host_interfaces.changed() => {
                    let now = host_interfaces.borrow_and_update().clone();
                    if let Some(now) = now {
                        self.on_host_interfaces(&now);
                    }
                }
                update = sync_rx.recv() => match update {
                    Some(u) => self.on_sync_batch(u, &mut sync_rx),
                    None => anyhow::bail!("the datastore syncer stopped"),
                },
            }
        }
        tracing::info!("agent stopping; routes and policy rules stay in place");
        if let Some(bgp) = &mut self.bgp {
            // Without a NOTIFICATION: peers with graceful restart keep our routes meanwhile.
            bgp.shutdown().await;
        }
        Ok(())
    }

    /// Registers the Node, retrying with backoff. `false` if shut down first.
    async fn register_until_done(&mut self) -> bool {
        let mut backoff = Backoff::new();
        let mut shutdown = self.w.shutdown.clone();
        loop {
            let attempt = register(self.w.store.as_ref(), &self.w.registration);
            let outcome = match tokio::time::timeout(REGISTER_TIMEOUT, attempt).await {
                Ok(Ok(wrote)) => {
                    tracing::info!(node = %self.w.registration.name, wrote, "node registered");
                    self.event(ReadinessEvent::Registered);
                    return true;
                }
                Ok(Err(e)) => error_chain(&e),
                Err(_) => format!("no answer within {}s", REGISTER_TIMEOUT.as_secs()),
            };
            tracing::warn!(error = %outcome, "registering node failed; retrying");
            self.event(ReadinessEvent::RegistrationFailed(outcome));
            self.w.heartbeat_tx.send_replace(Instant::now());
            tokio::select! {
                _ = shutdown.changed() => return false,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    fn event(&mut self, e: ReadinessEvent) {
        self.readiness.on_event(e);
        self.publish();
    }

    fn publish(&self) {
        let status = self.readiness.status();
        self.w.metrics.ready.set(i64::from(status.is_ok()));
        self.w.readiness_tx.send_if_modified(|cur| {
            let changed = *cur != status;
            if changed {
                *cur = status.clone();
            }
            changed
        });
    }

    /// Absorbs `first` and whatever else is already queued, then recomputes once.
    fn on_sync_batch(&mut self, first: SyncUpdate, rx: &mut mpsc::Receiver<SyncUpdate>) {
        let mut routes_changed = false;
        let mut bgp_changed = false;
        let mut pods = BTreeSet::new();
        let mut reached_sync = false;
        let mut next = Some(first);
        let mut n = 0;
        while let Some(u) = next {
            n += 1;
            match &u {
                SyncUpdate::InSync => reached_sync = true,
                SyncUpdate::Status(SyncStatus::Unreachable { reason }) => {
                    self.event(ReadinessEvent::DatastoreUnreachable(reason.clone()));
                }
                SyncUpdate::Status(SyncStatus::Reachable) => {
                    self.event(ReadinessEvent::DatastoreReachable);
                }
                SyncUpdate::Set(_) | SyncUpdate::Deleted { .. } => {
                    self.w.metrics.datastore_updates.inc();
                    let rev = match &u {
                        SyncUpdate::Set(kv) => kv.mod_revision,
                        SyncUpdate::Deleted { revision, .. } => *revision,
                        _ => 0,
                    };
                    self.status.revision = self.status.revision.max(rev);
                    let changed = self.model.apply(&u);
                    routes_changed |= changed.routes;
                    bgp_changed |= changed.bgp || changed.routes || changed.policy;
                    self.policy_dirty |= changed.policy;
                    pods.extend(changed.pod);
                    if changed.own_node && !self.model.own_node_present() && self.in_sync {
                        tracing::warn!("own Node record was deleted; registering again");
                        self.sysctls_due = true;
                        self.in_sync_reregister();
                    }
                }
            }
            next = if n < MAX_BATCH {
                rx.try_recv().ok()
            } else {
                None
            };
        }
        if routes_changed || reached_sync {
            self.recalc_routes();
        }
        if reached_sync {
            self.on_in_sync();
        } else if self.in_sync {
            for pod in pods {
                self.sync_labels(&pod);
            }
            if self.policy_dirty {
                self.schedule_policy(APPLY_COALESCE);
            }
            if bgp_changed {
                self.schedule_bgp(APPLY_COALESCE);
            }
        }
        self.publish_status();
    }

    /// Publishes `/status`. With nothing pending, the policy dataplane is current.
    fn publish_status(&mut self) {
        if self.in_sync && !self.policy_dirty && self.policy.is_some() {
            self.status.policy_revision = self.status.revision;
        }
        self.status.in_sync = self.in_sync;
        let s = self.status;
        self.w.status_tx.send_if_modified(|cur| {
            let changed = *cur != s;
            *cur = s;
            changed
        });
    }

    fn schedule_policy(&mut self, delay: Duration) {
        let at = tokio::time::Instant::now() + delay;
        self.policy_at = Some(self.policy_at.map_or(at, |cur| cur.min(at)));
    }

    /// Computes the node's policy dataplane and applies it on a blocking thread.
    async fn apply_policy(&mut self) {
        self.policy_at = None;
        if !self.in_sync {
            return;
        }
        if !self.host_interfaces_ready() {
            self.schedule_policy(Duration::from_millis(50));
            return;
        }
        let Some(mut dp) = self.policy.take() else {
            return;
        };
        let start = Instant::now();
        let rev = self.status.revision;
        let model = self.model.policy().dataplane(self.model.node_name());
        self.policy_dirty = false;
        let endpoints = model.workloads.len();
        let joined = tokio::task::spawn_blocking(move || {
            let r = dp.apply(&model);
            (dp, r)
        })
        .await;
        let elapsed = start.elapsed();
        self.w
            .metrics
            .policy_apply_duration
            .observe(elapsed.as_secs_f64());
        match joined {
            Ok((dp, Ok(report))) => {
                self.policy = Some(dp);
                self.w.metrics.policy_applies.inc();
                self.w
                    .metrics
                    .policy_endpoints
                    .set(i64::try_from(endpoints).unwrap_or(i64::MAX));
                tracing::debug!(
                    ?elapsed,
                    full = report.full,
                    bytes = report.script_bytes,
                    "policy applied"
                );
                self.policy_backoff.reset();
                self.event(ReadinessEvent::Policy(None));
                if !self.policy_dirty {
                    self.status.policy_revision = rev;
                }
            }
            Ok((dp, Err(e))) => {
                self.policy = Some(dp);
                self.policy_dirty = true;
                self.w.metrics.policy_apply_errors.inc();
                let delay = self.policy_backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "policy programming failed");
                self.event(ReadinessEvent::Policy(Some(e)));
                self.schedule_policy(delay);
            }
            Err(e) => {
                // The blocking task panicked: the dataplane object is gone. Fail loudly.
                tracing::error!(error = %e, "policy dataplane panicked");
                self.w.metrics.policy_apply_errors.inc();
                self.event(ReadinessEvent::Policy(Some(format!(
                    "the policy dataplane panicked ({e}); restart the agent"
                ))));
            }
        }
        self.publish_status();
    }

    /// Whether policy may be applied as far as host interfaces go: they were read once, the
    /// agent runs no watch, or [`crate::host_interfaces::FIRST_READ_WAIT`] has passed (then
    /// policy goes ahead without them, and follows when they arrive).
    fn host_interfaces_ready(&mut self) -> bool {
        // Take the latest reading into the model here: the loop may not have handled its
        // notification yet (the policy timer is polled first).
        let latest = self.w.host_interfaces.borrow().clone();
        if let Some(now) = latest {
            self.model.policy_mut().set_host_interfaces(&now);
            return true;
        }
        if self.w.host_interfaces.has_changed().is_err() {
            return true;
        }
        if self.started.elapsed() < crate::host_interfaces::FIRST_READ_WAIT {
            return false;
        }
        if !self.host_interfaces_late {
            self.host_interfaces_late = true;
            tracing::warn!(
                "host interfaces not read yet; applying policy without host endpoints given by expectedIPs"
            );
        }
        true
    }

    /// The host's interfaces or addresses changed: host endpoints matched by address may
    /// now govern other interfaces.
    fn on_host_interfaces(&mut self, now: &crate::policy_model::Interfaces) {
        if self.model.policy_mut().set_host_interfaces(now) {
            self.policy_dirty = true;
            if self.in_sync {
                self.schedule_policy(APPLY_COALESCE);
            }
        }
    }

    /// Periodic check that nobody flushed or edited the policy table.
    async fn check_policy_drift(&mut self) {
        if !self.in_sync || self.policy_at.is_some() {
            return;
        }
        let Some(mut dp) = self.policy.take() else {
            return;
        };
        match tokio::task::spawn_blocking(move || {
            let r = dp.check_drift();
            (dp, r)
        })
        .await
        {
            Ok((dp, r)) => {
                self.policy = Some(dp);
                match r {
                    Ok(true) => {
                        self.w.metrics.policy_drift_repairs.inc();
                        tracing::warn!("policy rules were changed outside tortie; restored");
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "checking policy rules failed");
                        self.policy_dirty = true;
                        let delay = self.policy_backoff.next_delay();
                        self.schedule_policy(delay);
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "policy dataplane panicked");
                self.event(ReadinessEvent::Policy(Some(format!(
                    "the policy dataplane panicked ({e}); restart the agent"
                ))));
            }
        }
    }

    /// Re-registration after the record vanished: retried on the next resync if it fails.
    fn in_sync_reregister(&mut self) {
        if self.reregister.as_ref().is_some_and(|t| !t.0.is_finished()) {
            return;
        }
        let store = self.w.store.clone();
        let reg = self.w.registration.clone();
        let task = tokio::spawn(async move {
            let attempt = register(store.as_ref(), &reg);
            match tokio::time::timeout(REGISTER_TIMEOUT, attempt).await {
                Ok(Ok(_)) => tracing::info!(node = %reg.name, "node registered again"),
                Ok(Err(e)) => tracing::warn!(error = %error_chain(&e), "re-registering failed"),
                Err(_) => tracing::warn!("re-registering timed out"),
            }
        });
        self.reregister = Some(TaskGuard(task));
    }

    fn on_in_sync(&mut self) {
        tracing::info!("datastore in sync; programming routes");
        self.in_sync = true;
        self.w.metrics.in_sync.set(1);
        self.routes.on_in_sync();
        self.event(ReadinessEvent::InSync);
        self.schedule_apply(Duration::ZERO);
        self.policy_dirty = true;
        self.schedule_policy(Duration::ZERO);
        if self.bgp.is_some() {
            self.bgp_hold_until = Some(tokio::time::Instant::now() + BGP_INITIAL_WAIT);
            self.schedule_bgp(Duration::ZERO);
            self.on_bgp_status();
        }
        let pods: Vec<PodId> = self.model.pods().cloned().collect();
        for pod in pods {
            self.sync_labels(&pod);
        }
    }

    fn recalc_routes(&mut self) {
        let mut out = calc::desired_routes(self.model.routing(), self.model.node_name());
        if let Some(bgp) = &self.bgp {
            // With BGP, other nodes' pods are reached by what the peers advertise; IPAM only
            // gives this node's own blackholes.
            out.routes
                .retain(|_, t| matches!(t, RouteTarget::Blackhole));
            out.unresolved.clear();
            self.bgp_base = std::mem::take(&mut out.routes);
            out.routes = bgp.desired_routes(&self.bgp_base);
        }
        if out.unresolved.len() != self.unresolved {
            for u in &out.unresolved {
                tracing::debug!(dst = %u.dst, node = %u.node, "no next hop for route");
            }
            self.unresolved = out.unresolved.len();
            self.w
                .metrics
                .routes_unresolved
                .set(i64::try_from(self.unresolved).unwrap_or(i64::MAX));
        }
        self.routes.on_update(out.routes);
        if self.routes.needs_apply() {
            self.schedule_apply(APPLY_COALESCE);
        }
    }

    fn schedule_apply(&mut self, delay: Duration) {
        let at = tokio::time::Instant::now() + delay;
        self.apply_at = Some(self.apply_at.map_or(at, |cur| cur.min(at)));
    }

    fn on_resync(&mut self) {
        if !self.in_sync {
            return;
        }
        self.routes.request_resync();
        self.sysctls_due = true;
        self.schedule_apply(Duration::ZERO);
        if !self.model.own_node_present() {
            self.in_sync_reregister();
        }
        let model = &self.model;
        self.in_flight
            .retain(|key, rev| model.wep_revision(key) == Some(*rev));
        let pods: Vec<PodId> = self.model.pods().cloned().collect();
        for pod in pods {
            self.sync_labels(&pod);
        }
    }

    async fn apply(&mut self) {
        self.apply_at = None;
        if !self.in_sync {
            return;
        }
        if self.sysctls_due {
            if let Err(e) = self.w.dataplane.assert_sysctls().await {
                self.apply_failed(e.chain());
                return;
            }
            self.sysctls_due = false;
        }
        if !self.routes.needs_apply() {
            return;
        }
        if let Some(until) = self.bgp_hold_until {
            if tokio::time::Instant::now() < until {
                // Re-checked when the peers' status changes, and at the deadline.
                self.schedule_apply(until - tokio::time::Instant::now());
                return;
            }
            self.bgp_hold_until = None;
        }
        let start = Instant::now();
        let result = self.routes.apply(self.w.dataplane.as_mut()).await;
        let elapsed = start.elapsed();
        match result {
            Ok(ApplyOutcome::NotInSync) => {}
            Ok(ApplyOutcome::Applied(report)) => {
                self.w.metrics.apply_duration.observe(elapsed.as_secs_f64());
                self.count_ops(&report.done);
                let v6 = i64::try_from(report.programmed_v6).unwrap_or(i64::MAX);
                let all = i64::try_from(report.programmed).unwrap_or(i64::MAX);
                let m = &self.w.metrics.routes_programmed;
                m.get_or_create(&FamilyLabel { family: "ipv4" })
                    .set(all - v6);
                m.get_or_create(&FamilyLabel { family: "ipv6" }).set(v6);
                if !report.done.is_empty() {
                    tracing::info!(
                        changes = report.done.len(),
                        full = report.full,
                        ?elapsed,
                        "routes reconciled"
                    );
                }
                self.apply_backoff.reset();
                self.event(ReadinessEvent::ApplySucceeded);
            }
            Err(e) => {
                self.w.metrics.apply_duration.observe(elapsed.as_secs_f64());
                self.count_ops(&e.report.done);
                for f in &e.failures {
                    tracing::warn!(error = %f.chain(), "route change failed");
                }
                self.apply_failed(e.to_string());
            }
        }
    }

    fn count_ops(&self, ops: &[crate::route::RouteOp]) {
        let mut by_kind: BTreeMap<&'static str, u64> = BTreeMap::new();
        for op in ops {
            tracing::debug!(%op, "route change");
            *by_kind.entry(op.kind()).or_default() += 1;
        }
        for (op, n) in by_kind {
            self.w
                .metrics
                .route_changes
                .get_or_create(&OpLabel { op })
                .inc_by(n);
        }
    }

    fn apply_failed(&mut self, reason: String) {
        self.w.metrics.apply_errors.inc();
        let delay = self.apply_backoff.next_delay();
        tracing::warn!(%reason, retry_in = ?delay, "route programming failed");
        self.event(ReadinessEvent::ApplyFailed(reason));
        self.schedule_apply(delay);
    }

    fn schedule_bgp(&mut self, delay: Duration) {
        let at = tokio::time::Instant::now() + delay;
        self.bgp_at = Some(self.bgp_at.map_or(at, |cur| cur.min(at)));
    }

    /// Makes the speaker match the datastore.
    async fn apply_bgp(&mut self) {
        self.bgp_at = None;
        if !self.in_sync {
            return;
        }
        let plan = bgp_plan::plan(
            self.model.bgp(),
            self.model.routing(),
            &self.model.policy().pool_cidrs(),
            self.model.node_name(),
        );
        if let Some(bgp) = &mut self.bgp {
            bgp.apply(plan).await;
            if bgp.start_failed() {
                // Typically the previous speaker's listener is still closing after a
                // restart (new router id, AS or cluster id): try again shortly rather
                // than wait for the next datastore change.
                self.schedule_bgp(BGP_START_RETRY);
            }
        }
        self.on_bgp_status();
    }

    /// Absorbs learned route changes and updates the desired routes at those prefixes only.
    fn on_bgp_routes(&mut self, changes: Vec<tortie_bgp::speaker::RouteChange>) {
        let Some(bgp) = &mut self.bgp else {
            return;
        };
        let changed = bgp.absorb(changes);
        if changed.is_empty() || !self.in_sync {
            return;
        }
        let base = &self.bgp_base;
        self.routes
            .on_changes(changed.iter().map(|p| (*p, bgp.desired_at(base, p))));
        if self.routes.needs_apply() {
            self.schedule_apply(APPLY_COALESCE);
        }
    }

    fn on_bgp_status(&mut self) {
        let Some(bgp) = &self.bgp else {
            return;
        };
        let peers = bgp.peers();
        let ready = bgp.readiness();
        let rows: Vec<BgpPeerRow> = peers.iter().map(BgpPeerRow::from).collect();
        self.w.metrics.set_bgp_peers(&rows);
        self.w.bgp_tx.send_replace(BgpView {
            peers: rows,
            problems: bgp.problems().to_vec(),
        });
        if bgp.converged() && self.bgp_hold_until.take().is_some() {
            tracing::info!("every BGP peer sent its table; programming routes");
            self.schedule_apply(Duration::ZERO);
        }
        self.event(ReadinessEvent::Bgp(ready.err()));
    }

    /// Sends the label writes `pod` needs, if the writer has room; else retries soon.
    fn sync_labels(&mut self, pod: &PodId) {
        for write in label_writes(&self.model, pod, &self.in_flight) {
            let (key, rev) = (write.key.clone(), write.expected);
            match self.label_tx.try_send(write) {
                Ok(()) => {
                    self.in_flight.insert(key, rev);
                }
                Err(_) => self.retry_labels_later(pod.clone()),
            }
        }
    }

    fn retry_labels_later(&mut self, pod: PodId) {
        self.label_retry.insert(pod);
        if self.label_retry_at.is_none() {
            self.label_retry_at = Some(tokio::time::Instant::now() + MIN_BACKOFF);
        }
    }

    fn retry_labels(&mut self) {
        self.label_retry_at = None;
        for pod in std::mem::take(&mut self.label_retry) {
            self.sync_labels(&pod);
        }
    }

    fn on_label_result(&mut self, r: WriteResult) {
        self.w
            .metrics
            .label_updates
            .get_or_create(&ResultLabel {
                result: r.outcome.label(),
            })
            .inc();
        match r.outcome {
            // Keep the in-flight mark until the syncer brings the newer revision.
            WriteOutcome::Ok => tracing::debug!(key = %r.key, "endpoint labels updated"),
            WriteOutcome::Conflict => tracing::debug!(key = %r.key, "endpoint changed meanwhile"),
            WriteOutcome::Failed(e) => {
                tracing::warn!(key = %r.key, error = %e, "updating endpoint labels failed");
                if self.in_flight.get(&r.key) == Some(&r.expected) {
                    self.in_flight.remove(&r.key);
                }
                self.retry_labels_later(r.pod);
            }
        }
    }
}

/// The speaker's next report; never with no speaker.
async fn next_bgp_event(bgp: &mut Option<Bgp>) -> BgpEvent {
    match bgp {
        Some(b) => b.next_event().await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or forever when `None`.
async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}
