//! Invoking the real `tortie-cni` plugin exactly as a container runtime does: the CNI
//! environment, the network configuration on stdin, a CNI result or error JSON on stdout.
//!
//! The invocation is built as data ([`Invocation`]) and executed in one place ([`execute`]).
//! Lab extension: `TORTIE_HOST_NETNS` names the node namespace that plays the host, because
//! every lab process runs in the root namespace.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::netns;
use crate::spec::PodRef;

/// Environment variable overriding where the plugin binary is.
pub const ENV_CNI_BIN: &str = "TORTIE_CNI_BIN";
/// The plugin's file name, looked up next to the running `tortie` binary.
pub const PLUGIN: &str = "tortie-cni";
/// Most time one plugin call may take.
pub const CNI_TIMEOUT: Duration = Duration::from_secs(60);
/// CNI spec version the lab speaks.
pub const CNI_VERSION: &str = "1.0.0";
/// Network name Calico's manifests use.
pub const NETWORK_NAME: &str = "k8s-pod-network";

/// `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
}

impl CniCommand {
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
        }
    }
}

/// What a runtime hands the plugin for one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork<'a> {
    pub pod: &'a PodRef,
    pub container_id: &'a str,
    pub pod_netns: &'a str,
    pub node: &'a str,
    pub node_netns: &'a str,
    pub datastore: &'a str,
    /// `--ip`: the addresses the pod must get, comma-separated (one per family).
    pub ip: Option<&'a str>,
}

/// One plugin call as data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub command: CniCommand,
    pub env: BTreeMap<String, String>,
    pub stdin: Value,
}

/// The network configuration a Calico user would have, with `type` changed.
pub fn net_config(net: &PodNetwork<'_>) -> Value {
    let mut conf = json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "type": PLUGIN,
        "nodename": net.node,
        "mtu": 1500,
        "datastore": net.datastore,
        "ipam": {"type": "tortie-ipam", "assign_ipv4": "true", "assign_ipv6": "true"},
    });
    if let Some(ip) = net.ip {
        let ips: Vec<&str> = ip.split(',').map(str::trim).collect();
        conf["runtimeConfig"] = json!({ "ips": ips });
    }
    conf
}

/// The full invocation for `command` (`cni_path` is the plugin directory).
pub fn invocation(command: CniCommand, net: &PodNetwork<'_>, cni_path: &Path) -> Invocation {
    let env = [
        ("CNI_COMMAND", command.as_str().to_string()),
        ("CNI_CONTAINERID", net.container_id.to_string()),
        (
            "CNI_NETNS",
            netns::path(net.pod_netns).display().to_string(),
        ),
        ("CNI_IFNAME", "eth0".to_string()),
        (
            "CNI_ARGS",
            format!(
                "K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
                net.pod.namespace, net.pod.name, net.container_id
            ),
        ),
        ("CNI_PATH", cni_path.display().to_string()),
        (
            "TORTIE_HOST_NETNS",
            netns::path(net.node_netns).display().to_string(),
        ),
    ];
    Invocation {
        command,
        env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        stdin: net_config(net),
    }
}

/// The plugin binary: `TORTIE_CNI_BIN`, else `tortie-cni` beside the running binary.
pub fn plugin_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(ENV_CNI_BIN) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("cannot find the running binary")?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no directory", exe.display()))?;
    Ok(dir.join(PLUGIN))
}

