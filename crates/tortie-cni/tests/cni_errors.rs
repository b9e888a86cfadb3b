//! Bad input to `tortie-cni` gives CNI error JSON with the spec's codes and leaves nothing
//! behind. These fail before any namespace is entered, so they need no root: the pod
//! namespace path is the plugin's own `/proc/self/ns/net`.

mod netlab;
mod support;

use std::collections::BTreeMap;

use netlab::run_raw;
use serde_json::{Value, json};
use support::{apply, pool_yaml, sqlite};
use tortie_ipam::Ipam;

fn env(command: &str) -> BTreeMap<String, String> {
    [
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/proc/self/ns/net"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web"),
        ("CNI_PATH", "/usr/lib/cni"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn conf(datastore: &str) -> Value {
    json!({"cniVersion": "1.0.0", "name": "k8s-pod-network", "type": "tortie-cni",
           "nodename": "node-1", "datastore": datastore, "ipam": {"type": "calico-ipam"}})
}

fn code_of(env: &BTreeMap<String, String>, stdin: &str) -> (u64, Value) {
    let (ok, out, err) = run_raw(env, stdin);
    assert!(!ok, "expected failure: {out} {err}");
    (out["code"].as_u64().expect("code"), out)
}

#[tokio::test]
async fn bad_input_gets_the_right_codes_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, url) = sqlite(dir.path()).await;
    apply(store.as_ref(), &pool_yaml("v4", "10.244.0.0/16", 26)).await;
    let good = conf(&url).to_string();

    // Missing environment: 4, naming the variable.
    let mut e = env("ADD");
    e.remove("CNI_COMMAND");
    let (c, out) = code_of(&e, &good);
    assert!(
        c == 4 && out["msg"].as_str().expect("msg").contains("CNI_COMMAND"),
        "{out}"
    );
    let mut e = env("ADD");
    e.remove("CNI_NETNS");
    let (c, out) = code_of(&e, &good);
    assert!(
        c == 4 && out["msg"].as_str().expect("msg").contains("CNI_NETNS"),
        "{out}"
    );
    let (c, _) = code_of(&env("FROB"), &good);
    assert_eq!(c, 4);

    // A bad netns path: 4, naming the path.
    let mut e = env("ADD");
    e.insert(
        "CNI_NETNS".into(),
        "/run/netns/tortie-test-no-such-ns".into(),
    );
    let (c, out) = code_of(&e, &good);
    assert!(
        c == 4
            && out["msg"]
                .as_str()
                .expect("msg")
                .contains("/run/netns/tortie-test-no-such-ns"),
        "{out}"
    );
    // Not a namespace at all.
    let mut e = env("ADD");
    e.insert("CNI_NETNS".into(), "/etc/passwd".into());
    let (c, out) = code_of(&e, &good);
    assert!(
        c == 4 && out["msg"].as_str().expect("msg").contains("/etc/passwd"),
        "{out}"
    );

    // Malformed config: 6. Unsupported version: 1.
    let (c, out) = code_of(&env("ADD"), "{not json");
    assert_eq!(c, 6, "{out}");
    let (c, out) = code_of(&env("ADD"), r#"{"cniVersion": 3}"#);
    assert_eq!(c, 6, "{out}");
    let mut v = conf(&url);
    v["cniVersion"] = json!("0.2.0");
    let (c, out) = code_of(&env("ADD"), &v.to_string());
    assert_eq!(c, 1, "{out}");

    // Unknown or missing IPAM type, unsupported datastore type: 7.
    let mut v = conf(&url);
    v["ipam"]["type"] = json!("host-local");
    let (c, out) = code_of(&env("ADD"), &v.to_string());
    assert!(
        c == 7 && out["msg"].as_str().expect("msg").contains("host-local"),
        "{out}"
    );
    let mut v = conf(&url);
    v["ipam"] = json!({});
    assert_eq!(code_of(&env("ADD"), &v.to_string()).0, 7);
    let mut v = conf(&url);
    v.as_object_mut().expect("obj").remove("datastore");
    v["datastore_type"] = json!("kubernetes");
    assert_eq!(code_of(&env("ADD"), &v.to_string()).0, 7);

    // Errors carry the config's version.
    let mut v = conf(&url);
    v["cniVersion"] = json!("1.1.0");
    v["ipam"]["type"] = json!("dhcp");
    let (_, out) = code_of(&env("ADD"), &v.to_string());
    assert_eq!(out["cniVersion"], "1.1.0");

    // None of that allocated anything.
    let ipam = Ipam::new(store.clone());
    assert!(
        ipam.ips_by_handle("k8s-pod-network.c1")
            .await
            .expect("ips")
            .is_empty()
    );
    assert!(ipam.check().await.expect("check").is_clean());
    let weps = store
        .list(&tortie_api::Kind::WorkloadEndpoint.key_prefix())
        .await
        .expect("list");
    assert!(weps.items.is_empty());
}

#[tokio::test]
async fn datastore_down_is_try_again_later() {
    // A closed port on loopback: nothing leaves the machine.
    let (c, out) = code_of(&env("ADD"), &conf("etcd://127.0.0.1:1").to_string());
    assert_eq!(c, 11, "{out}");
    let (c, out) = code_of(&env("DEL"), &conf("etcd://127.0.0.1:1").to_string());
    assert_eq!(c, 11, "{out}");
}

#[tokio::test]
async fn version_and_status() {
    let (ok, out, err) = run_raw(&env("VERSION"), r#"{"cniVersion":"1.1.0"}"#);
    assert!(ok, "{err}");
    let versions = out["supportedVersions"].as_array().expect("versions");
    assert!(
        versions.contains(&json!("1.0.0")) && versions.contains(&json!("1.1.0")),
        "{out}"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let (store, url) = sqlite(dir.path()).await;
    let mut v = conf(&url);
    v["cniVersion"] = json!("1.1.0");
    let mut e = env("STATUS");
    for k in ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"] {
        e.remove(k);
    }
    // No pools yet: not available (50).
    let (c, out) = code_of(&e, &v.to_string());
    assert_eq!(c, 50, "{out}");
    apply(store.as_ref(), &pool_yaml("v4", "10.244.0.0/16", 26)).await;
    let (ok, out, err) = run_raw(&e, &v.to_string());
    assert!(ok && out.is_null(), "{out} {err}");
}

#[tokio::test]
async fn logs_go_to_log_file_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("logs/cni.log");
    let mut v = conf("etcd://127.0.0.1:1");
    v["ipam"]["type"] = json!("nope");
    v["log_file_path"] = json!(log.to_str().expect("utf8"));
    let (ok, _, stderr) = run_raw(&env("ADD"), &v.to_string());
    assert!(!ok);
    let text = std::fs::read_to_string(&log).expect("log file written");
    assert!(text.contains("unknown IPAM type"), "{text}");
    assert!(!stderr.contains("unknown IPAM type"), "{stderr}");
    assert!(
        !text.contains("etcd://"),
        "the config is never logged: {text}"
    );
}
