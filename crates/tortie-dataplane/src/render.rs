//! [`DataplaneModel`] → [`NftTable`]: pure, deterministic (ordered maps all the way).
//!
//! See the crate documentation for the layout. Names from the model pass through
//! [`nft_name`]; workloads whose interface name nft cannot match exactly are left out (their
//! traffic then meets the dispatch chains' fail-closed drop).

use std::collections::{BTreeMap, BTreeSet};

use ipnet::IpNet;
use tortie_calc::dataplane::{
    DataplaneModel, EndpointToHost, Family, IpSetMembers, PolicyChain, TierChains, WorkloadChains,
};

use crate::rule::{MARK_ACCEPT, MARK_PASS, SetKind, SetRefs, net_elements, render_rule};
use crate::table::{ChainDef, MapDef, NftTable, SetDef, comment, ifname_literal, nft_name};

/// Base chain on the forward hook.
pub const CHAIN_FORWARD: &str = "forward";
/// Base chain on the input hook.
pub const CHAIN_INPUT: &str = "input";
/// Base NAT chain on the postrouting hook (present only when a pool masquerades).
pub const CHAIN_POSTROUTING: &str = "postrouting";
/// Dispatch of traffic from workloads (egress policy).
pub const CHAIN_FROM_WL: &str = "from-wl";
/// Dispatch of traffic to workloads (ingress policy).
pub const CHAIN_TO_WL: &str = "to-wl";
/// Workload → own host.
pub const CHAIN_WL_TO_HOST: &str = "wl-to-host";
/// Verdict map: interface → `goto fw-<iface>`.
pub const MAP_FROM_WL: &str = "fw-dispatch";
/// Verdict map: interface → `goto tw-<iface>`.
pub const MAP_TO_WL: &str = "tw-dispatch";
/// Interface pattern of workload veths.
pub const WORKLOAD_IFACE_PATTERN: &str = "cali*";

/// Renders the whole table.
pub fn render(model: &DataplaneModel) -> NftTable {
    let mut t = NftTable::default();
    let mut refs = SetRefs::new();
    for (name, set) in &model.ip_sets {
        t.sets
            .insert(nft_name(name), set_def(set.family, &set.members));
    }
    for (name, chain) in &model.chains {
        t.chains
            .insert(nft_name(name), policy_chain(chain, &mut refs));
    }
    let mut fw = BTreeMap::new();
    let mut tw = BTreeMap::new();
    let mut wanted_chains = BTreeSet::new();
    for (iface, wl) in &model.workloads {
        let Some(key) = ifname_literal(iface) else {
            tracing::warn!(iface, endpoint = %wl.endpoint, "interface name cannot be matched by nft; its traffic is dropped");
            continue;
        };
        let fw_name = nft_name(&format!("fw-{iface}"));
        let tw_name = nft_name(&format!("tw-{iface}"));
        let to = endpoint_chain(wl, Dir::To, &mut wanted_chains);
        let from = endpoint_chain(wl, Dir::From, &mut wanted_chains);
        fw.insert(key.clone(), format!("goto {fw_name}"));
        tw.insert(key, format!("goto {tw_name}"));
        t.chains.insert(tw_name, to);
        t.chains.insert(fw_name, from);
    }
    fail_closed_stand_ins(&mut t, &wanted_chains, &refs);
    t.maps.insert(MAP_FROM_WL.to_string(), dispatch_map(fw));
    t.maps.insert(MAP_TO_WL.to_string(), dispatch_map(tw));
    static_chains(&mut t, model.endpoint_to_host);
    nat(&mut t, &model.nat.masquerade_pools, &model.nat.all_pools);
    t
}

fn set_type(kind: SetKind) -> (&'static str, bool) {
    match kind {
        SetKind::Nets(Family::V4) => ("ipv4_addr", true),
        SetKind::Nets(Family::V6) => ("ipv6_addr", true),
        SetKind::NamedPorts(Family::V4) => ("ipv4_addr . inet_proto . inet_service", false),
        SetKind::NamedPorts(Family::V6) => ("ipv6_addr . inet_proto . inet_service", false),
    }
}

