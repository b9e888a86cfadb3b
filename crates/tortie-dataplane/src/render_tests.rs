use super::*;
use crate::fixtures::{allow_all, host_endpoint, model, workload};
use tortie_calc::dataplane::{NatOutgoing, PolicyChain};
use tortie_calc::failsafe::FailsafePort;
use tortie_calc::model::proto;

/// The whole table for the fixture model, as reviewed and as accepted by nft 1.0.6 (the
/// root tests apply the same renderer's output to a real kernel).
/// With `UPDATE_GOLDEN=1`, rewrites a golden file (review the diff before committing).
fn update_golden(name: &str, got: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/testdata")
            .join(name);
        std::fs::write(path, got).expect("write golden");
    }
}

#[test]
fn golden_definition() {
    let got = render(&model()).definition();
    update_golden("fixture-model.nft", &got);
    let want = include_str!("testdata/fixture-model.nft");
    assert_eq!(got, want, "got:\n{got}");
}

#[test]
fn rendering_does_not_depend_on_insertion_order() {
    let m = model();
    let mut rev = model();
    rev.workloads = m.workloads.clone().into_iter().rev().collect();
    rev.chains = m.chains.clone().into_iter().rev().collect();
    assert_eq!(render(&m), render(&rev));
}

#[test]
fn tiers_pass_and_deny() {
    let mut m = model();
    let wl = m.workloads.get_mut("calib2").expect("b");
    wl.egress = vec![
        TierChains {
            tier: "security".into(),
            policies: vec!["po-gnp/security.p".into()],
            end_drop: false,
        },
        TierChains {
            tier: "default".into(),
            policies: vec!["po-knp/x/q".into(), "po-knp/x/r".into()],
            end_drop: true,
        },
    ];
    for c in ["po-gnp/security.p", "po-knp/x/q", "po-knp/x/r"] {
        m.chains.insert(
            c.into(),
            PolicyChain {
                rules: allow_all(c),
            },
        );
    }
    let t = render(&m);
    let rules = &t.chains["fw-calib2"].rules;
    let text = rules.join("\n");
    assert_eq!(text.matches("start of tier").count(), 2);
    assert!(!text.contains("end of tier security"), "{text}");
    assert!(text.contains("meta mark & 0x20000 == 0 drop comment \"end of tier default\""));
    let jumps: Vec<&String> = rules.iter().filter(|r| r.contains(" jump ")).collect();
    assert_eq!(jumps.len(), 3, "{jumps:?}");
    assert!(jumps[0].ends_with("jump po-gnp/security.p"));
    assert!(jumps[2].ends_with("jump po-knp/x/r"));
    assert_eq!(
        rules.last().map(String::as_str),
        Some("drop comment \"no profile matched\"")
    );
}

#[test]
fn missing_references_fail_closed() {
    let mut m = model();
    m.chains.remove("pi-knp/x/allow-a");
    m.ip_sets.remove("s4-a");
    m.workloads.insert(
        "calic3".into(),
        workload("c", &["pi-knp/x/gone"], &["kns.gone"]),
    );
    let t = render(&m);
    for c in [
        "pi-knp/x/allow-a",
        "pi-knp/x/gone",
        "pri-kns.gone",
        "pro-kns.gone",
    ] {
        assert_eq!(
            t.chains[c].rules,
            vec!["drop comment \"chain missing from model\"".to_string()],
            "{c}"
        );
    }
    // s4-a is no longer referenced (its chain is gone), so it is not declared.
    assert!(!t.sets.contains_key("s4-a"));
    let mut m = model();
    m.ip_sets.remove("n4-b");
    let t = render(&m);
    assert_eq!(
        t.sets["n4-b"].type_,
        "ipv4_addr . inet_proto . inet_service"
    );
    assert!(t.sets["n4-b"].elements.is_empty());
}

#[test]
fn unusable_interfaces_are_left_out_and_odd_names_hashed() {
    let mut m = model();
    m.workloads
        .insert("cali\"x".into(), workload("q", &[], &["kns.x"]));
    m.workloads
        .insert("cali:x".into(), workload("r", &[], &["kns.x"]));
    let t = render(&m);
    assert_eq!(t.maps["fw-dispatch"].elements.len(), 3);
    let verdict = &t.maps["tw-dispatch"].elements["\"cali:x\""];
    assert!(verdict.starts_with("goto tw-cali_x_"), "{verdict}");
    let chain = verdict.trim_start_matches("goto ");
    assert!(t.chains.contains_key(chain));
}

