//! `tortie node status`: the BGP sessions of the agent on this node, in calicoctl's layout.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use tortie_agent::bgp::BgpView;

/// `tortie node ...`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    #[command(subcommand)]
    command: NodeCommand,
}

#[derive(Debug, Subcommand)]
enum NodeCommand {
    /// Show this node's BGP peers: address, type, state, since, info.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// The agent's health address (its --health-listen).
    #[arg(long, value_name = "ADDR", default_value = tortie_agent::config::DEFAULT_HEALTH_LISTEN)]
    agent: String,
    #[arg(short = 'o', long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

pub fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    let NodeCommand::Status(a) = args.command;
    let view = match fetch(&a.agent) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("tortie agent is not running: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if a.output == "json" {
        // The peers, as before; the problems are in the table output and in /bgp.
        println!("{}", serde_json::to_string_pretty(&view.peers)?);
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", render(&view, SystemTime::now()));
    Ok(ExitCode::SUCCESS)
}

fn fetch(agent: &str) -> anyhow::Result<BgpView> {
    let (code, body) = tortie_lab::http_get(agent, "/bgp", Duration::from_secs(2))
        .map_err(|e| anyhow::anyhow!("cannot reach {agent}: {e}"))?;
    anyhow::ensure!(code == 200, "{agent}/bgp answered {code}: {body}");
    Ok(serde_json::from_str(&body)?)
}

/// calicoctl's output: one boxed table per family, then the configuration problems, if any.
fn render(view: &BgpView, now: SystemTime) -> String {
    let peers = &view.peers;
    let mut out = String::from("tortie agent is running.\n");
    for (family, v6) in [("IPv4", false), ("IPv6", true)] {
        out.push_str(&format!("\n{family} BGP status\n"));
        let rows: Vec<Vec<String>> = peers
            .iter()
            .filter(|p| p.peer_address.contains(':') == v6)
            .map(|p| {
                vec![
                    p.peer_address.clone(),
                    p.peer_type.clone(),
                    if p.state == "Established" {
                        "up"
                    } else {
                        "start"
                    }
                    .to_string(),
                    since(p.since, now),
                    p.info.clone(),
                ]
            })
            .collect();
        if rows.is_empty() {
            out.push_str(&format!("No {family} peers found.\n"));
        } else {
            out.push_str(&boxed(
                &["PEER ADDRESS", "PEER TYPE", "STATE", "SINCE", "INFO"],
                &rows,
            ));
        }
    }
    if !view.problems.is_empty() {
        out.push_str("\nBGP configuration problems\n");
        for p in &view.problems {
            out.push_str(&format!("- {p}\n"));
        }
    }
    out.push('\n');
    out
}

/// BIRD's "since": the time of day within the last day, else the date (UTC).
fn since(secs: u64, now: SystemTime) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(secs);
    let stamp = humantime::format_rfc3339_seconds(t).to_string();
    let recent = now
        .duration_since(t)
        .is_ok_and(|d| d < Duration::from_secs(86_400));
    if recent {
        stamp[11..19].to_string()
    } else {
        stamp[..10].to_string()
    }
}

/// A table with `+---+` borders and centred headers, as calicoctl prints it.
fn boxed(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let mut out = rule.clone();
    for (h, w) in header.iter().zip(&widths) {
        out.push_str(&format!("| {h:^w$} "));
    }
    out.push_str("|\n");
    out.push_str(&rule);
    for r in rows {
        for (c, w) in r.iter().zip(&widths) {
            out.push_str(&format!("| {c:<w$} "));
        }
        out.push_str("|\n");
    }
    out.push_str(&rule);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tortie_agent::bgp::BgpPeerRow;

    #[test]
    fn prints_calicoctls_layout() {
        let now = UNIX_EPOCH + Duration::from_secs(1_765_000_000);
        let row = |addr: &str, state: &str, info: &str| BgpPeerRow {
            peer_address: addr.into(),
            peer_type: "node-to-node mesh".into(),
            state: state.into(),
            since: 1_765_000_000 - 60,
            info: info.into(),
            local_address: Some("198.18.0.1".into()),
            received: 1,
            accepted: 1,
            advertised: 1,
            password: false,
        };
        let out = render(
            &BgpView {
                peers: vec![
                    row("198.18.0.2", "Established", "Established"),
                    row("198.18.0.3", "Active", "Active Socket: Connection refused"),
                ],
                problems: Vec::new(),
            },
            now,
        );
        let want = "\
tortie agent is running.

IPv4 BGP status
+--------------+-------------------+-------+----------+-----------------------------------+
| PEER ADDRESS |     PEER TYPE     | STATE |  SINCE   |               INFO                |
+--------------+-------------------+-------+----------+-----------------------------------+
| 198.18.0.2   | node-to-node mesh | up    | 05:45:40 | Established                       |
| 198.18.0.3   | node-to-node mesh | start | 05:45:40 | Active Socket: Connection refused |
+--------------+-------------------+-------+----------+-----------------------------------+

IPv6 BGP status
No IPv6 peers found.

";
        assert_eq!(out, want);
    }

    #[test]
    fn prints_configuration_problems_after_the_tables() {
        let view = BgpView {
            peers: Vec::new(),
            problems: vec![
                "BGPPeer tor: password.secretKeyRef: Secret calico-system/bgp has no key \"pw\"; the peer is skipped".into(),
            ],
        };
        let out = render(&view, UNIX_EPOCH);
        assert!(
            out.ends_with(
                "No IPv6 peers found.\n\nBGP configuration problems\n- BGPPeer tor: \
                 password.secretKeyRef: Secret calico-system/bgp has no key \"pw\"; the peer \
                 is skipped\n\n"
            ),
            "{out}"
        );
    }
}
