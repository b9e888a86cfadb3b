//! `tortie-cni` driven exactly as a runtime drives it, against real namespaces (root only).
//! Each test builds its own node and pod namespaces (`tc<pid>-<tag>-…`) and a SQLite store
//! in a temp dir; the guard removes the namespaces even on panic.

mod netlab;
mod support;

use std::net::IpAddr;

use ipnet::IpNet;
use netlab::*;
use serde_json::{Value, json};
use support::{apply, pool_yaml, sqlite};
use tortie_api::Kind;
use tortie_cni::naming::host_veth_name;
use tortie_ipam::Ipam;
use tortie_netlink::NetNs;
use tortie_netlink::sysctl::read_sysctl;
use tortie_store::Store;

const NODE: &str = "node-1";

fn addrs_of(result: &Value) -> Vec<IpNet> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|ip| {
            ip["address"]
                .as_str()
                .expect("address")
                .parse()
                .expect("net")
        })
        .collect()
}

fn v4(nets: &[IpNet]) -> IpAddr {
    nets.iter().find(|n| n.addr().is_ipv4()).expect("v4").addr()
}

fn v6(nets: &[IpNet]) -> IpAddr {
    nets.iter().find(|n| n.addr().is_ipv6()).expect("v6").addr()
}

async fn wep(store: &dyn Store, ns: &str, pod: &str) -> Option<Value> {
    let name = format!("node--1-k8s-{}-eth0", pod.replace('-', "--"));
    let kv = store
        .get(&Kind::WorkloadEndpoint.key(Some(ns), &name))
        .await
        .expect("get wep")?;
    Some(serde_json::from_slice(&kv.value).expect("json"))
}

async fn assert_ipam_clean(store: &std::sync::Arc<dyn Store>) {
    let report = Ipam::new(store.clone()).check().await.expect("ipam check");
    assert!(report.is_clean(), "{report:?}");
}

async fn dual_stack_store(dir: &std::path::Path) -> (std::sync::Arc<dyn Store>, String) {
    let (store, url) = sqlite(dir).await;
    apply(store.as_ref(), &pool_yaml("v4", "10.244.0.0/16", 26)).await;
    apply(store.as_ref(), &pool_yaml("v6", "'fd00:10:244::/56'", 122)).await;
    (store, url)
}

