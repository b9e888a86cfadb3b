//! Host endpoints in the world: failsafe ports, the built-in default-allow profile, and what
//! `policy explain` decides for traffic to and from a host.

use std::net::IpAddr;

use tortie_api::codec::decode;
use tortie_api::resource::Resource;

use super::*;
use crate::eval::{Addresses, Decider, Outcome, Packet, explain};
use crate::failsafe::FailsafePort;
use crate::model::proto;

fn resources(text: &str) -> Vec<Resource> {
    decode("test.yaml", text, "default")
        .into_iter()
        .map(|d| {
            let (_, mut r) = d.expect("decodes");
            r.default_and_validate().expect("valid");
            r
        })
        .collect()
}

const NODE_IP: &str = "198.18.0.11";
const OUTSIDE: &str = "198.18.0.101";

/// Host endpoint `n1-eth0` (role=node) with `profiles`, and a GNP denying all its ingress
/// when `deny` is set.
fn world(profiles: &str, deny: bool) -> World {
    let mut text = format!(
        "apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata: {{name: n1-eth0, labels: {{role: node}}}}
spec: {{node: n1, interfaceName: eth0, expectedIPs: [{NODE_IP}], profiles: [{profiles}]}}
"
    );
    if deny {
        text.push_str(
            "---
apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata: {name: hep-deny}
spec: {selector: role == 'node', types: [Ingress]}
",
        );
    }
    let w = World::from_resources(&resources(&text));
    assert!(w.errors().is_empty(), "{:?}", w.errors());
    w
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

fn decide(w: &World, pkt: &Packet) -> crate::eval::Explanation {
    explain(w, &Addresses::new(w), pkt)
}

#[test]
fn failsafe_ports_are_allowed_before_host_endpoint_policy() {
    let w = world("", true);
    let e = decide(&w, &tcp(OUTSIDE, NODE_IP, 22));
    assert_eq!(
        e.to,
        Some(EndpointId::Host {
            name: "n1-eth0".into()
        })
    );
    assert_eq!(e.outcome, Outcome::Allow);
    assert_eq!(
        e.ingress.decider,
        Decider::Failsafe {
            protocol: "tcp".into(),
            port: 22
        }
    );
    // Not a failsafe port: the GNP selects the host endpoint and has no rules.
    let e = decide(&w, &tcp(OUTSIDE, NODE_IP, 8080));
    assert_eq!(e.outcome, Outcome::Deny);
    assert_eq!(
        e.ingress.decider,
        Decider::EndOfTier {
            tier: "default".into()
        }
    );
    // UDP 22 is not failsafe; UDP 68 (DHCP) is.
    let mut udp = tcp(OUTSIDE, NODE_IP, 22);
    udp.protocol = proto::UDP;
    assert_eq!(decide(&w, &udp).outcome, Outcome::Deny);
    udp.dst_port = 68;
    assert_eq!(decide(&w, &udp).outcome, Outcome::Allow);
    // Outbound: the host's DNS queries are failsafe, its other traffic has no egress policy
    // and no profile, so it is denied.
    let mut dns = tcp(NODE_IP, OUTSIDE, 53);
    dns.protocol = proto::UDP;
    let e = decide(&w, &dns);
    assert_eq!(
        e.egress.decider,
        Decider::Failsafe {
            protocol: "udp".into(),
            port: 53
        }
    );
    let e = decide(&w, &tcp(NODE_IP, OUTSIDE, 8080));
    assert_eq!(e.egress.decider, Decider::NoProfileMatched);
    assert_eq!(e.outcome, Outcome::Deny);
}

#[test]
fn a_host_endpoint_without_policy_or_profile_denies_and_default_allow_allows() {
    let w = world("", false);
    let e = decide(&w, &tcp(OUTSIDE, NODE_IP, 8080));
    assert_eq!(e.ingress.decider, Decider::NoProfileMatched);
    let w = world(DEFAULT_ALLOW_PROFILE, false);
    let e = decide(&w, &tcp(OUTSIDE, NODE_IP, 8080));
    assert_eq!(e.outcome, Outcome::Allow);
    assert_eq!(
        e.ingress.decider,
        Decider::Profile {
            profile: DEFAULT_ALLOW_PROFILE.into(),
            rule: 0
        }
    );
    // A policy still applies first: end of tier before the profile.
    let w = world(DEFAULT_ALLOW_PROFILE, true);
    assert_eq!(
        decide(&w, &tcp(OUTSIDE, NODE_IP, 8080)).outcome,
        Outcome::Deny
    );
    // The built-in profile carries no labels.
    assert!(
        w.profile(DEFAULT_ALLOW_PROFILE)
            .unwrap()
            .labels_to_apply
            .is_empty()
    );
}

#[test]
fn failsafe_ports_come_from_felix_configuration() {
    let mut w = world("", true);
    assert_eq!(w.failsafe("n1"), crate::failsafe::Failsafe::default());
    let felix = |name: &str, spec: &str| {
        resources(&format!(
            "apiVersion: projectcalico.org/v3\nkind: FelixConfiguration\nmetadata: {{name: {name}}}\nspec: {spec}\n"
        ))
        .remove(0)
    };
    w.upsert(&felix(
        "default",
        "{failsafeInboundHostPorts: [{protocol: TCP, port: 8080, net: 198.18.0.0/24}]}",
    ));
    w.upsert(&felix("node.n2", "{failsafeInboundHostPorts: []}"));
    let want = FailsafePort {
        protocol: proto::TCP,
        port: 8080,
        net: Some("198.18.0.0/24".parse().unwrap()),
    };
    assert_eq!(w.failsafe("n1").inbound, [want]);
    assert_eq!(
        w.failsafe("n1").outbound,
        crate::failsafe::default_outbound()
    );
    assert!(w.failsafe("n2").inbound.is_empty(), "node.n2 overrides");
    // Now 8080 from the fabric is failsafe, 22 is not, and 8080 from elsewhere is not.
    assert_eq!(
        decide(&w, &tcp(OUTSIDE, NODE_IP, 8080)).outcome,
        Outcome::Allow
    );
    assert_eq!(
        decide(&w, &tcp(OUTSIDE, NODE_IP, 22)).outcome,
        Outcome::Deny
    );
    assert_eq!(
        decide(&w, &tcp("192.0.2.1", NODE_IP, 8080)).outcome,
        Outcome::Deny
    );
    w.remove(&ResourceKey {
        kind: Kind::FelixConfiguration,
        namespace: None,
        name: "default".into(),
    });
    assert_eq!(w.failsafe("n1"), crate::failsafe::Failsafe::default());
}
