//! `lab pod add|delete` and `lab host add`.
//!
//! `pod add` does what a kubelet and a container runtime do: the Pod record, the pod's
//! namespace, the CNI plugin's ADD, then (lab extra) the built-in server. If any step fails,
//! every earlier one is undone (CNI DEL, namespace, Pod record) and the error is returned.
//! `pod delete` undoes them all, collecting every error; the pod stays in `state.json` until
//! a delete succeeds, so it can be retried.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use sha2::{Digest, Sha256};
use tortie_store::Store;

use crate::cni::{self, CniCommand, PodNetwork};
use crate::spec::{PodRef, PortProto};
use crate::state::{self, HostState, LabState, NodeState, Plan, PodState, ProcessRecord};
use crate::{HostAddArgs, PodAddArgs, datastore, netns, process, serve, topology};

/// A container ID as runtimes make them: 64 hex digits, unique per pod incarnation.
fn container_id(plan: &Plan, pod: &PodRef) -> String {
    let seed = format!(
        "{}/{pod}/{}/{}",
        plan.lab,
        std::process::id(),
        uuid::Uuid::new_v4()
    );
    Sha256::digest(seed.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads the state without the lock (`state.json` is replaced atomically); changes go
/// through [`state::update`].
fn read_state(plan: &Plan) -> anyhow::Result<LabState> {
    Ok(LabState::load(plan)?)
}

/// Where the CNI plugin is and the `CNI_PATH` that goes with it.
fn plugin() -> anyhow::Result<(PathBuf, PathBuf)> {
    let bin = cni::plugin_path()?;
    if !bin.is_file() {
        bail!(
            "CNI plugin not found at {} (build it, or set {})",
            bin.display(),
            cni::ENV_CNI_BIN
        );
    }
    let dir = bin.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok((bin, dir))
}

/// Everything a pod add made so far, for rollback.
struct Made<'a> {
    store: &'a dyn Store,
    pod: &'a PodRef,
    record: bool,
    netns: Option<&'a str>,
    cni: Option<(&'a Path, &'a Path, PodNetwork<'a>)>,
    server: Option<ProcessRecord>,
}

impl Made<'_> {
    /// Undoes everything, newest first; returns every error.
    async fn undo(self) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(rec) = &self.server
            && process::still_ours(rec)
        {
            process::terminate(&[rec.pid].into());
        }
        if let Some((bin, dir, net)) = &self.cni {
            let inv = cni::invocation(CniCommand::Del, net, dir);
            if let Err(e) = cni::execute(bin, &inv).await {
                errors.push(format!("{e:#}"));
            }
        }
        if let Some(ns) = self.netns
            && netns::exists(ns)
            && let Err(e) = topology::run_one(&topology::delete_netns_step(ns))
        {
            errors.push(e.to_string());
        }
        if self.record
            && let Err(e) = datastore::delete_pod(self.store, self.pod).await
        {
            errors.push(format!("{e:#}"));
        }
        errors
    }
}

/// A validated `pod add` request.
struct PodPlan {
    pod: PodRef,
    key: String,
    node: NodeState,
    netns: String,
    labels: BTreeMap<String, String>,
    serve: Vec<PortProto>,
    service_account: Option<String>,
    ip: Option<String>,
    datastore: String,
}

/// Checks the request against the lab before anything is made.
fn prepare(plan: &Plan, args: PodAddArgs) -> anyhow::Result<PodPlan> {
    let state = read_state(plan)?;
    let pod = args.pod;
    let key = pod.to_string();
    let node = state
        .node(&args.node)
        .ok_or_else(|| anyhow!("lab {} has no node {:?}", plan.lab, args.node))?
        .clone();
    if state.pods.contains_key(&key) {
        bail!(
            "pod {key} already exists in lab {}; delete it first",
            plan.lab
        );
    }
    let netns = plan.pod_netns(&pod.namespace, &pod.name);
    if netns::exists(&netns) {
        bail!(
            "namespace {netns} for pod {key} already exists (left over? `tortie lab down` removes it)"
        );
    }
    for ip in args.ip.iter().flat_map(|list| list.split(',')) {
        if ip
            .trim()
            .split('/')
            .next()
            .and_then(|a| a.parse::<IpAddr>().ok())
            .is_none()
        {
            bail!("--ip {ip:?} is not an IP address");
        }
    }
    Ok(PodPlan {
        pod,
        key,
        node,
        netns,
        labels: args.labels.map(|l| l.0).unwrap_or_default(),
        serve: args.serve.map(|s| s.0).unwrap_or_default(),
        service_account: args.service_account,
        ip: args.ip,
        datastore: state.datastore.url,
    })
}

