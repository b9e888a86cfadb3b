//! `lab up`: claims the state dir, builds the underlay and the nodes, starts the datastore,
//! seeds it as calico-node would, starts one agent per node and waits (bounded) until every
//! agent is ready. Each step is recorded in `state.json` before it runs, so a failure (or a
//! crash) leaves enough behind for `down`; on failure `up` runs `down` itself and exits 1.

use std::collections::BTreeMap;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::state::{
    AgentState, DatastoreState, LAB_ROOT, LabState, NodeState, Plan, ProcessRecord, STATE_VERSION,
    UNDERLAY_V4_PREFIX, UNDERLAY_V6_PREFIX,
};
use crate::status::{Readiness, readiness};
use crate::{UpArgs, datastore, down, netns, process, serve, topology};

/// How long agents get to become ready.
pub const AGENT_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Which datastore `up` starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatastoreKind {
    Embedded,
    Etcd,
}

impl DatastoreKind {
    /// Reads the global `--datastore` flag as given to `lab up`.
    pub fn from_flag(flag: Option<&str>) -> anyhow::Result<Self> {
        match flag {
            None | Some("embedded") => Ok(DatastoreKind::Embedded),
            Some("etcd") => Ok(DatastoreKind::Etcd),
            Some(other) => bail!(
                "lab up --datastore {other:?}: expected embedded or etcd (the lab runs its own datastore)"
            ),
        }
    }
}

/// Runs `down` on drop unless disarmed (covers panics as well as errors).
struct Teardown<'a> {
    plan: &'a Plan,
    armed: bool,
}

impl Drop for Teardown<'_> {
    fn drop(&mut self) {
        if self.armed {
            eprintln!("lab up failed; removing what it made");
            eprint!("{}", down::down(self.plan));
        }
    }
}

/// `lab up`.
pub async fn up(plan: &Plan, args: &UpArgs, flag: Option<&str>) -> anyhow::Result<ExitCode> {
    let kind = DatastoreKind::from_flag(flag)?;
    let leftovers = netns::list_with_prefix(&plan.prefix());
    if plan.state_dir().exists() || !leftovers.is_empty() {
        bail!(
            "lab {} already exists (or left things behind); run `tortie lab down --name {}` first",
            plan.lab,
            plan.lab
        );
    }
    std::fs::create_dir_all(LAB_ROOT).with_context(|| format!("cannot create {LAB_ROOT}"))?;
    match std::fs::create_dir(plan.state_dir()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => bail!(
            "lab {} is being created by another command; run `tortie lab down --name {}` if that one died",
            plan.lab,
            plan.lab
        ),
        Err(e) => return Err(e).context(format!("cannot create {}", plan.state_dir().display())),
    }
    let mut guard = Teardown { plan, armed: true };
    match build(plan, args, kind).await {
        Ok(state) => {
            guard.armed = false;
            print!("{}", summary(&state));
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            drop(guard);
            Ok(ExitCode::FAILURE)
        }
    }
}

fn node_state(plan: &Plan, i: usize) -> NodeState {
    NodeState {
        name: Plan::node_name(i),
        netns: plan.node_netns(i),
        ipv4: Plan::node_ipv4(i),
        ipv6: Plan::node_ipv6(i),
        fabric_link: format!("n{i}"),
        agent: None,
    }
}

async fn build(plan: &Plan, args: &UpArgs, kind: DatastoreKind) -> anyhow::Result<LabState> {
    let nodes = usize::from(args.nodes);
    let agents = !args.no_agents;
    let mut state = LabState {
        version: STATE_VERSION,
        name: plan.lab.clone(),
        created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        fabric_netns: plan.fabric_netns(),
        datastore: DatastoreState {
            kind: "embedded".into(),
            url: format!("file:{}", plan.state_dir().join("store.db").display()),
            etcd: None,
        },
        nodes: (1..=nodes).map(|i| node_state(plan, i)).collect(),
        hosts: BTreeMap::new(),
        pods: BTreeMap::new(),
        routing: args.routing.clone(),
    };
    state.save()?;
    topology::run(&topology::fabric_steps(plan))?;
    for node in &state.nodes {
        topology::run(&topology::node_steps(plan, node))?;
    }
    if kind == DatastoreKind::Etcd {
        let etcd = datastore::start_etcd(plan)?;
        state.datastore = DatastoreState {
            kind: "etcd".into(),
            url: etcd.url.clone(),
            etcd: Some(etcd.record.clone()),
        };
        state.save()?;
        etcd.wait_ready().await?;
    }
    let store = datastore::open(&state.datastore.url).await?;
    let pools = datastore::seed(store.as_ref()).await?;
    drop(store);
    if !pools.is_empty() {
        println!("created IP pools {}", pools.join(", "));
    }
    if agents {
        for i in 0..state.nodes.len() {
            let agent = start_agent(plan, &state.nodes[i], &state.datastore.url, &state.routing)?;
            state.nodes[i].agent = Some(agent);
            state.save()?;
        }
        wait_agents_ready(&state).await?;
    }
    Ok(state)
}

