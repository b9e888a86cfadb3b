//! The policy log listener against a real kernel: a network namespace of its own
//! (`tortie-plog-<pid>…`, deleted by a guard even on panic), an nft table in it whose rule logs
//! UDP to port 9 to NFLOG group 1 as the dataplane renders Log rules, and a datagram sent to
//! the namespace's own loopback. Nothing leaves the namespace.
//!
//! Needs root (skips otherwise; fails under `CI=true`), except the last test.

mod common;

use std::net::{IpAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use common::{NetnsGuard, root_or_skip};
use tortie_agent::metrics::Metrics;
use tortie_agent::policy_log::{PolicyLog, PolicyLogConfig, PolicyLogError, PolicyLogRecord};
use tortie_agent::{Agent, AgentConfig, FakeDataplane};
use tortie_netlink::NetNs;
use tortie_store::DatastoreUrl;
use tortie_store::memory::MemoryStore;

/// Longest wait for anything.
const WAIT: Duration = Duration::from_secs(5);

/// What the dataplane renders for a Log rule of `gnp/audit`, in a table of the test's own.
const TABLE: &str = r#"table inet tortie_logtest {
    chain out {
        type filter hook output priority 0;
        meta l4proto udp udp dport 9 log prefix "tortie gnp/audit egress[0]: " group 1
    }
}
"#;

/// A namespace with loopback up (common's `NetnsGuard` deletes it on drop).
struct TestNetns {
    name: String,
    _guard: NetnsGuard,
}

impl TestNetns {
    fn new(suffix: &str) -> Self {
        let mut guard = NetnsGuard::new(&format!("plog{suffix}"));
        let name = guard.add("ns");
        TestNetns {
            name,
            _guard: guard,
        }
    }

    fn path(&self) -> PathBuf {
        NetNs::path_of(&self.name)
    }

    /// Loads an nft script inside the namespace.
    fn nft(&self, script: &str) {
        use std::io::Write as _;
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write script");
        let out = child.wait_with_output().expect("wait for nft");
        assert!(
            out.status.success(),
            "nft -f: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Sends one UDP datagram from inside the namespace to its own `to` (a loopback address).
    fn send_udp(&self, to: &str) {
        let ns = NetNs::named(&self.name).expect("open namespace");
        let dst = to.to_string();
        ns.run(move || {
            let bind = if dst.starts_with('[') {
                "[::1]:0"
            } else {
                "127.0.0.1:0"
            };
            let s = UdpSocket::bind(bind)?;
            s.send_to(b"tortie policy log test", &dst)
        })
        .expect("enter namespace")
        .unwrap_or_else(|e| panic!("send to {to}: {e}"));
    }
}

fn listener(ns: &TestNetns, metrics: &Arc<Metrics>) -> (PolicyLog, Receiver<PolicyLogRecord>) {
    let (tx, rx) = mpsc::sync_channel(16);
    let mut config = PolicyLogConfig::new(Some(&ns.path()));
    config.observer = Some(tx);
    let l = PolicyLog::start(config, metrics.clone()).expect("start the policy log listener");
    (l, rx)
}

/// Waits for `what` to show in the metrics, at most [`WAIT`].
fn wait_metric(metrics: &Metrics, what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = metrics.encode();
        if text.contains(what) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {WAIT:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn log_rules_become_records() {
    if !root_or_skip("log_rules_become_records") {
        return;
    }
    let ns = TestNetns::new("");
    let metrics = Arc::new(Metrics::new());
    let (first, records) = listener(&ns, &metrics);
    ns.nft(TABLE);

    ns.send_udp("127.0.0.1:9");
    let r = records
        .recv_timeout(WAIT)
        .expect("a policy log record within 5 s");
    assert_eq!(r.rule, "gnp/audit egress[0]");
    assert_eq!(r.packet.protocol, Some(17), "{r:?}");
    assert_eq!(r.packet.dst_port, Some(9), "{r:?}");
    assert!(r.packet.src_port.is_some_and(|p| p != 0), "{r:?}");
    let lo: IpAddr = "127.0.0.1".parse().expect("ip");
    assert_eq!((r.packet.src, r.packet.dst), (Some(lo), Some(lo)), "{r:?}");
    // On the output hook the packet has an outgoing interface and no incoming one.
    assert_eq!(r.oif.and_then(|i| i.name).as_deref(), Some("lo"));
    assert_eq!(r.iif, None);

    // IPv6 goes through the same inet table.
    ns.send_udp("[::1]:9");
    let r = records
        .recv_timeout(WAIT)
        .expect("an IPv6 policy log record within 5 s");
    let lo6: IpAddr = "::1".parse().expect("ip");
    assert_eq!(r.rule, "gnp/audit egress[0]");
    assert_eq!(
        (r.packet.dst, r.packet.protocol, r.packet.dst_port),
        (Some(lo6), Some(17), Some(9)),
        "{r:?}"
    );
    wait_metric(
        &metrics,
        "tortie_agent_policy_log_packets_total{rule=\"gnp/audit egress[0]\"} 2",
    );
    assert!(
        metrics
            .encode()
            .contains("tortie_agent_policy_log_dropped_total 0")
    );

    // The group is taken while the listener runs: a second one fails to bind, cleanly.
    match PolicyLog::start(PolicyLogConfig::new(Some(&ns.path())), metrics.clone()) {
        Err(PolicyLogError::Bind { group: 1, .. }) => {}
        other => panic!("second listener on group 1: {other:?}"),
    }
    // Stopping releases it.
    first.stop();
    let (again, records) = listener(&ns, &metrics);
    ns.send_udp("127.0.0.1:9");
    let r = records
        .recv_timeout(WAIT)
        .expect("a record after restarting the listener");
    assert_eq!(r.rule, "gnp/audit egress[0]");
    drop(again);
}

#[tokio::test]
async fn the_agent_counts_log_rule_packets() {
    if !root_or_skip("the_agent_counts_log_rule_packets") {
        return;
    }
    let ns = TestNetns::new("-agent");
    let mut agent = Agent::start(
        agent_config(),
        Arc::new(MemoryStore::new()),
        Box::new(FakeDataplane::new()),
    )
    .await
    .expect("start agent");
    agent.start_policy_log(Some(&ns.path())).await;
    ns.nft(TABLE);
    ns.send_udp("127.0.0.1:9");
    let want = "tortie_agent_policy_log_packets_total{rule=\"gnp/audit egress[0]\"} 1";
    let deadline = tokio::time::Instant::now() + WAIT;
    while !agent.metrics().encode().contains(want) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {want} within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    agent.shutdown().await.expect("shutdown");
}

/// Policy does not depend on logging: an agent whose listener cannot start goes on.
#[tokio::test]
async fn an_agent_without_a_listener_keeps_working() {
    let mut agent = Agent::start(
        agent_config(),
        Arc::new(MemoryStore::new()),
        Box::new(FakeDataplane::new()),
    )
    .await
    .expect("start agent");
    agent
        .start_policy_log(Some(std::path::Path::new("/nonexistent/netns")))
        .await;
    assert_eq!(agent.wait_ready(WAIT).await, Ok(()));
    agent.shutdown().await.expect("shutdown");
}

fn agent_config() -> AgentConfig {
    let mut c = AgentConfig::new("n1", DatastoreUrl::Memory);
    c.node_ip = Some("198.18.0.11/24".parse().expect("ip"));
    c.health_listen = "127.0.0.1:0".parse().expect("addr");
    c
}
