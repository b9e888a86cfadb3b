//! A lab whose nodes learn each other's pod routes only through the agents' BGP speakers
//! (`lab up --routing bgp`: a node-to-node mesh), checked with real packets; the mesh then
//! protected by a TCP MD5 password from a Secret (`nodeMeshPassword`), rotated and removed.

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
    let denied = denied_in_matrix(&lab);
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

    mesh_password_from_a_secret(&lab, &nodes);
    readiness_names_a_peer_that_is_down(&lab, &nodes[0].2);
    // The restarted n3 agent runs until the end of the test.
    let _n3_agent = agent_restart_keeps_bgp_routes(&lab, &nodes);
    route_reflector_replaces_the_mesh(&lab, &nodes);
}

/// The `port from -> to` cells of `lab matrix` that are not allowed.
fn denied_in_matrix(lab: &Lab) -> Vec<String> {
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
    denied
}

/// `ss` in a node's namespace: TCP sockets on port 179 (`-l`: listening), one entry per
/// socket with its info line (which names the TCP MD5 keys the kernel holds for it).
fn bgp_sockets(netns: &str, listening: bool) -> Vec<String> {
    let mut args = vec!["netns", "exec", netns, "ss", "-H", "-t", "-n", "-i"];
    if listening {
        args.extend(["-l", "( sport = :179 )"]);
    } else {
        args.extend(["state", "established", "( sport = :179 or dport = :179 )"]);
    }
    let out = Command::new("ip").args(&args).output().expect("ss");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // A socket line, then its indented info line.
    let mut sockets: Vec<String> = Vec::new();
    for line in text.lines() {
        if line.starts_with(char::is_whitespace) {
            if let Some(last) = sockets.last_mut() {
                last.push_str(line);
            }
        } else if !line.trim().is_empty() {
            sockets.push(line.to_string());
        }
    }
    sockets
}

/// Every mesh session of every node is Established; `password` says whether each must have a
/// TCP MD5 key. Returns each node's peers' `since`, by node.
fn wait_mesh(
    lab: &Lab,
    nodes: &[(String, String, String)],
    password: bool,
    secs: u64,
) -> Vec<Vec<u64>> {
    let mut since = Vec::new();
    for (name, _, health) in nodes {
        eventually(
            secs,
            &format!("{name}: 4 mesh sessions up, password {password}"),
            || {
                let peers = node_status(lab, health);
                let ok = peers.len() == 4
                    && peers.iter().all(|p| {
                        p["state"] == "Established" && p["password"] == Value::Bool(password)
                    });
                if ok {
                    Ok(())
                } else {
                    Err(format!("{peers:?}"))
                }
            },
        );
        since.push(
            node_status(lab, health)
                .iter()
                .map(|p| p["since"].as_u64().unwrap_or(0))
                .collect(),
        );
    }
    since
}

