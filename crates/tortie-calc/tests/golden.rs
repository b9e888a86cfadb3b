//! Golden and property tests of the calculation: the output does not depend on the order the
//! inputs arrive in, an upsert-then-remove leaves no trace, and Kubernetes policies compile to
//! the selectors Calico's converter produces.

mod support;

use proptest::prelude::*;
use support::resources;
use tortie_api::resource::Resource;
use tortie_calc::World;
use tortie_calc::dataplane::{self, EndpointToHost, NatOutgoing, NodeConfig};
use tortie_calc::matrix::{PortProto, matrix};
use tortie_calc::model::proto;
use tortie_calc::world::ResourceKey;

/// Namespaces x and y, pods as WorkloadEndpoints on two nodes, and policies of every kind.
fn cluster() -> Vec<Resource> {
    let mut text = String::new();
    for (i, ns) in ["x", "y"].iter().enumerate() {
        text.push_str(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: \"{ns}\", labels: {{ns: \"{ns}\"}}}}\n---\n"
        ));
        for (j, pod) in ["a", "b", "c"].iter().enumerate() {
            let node = if j % 2 == 0 { "n1" } else { "n2" };
            text.push_str(&format!(
                "apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: {node}-k8s-{pod}-eth0
  namespace: \"{ns}\"
  labels: {{pod: {pod}, projectcalico.org/namespace: \"{ns}\", projectcalico.org/orchestrator: k8s}}
spec:
  orchestrator: k8s
  node: {node}
  pod: {pod}
  endpoint: eth0
  interfaceName: cali{i}{j}
  ipNetworks: [10.244.{i}.{j}/32, fd00:10:244::{i}{j}/128]
  profiles: [kns.{ns}]
  ports: [{{name: web, protocol: TCP, port: 8080}}]
---
"
            ));
        }
    }
    text.push_str(
        "apiVersion: projectcalico.org/v3
kind: Tier
metadata: {name: security}
spec: {order: 100}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: gate}
spec:
  tier: security
  order: 1
  namespaceSelector: ns == 'x'
  ingress:
  - action: Pass
    source: {namespaceSelector: ns == 'y'}
  - action: Deny
    protocol: UDP
    destination: {ports: [53]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: x}
spec:
  podSelector: {matchLabels: {pod: a}}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}, {ipBlock: {cidr: 10.0.0.0/8, except: [10.9.0.0/16]}}]
    ports: [{port: web}, {port: 80, endPort: 81}]
---
apiVersion: projectcalico.org/v3
kind: NetworkPolicy
metadata: {name: egress, namespace: \"y\"}
spec:
  selector: pod == 'c'
  egress:
  - action: Allow
    destination: {selector: pod == 'a', notNets: [10.244.0.2/32]}
  - action: Log
  - action: Deny
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkSet
metadata: {name: outside, labels: {kind: outside}}
spec: {nets: [192.0.2.0/24]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: n1-eth0, labels: {role: node}}
spec: {node: n1, interfaceName: eth0, expectedIPs: [198.18.0.11]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: n1-eth0-again, labels: {role: other}}
spec: {node: n1, interfaceName: eth0, expectedIPs: [198.18.0.31]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: n1-by-ip, labels: {role: node}}
spec: {node: n1, expectedIPs: [198.18.0.21]}
---
apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {name: n2-all, labels: {role: node}}
spec: {node: n2, interfaceName: \"*\", expectedIPs: [198.18.0.12], profiles: [projectcalico-default-allow]}
---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: nodes}
spec:
  selector: role == 'node'
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    source: {selector: pod == 'a'}
    destination: {ports: [10250]}
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata: {name: default}
spec: {failsafeInboundHostPorts: [{protocol: TCP, port: 22}]}
",
    );
    resources(&text)
}

fn config(node: &str) -> NodeConfig {
    let c = NodeConfig::new(node);
    assert_eq!(c.endpoint_to_host, EndpointToHost::Drop);
    assert_eq!(c.nat, NatOutgoing::default());
    c
}

fn pps() -> Vec<PortProto> {
    vec![
        PortProto {
            port: 80,
            protocol: proto::TCP,
        },
        PortProto {
            port: 8080,
            protocol: proto::TCP,
        },
        PortProto {
            port: 53,
            protocol: proto::UDP,
        },
    ]
}