#[test]
fn endpoint_to_host_and_nat() {
    let mut m = model();
    m.endpoint_to_host = EndpointToHost::Return;
    m.nat = NatOutgoing {
        masquerade_pools: ["10.244.0.0/16".parse().expect("net")].into(),
        all_pools: [
            "10.244.0.0/16".parse().expect("net"),
            "10.245.0.0/16".parse().expect("net"),
            "fd00:10:244::/56".parse().expect("net"),
        ]
        .into(),
    };
    let t = render(&m);
    assert_eq!(
        t.chains["wl-to-host"].rules.last().map(String::as_str),
        Some("return comment \"configured endpoint-to-host action\"")
    );
    let post = &t.chains["postrouting"];
    assert_eq!(
        post.hook.as_deref(),
        Some("type nat hook postrouting priority srcnat; policy accept;")
    );
    assert_eq!(
        post.rules,
        vec!["ip saddr @masq-pools4 ip daddr != @all-pools4 masquerade comment \"natOutgoing\""]
    );
    let all4: Vec<&str> = t.sets["all-pools4"]
        .elements
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(all4, vec!["10.244.0.0/15"], "adjacent pools aggregate");
    assert_eq!(t.sets["all-pools6"].elements.len(), 1);
    assert!(t.sets["masq-pools6"].elements.is_empty());
    assert!(!render(&model()).chains.contains_key("postrouting"));
}

/// The fixture with a host endpoint on eth0 (ingress: the `allow-a` policy chain reused, no
/// profile) and an all-interfaces one with the allow-all profile.
fn model_with_heps() -> tortie_calc::dataplane::DataplaneModel {
    let mut m = model();
    m.host_endpoints.insert(
        "eth0".into(),
        host_endpoint("n1-eth0", &["pi-knp/x/allow-a"], &[]),
    );
    m.host_endpoints
        .insert("*".into(), host_endpoint("n1-all", &[], &["kns.x"]));
    m
}

/// The host endpoint parts of the table, as reviewed; the rest is the fixture's golden.
#[test]
fn golden_definition_with_host_endpoints() {
    let got = render(&model_with_heps()).definition();
    update_golden("fixture-model-heps.nft", &got);
    let want = include_str!("testdata/fixture-model-heps.nft");
    assert_eq!(got, want, "got:\n{got}");
}

#[test]
fn without_host_endpoints_nothing_of_them_is_rendered() {
    let t = render(&model());
    for name in [
        "output",
        "failsafe-in",
        "failsafe-out",
        "from-hep-all",
        "to-hep-all",
    ] {
        assert!(!t.chains.contains_key(name), "{name}");
    }
    assert!(!t.maps.contains_key("fh-dispatch") && !t.maps.contains_key("th-dispatch"));
    assert_eq!(t.chains["input"].rules.len(), 2);
}

#[test]
fn host_endpoint_interfaces_that_are_never_policed_are_left_out() {
    let mut m = model();
    for iface in ["lo", "cali123", "a\"b", "eth0"] {
        m.host_endpoints
            .insert(iface.into(), host_endpoint(iface, &[], &[]));
    }
    let t = render(&m);
    let keys: Vec<&String> = t.maps["fh-dispatch"].elements.keys().collect();
    assert_eq!(keys, ["\"eth0\""]);
    assert_eq!(t.maps["th-dispatch"].elements.len(), 1);
    assert!(!t.chains.contains_key("fh-lo") && !t.chains.contains_key("fh-cali123"));
    // No `*` host endpoint: interfaces without one fall off the end of `input`/`output`,
    // i.e. are accepted by the base chain policy.
    let input = &t.chains["input"].rules;
    assert_eq!(
        input.last().map(String::as_str),
        Some("iifname vmap @fh-dispatch")
    );
    let output = &t.chains["output"].rules;
    assert_eq!(
        output.last().map(String::as_str),
        Some("oifname vmap @th-dispatch")
    );
    // Loopback and workloads are accepted before any host endpoint dispatch.
    let pos = |rules: &[String], needle: &str| rules.iter().position(|r| r.contains(needle));
    assert!(pos(input, "iifname \"lo\" accept") < pos(input, "@fh-dispatch"));
    assert!(pos(output, "oifname \"cali*\" accept") < pos(output, "@th-dispatch"));
    assert!(pos(output, "oifname \"lo\" accept") < pos(output, "@th-dispatch"));
    // With no policy and no profile, the chain denies all but the host's own IPv6
    // neighbour discovery and the failsafe ports.
    assert_eq!(
        t.chains["fh-eth0"].rules,
        [
            "ct state invalid drop",
            "icmpv6 type { 130, 131, 132, 133, 134, 135, 136, 143 } accept comment \"ICMPv6 neighbour discovery and MLD\"",
            "jump failsafe-in",
            "meta mark set meta mark & 0xfffcffff comment \"clear accept and pass marks\"",
            "drop comment \"no profile matched\"",
        ]
    );
}