/// `lab pod add`.
pub async fn pod_add(plan: &Plan, args: PodAddArgs) -> anyhow::Result<ExitCode> {
    let p = prepare(plan, args)?;
    let record = datastore::pod_resource(
        &p.pod,
        &p.node.name,
        &p.labels,
        &p.serve,
        p.service_account.as_deref(),
    )?;
    let (bin, cni_dir) = plugin()?;
    let store = datastore::open(&p.datastore).await?;
    let cid = container_id(plan, &p.pod);
    let net = PodNetwork {
        pod: &p.pod,
        container_id: &cid,
        pod_netns: &p.netns,
        node: &p.node.name,
        node_netns: &p.node.netns,
        datastore: &p.datastore,
        ip: p.ip.as_deref(),
    };
    let mut made = Made {
        store: store.as_ref(),
        pod: &p.pod,
        record: false,
        netns: None,
        cni: None,
        server: None,
    };
    let outcome = async {
        // The namespace first: `ip netns add` failing on an existing one keeps two concurrent
        // adds of the same pod from undoing each other.
        let steps = topology::pod_netns_steps(&p.netns);
        if let Some((add, rest)) = steps.split_first() {
            topology::run_one(add)?;
            made.netns = Some(&p.netns);
            topology::run(rest)?;
        }
        datastore::put_pod(store.as_ref(), record).await?;
        made.record = true;
        made.cni = Some((&bin, &cni_dir, net.clone()));
        let result = cni::execute(&bin, &cni::invocation(CniCommand::Add, &net, &cni_dir)).await?;
        let ips = cni::result_ips(&result);
        if ips.is_empty() {
            bail!("{} ADD returned no addresses: {result}", cni::PLUGIN);
        }
        if let Err(e) = datastore::set_pod_ips(store.as_ref(), &p.pod, &ips).await {
            eprintln!("warning: could not record the pod's IPs in its Pod record: {e:#}");
        }
        if !p.serve.is_empty() {
            let log = plan.state_dir().join(format!("serve-{}.log", p.netns));
            made.server = Some(serve::spawn(&p.netns, &p.serve, &log)?);
        }
        record_pod(plan, &p, &cid, ips, made.server.clone())
    }
    .await;
    match outcome {
        Ok(pod) => {
            println!(
                "pod {} on {}: netns {}, IPs {}{}",
                p.key,
                pod.node,
                pod.netns,
                pod.ips.join(", "),
                serving(&pod.serve)
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            for u in made.undo().await {
                eprintln!("error while rolling back pod {}: {u}", p.key);
            }
            Err(e.context(format!("pod add {} failed; rolled back", p.key)))
        }
    }
}

/// Adds the wired pod to `state.json`.
fn record_pod(
    plan: &Plan,
    p: &PodPlan,
    container_id: &str,
    ips: Vec<String>,
    server: Option<ProcessRecord>,
) -> anyhow::Result<PodState> {
    let pod = PodState {
        namespace: p.pod.namespace.clone(),
        name: p.pod.name.clone(),
        node: p.node.name.clone(),
        netns: p.netns.clone(),
        container_id: container_id.to_string(),
        ips,
        labels: p.labels.clone(),
        serve: p.serve.clone(),
        server,
    };
    state::update(plan, |s| {
        if s.pods.contains_key(&p.key) {
            bail!("pod {} was added by another command meanwhile", p.key);
        }
        s.pods.insert(p.key.clone(), pod.clone());
        Ok(())
    })?;
    Ok(pod)
}

fn serving(ports: &[PortProto]) -> String {
    if ports.is_empty() {
        String::new()
    } else {
        let p: Vec<String> = ports.iter().map(ToString::to_string).collect();
        format!(", serving {}", p.join(","))
    }
}

/// `lab pod delete`.
pub async fn pod_delete(plan: &Plan, pod: &PodRef) -> anyhow::Result<ExitCode> {
    let state = read_state(plan)?;
    let key = pod.to_string();
    let Some(p) = state.pods.get(&key).cloned() else {
        bail!("lab {} has no pod {key}", plan.lab);
    };
    let node = state.node(&p.node).ok_or_else(|| {
        anyhow!(
            "pod {key} names node {} which the lab does not have",
            p.node
        )
    })?;
    let (bin, cni_dir) = plugin()?;
    let store = datastore::open(&state.datastore.url).await?;
    let net = PodNetwork {
        pod,
        container_id: &p.container_id,
        pod_netns: &p.netns,
        node: &node.name,
        node_netns: &node.netns,
        datastore: &state.datastore.url,
        ip: None,
    };
    let made = Made {
        store: store.as_ref(),
        pod,
        record: true,
        netns: Some(&p.netns),
        cni: Some((&bin, &cni_dir, net)),
        server: p.server.clone(),
    };
    let errors = made.undo().await;
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("error: {e}");
        }
        eprintln!("pod {key} is kept in the lab's state; `tortie lab pod delete {key}` retries");
        return Ok(ExitCode::FAILURE);
    }
    state::update(plan, |s| {
        s.pods.remove(&key);
        Ok(())
    })?;
    println!("pod {key} deleted");
    Ok(ExitCode::SUCCESS)
}

