//! Which policies run where for a host endpoint (calico-reference §3.3): `doNotTrack`
//! (untracked, both directions), `preDNAT` (ingress), `applyOnForward` (forwarded traffic, and
//! the host's own like any other) and the rest (the filter path); staged policies never.

mod support;

use std::collections::BTreeSet;
use std::net::IpAddr;
use support::resources;

use tortie_calc::dataplane::{self, NodeConfig, TierChains};
use tortie_calc::eval::{
    Addresses, Decider, Outcome, Packet, PolicyClass, applicable_class, evaluate_forward, explain,
};
use tortie_calc::model::{EndpointId, proto};
use tortie_calc::{Direction, World};

const NODE_IP: &str = "198.18.0.11";
const OUTSIDE: &str = "198.18.0.101";
const POD_IP: &str = "10.244.1.10";

fn gnp(kind: &str, name: &str, order: u32, spec: &str) -> String {
    format!(
        "---
apiVersion: projectcalico.org/v3
kind: {kind}
metadata: {{name: {name}}}
spec:
  selector: role == 'node'
  order: {order}
{spec}"
    )
}

/// Host endpoint `n1-eth0` and a pod, both labelled role=node, and one policy of each class
/// (plus staged ones that would deny everything, in every class).
fn world() -> World {
    let mut text = format!(
        "apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {{name: n1-eth0, labels: {{role: node}}}}
spec: {{node: n1, interfaceName: eth0, expectedIPs: [{NODE_IP}]}}
---
apiVersion: projectcalico.org/v3
kind: WorkloadEndpoint
metadata:
  name: n1-k8s-p-eth0
  namespace: x
  labels: {{role: node, projectcalico.org/namespace: x, projectcalico.org/orchestrator: k8s}}
spec:
  node: n1
  orchestrator: k8s
  endpoint: eth0
  pod: p
  interfaceName: calip
  ipNetworks: [{POD_IP}/32]
"
    );
    let rule = |action: &str, port: u16| {
        format!("  - action: {action}\n    protocol: TCP\n    destination: {{ports: [{port}]}}\n")
    };
    text.push_str(&gnp(
        "GlobalNetworkPolicy",
        "normal",
        10,
        &format!(
            "  types: [Ingress, Egress]\n  ingress:\n{}  egress:\n{}",
            rule("Allow", 8081),
            rule("Allow", 8081)
        ),
    ));
    text.push_str(&gnp(
        "GlobalNetworkPolicy",
        "fwd",
        5,
        &format!(
            "  applyOnForward: true\n  types: [Ingress]\n  ingress:\n{}",
            rule("Deny", 80)
        ),
    ));
    text.push_str(&gnp(
        "GlobalNetworkPolicy",
        "pre",
        1,
        &format!(
            "  preDNAT: true\n  applyOnForward: true\n  types: [Ingress]\n  ingress:\n{}{}",
            rule("Allow", 8080),
            rule("Deny", 9090)
        ),
    ));
    text.push_str(&gnp(
        "GlobalNetworkPolicy",
        "untracked",
        1,
        &format!(
            "  doNotTrack: true\n  applyOnForward: true\n  types: [Ingress, Egress]\n  ingress:\n{}{}  egress:\n{}",
            rule("Deny", 7070),
            rule("Allow", 6060),
            rule("Deny", 7070)
        ),
    ));
    let deny_all = "  ingress: [{action: Deny}]\n  egress: [{action: Deny}]\n";
    for (name, flags) in [
        (
            "staged-untracked",
            "  doNotTrack: true\n  applyOnForward: true\n",
        ),
        ("staged-fwd", "  applyOnForward: true\n"),
        ("staged-normal", ""),
    ] {
        text.push_str(&gnp(
            "StagedGlobalNetworkPolicy",
            name,
            0,
            &format!("{flags}  types: [Ingress, Egress]\n{deny_all}"),
        ));
    }
    text.push_str(&gnp(
        "StagedGlobalNetworkPolicy",
        "staged-pre",
        0,
        "  preDNAT: true\n  applyOnForward: true\n  types: [Ingress]\n  ingress: [{action: Deny}]\n",
    ));
    let w = World::from_resources(&resources(&text));
    assert!(w.errors().is_empty(), "{:?}", w.errors());
    assert_eq!(w.staged().count(), 4);
    w
}

fn names(tiers: &[TierChains]) -> Vec<&str> {
    tiers
        .iter()
        .flat_map(|t| t.policies.iter().map(String::as_str))
        .collect()
}