#[tokio::test]
async fn two_pods_are_wired_like_calico_and_reach_each_other() {
    if !is_root() {
        return;
    }
    let mut topo = Topology::new("wire");
    let p1 = topo.pod("p1");
    let p2 = topo.pod("p2");
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, url) = dual_stack_store(dir.path()).await;
    // p1 has a Pod record (labels, service account, a named port); p2 only CNI args labels.
    apply(
        store.as_ref(),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, namespace: shop, labels: {app: web}}\nspec:\n  serviceAccountName: web-sa\n  containers: [{name: c, ports: [{name: http, containerPort: 80}]}]\n",
    )
    .await;
    let conf = netconf(&url, NODE, true);
    let mut conf2 = conf.clone();
    conf2["args"] = json!({"cni": {"labels": [{"key": "app", "value": "db"}]}});

    let add1 = Call::k8s("ADD", &conf, &topo.node, &p1, "shop", "web-1", "cid1");
    let (ok, r1, err) = add1.run();
    assert!(ok, "{r1} {err}");
    let add2 = Call::k8s("ADD", &conf2, &topo.node, &p2, "shop", "db-1", "cid2");
    let (ok, r2, err) = add2.run();
    assert!(ok, "{r2} {err}");

    // Result.
    let veth1 = host_veth_name(Some(("shop", "web-1")), "cid1");
    assert_eq!(r1["cniVersion"], "1.0.0");
    assert_eq!(r1["interfaces"][0]["name"], veth1.as_str());
    assert_eq!(r1["interfaces"][0]["mac"], "ee:ee:ee:ee:ee:ee");
    assert_eq!(r1["interfaces"][1]["name"], "eth0");
    assert_eq!(r1["interfaces"][1]["sandbox"], Topology::netns_path(&p1));
    assert_eq!(r1["ips"][0]["interface"], 1);
    assert_eq!(
        r1["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": "169.254.1.1"})
    );
    let ips1 = addrs_of(&r1);
    let ips2 = addrs_of(&r2);
    assert_eq!(ips1.len(), 2, "{r1}");
    assert!(
        ips1[0].to_string().starts_with("10.244.") && ips1[0].prefix_len() == 32,
        "{ips1:?}"
    );
    assert!(
        ips1[1].to_string().starts_with("fd00:10:244:") && ips1[1].prefix_len() == 128,
        "{ips1:?}"
    );

    // Host side: name, MAC, MTU, up, proxy ARP, routes.
    let link = &ip_json(&["-n", &topo.node, "link", "show", &veth1])[0];
    assert_eq!(link["address"], "ee:ee:ee:ee:ee:ee");
    assert_eq!(link["mtu"], 1450);
    assert!(
        link["flags"]
            .as_array()
            .expect("flags")
            .contains(&json!("UP")),
        "{link}"
    );
    let node_ns = NetNs::named(&topo.node).expect("node ns");
    let key = |s: &str| format!("net/ipv4/conf/{veth1}/{s}");
    assert_eq!(
        read_sysctl(&node_ns, &key("proxy_arp")).expect("sysctl"),
        "1"
    );
    assert_eq!(
        read_sysctl(&node_ns, &format!("net/ipv6/conf/{veth1}/proxy_ndp")).expect("sysctl"),
        "1"
    );
    let routes = workload_routes(&topo.node);
    for ip in &ips1 {
        assert!(
            routes.contains(&format!("{} {veth1}", ip.addr())),
            "{routes:?}"
        );
    }
    let r = &ip_json(&["-n", &topo.node, "route", "show", &ips1[0].to_string()])[0];
    assert_eq!(r["scope"], "link", "{r}");

    // Pod side: /32 and /128 on eth0, default routes via the link-local gateways.
    let addr = ip_json(&["-n", &p1, "addr", "show", "eth0"]);
    let shown: Vec<String> = addr[0]["addr_info"]
        .as_array()
        .expect("addr_info")
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
        .collect();
    for ip in &ips1 {
        assert!(shown.contains(&ip.to_string()), "{shown:?}");
    }
    assert_eq!(addr[0]["mtu"], 1450);
    let d4 = &ip_json(&["-n", &p1, "route", "show", "default"])[0];
    assert_eq!(d4["gateway"], "169.254.1.1", "{d4}");
    let d6 = &ip_json(&["-n", &p1, "-6", "route", "show", "default"])[0];
    assert_eq!(d6["gateway"], "fe80::ecee:eeff:feee:eeee", "{d6}");

    // The WorkloadEndpoint.
    let w1 = wep(store.as_ref(), "shop", "web-1").await.expect("wep p1");
    assert_eq!(w1["spec"]["node"], NODE);
    assert_eq!(w1["spec"]["interfaceName"], veth1.as_str());
    assert_eq!(w1["spec"]["containerID"], "cid1");
    assert_eq!(w1["spec"]["mac"], r1["interfaces"][1]["mac"]);
    assert_eq!(
        w1["spec"]["ipNetworks"],
        json!(ips1.iter().map(|n| n.to_string()).collect::<Vec<_>>())
    );
    assert_eq!(
        w1["spec"]["profiles"],
        json!(["kns.shop", "ksa.shop.web-sa"])
    );
    assert_eq!(w1["spec"]["ports"][0]["name"], "http");
    assert_eq!(w1["metadata"]["labels"]["app"], "web");
    assert_eq!(
        w1["metadata"]["labels"]["projectcalico.org/serviceaccount"],
        "web-sa"
    );
    let w2 = wep(store.as_ref(), "shop", "db-1").await.expect("wep p2");
    assert_eq!(w2["metadata"]["labels"]["app"], "db");
    assert_eq!(
        w2["metadata"]["labels"]["projectcalico.org/namespace"],
        "shop"
    );

    // Traffic between the pods, IPv4 and IPv6, stays inside the namespaces.
    tcp_reaches(&p1, &p2, v4(&ips2), 8080).expect("p1 -> p2 over IPv4");
    tcp_reaches(&p2, &p1, v4(&ips1), 8081).expect("p2 -> p1 over IPv4");
    tcp_reaches(&p1, &p2, v6(&ips2), 8082).expect("p1 -> p2 over IPv6");

    // CHECK against the result.
    let mut check_conf = conf.clone();
    check_conf["prevResult"] = r1.clone();
    let (ok, out, err) = Call::k8s(
        "CHECK",
        &check_conf,
        &topo.node,
        &p1,
        "shop",
        "web-1",
        "cid1",
    )
    .run();
    assert!(ok, "{out} {err}");

    // ADD again: same addresses, still reachable, CHECK still passes.
    let (ok, again, err) = add1.run();
    assert!(ok, "{again} {err}");
    assert_eq!(addrs_of(&again), ips1);
    tcp_reaches(&p2, &p1, v4(&ips1), 8083).expect("p2 -> p1 after re-ADD");
    check_conf["prevResult"] = again;
    let (ok, out, err) = Call::k8s(
        "CHECK",
        &check_conf,
        &topo.node,
        &p1,
        "shop",
        "web-1",
        "cid1",
    )
    .run();
    assert!(ok, "{out} {err}");

    // DEL twice.
    for _ in 0..2 {
        let (ok, out, err) = add1.clone().command("DEL").run();
        assert!(ok && out.is_null(), "{out} {err}");
    }
    assert!(!links(&topo.node).contains(&veth1));
    assert!(!links(&p1).contains(&"eth0".to_string()));
    assert!(wep(store.as_ref(), "shop", "web-1").await.is_none());
    let routes = workload_routes(&topo.node);
    assert!(!routes.iter().any(|r| r.ends_with(&veth1)), "{routes:?}");
    // CHECK now fails: nothing is allocated.
    let (ok, out, _) = Call::k8s(
        "CHECK",
        &check_conf,
        &topo.node,
        &p1,
        "shop",
        "web-1",
        "cid1",
    )
    .run();
    assert!(!ok && out["code"] == 3, "{out}");

    // DEL after the pod namespace is gone still frees everything.
    topo.delete(&p2);
    let (ok, out, err) = add2.clone().command("DEL").run();
    assert!(ok, "{out} {err}");
    let veth2 = host_veth_name(Some(("shop", "db-1")), "cid2");
    assert!(!links(&topo.node).contains(&veth2));
    assert!(wep(store.as_ref(), "shop", "db-1").await.is_none());
    assert!(
        workload_routes(&topo.node).is_empty(),
        "{:?}",
        workload_routes(&topo.node)
    );
    let ipam = Ipam::new(store.clone());
    assert!(
        ipam.ips_by_handle("k8s-pod-network.cid1")
            .await
            .expect("ips")
            .is_empty()
    );
    assert!(
        ipam.ips_by_handle("k8s-pod-network.cid2")
            .await
            .expect("ips")
            .is_empty()
    );
    assert_ipam_clean(&store).await;
}

