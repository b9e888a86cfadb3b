//! Against the kernel's nftables, inside network namespaces each test creates (root only;
//! under `CI=true` a missing root is a failure, not a skip). Nothing is configured in the
//! root namespace; addresses follow test-network.md (pods in 10.244.0.0/16).

use proptest::prelude::*;
use tortie_dataplane::diff;
use tortie_dataplane::{
    ApplyMode, ChainDef, MapDef, NftCommand, NftManager, NftRunner, NftTable, SetDef,
};

#[path = "support/lab.rs"]
mod lab;
#[path = "support/models.rs"]
mod models;
#[path = "support/netns.rs"]
mod netns;
#[path = "support/table_gen.rs"]
mod table_gen;

use lab::lab;
use models::{HTTP_PORT, model_ab, model_of, namespace, policy, wep};
use netns::{Namespaces, is_root, nft_in, normalised, path};

// ---------------------------------------------------------------------------------------

/// (a) A full apply of a model with a policy, a selector set and a named-port set.
#[test]
fn full_apply_is_accepted_by_nft() {
    if !is_root() {
        return;
    }
    let mut nss = Namespaces::new();
    let ns = nss.add();
    let m = model_ab("10.244.1.10", "http");
    assert!(
        m.ip_sets.keys().any(|k| k.starts_with("s4-")),
        "{:?}",
        m.ip_sets.keys()
    );
    assert!(
        m.ip_sets.keys().any(|k| k.starts_with("n4-")),
        "{:?}",
        m.ip_sets.keys()
    );
    let mut mgr = NftManager::new(NftCommand::in_netns(path(&ns)));
    let stats = mgr.apply(&m).expect("apply");
    assert_eq!(stats.mode, ApplyMode::Full);
    let listing = nft_in(&ns, &["list", "table", "inet", "tortie"]);
    for want in [
        "chain forward {",
        "chain input {",
        "chain pi-knp/x/allow-a {",
        "chain tw-calib2 {",
        "chain fw-calia1 {",
        "chain pri-kns.x {",
        "chain postrouting {",
        "map fw-dispatch {",
        "\"calib2\" : goto tw-calib2",
        "10.244.2.11 . tcp . 80",
        "elements = { 10.244.1.10 }",
        "ip saddr @masq-pools4 ip daddr != @all-pools4 masquerade",
    ] {
        assert!(listing.contains(want), "missing {want:?} in\n{listing}");
    }
    assert_eq!(mgr.last_listing(), None, "not listed on the change path");
    assert!(
        !mgr.check_drift().expect("check"),
        "no drift right after apply"
    );
    assert_eq!(mgr.last_listing(), Some(listing.as_str()));
    // Applying the same model again does nothing.
    assert_eq!(mgr.apply(&m).expect("again").mode, ApplyMode::Unchanged);
    mgr.remove().expect("remove");
    assert!(mgr.runner().list().is_err_and(|e| e.is_missing()));
}

/// (b) An incremental apply yields what a full apply of the new model yields.
#[test]
fn incremental_apply_matches_full_apply() {
    if !is_root() {
        return;
    }
    let mut nss = Namespaces::new();
    let ns = nss.add();
    let old = model_ab("10.244.1.10", "80");
    let new = model_ab("10.244.1.20", "8080");
    let mut mgr = NftManager::new(NftCommand::in_netns(path(&ns)));
    mgr.apply(&old).expect("old");
    let stats = mgr.apply(&new).expect("new");
    assert_eq!(stats.mode, ApplyMode::Incremental, "{}", stats.script);
    assert!(!stats.retried_full);
    let s = &stats.script;
    assert!(s.contains("add element inet tortie s4-"), "{s}");
    assert!(s.contains("delete element inet tortie s4-"), "{s}");
    assert!(
        s.contains("flush chain inet tortie pi-knp/x/allow-a\n"),
        "{s}"
    );
    assert!(!s.contains("delete table"), "{s}");
    assert!(stats.commands() <= 6, "small script:\n{s}");
    let incremental = normalised(&ns);

    let mut fresh = NftManager::new(NftCommand::in_netns(path(&ns)));
    fresh.remove().expect("remove");
    assert_eq!(fresh.apply(&new).expect("full").mode, ApplyMode::Full);
    assert_eq!(normalised(&ns), incremental);
}

/// Pods a and b as in `model_ab`, a with both an IPv4 and an IPv6 address.
fn model_dual(a4: &str, a6: &str) -> tortie_dataplane::DataplaneModel {
    let a = wep("a", "a", "calia1", a4, "").replace(
        &format!("  - {a4}/32\n"),
        &format!("  - {a4}/32\n  - {a6}/128\n"),
    );
    let b = wep("b", "b", "calib2", "10.244.2.11", HTTP_PORT).replace(
        "  - 10.244.2.11/32\n",
        "  - 10.244.2.11/32\n  - fd00:10:244:2::11/128\n",
    );
    model_of(&[namespace(), a, b, policy("80")])
}

