//! Against the kernel, inside namespaces this test creates (root only; under `CI=true` a
//! missing root is a failure, not a skip). Nothing is configured in the root namespace.

use std::process::Command;

use tortie_netlink::addr::{add_address, list_addresses};
use tortie_netlink::batch::RouteSocket;
use tortie_netlink::link::{
    LinkChange, VethPair, create_veth, delete_link, format_mac, link_by_name, list_links, set_link,
};
use tortie_netlink::route::{
    Route, RouteFilter, RouteKind, RouteRequest, add_route, delete_route, list_routes,
    replace_route,
};
use tortie_netlink::sysctl::{read_sysctl, write_sysctls};
use tortie_netlink::{NetNs, WORKLOAD_ROUTE_PROTOCOL, netlink_handle_in};

fn is_root() -> bool {
    tortie_netlink::testing::root_or_skip("creating network namespaces")
}

/// Deletes the namespaces it created, by name, even on panic.
struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: &str) -> NetNs {
        let st = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .expect("run ip");
        assert!(st.success(), "ip netns add {name}");
        self.0.push(name.to_string());
        NetNs::named(name).expect("open netns")
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

#[tokio::test]
async fn veth_addresses_routes_and_sysctls() {
    if !is_root() {
        return;
    }
    let pid = std::process::id();
    let mut guard = Namespaces(Vec::new());
    let host = guard.add(&format!("tn{pid}-host"));
    let pod = guard.add(&format!("tn{pid}-pod"));
    let hh = netlink_handle_in(&host).expect("host handle");
    let ph = netlink_handle_in(&pod).expect("pod handle");

    let pair = VethPair {
        name: "calitest0".to_string(),
        peer_name: "eth0".to_string(),
        peer_netns: &pod,
        mtu: Some(1440),
        mac: Some([0xee; 6]),
        peer_mac: None,
    };
    create_veth(&hh, &pair).await.expect("create veth");
    let e = create_veth(&hh, &pair).await.expect_err("second create");
    assert!(e.is_exists(), "{e:?}");

    let h = link_by_name(&hh, "calitest0")
        .await
        .expect("get")
        .expect("host end exists");
    assert_eq!(
        h.mac.map(|m| format_mac(&m)).as_deref(),
        Some("ee:ee:ee:ee:ee:ee")
    );
    assert_eq!(h.mtu, 1440);
    assert_eq!(h.kind.as_deref(), Some("veth"));
    assert!(link_by_name(&hh, "eth0").await.expect("get").is_none());
    let p = link_by_name(&ph, "eth0")
        .await
        .expect("get")
        .expect("peer in the pod namespace");
    assert_eq!(p.mtu, 1440);
    assert!(
        list_links(&ph)
            .await
            .expect("list")
            .iter()
            .any(|l| l.name == "lo")
    );

    set_link(
        &hh,
        h.index,
        &LinkChange {
            up: Some(true),
            ..Default::default()
        },
    )
    .await
    .expect("up");
    set_link(
        &ph,
        p.index,
        &LinkChange {
            up: Some(true),
            ..Default::default()
        },
    )
    .await
    .expect("up");

    let ip: ipnet::IpNet = "10.244.9.5/32".parse().expect("net");
    add_address(&ph, p.index, ip, false).await.expect("addr");
    add_address(&ph, p.index, ip, false)
        .await
        .expect("addr again is fine");
    let v6: ipnet::IpNet = "fd00:10:244::5/128".parse().expect("net");
    write_sysctls(
        &pod,
        &[("net/ipv6/conf/eth0/accept_dad".into(), "0".into())],
    )
    .expect("dad");
    add_address(&ph, p.index, v6, true).await.expect("v6 addr");
    let addrs = list_addresses(&ph, p.index).await.expect("list");
    assert!(addrs.contains(&ip) && addrs.contains(&v6), "{addrs:?}");

    let gw = Route::via_onlink(
        "0.0.0.0/0".parse().expect("net"),
        "169.254.1.1".parse().expect("ip"),
        p.index,
    );
    add_route(&ph, &gw).await.expect("default route");
    let host_route = Route::device(ip, h.index).with_protocol(WORKLOAD_ROUTE_PROTOCOL);
    add_route(&hh, &host_route).await.expect("host route");
    assert!(
        add_route(&hh, &host_route)
            .await
            .expect_err("dup")
            .is_exists()
    );
    replace_route(&hh, &host_route).await.expect("replace");
    let bh = Route::blackhole("10.244.9.0/26".parse().expect("net")).with_protocol(81);
    add_route(&hh, &bh).await.expect("blackhole");

    let ours = list_routes(&hh, &RouteFilter::protocol(WORKLOAD_ROUTE_PROTOCOL))
        .await
        .expect("list");
    assert_eq!(ours, vec![host_route.clone()]);
    let all = list_routes(&hh, &RouteFilter::default())
        .await
        .expect("list");
    assert!(
        all.iter().any(|r| r.kind == RouteKind::Blackhole),
        "{all:?}"
    );
    let pod_routes = list_routes(
        &ph,
        &RouteFilter {
            ipv6: Some(false),
            ..Default::default()
        },
    )
    .await
    .expect("list");
    assert!(pod_routes.contains(&gw), "{pod_routes:?}");

    write_sysctls(
        &host,
        &[("net/ipv4/conf/calitest0/proxy_arp".into(), "1".into())],
    )
    .expect("sysctl");
    assert_eq!(
        read_sysctl(&host, "net/ipv4/conf/calitest0/proxy_arp").expect("read"),
        "1"
    );

    assert!(delete_route(&hh, &bh).await.expect("del"));
    assert!(!delete_route(&hh, &bh).await.expect("del again"));
    assert!(delete_link(&hh, "calitest0").await.expect("del link"));
    assert!(!delete_link(&hh, "calitest0").await.expect("del again"));
    assert!(
        link_by_name(&ph, "eth0").await.expect("get").is_none(),
        "peer went too"
    );
    assert!(
        list_routes(&hh, &RouteFilter::protocol(WORKLOAD_ROUTE_PROTOCOL))
            .await
            .expect("list")
            .is_empty(),
        "the device route went with the device"
    );
}

/// Runs `ip -n NS ARGS…`, which must succeed.
fn ip_in(ns: &str, args: &[&str]) {
    let st = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .status()
        .expect("run ip");
    assert!(st.success(), "ip -n {ns} {args:?}");
}

#[tokio::test]
async fn batched_route_changes_report_each_failure_on_its_route() {
    if !is_root() {
        return;
    }
    let pid = std::process::id();
    let mut guard = Namespaces(Vec::new());
    let name = format!("tn{pid}-batch");
    let ns = guard.add(&name);
    // A veth pair inside the namespace (no dummy driver everywhere) gives 198.18.0.0/24 a
    // link.
    ip_in(
        &name,
        &["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
    );
    ip_in(&name, &["addr", "add", "198.18.0.1/24", "dev", "v0"]);
    ip_in(&name, &["link", "set", "v0", "up"]);
    ip_in(&name, &["link", "set", "v1", "up"]);
    let h = netlink_handle_in(&ns).expect("handle");
    let ours = || async {
        list_routes(&h, &RouteFilter::protocol(81))
            .await
            .expect("list")
    };

    let gw: std::net::IpAddr = "198.18.0.2".parse().expect("ip");
    let route = |i: usize| {
        let dst = ipnet::IpNet::new(
            std::net::Ipv4Addr::new(10, (i >> 12) as u8, (i >> 4) as u8, (i << 4) as u8).into(),
            28,
        )
        .expect("net");
        Route::via(dst, gw).with_protocol(81)
    };
    // 1000 adds, 64 per sendmsg. In the middle: a gateway no interface reaches, and a
    // duplicate of an earlier route.
    let mut reqs: Vec<RouteRequest> = (0..1000).map(|i| RouteRequest::Add(route(i))).collect();
    let unreachable =
        Route::via(route(500).dst, "203.0.113.1".parse().expect("ip")).with_protocol(81);
    reqs[500] = RouteRequest::Add(unreachable);
    reqs[700] = RouteRequest::Add(route(10));
    let mut sock = RouteSocket::open(&ns).expect("socket");
    assert!(sock.window() >= 256, "window {}", sock.window());
    sock.set_window(64);
    let results = sock.execute(&reqs);
    assert_eq!(results.len(), 1000);
    for (i, r) in results.iter().enumerate() {
        match i {
            500 => {
                let e = r.as_ref().expect_err("unreachable gateway");
                assert_eq!(e.errno(), Some(101), "ENETUNREACH: {e}");
                assert!(e.to_string().contains("203.0.113.1"), "{e}");
            }
            700 => assert!(r.as_ref().expect_err("duplicate").is_exists()),
            _ => assert!(r.is_ok(), "route {i}: {r:?}"),
        }
    }
    let listed = ours().await;
    assert_eq!(listed.len(), 998);
    assert!(!listed.iter().any(|r| r.dst == route(500).dst));

    // Replace a few, delete everything (the two that never went in are already gone: fine).
    let other: std::net::IpAddr = "198.18.0.3".parse().expect("ip");
    let replaced: Vec<RouteRequest> = (0..3)
        .map(|i| RouteRequest::Replace(Route::via(route(i).dst, other).with_protocol(81)))
        .collect();
    assert!(sock.execute(&replaced).iter().all(Result::is_ok));
    let listed = ours().await;
    assert_eq!(
        listed.iter().filter(|r| r.gateway == Some(other)).count(),
        3
    );
    let deletes: Vec<RouteRequest> = listed.into_iter().map(RouteRequest::Delete).collect();
    let mut deletes = deletes;
    deletes.push(RouteRequest::Delete(route(500)));
    assert!(sock.execute(&deletes).iter().all(Result::is_ok));
    assert!(ours().await.is_empty());

    // Full windows against the real receive buffer: no answer may be lost.
    sock.set_window(usize::MAX);
    let many: Vec<RouteRequest> = (0..20_000).map(|i| RouteRequest::Add(route(i))).collect();
    let results = sock.execute(&many);
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed, first {:?}",
        failed.len(),
        failed[0]
    );
    assert_eq!(ours().await.len(), 20_000);
    let gone: Vec<RouteRequest> = (0..20_000)
        .map(|i| RouteRequest::Delete(route(i)))
        .collect();
    assert!(sock.execute(&gone).iter().all(Result::is_ok));
    assert!(ours().await.is_empty());
}

/// The namespace's interfaces with their addresses, and a notification when one changes.
#[tokio::test]
async fn interface_addresses_and_their_changes() {
    use futures::StreamExt as _;
    use tortie_netlink::monitor::{interface_events, interfaces};
    if !is_root() {
        return;
    }
    let pid = std::process::id();
    let mut guard = Namespaces(Vec::new());
    let name = format!("tn{pid}-mon");
    let ns = guard.add(&name);
    let (h, mut events) = interface_events(&ns).expect("subscribe");
    ip_in(
        &name,
        &["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
    );
    ip_in(&name, &["addr", "add", "198.18.0.1/24", "dev", "v0"]);
    ip_in(
        &name,
        &["addr", "add", "fd00:198:18::1/64", "dev", "v0", "nodad"],
    );
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), events.next())
        .await
        .expect("a notification within 5 s");
    assert!(got.is_some(), "the event stream ended");
    let now = interfaces(&h).await.expect("interfaces");
    let v0 = now.get("v0").expect("v0 listed");
    for want in ["198.18.0.1", "fd00:198:18::1"] {
        let ip: std::net::IpAddr = want.parse().expect("ip");
        assert!(v0.contains(&ip), "{want} not in {v0:?}");
    }
    assert_eq!(now.get("v1"), Some(&Default::default()), "{now:?}");
    assert!(now.contains_key("lo"), "{now:?}");
    // Drain (bounded), then a removal is noticed too.
    for _ in 0..100 {
        let next = tokio::time::timeout(std::time::Duration::from_millis(100), events.next());
        if !matches!(next.await, Ok(Some(_))) {
            break;
        }
    }
    ip_in(&name, &["addr", "del", "198.18.0.1/24", "dev", "v0"]);
    let got = tokio::time::timeout(std::time::Duration::from_secs(5), events.next())
        .await
        .expect("a notification of the removal");
    assert!(got.is_some());
    let now = interfaces(&h).await.expect("interfaces");
    assert!(!now["v0"].contains(&"198.18.0.1".parse::<std::net::IpAddr>().expect("ip")));
}