fn set_def(family: Family, members: &IpSetMembers) -> SetDef {
    let (kind, elements) = match members {
        IpSetMembers::Nets(nets) => (
            SetKind::Nets(family),
            net_elements(&nets.iter().copied().collect::<Vec<_>>())
                .into_iter()
                .collect(),
        ),
        IpSetMembers::NamedPorts(triples) => (
            SetKind::NamedPorts(family),
            triples
                .iter()
                .map(|(ip, p, port)| format!("{ip} . {p} . {port}"))
                .collect(),
        ),
    };
    let (type_, interval) = set_type(kind);
    SetDef {
        type_: type_.to_string(),
        interval,
        elements,
    }
}

fn policy_chain(chain: &PolicyChain, refs: &mut SetRefs) -> ChainDef {
    ChainDef {
        hook: None,
        rules: chain
            .rules
            .iter()
            .flat_map(|r| render_rule(r, refs))
            .collect(),
    }
}

/// The model should reference only what it defines; if it does not, fail closed: a missing
/// policy or profile chain drops, a missing set is declared empty.
fn fail_closed_stand_ins(t: &mut NftTable, chains: &BTreeSet<String>, refs: &SetRefs) {
    for c in chains {
        if !t.chains.contains_key(c) {
            tracing::warn!(chain = %c, "model references a chain it does not define; dropping");
            t.chains.insert(
                c.clone(),
                ChainDef {
                    hook: None,
                    rules: vec![format!("drop {}", comment("chain missing from model"))],
                },
            );
        }
    }
    for (name, kind) in refs {
        if !t.sets.contains_key(name) {
            tracing::warn!(set = %name, "model references a set it does not define; declaring it empty");
            let (type_, interval) = set_type(*kind);
            t.sets.insert(
                name.clone(),
                SetDef {
                    type_: type_.to_string(),
                    interval,
                    elements: BTreeSet::new(),
                },
            );
        }
    }
}

#[derive(Clone, Copy)]
enum Dir {
    /// Traffic to the pod: ingress policy.
    To,
    /// Traffic from the pod: egress policy.
    From,
}

fn mark_hex(v: u32) -> String {
    format!("{v:#x}")
}

/// `tw-<iface>` / `fw-<iface>`: tiers of policy jumps, then profiles, then drop.
fn endpoint_chain(wl: &WorkloadChains, dir: Dir, wanted: &mut BTreeSet<String>) -> ChainDef {
    let (tiers, profiles): (&[TierChains], &[String]) = match dir {
        Dir::To => (&wl.ingress, &wl.ingress_profiles),
        Dir::From => (&wl.egress, &wl.egress_profiles),
    };
    let accept = mark_hex(MARK_ACCEPT);
    let pass = mark_hex(MARK_PASS);
    let accepted = format!("meta mark & {accept} == {accept} return");
    let mut rules = vec![format!(
        "meta mark set meta mark & {} {}",
        mark_hex(!(MARK_ACCEPT | MARK_PASS)),
        comment("clear accept and pass marks")
    )];
    for tier in tiers {
        rules.push(format!(
            "meta mark set meta mark & {} {}",
            mark_hex(!MARK_PASS),
            comment(&format!("start of tier {}", tier.tier))
        ));
        for p in &tier.policies {
            let chain = nft_name(p);
            rules.push(format!("meta mark & {pass} == 0 jump {chain}"));
            rules.push(format!(
                "{accepted} {}",
                comment("return if policy accepted")
            ));
            wanted.insert(chain);
        }
        if tier.end_drop {
            rules.push(format!(
                "meta mark & {pass} == 0 drop {}",
                comment(&format!("end of tier {}", tier.tier))
            ));
        }
    }
    for p in profiles {
        let chain = nft_name(p);
        rules.push(format!("jump {chain}"));
        rules.push(format!(
            "{accepted} {}",
            comment("return if profile accepted")
        ));
        wanted.insert(chain);
    }
    rules.push(format!("drop {}", comment("no profile matched")));
    ChainDef { hook: None, rules }
}