/// A pod's addresses changing is a change of selector set members only: it is committed as
/// netlink element updates (no `nft` process), in both families, and leaves exactly what a
/// full apply of the new model leaves. An update the kernel refuses (an element to delete
/// was removed behind our back) is repaired with a full replace.
#[test]
fn member_changes_commit_as_element_updates() {
    if !is_root() {
        return;
    }
    let mut nss = Namespaces::new();
    let ns = nss.add();
    let old = model_dual("10.244.1.10", "fd00:10:244:1::10");
    let new = model_dual("10.244.1.20", "fd00:10:244:1::20");
    assert!(
        old.ip_sets.keys().any(|k| k.starts_with("s6-")),
        "{:?}",
        old.ip_sets.keys()
    );
    let mut mgr = NftManager::new(NftCommand::in_netns(path(&ns)));
    mgr.apply(&old).expect("old");
    let g0 = mgr.runner().generation().expect("generation");
    let stats = mgr.apply(&new).expect("new");
    assert_eq!(stats.mode, ApplyMode::Incremental, "{}", stats.script);
    assert!(stats.elements_only, "{}", stats.script);
    assert_eq!(stats.commands(), 4, "{}", stats.script);
    assert_eq!(
        mgr.runner().generation(),
        Some(g0 + 1),
        "one transaction for both sets"
    );
    let listing = nft_in(&ns, &["list", "table", "inet", "tortie"]);
    for want in [
        "elements = { 10.244.1.20 }",
        "elements = { fd00:10:244:1::20 }",
    ] {
        assert!(listing.contains(want), "missing {want:?} in\n{listing}");
    }
    let patched = normalised(&ns);
    assert!(
        !mgr.check_drift().expect("check"),
        "no drift after element updates"
    );

    // Someone deletes the element we are about to remove: the update is refused as a whole
    // (nothing half-applied) and the table is replaced.
    let set4 = old
        .ip_sets
        .keys()
        .find(|k| k.starts_with("s4-"))
        .expect("v4 set")
        .clone();
    nft_in(
        &ns,
        &[
            "delete",
            "element",
            "inet",
            "tortie",
            &set4,
            "{ 10.244.1.20 }",
        ],
    );
    let stats = mgr.apply(&old).expect("back");
    assert_eq!(stats.mode, ApplyMode::Full, "{}", stats.script);
    assert!(stats.retried_full);
    let repaired = normalised(&ns);

    let mut fresh = NftManager::new(NftCommand::in_netns(path(&ns)));
    fresh.remove().expect("remove");
    fresh.apply(&new).expect("full new");
    assert_eq!(normalised(&ns), patched);
    fresh.apply(&old).expect("old again");
    assert_eq!(normalised(&ns), repaired);
}

/// A change of thousands of members at once goes as several element messages in one batch,
/// every one of them applied whole: 2400 IPv6 addresses joining a set would overflow one
/// message's 16-bit list length (28 bytes each). The table equals a full apply's.
#[test]
fn large_member_changes_are_applied_whole() {
    if !is_root() {
        return;
    }
    let mut nss = Namespaces::new();
    let ns = nss.add();
    let set_of = |count: u128| {
        let nets: Vec<String> = (0..count)
            .map(|i| {
                format!(
                    "{}/128",
                    std::net::Ipv6Addr::from(0xfd00_0010_0099_0000_0000_0000_0000_0000u128 + i)
                )
            })
            .collect();
        format!(
            "apiVersion: projectcalico.org/v3\nkind: NetworkSet\nmetadata: {{name: many, namespace: x, labels: {{app: a}}}}\nspec:\n  nets: [{}]\n",
            nets.join(", ")
        )
    };
    let model = |count: u128| {
        model_of(&[
            namespace(),
            wep("a", "a", "calia1", "10.244.1.10", ""),
            wep("b", "b", "calib2", "10.244.2.11", HTTP_PORT),
            "apiVersion: projectcalico.org/v3\nkind: NetworkPolicy\nmetadata: {name: from-a, namespace: x}\nspec:\n  selector: app == 'b'\n  types: [Ingress]\n  ingress:\n  - {action: Allow, protocol: TCP, source: {selector: app == 'a'}}\n".to_string(),
            set_of(count),
        ])
    };
    let (old, new) = (model(1), model(2401));
    let mut mgr = NftManager::new(NftCommand::in_netns(path(&ns)));
    mgr.apply(&old).expect("old");
    let stats = mgr.apply(&new).expect("new");
    assert_eq!(stats.mode, ApplyMode::Incremental);
    assert!(
        stats.elements_only,
        "{} bytes of script",
        stats.script.len()
    );
    let patched_new = normalised(&ns);
    // And back: 2400 deletes, split the same way.
    let stats = mgr.apply(&old).expect("back");
    assert!(
        stats.elements_only,
        "{} bytes of script",
        stats.script.len()
    );
    let patched_old = normalised(&ns);
    for (model, patched) in [(&new, &patched_new), (&old, &patched_old)] {
        let mut fresh = NftManager::new(NftCommand::in_netns(path(&ns)));
        fresh.remove().expect("remove");
        assert_eq!(fresh.apply(model).expect("full").mode, ApplyMode::Full);
        assert_eq!(&normalised(&ns), patched);
    }
}

/// (c) Someone flushes or deletes the table; the drift check puts it back.
#[test]
fn drift_is_repaired() {
    if !is_root() {
        return;
    }
    let mut nss = Namespaces::new();
    let ns = nss.add();
    let mut mgr = NftManager::new(NftCommand::in_netns(path(&ns)));
    mgr.apply(&model_ab("10.244.1.10", "http")).expect("apply");
    let before = nft_in(&ns, &["list", "table", "inet", "tortie"]);
    nft_in(&ns, &["flush", "table", "inet", "tortie"]);
    assert_ne!(nft_in(&ns, &["list", "table", "inet", "tortie"]), before);
    assert!(mgr.check_drift().expect("check"));
    assert_eq!(nft_in(&ns, &["list", "table", "inet", "tortie"]), before);
    assert!(!mgr.check_drift().expect("check again"));

    nft_in(&ns, &["delete", "table", "inet", "tortie"]);
    assert!(mgr.check_drift().expect("check after delete"));
    assert_eq!(nft_in(&ns, &["list", "table", "inet", "tortie"]), before);

    nft_in(&ns, &["add", "rule", "inet", "tortie", "forward", "accept"]);
    assert!(mgr.check_drift().expect("check after edit"));
    assert_eq!(nft_in(&ns, &["list", "table", "inet", "tortie"]), before);
}

