use serde_json::json;

use super::*;

fn pod_manifest() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-7d9f", "namespace": "shop", "labels": {"app": "web", "tier": "front"}},
        "spec": {
            "serviceAccountName": "web-sa",
            "containers": [
                {"name": "c", "image": "x", "ports": [
                    {"name": "http", "containerPort": 80},
                    {"containerPort": 81},
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                    {"containerPort": 8080, "hostPort": 30080}
                ]}
            ],
            "initContainers": [{"name": "i", "ports": [{"name": "metrics", "containerPort": 9090}]}]
        }
    })
}

fn input<'a>(
    ips: &'a [IpNet],
    info: Option<&'a PodInfo>,
    args: &'a BTreeMap<String, String>,
) -> WepInput<'a> {
    WepInput {
        node: "node-1",
        pod: Some(("shop", "web-7d9f")),
        network: "k8s-pod-network",
        container_id: "abc123",
        endpoint: "eth0",
        interface_name: "cali0123456789a",
        mac: "0a:58:0a:f4:01:05",
        ips,
        pod_info: info,
        arg_labels: args,
    }
}

#[test]
fn pod_record_gives_labels_sa_and_ports() {
    let info = PodInfo::from_manifest(&pod_manifest()).expect("pod");
    assert_eq!(info.service_account.as_deref(), Some("web-sa"));
    let names: Vec<(&str, u16)> = info
        .ports
        .iter()
        .map(|p| (p.name.as_str(), p.port))
        .collect();
    assert_eq!(
        names,
        [("http", 80), ("dns", 53), ("", 8080), ("metrics", 9090)]
    );
    assert_eq!(info.ports[1].protocol, Protocol::Name("UDP".into()));
    assert_eq!(info.ports[2].host_port, Some(30080));

    let ips: Vec<IpNet> = vec![
        "10.244.1.5/26".parse().expect("net"),
        "fd00:10:244::5/122".parse().expect("net"),
    ];
    let none = BTreeMap::new();
    let wep = build(&input(&ips, Some(&info), &none)).expect("valid wep");
    assert_eq!(wep.metadata.name, "node--1-k8s-web--7d9f-eth0");
    assert_eq!(wep.metadata.namespace.as_deref(), Some("shop"));
    let s = wep.spec();
    assert_eq!(s.ip_networks, ["10.244.1.5/32", "fd00:10:244::5/128"]);
    assert_eq!(s.profiles, ["kns.shop", "ksa.shop.web-sa"]);
    assert_eq!(s.orchestrator, "k8s");
    assert_eq!(s.pod, "web-7d9f");
    assert_eq!(s.endpoint, "eth0");
    assert_eq!(s.container_id, "abc123");
    assert_eq!(s.interface_name, "cali0123456789a");
    assert_eq!(s.mac, "0a:58:0a:f4:01:05");
    assert_eq!(s.service_account_name, "web-sa");
    assert_eq!(s.ports.len(), 4);
    let l = &wep.metadata.labels;
    assert_eq!(l["app"], "web");
    assert_eq!(l["projectcalico.org/namespace"], "shop");
    assert_eq!(l["projectcalico.org/orchestrator"], "k8s");
    assert_eq!(l["projectcalico.org/serviceaccount"], "web-sa");
    assert_eq!(
        key(&wep),
        "/calico/resources/v3/projectcalico.org/workloadendpoints/shop/node--1-k8s-web--7d9f-eth0"
    );
    assert_eq!(
        key_for("node-1", Some(("shop", "web-7d9f")), "abc123", "eth0").as_deref(),
        Some(key(&wep).as_str())
    );
    // The stored form decodes back.
    let bytes = serde_json::to_vec(&wep.to_value()).expect("json");
    assert_eq!(stored_spec(&bytes).as_ref(), Some(s));
}

#[test]
fn args_labels_without_pod_record() {
    let conf = json!({"cni": {"labels": [{"key": "app", "value": "db"}, {"key": "bad"}]}});
    let args = labels_from_args(Some(&conf));
    assert_eq!(args.len(), 1);
    let ips: Vec<IpNet> = vec!["10.244.1.6/32".parse().expect("net")];
    let wep = build(&input(&ips, None, &args)).expect("valid wep");
    assert_eq!(wep.metadata.labels["app"], "db");
    assert_eq!(wep.spec().profiles, ["kns.shop"]);
    assert!(
        !wep.metadata
            .labels
            .contains_key("projectcalico.org/serviceaccount")
    );
}

#[test]
fn bare_container_uses_cni_orchestrator() {
    let ips: Vec<IpNet> = vec!["10.244.1.7/32".parse().expect("net")];
    let none = BTreeMap::new();
    let mut i = input(&ips, None, &none);
    i.pod = None;
    let wep = build(&i).expect("valid wep");
    assert_eq!(wep.metadata.name, "node--1-cni-abc123-eth0");
    assert_eq!(wep.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(wep.spec().profiles, ["k8s-pod-network"]);
    assert_eq!(wep.metadata.labels["projectcalico.org/orchestrator"], "cni");
}

#[test]
fn invalid_inputs_are_rejected() {
    let ips: Vec<IpNet> = vec!["10.244.1.7/32".parse().expect("net")];
    let none = BTreeMap::new();
    let mut i = input(&ips, None, &none);
    i.mac = "not-a-mac";
    let e = build(&i).expect_err("bad mac");
    assert_eq!(e.code, code::INVALID_CONFIG);
    assert!(e.details.contains("mac"), "{e:?}");
    let mut i = input(&ips, None, &none);
    i.node = "";
    assert!(build(&i).is_err());
}