/// BGPConfiguration `nodeMeshPassword` from a Secret in the agents' secrets namespace
/// (`calico-system`): every mesh session comes back Established with a TCP MD5 key on the
/// connection and on the listener; a new value restarts the sessions with it; the pods still
/// reach each other. A Secret that is gone is a problem `/readiness` and `node status` name,
/// and the mesh runs without a password (as Calico's confd renders it).
fn mesh_password_from_a_secret(lab: &Lab, nodes: &[(String, String, String)]) {
    let secret = |value: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "Secret",
                "metadata": {{"name": "bgp-mesh", "namespace": "calico-system"}},
                "stringData": {{"password": "{value}"}}}}"#
        )
    };
    lab.ok_stdin(&["apply", "-f", "-"], &secret("first-mesh-key"));
    lab.ok_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
            "metadata": {"name": "default"},
            "spec": {"nodeMeshPassword": {"secretKeyRef": {"name": "bgp-mesh", "key": "password"}}}}"#,
    );
    let state = lab.state();
    let started = Instant::now();
    let before = wait_mesh(lab, nodes, true, 60);
    println!(
        "mesh sessions up with TCP MD5 after {:.1?}",
        started.elapsed()
    );
    // The kernel has the keys: on every BGP connection, and on the listeners for each peer.
    for (name, netns, _) in nodes {
        let conns = bgp_sockets(netns, false);
        assert!(
            conns.len() >= 4 && conns.iter().all(|c| c.contains("md5keys:")),
            "{name}: every BGP connection has a TCP MD5 key: {conns:#?}"
        );
        let listeners = bgp_sockets(netns, true).join("\n");
        for n in state["nodes"].as_array().expect("nodes") {
            let (other, ip) = (n["name"].as_str().expect("name"), &n["ipv4"]);
            let ip = ip.as_str().expect("ipv4");
            if other != name {
                assert!(
                    listeners.contains(&format!("md5keys:{ip}/32"))
                        || listeners.contains(&format!(",{ip}/32")),
                    "{name}: the listener has {other}'s key: {listeners}"
                );
            }
        }
    }
    eventually(10, "ready with the mesh password", || {
        let (code, body) = http(&nodes[0].2, "/readiness");
        if code == 200 {
            Ok(())
        } else {
            Err(format!("{code} {body}"))
        }
    });

    // A new value: every session restarts with it.
    std::thread::sleep(Duration::from_millis(1100));
    lab.ok_stdin(&["apply", "-f", "-"], &secret("second-mesh-key"));
    let rotated = Instant::now();
    for (i, (name, _, health)) in nodes.iter().enumerate() {
        eventually(
            60,
            &format!("{name}: sessions restarted with the new key"),
            || {
                let peers = node_status(lab, health);
                let restarted = peers.len() == 4
                    && peers.iter().all(|p| {
                        p["state"] == "Established"
                            && p["password"] == true
                            && !before[i].contains(&p["since"].as_u64().unwrap_or(0))
                    });
                if restarted {
                    Ok(())
                } else {
                    Err(format!("{peers:?}"))
                }
            },
        );
    }
    println!(
        "mesh sessions up with the new key after {:.1?}",
        rotated.elapsed()
    );
    eventually(
        30,
        "the pod matrix works over the protected sessions",
        || {
            let denied = denied_in_matrix(lab);
            if denied.is_empty() {
                Ok(())
            } else {
                Err(format!("denied: {denied:?}"))
            }
        },
    );

    // The Secret is gone: a problem, naming the namespace, the Secret and the key.
    lab.ok(&["delete", "secret", "bgp-mesh", "-n", "calico-system"]);
    let want = "BGP configuration problem: BGPConfiguration default: nodeMeshPassword.secretKeyRef: \
                Secret calico-system/bgp-mesh does not exist (key \"password\"); the mesh \
                sessions run without a password";
    eventually(60, "readiness names the missing Secret", || {
        let (code, body) = http(&nodes[0].2, "/readiness");
        if code == 503 && body.contains(want) {
            Ok(())
        } else {
            Err(format!("{code} {body}"))
        }
    });
    let table = lab.ok(&["node", "status", "--agent", &nodes[0].2]);
    assert!(
        table.contains("BGP configuration problems\n- BGPConfiguration default: nodeMeshPassword"),
        "{table}"
    );
    wait_mesh(lab, nodes, false, 60);
    for (name, netns, _) in nodes {
        let listeners = bgp_sockets(netns, true).join("\n");
        assert!(
            !listeners.contains("md5keys:"),
            "{name}: the listener keys are gone: {listeners}"
        );
    }
    lab.ok(&["delete", "bgpconfig", "default"]);
    eventually(20, "ready again without the mesh password", || {
        let (code, body) = http(&nodes[0].2, "/readiness");
        if code == 200 {
            Ok(())
        } else {
            Err(format!("{code} {body}"))
        }
    });
}