fn dispatch_map(elements: BTreeMap<String, String>) -> MapDef {
    MapDef {
        key_type: "ifname".to_string(),
        elements,
    }
}

fn base_hook(kind: &str, hook: &str, priority: &str) -> Option<String> {
    Some(format!(
        "type {kind} hook {hook} priority {priority}; policy accept;"
    ))
}

fn static_chains(t: &mut NftTable, to_host: EndpointToHost) {
    let wl = WORKLOAD_IFACE_PATTERN;
    t.chains.insert(
        CHAIN_FORWARD.to_string(),
        ChainDef {
            hook: base_hook("filter", "forward", "filter"),
            rules: vec![
                "ct state established,related accept".to_string(),
                format!("iifname \"{wl}\" jump {CHAIN_FROM_WL}"),
                format!("oifname \"{wl}\" jump {CHAIN_TO_WL}"),
            ],
        },
    );
    t.chains.insert(
        CHAIN_INPUT.to_string(),
        ChainDef {
            hook: base_hook("filter", "input", "filter"),
            rules: vec![
                "ct state established,related accept".to_string(),
                format!("iifname \"{wl}\" jump {CHAIN_WL_TO_HOST}"),
            ],
        },
    );
    let verdict = match to_host {
        EndpointToHost::Drop => "drop",
        EndpointToHost::Accept => "accept",
        EndpointToHost::Return => "return",
    };
    t.chains.insert(
        CHAIN_WL_TO_HOST.to_string(),
        ChainDef {
            hook: None,
            rules: vec![
                // As Calico: IPv6 pods need router/neighbour discovery and MLD with their host
                // whatever their egress policy says.
                format!(
                    "icmpv6 type {{ 130, 131, 132, 133, 135, 136 }} accept {}",
                    comment("ICMPv6 neighbour discovery and MLD")
                ),
                format!("jump {CHAIN_FROM_WL}"),
                format!(
                    "{verdict} {}",
                    comment("configured endpoint-to-host action")
                ),
            ],
        },
    );
    t.chains.insert(
        CHAIN_FROM_WL.to_string(),
        ChainDef {
            hook: None,
            rules: vec![
                "ct state invalid drop".to_string(),
                format!("iifname vmap @{MAP_FROM_WL}"),
                format!("drop {}", comment("unknown interface")),
            ],
        },
    );
    t.chains.insert(
        CHAIN_TO_WL.to_string(),
        ChainDef {
            hook: None,
            rules: vec![
                "ct state invalid drop".to_string(),
                format!("oifname vmap @{MAP_TO_WL}"),
                format!("drop {}", comment("unknown interface")),
            ],
        },
    );
}

fn pool_set(pools: &BTreeSet<IpNet>, f: Family) -> SetDef {
    let nets: Vec<IpNet> = pools
        .iter()
        .filter(|n| Family::of_net(n) == f)
        .copied()
        .collect();
    let (type_, interval) = set_type(SetKind::Nets(f));
    SetDef {
        type_: type_.to_string(),
        interval,
        elements: net_elements(&nets).into_iter().collect(),
    }
}

/// Sets `masq-pools4/6`, `all-pools4/6` always; the `postrouting` chain only when a pool
/// masquerades.
fn nat(t: &mut NftTable, masq: &BTreeSet<IpNet>, all: &BTreeSet<IpNet>) {
    let mut rules = Vec::new();
    for (f, tag, ip) in [(Family::V4, '4', "ip"), (Family::V6, '6', "ip6")] {
        let m = pool_set(masq, f);
        let a = pool_set(all, f);
        if !m.elements.is_empty() {
            rules.push(format!(
                "{ip} saddr @masq-pools{tag} {ip} daddr != @all-pools{tag} masquerade {}",
                comment("natOutgoing")
            ));
        }
        t.sets.insert(format!("masq-pools{tag}"), m);
        t.sets.insert(format!("all-pools{tag}"), a);
    }
    if !rules.is_empty() {
        t.chains.insert(
            CHAIN_POSTROUTING.to_string(),
            ChainDef {
                hook: base_hook("nat", "postrouting", "srcnat"),
                rules,
            },
        );
    }
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