#[test]
fn golden_dataplane_model_of_n1() {
    let world = World::from_resources(&cluster());
    assert!(world.errors().is_empty(), "{:?}", world.errors());
    let model = dataplane::build(&world, &config("n1"));
    // Local endpoints only: pods a and c of both namespaces live on n1.
    let ifaces: Vec<&String> = model.workloads.keys().collect();
    assert_eq!(ifaces, ["cali00", "cali02", "cali10", "cali12"]);
    // x/a: security tier (gate) then default tier (knp web); profiles last.
    let xa = &model.workloads["cali00"];
    let tiers: Vec<(&str, Vec<&str>)> = xa
        .ingress
        .iter()
        .map(|t| {
            (
                t.tier.as_str(),
                t.policies.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        tiers,
        [
            ("security", vec!["pi-gnp/gate"]),
            ("default", vec!["pi-knp/x/web"])
        ]
    );
    assert_eq!(xa.ingress_profiles, ["pri-kns.x"]);
    assert!(xa.egress.is_empty(), "no egress policy selects x/a");
    // Only chains a local endpoint uses are rendered.
    assert!(model.chains.contains_key("po-np/y/egress"), "y/c is on n1");
    let n2 = dataplane::build(&world, &config("n2"));
    assert!(!n2.chains.contains_key("po-np/y/egress"), "no y/c on n2");
    // The knp's named port resolves to every endpoint declaring "web".
    let named: Vec<_> = model
        .ip_sets
        .iter()
        .filter(|(k, _)| k.starts_with("n4-"))
        .map(|(_, s)| s.members.clone())
        .collect();
    assert_eq!(named.len(), 1);
    let json = serde_json::to_string_pretty(&model).unwrap();
    assert!(
        json.contains("10.9.0.0/16"),
        "ipBlock except rendered as notNets"
    );
}

#[test]
fn host_endpoints_in_the_dataplane_model() {
    let world = World::from_resources(&cluster());
    assert!(world.errors().is_empty(), "{:?}", world.errors());
    let n1 = dataplane::build(&world, &config("n1"));
    // The named one only: the expectedIPs-only one is not enforced by the kernel, and of two
    // claiming eth0 the first by name wins.
    let keys: Vec<&String> = n1.host_endpoints.keys().collect();
    assert_eq!(keys, ["eth0"]);
    let hep = &n1.host_endpoints["eth0"];
    assert_eq!(
        hep.endpoint,
        tortie_calc::model::EndpointId::Host {
            name: "n1-eth0".into()
        }
    );
    assert_eq!(hep.ingress.len(), 1);
    assert_eq!(hep.ingress[0].policies, ["pi-gnp/nodes"]);
    assert!(hep.ingress[0].end_drop);
    assert!(hep.egress.is_empty(), "types: [Ingress]");
    assert!(hep.ingress_profiles.is_empty() && hep.egress_profiles.is_empty());
    // One rendered rule per family, like any policy chain.
    assert_eq!(n1.chains["pi-gnp/nodes"].rules.len(), 2);
    // Failsafe ports are the node config's (the caller resolves FelixConfiguration).
    assert_eq!(
        n1.failsafe_inbound,
        tortie_calc::failsafe::default_inbound()
    );

    let n2 = dataplane::build(&world, &config("n2"));
    let all = &n2.host_endpoints[dataplane::ALL_INTERFACES];
    assert!(all.ingress.iter().all(|t| t.policies == ["pi-gnp/nodes"]));
    assert_eq!(all.ingress_profiles, ["pri-projectcalico-default-allow"]);
    assert_eq!(all.egress_profiles, ["pro-projectcalico-default-allow"]);
    assert!(n2.chains.contains_key("pro-projectcalico-default-allow"));
    // The world resolves FelixConfiguration for nodes (what the agent passes in).
    let fs = world.failsafe("n1");
    assert_eq!(
        fs.inbound,
        [tortie_calc::failsafe::FailsafePort::new(proto::TCP, 22)]
    );
    assert_eq!(fs.outbound, tortie_calc::failsafe::default_outbound());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn output_does_not_depend_on_input_order(seed in any::<u64>()) {
        let base = cluster();
        let mut shuffled = base.clone();
        // Fisher-Yates with a tiny LCG from the seed.
        let mut s = seed | 1;
        for i in (1..shuffled.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let j = (s >> 33) as usize % (i + 1);
            shuffled.swap(i, j);
        }
        let a = World::from_resources(&base);
        let b = World::from_resources(&shuffled);
        for node in ["n1", "n2"] {
            prop_assert_eq!(dataplane::build(&a, &config(node)), dataplane::build(&b, &config(node)));
        }
        prop_assert_eq!(matrix(&a, &pps(), false), matrix(&b, &pps(), false));
        prop_assert_eq!(matrix(&a, &pps(), true), matrix(&b, &pps(), true));
    }

    #[test]
    fn upsert_then_remove_leaves_no_trace(idx in 0usize..64) {
        let all = cluster();
        let i = idx % all.len();
        let without: Vec<Resource> = all.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, r)| r.clone()).collect();
        let mut w = World::from_resources(&without);
        let expected = dataplane::build(&w, &config("n1"));
        w.upsert(&all[i]);
        w.remove(&ResourceKey::of(&all[i]));
        prop_assert_eq!(dataplane::build(&w, &config("n1")), expected);
    }
}

