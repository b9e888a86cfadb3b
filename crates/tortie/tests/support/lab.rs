//! Shared helpers of the CLI-driven lab tests: run `tortie`, a lab torn down on drop, and
//! waiting for every agent's policy dataplane to catch up with the datastore.

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_tortie");

pub use tortie_netlink::testing::root_or_skip;

pub fn run_tortie(args: &[&str], envs: &[(&str, &str)], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("TORTIE_DATASTORE");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run tortie");
    if let Some(s) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(s.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("tortie output")
}

pub fn must(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}

/// A lab torn down on drop.
pub struct Lab {
    pub name: String,
    pub datastore: String,
}

impl Lab {
    pub fn up(name: &str, nodes: usize) -> Lab {
        Lab::up_with(name, nodes, &[])
    }

    /// [`Lab::up`] with more `lab up` arguments (e.g. `--routing bgp`). The lab's pods need
    /// the `tortie-cni` binary next to `tortie`: its absence fails here, by name.
    pub fn up_with(name: &str, nodes: usize, extra: &[&str]) -> Lab {
        let cni = std::path::Path::new(BIN).with_file_name("tortie-cni");
        assert!(
            cni.exists(),
            "{} missing: cargo build --workspace --bins",
            cni.display()
        );
        let envs = [("TORTIE_LAB", name)];
        let _ = run_tortie(&["lab", "down"], &envs, None);
        // From here on the guard removes the lab, whatever happens.
        let mut lab = Lab {
            name: name.to_string(),
            datastore: String::new(),
        };
        let nodes = nodes.to_string();
        let mut args = vec!["lab", "up", "--nodes", nodes.as_str()];
        args.extend_from_slice(extra);
        must(run_tortie(&args, &envs, None), "lab up");
        let env = must(run_tortie(&["lab", "env"], &envs, None), "lab env");
        lab.datastore = env
            .split_whitespace()
            .find_map(|w| w.strip_prefix("TORTIE_DATASTORE="))
            .map(|s| s.trim_matches(|c| c == '"' || c == '\'').to_string())
            .expect("lab env prints TORTIE_DATASTORE");
        lab
    }

    pub fn envs(&self) -> Vec<(&str, &str)> {
        vec![
            ("TORTIE_LAB", self.name.as_str()),
            ("TORTIE_DATASTORE", self.datastore.as_str()),
        ]
    }

    pub fn ok(&self, args: &[&str]) -> String {
        must(
            run_tortie(args, &self.envs(), None),
            &format!("tortie {args:?}"),
        )
    }

    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        must(
            run_tortie(args, &self.envs(), Some(stdin)),
            &format!("tortie {args:?} <<{stdin}"),
        )
    }

    pub fn state(&self) -> Value {
        let p = format!("/run/tortie/lab/{}/state.json", self.name);
        serde_json::from_str(&std::fs::read_to_string(p).expect("state.json")).expect("json")
    }

    /// Waits until every agent's policy dataplane reflects the store as of now: writes a
    /// marker, reads its revision, polls each agent's `/status` (bounded), then forgets the
    /// nodes' conntrack entries so that probes start fresh flows.
    pub fn wait_synced(&self, n: usize) {
        let marker = json!({"apiVersion": "projectcalico.org/v3", "kind": "Profile",
            "metadata": {"name": "test-sync-marker", "labels": {"n": n.to_string()}},
            "spec": {}});
        self.ok_stdin(&["apply", "-f", "-"], &marker.to_string());
        let got = self.ok(&["get", "profile", "test-sync-marker", "-o", "json"]);
        let v: Value = serde_json::from_str(&got).expect("profile json");
        let rev: u64 = v["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .expect("resourceVersion");
        let state = self.state();
        let nodes = state["nodes"].as_array().expect("nodes");
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in nodes {
            let addr = node
                .pointer("/agent/health")
                .and_then(Value::as_str)
                .expect("agent health address")
                .to_string();
            loop {
                let applied = agent_status(&addr)
                    .and_then(|s| s["policyRevision"].as_u64())
                    .unwrap_or(0);
                if applied >= rev {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "agent {addr} did not apply revision {rev} within 30s (at {applied})"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for node in nodes {
            if let Some(ns) = node["netns"].as_str() {
                let _ = Command::new("ip")
                    .args(["netns", "exec", ns, "conntrack", "-F"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }

    /// Waits (at most 10 s) until node `node`'s agent log (`n1`, ...) has a line containing
    /// every one of `needles`; returns that line.
    pub fn wait_agent_log(&self, node: &str, needles: &[&str]) -> String {
        let state = self.state();
        let log = state["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["name"] == node)
            .and_then(|n| n["agent"]["process"]["log"].as_str())
            .unwrap_or_else(|| panic!("no agent log for {node} in {state}"))
            .to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no line with {needles:?} in {log} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `lab probe` of TCP `port`: true when allowed.
    pub fn probe(&self, from: &str, to: &str, port: u16) -> bool {
        let out = self.ok(&[
            "lab",
            "probe",
            from,
            to,
            "--port",
            &port.to_string(),
            "--timeout-ms",
            "700",
        ]);
        match out.trim() {
            "allowed" => true,
            "denied" => false,
            other => panic!("lab probe printed {other:?}"),
        }
    }

    /// The node's nft table listing.
    pub fn nft(&self, netns: &str) -> String {
        let out = Command::new("ip")
            .args([
                "netns", "exec", netns, "nft", "list", "table", "inet", "tortie",
            ])
            .output()
            .expect("nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_agent_logs();
        }
        let _ = run_tortie(&["lab", "down"], &self.envs(), None);
    }
}

impl Lab {
    /// The last lines of every agent's log, for a failing test's output (`lab down` removes
    /// the logs).
    fn print_agent_logs(&self) {
        let p = format!("/run/tortie/lab/{}/state.json", self.name);
        let Some(state) = std::fs::read_to_string(p)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        else {
            return;
        };
        let nodes = state["nodes"].as_array().cloned().unwrap_or_default();
        for log in nodes
            .iter()
            .filter_map(|n| n["agent"]["process"]["log"].as_str())
        {
            eprintln!("--- the end of {log} ---");
            eprintln!(
                "{}",
                tortie_lab::datastore::tail_lines(std::path::Path::new(log), 80)
            );
        }
    }
}

pub fn agent_status(addr: &str) -> Option<Value> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /status HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let json = body.split("\r\n\r\n").nth(1)?;
    serde_json::from_str(json).ok()
}