/// The nftables generation moves with every commit in the namespace, whoever makes it, and
/// is read inside the namespace (not the caller's).
#[test]
fn generation_moves_with_commits() {
    if !is_root() {
        return;
    }
    let mut nss = Namespaces::new();
    let ns = nss.add();
    let runner = NftCommand::in_netns(path(&ns));
    let g0 = runner.generation().expect("generation");
    runner
        .run("table inet scratch {}\n")
        .expect("create a table");
    let g1 = runner.generation().expect("generation");
    assert_ne!(g0, g1);
    assert_eq!(
        runner.generation(),
        Some(g1),
        "stable while nothing commits"
    );
    nft_in(&ns, &["delete", "table", "inet", "scratch"]);
    assert_ne!(runner.generation().expect("generation"), g1);
}

/// Every shape of rule the renderer can produce, in both families, is accepted by nft.
#[test]
fn every_rule_form_is_accepted() {
    use tortie_calc::dataplane::{
        Family, IpSet, IpSetMembers, PolicyChain, RenderedRule, RenderedSide, TierChains,
    };
    use tortie_calc::model::{Action, IcmpMatch, proto};
    if !is_root() {
        return;
    }
    let mut nss = Namespaces::new();
    let ns = nss.add();
    let mut m = model_ab("10.244.1.10", "http");
    let net = |s: &str| -> ipnet::IpNet { s.parse().expect("net") };
    let (s4, s6, n4, n6) = ("s4-x", "s6-x", "n4-x", "n6-x");
    m.ip_sets.insert(
        s4.into(),
        IpSet {
            family: Family::V4,
            members: IpSetMembers::Nets(
                [net("10.0.0.0/8"), net("10.1.0.0/16"), net("192.168.0.1/32")].into(),
            ),
        },
    );
    m.ip_sets.insert(
        s6.into(),
        IpSet {
            family: Family::V6,
            members: IpSetMembers::Nets(
                [net("fd00:10:244::/56"), net("fd00:10:244::1/128")].into(),
            ),
        },
    );
    m.ip_sets.insert(
        n4.into(),
        IpSet {
            family: Family::V4,
            members: IpSetMembers::NamedPorts(
                [("10.244.2.11".parse().expect("ip"), proto::UDP, 53)].into(),
            ),
        },
    );
    m.ip_sets.insert(
        n6.into(),
        IpSet {
            family: Family::V6,
            members: IpSetMembers::NamedPorts(
                [("fd00:10:244::2".parse().expect("ip"), proto::SCTP, 9)].into(),
            ),
        },
    );
    let mut rules = Vec::new();
    for (family, set, nps, nets, icmp_proto) in [
        (
            Family::V4,
            s4,
            n4,
            vec![net("198.18.0.0/15"), net("10.96.0.1/32")],
            proto::ICMP,
        ),
        (
            Family::V6,
            s6,
            n6,
            vec![net("fd00:198:18::/64")],
            proto::ICMPV6,
        ),
    ] {
        let base = RenderedRule {
            action: Action::Allow,
            family,
            protocol: None,
            not_protocol: None,
            icmp: None,
            not_icmp: None,
            src: RenderedSide::default(),
            dst: RenderedSide::default(),
            comment: "gnp/all-forms ingress[0] \"quoted\" $dollar".repeat(4),
        };
        for action in [Action::Allow, Action::Deny, Action::Pass, Action::Log] {
            rules.push(RenderedRule {
                action,
                ..base.clone()
            });
        }
        rules.push(RenderedRule {
            protocol: Some(proto::TCP),
            src: RenderedSide {
                nets: nets.clone(),
                not_set: Some(set.into()),
                ports: vec![(1024, 65535)],
                named_port_sets: vec![nps.into()],
                ..RenderedSide::default()
            },
            dst: RenderedSide {
                not_nets: nets.clone(),
                set: Some(set.into()),
                ports: vec![(80, 80), (443, 443)],
                named_port_sets: vec![nps.into()],
                not_ports: vec![(8080, 8081)],
                not_named_port_sets: vec![nps.into()],
                ..RenderedSide::default()
            },
            ..base.clone()
        });
        rules.push(RenderedRule {
            dst: RenderedSide {
                ports: vec![(53, 53)],
                ..RenderedSide::default()
            },
            not_protocol: Some(proto::TCP),
            ..base.clone()
        });
        rules.push(RenderedRule {
            protocol: Some(icmp_proto),
            icmp: Some(IcmpMatch {
                type_: 8,
                code: Some(0),
            }),
            ..base.clone()
        });
        rules.push(RenderedRule {
            protocol: Some(icmp_proto),
            not_icmp: Some(IcmpMatch {
                type_: 3,
                code: Some(4),
            }),
            ..base.clone()
        });
        rules.push(RenderedRule {
            protocol: Some(47),
            not_icmp: Some(IcmpMatch {
                type_: 3,
                code: None,
            }),
            ..base.clone()
        });
    }
    m.chains
        .insert("pi-gnp/all-forms".into(), PolicyChain { rules });
    m.workloads
        .get_mut("calia1")
        .expect("a")
        .ingress
        .push(TierChains {
            tier: "default".into(),
            policies: vec!["pi-gnp/all-forms".into()],
            end_drop: true,
        });
    let table = tortie_dataplane::render(&m);
    let n = table.chains["pi-gnp/all-forms"].rules.len();
    assert!(n >= 20, "{n} rules");
    let mut mgr = NftManager::new(NftCommand::in_netns(path(&ns)));
    mgr.apply(&m)
        .unwrap_or_else(|e| panic!("{e}\n{}", e.stderr().unwrap_or_default()));
    let listing = nft_in(
        &ns,
        &["list", "chain", "inet", "tortie", "pi-gnp/all-forms"],
    );
    assert_eq!(listing.matches(" comment ").count(), n, "{listing}");
    assert!(
        listing.contains("log prefix \"tortie gnp/all-forms"),
        "{listing}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// The diff's property test again, with the kernel as the interpreter: for random pairs
    /// of small tables, full(a) then diff(a, b) lists the same as full(b).
    #[test]
    fn kernel_agrees_with_diff(ca in table_gen::choices(), cb in table_gen::choices()) {
        if !is_root() {
            return Ok(());
        }
        let (a, b) = (table_gen::build(&ca), table_gen::build(&cb));
        let mut nss = Namespaces::new();
        let ns = nss.add();
        let nft = NftCommand::in_netns(path(&ns));
        nft.run(&diff::script(None, &a)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let s = diff::script(Some(&a), &b);
        nft.run(&s).map_err(|e| TestCaseError::fail(format!("{e}\n{s}")))?;
        let incremental = normalised(&ns);
        nft.run(&diff::script(None, &b)).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(normalised(&ns), incremental, "script:\n{}", s);
    }
}

#[test]
fn packets_follow_policy() {
    if !is_root() {
        return;
    }
    let lab = lab();
    let b80 = lab.listen("b", 80);
    let b81 = lab.listen("b", 81);
    let c80 = lab.listen("c", 80);
    let timed_out = Err(std::io::ErrorKind::TimedOut);

    // Without our table everything flows: the plumbing works and drops below are policy.
    assert_eq!(lab.connect("a", "b", 81, &b81), Ok(()));
    assert_eq!(lab.connect("a", "c", 80, &c80), Ok(()));

    let mut mgr = NftManager::new(NftCommand::in_netns(path(&lab.host)));
    mgr.apply(&model_of(&[
        namespace(),
        wep("a", "a", "calia1", "10.244.1.10", ""),
        wep("b", "b", "calib2", "10.244.2.11", HTTP_PORT),
        policy("80"),
    ]))
    .expect("apply");
    assert_eq!(
        lab.connect("a", "b", 80, &b80),
        Ok(()),
        "a → b:80 is allowed"
    );
    assert_eq!(
        lab.connect("a", "b", 81, &b81),
        timed_out,
        "a → b:81 is denied"
    );
    assert_eq!(
        lab.connect("a", "c", 80, &c80),
        timed_out,
        "calic3 is unknown: fail closed"
    );
    assert_eq!(
        lab.connect("c", "b", 80, &b80),
        timed_out,
        "from an unknown interface too"
    );

    // Same policy through the named port `http`, applied incrementally.
    let stats = mgr
        .apply(&model_of(&[
            namespace(),
            wep("a", "a", "calia1", "10.244.1.10", ""),
            wep("b", "b", "calib2", "10.244.2.11", HTTP_PORT),
            policy("http"),
        ]))
        .expect("apply named port");
    assert_eq!(stats.mode, ApplyMode::Incremental, "{}", stats.script);
    assert!(stats.script.contains(". th dport @n4-"), "{}", stats.script);
    assert_eq!(
        lab.connect("a", "b", 80, &b80),
        Ok(()),
        "a → b:http is allowed"
    );
    assert_eq!(
        lab.connect("a", "b", 81, &b81),
        timed_out,
        "a → b:81 is still denied"
    );

    // Without the table, policy is gone.
    mgr.remove().expect("remove");
    assert_eq!(lab.connect("a", "b", 81, &b81), Ok(()));
}

/// A host endpoint `n1-eth1` on the host's `eth1` (or `*`), labelled role=node.
fn hep(iface: &str, profiles: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3
kind: HostEndpoint
metadata:
  name: n1-hep
  labels:
    role: node
spec:
  node: {}
  interfaceName: \"{iface}\"
  expectedIPs: [{}]
  profiles: [{profiles}]
",
        models::NODE,
        lab::HOST_IP
    )
}

const DENY_NODE_INGRESS: &str = "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: hep-deny
spec:
  selector: role == 'node'
  types: [Ingress]
";

/// Host endpoints with real packets: failsafe ports pass, the rest follows host endpoint
/// policy (default deny without profile), forwarded and host-to-pod traffic and loopback
/// are not policed.
#[test]
fn host_endpoint_packets_follow_policy() {
    if !is_root() {
        return;
    }
    let lab = lab();
    let h22 = lab.listen("host", 22);
    let h8080 = lab.listen("host", 8080);
    let e2379 = lab.listen("ext", 2379);
    let e8081 = lab.listen("ext", 8081);
    let b80 = lab.listen("b", 80);
    let timed_out = Err(std::io::ErrorKind::TimedOut);
    assert_eq!(lab.connect("ext", "host", 8080, &h8080), Ok(()), "plumbing");
    assert_eq!(lab.connect("host", "ext", 8081, &e8081), Ok(()), "plumbing");

    let pods = || {
        vec![
            namespace(),
            wep("a", "a", "calia1", "10.244.1.10", ""),
            wep("b", "b", "calib2", "10.244.2.11", HTTP_PORT),
            policy("80"),
        ]
    };
    let mut mgr = NftManager::new(NftCommand::in_netns(path(&lab.host)));
    let mut docs = pods();
    docs.extend([hep("eth1", ""), DENY_NODE_INGRESS.to_string()]);
    let m = model_of(&docs);
    assert_eq!(m.host_endpoints.len(), 1);
    mgr.apply(&m).expect("apply");
    assert_eq!(
        lab.connect("ext", "host", 22, &h22),
        Ok(()),
        "failsafe tcp/22"
    );
    assert_eq!(
        lab.connect("ext", "host", 8080, &h8080),
        timed_out,
        "policy denies"
    );
    assert_eq!(
        lab.connect("host", "ext", 2379, &e2379),
        Ok(()),
        "failsafe out tcp/2379"
    );
    assert_eq!(
        lab.connect("host", "ext", 8081, &e8081),
        timed_out,
        "no egress policy, no profile: denied"
    );
    assert_eq!(
        lab.connect("a", "b", 80, &b80),
        Ok(()),
        "forwarded: not host traffic"
    );
    assert_eq!(
        lab.connect("host", "b", 80, &b80),
        Ok(()),
        "host → pod is not policed"
    );
    assert_eq!(
        lab.connect("host", "host", 8080, &h8080),
        Ok(()),
        "loopback"
    );

    // The all-interfaces host endpoint with Calico's default-allow profile, applied
    // incrementally: the deny policy still applies to ingress, egress is allowed.
    let mut docs = pods();
    docs.extend([
        hep("*", "projectcalico-default-allow"),
        DENY_NODE_INGRESS.to_string(),
    ]);
    let stats = mgr.apply(&model_of(&docs)).expect("apply *");
    assert_eq!(stats.mode, ApplyMode::Incremental, "{}", stats.script);
    assert_eq!(
        lab.connect("ext", "host", 8080, &h8080),
        timed_out,
        "policy first"
    );
    assert_eq!(lab.connect("ext", "host", 22, &h22), Ok(()), "failsafe");
    assert_eq!(
        lab.connect("host", "ext", 8081, &e8081),
        Ok(()),
        "profile allows"
    );
    assert_eq!(
        lab.connect("host", "host", 8080, &h8080),
        Ok(()),
        "loopback"
    );
    assert_eq!(lab.connect("a", "b", 80, &b80), Ok(()), "forwarded");

    // Without the policy the profile decides: everything is allowed.
    let mut docs = pods();
    docs.push(hep("*", "projectcalico-default-allow"));
    mgr.apply(&model_of(&docs)).expect("apply without policy");
    assert_eq!(lab.connect("ext", "host", 8080, &h8080), Ok(()));

    // Without host endpoints the table is the plain one again (no output chain).
    let stats = mgr.apply(&model_of(&pods())).expect("apply without heps");
    assert_eq!(stats.mode, ApplyMode::Incremental, "{}", stats.script);
    let listing = nft_in(&lab.host, &["list", "table", "inet", "tortie"]);
    assert!(!listing.contains("chain output"), "{listing}");
    assert!(!mgr.check_drift().expect("drift check"));
}

/// A GlobalNetworkPolicy selecting the host endpoint (role=node) with `spec` (YAML lines,
/// indented two spaces) after the selector.
fn node_gnp(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: projectcalico.org/v3
kind: GlobalNetworkPolicy
metadata:
  name: {name}
spec:
  selector: role == 'node'
{spec}"
    )
}