/// Checks a host name: 1-20 of `[a-z0-9-]`, starting and ending with a letter or digit.
pub fn validate_host_name(name: &str) -> anyhow::Result<()> {
    let ok = (1..=20).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        bail!("invalid host name {name:?}: use 1-20 lower-case letters, digits and '-'")
    }
}

/// `lab host add`.
pub fn host_add(plan: &Plan, args: HostAddArgs) -> anyhow::Result<ExitCode> {
    validate_host_name(&args.host)?;
    let serve = args.serve.map(|s| s.0).unwrap_or_default();
    let host = state::update(plan, |s| {
        if s.hosts.contains_key(&args.host) {
            bail!("lab {} already has a host {}", plan.lab, args.host);
        }
        if s.node(&args.host).is_some() {
            bail!("{} is a node name; pick another host name", args.host);
        }
        let k = s
            .next_host_index()
            .ok_or_else(|| anyhow!("lab {} has no room for more hosts", plan.lab))?;
        let mut host = HostState {
            name: args.host.clone(),
            index: k,
            netns: plan.host_netns(&args.host),
            ipv4: Plan::host_ipv4(k),
            ipv6: Plan::host_ipv6(k),
            fabric_link: format!("h{k}"),
            serve: serve.clone(),
            server: None,
        };
        if netns::exists(&host.netns) {
            bail!("namespace {} already exists", host.netns);
        }
        let made = topology::run(&topology::host_steps(plan, &host));
        let server = match made {
            Ok(()) if !serve.is_empty() => {
                let log = plan.state_dir().join(format!("serve-{}.log", host.netns));
                serve::spawn(&host.netns, &serve, &log).map(Some)
            }
            Ok(()) => Ok(None),
            Err(e) => Err(anyhow!(e)),
        };
        match server {
            Ok(server) => host.server = server,
            Err(e) => {
                if netns::exists(&host.netns) {
                    let _ = topology::run_one(&topology::delete_netns_step(&host.netns));
                }
                return Err(e.context(format!("host add {} failed; rolled back", args.host)));
            }
        }
        s.hosts.insert(host.name.clone(), host.clone());
        Ok(host)
    })
    .context("lab host add")?;
    println!(
        "host {}: netns {}, IPv4 {}/{}, IPv6 {}/{}{}",
        host.name,
        host.netns,
        host.ipv4,
        state::UNDERLAY_V4_PREFIX,
        host.ipv6,
        state::UNDERLAY_V6_PREFIX,
        serving(&host.serve)
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_64_hex_and_unique() {
        let plan = Plan::new("lab").unwrap();
        let pod: PodRef = "x/a".parse().unwrap();
        let a = container_id(&plan, &pod);
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, container_id(&plan, &pod));
    }

    #[test]
    fn host_names() {
        validate_host_name("ext").unwrap();
        validate_host_name("router-1").unwrap();
        for bad in ["", "-a", "a-", "A", "a_b", "abcdefghijklmnopqrstu"] {
            assert!(validate_host_name(bad).is_err(), "{bad:?}");
        }
    }
}
