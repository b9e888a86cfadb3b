//! The whole agent in-process over an in-memory store and the recording fake dataplane: no
//! root needed. Covers InSync gating, readiness over HTTP, route reconciliation, label sync,
//! registration and a restart that changes nothing.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tortie_agent::{Agent, AgentConfig, FakeDataplane};
use tortie_api::Kind;
use tortie_ipam::keys;
use tortie_ipam::model::AffinityState::Confirmed;
use tortie_store::memory::MemoryStore;
use tortie_store::{DatastoreUrl, Store};

const WAIT: Duration = Duration::from_secs(10);

fn config() -> AgentConfig {
    let mut c = AgentConfig::new("n1", DatastoreUrl::Memory);
    c.node_ip = Some("198.18.0.11/24".parse().unwrap());
    c.health_listen = "127.0.0.1:0".parse().unwrap();
    c.resync_interval = Duration::from_secs(1);
    c
}

/// `config()` with the periodic resync pushed far beyond any wait in these tests.
fn config_without_resync() -> AgentConfig {
    let mut c = config();
    c.resync_interval = Duration::from_secs(3600);
    c
}

async fn cluster(store: &dyn Store) {
    node(store, "n2", "198.18.0.12/24", "fd00:198:18::12/64").await;
    affinity(store, "n1", "10.244.1.0/26", Confirmed).await;
    affinity(store, "n2", "10.244.2.0/26", Confirmed).await;
    affinity(store, "n2", "fd00:10:244:2::/122", Confirmed).await;
    // 10.244.1.2 of our block is borrowed by n2.
    block(store, "10.244.1.0/26", "n1", &[(1, "n1"), (2, "n2")]).await;
}

const EXPECTED: [&str; 4] = [
    "blackhole 10.244.1.0/26",
    "10.244.1.2/32 via 198.18.0.12",
    "10.244.2.0/26 via 198.18.0.12",
    "fd00:10:244:2::/122 via fd00:198:18::12",
];

