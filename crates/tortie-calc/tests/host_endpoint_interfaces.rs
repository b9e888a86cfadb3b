//! Which interface a host endpoint governs (calico-reference §2, HostEndpoint): its
//! `interfaceName`, or, without one, every node interface holding one of its `expectedIPs`;
//! an interface claimed by several host endpoints goes to the one with the smallest name
//! (as Felix resolves them).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

mod support;

use support::world;
use tortie_calc::World;
use tortie_calc::dataplane::{self, DataplaneModel, NodeConfig};

fn hep(name: &str, node: &str, spec: &str, profile: &str) -> String {
    format!(
        "---\napiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {{name: {name}}}\nspec: {{node: {node}, {spec}, profiles: [{profile}]}}\n"
    )
}

fn profile(name: &str) -> String {
    format!(
        "---\napiVersion: projectcalico.org/v3\nkind: Profile\nmetadata: {{name: {name}}}\nspec:\n  ingress: [{{action: Allow}}]\n  egress: [{{action: Allow}}]\n"
    )
}

/// n1's interfaces: eth0 198.18.0.11 + fd00:198:18::11, eth1 198.18.1.11, eth2 none.
fn n1_interfaces() -> BTreeMap<String, BTreeSet<IpAddr>> {
    let ips = |v: &[&str]| v.iter().map(|s| s.parse().expect("ip")).collect();
    BTreeMap::from([
        ("eth0".to_string(), ips(&["198.18.0.11", "fd00:198:18::11"])),
        ("eth1".to_string(), ips(&["198.18.1.11"])),
        ("eth2".to_string(), ips(&[])),
    ])
}

fn build(w: &World, ifaces: BTreeMap<String, BTreeSet<IpAddr>>) -> DataplaneModel {
    dataplane::build(
        w,
        &NodeConfig {
            host_interfaces: ifaces,
            ..NodeConfig::new("n1")
        },
    )
}

/// The profile chain the interface's host endpoint ends with.
fn governed(m: &DataplaneModel) -> BTreeMap<&str, Vec<&str>> {
    m.host_endpoints
        .iter()
        .map(|(i, c)| {
            (
                i.as_str(),
                c.ingress_profiles.iter().map(String::as_str).collect(),
            )
        })
        .collect()
}

#[test]
fn expected_ips_find_the_interface_holding_them() {
    let w = world(
        &[
            profile("a"),
            hep("a-by-ip", "n1", "expectedIPs: [198.18.0.11]", "a"),
            hep(
                "b-v6",
                "n1",
                "expectedIPs: ['fd00:198:18::11', 198.18.1.11]",
                "a",
            ),
            hep("c-other-node", "n2", "expectedIPs: [198.18.1.11]", "a"),
            hep("d-nowhere", "n1", "expectedIPs: [198.18.9.9]", "a"),
        ]
        .concat(),
    );
    let m = build(&w, n1_interfaces());
    // eth0 is held by a-by-ip (smaller name than b-v6, which also matches eth0 by IPv6);
    // b-v6 still gets eth1; nothing matches eth2; other nodes' endpoints never count.
    assert_eq!(
        governed(&m),
        BTreeMap::from([("eth0", vec!["pri-a"]), ("eth1", vec!["pri-a"])])
    );
    // Without interface knowledge nothing is enforced for address-only host endpoints.
    assert!(build(&w, BTreeMap::new()).host_endpoints.is_empty());
}

#[test]
fn the_smallest_name_wins_whether_it_matches_by_name_or_by_address() {
    let w = world(
        &[
            profile("by-ip"),
            profile("by-name"),
            hep("a", "n1", "expectedIPs: [198.18.0.11]", "by-ip"),
            hep("b", "n1", "interfaceName: eth0", "by-name"),
            hep("c", "n1", "interfaceName: eth1", "by-name"),
            hep("d", "n1", "expectedIPs: [198.18.1.11]", "by-ip"),
        ]
        .concat(),
    );
    let m = build(&w, n1_interfaces());
    assert_eq!(
        governed(&m),
        BTreeMap::from([("eth0", vec!["pri-by-ip"]), ("eth1", vec!["pri-by-name"])])
    );
    // The address moving to another interface moves the endpoint with it.
    let mut moved = n1_interfaces();
    moved.insert("eth0".into(), BTreeSet::new());
    moved.insert("eth2".into(), ["198.18.0.11".parse().expect("ip")].into());
    let m = build(&w, moved);
    assert_eq!(
        governed(&m),
        BTreeMap::from([
            ("eth0", vec!["pri-by-name"]),
            ("eth1", vec!["pri-by-name"]),
            ("eth2", vec!["pri-by-ip"])
        ])
    );
}