#[test]
fn failsafe_ports_with_nets_and_none_at_all() {
    let mut m = model();
    m.host_endpoints
        .insert("eth0".into(), host_endpoint("n1-eth0", &[], &["kns.gone"]));
    let net = |s: &str| Some(s.parse().expect("net"));
    m.failsafe_inbound = vec![
        FailsafePort::new(proto::TCP, 22),
        FailsafePort::new(proto::TCP, 22),
        FailsafePort::new(proto::SCTP, 9),
        FailsafePort {
            net: net("10.0.0.0/8"),
            ..FailsafePort::new(proto::TCP, 8080)
        },
        FailsafePort {
            net: net("fd00::/64"),
            ..FailsafePort::new(proto::UDP, 53)
        },
    ];
    m.failsafe_outbound.clear();
    let t = render(&m);
    assert_eq!(
        t.chains["failsafe-in"].rules,
        [
            "meta l4proto . th dport { tcp . 22, sctp . 9 } accept comment \"failsafe inbound\"",
            "ip saddr 10.0.0.0/8 meta l4proto tcp th dport 8080 accept comment \"failsafe inbound\"",
            "ip6 saddr fd00::/64 meta l4proto udp th dport 53 accept comment \"failsafe inbound\"",
        ]
    );
    // No outbound failsafe ports: no chain and no jump.
    assert!(!t.chains.contains_key("failsafe-out"));
    assert!(
        !t.chains["th-eth0"]
            .rules
            .iter()
            .any(|r| r.contains("failsafe"))
    );
    // A missing profile is a deny-all stand-in, as for workloads.
    assert_eq!(
        t.chains["pri-kns.gone"].rules,
        ["drop comment \"chain missing from model\""]
    );
}

#[test]
fn endpoint_to_host_return_skips_host_endpoint_policy() {
    let mut m = model_with_heps();
    m.endpoint_to_host = EndpointToHost::Return;
    let t = render(&m);
    let input = &t.chains["input"].rules;
    assert_eq!(input[1], "iifname \"cali*\" jump wl-to-host");
    assert_eq!(
        input[2],
        "iifname \"cali*\" accept comment \"workload to host: not host endpoint traffic\""
    );
}

#[test]
fn reusing_unchanged_sets_renders_the_same_table() {
    let m = model();
    let first = render(&m);
    assert!(!m.ip_sets.is_empty());
    // Unchanged: every model set is carried over (same elements, shared).
    let again = render_reusing(&m, Some((&m.ip_sets, &first)));
    assert_eq!(again, first);
    for name in m.ip_sets.keys() {
        let n = crate::table::nft_name(name);
        assert!(std::sync::Arc::ptr_eq(
            &again.sets[&n].elements,
            &first.sets[&n].elements
        ));
    }
    // One set changes: it is rendered again, the result equals a fresh rendering, and the
    // diff touches only that set.
    let mut changed = model();
    let (name, set) = changed
        .ip_sets
        .iter_mut()
        .find(|(_, s)| matches!(s.members, tortie_calc::dataplane::IpSetMembers::Nets(_)))
        .expect("a selector set");
    if let tortie_calc::dataplane::IpSetMembers::Nets(nets) = &mut set.members {
        nets.insert("10.244.9.9/32".parse().expect("net"));
    }
    let name = crate::table::nft_name(name);
    let reused = render_reusing(&changed, Some((&m.ip_sets, &first)));
    assert_eq!(reused, render(&changed));
    let s = crate::diff::script(Some(&first), &reused);
    assert_eq!(s.lines().count(), 1, "{s}");
    assert!(s.contains(&name) && s.contains("10.244.9.9"), "{s}");
}

#[test]
fn patched_address_sets_equal_fresh_renderings() {
    use tortie_calc::dataplane::IpSetMembers;
    let base = model();
    let name = base
        .ip_sets
        .iter()
        .find(|(_, s)| matches!(s.members, IpSetMembers::Nets(_)))
        .map(|(n, _)| n.clone())
        .expect("a selector set");
    let mut prev_model = base.clone();
    let mut prev = render(&prev_model);
    // A deterministic walk of adds, removes, and one CIDR (which needs an interval set).
    for step in 0u32..40 {
        let mut next = prev_model.clone();
        if let Some(set) = next.ip_sets.get_mut(&name)
            && let IpSetMembers::Nets(nets) = &mut set.members
        {
            let ip: ipnet::IpNet = format!("10.250.{}.{}/32", step % 3, (step * 7) % 11)
                .parse()
                .expect("net");
            if !nets.remove(&ip) {
                nets.insert(ip);
            }
            if step == 20 {
                nets.insert("10.251.0.0/24".parse().expect("net"));
            }
            if step == 30 {
                nets.remove(&"10.251.0.0/24".parse().expect("net"));
            }
        }
        let got = render_reusing(&next, Some((&prev_model.ip_sets, &prev)));
        assert_eq!(got, render(&next), "step {step}");
        prev = got;
        prev_model = next;
    }
}