#[test]
fn each_policy_is_in_its_classes() {
    let w = world();
    let class_of = |name: &str| -> Vec<PolicyClass> {
        let p = w
            .policies()
            .find(|p| p.id.name == name)
            .unwrap_or_else(|| panic!("{name}"));
        [
            PolicyClass::Normal,
            PolicyClass::Forward,
            PolicyClass::PreDnat,
            PolicyClass::Untracked,
        ]
        .into_iter()
        .filter(|c| c.includes(p))
        .collect()
    };
    assert_eq!(class_of("normal"), [PolicyClass::Normal]);
    // applyOnForward: the host's own traffic (filter path) and forwarded traffic.
    assert_eq!(class_of("fwd"), [PolicyClass::Normal, PolicyClass::Forward]);
    // preDNAT and doNotTrack: only their own stage, never the filter or forward path.
    assert_eq!(class_of("pre"), [PolicyClass::PreDnat]);
    assert_eq!(class_of("untracked"), [PolicyClass::Untracked]);
    assert!(PolicyClass::Normal.end_of_tier_drop());
    assert!(PolicyClass::Forward.end_of_tier_drop());
    assert!(!PolicyClass::PreDnat.end_of_tier_drop());
    assert!(!PolicyClass::Untracked.end_of_tier_drop());
    // Staged policies are not enforced: not among the world's policies at all.
    assert!(w.policies().all(|p| !p.staged()));
    assert_eq!(w.policies().count(), 4);
    // applicable_class filters by class and direction.
    let hep = w
        .endpoint(&EndpointId::Host {
            name: "n1-eth0".into(),
        })
        .expect("hep");
    let labels = w.effective_labels(hep);
    let ids = |dir, class| -> Vec<String> {
        applicable_class(&w, w.policies(), &labels, dir, class)
            .into_iter()
            .flat_map(|(_, ps)| ps.into_iter().map(|p| p.id.name.clone()))
            .collect()
    };
    assert_eq!(
        ids(Direction::Ingress, PolicyClass::Normal),
        ["fwd", "normal"]
    );
    assert_eq!(ids(Direction::Egress, PolicyClass::Normal), ["normal"]);
    assert_eq!(ids(Direction::Ingress, PolicyClass::Forward), ["fwd"]);
    assert!(ids(Direction::Egress, PolicyClass::Forward).is_empty());
    assert_eq!(ids(Direction::Ingress, PolicyClass::PreDnat), ["pre"]);
    assert!(ids(Direction::Egress, PolicyClass::PreDnat).is_empty());
    assert_eq!(
        ids(Direction::Ingress, PolicyClass::Untracked),
        ["untracked"]
    );
    assert_eq!(
        ids(Direction::Egress, PolicyClass::Untracked),
        ["untracked"]
    );
}

#[test]
fn dataplane_model_puts_each_class_in_its_stage() {
    let w = world();
    let m = dataplane::build(&w, &NodeConfig::new("n1"));
    let hep = &m.host_endpoints["eth0"];
    // The filter path: neither the preDNAT nor the doNotTrack policy.
    assert_eq!(names(&hep.ingress), ["pi-gnp/fwd", "pi-gnp/normal"]);
    assert_eq!(names(&hep.egress), ["po-gnp/normal"]);
    assert!(hep.ingress.iter().all(|t| t.end_drop));
    let x = &m.host_endpoint_extras["eth0"];
    assert_eq!(names(&x.untracked_ingress), ["pi-gnp/untracked"]);
    assert_eq!(names(&x.untracked_egress), ["po-gnp/untracked"]);
    assert_eq!(names(&x.pre_dnat_ingress), ["pi-gnp/pre"]);
    assert_eq!(names(&x.forward_ingress), ["pi-gnp/fwd"]);
    assert!(x.forward_egress.is_empty());
    // Untracked and pre-DNAT tiers leave what they do not decide to the next stage.
    for t in x.untracked_ingress.iter().chain(&x.untracked_egress) {
        assert!(!t.end_drop, "{t:?}");
    }
    assert!(x.pre_dnat_ingress.iter().all(|t| !t.end_drop));
    assert!(x.forward_ingress.iter().all(|t| t.end_drop));
    // The pod: host endpoint classes do not apply to workloads; applyOnForward is ignored.
    let wl = &m.workloads["calip"];
    assert_eq!(names(&wl.ingress), ["pi-gnp/fwd", "pi-gnp/normal"]);
    assert_eq!(names(&wl.egress), ["po-gnp/normal"]);
    // Staged policies render no chain; every chain is an enforced policy's or a profile's.
    let chains: BTreeSet<&str> = m.chains.keys().map(String::as_str).collect();
    let policy_chains: BTreeSet<&str> = chains
        .iter()
        .copied()
        .filter(|c| c.starts_with("pi-") || c.starts_with("po-"))
        .collect();
    assert_eq!(
        policy_chains,
        [
            "pi-gnp/fwd",
            "pi-gnp/normal",
            "pi-gnp/pre",
            "pi-gnp/untracked",
            "po-gnp/normal",
            "po-gnp/untracked",
        ]
        .into()
    );
    // Without stage policies, no extras.
    let plain = World::from_resources(
        &resources(&format!(
            "apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {{name: n1-eth0, labels: {{role: node}}}}
spec: {{node: n1, interfaceName: eth0, expectedIPs: [{NODE_IP}]}}
{}",
            gnp("GlobalNetworkPolicy", "normal", 1, "  types: [Ingress]\n")
        ))
        .into_iter()
        .collect::<Vec<_>>(),
    );
    let m = dataplane::build(&plain, &NodeConfig::new("n1"));
    assert!(m.host_endpoint_extras.is_empty());
}