/// Runs the plugin; returns the parsed result on success, an error quoting the CNI error
/// JSON (or stderr) otherwise. The plugin is killed if it overruns [`CNI_TIMEOUT`].
pub async fn execute(bin: &Path, inv: &Invocation) -> anyhow::Result<Value> {
    if !bin.is_file() {
        bail!(
            "CNI plugin not found at {} (build it, or set {ENV_CNI_BIN})",
            bin.display()
        );
    }
    let mut cmd = tokio::process::Command::new(bin);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CNI_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(&inv.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", bin.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // The plugin may answer (and exit) before reading stdin; its output is what counts.
        let _ = stdin.write_all(inv.stdin.to_string().as_bytes()).await;
    }
    let what = format!("{PLUGIN} {}", inv.command.as_str());
    let out = tokio::time::timeout(CNI_TIMEOUT, child.wait_with_output())
        .await
        .map_err(|_| anyhow!("{what} did not finish within {}s", CNI_TIMEOUT.as_secs()))??;
    let stdout: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    if out.status.success() {
        return Ok(stdout.unwrap_or(Value::Null));
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let detail = match stdout {
        Some(e) => describe_error(&e),
        None => String::from_utf8_lossy(&out.stdout).trim().to_string(),
    };
    bail!(
        "{what} failed ({}): {detail}{}",
        out.status,
        if stderr.is_empty() {
            String::new()
        } else {
            format!("\nplugin stderr:\n{stderr}")
        }
    )
}

/// Renders a CNI error JSON as `code N: msg: details`.
pub fn describe_error(e: &Value) -> String {
    let mut s = format!(
        "code {}: {}",
        e["code"],
        e["msg"].as_str().unwrap_or("(no message)")
    );
    if let Some(d) = e["details"].as_str().filter(|d| !d.is_empty()) {
        s.push_str(": ");
        s.push_str(d);
    }
    s
}

/// The addresses of a CNI result without prefix lengths, IPv4 first.
pub fn result_ips(result: &Value) -> Vec<String> {
    let mut ips: Vec<String> = result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str())
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
        .collect();
    ips.sort_by_key(|ip| ip.contains(':'));
    ips
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net<'a>(pod: &'a PodRef, ip: Option<&'a str>) -> PodNetwork<'a> {
        PodNetwork {
            pod,
            container_id: "abc123",
            pod_netns: "lab-p0011223344",
            node: "n2",
            node_netns: "lab-n2",
            datastore: "file:/run/tortie/lab/lab/store.db",
            ip,
        }
    }

    #[test]
    fn invocation_is_what_a_runtime_sends() {
        let pod: PodRef = "x/a".parse().unwrap();
        let inv = invocation(
            CniCommand::Add,
            &net(&pod, None),
            Path::new("/opt/tortie/bin"),
        );
        let env: Vec<String> = inv.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            env,
            [
                "CNI_ARGS=K8S_POD_NAMESPACE=x;K8S_POD_NAME=a;K8S_POD_INFRA_CONTAINER_ID=abc123",
                "CNI_COMMAND=ADD",
                "CNI_CONTAINERID=abc123",
                "CNI_IFNAME=eth0",
                "CNI_NETNS=/run/netns/lab-p0011223344",
                "CNI_PATH=/opt/tortie/bin",
                "TORTIE_HOST_NETNS=/run/netns/lab-n2",
            ]
        );
        assert_eq!(
            inv.stdin,
            json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tortie-cni",
                "nodename": "n2", "mtu": 1500, "datastore": "file:/run/tortie/lab/lab/store.db",
                "ipam": {"type": "tortie-ipam", "assign_ipv4": "true", "assign_ipv6": "true"}})
        );
    }

    #[test]
    fn a_requested_ip_goes_into_runtime_config() {
        let pod: PodRef = "x/a".parse().unwrap();
        let inv = invocation(
            CniCommand::Del,
            &net(&pod, Some("10.244.9.9")),
            Path::new("/b"),
        );
        assert_eq!(inv.env["CNI_COMMAND"], "DEL");
        assert_eq!(inv.stdin["runtimeConfig"], json!({"ips": ["10.244.9.9"]}));
    }

    #[test]
    fn result_ips_strip_prefixes_ipv4_first() {
        let r = json!({"cniVersion": "1.0.0", "ips": [
            {"address": "fd00:10:244::5/128"}, {"address": "10.244.3.5/32"}]});
        assert_eq!(result_ips(&r), ["10.244.3.5", "fd00:10:244::5"]);
        assert!(result_ips(&json!({})).is_empty());
    }

    #[test]
    fn errors_render_code_message_and_details() {
        let e = json!({"cniVersion": "1.0.0", "code": 11, "msg": "no addresses", "details": "pool full"});
        assert_eq!(describe_error(&e), "code 11: no addresses: pool full");
    }
}
