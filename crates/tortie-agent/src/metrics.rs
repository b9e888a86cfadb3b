//! Prometheus metrics of the agent (text exposition at `/metrics`).
//!
//! Names (prefix `tortie_agent_`):
//! - `datastore_in_sync` gauge: 1 once the first full snapshot arrived;
//! - `datastore_updates_total` counter: syncer updates processed;
//! - `ready` gauge: 1 while `/readiness` answers 200;
//! - `routes_programmed{family}` gauge: routes the agent owns in the kernel after the last
//!   successful apply;
//! - `routes_unresolved` gauge: routes not programmed because the next-hop node has no
//!   address of that family;
//! - `route_changes_total{op}` counter: kernel route adds, replaces and deletes;
//! - `route_apply_errors_total` counter: applies that failed (any op);
//! - `route_apply_duration_seconds` histogram: time of each apply that touched the kernel;
//! - `label_updates_total{result}` counter: WorkloadEndpoint label writes (`ok`, `conflict`,
//!   `error`);
//! - `policy_log_packets_total{rule}` counter: packets of Log rules written as
//!   `tortie::policy_log` events, by rule (`gnp/audit egress[0]`; past
//!   [`crate::policy_log::MAX_RULE_SERIES`] distinct rules, `other`);
//! - `policy_log_dropped_total` counter: Log-rule packets not written because they came
//!   faster than they could be logged (the listener's queue was full, or the kernel's socket
//!   buffer was, seen as gaps in NFLOG's sequence numbers).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `family` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FamilyLabel {
    pub family: &'static str,
}

/// `op` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: &'static str,
}

/// `result` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

/// `rule` label (a policy rule's identity).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RuleLabel {
    pub rule: String,
}

/// Every metric of the agent, registered in one registry. Cheap to share (atomics inside).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub in_sync: Gauge,
    pub datastore_updates: Counter,
    pub ready: Gauge,
    pub routes_programmed: Family<FamilyLabel, Gauge>,
    pub routes_unresolved: Gauge,
    pub route_changes: Family<OpLabel, Counter>,
    pub apply_errors: Counter,
    pub apply_duration: Histogram,
    pub label_updates: Family<ResultLabel, Counter>,
    pub policy_applies: Counter,
    pub policy_apply_errors: Counter,
    pub policy_apply_duration: Histogram,
    pub policy_drift_repairs: Counter,
    pub policy_endpoints: Gauge,
    pub policy_log_packets: Family<RuleLabel, Counter>,
    pub policy_log_dropped: Counter,
    pub bgp_peer_established: Family<PeerLabel, Gauge>,
    pub bgp_peer_prefixes: Family<PeerPrefixLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A BGP peer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}

/// A BGP peer and a prefix count's direction.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerPrefixLabel {
    pub peer: String,
    pub direction: &'static str,
}