/// `policy explain` agrees with the dataplane: the host's own IPv6 neighbour discovery and
/// MLD pass a host endpoint whatever its policy says; other ICMPv6 does not.
#[test]
fn neighbour_discovery_passes_host_endpoint_policy() {
    use tortie_calc::eval::{Addresses, Decider, Outcome, Packet, explain};
    use tortie_calc::model::proto;
    let w = world(&[
        hep("n1-v6", "n1", "interfaceName: eth0, expectedIPs: ['fd00:198:18::11']", "a"),
        "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: deny-all}\nspec:\n  selector: all()\n  types: [Ingress, Egress]\n".to_string(),
        profile("a"),
    ]
    .concat());
    let addrs = Addresses::new(&w);
    let icmp6 = |src: &str, dst: &str, t: u8| Packet {
        src: src.parse().expect("ip"),
        dst: dst.parse().expect("ip"),
        protocol: proto::ICMPV6,
        src_port: 0,
        dst_port: 0,
        icmp_type: Some(t),
        icmp_code: Some(0),
    };
    let host = "fd00:198:18::11";
    let peer = "fd00:198:18::101";
    let e = explain(&w, &addrs, &icmp6(peer, host, 135));
    assert_eq!(e.outcome, Outcome::Allow, "{e:?}");
    assert_eq!(
        e.ingress.decider,
        Decider::NeighbourDiscovery { icmp_type: 135 }
    );
    let e = explain(&w, &addrs, &icmp6(host, peer, 136));
    assert_eq!(
        e.egress.decider,
        Decider::NeighbourDiscovery { icmp_type: 136 }
    );
    let e = explain(&w, &addrs, &icmp6(peer, host, 128));
    assert_eq!(
        e.outcome,
        Outcome::Deny,
        "echo request follows policy: {e:?}"
    );
}

/// Pods on two nodes whose fabric interfaces are host endpoints: `applyOnForward` policy of
/// those host endpoints decides traffic between the nodes (and from outside), in `explain`
/// and so in `policy matrix`, as in the kernel; traffic within a node is not forwarded
/// through a host endpoint.
#[test]
fn forwarded_traffic_between_nodes_meets_host_endpoint_forward_policy() {
    use tortie_calc::eval::{Addresses, Decider, Outcome, Packet, explain};
    use tortie_calc::model::{EndpointId, proto};
    let wep = |pod: &str, node: &str, ip: &str| {
        format!(
            "---\napiVersion: projectcalico.org/v3\nkind: WorkloadEndpoint\nmetadata:\n  name: {node}-k8s-{pod}-eth0\n  namespace: x\n  labels: {{projectcalico.org/namespace: x, projectcalico.org/orchestrator: k8s}}\nspec: {{node: {node}, orchestrator: k8s, endpoint: eth0, pod: {pod}, interfaceName: cali{pod}, ipNetworks: [{ip}/32], profiles: [kns.x]}}\n"
        )
    };
    let node_hep = |node: &str, ip: &str| {
        format!(
            "---\napiVersion: projectcalico.org/v3\nkind: HostEndpoint\nmetadata: {{name: {node}-eth0, labels: {{role: node}}}}\nspec: {{node: {node}, interfaceName: eth0, expectedIPs: [{ip}], profiles: [projectcalico-default-allow]}}\n"
        )
    };
    let w = world(
        &[
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n".to_string(),
            wep("a", "n1", "10.244.1.10"),
            wep("c", "n1", "10.244.1.12"),
            wep("b", "n2", "10.244.2.11"),
            node_hep("n1", "198.18.0.11"),
            node_hep("n2", "198.18.0.12"),
            "---\napiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {name: forward-deny-80}\nspec:\n  selector: role == 'node'\n  applyOnForward: true\n  types: [Ingress]\n  ingress:\n  - {action: Deny, protocol: TCP, destination: {ports: [80]}}\n  - {action: Allow}\n".to_string(),
        ]
        .concat(),
    );
    let addrs = Addresses::new(&w);
    let tcp = |src: &str, dst: &str, port: u16| Packet {
        src: src.parse().expect("ip"),
        dst: dst.parse().expect("ip"),
        protocol: proto::TCP,
        src_port: 40000,
        dst_port: port,
        icmp_type: None,
        icmp_code: None,
    };
    let hep = |name: &str| EndpointId::Host {
        name: name.to_string(),
    };
    // n1's pod a → n2's pod b on 80: forwarded into n2 through n2-eth0, whose forward
    // ingress policy denies; out of n1 there is no forward egress policy.
    let e = explain(&w, &addrs, &tcp("10.244.1.10", "10.244.2.11", 80));
    assert_eq!(e.outcome, Outcome::Deny, "{e:#?}");
    let into = e.forward_ingress.as_ref().expect("forwarded into n2");
    assert_eq!(into.host_endpoint, hep("n2-eth0"));
    assert!(
        matches!(into.verdict.decider, Decider::Rule { rule: 0, .. }),
        "{into:?}"
    );
    let out = e.forward_egress.as_ref().expect("forwarded out of n1");
    assert_eq!(out.host_endpoint, hep("n1-eth0"));
    assert_eq!(out.verdict.decider, Decider::NoForwardPolicy);
    assert!(
        e.egress.allowed() && e.ingress.allowed(),
        "the pods' own policy allows"
    );
    // Another port passes the forward policy; within n1 nothing is forwarded through it.
    assert_eq!(
        explain(&w, &addrs, &tcp("10.244.1.10", "10.244.2.11", 81)).outcome,
        Outcome::Allow
    );
    let e = explain(&w, &addrs, &tcp("10.244.1.10", "10.244.1.12", 80));
    assert_eq!(e.outcome, Outcome::Allow);
    assert!(
        e.forward_ingress.is_none() && e.forward_egress.is_none(),
        "{e:?}"
    );
    // From outside to b: forwarded into n2 only.
    let e = explain(&w, &addrs, &tcp("198.18.0.101", "10.244.2.11", 80));
    assert_eq!(e.outcome, Outcome::Deny);
    assert!(e.forward_egress.is_none());
    // The JSON names the host endpoint next to the verdict.
    let json = serde_json::to_value(&e).expect("json");
    assert_eq!(
        json["forwardIngress"]["hostEndpoint"]["name"], "n2-eth0",
        "{json}"
    );
    assert_eq!(json["forwardIngress"]["outcome"], "deny", "{json}");
}
