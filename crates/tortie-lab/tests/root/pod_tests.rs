//! Root tests of `lab pod add|delete`, probes and the matrix with the stand-in CNI plugin.

use tortie_lab::{netns, process};

use crate::helpers::*;

pub fn pods_with_a_stand_in_cni_plugin() {
    let g = LabGuard::new('p');
    let name = g.name().to_string();
    let plan = g.0.clone();
    ok(&format!("lab up --name {name} --nodes 2 --no-agents"));
    let n = ["--name", name.as_str()];
    let add_a = [
        "pod",
        "add",
        "x/a",
        "--node",
        "n1",
        "--labels",
        "app=web",
        "--serve",
        "80/tcp,80/udp",
    ];
    assert!(lab_child(&[&add_a[..], &n].concat()).0, "pod add x/a");
    let add_b = [
        "pod",
        "add",
        "y/b",
        "--node",
        "n2",
        "--serve",
        "81/tcp",
        "--ip",
        "10.244.200.77",
    ];
    assert!(lab_child(&[&add_b[..], &n].concat()).0, "pod add y/b");
    assert!(!lab_child(&[&add_b[..], &n].concat()).0, "adding y/b twice");
    let add_fail = ["pod", "add", "x/fail", "--node", "n1", "--serve", "80/tcp"];
    assert!(
        !lab_child(&[&add_fail[..], &n].concat()).0,
        "pod add x/fail"
    );
    assert!(!lab_child(&["pod", "add", "x/c", "--node", "n9", "--name", &name]).0);

    // What the lab recorded.
    let state = g.state();
    assert_eq!(state.pods.keys().collect::<Vec<_>>(), ["x/a", "y/b"]);
    let (a, b) = (&state.pods["x/a"], &state.pods["y/b"]);
    assert_eq!(a.ips, ["10.244.200.1", "fd00:10:244::1"]);
    assert_eq!(b.ips[0], "10.244.200.77");
    assert_eq!(a.netns, plan.pod_netns("x", "a"));
    assert!(
        !netns::exists(&plan.pod_netns("x", "fail")),
        "failed pod's namespace is left"
    );
    let a_server = a.server.clone().expect("server of x/a");
    assert!(process::still_ours(&a_server));

    // What the plugin was given, exactly as a runtime gives it.
    let calls: Vec<serde_json::Value> =
        std::fs::read_to_string(plan.state_dir().join("cni-calls.log"))
            .expect("calls")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
    let cmds: Vec<&str> = calls
        .iter()
        .map(|c| c["env"]["CNI_COMMAND"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        cmds,
        ["ADD", "ADD", "ADD", "DEL"],
        "the failed ADD is followed by a DEL"
    );
    let env = &calls[0]["env"];
    let exe = std::env::current_exe().expect("exe");
    assert_eq!(env["CNI_CONTAINERID"].as_str().map(str::len), Some(64));
    assert_eq!(env["CNI_CONTAINERID"], a.container_id.as_str());
    assert_eq!(env["CNI_NETNS"], format!("/run/netns/{}", a.netns));
    assert_eq!(env["CNI_IFNAME"], "eth0");
    assert_eq!(
        env["CNI_ARGS"],
        format!(
            "K8S_POD_NAMESPACE=x;K8S_POD_NAME=a;K8S_POD_INFRA_CONTAINER_ID={}",
            a.container_id
        )
    );
    assert_eq!(
        env["CNI_PATH"],
        exe.parent().expect("dir").display().to_string()
    );
    assert_eq!(
        env["TORTIE_HOST_NETNS"],
        format!("/run/netns/{}", plan.node_netns(1))
    );
    let conf = &calls[0]["stdin"];
    assert_eq!(conf["type"], "tortie-cni");
    assert_eq!(conf["nodename"], "n1");
    assert_eq!(conf["datastore"], state.datastore.url);
    assert_eq!(conf["ipam"]["type"], "tortie-ipam");
    assert_eq!(
        calls[1]["stdin"]["runtimeConfig"]["ips"][0],
        "10.244.200.77"
    );

    // The Pod records.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let (pod_a, pod_fail) = rt.block_on(async {
        let store = tortie_lab::datastore::open(&state.datastore.url)
            .await
            .expect("store");
        let a = store
            .get("/calico/resources/v3/core/pods/x/a")
            .await
            .expect("get");
        let f = store
            .get("/calico/resources/v3/core/pods/x/fail")
            .await
            .expect("get");
        (a, f)
    });
    assert!(pod_fail.is_none(), "failed pod's record is left");
    let pod_a: serde_json::Value =
        serde_json::from_slice(&pod_a.expect("x/a record").value).expect("json");
    assert_eq!(pod_a["metadata"]["labels"]["app"], "web");
    assert_eq!(pod_a["spec"]["nodeName"], "n1");
    assert_eq!(
        pod_a["spec"]["containers"][0]["ports"][1]["protocol"],
        "UDP"
    );
    assert_eq!(pod_a["status"]["podIPs"][0]["ip"], "10.244.200.1");

    // Probes and the matrix: each pod reaches itself only (the stand-in wires no routes).
    let (okm, out) = lab_child(&[
        "matrix",
        "-o",
        "json",
        "--timeout-ms",
        "300",
        "--name",
        &name,
    ]);
    assert!(okm);
    let m: serde_json::Value = serde_json::from_str(&out).expect("matrix json");
    assert_eq!(
        m.as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default(),
        ["80/tcp", "80/udp", "81/tcp"]
    );
    assert_eq!(m["80/tcp"]["x/a"]["x/a"], true);
    assert_eq!(m["80/udp"]["x/a"]["x/a"], true);
    assert_eq!(m["81/tcp"]["y/b"]["y/b"], true);
    assert_eq!(m["80/tcp"]["x/a"]["y/b"], false);
    assert_eq!(m["81/tcp"]["x/a"]["x/a"], false);
    let (okt, table) = lab_child(&[
        "matrix",
        "--ports",
        "80",
        "--protocols",
        "tcp",
        "--timeout-ms",
        "300",
        "--name",
        &name,
    ]);
    assert!(okt);
    assert!(
        table.starts_with("80/tcp  x/a  y/b\nx/a     .    X\n"),
        "{table}"
    );
    let (oks, status) = lab_child(&["status", "-o", "json", "--name", &name]);
    assert!(oks);
    let status: serde_json::Value = serde_json::from_str(&status).expect("status json");
    assert_eq!(status["pods"][0]["name"], "x/a");
    assert_eq!(status["pods"][0]["node"], "n1");
    assert_eq!(status["pods"][0]["ips"][0], "10.244.200.1");

    // Delete undoes everything.
    assert!(lab_child(&["pod", "delete", "x/a", "--name", &name]).0);
    assert!(!netns::exists(&a.netns));
    assert!(!process::alive(a_server.pid));
    assert!(!g.state().pods.contains_key("x/a"));
    assert!(
        !lab_child(&["pod", "delete", "x/a", "--name", &name]).0,
        "second delete"
    );
    let last = std::fs::read_to_string(plan.state_dir().join("cni-calls.log")).expect("calls");
    assert!(
        last.lines()
            .last()
            .is_some_and(|l| l.contains(r#""CNI_COMMAND":"DEL""#))
    );

    let report = tortie_lab::down(&plan);
    assert!(report.is_clean(), "{report}");
    assert_gone(&plan);
}