impl Metrics {
    /// Sets the BGP peer series to `rows` (peers no longer configured are dropped).
    pub fn set_bgp_peers(&self, rows: &[crate::bgp::BgpPeerRow]) {
        self.bgp_peer_established.clear();
        self.bgp_peer_prefixes.clear();
        for r in rows {
            let peer = r.peer_address.clone();
            self.bgp_peer_established
                .get_or_create(&PeerLabel { peer: peer.clone() })
                .set(i64::from(r.state == "Established"));
            for (direction, n) in [
                ("received", r.received),
                ("accepted", r.accepted),
                ("advertised", r.advertised),
            ] {
                self.bgp_peer_prefixes
                    .get_or_create(&PeerPrefixLabel {
                        peer: peer.clone(),
                        direction,
                    })
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }

    /// A fresh registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tortie_agent");
        let m = Metrics {
            in_sync: Gauge::default(),
            datastore_updates: Counter::default(),
            ready: Gauge::default(),
            routes_programmed: Family::default(),
            routes_unresolved: Gauge::default(),
            route_changes: Family::default(),
            apply_errors: Counter::default(),
            apply_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            label_updates: Family::default(),
            policy_applies: Counter::default(),
            policy_apply_errors: Counter::default(),
            policy_apply_duration: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            policy_drift_repairs: Counter::default(),
            policy_endpoints: Gauge::default(),
            policy_log_packets: Family::default(),
            policy_log_dropped: Counter::default(),
            bgp_peer_established: Family::default(),
            bgp_peer_prefixes: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "policy_applies",
            "Policy dataplane transactions applied",
            m.policy_applies.clone(),
        );
        registry.register(
            "policy_apply_errors",
            "Policy dataplane transactions that failed",
            m.policy_apply_errors.clone(),
        );
        registry.register(
            "policy_apply_duration_seconds",
            "Time to compute and apply the policy dataplane",
            m.policy_apply_duration.clone(),
        );
        registry.register(
            "policy_drift_repairs",
            "Times the policy table was found changed by someone else and restored",
            m.policy_drift_repairs.clone(),
        );
        registry.register(
            "policy_endpoints",
            "Local workload endpoints with policy programmed",
            m.policy_endpoints.clone(),
        );
        registry.register(
            "policy_log_packets",
            "Packets of Log rules written as policy log events, by rule",
            m.policy_log_packets.clone(),
        );
        registry.register(
            "policy_log_dropped",
            "Packets of Log rules dropped unlogged because they came too fast",
            m.policy_log_dropped.clone(),
        );
        registry.register(
            "bgp_peer_established",
            "1 while the BGP session to the peer is Established",
            m.bgp_peer_established.clone(),
        );
        registry.register(
            "bgp_peer_prefixes",
            "Prefixes per BGP peer: received, accepted by import policy, advertised",
            m.bgp_peer_prefixes.clone(),
        );
        registry.register(
            "datastore_in_sync",
            "1 once the first full datastore snapshot arrived",
            m.in_sync.clone(),
        );
        registry.register(
            "datastore_updates",
            "Datastore updates processed",
            m.datastore_updates.clone(),
        );
        registry.register("ready", "1 while the agent is ready", m.ready.clone());
        registry.register(
            "routes_programmed",
            "Routes the agent owns in the kernel after the last successful apply",
            m.routes_programmed.clone(),
        );
        registry.register(
            "routes_unresolved",
            "Routes not programmed because the next-hop node has no address of the family",
            m.routes_unresolved.clone(),
        );
        registry.register(
            "route_changes",
            "Kernel route changes made",
            m.route_changes.clone(),
        );
        registry.register(
            "route_apply_errors",
            "Route applies that failed",
            m.apply_errors.clone(),
        );
        registry.register(
            "route_apply_duration_seconds",
            "Time of each route apply that read the kernel",
            m.apply_duration.clone(),
        );
        registry.register(
            "label_updates",
            "WorkloadEndpoint label writes",
            m.label_updates.clone(),
        );
        // Pre-create the label values so every series shows from the start.
        for family in ["ipv4", "ipv6"] {
            let _ = m.routes_programmed.get_or_create(&FamilyLabel { family });
        }
        for op in ["add", "replace", "delete"] {
            let _ = m.route_changes.get_or_create(&OpLabel { op });
        }
        for result in ["ok", "conflict", "error"] {
            let _ = m.label_updates.get_or_create(&ResultLabel { result });
        }
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names() {
        let m = Metrics::new();
        m.route_changes.get_or_create(&OpLabel { op: "add" }).inc();
        m.apply_duration.observe(0.002);
        let text = m.encode();
        for name in [
            "tortie_agent_datastore_in_sync 0",
            "tortie_agent_datastore_updates_total 0",
            "tortie_agent_ready 0",
            "tortie_agent_routes_programmed{family=\"ipv4\"} 0",
            "tortie_agent_routes_unresolved 0",
            "tortie_agent_route_changes_total{op=\"add\"} 1",
            "tortie_agent_route_apply_errors_total 0",
            "tortie_agent_route_apply_duration_seconds_count 1",
            "tortie_agent_label_updates_total{result=\"ok\"} 0",
            "tortie_agent_policy_log_dropped_total 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}
