//! `lab exec`, `lab probe` and `lab matrix`: reaching into the lab's namespaces.
//!
//! A target is `NS/NAME` (a pod), or the name of a host, or of a node (`n1` or its
//! namespace name).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use crate::probe::{self, Job};
use crate::spec::{PortProto, Protocol, parse_list, parse_port};
use crate::state::{LabState, Plan};
use crate::{ExecArgs, MatrixArgs, ProbeArgs};

/// A resolved target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub netns: String,
    pub ips: Vec<IpAddr>,
}

impl Target {
    /// The first address of the family asked for.
    pub fn address(&self, ipv6: bool) -> anyhow::Result<IpAddr> {
        self.ips
            .iter()
            .copied()
            .find(|ip| ip.is_ipv6() == ipv6)
            .ok_or_else(|| {
                anyhow!(
                    "{} has no IPv{} address",
                    self.name,
                    if ipv6 { 6 } else { 4 }
                )
            })
    }
}

/// Finds a pod, host or node by the name a user typed.
pub fn resolve(state: &LabState, name: &str) -> anyhow::Result<Target> {
    if name.contains('/') {
        let p = state
            .pods
            .get(name)
            .ok_or_else(|| anyhow!("lab {} has no pod {name}", state.name))?;
        return Ok(Target {
            name: name.to_string(),
            netns: p.netns.clone(),
            ips: p.ips.iter().filter_map(|ip| ip.parse().ok()).collect(),
        });
    }
    if let Some(h) = state.hosts.get(name) {
        return Ok(Target {
            name: name.to_string(),
            netns: h.netns.clone(),
            ips: vec![h.ipv4.into(), h.ipv6.into()],
        });
    }
    if let Some(n) = state.node(name) {
        return Ok(Target {
            name: n.name.clone(),
            netns: n.netns.clone(),
            ips: vec![n.ipv4.into(), n.ipv6.into()],
        });
    }
    bail!(
        "lab {} has no pod, host or node named {name:?} (pods are NS/NAME)",
        state.name
    )
}

/// `lab exec`: runs the command in the target's namespace with inherited stdio and passes its
/// exit code through (128+N when killed by signal N).
pub fn exec(plan: &Plan, args: &ExecArgs) -> anyhow::Result<ExitCode> {
    let state = LabState::load(plan)?;
    let target = resolve(&state, &args.target)?;
    let status = Command::new("ip")
        .args(["netns", "exec", &target.netns])
        .args(&args.command)
        .status()
        .context("cannot run ip netns exec")?;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(ExitCode::from(u8::try_from(code).unwrap_or(1)))
}

/// `lab probe`: prints `allowed` or `denied` (exit 0 either way; 1 only on errors).
pub fn probe_cmd(plan: &Plan, args: &ProbeArgs) -> anyhow::Result<ExitCode> {
    let state = LabState::load(plan)?;
    let from = resolve(&state, &args.from)?;
    let to = resolve(&state, &args.to)?;
    let addr = to.address(args.ipv6)?;
    let pp = PortProto::new(args.port, args.protocol);
    let ok = probe::probe(
        &from.netns,
        addr,
        pp,
        Duration::from_millis(args.timeout_ms),
    )?;
    println!("{}", if ok { "allowed" } else { "denied" });
    Ok(ExitCode::SUCCESS)
}

/// The port/protocol combinations a matrix covers: the cartesian product of what was given,
/// with anything not given taken from what the pods serve (80/tcp when none serve anything).
pub fn matrix_ports(
    state: &LabState,
    ports: Option<&str>,
    protocols: Option<&str>,
) -> anyhow::Result<Vec<PortProto>> {
    let served: BTreeSet<PortProto> = state.pods.values().flat_map(|p| p.serve.clone()).collect();
    let ports = ports
        .map(|s| parse_list(s, parse_port))
        .transpose()
        .map_err(|e| anyhow!("--ports: {e}"))?;
    let protocols = protocols
        .map(|s| parse_list(s, |p| p.parse::<Protocol>()))
        .transpose()
        .map_err(|e| anyhow!("--protocols: {e}"))?;
    let out: Vec<PortProto> = match (ports, protocols) {
        (None, None) if served.is_empty() => vec![PortProto::new(80, Protocol::Tcp)],
        (None, None) => served.into_iter().collect(),
        (ports, protocols) => {
            let ports = ports.unwrap_or_else(|| {
                let mut p: Vec<u16> = served.iter().map(|s| s.port).collect();
                p.dedup();
                if p.is_empty() { vec![80] } else { p }
            });
            let protocols = protocols.unwrap_or_else(|| {
                let mut p: Vec<Protocol> = served.iter().map(|s| s.protocol).collect();
                p.sort();
                p.dedup();
                if p.is_empty() { vec![Protocol::Tcp] } else { p }
            });
            let mut v: Vec<PortProto> = ports
                .iter()
                .flat_map(|port| protocols.iter().map(|pr| PortProto::new(*port, *pr)))
                .collect();
            v.sort();
            v
        }
    };
    Ok(out)
}

