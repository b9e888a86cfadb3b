//! The agent programming a real kernel: two nodes as network namespaces joined by a veth
//! pair, a SQLite store in a temp dir, IPAM records written by tortie-ipam itself, and the
//! agent of node 1 running in-process with `--host-netns`.
//!
//! Needs root (skips otherwise; fails under `CI=true`). Everything happens inside the
//! namespaces this test creates, named `ta<pid>-…`, and removed by a guard even on panic;
//! no route is added to the root namespace and no packet is sent.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::StreamExt;
use ipnet::IpNet;
use rtnetlink::MulticastGroup;
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use tortie_agent::{Agent, AgentConfig, NetlinkDataplane, ROUTE_PROTOCOL};
use tortie_ipam::{AutoAssignRequest, Ipam, keys};
use tortie_netlink::NetNs;
use tortie_store::sqlite::SqliteStore;
use tortie_store::{DatastoreUrl, Store};

const WAIT: Duration = Duration::from_secs(15);
const N1_V4: &str = "198.18.0.11/24";
const N2_V4: &str = "198.18.0.12/24";
const N1_V6: &str = "fd00:198:18::11/64";
const N2_V6: &str = "fd00:198:18::12/64";

fn config(netns: &str, file: &std::path::Path) -> AgentConfig {
    let mut c = AgentConfig::new("n1", DatastoreUrl::File(file.to_path_buf()));
    c.node_ip = Some(N1_V4.parse().unwrap());
    c.node_ipv6 = Some(N1_V6.parse().unwrap());
    c.host_netns = Some(PathBuf::from(format!("/run/netns/{netns}")));
    c.health_listen = "127.0.0.1:0".parse().unwrap();
    c.resync_interval = Duration::from_secs(2);
    c
}

fn agent_dataplane(netns: &str) -> Box<NetlinkDataplane> {
    let path = PathBuf::from(format!("/run/netns/{netns}"));
    Box::new(NetlinkDataplane::open(Some(&path)).expect("open dataplane"))
}

/// Assigns one IPv4 and one IPv6 address to `host` from the pools; returns their blocks and
/// the IPv4 address.
async fn assign(ipam: &Ipam, host: &str) -> (IpNet, IpNet, std::net::IpAddr) {
    let req = AutoAssignRequest {
        num_v4: 1,
        num_v6: 1,
        handle: format!("k8s-pod-network.{host}-c1"),
        hostname: host.to_string(),
        ..AutoAssignRequest::default()
    };
    let got = ipam.auto_assign(&req).await.expect("auto assign");
    (got.ipv4[0].trunc(), got.ipv6[0].trunc(), got.ipv4[0].addr())
}

fn ip_forward(ns: &str) -> String {
    let ns = NetNs::named(ns).unwrap();
    tortie_netlink::sysctl::read_sysctl(&ns, "net/ipv4/ip_forward").unwrap()
}

fn tagged(ns: &str) -> Vec<String> {
    let proto = ROUTE_PROTOCOL.to_string();
    routes(ns, &["proto", &proto])
}

async fn readiness(agent: &Agent) -> (u16, String) {
    let (status, body) = http_get(agent.health_addr(), "/readiness").await;
    (status, body.trim().to_string())
}

/// Route notifications (add/delete) seen in a namespace from the moment of subscription.
struct RouteMonitor {
    messages: futures::channel::mpsc::UnboundedReceiver<(
        NetlinkMessage<RouteNetlinkMessage>,
        rtnetlink::sys::SocketAddr,
    )>,
    _conn: tokio::task::JoinHandle<()>,
}

impl RouteMonitor {
    /// Subscribes inside `netns`; the subscription is active when this returns.
    fn start(netns: &str) -> Self {
        let ns = NetNs::named(netns).expect("open netns");
        let rt = tokio::runtime::Handle::current();
        let (conn, _handle, messages) = ns
            .run(|| {
                let _guard = rt.enter();
                rtnetlink::new_multicast_connection(&[
                    MulticastGroup::Ipv4Route,
                    MulticastGroup::Ipv6Route,
                ])
            })
            .expect("enter netns")
            .expect("multicast socket");
        RouteMonitor {
            messages,
            _conn: tokio::spawn(conn),
        }
    }