/// An `applyOnForward` policy of the host endpoint: ingress to TCP 80 denied, the rest
/// allowed.
fn forward_deny_80() -> String {
    node_gnp(
        "forward-deny-80",
        "  applyOnForward: true
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: TCP
    destination:
      ports: [80]
  - action: Allow
",
    )
}

/// Flows in the host namespace's conntrack table to or from TCP `port`.
fn tracked_flows(ns: &str, port: u16) -> usize {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", path(ns).display()))
        .args(["--", "conntrack", "-L", "-p", "tcp"])
        .output()
        .expect("run conntrack");
    assert!(
        out.status.success(),
        "conntrack -L: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = port.to_string();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .any(|w| w == format!("dport={port}") || w == format!("sport={port}"))
        })
        .count()
}

/// Host endpoint policy outside the filter path, with real packets: `doNotTrack` policies
/// (raw hooks, before conntrack), `preDNAT` policies (prerouting, before DNAT) and
/// `applyOnForward` policies on traffic forwarded through the host endpoint's interface;
/// failsafe ports pass all of them.
#[test]
fn host_endpoint_stages_follow_policy() {
    if !is_root() {
        return;
    }
    let lab = lab();
    let h22 = lab.listen("host", 22);
    let h80 = lab.listen("host", 80);
    let h8080 = lab.listen("host", 8080);
    let h8081 = lab.listen("host", 8081);
    let e2379 = lab.listen("ext", 2379);
    let e8081 = lab.listen("ext", 8081);
    let a80 = lab.listen("a", 80);
    let b80 = lab.listen("b", 80);
    let b81 = lab.listen("b", 81);
    let timed_out = Err(std::io::ErrorKind::TimedOut);
    // Plumbing: the outside peer reaches the host and, forwarded through eth1, the pods.
    assert_eq!(lab.connect("ext", "host", 8080, &h8080), Ok(()), "plumbing");
    assert_eq!(
        lab.connect("ext", "b", 80, &b80),
        Ok(()),
        "plumbing: ext → pod"
    );

    // Pods without policy: their namespace profile allows everything, so what is dropped
    // below is host endpoint policy.
    let with = |extra: &[String]| {
        let mut docs = vec![
            namespace(),
            wep("a", "a", "calia1", "10.244.1.10", ""),
            wep("b", "b", "calib2", "10.244.2.11", HTTP_PORT),
        ];
        docs.extend(extra.iter().cloned());
        let m = model_of(&docs);
        assert_eq!(m.host_endpoints.len(), 1);
        m
    };
    let allow_all = hep("eth1", "projectcalico-default-allow");
    let deny_all = hep("eth1", "");
    let normal_deny = DENY_NODE_INGRESS.to_string();
    let mut mgr = NftManager::new(NftCommand::in_netns(path(&lab.host)));

    // (a) doNotTrack. A deny drops before the profile, which would allow; what it does not
    // match goes on (no end-of-tier drop), in both directions.
    let untracked_deny = node_gnp(
        "untracked-deny",
        "  doNotTrack: true
  applyOnForward: true
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: TCP
    destination:
      ports: [8080]
",
    );
    mgr.apply(&with(&[allow_all.clone(), untracked_deny]))
        .expect("apply untracked deny");
    let listing = nft_in(&lab.host, &["list", "table", "inet", "tortie"]);
    assert!(
        listing.contains("type filter hook prerouting priority raw"),
        "{listing}"
    );
    assert_eq!(
        lab.connect("ext", "host", 8080, &h8080),
        timed_out,
        "untracked deny beats the allowing profile"
    );
    assert_eq!(
        lab.connect("ext", "host", 8081, &h8081),
        Ok(()),
        "no untracked match: the profile decides"
    );
    assert_eq!(lab.connect("host", "ext", 8081, &e8081), Ok(()), "egress");
    assert_eq!(
        lab.connect("ext", "b", 80, &b80),
        Ok(()),
        "forwarded, no untracked match"
    );

    // An untracked allow is final: a normal policy denies all ingress and there is no
    // profile, yet ext → host:8080 connects when the replies are allowed untracked too.
    // Nothing is tracked for it.
    let untracked_allow_in = node_gnp(
        "untracked-allow-in",
        "  doNotTrack: true
  applyOnForward: true
  types: [Ingress]
  ingress:
  - action: Allow
    protocol: TCP
    destination:
      ports: [8080]
",
    );
    let untracked_allow_replies = node_gnp(
        "untracked-allow-replies",
        "  doNotTrack: true
  applyOnForward: true
  types: [Egress]
  egress:
  - action: Allow
    protocol: TCP
    source:
      ports: [8080]
",
    );
    mgr.apply(&with(&[
        deny_all.clone(),
        normal_deny.clone(),
        untracked_allow_in.clone(),
        untracked_allow_replies,
    ]))
    .expect("apply untracked allow");
    let flows = tracked_flows(&lab.host, 8080);
    assert_eq!(
        lab.connect("ext", "host", 8080, &h8080),
        Ok(()),
        "untracked allow skips the normal deny"
    );
    assert_eq!(tracked_flows(&lab.host, 8080), flows, "not tracked");
    assert_eq!(
        lab.connect("ext", "host", 8081, &h8081),
        timed_out,
        "the normal deny still applies to the rest"
    );
    // Without the untracked allow for the replies, the host's SYN-ACK is new to conntrack
    // (INVALID) and dropped although the profile allows egress: untracked return traffic
    // needs its own untracked allow.
    mgr.apply(&with(&[
        allow_all.clone(),
        normal_deny.clone(),
        untracked_allow_in,
    ]))
    .expect("apply untracked allow, ingress only");
    assert_eq!(
        lab.connect("host", "ext", 8081, &e8081),
        Ok(()),
        "the profile allows the host's egress"
    );
    assert_eq!(
        lab.connect("ext", "host", 8080, &h8080),
        timed_out,
        "replies not allowed untracked"
    );

    // (b) preDNAT: ingress only. A deny drops although the profile would allow; an allow
    // skips the normal ingress deny; established flows pass.
    let pre_dnat = |name: &str, action: &str| {
        node_gnp(
            name,
            &format!(
                "  preDNAT: true
  applyOnForward: true
  types: [Ingress]
  ingress:
  - action: {action}
    protocol: TCP
    destination:
      ports: [8080]
"
            ),
        )
    };
    mgr.apply(&with(&[
        allow_all.clone(),
        pre_dnat("pre-dnat-deny", "Deny"),
    ]))
    .expect("apply pre-DNAT deny");
    let listing = nft_in(&lab.host, &["list", "table", "inet", "tortie"]);
    assert!(
        listing.contains("type filter hook prerouting priority mangle"),
        "{listing}"
    );
    assert_eq!(
        lab.connect("ext", "host", 8080, &h8080),
        timed_out,
        "pre-DNAT deny beats the allowing profile"
    );
    assert_eq!(
        lab.connect("ext", "host", 8081, &h8081),
        Ok(()),
        "no pre-DNAT match: the profile decides"
    );
    assert_eq!(
        lab.connect("host", "ext", 8081, &e8081),
        Ok(()),
        "egress and its replies"
    );
    mgr.apply(&with(&[
        deny_all.clone(),
        normal_deny.clone(),
        pre_dnat("pre-dnat-allow", "Allow"),
    ]))
    .expect("apply pre-DNAT allow");
    assert_eq!(
        lab.connect("ext", "host", 8080, &h8080),
        Ok(()),
        "pre-DNAT allow skips the normal ingress deny (replies are tracked)"
    );
    assert_eq!(
        lab.connect("ext", "host", 8081, &h8081),
        timed_out,
        "the normal deny still applies to the rest"
    );
    // Before DNAT: with host:8888 DNATed to pod b:80 (a table of the test's own), a pre-DNAT
    // policy sees port 8888, and the pod's traffic is then forwarded (not host traffic).
    let dnat = "table ip dnat-test {
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    tcp dport 8888 dnat to 10.244.2.11:80
  }
}
";
    NftCommand::in_netns(path(&lab.host))
        .run(dnat)
        .expect("nft -f the DNAT table");
    mgr.apply(&with(std::slice::from_ref(&allow_all)))
        .expect("apply without pre-DNAT policy");
    assert_eq!(
        lab.connect("ext", "host", 8888, &b80),
        Ok(()),
        "DNAT to the pod"
    );
    let pre_dnat_8888 = node_gnp(
        "pre-dnat-deny-8888",
        "  preDNAT: true
  applyOnForward: true
  types: [Ingress]
  ingress:
  - action: Deny
    protocol: TCP
    destination:
      ports: [8888]
",
    );
    mgr.apply(&with(&[allow_all.clone(), pre_dnat_8888]))
        .expect("apply pre-DNAT deny of 8888");
    assert_eq!(
        lab.connect("ext", "host", 8888, &b80),
        timed_out,
        "pre-DNAT policy matches the original destination port"
    );
    assert_eq!(
        lab.connect("ext", "b", 80, &b80),
        Ok(()),
        "not the DNATed port: forwarded"
    );
    nft_in(&lab.host, &["delete", "table", "ip", "dnat-test"]);

    // (c) applyOnForward. A host endpoint policy without it does not police forwarded
    // traffic; with it, the policy also applies to traffic forwarded through eth1 (and
    // still to the host's own traffic), not to pod-to-pod traffic.
    mgr.apply(&with(&[deny_all.clone(), normal_deny.clone()]))
        .expect("apply normal deny");
    assert_eq!(
        lab.connect("ext", "b", 80, &b80),
        Ok(()),
        "no applyOnForward policy: forwarded traffic flows"
    );
    let forward_deny_80 = forward_deny_80();
    mgr.apply(&with(&[deny_all.clone(), forward_deny_80]))
        .expect("apply applyOnForward deny");
    assert_eq!(
        lab.connect("ext", "b", 80, &b80),
        timed_out,
        "forwarded through eth1 to port 80: denied"
    );
    assert_eq!(
        lab.connect("ext", "b", 81, &b81),
        Ok(()),
        "forwarded to another port: allowed by the policy"
    );
    assert_eq!(
        lab.connect("ext", "host", 80, &h80),
        timed_out,
        "the host's own traffic too"
    );
    assert_eq!(
        lab.connect("ext", "host", 8080, &h8080),
        Ok(()),
        "host traffic allowed by the policy"
    );
    assert_eq!(
        lab.connect("a", "b", 80, &b80),
        Ok(()),
        "pod to pod is not host endpoint traffic"
    );
    assert_eq!(
        lab.connect("b", "a", 80, &a80),
        Ok(()),
        "pod to pod is not host endpoint traffic"
    );
    // Egress: forwarded traffic leaving through eth1 (pod → outside, masqueraded to the
    // host's address).
    assert_eq!(
        lab.connect_seen_as("b", "ext", 8081, &e8081, "host"),
        Ok(()),
        "no applyOnForward egress policy: forwarded out"
    );
    let forward_deny_8081_out = node_gnp(
        "forward-deny-8081-out",
        "  applyOnForward: true
  types: [Egress]
  egress:
  - action: Deny
    protocol: TCP
    destination:
      ports: [8081]
  - action: Allow
",
    );
    mgr.apply(&with(&[allow_all.clone(), forward_deny_8081_out]))
        .expect("apply applyOnForward egress deny");
    assert_eq!(
        lab.connect_seen_as("b", "ext", 8081, &e8081, "host"),
        timed_out,
        "forwarded out through eth1 to port 8081: denied"
    );
    assert_eq!(
        lab.connect_seen_as("b", "ext", 2379, &e2379, "host"),
        Ok(()),
        "forwarded out to another port: allowed"
    );
    assert_eq!(
        lab.connect("host", "ext", 8081, &e8081),
        timed_out,
        "the host's own egress too"
    );
    assert_eq!(
        lab.connect("ext", "b", 80, &b80),
        Ok(()),
        "forward ingress: no policy in that direction"
    );

    // (d) Failsafe ports pass untracked and pre-DNAT deny-all policies, both ways (the
    // replies too).
    let untracked_deny_all = node_gnp(
        "untracked-deny-all",
        "  doNotTrack: true
  applyOnForward: true
  types: [Ingress, Egress]
  ingress:
  - action: Deny
  egress:
  - action: Deny
",
    );
    mgr.apply(&with(&[allow_all.clone(), untracked_deny_all]))
        .expect("apply untracked deny-all");
    assert_eq!(
        lab.connect("ext", "host", 8080, &h8080),
        timed_out,
        "untracked deny-all"
    );
    assert_eq!(
        lab.connect("ext", "b", 80, &b80),
        timed_out,
        "untracked deny-all applies to forwarded traffic"
    );
    assert_eq!(
        lab.connect("ext", "host", 22, &h22),
        Ok(()),
        "failsafe in tcp/22 (untracked)"
    );
    assert_eq!(
        lab.connect("host", "ext", 2379, &e2379),
        Ok(()),
        "failsafe out tcp/2379 (untracked)"
    );
    let pre_dnat_deny_all = node_gnp(
        "pre-dnat-deny-all",
        "  preDNAT: true
  applyOnForward: true
  types: [Ingress]
  ingress:
  - action: Deny
",
    );
    mgr.apply(&with(&[allow_all.clone(), pre_dnat_deny_all]))
        .expect("apply pre-DNAT deny-all");
    assert_eq!(
        lab.connect("ext", "host", 8080, &h8080),
        timed_out,
        "pre-DNAT deny-all"
    );
    assert_eq!(
        lab.connect("ext", "host", 22, &h22),
        Ok(()),
        "failsafe in tcp/22 (pre-DNAT)"
    );
    assert_eq!(
        lab.connect("host", "ext", 2379, &e2379),
        Ok(()),
        "failsafe out tcp/2379 (pre-DNAT)"
    );
    assert_eq!(
        lab.connect("host", "ext", 8081, &e8081),
        Ok(()),
        "pre-DNAT policy is ingress only; the replies are established"
    );

    // Back to plain host endpoint policy: the stage chains go away.
    mgr.apply(&with(&[allow_all])).expect("apply plain");
    let listing = nft_in(&lab.host, &["list", "table", "inet", "tortie"]);
    for gone in ["raw-prerouting", "raw-output", "pre-dnat", "from-hep-fwd"] {
        assert!(!listing.contains(gone), "{gone} left in\n{listing}");
    }
    assert!(!mgr.check_drift().expect("drift check"));
    assert_eq!(lab.connect("ext", "host", 8080, &h8080), Ok(()));
}