async fn readiness_body(agent: &Agent, want: &str) {
    let addr = agent.health_addr();
    wait_for(&format!("readiness {want:?}"), WAIT, || async move {
        let (status, body) = http_get(addr, "/readiness").await;
        (body.trim() == want).then_some(status)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_end_to_end_with_fake_dataplane() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    cluster(store.as_ref()).await;
    pod(store.as_ref(), "x", "a", "n1", json!({"app": "web"})).await;
    let wep_key = wep(store.as_ref(), "x", "a", "n1", json!({"app": "old"})).await;
    let fake = FakeDataplane::new();
    // A route tortie owns but nobody wants any more (left from an earlier run).
    {
        use tortie_agent::NodeDataplane;
        let mut dp = fake.clone();
        dp.execute(&tortie_agent::route::RouteOp::Add {
            dst: "10.99.0.0/26".parse().unwrap(),
            target: tortie_agent::route::RouteTarget::Blackhole,
        })
        .await
        .unwrap();
    }
    let ops_before = fake.state().ops.len();

    let (gated, gate) = gated(store.clone());
    let agent = Agent::start(config(), gated, Box::new(fake.clone()))
        .await
        .unwrap();
    let addr = agent.health_addr();

    // Registered, but the datastore listing is held back: not in sync, nothing touched.
    readiness_body(&agent, "waiting for datastore sync").await;
    assert_eq!(http_get(addr, "/readiness").await.0, 503);
    assert_eq!(http_get(addr, "/liveness").await.0, 200);
    {
        let s = fake.state();
        assert_eq!(s.lists, 0, "no kernel read before InSync");
        assert_eq!(s.ops.len(), ops_before, "no kernel write before InSync");
        assert_eq!(s.sysctl_calls, 0, "no sysctl before InSync");
    }
    assert_eq!(labels_at(store.as_ref(), &wep_key).await["app"], "old");
    let n1 = store
        .get(&Kind::Node.key(None, "n1"))
        .await
        .unwrap()
        .unwrap();
    let n1: serde_json::Value = serde_json::from_slice(&n1.value).unwrap();
    assert_eq!(n1["spec"]["bgp"]["ipv4Address"], "198.18.0.11/24");

    // In sync: routes reconciled (stale one swept), ready, labels synced.
    gate.send_replace(true);
    readiness_body(&agent, "ready").await;
    assert_eq!(http_get(addr, "/readiness").await.0, 200);
    assert_eq!(fake.owned_lines(), EXPECTED);
    assert!(fake.state().sysctl_calls >= 1);
    let st = store.clone();
    let k = wep_key.clone();
    wait_for("WEP labels synced at InSync", WAIT, || {
        let (st, k) = (st.clone(), k.clone());
        async move { (labels_at(st.as_ref(), &k).await["app"] == "web").then_some(()) }
    })
    .await;

    // A label change on the pod reaches its endpoint quickly; reserved labels stay.
    let changed_at = Instant::now();
    pod(
        store.as_ref(),
        "x",
        "a",
        "n1",
        json!({"app": "api", "ver": "2"}),
    )
    .await;
    let labels = wait_for("WEP labels follow the pod", WAIT, || {
        let (st, k) = (st.clone(), k.clone());
        async move {
            let l = labels_at(st.as_ref(), &k).await;
            (l["app"] == "api").then_some(l)
        }
    })
    .await;
    // Latency is reported, not asserted (timing belongs in benchmarks); the SQLite test
    // below shows the update is event-driven rather than waiting for a resync.
    eprintln!("label sync took {:?}", changed_at.elapsed());
    assert_eq!(
        labels,
        json!({"app": "api", "ver": "2",
               "projectcalico.org/namespace": "x",
               "projectcalico.org/orchestrator": "k8s"})
    );

    // Removing a remote affinity removes its route.
    store
        .delete(
            &keys::affinity_key("n2", &"10.244.2.0/26".parse().unwrap()),
            None,
        )
        .await
        .unwrap();
    let f = fake.clone();
    wait_for("route to n2's block removed", WAIT, || {
        let f = f.clone();
        async move {
            (!f.owned_lines()
                .contains(&"10.244.2.0/26 via 198.18.0.12".to_string()))
            .then_some(())
        }
    })
    .await;

    let (status, metrics) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200);
    for line in [
        "tortie_agent_ready 1",
        "tortie_agent_datastore_in_sync 1",
        "tortie_agent_routes_programmed{family=\"ipv6\"} 1",
        "tortie_agent_route_changes_total{op=\"delete\"} 2",
        "tortie_agent_route_apply_errors_total 0",
    ] {
        assert!(metrics.contains(line), "missing {line:?} in\n{metrics}");
    }
    assert!(metrics.contains("tortie_agent_label_updates_total{result=\"ok\"}"));

    // Shutdown leaves routes; a restarted agent finds everything right and changes nothing.
    agent.shutdown().await.unwrap();
    let routes_before = fake.owned_lines();
    let ops_before = fake.state().ops.len();
    assert_eq!(routes_before.len(), 3);
    let again = Agent::start(config(), store.clone(), Box::new(fake.clone()))
        .await
        .unwrap();
    readiness_body(&again, "ready").await;
    assert_eq!(fake.owned_lines(), routes_before);
    assert_eq!(fake.state().ops.len(), ops_before, "restart changed routes");
    again.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_failures_make_the_agent_unready_until_fixed() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    cluster(store.as_ref()).await;
    let fake = FakeDataplane::new();
    fake.state()
        .fail_dsts
        .insert("10.244.2.0/26".parse().unwrap());
    let agent = Agent::start(config(), store.clone(), Box::new(fake.clone()))
        .await
        .unwrap();
    let addr = agent.health_addr();
    let reason = wait_for("apply failure reported", WAIT, || async move {
        let (status, body) = http_get(addr, "/readiness").await;
        (status == 503 && body.starts_with("route programming failed")).then_some(body)
    })
    .await;
    assert!(
        reason.contains("add 10.244.2.0/26 via 198.18.0.12: injected failure"),
        "{reason}"
    );
    // The other routes went in regardless.
    assert!(
        fake.owned_lines()
            .contains(&"blackhole 10.244.1.0/26".to_string())
    );
    fake.state().fail_dsts.clear();
    readiness_body(&agent, "ready").await;
    assert_eq!(fake.owned_lines(), EXPECTED);
    let (_, metrics) = http_get(addr, "/metrics").await;
    assert!(
        !metrics.contains("tortie_agent_route_apply_errors_total 0"),
        "{metrics}"
    );
    agent.shutdown().await.unwrap();
}

/// A policy dataplane that fails while `fail` is set.
#[derive(Debug, Clone, Default)]
struct FlakyPolicy {
    fail: Arc<std::sync::atomic::AtomicBool>,
}

impl tortie_agent::policy_dataplane::PolicyDataplane for FlakyPolicy {
    fn apply(
        &mut self,
        _model: &tortie_calc::dataplane::DataplaneModel,
    ) -> Result<tortie_agent::policy_dataplane::PolicyApplyReport, String> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err("injected nft failure".to_string());
        }
        Ok(Default::default())
    }

    fn check_drift(&mut self) -> Result<bool, String> {
        Ok(false)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_failures_make_the_agent_unready_until_fixed() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    cluster(store.as_ref()).await;
    let policy = FlakyPolicy::default();
    policy.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let agent = Agent::start_with_policy(
        config(),
        store.clone(),
        Box::new(FakeDataplane::new()),
        Box::new(policy.clone()),
    )
    .await
    .unwrap();
    readiness_body(&agent, "policy programming failed: injected nft failure").await;
    policy
        .fail
        .store(false, std::sync::atomic::Ordering::SeqCst);
    // The retry (with backoff) succeeds and the agent is ready again.
    readiness_body(&agent, "ready").await;
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registration_keeps_labels_and_survives_deletion() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let v = manifest(
        Kind::Node,
        "n1",
        None,
        json!({"rack": "r7"}),
        json!({"bgp": {"ipv4Address": "198.18.0.99/24"}}),
    );
    put(store.as_ref(), &Kind::Node.key(None, "n1"), &v).await;
    let agent = Agent::start(config(), store.clone(), Box::new(FakeDataplane::new()))
        .await
        .unwrap();
    readiness_body(&agent, "ready").await;
    let kv = store
        .get(&Kind::Node.key(None, "n1"))
        .await
        .unwrap()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(v["metadata"]["labels"]["rack"], "r7");
    assert_eq!(v["spec"]["bgp"]["ipv4Address"], "198.18.0.11/24");
    // A deleted Node record is written again.
    let key = Kind::Node.key(None, "n1");
    store.delete(&key, None).await.unwrap();
    let st = store.clone();
    wait_for("node re-registered", WAIT, || {
        let (st, key) = (st.clone(), key.clone());
        async move { st.get(&key).await.unwrap().map(|_| ()) }
    })
    .await;
    agent.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_sync_over_the_sqlite_store_is_event_driven() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(
        tortie_store::sqlite::SqliteStore::open(dir.path().join("store.db"))
            .await
            .unwrap(),
    );
    pod(store.as_ref(), "x", "b", "n1", json!({"app": "web"})).await;
    let key = wep(store.as_ref(), "x", "b", "n1", json!({"app": "web"})).await;
    // Another node's pod and endpoint are not this agent's business.
    pod(store.as_ref(), "x", "c", "n2", json!({"app": "new"})).await;
    let other = wep(store.as_ref(), "x", "c", "n2", json!({"app": "old"})).await;
    let agent = Agent::start(
        config_without_resync(),
        store.clone(),
        Box::new(FakeDataplane::new()),
    )
    .await
    .unwrap();
    readiness_body(&agent, "ready").await;
    let changed_at = Instant::now();
    pod(store.as_ref(), "x", "b", "n1", json!({"app": "db"})).await;
    let st = store.clone();
    let k = key.clone();
    wait_for("WEP labels follow the pod", WAIT, || {
        let (st, k) = (st.clone(), k.clone());
        async move { (labels_at(st.as_ref(), &k).await["app"] == "db").then_some(()) }
    })
    .await;
    // No periodic resync can happen within WAIT, so the update came from the watch.
    eprintln!("label sync over SQLite took {:?}", changed_at.elapsed());
    assert_eq!(labels_at(store.as_ref(), &other).await["app"], "old");
    agent.shutdown().await.unwrap();
}