    /// Notifications about tortie-tagged routes received so far, as text.
    async fn tagged_events(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        // Drain what has arrived; each wait is short and the count is bounded.
        for _ in 0..10_000 {
            let next = tokio::time::timeout(Duration::from_millis(200), self.messages.next());
            let Ok(Some((msg, _))) = next.await else {
                break;
            };
            let (verb, route) = match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(r)) => ("new", r),
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelRoute(r)) => ("del", r),
                _ => continue,
            };
            if u8::from(route.header.protocol) == ROUTE_PROTOCOL {
                out.push(format!(
                    "{verb} {:?}",
                    tortie_netlink::route::Route::from_message(&route)
                ));
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_follow_the_datastore_in_a_real_namespace() {
    if !root_or_skip("routes_follow_the_datastore_in_a_real_namespace") {
        return;
    }
    let mut guard = NetnsGuard::new("rt");
    let n1 = guard.add("n1");
    let n2 = guard.add("n2");
    link_nodes(&n1, &[N1_V4, N1_V6], &n2, &[N2_V4, N2_V6]);

    // Routes that are not the agent's: an operator's static route, a CNI-style pod route
    // (proto 80, dev), and a stale agent route from an "earlier run".
    ip(&[
        "-n",
        &n1,
        "route",
        "add",
        "10.77.0.0/24",
        "via",
        "198.18.0.12",
    ]);
    ip(&[
        "-n",
        &n1,
        "route",
        "add",
        "10.244.250.5/32",
        "dev",
        "eth0",
        "proto",
        "80",
        "scope",
        "link",
    ]);
    let proto = ROUTE_PROTOCOL.to_string();
    ip(&[
        "-n",
        &n1,
        "route",
        "add",
        "10.99.0.0/26",
        "via",
        "198.18.0.12",
        "proto",
        &proto,
    ]);
    let foreign_before = routes(&n1, &[]);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("store.db");
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&file).await.unwrap());
    pool(store.as_ref(), "v4", "10.244.0.0/16", 26).await;
    pool(store.as_ref(), "v6", "fd00:10:244::/56", 122).await;
    node(store.as_ref(), "n2", N2_V4, N2_V6).await;
    let ipam = Ipam::new(store.clone());
    let (own_v4, own_v6, _) = assign(&ipam, "n1").await;
    let (n2_v4, n2_v6, n2_pod_ip) = assign(&ipam, "n2").await;

    // Start with the datastore listing held back.
    let (gated, gate) = gated(store.clone());
    let agent = Agent::start(config(&n1, &file), gated, agent_dataplane(&n1))
        .await
        .unwrap();
    wait_for("registration", WAIT, || async {
        let (s, body) = readiness(&agent).await;
        (s == 503 && body == "waiting for datastore sync").then_some(())
    })
    .await;
    assert_eq!(
        tagged(&n1),
        ["10.99.0.0/26 via 198.18.0.12 dev eth0"],
        "nothing may change before InSync"
    );
    assert_eq!(routes(&n1, &[]), foreign_before);
    assert_eq!(ip_forward(&n1), "0", "no sysctl before InSync");

    gate.send_replace(true);
    wait_for("ready", WAIT, || async {
        let (s, _) = readiness(&agent).await;
        (s == 200).then_some(())
    })
    .await;
    let mut want = vec![
        format!("blackhole {own_v4}"),
        format!("{n2_v4} via 198.18.0.12 dev eth0"),
        format!("blackhole {own_v6} dev lo metric 1024 pref medium"),
        format!("{n2_v6} via fd00:198:18::12 dev eth0 metric 1024 pref medium"),
    ];
    want.sort();
    assert_eq!(tagged(&n1), want);
    let all = routes(&n1, &[]);
    for r in [
        "10.77.0.0/24 via 198.18.0.12 dev eth0",
        "10.244.250.5 dev eth0 proto 80 scope link",
    ] {
        assert!(all.contains(&r.to_string()), "{r} must stay; have {all:?}");
    }
    assert_eq!(ip_forward(&n1), "1", "ip_forward set in the node namespace");

    // Deleting node 2's IPv4 affinity removes its block route; the address node 2 still
    // holds in the now unaffined block keeps a /32 to node 2.
    store
        .delete(&keys::affinity_key("n2", &n2_v4), None)
        .await
        .unwrap();
    let gone = format!("{n2_v4} via 198.18.0.12 dev eth0");
    wait_for("route to n2's block removed", WAIT, || {
        let gone = gone.clone();
        let n1 = n1.clone();
        async move { (!tagged(&n1).contains(&gone)).then_some(()) }
    })
    .await;
    want.retain(|r| *r != gone);
    want.push(format!("{n2_pod_ip} via 198.18.0.12 dev eth0"));
    want.sort();
    assert_eq!(tagged(&n1), want);

    // Restart: routes stay put, nothing is deleted or re-added in between.
    let mut monitor = RouteMonitor::start(&n1);
    let before: BTreeMap<String, ()> = routes(&n1, &[]).into_iter().map(|r| (r, ())).collect();
    agent.shutdown().await.unwrap();
    assert_eq!(
        routes(&n1, &[])
            .into_iter()
            .map(|r| (r, ()))
            .collect::<BTreeMap<_, _>>(),
        before,
        "shutdown must leave every route"
    );
    let again = Agent::start(config(&n1, &file), store.clone(), agent_dataplane(&n1))
        .await
        .unwrap();
    wait_for("ready after restart", WAIT, || async {
        let (s, _) = readiness(&again).await;
        (s == 200).then_some(())
    })
    .await;
    assert_eq!(
        routes(&n1, &[])
            .into_iter()
            .map(|r| (r, ()))
            .collect::<BTreeMap<_, _>>(),
        before
    );
    let events = monitor.tagged_events().await;
    assert!(events.is_empty(), "restart touched routes: {events:?}");
    let (_, metrics) = http_get(again.health_addr(), "/metrics").await;
    for op in ["add", "replace", "delete"] {
        let line = format!("tortie_agent_route_changes_total{{op=\"{op}\"}} 0");
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }

    // Control for the monitor, and drift repair: a tagged route added behind the agent's
    // back is seen by the monitor and swept by the periodic resync.
    ip(&[
        "-n",
        &n1,
        "route",
        "add",
        "10.98.0.0/26",
        "via",
        "198.18.0.12",
        "proto",
        &proto,
    ]);
    let events = monitor.tagged_events().await;
    assert_eq!(events.len(), 1, "monitor works: {events:?}");
    wait_for("resync sweeps the stray route", WAIT, || {
        let (n1, want) = (n1.clone(), want.clone());
        async move { (tagged(&n1) == want).then_some(()) }
    })
    .await;
    again.shutdown().await.unwrap();
    drop(guard);
}

