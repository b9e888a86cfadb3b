//! Hand-built dataplane models for unit tests.

use std::collections::{BTreeMap, BTreeSet};

use tortie_calc::dataplane::{
    DataplaneModel, EndpointToHost, Family, IpSet, IpSetMembers, NatOutgoing, PolicyChain,
    RenderedRule, RenderedSide, TierChains, WorkloadChains,
};
use tortie_calc::model::{Action, EndpointId, proto};

pub(crate) fn allow_all(comment: &str) -> Vec<RenderedRule> {
    [Family::V4, Family::V6]
        .into_iter()
        .map(|family| RenderedRule {
            action: Action::Allow,
            family,
            protocol: None,
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            src: RenderedSide::default(),
            dst: RenderedSide::default(),
            comment: comment.to_string(),
        })
        .collect()
}

pub(crate) fn workload(pod: &str, ingress: &[&str], profiles: &[&str]) -> WorkloadChains {
    WorkloadChains {
        endpoint: EndpointId::Workload {
            namespace: "x".into(),
            name: pod.into(),
        },
        ingress: if ingress.is_empty() {
            Vec::new()
        } else {
            vec![TierChains {
                tier: "default".into(),
                policies: ingress.iter().map(|s| s.to_string()).collect(),
                end_drop: true,
            }]
        },
        egress: Vec::new(),
        ingress_profiles: profiles.iter().map(|s| format!("pri-{s}")).collect(),
        egress_profiles: profiles.iter().map(|s| format!("pro-{s}")).collect(),
    }
}

/// Pod b (calib2) admits TCP 80 from the pods of set `s4-a` and the named port `http` of the
/// `n4-b` set; both pods have the allow-all namespace profile.
pub(crate) fn model() -> DataplaneModel {
    let mut chains = BTreeMap::new();
    let mut ip_sets = BTreeMap::new();
    ip_sets.insert(
        "s4-a".to_string(),
        IpSet {
            family: Family::V4,
            members: IpSetMembers::Nets(BTreeSet::from(["10.244.1.10/32".parse().expect("net")])),
        },
    );
    ip_sets.insert(
        "n4-b".to_string(),
        IpSet {
            family: Family::V4,
            members: IpSetMembers::NamedPorts(BTreeSet::from([(
                "10.244.2.11".parse().expect("ip"),
                proto::TCP,
                8080,
            )])),
        },
    );
    chains.insert(
        "pi-knp/x/allow-a".to_string(),
        PolicyChain {
            rules: vec![RenderedRule {
                action: Action::Allow,
                family: Family::V4,
                protocol: Some(proto::TCP),
                not_protocol: None,
                icmp: None,
                not_icmp: None,
                src: RenderedSide {
                    set: Some("s4-a".into()),
                    ..RenderedSide::default()
                },
                dst: RenderedSide {
                    ports: vec![(80, 80)],
                    named_port_sets: vec!["n4-b".into()],
                    ..RenderedSide::default()
                },
                comment: "knp/x/allow-a ingress[0]".into(),
            }],
        },
    );
    for d in ["pri", "pro"] {
        chains.insert(
            format!("{d}-kns.x"),
            PolicyChain {
                rules: allow_all("profile/kns.x"),
            },
        );
    }
    let mut workloads = BTreeMap::new();
    workloads.insert("calia1".to_string(), workload("a", &[], &["kns.x"]));
    workloads.insert(
        "calib2".to_string(),
        workload("b", &["pi-knp/x/allow-a"], &["kns.x"]),
    );
    DataplaneModel {
        ip_sets,
        chains,
        workloads,
        host_endpoints: BTreeMap::new(),
        host_endpoint_extras: BTreeMap::new(),
        staged_workloads: BTreeMap::new(),
        staged_chains: BTreeMap::new(),
        failsafe_inbound: tortie_calc::failsafe::default_inbound(),
        failsafe_outbound: tortie_calc::failsafe::default_outbound(),
        endpoint_to_host: EndpointToHost::Drop,
        nat: NatOutgoing::default(),
    }
}

/// A host endpoint on `eth0` whose ingress is `ingress` (default tier) and with `profiles`;
/// no egress policy.
pub(crate) fn host_endpoint(name: &str, ingress: &[&str], profiles: &[&str]) -> WorkloadChains {
    WorkloadChains {
        endpoint: EndpointId::Host { name: name.into() },
        ..workload("unused", ingress, profiles)
    }
}
