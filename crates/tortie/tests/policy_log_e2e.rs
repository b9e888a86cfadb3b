//! The policy log end to end, as root: a 2-node lab with real agents. A GlobalNetworkPolicy's
//! Log rule and a staged policy's preview both show up as `policy log` events in the agent
//! log of the node that enforces them, with the rule's identity and the packet, while the
//! staged policy changes nothing. Not root: prints why and passes; with `CI=true` a missing
//! root fails instead.

mod support {
    pub mod lab;
}

use support::lab::{Lab, root_or_skip};

const AUDIT: &str = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: audit-b}
spec:
  selector: app == 'b'
  order: 10
  types: [Ingress]
  ingress:
  - action: Log
    protocol: TCP
    destination: {ports: [80]}
  - action: Pass
";

const STAGED: &str = "apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: lock-b, namespace: x}
spec:
  selector: app == 'b'
  order: 1
  types: [Ingress]
  ingress:
  - {action: Deny, protocol: TCP, destination: {ports: [80]}}
";

#[test]
fn log_rules_and_staged_policies_reach_the_agent_log() {
    if !root_or_skip("policy log e2e") {
        return;
    }
    let lab = Lab::up(&format!("tl{}", std::process::id() % 100_000), 2);
    lab.ok(&[
        "lab", "pod", "add", "x/a", "--node", "n1", "--labels", "app=a", "--serve", "80/tcp",
    ]);
    lab.ok(&[
        "lab", "pod", "add", "x/b", "--node", "n2", "--labels", "app=b", "--serve", "80/tcp",
    ]);
    let state = lab.state();
    let ip = |pod: &str| {
        state["pods"][pod]["ips"][0]
            .as_str()
            .unwrap_or_else(|| panic!("no address for {pod} in {state}"))
            .to_string()
    };
    let (a_ip, b_ip) = (ip("x/a"), ip("x/b"));

    lab.ok_stdin(&["apply", "-f", "-"], AUDIT);
    lab.ok_stdin(&["apply", "-f", "-"], STAGED);
    lab.wait_synced(1);
    assert!(
        lab.probe("x/a", "x/b", 80),
        "the staged deny is not enforced"
    );

    // Both on b's node (n2): the Log rule, then the staged preview's verdict.
    let line = lab.wait_agent_log(
        "n2",
        &["policy log", "rule=\"gnp/audit-b ingress[0]\"", &b_ip],
    );
    assert!(line.contains(&format!("src={a_ip}")), "{line}");
    assert!(line.contains("dst_port=80"), "{line}");
    assert!(
        !line.contains('\u{1b}'),
        "plain text in a log file: {line:?}"
    );
    let line = lab.wait_agent_log(
        "n2",
        &[
            "policy log",
            "staged=\"deny\"",
            "rule=\"snp/x/lock-b ingress[0]\"",
        ],
    );
    assert!(line.contains(&format!("dst={b_ip}")), "{line}");

    // Enforce it: the same verdict, now for real.
    lab.ok_stdin(
        &["apply", "-f", "-"],
        &STAGED
            .replace("kind: StagedNetworkPolicy", "kind: NetworkPolicy")
            .replace("name: lock-b", "name: lock-b-enforced"),
    );
    lab.wait_synced(2);
    assert!(!lab.probe("x/a", "x/b", 80), "the enforced copy denies");
}