/// The routes manager over the real dataplane: thousands of ops go out in batches, a route
/// whose gateway no interface reaches fails on its own (named, the others installed), the next
/// apply lists again, and later applies change only what changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_apply_reports_the_failing_route_and_installs_the_others() {
    use tortie_agent::NodeDataplane;
    use tortie_agent::dataplane::DataplaneError;
    use tortie_agent::route::{KernelRoute, RouteOp, RouteSet, RouteTarget, default_metric};
    use tortie_agent::route_manager::{ApplyOutcome, RouteManager};

    if !root_or_skip("batched_apply_reports_the_failing_route_and_installs_the_others") {
        return;
    }
    let mut guard = NetnsGuard::new("rb");
    let n1 = guard.add("n1");
    let n2 = guard.add("n2");
    link_nodes(&n1, &[N1_V4, N1_V6], &n2, &[N2_V4, N2_V6]);
    ip(&[
        "-n",
        &n1,
        "route",
        "add",
        "10.77.0.0/24",
        "via",
        "198.18.0.12",
    ]);
    let proto = ROUTE_PROTOCOL.to_string();
    ip(&[
        "-n",
        &n1,
        "route",
        "add",
        "10.99.0.0/26",
        "via",
        "198.18.0.12",
        "proto",
        &proto,
    ]);
    let mut dp = agent_dataplane(&n1);
    let gw4 = RouteTarget::Via("198.18.0.12".parse().unwrap());
    let gw6 = RouteTarget::Via("fd00:198:18::12".parse().unwrap());
    let v4 = |i: usize| -> IpNet {
        format!("10.200.{}.{}/28", i / 16, (i % 16) * 16)
            .parse()
            .unwrap()
    };
    let mut desired: RouteSet = (0..3000).map(|i| (v4(i), gw4)).collect();
    for i in 0..50 {
        desired.insert(format!("fd00:200:{i}::/64").parse().unwrap(), gw6);
    }
    desired.insert("10.201.0.0/26".parse().unwrap(), RouteTarget::Blackhole);
    let bad = v4(1500);
    desired.insert(bad, RouteTarget::Via("203.0.113.1".parse().unwrap()));

    let mut m = RouteManager::new();
    m.on_update(desired.clone());
    m.on_in_sync();
    let err = m.apply(dp.as_mut()).await.unwrap_err();
    assert_eq!(err.failures.len(), 1, "{err}");
    match &err.failures[0] {
        DataplaneError::Op { op, source } => {
            assert!(
                matches!(op, RouteOp::Add { dst, .. } if *dst == bad),
                "{op}"
            );
            assert_eq!(source.errno(), Some(101), "ENETUNREACH: {source}");
        }
        other => panic!("{other}"),
    }
    assert!(
        err.to_string()
            .contains("add 10.200.93.192/28 via 203.0.113.1"),
        "{err}"
    );
    // Everything else went in, the stale route was swept, the operator's route stayed.
    assert_eq!(err.report.done.len(), desired.len() - 1 + 1);
    async fn tagged_now(dp: &mut NetlinkDataplane) -> Vec<KernelRoute> {
        let mut l = dp.list_owned().await.unwrap();
        l.sort();
        l
    }
    let want = |set: &RouteSet| -> Vec<KernelRoute> {
        let mut v: Vec<KernelRoute> = set
            .iter()
            .map(|(dst, target)| KernelRoute {
                dst: *dst,
                target: *target,
                metric: default_metric(dst),
            })
            .collect();
        v.sort();
        v
    };
    let mut without_bad = desired.clone();
    without_bad.remove(&bad);
    assert_eq!(tagged_now(dp.as_mut()).await, want(&without_bad));
    assert!(
        routes(&n1, &[])
            .iter()
            .any(|r| r == "10.77.0.0/24 via 198.18.0.12 dev eth0")
    );

    // Fixed: the next apply is a full one (after a failure) and adds just that route.
    m.on_changes([(bad, Some(gw4))]);
    desired.insert(bad, gw4);
    let ApplyOutcome::Applied(r) = m.apply(dp.as_mut()).await.unwrap() else {
        panic!("not applied");
    };
    assert!(r.full);
    assert_eq!(r.done.len(), 1);
    assert_eq!(tagged_now(dp.as_mut()).await, want(&desired));

    // Then only the changes: 1000 withdrawn, 10 moved to another next hop.
    let other = RouteTarget::Via("198.18.0.13".parse().unwrap());
    let mut changes = Vec::new();
    for i in 0..1000 {
        changes.push((v4(i), None));
        desired.remove(&v4(i));
    }
    for i in 2000..2010 {
        changes.push((v4(i), Some(other)));
        desired.insert(v4(i), other);
    }
    m.on_changes(changes);
    let ApplyOutcome::Applied(r) = m.apply(dp.as_mut()).await.unwrap() else {
        panic!("not applied");
    };
    assert!(!r.full);
    assert_eq!(r.done.len(), 1010);
    assert_eq!(tagged_now(dp.as_mut()).await, want(&desired));
    drop(guard);
}
