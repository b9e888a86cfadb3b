//! The lab's underlay as data: the steps that build the fabric, a node, a host or an empty
//! pod namespace, and the one place that executes them.
//!
//! Invariant (unit-tested): no step touches the root namespace. Every `ip` step either
//! creates/deletes a named namespace or carries `-n <lab namespace>`, and veth peers are
//! created inside the fabric namespace with the other end moved straight into its node or
//! host namespace.

use std::fmt;
use std::process::Command;

use crate::netns;
use crate::state::{BRIDGE, HostState, NodeState, Plan, UNDERLAY_V4_PREFIX, UNDERLAY_V6_PREFIX};

/// One side effect on the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `ip <args>`.
    Ip(Vec<String>),
    /// A sysctl written from inside `netns`, `key` relative to `/proc/sys`.
    Sysctl {
        netns: String,
        key: String,
        value: String,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Ip(args) => write!(f, "ip {}", args.join(" ")),
            Step::Sysctl { netns, key, value } => {
                write!(f, "sysctl {} = {value} in {netns}", key.replace('/', "."))
            }
        }
    }
}

/// Errors executing a step.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("`{step}` could not start")]
    Spawn {
        step: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{step}` failed: {stderr}")]
    Failed { step: String, stderr: String },
    #[error(transparent)]
    Sysctl(#[from] netns::SysctlError),
}

fn ip(args: &[&str]) -> Step {
    Step::Ip(args.iter().map(|a| a.to_string()).collect())
}

fn new_netns(name: &str) -> Vec<Step> {
    vec![
        ip(&["netns", "add", name]),
        ip(&["-n", name, "link", "set", "lo", "up"]),
    ]
}

/// The fabric namespace with its bridge.
pub fn fabric_steps(plan: &Plan) -> Vec<Step> {
    let fab = plan.fabric_netns();
    let mut steps = new_netns(&fab);
    steps.push(ip(&["-n", &fab, "link", "add", BRIDGE, "type", "bridge"]));
    steps.push(ip(&["-n", &fab, "link", "set", BRIDGE, "up"]));
    steps
}

/// A namespace on the bridge: veth `link` in the fabric, `eth0` inside with both addresses.
fn attach_steps(plan: &Plan, netns: &str, link: &str, v4: String, v6: String) -> Vec<Step> {
    let fab = plan.fabric_netns();
    let mut steps = new_netns(netns);
    steps.extend([
        ip(&[
            "-n", &fab, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", netns,
        ]),
        ip(&["-n", &fab, "link", "set", link, "master", BRIDGE, "up"]),
        ip(&["-n", netns, "addr", "add", &v4, "dev", "eth0"]),
        ip(&["-n", netns, "addr", "add", &v6, "dev", "eth0", "nodad"]),
        ip(&["-n", netns, "link", "set", "eth0", "up"]),
    ]);
    steps
}

/// A node: attached to the bridge, forwarding on.
pub fn node_steps(plan: &Plan, node: &NodeState) -> Vec<Step> {
    let mut steps = attach_steps(
        plan,
        &node.netns,
        &node.fabric_link,
        format!("{}/{UNDERLAY_V4_PREFIX}", node.ipv4),
        format!("{}/{UNDERLAY_V6_PREFIX}", node.ipv6),
    );
    for key in ["net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"] {
        steps.push(Step::Sysctl {
            netns: node.netns.clone(),
            key: key.into(),
            value: "1".into(),
        });
    }
    steps
}

/// A plain host on the bridge.
pub fn host_steps(plan: &Plan, host: &HostState) -> Vec<Step> {
    attach_steps(
        plan,
        &host.netns,
        &host.fabric_link,
        format!("{}/{UNDERLAY_V4_PREFIX}", host.ipv4),
        format!("{}/{UNDERLAY_V6_PREFIX}", host.ipv6),
    )
}

/// An empty pod namespace with loopback up (the CNI plugin adds `eth0`).
pub fn pod_netns_steps(netns: &str) -> Vec<Step> {
    new_netns(netns)
}

/// Deleting one namespace (its veths go with it).
pub fn delete_netns_step(netns: &str) -> Step {
    ip(&["netns", "delete", netns])
}

/// Executes steps in order, stopping at the first failure.
pub fn run(steps: &[Step]) -> Result<(), StepError> {
    steps.iter().try_for_each(run_one)
}

/// Executes one step.
pub fn run_one(step: &Step) -> Result<(), StepError> {
    match step {
        Step::Ip(args) => {
            let out =
                Command::new("ip")
                    .args(args)
                    .output()
                    .map_err(|source| StepError::Spawn {
                        step: step.to_string(),
                        source,
                    })?;
            if out.status.success() {
                Ok(())
            } else {
                Err(StepError::Failed {
                    step: step.to_string(),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                })
            }
        }
        Step::Sysctl { netns, key, value } => Ok(netns::write_sysctl(netns, key, value)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(plan: &Plan, i: usize) -> NodeState {
        NodeState {
            name: Plan::node_name(i),
            netns: plan.node_netns(i),
            ipv4: Plan::node_ipv4(i),
            ipv6: Plan::node_ipv6(i),
            fabric_link: format!("n{i}"),
            agent: None,
        }
    }

    fn host(plan: &Plan) -> HostState {
        HostState {
            name: "ext".into(),
            index: 1,
            netns: plan.host_netns("ext"),
            ipv4: Plan::host_ipv4(1),
            ipv6: Plan::host_ipv6(1),
            fabric_link: "h1".into(),
            serve: vec![],
            server: None,
        }
    }

    fn render(steps: &[Step]) -> Vec<String> {
        steps.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn node_steps_wire_the_node_to_the_bridge() {
        let plan = Plan::new("lab").unwrap();
        assert_eq!(
            render(&node_steps(&plan, &node(&plan, 2))),
            [
                "ip netns add lab-n2",
                "ip -n lab-n2 link set lo up",
                "ip -n lab-fab link add n2 type veth peer name eth0 netns lab-n2",
                "ip -n lab-fab link set n2 master br0 up",
                "ip -n lab-n2 addr add 198.18.0.12/24 dev eth0",
                "ip -n lab-n2 addr add fd00:198:18::12/64 dev eth0 nodad",
                "ip -n lab-n2 link set eth0 up",
                "sysctl net.ipv4.ip_forward = 1 in lab-n2",
                "sysctl net.ipv6.conf.all.forwarding = 1 in lab-n2",
            ]
        );
    }

    #[test]
    fn no_step_touches_the_root_namespace() {
        let plan = Plan::new("lab").unwrap();
        let mut all = fabric_steps(&plan);
        all.extend(node_steps(&plan, &node(&plan, 1)));
        all.extend(host_steps(&plan, &host(&plan)));
        all.extend(pod_netns_steps(&plan.pod_netns("x", "a")));
        all.push(delete_netns_step(&plan.node_netns(1)));
        for step in &all {
            match step {
                Step::Ip(args) => {
                    let a: Vec<&str> = args.iter().map(String::as_str).collect();
                    let ok = match a.as_slice() {
                        ["netns", "add" | "delete", ns] => plan.owns_netns(ns),
                        ["-n", ns, ..] => plan.owns_netns(ns),
                        _ => false,
                    };
                    assert!(ok, "{step} may touch the root namespace");
                    // Every namespace named anywhere (e.g. a veth peer's `netns X`) is ours.
                    for w in a.windows(2).filter(|w| w[0] == "netns") {
                        let named = match w[1] {
                            "add" | "delete" => a.last().copied().unwrap_or(""),
                            n => n,
                        };
                        assert!(plan.owns_netns(named), "{step}");
                    }
                }
                Step::Sysctl { netns, .. } => assert!(plan.owns_netns(netns), "{step}"),
            }
        }
    }

    #[test]
    fn host_steps_use_the_host_addresses_and_no_forwarding() {
        let plan = Plan::new("lab").unwrap();
        let r = render(&host_steps(&plan, &host(&plan)));
        assert!(r.contains(&"ip -n lab-h-ext addr add 198.18.0.101/24 dev eth0".to_string()));
        assert!(r.iter().all(|s| !s.starts_with("sysctl")));
    }
}
