//! Models built the way the agent builds them: resources → World → dataplane::build.

use tortie_calc::World;
use tortie_calc::dataplane::{self, DataplaneModel, EndpointToHost, NatOutgoing, NodeConfig};

pub const NODE: &str = "node1";

pub fn wep(pod: &str, app: &str, iface: &str, ip: &str, ports: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: {NODE}-k8s-{pod}-eth0
  namespace: x
  labels:
    app: {app}
    projectcalico.org/namespace: x
    projectcalico.org/orchestrator: k8s
spec:
  node: {NODE}
  orchestrator: k8s
  endpoint: eth0
  pod: {pod}
  interfaceName: {iface}
  ipNetworks:
  - {ip}/32
  profiles:
  - kns.x
{ports}"
    )
}

pub const HTTP_PORT: &str = "  ports:
  - name: http
    port: 80
    protocol: TCP
";

/// Pod b (calib2) admits TCP `port` (a number or a named port) from app=a pods only.
pub fn policy(port: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-a
  namespace: x
spec:
  podSelector:
    matchLabels:
      app: b
  policyTypes:
  - Ingress
  ingress:
  - from:
    - podSelector:
        matchLabels:
          app: a
    ports:
    - protocol: TCP
      port: {port}
"
    )
}

pub fn model_of(docs: &[String]) -> DataplaneModel {
    let text = docs.join("---\n");
    let resources: Vec<_> = tortie_api::codec::decode("test.yaml", &text, "default")
        .into_iter()
        .map(|r| r.map(|(_, res)| res).expect("decode"))
        .collect();
    let world = World::from_resources(&resources);
    assert!(world.errors().is_empty(), "{:?}", world.errors());
    let m = dataplane::build(
        &world,
        &NodeConfig {
            endpoint_to_host: EndpointToHost::Drop,
            nat: NatOutgoing {
                masquerade_pools: ["10.244.0.0/16".parse().expect("net")].into(),
                all_pools: ["10.244.0.0/16".parse().expect("net")].into(),
            },
            ..NodeConfig::new(NODE)
        },
    );
    assert_eq!(
        m.workloads.len(),
        docs.iter()
            .filter(|d| d.contains("WorkloadEndpoint"))
            .count()
    );
    m
}

pub fn namespace() -> String {
    "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n".to_string()
}

/// Pods a (10.244.1.10) and b (10.244.2.11, named port http = TCP 80); b admits `port` from a.
pub fn model_ab(a_ip: &str, port: &str) -> DataplaneModel {
    model_of(&[
        namespace(),
        wep("a", "a", "calia1", a_ip, ""),
        wep("b", "b", "calib2", "10.244.2.11", HTTP_PORT),
        policy(port),
    ])
}