/// The matrix's jobs: every ordered pod pair for every port/protocol.
pub fn matrix_jobs(state: &LabState, pps: &[PortProto], ipv6: bool) -> Vec<Job> {
    let mut jobs = Vec::new();
    for pp in pps {
        for from in state.pods.values() {
            for to in state.pods.values() {
                let Some(to_ip) = to
                    .ips
                    .iter()
                    .filter_map(|ip| ip.parse::<IpAddr>().ok())
                    .find(|ip| ip.is_ipv6() == ipv6)
                else {
                    continue;
                };
                jobs.push(Job {
                    pp: *pp,
                    from: from.key(),
                    from_netns: from.netns.clone(),
                    to: to.key(),
                    to_ip,
                });
            }
        }
    }
    jobs
}

/// `lab matrix`.
pub fn matrix_cmd(plan: &Plan, args: &MatrixArgs) -> anyhow::Result<ExitCode> {
    let state = LabState::load(plan)?;
    if state.pods.is_empty() {
        bail!(
            "lab {} has no pods; add some with `tortie lab pod add`",
            plan.lab
        );
    }
    let pps = matrix_ports(&state, args.ports.as_deref(), args.protocols.as_deref())?;
    let jobs = matrix_jobs(&state, &pps, args.ipv6);
    let m = probe::run_matrix(
        &jobs,
        Duration::from_millis(args.timeout_ms),
        usize::from(args.parallel),
    );
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        print!("{}", probe::render_table(&m));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{DatastoreState, PodState};
    use std::collections::BTreeMap;

    fn state_with_pods() -> LabState {
        let plan = Plan::new("lab").unwrap();
        let mut pods = BTreeMap::new();
        for (key, ip, serve) in [
            ("x/a", "10.244.0.1", vec![PortProto::new(80, Protocol::Tcp)]),
            ("y/b", "10.244.1.1", vec![PortProto::new(81, Protocol::Udp)]),
        ] {
            let r: crate::spec::PodRef = key.parse().unwrap();
            pods.insert(
                key.to_string(),
                PodState {
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                    node: "n1".into(),
                    netns: plan.pod_netns(&r.namespace, &r.name),
                    container_id: "c".into(),
                    ips: vec![ip.into(), "fd00:10:244::1".into()],
                    labels: BTreeMap::new(),
                    serve,
                    server: None,
                },
            );
        }
        LabState {
            version: 1,
            name: "lab".into(),
            created: String::new(),
            fabric_netns: plan.fabric_netns(),
            datastore: DatastoreState {
                kind: "embedded".into(),
                url: "file:/x".into(),
                etcd: None,
            },
            nodes: vec![],
            hosts: BTreeMap::new(),
            pods,
            routing: String::new(),
        }
    }

    fn strs(v: &[PortProto]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn matrix_ports_default_to_what_pods_serve() {
        let s = state_with_pods();
        assert_eq!(
            strs(&matrix_ports(&s, None, None).unwrap()),
            ["80/tcp", "81/udp"]
        );
        assert_eq!(
            strs(&matrix_ports(&s, Some("80,81"), Some("tcp,udp")).unwrap()),
            ["80/tcp", "80/udp", "81/tcp", "81/udp"]
        );
        assert_eq!(
            strs(&matrix_ports(&s, Some("90"), None).unwrap()),
            ["90/tcp", "90/udp"]
        );
        assert!(matrix_ports(&s, Some("x"), None).is_err());
    }

    #[test]
    fn matrix_jobs_cover_every_ordered_pair() {
        let s = state_with_pods();
        let jobs = matrix_jobs(&s, &[PortProto::new(80, Protocol::Tcp)], false);
        let pairs: Vec<(String, String, String)> = jobs
            .iter()
            .map(|j| (j.from.clone(), j.to.clone(), j.to_ip.to_string()))
            .collect();
        assert_eq!(pairs.len(), 4);
        assert!(pairs.contains(&("x/a".into(), "y/b".into(), "10.244.1.1".into())));
        let v6 = matrix_jobs(&s, &[PortProto::new(80, Protocol::Tcp)], true);
        assert!(v6.iter().all(|j| j.to_ip.is_ipv6()));
    }

    #[test]
    fn targets_resolve_pods_hosts_and_nodes() {
        let s = state_with_pods();
        let t = resolve(&s, "x/a").unwrap();
        assert_eq!(t.address(false).unwrap().to_string(), "10.244.0.1");
        assert_eq!(t.address(true).unwrap().to_string(), "fd00:10:244::1");
        assert!(resolve(&s, "x/zz").is_err());
        assert!(resolve(&s, "nope").is_err());
    }
}
