//! `lab status` and `lab env`, the agents' readiness check, and the plain-text table layout.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use crate::state::{LabState, Plan};

/// How long `status` waits for each agent's `/readiness`.
const STATUS_READINESS_TIMEOUT: Duration = Duration::from_secs(1);

/// An agent's answer to `GET /readiness`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Answered, but not 200: the status and the reason it gave.
    NotReady {
        status: u16,
        reason: String,
    },
    /// Did not answer.
    Unreachable(String),
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Readiness::Ready => f.write_str("ready"),
            Readiness::NotReady { status, reason } => write!(f, "not ready ({status}): {reason}"),
            Readiness::Unreachable(e) => write!(f, "no answer: {e}"),
        }
    }
}

/// Parses an HTTP/1.x response into status and body.
pub fn parse_response(raw: &[u8]) -> Option<(u16, String)> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next()?;
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    Some((status, body.trim().to_string()))
}

/// `GET http://<addr><path>`, with `timeout` for connecting, writing and reading: the status
/// code and the body.
pub fn http_get(addr: &str, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let sa: SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut s = TcpStream::connect_timeout(&sa, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut out = Vec::new();
    s.take(4 * 1024 * 1024).read_to_end(&mut out)?;
    parse_response(&out)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP response"))
}

/// `GET http://<addr>/readiness` with an overall timeout.
pub fn readiness(addr: &str, timeout: Duration) -> Readiness {
    match http_get(addr, "/readiness", timeout) {
        Err(e) => Readiness::Unreachable(e.to_string()),
        Ok((200, _)) => Readiness::Ready,
        Ok((status, reason)) => Readiness::NotReady { status, reason },
    }
}

/// Lays out rows as left-aligned columns two spaces apart (calicoctl's plain layout).
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(String::len)
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// The `status -o json` document; `ready` holds each node's agent readiness.
pub fn status_value(state: &LabState, ready: &BTreeMap<String, bool>) -> Value {
    let nodes: Vec<Value> = state
        .nodes
        .iter()
        .map(|n| {
            json!({
                "name": n.name,
                "netns": n.netns,
                "ip": n.ipv4.to_string(),
                "ipv6": n.ipv6.to_string(),
                "ready": ready.get(&n.name).copied().unwrap_or(false),
                "agent": n.agent.as_ref().map(|a| json!({"pid": a.process.pid, "health": a.health})),
            })
        })
        .collect();
    let hosts: Vec<Value> = state
        .hosts
        .values()
        .map(|h| {
            json!({
                "name": h.name,
                "netns": h.netns,
                "ip": h.ipv4.to_string(),
                "ipv6": h.ipv6.to_string(),
                "serve": h.serve,
            })
        })
        .collect();
    let pods: Vec<Value> = state
        .pods
        .values()
        .map(|p| {
            json!({
                "name": p.key(),
                "node": p.node,
                "netns": p.netns,
                "ips": p.ips,
                "labels": p.labels,
                "serve": p.serve,
            })
        })
        .collect();
    json!({
        "name": state.name,
        "nodes": nodes,
        "hosts": hosts,
        "pods": pods,
        "datastore": state.datastore.url,
    })
}

/// Reads the state without the lock: `state.json` is replaced atomically, so a read sees one
/// whole version.
fn load(plan: &Plan) -> anyhow::Result<LabState> {
    Ok(LabState::load(plan)?)
}

/// Checks every agent's readiness in parallel.
fn readiness_of(state: &LabState) -> BTreeMap<String, Readiness> {
    std::thread::scope(|s| {
        let handles: Vec<_> = state
            .nodes
            .iter()
            .filter_map(|n| Some((n.name.clone(), n.agent.as_ref()?.health.clone())))
            .map(|(name, health)| {
                (
                    name,
                    s.spawn(move || readiness(&health, STATUS_READINESS_TIMEOUT)),
                )
            })
            .collect();
        handles
            .into_iter()
            .map(|(name, h)| {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Readiness::Unreachable("check panicked".into()));
                (name, r)
            })
            .collect()
    })
}

/// `lab status`.
pub fn status(plan: &Plan, output: &str) -> anyhow::Result<ExitCode> {
    let state = load(plan)?;
    let checks = readiness_of(&state);
    if output == "json" {
        let ready = checks
            .iter()
            .map(|(n, r)| (n.clone(), *r == Readiness::Ready))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&status_value(&state, &ready))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("lab {}  datastore {}\n", state.name, state.datastore.url);
    let mut rows = vec![
        ["NODE", "NETNS", "IPV4", "IPV6", "AGENT"]
            .map(String::from)
            .to_vec(),
    ];
    for n in &state.nodes {
        let agent = match (&n.agent, checks.get(&n.name)) {
            (Some(a), Some(r)) => format!("pid {} {}: {r}", a.process.pid, a.health),
            _ => "none".into(),
        };
        rows.push(vec![
            n.name.clone(),
            n.netns.clone(),
            n.ipv4.to_string(),
            n.ipv6.to_string(),
            agent,
        ]);
    }
    print!("{}", table(&rows));
    if !state.hosts.is_empty() {
        let mut rows = vec![
            ["HOST", "NETNS", "IPV4", "IPV6", "SERVES"]
                .map(String::from)
                .to_vec(),
        ];
        for h in state.hosts.values() {
            rows.push(vec![
                h.name.clone(),
                h.netns.clone(),
                h.ipv4.to_string(),
                h.ipv6.to_string(),
                join(&h.serve),
            ]);
        }
        print!("\n{}", table(&rows));
    }
    if !state.pods.is_empty() {
        let mut rows = vec![
            ["POD", "NODE", "NETNS", "IPS", "SERVES"]
                .map(String::from)
                .to_vec(),
        ];
        for p in state.pods.values() {
            rows.push(vec![
                p.key(),
                p.node.clone(),
                p.netns.clone(),
                p.ips.join(","),
                join(&p.serve),
            ]);
        }
        print!("\n{}", table(&rows));
    }
    Ok(ExitCode::SUCCESS)
}

fn join<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        return "-".into();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// `lab env`.
pub fn env(plan: &Plan) -> anyhow::Result<ExitCode> {
    let state = load(plan)?;
    println!("export TORTIE_DATASTORE={}", state.datastore.url);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_responses_parse() {
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"),
            Some((200, "ok".into()))
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 503 Service Unavailable\r\n\r\nwaiting for first sync\n"),
            Some((503, "waiting for first sync".into()))
        );
        assert_eq!(parse_response(b"garbage"), None);
        assert_eq!(parse_response(b""), None);
    }

    #[test]
    fn an_agent_that_does_not_listen_is_unreachable() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        drop(l);
        assert!(matches!(
            readiness(&addr, Duration::from_millis(200)),
            Readiness::Unreachable(_)
        ));
    }

    #[test]
    fn tables_align_and_trim() {
        let rows = vec![
            vec!["NAME".to_string(), "IP".into()],
            vec!["n1".into(), "198.18.0.11".into()],
        ];
        assert_eq!(table(&rows), "NAME  IP\nn1    198.18.0.11\n");
    }
}