/// Asserts the attachment `cid` of pod `pod` left nothing behind.
async fn assert_nothing_left(
    topo: &Topology,
    pod_netns: Option<&str>,
    store: &std::sync::Arc<dyn Store>,
    pod: &str,
    cid: &str,
) {
    let veth = host_veth_name(Some(("shop", pod)), cid);
    assert!(
        !links(&topo.node).contains(&veth),
        "host veth {veth} leaked"
    );
    if let Some(p) = pod_netns {
        assert!(
            !links(p).contains(&"eth0".to_string()),
            "eth0 leaked in {p}"
        );
    }
    assert!(
        workload_routes(&topo.node)
            .iter()
            .all(|r| !r.ends_with(&veth))
    );
    assert!(
        wep(store.as_ref(), "shop", pod).await.is_none(),
        "WorkloadEndpoint leaked"
    );
    let ips = Ipam::new(store.clone())
        .ips_by_handle(&format!("k8s-pod-network.{cid}"))
        .await
        .expect("ips");
    assert!(ips.is_empty(), "addresses leaked: {ips:?}");
    assert_ipam_clean(store).await;
}

#[tokio::test]
async fn failed_adds_roll_back_completely() {
    if !is_root() {
        return;
    }
    let mut topo = Topology::new("fail");
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, url) = sqlite(dir.path()).await;
    // Four addresses in all.
    apply(store.as_ref(), &pool_yaml("tiny", "10.244.250.0/30", 30)).await;
    let conf = netconf(&url, NODE, false);

    // Exhausted pool: fill it, then one more fails with code 100 and leaves nothing.
    let mut added = Vec::new();
    let mut exhausted = None;
    for i in 0..8 {
        let netns = topo.pod(&format!("x{i}"));
        let call = Call::k8s(
            "ADD",
            &conf,
            &topo.node,
            &netns,
            "shop",
            &format!("x{i}"),
            &format!("x{i}"),
        );
        let (ok, out, err) = call.run();
        if ok {
            added.push((netns, call));
            continue;
        }
        assert_eq!(out["code"], 100, "{out} {err}");
        exhausted = Some((netns, i));
        break;
    }
    let (netns, i) = exhausted.expect("the pool ran out");
    assert_eq!(added.len(), 4);
    assert_nothing_left(
        &topo,
        Some(&netns),
        &store,
        &format!("x{i}"),
        &format!("x{i}"),
    )
    .await;
    for (_, call) in &added {
        let (ok, out, err) = call.clone().command("DEL").run();
        assert!(ok, "{out} {err}");
    }

    // A bad netns path: code 4 naming the path, nothing allocated.
    let p = topo.pod("bad");
    let mut call = Call::k8s("ADD", &conf, &topo.node, &p, "shop", "bad", "bad");
    let missing = format!("/run/netns/{}-missing", topo.prefix);
    call.env.insert("CNI_NETNS".into(), missing.clone());
    let (ok, out, _) = call.run();
    assert!(!ok && out["code"] == 4, "{out}");
    assert!(
        out["msg"].as_str().expect("msg").contains(&missing),
        "{out}"
    );
    assert_nothing_left(&topo, None, &store, "bad", "bad").await;

    // Failure after allocation, during plumbing: the pod already has a non-veth eth0.
    let p = topo.pod("busy");
    let st = std::process::Command::new("ip")
        .args(["-n", &p, "link", "add", "eth0", "type", "bridge"])
        .status()
        .expect("ip");
    assert!(st.success());
    let (ok, out, _) = Call::k8s("ADD", &conf, &topo.node, &p, "shop", "busy", "busy").run();
    assert!(!ok, "{out}");
    assert!(
        out["details"].as_str().unwrap_or("").contains("not a veth"),
        "{out}"
    );
    let veth = host_veth_name(Some(("shop", "busy")), "busy");
    assert!(!links(&topo.node).contains(&veth));
    assert!(wep(store.as_ref(), "shop", "busy").await.is_none());
    assert!(
        Ipam::new(store.clone())
            .ips_by_handle("k8s-pod-network.busy")
            .await
            .expect("ips")
            .is_empty()
    );

    // Failure after plumbing: an invalid node name makes the WorkloadEndpoint invalid; the
    // veth, routes and addresses are rolled back.
    let p = topo.pod("late");
    let bad_node = netconf(&url, "Not_A_Node", false);
    let (ok, out, _) = Call::k8s("ADD", &bad_node, &topo.node, &p, "shop", "late", "late").run();
    assert!(!ok && out["code"] == 7, "{out}");
    assert_nothing_left(&topo, Some(&p), &store, "late", "late").await;
    assert!(workload_routes(&topo.node).is_empty());
}

