//! The `tortie-ipam` binary driven exactly as a runtime drives a CNI IPAM plugin.

mod support;

use serde_json::{Value, json};
use support::*;
use tortie_ipam::Ipam;

#[tokio::test]
async fn add_check_del_are_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, url) = sqlite(dir.path()).await;
    apply(store.as_ref(), &pool_yaml("pool-a", "10.250.0.0/24", 28)).await;
    let conf = netconf(&url, "node-1", json!({}));

    let (ok, first) = cmd("ADD", "c1", &conf);
    assert!(ok, "{first}");
    let ips = addresses(&first);
    assert_eq!(ips.len(), 1, "{first}");
    assert!(
        ips[0].starts_with("10.250.0.") && ips[0].ends_with("/28"),
        "{ips:?}"
    );
    assert_eq!(first["cniVersion"], "1.0.0");

    // A repeated ADD for the same container returns the same address.
    let (ok, again) = cmd("ADD", "c1", &conf);
    assert!(ok && addresses(&again) == ips, "{again}");

    let mut check_conf = conf.clone();
    check_conf["prevResult"] = first.clone();
    let (ok, out) = cmd("CHECK", "c1", &check_conf);
    assert!(ok, "{out}");

    let (ok, _) = cmd("DEL", "c1", &conf);
    assert!(ok);
    let (ok, _) = cmd("DEL", "c1", &conf);
    assert!(ok, "DEL must be idempotent");
    let (ok, err) = cmd("CHECK", "c1", &check_conf);
    assert!(!ok && err["code"] == 3, "{err}");

    let report = Ipam::new(store).check().await.expect("check");
    assert!(report.is_clean(), "{report:?}");
}

#[tokio::test]
async fn dual_stack_and_calico_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, url) = sqlite(dir.path()).await;
    apply(store.as_ref(), &pool_yaml("v4", "10.251.0.0/24", 26)).await;
    apply(store.as_ref(), &pool_yaml("v6", "'fd00:251::/120'", 122)).await;
    apply(store.as_ref(), &pool_yaml("v4-other", "10.252.0.0/24", 26)).await;
    let conf = netconf(
        &url,
        "node-1",
        json!({"assign_ipv4": "true", "assign_ipv6": "true", "ipv4_pools": ["v4-other"]}),
    );
    let (ok, res) = cmd("ADD", "dual", &conf);
    assert!(ok, "{res}");
    let ips = addresses(&res);
    assert_eq!(ips.len(), 2, "{res}");
    assert!(
        ips[0].starts_with("10.252.0."),
        "ipv4_pools is honoured: {ips:?}"
    );
    assert!(ips[1].starts_with("fd00:251::"), "{ips:?}");
    // 0.3.1 results carry a per-address version.
    let mut old = conf.clone();
    old["cniVersion"] = json!("0.3.1");
    let (ok, res) = cmd("ADD", "old", &old);
    assert!(ok && res["ips"][0]["version"] == "4", "{res}");
}

#[tokio::test]
async fn specific_ips_and_conflicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, url) = sqlite(dir.path()).await;
    apply(store.as_ref(), &pool_yaml("pool-a", "10.253.0.0/24", 26)).await;
    let mut conf = netconf(&url, "node-1", json!({}));
    conf["runtimeConfig"] = json!({"ips": ["10.253.0.77/24"]});
    let (ok, res) = cmd("ADD", "fixed", &conf);
    assert!(ok, "{res}");
    assert_eq!(addresses(&res), ["10.253.0.77/26"]);
    let (ok, err) = cmd("ADD", "other", &conf);
    assert!(!ok, "{err}");
    assert_eq!(err["code"], 101);
    assert!(
        err["msg"].as_str().unwrap_or("").contains("10.253.0.77"),
        "{err}"
    );
    conf["runtimeConfig"] = json!({"ips": ["192.0.2.1"]});
    let (ok, err) = cmd("ADD", "outside", &conf);
    assert!(!ok && err["code"] == 101, "{err}");
    assert!(
        err["msg"]
            .as_str()
            .unwrap_or("")
            .contains("not in any enabled pool"),
        "{err}"
    );
}