/// Ends a restarted agent (by PID) however the test ends.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// n3's agent is killed (no NOTIFICATION: its sockets just close) and started again. Its
/// peers keep its routes through the graceful restart, so n1 reaches n3's pod the whole time;
/// the restarted agent waits for its peers' tables before it programs routes, so neither
/// n1's nor n3's routes change at all.
fn agent_restart_keeps_bgp_routes(lab: &Lab, nodes: &[(String, String, String)]) -> ChildGuard {
    let state = lab.state();
    let n3 = &state["nodes"][2];
    let pid = n3
        .pointer("/agent/process/pid")
        .and_then(Value::as_u64)
        .expect("agent pid");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("agent cmdline");
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let before: Vec<String> = nodes.iter().map(|(_, ns, _)| agent_routes(ns)).collect();
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill agent by PID");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // n1 sees the session to n3 go down, and keeps forwarding to n3's pod.
    eventually(20, "n1 notices n3's agent is gone", || {
        let peers = node_status(lab, &nodes[0].2);
        match peers.iter().find(|p| p["peerAddress"] == "198.18.0.13") {
            Some(p) if p["state"] != "Established" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert!(
        lab.probe("x/a", "x/c", 80),
        "n1 lost n3's pod while n3's agent was down"
    );
    assert_eq!(
        agent_routes(&nodes[0].1),
        before[0],
        "n1's routes changed while n3 restarts"
    );

    let log =
        std::fs::File::create(std::env::temp_dir().join("tbgp-agent-restart.log")).expect("log");
    let restarted = ChildGuard(
        Command::new(&args[0])
            .args(&args[1..])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("restart agent"),
    );
    eventually(
        40,
        "the restarted agent is ready with its sessions up",
        || {
            let (code, body) = http(&nodes[2].2, "/readiness");
            if code == 200 {
                Ok(())
            } else {
                Err(format!("{code} {body}"))
            }
        },
    );
    for (i, (name, ns, _)) in nodes.iter().enumerate() {
        assert_eq!(
            agent_routes(ns),
            before[i],
            "{name}'s routes changed across the restart"
        );
    }
    assert!(lab.probe("x/a", "x/c", 80) && lab.probe("x/c", "x/b", 80));
    restarted
}

fn http(addr: &str, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-m",
            "2",
            "-w",
            "\n%{http_code}",
            &format!("http://{addr}{path}"),
        ])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Polls `check` every 100 ms for up to `secs`.
fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if Instant::now() >= deadline => panic!("{what} within {secs}s: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A BGPPeer nobody answers for makes every node unready, naming the peer, the local
/// address and the socket error; deleting it makes them ready again. The per-peer metrics
/// show it too.
fn readiness_names_a_peer_that_is_down(lab: &Lab, health: &str) {
    // 198.18.0.250 is on the lab's fabric subnet, where no namespace answers.
    lab.ok_stdin(
        &["apply", "-f", "-"],
        r#"{"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
            "metadata": {"name": "nobody"},
            "spec": {"peerIP": "198.18.0.250", "asNumber": 65099}}"#,
    );
    eventually(20, "readiness names the missing peer", || {
        let (code, body) = http(health, "/readiness");
        let want = "BGP peer 198.18.0.250 (global) is not established (local 198.18.0.11): Active Socket: ";
        if code == 503 && body.contains(want) {
            Ok(())
        } else {
            Err(format!("{code} {body}"))
        }
    });
    let (_, body) = http(health, "/readiness");
    println!("readiness with a dead peer: {}", body.trim());
    let (_, metrics) = http(health, "/metrics");
    assert!(
        metrics.contains("tortie_agent_bgp_peer_established{peer=\"198.18.0.250\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tortie_agent_bgp_peer_established{peer=\"198.18.0.12\"} 1"),
        "{metrics}"
    );
    let table = lab.ok(&["node", "status", "--agent", health]);
    assert!(table.contains("| 198.18.0.250 | global "), "{table}");
    lab.ok(&["delete", "bgppeer", "nobody"]);
    eventually(20, "ready again once the peer is deleted", || {
        let (code, body) = http(health, "/readiness");
        if code == 200 {
            Ok(())
        } else {
            Err(format!("{code} {body}"))
        }
    });
}

/// Calico's usual large-cluster layout: no mesh, n1 reflects, every node peers with it
/// through one BGPPeer. Routes keep working and each client has only the reflector as peer.
fn route_reflector_replaces_the_mesh(lab: &Lab, nodes: &[(String, String, String)]) {
    let mut n1: Value =
        serde_json::from_str(&lab.ok(&["get", "node", "n1", "-o", "json"])).expect("node json");
    n1["metadata"]["labels"]["route-reflector"] = Value::from("true");
    n1["spec"]["bgp"]["routeReflectorClusterID"] = Value::from("244.0.0.1");
    lab.ok_stdin(&["apply", "-f", "-"], &n1.to_string());
    lab.ok_stdin(
        &["apply", "-f", "-"],
        r#"[{"apiVersion": "projectcalico.org/v3", "kind": "BGPConfiguration",
             "metadata": {"name": "default"}, "spec": {"nodeToNodeMeshEnabled": false}},
            {"apiVersion": "projectcalico.org/v3", "kind": "BGPPeer",
             "metadata": {"name": "peer-with-route-reflectors"},
             "spec": {"nodeSelector": "all()", "peerSelector": "route-reflector == 'true'"}}]"#,
    );
    for (name, _, health) in nodes {
        let want = if name == "n1" { 4 } else { 2 };
        eventually(
            20,
            &format!("{name} peers only through the reflector"),
            || {
                let peers = node_status(lab, health);
                let up = peers.iter().filter(|p| p["state"] == "Established").count();
                let kinds_ok = peers.iter().all(|p| p["peerType"] == "node specific");
                if peers.len() == want && up == want && kinds_ok {
                    Ok(())
                } else {
                    Err(format!("{peers:?}"))
                }
            },
        );
    }
    // n2 and n3 now learn each other's blocks only through n1, with the next hop unchanged.
    eventually(20, "pods reachable through reflected routes", || {
        let routes = agent_routes(&nodes[1].1);
        if !routes.contains("via 198.18.0.13") {
            return Err(format!("n2 routes:\n{routes}"));
        }
        if lab.probe("x/b", "x/c", 80) && lab.probe("x/c", "x/b", 80) {
            Ok(())
        } else {
            Err("x/b <-> x/c denied".into())
        }
    });
}