#[tokio::test]
async fn gc_releases_what_the_runtime_forgot() {
    if !is_root() {
        return;
    }
    let mut topo = Topology::new("gc");
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, url) = sqlite(dir.path()).await;
    apply(store.as_ref(), &pool_yaml("v4", "10.244.0.0/16", 26)).await;
    let mut conf = netconf(&url, NODE, false);
    conf["cniVersion"] = json!("1.1.0");
    let a = topo.pod("a");
    let b = topo.pod("b");
    let call_a = Call::k8s("ADD", &conf, &topo.node, &a, "shop", "a", "ca");
    let call_b = Call::k8s("ADD", &conf, &topo.node, &b, "shop", "b", "cb");
    let (ok, ra, err) = call_a.run();
    assert!(ok && ra["cniVersion"] == "1.1.0", "{ra} {err}");
    let (ok, rb, err) = call_b.run();
    assert!(ok, "{rb} {err}");

    // STATUS: the datastore answers and a pool exists.
    let (ok, out, err) = call_a.clone().command("STATUS").run();
    assert!(ok, "{out} {err}");

    let mut gc_conf = conf.clone();
    gc_conf["cni.dev/valid-attachments"] = json!([{"containerID": "ca", "ifname": "eth0"}]);
    let mut gc = Call::k8s("GC", &gc_conf, &topo.node, &a, "shop", "a", "ca");
    for k in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"] {
        gc.env.remove(k);
    }
    let (ok, out, err) = gc.run();
    assert!(ok, "{out} {err}");
    assert!(wep(store.as_ref(), "shop", "a").await.is_some());
    assert!(wep(store.as_ref(), "shop", "b").await.is_none());
    let veth_b = host_veth_name(Some(("shop", "b")), "cb");
    assert!(!links(&topo.node).contains(&veth_b));
    assert!(links(&topo.node).contains(&host_veth_name(Some(("shop", "a")), "ca")));
    let ipam = Ipam::new(store.clone());
    assert!(
        ipam.ips_by_handle("k8s-pod-network.cb")
            .await
            .expect("ips")
            .is_empty()
    );
    assert_eq!(
        ipam.ips_by_handle("k8s-pod-network.ca")
            .await
            .expect("ips")
            .len(),
        1
    );
    // The runtime's later DEL of the collected attachment is fine.
    let (ok, out, err) = call_b.command("DEL").run();
    assert!(ok, "{out} {err}");
    let (ok, out, err) = call_a.command("DEL").run();
    assert!(ok, "{out} {err}");
    assert_ipam_clean(&store).await;
}