#[tokio::test]
async fn exhaustion_is_a_clear_error_and_leaks_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, url) = sqlite(dir.path()).await;
    apply(store.as_ref(), &pool_yaml("tiny", "10.254.0.0/30", 30)).await;
    let conf = netconf(&url, "node-1", json!({}));
    for i in 0..4 {
        let (ok, res) = cmd("ADD", &format!("c{i}"), &conf);
        assert!(ok, "{res}");
    }
    let (ok, err) = cmd("ADD", "c-extra", &conf);
    assert!(!ok);
    assert_eq!(err["code"], 100, "{err}");
    assert!(
        err["msg"]
            .as_str()
            .unwrap_or("")
            .contains("no free addresses in pools tiny"),
        "{err}"
    );
    assert!(
        Ipam::new(store.clone())
            .ips_by_handle("k8s-pod-network.c-extra")
            .await
            .expect("query")
            .is_empty()
    );
    assert!(Ipam::new(store).check().await.expect("check").is_clean());
}

#[tokio::test]
async fn bad_input_gives_cni_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, url) = sqlite(dir.path()).await;
    apply(store.as_ref(), &pool_yaml("pool-a", "10.249.0.0/24", 26)).await;
    let conf = netconf(&url, "node-1", json!({}));

    // Missing CNI_CONTAINERID.
    let mut env = cni_env("ADD", "x");
    env.remove("CNI_CONTAINERID");
    let out = invoke(&env, &conf);
    let err: Value = serde_json::from_slice(&out.stdout).expect("error JSON");
    assert!(!out.status.success() && err["code"] == 4, "{err}");

    // Malformed config.
    let out = spawn(&cni_env("ADD", "x"), "{not json")
        .wait_with_output()
        .expect("wait");
    let err: Value = serde_json::from_slice(&out.stdout).expect("error JSON");
    assert_eq!(err["code"], 6, "{err}");

    // Unsupported version.
    let mut old = conf.clone();
    old["cniVersion"] = json!("0.2.0");
    let (ok, err) = cmd("ADD", "x", &old);
    assert!(!ok && err["code"] == 1, "{err}");

    // Unknown command.
    let (ok, err) = cmd("FROB", "x", &conf);
    assert!(!ok && err["code"] == 4, "{err}");

    // Datastore down: try again later, within the plugin's timeout.
    let down = netconf("etcd://127.0.0.1:1", "node-1", json!({}));
    let (ok, err) = cmd("ADD", "x", &down);
    assert!(!ok && err["code"] == 11, "{err}");

    // Nothing was allocated by any of the failures.
    let report = Ipam::new(store).check().await.expect("check");
    assert!(report.is_clean(), "{report:?}");
}

#[tokio::test]
async fn version_status_and_gc() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, url) = sqlite(dir.path()).await;
    let conf = netconf(&url, "node-1", json!({}));
    let (ok, v) = cmd("VERSION", "", &conf);
    assert!(
        ok && v["supportedVersions"]
            .as_array()
            .is_some_and(|a| a.contains(&json!("1.1.0"))),
        "{v}"
    );

    let mut conf11 = conf.clone();
    conf11["cniVersion"] = json!("1.1.0");
    let (ok, err) = cmd("STATUS", "", &conf11);
    assert!(!ok && err["code"] == 50, "no pools yet: {err}");
    apply(store.as_ref(), &pool_yaml("pool-a", "10.248.0.0/24", 26)).await;
    let (ok, err) = cmd("STATUS", "", &conf11);
    assert!(ok, "{err}");

    for c in ["keep-1", "keep-2", "gone-1", "gone-2"] {
        assert!(cmd("ADD", c, &conf11).0);
    }
    conf11["cni.dev/valid-attachments"] = json!([{"containerID": "keep-1", "ifname": "eth0"}, {"containerID": "keep-2", "ifname": "eth0"}]);
    let (ok, err) = cmd("GC", "", &conf11);
    assert!(ok, "{err}");
    let ipam = Ipam::new(store);
    for (c, live) in [
        ("keep-1", true),
        ("keep-2", true),
        ("gone-1", false),
        ("gone-2", false),
    ] {
        let ips = ipam
            .ips_by_handle(&format!("k8s-pod-network.{c}"))
            .await
            .expect("query");
        assert_eq!(!ips.is_empty(), live, "{c}");
    }
    assert!(ipam.check().await.expect("check").is_clean());
}
