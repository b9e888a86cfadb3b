//! Shared helpers: run the `tortie-ipam` binary as a runtime would, and seed datastores.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;

use serde_json::{Value, json};
use tortie_store::Store;

#[path = "../../../tortie-store/tests/support/etcd_server.rs"]
pub mod etcd_server;

pub const IPAM_BIN: &str = env!("CARGO_BIN_EXE_tortie-ipam");

/// A network config for the IPAM plugin on `node`, with the given datastore URL.
pub fn netconf(datastore: &str, node: &str, extra_ipam: Value) -> Value {
    let mut ipam = json!({"type": "tortie-ipam", "datastore": datastore});
    if let (Value::Object(m), Value::Object(e)) = (&mut ipam, extra_ipam) {
        m.extend(e);
    }
    json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "ptp", "nodename": node, "ipam": ipam})
}

/// The CNI environment for one invocation.
pub fn cni_env(command: &str, container_id: &str) -> BTreeMap<String, String> {
    [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", container_id),
        ("CNI_NETNS", "/var/run/netns/does-not-matter-for-ipam"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/usr/lib/cni"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Starts plugin `bin` with exactly `env` and `stdin`, without waiting.
pub fn spawn_plugin(bin: &str, env: &BTreeMap<String, String>, stdin: &str) -> Child {
    let mut child = Command::new(bin)
        .env_clear()
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
    // The plugin may reject its environment and exit before reading stdin (EPIPE here);
    // that is its answer, not a test failure.
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes());
    child
}

/// Runs plugin `bin` to completion: success, stdout JSON (Null when empty) and stderr.
pub fn run_plugin(bin: &str, env: &BTreeMap<String, String>, stdin: &str) -> (bool, Value, String) {
    let out = spawn_plugin(bin, env, stdin)
        .wait_with_output()
        .expect("wait for the plugin");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let v = if out.stdout.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {stderr}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    };
    (out.status.success(), v, stderr)
}

/// Starts `tortie-ipam` with `env` and `stdin` without waiting.
pub fn spawn(env: &BTreeMap<String, String>, stdin: &str) -> Child {
    spawn_plugin(IPAM_BIN, env, stdin)
}

/// Runs `tortie-ipam` to completion.
pub fn invoke(env: &BTreeMap<String, String>, conf: &Value) -> Output {
    spawn(env, &conf.to_string())
        .wait_with_output()
        .expect("wait tortie-ipam")
}

/// Runs one `tortie-ipam` command: success and the parsed stdout JSON (Null when empty).
pub fn cmd(command: &str, cid: &str, conf: &Value) -> (bool, Value) {
    let (ok, v, _) = run_plugin(IPAM_BIN, &cni_env(command, cid), &conf.to_string());
    (ok, v)
}

/// The addresses in an ADD result.
pub fn addresses(result: &Value) -> Vec<String> {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|ip| ip["address"].as_str().map(str::to_string))
        .collect()
}

/// Writes a manifest (validated by tortie-api) into the store, as `tortie apply` does.
pub async fn apply(store: &dyn Store, yaml: &str) {
    for d in tortie_api::decode("test", yaml, "default") {
        let (_, res) = d.expect("valid manifest");
        let bytes = serde_json::to_vec(&res.to_value()).expect("json");
        store
            .update(&res.key(), &bytes, None)
            .await
            .expect("write resource");
    }
}

/// An IPPool manifest.
pub fn pool_yaml(name: &str, cidr: &str, block_size: u8) -> String {
    format!(
        "apiVersion: projectcalico.org/v3\nkind: IPPool\nmetadata: {{name: {name}}}\nspec: {{cidr: {cidr}, blockSize: {block_size}}}\n"
    )
}

/// A fresh SQLite store in `dir`, and its URL.
pub async fn sqlite(dir: &std::path::Path) -> (Arc<dyn Store>, String) {
    let url = format!("file:{}", dir.join("store.db").display());
    let store = tortie_store::connect(&tortie_store::DatastoreUrl::parse(&url).expect("url"))
        .await
        .expect("open");
    (store, url)
}