#[test]
fn kubernetes_policy_compiles_to_calicos_selectors() {
    let world = World::from_resources(&cluster());
    let p = world
        .policies()
        .find(|p| p.id.name == "web")
        .expect("knp compiled");
    assert_eq!(p.tier, "default");
    assert_eq!(p.order, Some(1000.0));
    assert_eq!(
        p.selector.canonical(),
        "((projectcalico.org/orchestrator == \"k8s\" && pod == \"a\") && projectcalico.org/namespace == \"x\")"
    );
    let rules = p.ingress.as_ref().expect("ingress");
    // One rule per (protocol x peer): TCP x {podSelector, ipBlock}.
    assert_eq!(rules.len(), 2);
    let sel = rules[0].source.selector.as_ref().expect("peer selector");
    assert_eq!(
        sel.canonical(),
        "(projectcalico.org/namespace == \"x\" && (projectcalico.org/orchestrator == \"k8s\" && pod == \"b\"))"
    );
    assert_eq!(rules[1].source.nets, ["10.0.0.0/8".parse().unwrap()]);
    assert_eq!(rules[1].source.not_nets, ["10.9.0.0/16".parse().unwrap()]);
    assert!(p.egress.is_none(), "policyTypes defaulted to [Ingress]");
}

mod incremental {
    use super::*;
    use tortie_calc::graph::CalcGraph;

    /// A relabelled copy of a WorkloadEndpoint (or the resource unchanged).
    fn relabel(r: &Resource, pod: &str) -> Resource {
        let mut r = r.clone();
        if let Resource::WorkloadEndpoint(o) = &mut r {
            o.metadata.labels.insert("pod".into(), pod.into());
        }
        r
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// The incremental graph, fed the same changes in any order (with relabels and
        /// deletions on the way), builds exactly the model a from-scratch evaluation does.
        #[test]
        fn graph_matches_full_evaluation(
            seed in any::<u64>(),
            ops in proptest::collection::vec((0usize..64, 0u8..3), 0..24),
        ) {
            let base = cluster();
            let mut order: Vec<usize> = (0..base.len()).collect();
            let mut s = seed | 1;
            for i in (1..order.len()).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (s >> 33) as usize % (i + 1));
            }
            let mut g = CalcGraph::new();
            for i in &order {
                g.upsert(&base[*i]);
            }
            let mut truth: Vec<Option<Resource>> = base.iter().cloned().map(Some).collect();
            for (idx, op) in ops {
                let i = idx % base.len();
                match op {
                    0 => {
                        g.remove(&ResourceKey::of(&base[i]));
                        truth[i] = None;
                    }
                    1 => {
                        let r = relabel(&base[i], "b");
                        g.upsert(&r);
                        truth[i] = Some(r);
                    }
                    _ => {
                        g.upsert(&base[i]);
                        truth[i] = Some(base[i].clone());
                    }
                }
            }
            let fresh = World::from_resources(truth.iter().flatten());
            for node in ["n1", "n2"] {
                let want = dataplane::build(&fresh, &config(node));
                let got = dataplane::build_with(g.world(), &config(node), &g);
                prop_assert_eq!(got, want);
            }
        }
    }
}
