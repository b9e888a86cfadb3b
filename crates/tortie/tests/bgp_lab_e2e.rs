//! A lab whose nodes learn each other's pod routes only through the agents' BGP speakers
//! (`lab up --routing bgp`: a node-to-node mesh), checked with real packets.

mod support {
    pub mod lab;
}

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::lab::{Lab, root_or_skip};

/// `ip route show proto 81` (the agent's routes) in a namespace.
fn agent_routes(netns: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns", "exec", netns, "ip", "-4", "route", "show", "proto", "81",
        ])
        .output()
        .expect("ip route");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn node_status(lab: &Lab, health: &str) -> Vec<Value> {
    let out = lab.ok(&["node", "status", "--agent", health, "-o", "json"]);
    serde_json::from_str(&out).expect("node status json")
}

#[test]
fn three_nodes_reach_every_pod_over_bgp_learned_routes() {
    if !root_or_skip("BGP lab e2e") {
        return;
    }
    let lab = Lab::up_with("tbgp", 3, &["--routing", "bgp"]);
    let state = lab.state();
    let nodes: Vec<(String, String, String)> = state["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["name"].as_str().expect("name").to_string(),
                n["netns"].as_str().expect("netns").to_string(),
                n.pointer("/agent/health")
                    .and_then(Value::as_str)
                    .expect("health")
                    .to_string(),
            )
        })
        .collect();

    // Every agent has an Established mesh session to each other node, per family.
    for (name, _, health) in &nodes {
        let peers = node_status(&lab, health);
        assert_eq!(
            peers.len(),
            4,
            "{name}: two nodes × IPv4 and IPv6: {peers:?}"
        );
        for p in &peers {
            assert_eq!(p["state"], "Established", "{name}: {p}");
            assert_eq!(p["peerType"], "node-to-node mesh", "{name}: {p}");
        }
        let table = lab.ok(&["node", "status", "--agent", health]);
        assert!(table.contains("| node-to-node mesh | up "), "{table}");
    }

    for (pod, node) in [("x/a", "n1"), ("x/b", "n2")] {
        lab.ok(&[
            "lab", "pod", "add", pod, "--node", node, "--serve", "80/tcp",
        ]);
    }
    // n3's first pod: its block is new, so n1 and n2 can only reach it once n3 has
    // advertised the block and they have installed the route.
    lab.ok(&[
        "lab", "pod", "add", "x/c", "--node", "n3", "--serve", "80/tcp",
    ]);
    let added = Instant::now();
    let deadline = added + Duration::from_secs(10);
    let mut reached = Vec::new();
    for from in ["x/a", "x/b"] {
        loop {
            if lab.probe(from, "x/c", 80) {
                reached.push((from, added.elapsed()));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{from} cannot reach x/c 10 s after it was added; routes on n1:\n{}",
                agent_routes(&nodes[0].1)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    println!("a new node block became reachable from the other nodes after {reached:?}");

    // The whole matrix, across nodes, over routes the speakers learned.
    let m: Value =
        serde_json::from_str(&lab.ok(&["lab", "matrix", "-o", "json"])).expect("matrix json");
    let mut denied = Vec::new();
    for (port, rows) in m.as_object().expect("matrix") {
        for (from, cols) in rows.as_object().expect("rows") {
            for (to, ok) in cols.as_object().expect("cols") {
                if ok != &Value::Bool(true) {
                    denied.push(format!("{port} {from} -> {to}"));
                }
            }
        }
    }
    assert!(denied.is_empty(), "denied: {denied:?}");

    // Each node's routes to the others' blocks point at the node that advertised them, and
    // the prefixes counted as received over BGP match.
    for (name, netns, health) in &nodes {
        let routes = agent_routes(netns);
        let via = routes.lines().filter(|l| l.contains(" via ")).count();
        assert_eq!(
            via, 2,
            "{name} should have one route per other node's block:\n{routes}"
        );
        let accepted: u64 = node_status(&lab, health)
            .iter()
            .filter(|p| !p["peerAddress"].as_str().unwrap_or("").contains(':'))
            .map(|p| p["accepted"].as_u64().unwrap_or(0))
            .sum();
        assert_eq!(accepted, 2, "{name}: one IPv4 block from each other node");
    }
}