/// [`model_with_heps`] plus untracked, pre-DNAT and forward policy on eth0 and forward
/// ingress policy on the all-interfaces endpoint.
fn model_with_hep_stages() -> tortie_calc::dataplane::DataplaneModel {
    use tortie_calc::dataplane::{HostEndpointExtras, TierChains};
    let mut m = model_with_heps();
    let tiers = |end_drop| {
        vec![TierChains {
            tier: "default".into(),
            policies: vec!["pi-knp/x/allow-a".into()],
            end_drop,
        }]
    };
    m.host_endpoint_extras.insert(
        "eth0".into(),
        HostEndpointExtras {
            untracked_ingress: tiers(false),
            untracked_egress: tiers(false),
            pre_dnat_ingress: tiers(false),
            forward_ingress: tiers(true),
            forward_egress: tiers(true),
        },
    );
    m.host_endpoint_extras.insert(
        "*".into(),
        HostEndpointExtras {
            forward_ingress: tiers(true),
            ..HostEndpointExtras::default()
        },
    );
    m
}

/// The raw, pre-DNAT and forward stages of host endpoint policy, as reviewed.
#[test]
fn golden_definition_with_host_endpoint_stages() {
    let got = render(&model_with_hep_stages()).definition();
    update_golden("fixture-model-hep-stages.nft", &got);
    let want = include_str!("testdata/fixture-model-hep-stages.nft");
    assert_eq!(got, want, "got:\n{got}");
}

/// Host endpoints without untracked, pre-DNAT or forward policy render as before: no raw or
/// pre-DNAT base chains, `forward` untouched.
#[test]
fn without_stage_policy_no_stage_chains() {
    let t = render(&model_with_heps());
    for name in [
        "raw-prerouting",
        "raw-output",
        "pre-dnat",
        "from-hep-fwd",
        "to-hep-fwd",
    ] {
        assert!(!t.chains.contains_key(name), "{name}");
    }
    assert_eq!(t.chains["forward"].rules.len(), 3);
    let t = render(&model_with_hep_stages());
    assert_eq!(t.chains["forward"].rules.len(), 5);
    assert!(t.chains["input"].rules[1].contains("accept"));
}

/// The untracked stages jump to raw failsafe chains that also accept the replies of the
/// other direction's failsafe connections by source port (before conntrack, a reply is just
/// a packet); the pre-DNAT stage is after conntrack and uses the plain chain.
#[test]
fn untracked_stages_accept_failsafe_replies() {
    use tortie_calc::failsafe::FailsafePort;
    use tortie_calc::model::proto;
    let mut m = model_with_hep_stages();
    m.failsafe_inbound = vec![
        FailsafePort {
            protocol: proto::TCP,
            port: 22,
            net: None,
        },
        FailsafePort {
            protocol: proto::TCP,
            port: 8080,
            net: Some("198.18.0.0/24".parse().unwrap()),
        },
    ];
    m.failsafe_outbound = vec![FailsafePort {
        protocol: proto::UDP,
        port: 53,
        net: None,
    }];
    let t = render(&m);
    assert_eq!(
        t.chains["failsafe-in-raw"].rules,
        [
            "meta l4proto . th dport { tcp . 22 } accept comment \"failsafe inbound\"",
            "ip saddr 198.18.0.0/24 meta l4proto tcp th dport 8080 accept comment \"failsafe inbound\"",
            "meta l4proto . th sport { udp . 53 } accept comment \"failsafe inbound: replies\"",
        ]
    );
    assert_eq!(
        t.chains["failsafe-out-raw"].rules,
        [
            "meta l4proto . th dport { udp . 53 } accept comment \"failsafe outbound\"",
            "meta l4proto . th sport { tcp . 22 } accept comment \"failsafe outbound: replies\"",
            "ip daddr 198.18.0.0/24 meta l4proto tcp th sport 8080 accept comment \"failsafe outbound: replies\"",
        ]
    );
    // Neighbour discovery first, then failsafe, in every stage but forwarding.
    for (chain, at, jump) in [
        ("fhu-eth0", 1, "jump failsafe-in-raw"),
        ("thu-eth0", 1, "jump failsafe-out-raw"),
        ("fhp-eth0", 2, "jump failsafe-in"),
    ] {
        let rules = &t.chains[chain].rules;
        assert_eq!(rules[at], jump, "{chain}: {rules:?}");
        assert!(
            rules[at - 1].contains("icmpv6 type {"),
            "{chain}: {rules:?}"
        );
        // In prerouting only what is addressed to the host: forwarded ICMPv6 meets policy.
        assert_eq!(
            rules[at - 1].starts_with("fib daddr type { local, multicast } "),
            chain != "thu-eth0",
            "{chain}: {rules:?}"
        );
    }
    // The filter path keeps matching destination ports only.
    assert!(
        t.chains["failsafe-in"]
            .rules
            .iter()
            .all(|r| !r.contains("sport"))
    );
    // Without failsafe ports, no failsafe chains and no jumps.
    m.failsafe_inbound.clear();
    m.failsafe_outbound.clear();
    let t = render(&m);
    assert!(!t.chains.contains_key("failsafe-in-raw"));
    assert!(!t.chains.contains_key("failsafe-out-raw"));
    assert!(
        t.chains["fhu-eth0"]
            .rules
            .iter()
            .all(|r| !r.contains("failsafe"))
    );
}