fn tcp(src: &str, dst: &str, port: u16) -> Packet {
    Packet {
        src: src.parse::<IpAddr>().unwrap(),
        dst: dst.parse::<IpAddr>().unwrap(),
        protocol: proto::TCP,
        src_port: 40000,
        dst_port: port,
        icmp_type: None,
        icmp_code: None,
    }
}

fn rule_of(v: &tortie_calc::eval::Verdict) -> Option<(String, usize)> {
    match &v.decider {
        Decider::Rule { policy, rule, .. } => Some((policy.name.clone(), *rule)),
        _ => None,
    }
}

#[test]
fn explain_runs_untracked_then_pre_dnat_then_the_filter_path() {
    let w = world();
    let addrs = Addresses::new(&w);
    let inbound = |port| explain(&w, &addrs, &tcp(OUTSIDE, NODE_IP, port));
    // Untracked deny first.
    let e = inbound(7070);
    assert_eq!(e.outcome, Outcome::Deny);
    assert_eq!(rule_of(&e.ingress), Some(("untracked".into(), 0)));
    // Untracked allow is final (the filter path would deny: end of tier).
    let e = inbound(6060);
    assert_eq!(e.outcome, Outcome::Allow);
    assert_eq!(rule_of(&e.ingress), Some(("untracked".into(), 1)));
    // No untracked match: preDNAT allow is final, preDNAT deny drops.
    let e = inbound(8080);
    assert_eq!(e.outcome, Outcome::Allow);
    assert_eq!(rule_of(&e.ingress), Some(("pre".into(), 0)));
    let e = inbound(9090);
    assert_eq!(e.outcome, Outcome::Deny);
    assert_eq!(rule_of(&e.ingress), Some(("pre".into(), 1)));
    // No match in either: the filter path (fwd denies 80, normal allows 8081, else end of
    // tier).
    assert_eq!(rule_of(&inbound(80).ingress), Some(("fwd".into(), 0)));
    assert_eq!(rule_of(&inbound(8081).ingress), Some(("normal".into(), 0)));
    assert_eq!(
        inbound(8082).ingress.decider,
        Decider::EndOfTier {
            tier: "default".into()
        }
    );
    // Failsafe ports come before untracked policy.
    assert!(matches!(
        inbound(22).ingress.decider,
        Decider::Failsafe { .. }
    ));
    // Egress: untracked, then the filter path (preDNAT is ingress only).
    let outbound = |port| explain(&w, &addrs, &tcp(NODE_IP, OUTSIDE, port));
    assert_eq!(
        rule_of(&outbound(7070).egress),
        Some(("untracked".into(), 0))
    );
    assert_eq!(rule_of(&outbound(8081).egress), Some(("normal".into(), 0)));
    // A pod selected by the same selectors meets only the filter-path policies.
    let e = explain(&w, &addrs, &tcp(OUTSIDE, POD_IP, 7070));
    assert_eq!(
        e.ingress.decider,
        Decider::EndOfTier {
            tier: "default".into()
        }
    );
    // Staged policies would deny everything; explain reports them apart, not enforced.
    assert_eq!(inbound(8081).outcome, Outcome::Allow);
}

#[test]
fn forwarded_traffic_meets_apply_on_forward_policy_only() {
    let w = world();
    let addrs = Addresses::new(&w);
    let enforced: Vec<_> = w.policies().cloned().collect();
    let hep = EndpointId::Host {
        name: "n1-eth0".into(),
    };
    let fwd = |dir, pkt: &Packet| evaluate_forward(&w, &addrs, &enforced, &hep, dir, pkt);
    // In through eth0 to a pod: untracked, preDNAT, then the applyOnForward policy.
    let to_pod = |port| tcp(OUTSIDE, POD_IP, port);
    assert_eq!(
        rule_of(&fwd(Direction::Ingress, &to_pod(7070))),
        Some(("untracked".into(), 0))
    );
    assert_eq!(
        rule_of(&fwd(Direction::Ingress, &to_pod(8080))),
        Some(("pre".into(), 0))
    );
    let v = fwd(Direction::Ingress, &to_pod(80));
    assert_eq!(v.outcome, Outcome::Deny);
    assert_eq!(rule_of(&v), Some(("fwd".into(), 0)));
    // The normal policy (no applyOnForward) does not apply: 8081 ends the fwd policy's tier.
    assert_eq!(
        fwd(Direction::Ingress, &to_pod(8081)).decider,
        Decider::EndOfTier {
            tier: "default".into()
        }
    );
    // Out through eth0: no applyOnForward egress policy, so allowed; untracked egress
    // (raw output) is the host's own traffic only.
    let v = fwd(Direction::Egress, &tcp(POD_IP, OUTSIDE, 7070));
    assert_eq!(v.outcome, Outcome::Allow);
    assert_eq!(v.decider, Decider::NoForwardPolicy);
    // The staged view: the staged applyOnForward deny-all would decide forwarded egress.
    let view = w.staged_view();
    let v = evaluate_forward(
        &w,
        &addrs,
        &view,
        &hep,
        Direction::Egress,
        &tcp(POD_IP, OUTSIDE, 7070),
    );
    assert_eq!(v.outcome, Outcome::Deny);
}
