//! The staged policy preview with real packets and the agent's policy log listener (root;
//! skips otherwise, fails under `CI=true`). Namespaces, veths and the pods come from
//! tortie-dataplane's root-test support: a host namespace with pods a (10.244.1.10, `calia1`)
//! and b (10.244.2.11, `calib2`); nothing in the root namespace, all deleted on drop.
//!
//! Enforced: b admits TCP 80 from app=a (a Kubernetes NetworkPolicy). Staged: a
//! StagedNetworkPolicy before it would deny TCP 80 to b and allow TCP 81. The kernel must
//! keep enforcing the former (80 connects, 81 does not) and log what the latter would do.

#[path = "../../tortie-dataplane/tests/support/lab.rs"]
#[allow(
    dead_code,
    reason = "shared root-test support; this test uses part of it"
)]
mod lab;
#[path = "../../tortie-dataplane/tests/support/models.rs"]
#[allow(
    dead_code,
    reason = "shared root-test support; this test uses part of it"
)]
mod models;
#[path = "../../tortie-dataplane/tests/support/netns.rs"]
#[allow(
    dead_code,
    reason = "shared root-test support; this test uses part of it"
)]
mod netns;

use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use tortie_agent::metrics::Metrics;
use tortie_agent::policy_log::{PolicyLog, PolicyLogConfig, PolicyLogRecord};
use tortie_dataplane::{NftCommand, NftManager};

const STAGED: &str = "apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: lock-b, namespace: x}
spec:
  selector: app == 'b'
  order: 1
  types: [Ingress]
  ingress:
  - {action: Deny, protocol: TCP, destination: {ports: [80]}}
  - {action: Allow, protocol: TCP, destination: {ports: [81]}}
";

/// The first staged record within 5 s (Log rules' records are skipped).
fn next_staged(rx: &Receiver<PolicyLogRecord>) -> PolicyLogRecord {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = rx
            .recv_timeout(left)
            .expect("a staged preview record within 5 s");
        if r.staged.is_some() {
            return r;
        }
    }
}

/// Takes what is queued (SYN retransmissions of a refused connection log again).
fn drain(rx: &Receiver<PolicyLogRecord>) {
    for _ in 0..1000 {
        if rx.recv_timeout(Duration::from_millis(200)).is_err() {
            return;
        }
    }
}

#[test]
fn staged_policies_are_logged_never_enforced() {
    if !netns::is_root() {
        return;
    }
    let lab = lab::lab();
    let m = models::model_of(&[
        models::namespace(),
        models::wep("a", "a", "calia1", "10.244.1.10", ""),
        models::wep("b", "b", "calib2", "10.244.2.11", ""),
        models::policy("80"),
        STAGED.to_string(),
    ]);
    let ifaces: Vec<&str> = m.staged_workloads.keys().map(String::as_str).collect();
    assert_eq!(ifaces, ["calib2"], "only b's policy changes");
    let mut mgr = NftManager::new(NftCommand::in_netns(netns::path(&lab.host)));
    mgr.apply(&m)
        .unwrap_or_else(|e| panic!("{e}\n{}", e.stderr().unwrap_or_default()));

    let (tx, rx) = mpsc::sync_channel(256);
    let mut config = PolicyLogConfig::new(Some(&netns::path(&lab.host)));
    config.observer = Some(tx);
    let metrics = Arc::new(Metrics::new());
    let _log = PolicyLog::start(config, metrics.clone()).expect("policy log listener");

    // Staged deny, enforced allow: connects, and the preview says it would deny.
    let l80 = lab.listen("b", 80);
    assert_eq!(lab.connect("a", "b", 80, &l80), Ok(()), "enforced: allowed");
    let r = next_staged(&rx);
    assert_eq!(
        (r.staged, r.rule.as_str()),
        (Some("deny"), "snp/x/lock-b ingress[0]"),
        "{r:?}"
    );
    assert_eq!(r.packet.dst_port, Some(80), "{r:?}");
    drain(&rx);

    // Staged allow, enforced deny (end of b's tier): refused, and the preview would allow.
    let l81 = lab.listen("b", 81);
    assert!(lab.connect("a", "b", 81, &l81).is_err(), "enforced: denied");
    let r = next_staged(&rx);
    assert_eq!(
        (r.staged, r.rule.as_str()),
        (Some("allow"), "snp/x/lock-b ingress[1]"),
        "{r:?}"
    );
    assert_eq!(r.packet.dst_port, Some(81), "{r:?}");
    drain(&rx);

    // Traffic the staged policy does not select (to a) is not previewed.
    let la = lab.listen("a", 80);
    assert_eq!(lab.connect("b", "a", 80, &la), Ok(()));
    assert!(
        rx.recv_timeout(Duration::from_millis(300))
            .map_or(true, |r| r.staged.is_none()),
        "a preview record for traffic to a"
    );
    let text = metrics.encode();
    assert!(
        text.contains("rule=\"staged deny snp/x/lock-b ingress[0]\""),
        "{text}"
    );
}
