//! The staged policy preview in the dataplane model: per local workload whose policy the
//! staged policies would change, its chains under the staged view (named `s…`); nothing for
//! workloads they leave alone, and nothing at all without staged policies.

mod support;

use support::world;
use tortie_calc::dataplane::{self, DataplaneModel, NodeConfig};

fn wep(pod: &str, iface: &str, ip: &str) -> String {
    format!(
        "---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: n1-k8s-{pod}-eth0
  namespace: x
  labels: {{app: {pod}, projectcalico.org/namespace: x, projectcalico.org/orchestrator: k8s}}
spec: {{node: n1, orchestrator: k8s, endpoint: eth0, pod: {pod}, interfaceName: {iface}, ipNetworks: [{ip}/32], profiles: [kns.x]}}
"
    )
}

const BASE: &str = "apiVersion: v1
kind: Namespace
metadata: {name: x}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-from-a, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: a}}}]
";

const STAGED_DENY_B: &str = "---
apiVersion: projectcalico.org/v3
kind: StagedNetworkPolicy
metadata: {name: lock-b, namespace: x}
spec:
  selector: app == 'b'
  order: 1
  types: [Ingress]
  ingress: [{action: Deny}]
";

fn model(extra: &str) -> DataplaneModel {
    let text = format!(
        "{BASE}{}{}{extra}",
        wep("a", "calia1", "10.244.1.10"),
        wep("b", "calib2", "10.244.1.11")
    );
    dataplane::build(&world(&text), &NodeConfig::new("n1"))
}

#[test]
fn no_staged_policies_no_preview() {
    let m = model("");
    assert!(m.staged_workloads.is_empty());
    assert!(m.staged_chains.is_empty());
}

#[test]
fn only_the_workloads_a_staged_policy_changes_get_a_preview() {
    let enforced = model("");
    let m = model(STAGED_DENY_B);
    // Enforcement is untouched.
    assert_eq!(m.workloads, enforced.workloads);
    assert_eq!(m.chains, enforced.chains);
    let ifaces: Vec<&str> = m.staged_workloads.keys().map(String::as_str).collect();
    assert_eq!(ifaces, ["calib2"], "a's policy does not change");
    let b = &m.staged_workloads["calib2"];
    assert_eq!(b.egress, None, "b's egress does not change");
    let b = b.ingress.as_ref().expect("b's ingress changes");
    let tiers: Vec<Vec<&str>> = b
        .tiers
        .iter()
        .map(|t| t.policies.iter().map(String::as_str).collect())
        .collect();
    // The staged policy (order 1) before the Kubernetes one (order 1000), both as preview
    // chains; the profiles too.
    assert_eq!(tiers, [vec!["spi-snp/x/lock-b", "spi-knp/x/b-from-a"]]);
    assert_eq!(b.profiles, ["spri-kns.x"]);
    for name in tiers.concat().into_iter().chain(["spri-kns.x"]) {
        assert!(m.staged_chains.contains_key(name), "{name} missing");
    }
    assert!(
        m.staged_chains["spi-snp/x/lock-b"].rules[0]
            .comment
            .starts_with("snp/x/lock-b ingress[0]"),
        "{:?}",
        m.staged_chains["spi-snp/x/lock-b"].rules
    );
}

#[test]
fn a_staged_delete_previews_the_policy_gone() {
    let m = model(
        "---
apiVersion: projectcalico.org/v3
kind: StagedKubernetesNetworkPolicy
metadata: {name: b-from-a, namespace: x}
spec:
  stagedAction: Delete
",
    );
    let b = m.staged_workloads["calib2"]
        .ingress
        .as_ref()
        .expect("b's ingress changes");
    assert!(b.tiers.is_empty(), "{:?}", b.tiers);
    assert_eq!(b.profiles, ["spri-kns.x"]);
    assert!(!m.staged_workloads.contains_key("calia1"));
}
