//! Release, empty-block release, GC, and check/fix of crash leftovers.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use serde_json::json;
use support::*;
use tortie_ipam::model::{AffinityState, BlockAffinity, IpamHandle};
use tortie_ipam::{GcPolicy, Ipam, Problem, keys};
use tortie_store::Store;
use tortie_store::memory::MemoryStore;

async fn setup() -> (Arc<dyn Store>, Ipam, Arc<tortie_ipam::FakeClock>) {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    pool(&*store, "p", "10.20.0.0/24", 29, json!({})).await;
    let (ipam, clock) = ipam_with_clock(store.clone());
    (store, ipam, clock)
}

fn kinds(report: &tortie_ipam::CheckReport) -> Vec<String> {
    report
        .problems
        .iter()
        .map(|p| {
            serde_json::to_value(p).unwrap()["problem"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn release_by_ip_is_idempotent_and_updates_the_handle() {
    let (store, ipam, _) = setup().await;
    let got = ipam.auto_assign(&req("h", "n1", 3)).await.unwrap();
    let ips: Vec<IpAddr> = got.ipv4.iter().map(IpNet::addr).collect();
    let not = ipam.release_ips(&ips[..1]).await.unwrap();
    assert!(not.is_empty());
    assert_eq!(ipam.ips_by_handle("h").await.unwrap(), ips[1..].to_vec());
    let outside: IpAddr = "192.168.1.1".parse().unwrap();
    let not = ipam.release_ips(&[ips[0], outside]).await.unwrap();
    assert_eq!(not, vec![ips[0], outside], "already free and unknown");
    ipam.release_ips(&ips[1..]).await.unwrap();
    assert!(
        store.get(&keys::handle_key("h")).await.unwrap().is_none(),
        "handle deleted at 0"
    );
    assert!(ipam.ip_info(ips[0]).await.unwrap().is_none());
    assert!(ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn release_by_handle_is_idempotent() {
    let (store, ipam, _) = setup().await;
    let mut r = req("k8s-pod-network.abc", "n1", 2);
    r.num_v6 = 0;
    let got = ipam.auto_assign(&r).await.unwrap();
    ipam.auto_assign(&req("other", "n1", 1)).await.unwrap();
    let mut released = ipam.release_by_handle("k8s-pod-network.abc").await.unwrap();
    released.sort();
    let want: Vec<IpAddr> = got.ipv4.iter().map(IpNet::addr).collect();
    assert_eq!(released, want);
    assert!(
        ipam.release_by_handle("k8s-pod-network.abc")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        ipam.release_by_handle("never-existed")
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .get(&keys::handle_key("k8s-pod-network.abc"))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(ipam.ips_by_handle("other").await.unwrap().len(), 1);
    assert!(ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn released_addresses_are_reused_last() {
    let (_, ipam, _) = setup().await;
    let first = ipam.auto_assign(&req("a", "n1", 1)).await.unwrap().ipv4[0];
    ipam.release_by_handle("a").await.unwrap();
    let next = ipam.auto_assign(&req("b", "n1", 1)).await.unwrap().ipv4[0];
    assert_ne!(
        first, next,
        "FIFO: the just-released address goes to the back"
    );
}

#[tokio::test]
async fn empty_blocks_need_two_observations_spanning_min_age() {
    let (store, ipam, clock) = setup().await;
    let got = ipam.auto_assign(&req("h", "n1", 1)).await.unwrap();
    let cidr = got.ipv4[0].trunc();
    let min_age = Duration::from_secs(300);
    assert_eq!(
        ipam.release_empty_blocks(min_age).await.unwrap(),
        0,
        "not empty"
    );
    ipam.release_by_handle("h").await.unwrap();
    assert_eq!(
        ipam.release_empty_blocks(min_age).await.unwrap(),
        0,
        "first observation"
    );
    clock.advance(Duration::from_secs(200));
    assert_eq!(
        ipam.release_empty_blocks(min_age).await.unwrap(),
        0,
        "too soon"
    );
    // Used and freed again in between: the observation starts over.
    ipam.auto_assign(&req("h2", "n1", 1)).await.unwrap();
    ipam.release_by_handle("h2").await.unwrap();
    clock.advance(Duration::from_secs(200));
    assert_eq!(
        ipam.release_empty_blocks(min_age).await.unwrap(),
        0,
        "block changed"
    );
    clock.advance(Duration::from_secs(300));
    assert_eq!(ipam.release_empty_blocks(min_age).await.unwrap(), 1);
    assert!(store.get(&keys::block_key(&cidr)).await.unwrap().is_none());
    assert!(
        store
            .get(&keys::affinity_key("n1", &cidr))
            .await
            .unwrap()
            .is_none()
    );
    let left = store.list("/tortie/ipam/").await.unwrap();
    assert!(left.items.is_empty(), "observations cleaned up");
    assert!(ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn gc_releases_orphans_only_after_the_grace_period() {
    let (store, ipam, clock) = setup().await;
    pod(&*store, "ns", "web").await;
    pod(&*store, "ns", "db").await;
    let web = ipam
        .auto_assign(&pod_req("k8s-pod-network.w", "n1", "ns", "web"))
        .await
        .unwrap();
    let db = ipam
        .auto_assign(&pod_req("k8s-pod-network.d", "n1", "ns", "db"))
        .await
        .unwrap();
    ipam.auto_assign(&req("ipip-tunnel-addr-n1", "n1", 1))
        .await
        .unwrap();
    let policy = GcPolicy {
        grace: Duration::from_secs(600),
        ..GcPolicy::default()
    };
    let s = ipam.gc(&policy).await.unwrap();
    assert_eq!((s.scanned, s.orphaned, s.released.len()), (3, 0, 0));
    delete_pod(&*store, "ns", "web").await;
    delete_pod(&*store, "ns", "db").await;
    wep(&*store, "ns", "db", "n1", &[db.ipv4[0].addr()]).await;
    let s = ipam.gc(&policy).await.unwrap();
    assert_eq!(
        (s.orphaned, s.waiting, s.released.len()),
        (1, 1, 0),
        "first sight: wait"
    );
    clock.advance(Duration::from_secs(599));
    assert!(ipam.gc(&policy).await.unwrap().released.is_empty());
    clock.advance(Duration::from_secs(1));
    let s = ipam.gc(&policy).await.unwrap();
    assert_eq!(s.released, vec![web.ipv4[0].addr()]);
    assert_eq!(
        ipam.ips_by_handle("k8s-pod-network.d").await.unwrap().len(),
        1,
        "WEP keeps db"
    );
    assert_eq!(
        ipam.ips_by_handle("ipip-tunnel-addr-n1")
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(store.list("/tortie/ipam/").await.unwrap().items.is_empty());
    assert!(ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn gc_forgets_orphans_that_come_back() {
    let (store, ipam, clock) = setup().await;
    ipam.auto_assign(&pod_req("h", "n1", "ns", "web"))
        .await
        .unwrap();
    let policy = GcPolicy {
        grace: Duration::from_secs(60),
        ..GcPolicy::default()
    };
    assert_eq!(ipam.gc(&policy).await.unwrap().waiting, 1);
    pod(&*store, "ns", "web").await;
    clock.advance(Duration::from_secs(120));
    assert_eq!(ipam.gc(&policy).await.unwrap().orphaned, 0);
    delete_pod(&*store, "ns", "web").await;
    let s = ipam.gc(&policy).await.unwrap();
    assert!(s.released.is_empty(), "the grace period starts over");
}

#[tokio::test]
async fn cni_gc_with_valid_handles_and_prefix() {
    let (_, ipam, _) = setup().await;
    for h in [
        "k8s-pod-network.live",
        "k8s-pod-network.dead",
        "other-net.x",
    ] {
        ipam.auto_assign(&req(h, "n1", 1)).await.unwrap();
    }
    let policy = GcPolicy {
        grace: Duration::ZERO,
        valid_handles: Some(BTreeSet::from(["k8s-pod-network.live".to_string()])),
        handle_prefix: Some("k8s-pod-network.".into()),
    };
    let s = ipam.gc(&policy).await.unwrap();
    assert_eq!(s.scanned, 2);
    assert_eq!(s.released.len(), 1);
    assert!(
        ipam.ips_by_handle("k8s-pod-network.dead")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ipam.ips_by_handle("k8s-pod-network.live")
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(ipam.ips_by_handle("other-net.x").await.unwrap().len(), 1);
    let without_attrs = GcPolicy {
        grace: Duration::ZERO,
        ..GcPolicy::default()
    };
    assert!(
        ipam.gc(&without_attrs).await.unwrap().released.is_empty(),
        "assumed live"
    );
}

#[tokio::test]
async fn gc_keeps_a_handle_while_any_of_its_addresses_is_live() {
    let (store, ipam, _) = setup().await;
    pod(&*store, "ns", "a").await;
    let mut r = pod_req("shared", "n1", "ns", "a");
    ipam.auto_assign(&r).await.unwrap();
    r.attrs.insert("pod".into(), "b".into());
    ipam.auto_assign(&r).await.unwrap();
    let s = ipam
        .gc(&GcPolicy {
            grace: Duration::ZERO,
            ..GcPolicy::default()
        })
        .await
        .unwrap();
    assert_eq!((s.orphaned, s.waiting, s.released.len()), (1, 1, 0));
}

#[tokio::test]
async fn check_and_fix_repair_a_crash_between_handle_and_block_writes() {
    let (store, ipam, _) = setup().await;
    ipam.auto_assign(&req("h", "n1", 2)).await.unwrap();
    let got = ipam.auto_assign(&req("crashed", "n1", 1)).await.unwrap();
    let cidr = got.ipv4[0].trunc();
    ipam.release_ips(&[got.ipv4[0].addr()]).await.unwrap();
    // Simulate the crash: handle incremented, block never written.
    let ghost = IpamHandle {
        handle_id: "crashed".into(),
        block: BTreeMap::from([(cidr.to_string(), 1)]),
        deleted: false,
    };
    put(
        &*store,
        &keys::handle_key("crashed"),
        serde_json::to_value(&ghost).unwrap(),
    )
    .await;
    let mut inflated = ghost.clone();
    inflated.handle_id = "h".into();
    inflated.block.insert(cidr.to_string(), 5);
    put(
        &*store,
        &keys::handle_key("h"),
        serde_json::to_value(&inflated).unwrap(),
    )
    .await;
    let report = ipam.check().await.unwrap();
    assert_eq!(kinds(&report), ["handleMismatch", "handleMismatch"]);
    assert!(
        report
            .to_string()
            .ends_with("Check complete; found 2 problems.\n")
    );
    let fixed = ipam.fix(&report).await.unwrap();
    assert_eq!(fixed.fixed.len(), 2, "{fixed:?}");
    assert!(
        store
            .get(&keys::handle_key("crashed"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(ipam.check().await.unwrap().is_clean());
    assert_eq!(ipam.release_by_handle("h").await.unwrap().len(), 2);
}

#[tokio::test]
async fn check_and_fix_repair_affinity_problems() {
    let (store, ipam, _) = setup().await;
    let got = ipam.auto_assign(&req("h", "n1", 1)).await.unwrap();
    let owned = got.ipv4[0].trunc();
    let orphan: IpNet = "10.20.0.128/29".parse().unwrap();
    let pending = BlockAffinity::host("n2", orphan, AffinityState::Pending);
    put(
        &*store,
        &keys::affinity_key("n2", &orphan),
        serde_json::to_value(&pending).unwrap(),
    )
    .await;
    let foreign = BlockAffinity::host("n3", owned, AffinityState::Confirmed);
    put(
        &*store,
        &keys::affinity_key("n3", &owned),
        serde_json::to_value(&foreign).unwrap(),
    )
    .await;
    store
        .delete(&keys::affinity_key("n1", &owned), None)
        .await
        .unwrap();
    let report = ipam.check().await.unwrap();
    let mut k = kinds(&report);
    k.sort();
    assert_eq!(
        k,
        [
            "affinityMismatch",
            "affinityWithoutBlock",
            "blockWithoutAffinity"
        ]
    );
    let fixed = ipam.fix(&report).await.unwrap();
    assert!(
        fixed.errors.is_empty() && fixed.skipped.is_empty(),
        "{fixed:?}"
    );
    assert!(ipam.check().await.unwrap().is_clean());
    let kv = store
        .get(&keys::affinity_key("n1", &owned))
        .await
        .unwrap()
        .unwrap();
    let a: BlockAffinity = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(a.state, AffinityState::Confirmed);
}

#[tokio::test]
async fn stuck_pending_affinity_of_an_owned_block_is_confirmed() {
    let (store, ipam, _) = setup().await;
    let got = ipam.auto_assign(&req("h", "n1", 1)).await.unwrap();
    let cidr = got.ipv4[0].trunc();
    let pending = BlockAffinity::host("n1", cidr, AffinityState::Pending);
    put(
        &*store,
        &keys::affinity_key("n1", &cidr),
        serde_json::to_value(&pending).unwrap(),
    )
    .await;
    let report = ipam.check().await.unwrap();
    assert_eq!(kinds(&report), ["affinityNotConfirmed"]);
    // Affinities that changed since the report are left alone.
    let stale = report.clone();
    put(
        &*store,
        &keys::affinity_key("n1", &cidr),
        serde_json::to_value(&pending).unwrap(),
    )
    .await;
    assert_eq!(ipam.fix(&stale).await.unwrap().skipped.len(), 1);
    let fixed = ipam.fix(&ipam.check().await.unwrap()).await.unwrap();
    assert_eq!(fixed.fixed.len(), 1);
    assert!(ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn fix_releases_confirmed_leaks_but_never_live_ones() {
    let (store, ipam, _) = setup().await;
    pod(&*store, "ns", "live").await;
    let leak = ipam
        .auto_assign(&pod_req("gone", "n1", "ns", "gone"))
        .await
        .unwrap();
    ipam.auto_assign(&pod_req("live", "n1", "ns", "live"))
        .await
        .unwrap();
    let used: IpAddr = "10.20.0.250".parse().unwrap();
    wep(&*store, "ns", "stray", "n1", &[used]).await;
    let report = ipam.check().await.unwrap();
    let mut k = kinds(&report);
    k.sort();
    assert_eq!(k, ["inUseWithoutAllocation", "leakCandidate"]);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["problemCount"], 2);
    // The pod comes back before the fix: nothing is released.
    pod(&*store, "ns", "gone").await;
    let fixed = ipam.fix(&report).await.unwrap();
    assert!(fixed.released.is_empty(), "{fixed:?}");
    delete_pod(&*store, "ns", "gone").await;
    let fixed = ipam.fix(&report).await.unwrap();
    assert_eq!(fixed.released, vec![leak.ipv4[0].addr()]);
    let after = ipam.check().await.unwrap();
    assert_eq!(
        kinds(&after),
        ["inUseWithoutAllocation"],
        "not repairable automatically"
    );
    assert!(matches!(
        after.problems[0],
        Problem::InUseWithoutAllocation { .. }
    ));
}

#[tokio::test]
async fn a_stale_leak_report_never_frees_a_reallocated_address() {
    let (_, ipam, _) = setup().await;
    let got = ipam
        .auto_assign(&pod_req("gone", "n1", "ns", "gone"))
        .await
        .unwrap();
    let report = ipam.check().await.unwrap();
    ipam.release_by_handle("gone").await.unwrap();
    // The same handle gets the same address again (e.g. a retried ADD).
    let ip = got.ipv4[0].addr();
    let again = tortie_ipam::AssignIpRequest {
        ip,
        handle: "gone".into(),
        attrs: BTreeMap::from([
            ("namespace".to_string(), "ns".to_string()),
            ("pod".to_string(), "gone".to_string()),
        ]),
        hostname: "n1".into(),
    };
    ipam.assign_ip(&again).await.unwrap();
    let fixed = ipam.fix(&report).await.unwrap();
    assert!(
        fixed.released.is_empty(),
        "sequence number changed: {fixed:?}"
    );
    assert_eq!(ipam.ips_by_handle("gone").await.unwrap(), vec![ip]);
}

#[tokio::test]
async fn ipv6_release_and_usage() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    pool(&*store, "v6", "fd00:1::/120", 122, json!({})).await;
    let ipam = Ipam::new(store);
    let mut r = req("h6", "n1", 0);
    r.num_v6 = 3;
    let got = ipam.auto_assign(&r).await.unwrap();
    assert_eq!(got.ipv6.len(), 3);
    let usage = ipam.usage().await.unwrap();
    assert_eq!((usage.pools[0].total, usage.pools[0].in_use), (256, 3));
    assert_eq!(ipam.release_by_handle("h6").await.unwrap().len(), 3);
    assert!(ipam.check().await.unwrap().is_clean());
}