fn start_agent(
    plan: &Plan,
    node: &NodeState,
    url: &str,
    routing: &str,
) -> anyhow::Result<AgentState> {
    let health = format!("127.0.0.1:{}", datastore::free_port()?);
    let host_netns = netns::path(&node.netns).display().to_string();
    let mut cmd = Command::new(serve::tortie_bin()?);
    cmd.args(["agent", "--node", &node.name])
        .args(["--node-ip", &format!("{}/{UNDERLAY_V4_PREFIX}", node.ipv4)])
        .args([
            "--node-ipv6",
            &format!("{}/{UNDERLAY_V6_PREFIX}", node.ipv6),
        ])
        .args(["--host-netns", &host_netns])
        .args(["--health-listen", &health])
        .args(["--routing", if routing == "bgp" { "bgp" } else { "static" }])
        .args(["--datastore", url]);
    let log = plan.state_dir().join(format!("agent-{}.log", node.name));
    let child = process::spawn_logged(cmd, &log)
        .with_context(|| format!("cannot start the agent for node {}", node.name))?;
    Ok(AgentState {
        process: ProcessRecord {
            pid: child.id(),
            marker: host_netns,
            log,
        },
        health,
    })
}

/// Polls every agent's `/readiness` until all answer 200, one dies, or the timeout passes.
async fn wait_agents_ready(state: &LabState) -> anyhow::Result<()> {
    let deadline = Instant::now() + AGENT_READY_TIMEOUT;
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let mut pending = 0;
        for node in &state.nodes {
            let Some(agent) = &node.agent else { continue };
            if !process::alive(agent.process.pid) {
                bail!(
                    "the agent of node {} exited (log {}):\n{}",
                    node.name,
                    agent.process.log.display(),
                    datastore::tail(&agent.process.log)
                );
            }
            match readiness(&agent.health, Duration::from_secs(1)) {
                Readiness::Ready => {
                    last.remove(&node.name);
                }
                other => {
                    pending += 1;
                    last.insert(node.name.clone(), other.to_string());
                }
            }
        }
        if pending == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let why: Vec<String> = last.iter().map(|(n, r)| format!("  {n}: {r}")).collect();
            bail!(
                "agents not ready within {}s:\n{}\n(logs in {})",
                AGENT_READY_TIMEOUT.as_secs(),
                why.join("\n"),
                state.plan().state_dir().display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What `up` prints when it is done.
pub fn summary(state: &LabState) -> String {
    let mut rows = vec![vec![
        "NODE".to_string(),
        "NETNS".into(),
        "IPV4".into(),
        "IPV6".into(),
        "AGENT PID".into(),
        "HEALTH".into(),
    ]];
    for n in &state.nodes {
        let (pid, health) = match &n.agent {
            Some(a) => (a.process.pid.to_string(), a.health.clone()),
            None => ("-".into(), "-".into()),
        };
        rows.push(vec![
            n.name.clone(),
            n.netns.clone(),
            n.ipv4.to_string(),
            n.ipv6.to_string(),
            pid,
            health,
        ]);
    }
    let name = &state.name;
    format!(
        "lab {name} is up: {} node(s), datastore {}\n\n{}\n\
         Next:\n  eval \"$(tortie lab env --name {name})\"   # plain tortie commands use the lab's datastore\n  \
         tortie lab pod add x/a --node n1 --serve 80/tcp,80/udp --name {name}\n  \
         tortie lab matrix --name {name}\n  \
         tortie lab down --name {name}\n",
        state.nodes.len(),
        state.datastore.url,
        crate::status::table(&rows)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datastore_flag() {
        assert_eq!(
            DatastoreKind::from_flag(None).unwrap(),
            DatastoreKind::Embedded
        );
        assert_eq!(
            DatastoreKind::from_flag(Some("embedded")).unwrap(),
            DatastoreKind::Embedded
        );
        assert_eq!(
            DatastoreKind::from_flag(Some("etcd")).unwrap(),
            DatastoreKind::Etcd
        );
        assert!(DatastoreKind::from_flag(Some("file:/x")).is_err());
    }
}