#[tokio::test]
async fn a_calico_etcd_config_needs_only_the_type_changed() {
    if !is_root() {
        return;
    }
    let Some(etcd) = support::etcd_server::start_or_skip("cni on etcd").await else {
        return;
    };
    let store =
        tortie_store::connect(&tortie_store::DatastoreUrl::parse(&etcd.url()).expect("url"))
            .await
            .expect("connect etcd");
    apply(store.as_ref(), &pool_yaml("v4", "10.244.0.0/16", 26)).await;
    let mut topo = Topology::new("etcd");
    let a = topo.pod("a");
    let b = topo.pod("b");
    // Calico's manifest entry (calico-reference §5.1) with "type" changed.
    let conf = json!({
        "name": "k8s-pod-network", "cniVersion": "1.0.0", "type": "tortie-cni",
        "log_level": "info", "log_file_path": "/dev/null", "datastore_type": "etcdv3",
        "etcd_endpoints": etcd.endpoint, "nodename": NODE, "mtu": 1440,
        "ipam": {"type": "calico-ipam"}, "policy": {"type": "k8s"},
        "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"}
    });
    let add_a = Call::k8s("ADD", &conf, &topo.node, &a, "shop", "a", "ea");
    let add_b = Call::k8s("ADD", &conf, &topo.node, &b, "shop", "b", "eb");
    let (ok, ra, err) = add_a.run();
    assert!(ok, "{ra} {err}");
    let (ok, rb, err) = add_b.run();
    assert!(ok, "{rb} {err}");
    tcp_reaches(&a, &b, v4(&addrs_of(&rb)), 9000).expect("a -> b");
    tcp_reaches(&b, &a, v4(&addrs_of(&ra)), 9001).expect("b -> a");
    assert!(wep(store.as_ref(), "shop", "a").await.is_some());
    for call in [add_a, add_b] {
        let (ok, out, err) = call.command("DEL").run();
        assert!(ok, "{out} {err}");
    }
    assert!(wep(store.as_ref(), "shop", "a").await.is_none());
    assert!(workload_routes(&topo.node).is_empty());
    assert_ipam_clean(&store).await;
}
