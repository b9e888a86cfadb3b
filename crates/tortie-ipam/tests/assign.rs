//! Assignment behaviour: pools, selectors, reservations, explicit requests, specific IPs,
//! exhaustion, borrowing, the block cap and the cost of the hot path.

mod support;

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde_json::json;
use support::*;
use tortie_api::ipam::AllowedUse;
use tortie_ipam::model::{AffinityState, BlockAffinity};
use tortie_ipam::{AssignIpRequest, Ipam, IpamError, keys};
use tortie_store::Store;
use tortie_store::memory::MemoryStore;

fn mem() -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn assign_req(addr: &str, handle: &str, host: &str) -> AssignIpRequest {
    AssignIpRequest {
        ip: ip(addr),
        handle: handle.into(),
        attrs: Default::default(),
        hostname: host.into(),
    }
}

#[tokio::test]
async fn dual_stack_assignment_is_block_masked_and_recorded() {
    let store = mem();
    pool(&*store, "v4", "10.244.0.0/16", 26, json!({})).await;
    pool(&*store, "v6", "fd00:10::/64", 122, json!({})).await;
    let ipam = Ipam::new(store.clone());
    let mut r = req("k8s-pod-network.c1", "node-1", 1);
    r.num_v6 = 1;
    let got = ipam.auto_assign(&r).await.unwrap();
    assert_eq!(got.ipv4.len(), 1);
    assert_eq!(got.ipv6.len(), 1);
    assert_eq!(got.ipv4[0].prefix_len(), 26);
    assert_eq!(got.ipv6[0].prefix_len(), 122);
    let held = ipam.ips_by_handle("k8s-pod-network.c1").await.unwrap();
    assert_eq!(held, vec![got.ipv4[0].addr(), got.ipv6[0].addr()]);
    let info = ipam.ip_info(got.ipv4[0].addr()).await.unwrap().unwrap();
    assert_eq!(info.handle.as_deref(), Some("k8s-pod-network.c1"));
    assert_eq!(info.attrs.get("node").map(String::as_str), Some("node-1"));
    assert_eq!(info.block_affinity.as_deref(), Some("host:node-1"));
    assert!(!info.borrowed);
    let aff = keys::affinity_key("node-1", &got.ipv4[0].trunc());
    let kv = store.get(&aff).await.unwrap().unwrap();
    let aff: BlockAffinity = serde_json::from_slice(&kv.value).unwrap();
    assert_eq!(aff.state, AffinityState::Confirmed);
    assert!(ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn second_allocation_reuses_the_affine_block() {
    let store = mem();
    pool(&*store, "p", "10.0.0.0/16", 26, json!({})).await;
    let ipam = Ipam::new(store);
    let a = ipam.auto_assign(&req("h1", "n1", 1)).await.unwrap();
    let b = ipam.auto_assign(&req("h2", "n1", 1)).await.unwrap();
    assert_eq!(a.ipv4[0].trunc(), b.ipv4[0].trunc());
    assert_ne!(a.ipv4[0], b.ipv4[0]);
}

#[tokio::test]
async fn exhaustion_error_names_the_pools_and_rolls_back() {
    let store = mem();
    pool(&*store, "tiny", "10.9.0.0/30", 30, json!({})).await;
    let ipam = Ipam::new(store);
    ipam.auto_assign(&req("h1", "n1", 2)).await.unwrap();
    let err = ipam.auto_assign(&req("h2", "n1", 3)).await.unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { .. }));
    assert_eq!(err.to_string(), "no free addresses in pools tiny");
    assert!(
        ipam.ips_by_handle("h2").await.unwrap().is_empty(),
        "rolled back"
    );
    let got = ipam.auto_assign(&req("h3", "n1", 2)).await.unwrap();
    assert_eq!(got.ipv4.len(), 2, "the two free addresses are still free");
    assert!(ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn exhaustion_lists_every_selected_pool() {
    let store = mem();
    pool(&*store, "a", "10.1.0.0/31", 31, json!({})).await;
    pool(&*store, "b", "10.2.0.0/31", 31, json!({})).await;
    let ipam = Ipam::new(store);
    let err = ipam.auto_assign(&req("h", "n1", 5)).await.unwrap_err();
    assert_eq!(err.to_string(), "no free addresses in pools a, b");
}

#[tokio::test]
async fn disabled_pool_is_never_used() {
    let store = mem();
    pool(
        &*store,
        "a-off",
        "10.1.0.0/24",
        29,
        json!({ "disabled": true }),
    )
    .await;
    pool(&*store, "b-on", "10.2.0.0/24", 29, json!({})).await;
    let ipam = Ipam::new(store.clone());
    for i in 0..40 {
        let got = ipam
            .auto_assign(&req(&format!("h{i}"), "n1", 1))
            .await
            .unwrap();
        assert!(net("10.2.0.0/24").contains(&got.ipv4[0].addr()));
    }
    let only_off = mem();
    pool(
        &*only_off,
        "off",
        "10.1.0.0/24",
        29,
        json!({ "disabled": true }),
    )
    .await;
    let ipam = Ipam::new(only_off);
    let err = ipam.auto_assign(&req("h", "n1", 1)).await.unwrap_err();
    assert!(matches!(err, IpamError::NoMatchingPools { .. }), "{err}");
    let err = ipam
        .assign_ip(&assign_req("10.1.0.5", "h", "n1"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "address 10.1.0.5 is not in any enabled pool"
    );
}

#[tokio::test]
async fn node_selector_is_honoured() {
    let store = mem();
    pool(
        &*store,
        "rack-a",
        "10.1.0.0/24",
        29,
        json!({ "nodeSelector": "rack == 'a'" }),
    )
    .await;
    pool(
        &*store,
        "rack-b",
        "10.2.0.0/24",
        29,
        json!({ "nodeSelector": "rack == 'b'" }),
    )
    .await;
    node(&*store, "na", json!({ "rack": "a" })).await;
    node(&*store, "nb", json!({ "rack": "b" })).await;
    node(&*store, "nc", json!({})).await;
    let ipam = Ipam::new(store);
    for i in 0..10 {
        let a = ipam
            .auto_assign(&req(&format!("a{i}"), "na", 1))
            .await
            .unwrap();
        assert!(net("10.1.0.0/24").contains(&a.ipv4[0].addr()));
        let b = ipam
            .auto_assign(&req(&format!("b{i}"), "nb", 1))
            .await
            .unwrap();
        assert!(net("10.2.0.0/24").contains(&b.ipv4[0].addr()));
    }
    let err = ipam.auto_assign(&req("c", "nc", 1)).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "no enabled IPv4 pool can be used by host nc (check the pools' nodeSelector, namespaceSelector, allowedUses and assignmentMode)"
    );
}

#[tokio::test]
async fn namespace_selector_is_honoured() {
    let store = mem();
    pool(&*store, "default", "10.1.0.0/30", 30, json!({})).await;
    pool(
        &*store,
        "prod",
        "10.2.0.0/24",
        29,
        json!({ "namespaceSelector": "env == 'prod'" }),
    )
    .await;
    namespace(&*store, "shop", json!({ "env": "prod" })).await;
    namespace(&*store, "dev", json!({ "env": "dev" })).await;
    let ipam = Ipam::new(store);
    let in_default = |n: &IpNet| net("10.1.0.0/30").contains(&n.addr());
    let got = ipam
        .auto_assign(&pod_req("d1", "n1", "dev", "a"))
        .await
        .unwrap();
    assert!(in_default(&got.ipv4[0]));
    // "shop" may use both pools; they are tried by name, so "default" first.
    let got = ipam
        .auto_assign(&pod_req("s1", "n1", "shop", "b"))
        .await
        .unwrap();
    assert!(in_default(&got.ipv4[0]));
    let mut fill = req("fill", "n1", 2);
    fill.namespace = Some("dev".into());
    ipam.auto_assign(&fill).await.unwrap();
    let got = ipam
        .auto_assign(&pod_req("s2", "n1", "shop", "c"))
        .await
        .unwrap();
    assert!(
        net("10.2.0.0/24").contains(&got.ipv4[0].addr()),
        "prod once default is full"
    );
    let err = ipam
        .auto_assign(&pod_req("d2", "n1", "dev", "d"))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no free addresses in pools default");
}

#[tokio::test]
async fn reservations_are_skipped_but_explicit_requests_may_use_them() {
    let store = mem();
    pool(&*store, "p", "10.5.0.0/28", 29, json!({})).await;
    reservation(&*store, "r", &["10.5.0.0/30", "10.5.0.9", "10.5.0.12/30"]).await;
    let ipam = Ipam::new(store);
    let mut got = Vec::new();
    loop {
        match ipam
            .auto_assign(&req(&format!("h{}", got.len()), "n1", 1))
            .await
        {
            Ok(r) => got.push(r.ipv4[0].addr()),
            Err(IpamError::Exhausted { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    got.sort();
    let expect: Vec<IpAddr> = [
        "10.5.0.4",
        "10.5.0.5",
        "10.5.0.6",
        "10.5.0.7",
        "10.5.0.8",
        "10.5.0.10",
        "10.5.0.11",
    ]
    .iter()
    .map(|s| ip(s))
    .collect();
    assert_eq!(got, expect);
    ipam.assign_ip(&assign_req("10.5.0.9", "explicit", "n1"))
        .await
        .unwrap();
    let usage = ipam.usage().await.unwrap();
    assert_eq!(usage.pools[0].in_use, 8);
    assert_eq!(usage.pools[0].reserved, 8);
    assert_eq!(usage.pools[0].free, 0);
}

#[tokio::test]
async fn wholly_reserved_blocks_are_never_claimed() {
    let store = mem();
    pool(&*store, "p", "10.6.0.0/24", 29, json!({})).await;
    reservation(&*store, "r", &["10.6.0.0/25"]).await;
    let ipam = Ipam::new(store);
    for i in 0..30 {
        let got = ipam
            .auto_assign(&req(&format!("h{i}"), &format!("n{i}"), 1))
            .await
            .unwrap();
        assert!(net("10.6.0.128/25").contains(&got.ipv4[0].addr()));
    }
}

#[tokio::test]
async fn explicit_pools_must_exist_be_enabled_and_of_the_right_family() {
    let store = mem();
    pool(&*store, "auto", "10.1.0.0/24", 29, json!({})).await;
    pool(
        &*store,
        "manual",
        "10.2.0.0/24",
        29,
        json!({ "assignmentMode": "Manual" }),
    )
    .await;
    pool(
        &*store,
        "off",
        "10.3.0.0/24",
        29,
        json!({ "disabled": true }),
    )
    .await;
    pool(&*store, "six", "fd00::/120", 122, json!({})).await;
    pool(
        &*store,
        "lb",
        "10.4.0.0/24",
        29,
        json!({ "allowedUses": ["LoadBalancer"] }),
    )
    .await;
    let ipam = Ipam::new(store);
    let with = |pools: &[&str]| {
        let mut r = req("h", "n1", 1);
        r.ipv4_pools = pools.iter().map(|s| s.to_string()).collect();
        r
    };
    let cases = [
        ("nope", "requested pool nope does not exist"),
        ("off", "requested pool off is disabled"),
        ("six", "requested pool six is not an IPv4 pool"),
        ("lb", "requested pool lb does not allow use Workload"),
    ];
    for (p, msg) in cases {
        let err = ipam.auto_assign(&with(&[p])).await.unwrap_err();
        assert_eq!(err.to_string(), msg);
    }
    for _ in 0..5 {
        let got = ipam.auto_assign(&req("auto-only", "n1", 1)).await.unwrap();
        assert!(
            net("10.1.0.0/24").contains(&got.ipv4[0].addr()),
            "manual pool not automatic"
        );
    }
    let got = ipam.auto_assign(&with(&["manual"])).await.unwrap();
    assert!(net("10.2.0.0/24").contains(&got.ipv4[0].addr()));
    let got = ipam.auto_assign(&with(&["10.1.0.0/24"])).await.unwrap();
    assert!(
        net("10.1.0.0/24").contains(&got.ipv4[0].addr()),
        "pools by CIDR"
    );
    let mut lb = with(&["lb"]);
    lb.intended_use = AllowedUse::LoadBalancer;
    let got = ipam.auto_assign(&lb).await.unwrap();
    assert!(net("10.4.0.0/24").contains(&got.ipv4[0].addr()));
}

#[tokio::test]
async fn specific_ip_assignment() {
    let store = mem();
    pool(&*store, "p", "10.7.0.0/24", 26, json!({})).await;
    let ipam = Ipam::new(store.clone());
    let got = ipam
        .assign_ip(&assign_req("10.7.0.70", "h1", "n1"))
        .await
        .unwrap();
    assert_eq!(got, net("10.7.0.70/26"));
    let block = net("10.7.0.64/26");
    let kv = store.get(&keys::affinity_key("n1", &block)).await.unwrap();
    assert!(kv.is_some(), "the block was claimed for the caller's host");
    let again = ipam
        .assign_ip(&assign_req("10.7.0.70", "h1", "n1"))
        .await
        .unwrap();
    assert_eq!(again, got, "same handle: idempotent");
    let err = ipam
        .assign_ip(&assign_req("10.7.0.70", "h2", "n2"))
        .await
        .unwrap_err();
    assert!(matches!(err, IpamError::InUse { .. }));
    assert_eq!(
        err.to_string(),
        "address 10.7.0.70 is already in use by handle h1"
    );
    let err = ipam
        .assign_ip(&assign_req("10.8.0.1", "h2", "n1"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "address 10.8.0.1 is not in any enabled pool"
    );
    // Another host may take a specific address in n1's block.
    ipam.assign_ip(&assign_req("10.7.0.71", "h3", "n2"))
        .await
        .unwrap();
    let info = ipam.ip_info(ip("10.7.0.71")).await.unwrap().unwrap();
    assert!(info.borrowed);
    assert!(ipam.check().await.unwrap().is_clean());
}

/// Two /30 blocks, claimed by a and b; a third host can only borrow.
async fn two_blocks_two_hosts(strict: bool) -> Ipam {
    let store = mem();
    pool(&*store, "p", "10.8.0.0/29", 30, json!({})).await;
    ipam_config(&*store, strict, 0).await;
    let ipam = Ipam::new(store);
    ipam.auto_assign(&req("a", "host-a", 1)).await.unwrap();
    ipam.auto_assign(&req("b", "host-b", 1)).await.unwrap();
    ipam
}

#[tokio::test]
async fn borrowing_only_without_strict_affinity() {
    let ipam = two_blocks_two_hosts(false).await;
    let got = ipam.auto_assign(&req("c", "host-c", 1)).await.unwrap();
    let info = ipam.ip_info(got.ipv4[0].addr()).await.unwrap().unwrap();
    assert!(info.borrowed);
    let usage = ipam.usage().await.unwrap();
    assert_eq!(usage.borrowed.len(), 1);
    assert_eq!(usage.borrowed[0].borrowing_node, "host-c");
    assert!(ipam.check().await.unwrap().is_clean());

    let strict = two_blocks_two_hosts(true).await;
    let err = strict
        .auto_assign(&req("c", "host-c", 1))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no free addresses in pools p");
    // The owners still fill their own blocks.
    assert_eq!(
        strict
            .auto_assign(&req("a2", "host-a", 3))
            .await
            .unwrap()
            .ipv4
            .len(),
        3
    );
}

#[tokio::test]
async fn block_cap_is_honoured() {
    let store = mem();
    pool(&*store, "p", "10.9.0.0/26", 30, json!({})).await;
    ipam_config(&*store, true, 2).await;
    let ipam = Ipam::new(store.clone());
    assert_eq!(
        ipam.auto_assign(&req("a", "n1", 8))
            .await
            .unwrap()
            .ipv4
            .len(),
        8
    );
    let err = ipam.auto_assign(&req("b", "n1", 1)).await.unwrap_err();
    assert!(matches!(err, IpamError::Exhausted { .. }));
    let affs = store
        .list(&keys::host_affinity_prefix("n1", tortie_ipam::IpFamily::V4))
        .await;
    assert_eq!(affs.unwrap().items.len(), 2);
    // The per-request cap is tighter still.
    let mut r = req("c", "n2", 5);
    r.max_blocks_per_host = Some(1);
    assert!(ipam.auto_assign(&r).await.is_err());
    assert_eq!(
        ipam.auto_assign(&req("d", "n2", 5))
            .await
            .unwrap()
            .ipv4
            .len(),
        5
    );
}

#[tokio::test]
async fn crash_recovery_recreates_the_block_of_a_confirmed_affinity() {
    let store = mem();
    pool(&*store, "p", "10.10.0.0/24", 29, json!({})).await;
    let cidr = net("10.10.0.200/29").trunc();
    let aff = BlockAffinity::host("n1", cidr, AffinityState::Confirmed);
    put(
        &*store,
        &keys::affinity_key("n1", &cidr),
        serde_json::to_value(&aff).unwrap(),
    )
    .await;
    let ipam = Ipam::new(store);
    let got = ipam.auto_assign(&req("h", "n1", 1)).await.unwrap();
    assert_eq!(got.ipv4[0].trunc(), cidr);
    assert!(ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn hot_path_cost_does_not_grow_with_the_number_of_blocks() {
    let mut costs = Vec::new();
    for others in [5usize, 150] {
        let counting = Arc::new(CountingStore::default());
        let store: Arc<dyn Store> = counting.clone();
        pool(&*store, "p", "10.0.0.0/16", 29, json!({})).await;
        let ipam = Ipam::new(store);
        ipam.auto_assign(&req("hot-0", "hot", 1)).await.unwrap();
        for i in 0..others {
            ipam.auto_assign(&req(&format!("o{i}"), &format!("other-{i}"), 1))
                .await
                .unwrap();
        }
        counting.reset();
        ipam.auto_assign(&req("hot-1", "hot", 1)).await.unwrap();
        costs.push(counting.counts());
    }
    assert_eq!(
        costs[0], costs[1],
        "(gets, lists, listed items, writes) per allocation"
    );
    // gets: IPAMConfiguration, the block, the handle; lists: reservations, pools, the host's
    // own affinities (1 pool + 1 affinity listed); writes: handle create, block CAS.
    assert_eq!(costs[0], (3, 3, 2, 2));
}

#[tokio::test]
async fn reclaims_long_empty_blocks_of_other_hosts() {
    let store = mem();
    pool(&*store, "p", "10.11.0.0/29", 30, json!({})).await;
    ipam_config(&*store, true, 0).await;
    let (ipam, clock) = ipam_with_clock(store);
    ipam.auto_assign(&req("a", "host-a", 1)).await.unwrap();
    ipam.auto_assign(&req("b", "host-b", 1)).await.unwrap();
    ipam.release_by_handle("a").await.unwrap();
    assert!(
        ipam.auto_assign(&req("c", "host-c", 1)).await.is_err(),
        "claim too recent"
    );
    clock.advance(tortie_ipam::EMPTY_BLOCK_MIN_RECLAIM_AGE);
    let got = ipam.auto_assign(&req("c", "host-c", 1)).await.unwrap();
    let info = ipam.ip_info(got.ipv4[0].addr()).await.unwrap().unwrap();
    assert_eq!(info.block_affinity.as_deref(), Some("host:host-c"));
    assert!(ipam.check().await.unwrap().is_clean());
}

#[tokio::test]
async fn blocks_of_an_older_block_size_are_not_overlapped() {
    let store = mem();
    // A pool re-created with /29 blocks over a /28 block left by its /28 predecessor.
    pool(&*store, "p", "10.12.0.0/27", 29, json!({})).await;
    let old = tortie_ipam::model::AllocationBlock::new(net("10.12.0.0/28"), None, None);
    let key = keys::block_key(&old.cidr);
    put(&*store, &key, serde_json::to_value(&old).unwrap()).await;
    ipam_config(&*store, true, 0).await;
    let ipam = Ipam::new(store);
    for i in 0..16 {
        let got = ipam
            .auto_assign(&req(&format!("h{i}"), "n1", 1))
            .await
            .unwrap();
        assert!(net("10.12.0.16/28").contains(&got.ipv4[0].addr()));
    }
    assert!(ipam.auto_assign(&req("more", "n1", 1)).await.is_err());
}