/// The staged preview: b's ingress under a staged view where `knp/x/allow-a` becomes a deny
/// and the profile stays. Its chains log and mark, never drop or accept; the enforced chain
/// jumps to it first and is otherwise unchanged.
#[test]
fn staged_preview_logs_and_never_decides() {
    use tortie_calc::dataplane::{DirectionChains, StagedWorkload};
    let enforced = render(&model());
    let mut m = model();
    let mut deny = m.chains["pi-knp/x/allow-a"].clone();
    deny.rules[0].action = tortie_calc::model::Action::Deny;
    m.staged_chains.insert("spi-knp/x/allow-a".into(), deny);
    m.staged_chains
        .insert("spri-kns.x".into(), m.chains["pri-kns.x"].clone());
    m.staged_workloads.insert(
        "calib2".into(),
        StagedWorkload {
            ingress: Some(DirectionChains {
                tiers: vec![TierChains {
                    tier: "default".into(),
                    policies: vec!["spi-knp/x/allow-a".into()],
                    end_drop: true,
                }],
                profiles: vec!["spri-kns.x".into(), "spri-missing".into()],
            }),
            egress: None,
        },
    );
    let t = render(&m);
    let tw = &t.chains["tw-calib2"].rules;
    assert!(tw[0].starts_with("jump stw-calib2 "), "{tw:?}");
    assert_eq!(&tw[1..], &enforced.chains["tw-calib2"].rules[..]);
    assert_eq!(
        t.chains["fw-calib2"], enforced.chains["fw-calib2"],
        "egress unchanged"
    );
    assert!(!t.chains.contains_key("sfw-calib2"));
    let preview = &t.chains["stw-calib2"].rules;
    let text = preview.join("\n");
    assert!(
        text.contains("meta mark & 0x70000 == 0 jump spi-knp/x/allow-a"),
        "{text}"
    );
    assert!(
        text.contains(
            "meta mark & 0x70000 == 0 log prefix \"tortie staged deny end of tier default: \" group 1 meta mark set meta mark | 0x40000"
        ),
        "{text}"
    );
    assert!(
        text.contains("meta mark & 0x50000 == 0 jump spri-kns.x"),
        "{text}"
    );
    assert!(
        !text.contains("spri-missing"),
        "undefined preview chains are skipped: {text}"
    );
    assert!(
        preview
            .last()
            .is_some_and(|r| r.starts_with("meta mark set meta mark & 0xfff8ffff")),
        "marks cleared on the way out: {text}"
    );
    let spi = t.chains["spi-knp/x/allow-a"].rules.join("\n");
    assert!(
        spi.contains("log prefix \"tortie staged deny knp/x/allow-a ingress[0]: \" group 1 meta mark set meta mark | 0x40000 return"),
        "{spi}"
    );
    let spri = t.chains["spri-kns.x"].rules.join("\n");
    assert!(spri.contains("tortie staged allow profile/kns.x"), "{spri}");
    for chain in ["stw-calib2", "spi-knp/x/allow-a", "spri-kns.x"] {
        for r in &t.chains[chain].rules {
            assert!(
                !r.contains("drop") && !r.contains("accept"),
                "{chain} decides: {r}"
            );
        }
    }
}