/// `wep` with an IPv6 address as well.
fn wep_dual(pod: &str, app: &str, iface: &str, ip: &str, ip6: &str, ports: &str) -> String {
    wep(pod, app, iface, ip, ports).replace(
        &format!("  - {ip}/32\n"),
        &format!("  - {ip}/32\n  - {ip6}/128\n"),
    )
}

/// Forgets the IPv6 neighbours on both ends of `eth1`, so the next connection needs
/// neighbour discovery through whatever policy is in place.
fn flush_neighbours6(lab: &lab::Lab, ext: &str) {
    netns::run(
        "ip",
        &["-n", &lab.host, "-6", "neigh", "flush", "dev", "eth1"],
    );
    netns::run("ip", &["-n", ext, "-6", "neigh", "flush", "dev", "eth0"]);
}

/// The host endpoint stages again over IPv6 (the rules are rendered for both families from
/// one model): neighbour discovery keeps working under deny-all policy in every stage (or
/// IPv6 would stop, failsafe ports included, once the neighbour caches expire), failsafe
/// ports pass, and untracked, pre-DNAT and forward policy decide IPv6 packets as IPv4 ones.
#[test]
fn host_endpoint_stages_follow_policy_over_ipv6() {
    if !is_root() {
        return;
    }
    let lab = lab();
    let ext = lab.namespace_of("ext");
    let h22 = lab.listen6("host", 22);
    let h8080 = lab.listen6("host", 8080);
    let h8081 = lab.listen6("host", 8081);
    let e2379 = lab.listen6("ext", 2379);
    let b80 = lab.listen6("b", 80);
    let b81 = lab.listen6("b", 81);
    let timed_out = Err(std::io::ErrorKind::TimedOut);
    assert_eq!(
        lab.connect6("ext", "host", 8080, &h8080),
        Ok(()),
        "plumbing"
    );
    assert_eq!(
        lab.connect6("ext", "b", 80, &b80),
        Ok(()),
        "plumbing: ext → pod"
    );
    assert_eq!(
        lab.connect6("a", "b", 80, &b80),
        Ok(()),
        "plumbing: pod → pod"
    );

    let with = |extra: &[String]| {
        let mut docs = vec![
            namespace(),
            wep_dual("a", "a", "calia1", "10.244.1.10", "fd00:10:244:1::10", ""),
            wep_dual(
                "b",
                "b",
                "calib2",
                "10.244.2.11",
                "fd00:10:244:2::11",
                HTTP_PORT,
            ),
        ];
        docs.extend(extra.iter().cloned());
        model_of(&docs)
    };
    let allow_all = hep("eth1", "projectcalico-default-allow");
    let deny_all = hep("eth1", "");
    let normal_deny = DENY_NODE_INGRESS.to_string();
    let mut mgr = NftManager::new(NftCommand::in_netns(path(&lab.host)));

    // Deny-all: only failsafe ports, in and out, with neighbour discovery through it.
    mgr.apply(&with(&[deny_all.clone(), normal_deny.clone()]))
        .expect("apply deny-all");
    flush_neighbours6(&lab, &ext);
    assert_eq!(
        lab.connect6("ext", "host", 22, &h22),
        Ok(()),
        "failsafe tcp/22"
    );
    assert_eq!(
        lab.connect6("ext", "host", 8080, &h8080),
        timed_out,
        "denied"
    );
    flush_neighbours6(&lab, &ext);
    assert_eq!(
        lab.connect6("host", "ext", 2379, &e2379),
        Ok(()),
        "failsafe out tcp/2379"
    );
    assert_eq!(lab.connect6("a", "b", 80, &b80), Ok(()), "pod to pod");

    // Untracked deny before an allowing profile; untracked deny-all keeps failsafe and ND.
    let untracked = |name: &str, rules: &str| {
        node_gnp(
            name,
            &format!(
                "  doNotTrack: true\n  applyOnForward: true\n  types: [Ingress, Egress]\n{rules}"
            ),
        )
    };
    mgr.apply(&with(&[
        allow_all.clone(),
        untracked(
            "untracked-deny-8080",
            "  ingress:\n  - action: Deny\n    protocol: TCP\n    destination:\n      ports: [8080]\n",
        ),
    ]))
    .expect("apply untracked deny");
    assert_eq!(
        lab.connect6("ext", "host", 8080, &h8080),
        timed_out,
        "untracked deny"
    );
    assert_eq!(
        lab.connect6("ext", "host", 8081, &h8081),
        Ok(()),
        "profile decides"
    );
    mgr.apply(&with(&[
        allow_all.clone(),
        untracked(
            "untracked-deny-all",
            "  ingress:\n  - action: Deny\n  egress:\n  - action: Deny\n",
        ),
    ]))
    .expect("apply untracked deny-all");
    flush_neighbours6(&lab, &ext);
    assert_eq!(
        lab.connect6("ext", "host", 22, &h22),
        Ok(()),
        "failsafe through untracked deny-all"
    );
    assert_eq!(
        lab.connect6("ext", "host", 8080, &h8080),
        timed_out,
        "untracked deny-all"
    );

    // Pre-DNAT deny beats the allowing profile; pre-DNAT deny-all keeps failsafe and ND.
    let pre_dnat = |name: &str, rules: &str| {
        node_gnp(
            name,
            &format!("  preDNAT: true\n  applyOnForward: true\n  types: [Ingress]\n{rules}"),
        )
    };
    mgr.apply(&with(&[
        allow_all.clone(),
        pre_dnat(
            "pre-dnat-deny-8080",
            "  ingress:\n  - action: Deny\n    protocol: TCP\n    destination:\n      ports: [8080]\n",
        ),
    ]))
    .expect("apply pre-DNAT deny");
    assert_eq!(
        lab.connect6("ext", "host", 8080, &h8080),
        timed_out,
        "pre-DNAT deny"
    );
    assert_eq!(
        lab.connect6("ext", "host", 8081, &h8081),
        Ok(()),
        "profile decides"
    );
    mgr.apply(&with(&[
        allow_all.clone(),
        pre_dnat("pre-dnat-deny-all", "  ingress:\n  - action: Deny\n"),
    ]))
    .expect("apply pre-DNAT deny-all");
    flush_neighbours6(&lab, &ext);
    assert_eq!(
        lab.connect6("ext", "host", 22, &h22),
        Ok(()),
        "failsafe through pre-DNAT deny-all"
    );
    assert_eq!(
        lab.connect6("ext", "b", 80, &b80),
        timed_out,
        "forwarded: pre-DNAT deny-all"
    );

    // applyOnForward: forwarded IPv6 to pod port 80 denied, 81 allowed, pod to pod untouched.
    let forward_deny_80 = forward_deny_80();
    mgr.apply(&with(&[deny_all, forward_deny_80]))
        .expect("apply applyOnForward deny");
    flush_neighbours6(&lab, &ext);
    assert_eq!(
        lab.connect6("ext", "b", 80, &b80),
        timed_out,
        "forwarded to 80"
    );
    assert_eq!(
        lab.connect6("ext", "b", 81, &b81),
        Ok(()),
        "forwarded to 81"
    );
    assert_eq!(lab.connect6("a", "b", 80, &b80), Ok(()), "pod to pod");
}
