//! [`DataplaneModel`] → [`NftTable`]: pure, deterministic (ordered maps all the way).
//!
//! See the crate documentation for the layout. Names from the model pass through
//! [`nft_name`]; workloads whose interface name nft cannot match exactly are left out (their
//! traffic then meets the dispatch chains' fail-closed drop). Host endpoints on such
//! interfaces, on `lo` or on `cali*` are left out too (that traffic is then not host endpoint
//! traffic at all). Everything about host endpoints is rendered only when the model has
//! some, so a node without them gets exactly the table it had before they existed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use ipnet::IpNet;
use tortie_calc::dataplane::{
    ALL_INTERFACES, DataplaneModel, EndpointToHost, Family, HostEndpointChains, IpSet,
    IpSetMembers, PolicyChain, TierChains, WorkloadChains,
};
use tortie_calc::failsafe::FailsafePort;

use crate::rule::{
    MARK_ACCEPT, MARK_PASS, SetKind, SetRefs, net_elements, proto_name, render_rule,
};
use crate::table::{ChainDef, MapDef, NftTable, SetDef, comment, ifname_literal, join, nft_name};

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
/// Base chain on the output hook (present only with host endpoints).
pub const CHAIN_OUTPUT: &str = "output";
/// Verdict map: interface → `goto fh-<iface>` (traffic from a host endpoint to the host).
pub const MAP_FROM_HEP: &str = "fh-dispatch";
/// Verdict map: interface → `goto th-<iface>` (traffic from the host to a host endpoint).
pub const MAP_TO_HEP: &str = "th-dispatch";
/// Ingress chain of the all-interfaces (`*`) host endpoint. (No `fh-` prefix: that would
/// collide with an interface of that name.)
pub const CHAIN_FROM_ALL_HEP: &str = "from-hep-all";
/// Egress chain of the all-interfaces (`*`) host endpoint.
pub const CHAIN_TO_ALL_HEP: &str = "to-hep-all";
/// Inbound failsafe ports, jumped to by every host endpoint ingress chain.
pub const CHAIN_FAILSAFE_IN: &str = "failsafe-in";
/// Outbound failsafe ports, jumped to by every host endpoint egress chain.
pub const CHAIN_FAILSAFE_OUT: &str = "failsafe-out";
/// The loopback interface, never policed.
pub const LOOPBACK: &str = "lo";

/// Renders the whole table.
pub fn render(model: &DataplaneModel) -> NftTable {
    let sets = model
        .ip_sets
        .iter()
        .map(|(name, set)| (nft_name(name), set_def(set.family, &set.members)))
        .collect();
    render_with_sets(model, sets)
}

/// [`render`], taking each IP set that is unchanged since `prev` (the model's sets and the
/// table rendered from them) from `prev` instead of rendering it again, and patching a
/// changed address set: with large sets most of a change's cost would otherwise be
/// re-rendering and re-comparing sets that did not change. (`prev` is cloned, which shares
/// its sets' elements; a patched set's elements are copied once.)
pub fn render_reusing(
    model: &DataplaneModel,
    prev: Option<(&BTreeMap<String, IpSet>, &NftTable)>,
) -> NftTable {
    match prev {
        None => render(model),
        Some((sets, table)) => render_moving(model, sets, &mut table.clone()).0,
    }
}

/// The table around already rendered IP sets.
fn render_with_sets(model: &DataplaneModel, sets: BTreeMap<String, SetDef>) -> NftTable {
    let mut t = NftTable {
        sets,
        ..NftTable::default()
    };
    let mut refs = SetRefs::new();
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
    let heps = host_endpoints(&mut t, model, &mut wanted_chains);
    fail_closed_stand_ins(&mut t, &wanted_chains, &refs);
    t.maps.insert(MAP_FROM_WL.to_string(), dispatch_map(fw));
    t.maps.insert(MAP_TO_WL.to_string(), dispatch_map(tw));
    static_chains(&mut t, model.endpoint_to_host);
    if let Some(heps) = heps {
        host_endpoint_base_chains(&mut t, heps);
    }
    nat(&mut t, &model.nat.masquerade_pools, &model.nat.all_pools);
    t
}

/// What the base chains need to know about the rendered host endpoints.
#[derive(Debug, Clone, Copy)]
struct Heps {
    /// An all-interfaces (`*`) host endpoint exists.
    all: bool,
}

/// Host endpoint chains, dispatch maps and failsafe chains; `None` (and nothing rendered)
/// when the model has no host endpoints.
fn host_endpoints(
    t: &mut NftTable,
    model: &DataplaneModel,
    wanted: &mut BTreeSet<String>,
) -> Option<Heps> {
    if model.host_endpoints.is_empty() {
        return None;
    }
    let failsafe_in = failsafe_rules(&model.failsafe_inbound, "saddr", "failsafe inbound");
    let failsafe_out = failsafe_rules(&model.failsafe_outbound, "daddr", "failsafe outbound");
    let mut fh = BTreeMap::new();
    let mut th = BTreeMap::new();
    let mut all = false;
    for (iface, hep) in &model.host_endpoints {
        let (fh_name, th_name) = if iface == ALL_INTERFACES {
            all = true;
            (CHAIN_FROM_ALL_HEP.to_string(), CHAIN_TO_ALL_HEP.to_string())
        } else {
            let key = match ifname_literal(iface) {
                Some(_) if iface == LOOPBACK || iface.starts_with("cali") => None,
                k => k,
            };
            let Some(key) = key else {
                tracing::warn!(iface, endpoint = %hep.endpoint, "host endpoint on an interface that is never policed as one (loopback, workload or unmatchable name); ignored");
                continue;
            };
            let fh_name = nft_name(&format!("fh-{iface}"));
            let th_name = nft_name(&format!("th-{iface}"));
            fh.insert(key.clone(), format!("goto {fh_name}"));
            th.insert(key, format!("goto {th_name}"));
            (fh_name, th_name)
        };
        let from = hep_chain(hep, Dir::To, !failsafe_in.is_empty(), wanted);
        let to = hep_chain(hep, Dir::From, !failsafe_out.is_empty(), wanted);
        t.chains.insert(fh_name, from);
        t.chains.insert(th_name, to);
    }
    for (name, rules) in [
        (CHAIN_FAILSAFE_IN, failsafe_in),
        (CHAIN_FAILSAFE_OUT, failsafe_out),
    ] {
        if !rules.is_empty() {
            t.chains
                .insert(name.to_string(), ChainDef { hook: None, rules });
        }
    }
    t.maps.insert(MAP_FROM_HEP.to_string(), dispatch_map(fh));
    t.maps.insert(MAP_TO_HEP.to_string(), dispatch_map(th));
    Some(Heps { all })
}

/// `fh-<iface>` (`dir` To: ingress policy, traffic to the host) / `th-<iface>` (From:
/// egress, traffic from the host): drop INVALID, accept failsafe ports, then tiers and
/// profiles exactly as for a workload, ending in a drop. These chains are reached by `goto`
/// from a base chain, so the endpoint chain's "return" on allow ends the base chain with its
/// accept policy.
fn hep_chain(
    hep: &HostEndpointChains,
    dir: Dir,
    failsafe: bool,
    wanted: &mut BTreeSet<String>,
) -> ChainDef {
    let mut rules = vec!["ct state invalid drop".to_string()];
    if failsafe {
        let chain = match dir {
            Dir::To => CHAIN_FAILSAFE_IN,
            Dir::From => CHAIN_FAILSAFE_OUT,
        };
        rules.push(format!("jump {chain}"));
    }
    rules.extend(endpoint_chain(hep, dir, wanted).rules);
    ChainDef { hook: None, rules }
}

/// Failsafe accepts: every entry without a `net` in one set lookup
/// (`meta l4proto . th dport { tcp . 22, ... }`), one rule per entry with a `net` (its
/// `peer` address: the source inbound, the destination outbound).
fn failsafe_rules(ports: &[FailsafePort], peer: &str, what: &str) -> Vec<String> {
    let plain: Vec<String> = ports
        .iter()
        .filter(|p| p.net.is_none())
        .map(|p| (p.protocol, p.port))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|(proto, port)| format!("{} . {port}", proto_name(proto)))
        .collect();
    let mut rules = Vec::new();
    if !plain.is_empty() {
        rules.push(format!(
            "meta l4proto . th dport {{ {} }} accept {}",
            join(&plain),
            comment(what)
        ));
    }
    let with_net: BTreeSet<String> = ports
        .iter()
        .filter_map(|p| {
            let net = p.net?;
            let ip = match Family::of_net(&net) {
                Family::V4 => "ip",
                Family::V6 => "ip6",
            };
            Some(format!(
                "{ip} {peer} {net} meta l4proto {} th dport {} accept {}",
                proto_name(p.protocol),
                p.port,
                comment(what)
            ))
        })
        .collect();
    rules.extend(with_net);
    rules
}

/// With host endpoints: `input` gains host endpoint dispatch after the workload rules, and
/// an `output` base chain polices the host's own traffic.
fn host_endpoint_base_chains(t: &mut NftTable, heps: Heps) {
    let wl = WORKLOAD_IFACE_PATTERN;
    if let Some(input) = t.chains.get_mut(CHAIN_INPUT) {
        input.rules.extend([
            // Reached only when the endpoint-to-host action is `return`: as Calico's RETURN,
            // the packet leaves our rules without meeting host endpoint policy.
            format!(
                "iifname \"{wl}\" accept {}",
                comment("workload to host: not host endpoint traffic")
            ),
            format!(
                "iifname \"{LOOPBACK}\" accept {}",
                comment("loopback is never policed")
            ),
            format!("iifname vmap @{MAP_FROM_HEP}"),
        ]);
        if heps.all {
            input.rules.push(format!("goto {CHAIN_FROM_ALL_HEP}"));
        }
    }
    let mut rules = vec![
        "ct state established,related accept".to_string(),
        // As Calico: the host's traffic to its own pods is not policed.
        format!(
            "oifname \"{wl}\" accept {}",
            comment("host to workload: not policed")
        ),
        format!(
            "oifname \"{LOOPBACK}\" accept {}",
            comment("loopback is never policed")
        ),
        format!("oifname vmap @{MAP_TO_HEP}"),
    ];
    if heps.all {
        rules.push(format!("goto {CHAIN_TO_ALL_HEP}"));
    }
    t.chains.insert(
        CHAIN_OUTPUT.to_string(),
        ChainDef {
            hook: base_hook("filter", "output", "filter"),
            rules,
        },
    );
}

/// Elements that left and joined one set, as nft literals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetDelta {
    pub removed: BTreeSet<String>,
    pub added: BTreeSet<String>,
}

/// [`render_reusing`] for the manager, which owns the previous table and is about to replace
/// it: a changed address set takes its elements *out of* `prev` and patches them in place (no
/// copy of a large set), and the returned deltas tell the diff what changed in those sets, so
/// it does not compare them either. `prev` must not be used as a description of the kernel
/// afterwards except through [`crate::diff::script_with_deltas`].
pub fn render_moving(
    model: &DataplaneModel,
    prev_sets: &BTreeMap<String, IpSet>,
    prev: &mut NftTable,
) -> (NftTable, BTreeMap<String, SetDelta>) {
    let mut deltas = BTreeMap::new();
    let mut sets = BTreeMap::new();
    for (name, set) in &model.ip_sets {
        let nft = nft_name(name);
        let def = match (prev_sets.get(name), prev.sets.get_mut(&nft)) {
            (Some(old), Some(def)) if old == set => def.clone(),
            (Some(old), Some(def)) if patchable(old, def, set) => {
                let mut elements = std::mem::take(&mut def.elements);
                let delta = patch(Arc::make_mut(&mut elements), old, set);
                deltas.insert(nft.clone(), delta);
                SetDef {
                    type_: def.type_.clone(),
                    interval: false,
                    elements,
                }
            }
            _ => set_def(set.family, &set.members),
        };
        sets.insert(nft, def);
    }
    (render_with_sets(model, sets), deltas)
}

/// All single addresses (/32, /128): such a set is a plain hash set.
fn single_addresses<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> bool {
    nets.into_iter()
        .all(|n| n.prefix_len() == n.max_prefix_len())
}

/// Whether a changed set can be rendered by patching its previous rendering: it was and
/// stays a hash set of single addresses of the same family.
fn patchable(old: &IpSet, old_def: &SetDef, new: &IpSet) -> bool {
    matches!(
        (&old.members, &new.members),
        (IpSetMembers::Nets(_), IpSetMembers::Nets(now)) if single_addresses(now)
    ) && old.family == new.family
        && !old_def.interval
}

/// Applies the addresses that left and joined (`old` → `new`, both address sets) to rendered
/// `elements`, returning them as a delta (a change to a 50k-address set renders two
/// elements, not 50k).
fn patch(elements: &mut BTreeSet<String>, old: &IpSet, new: &IpSet) -> SetDelta {
    let mut delta = SetDelta::default();
    if let (IpSetMembers::Nets(was), IpSetMembers::Nets(now)) = (&old.members, &new.members) {
        for gone in was.difference(now) {
            let e = gone.addr().to_string();
            elements.remove(&e);
            delta.removed.insert(e);
        }
        for fresh in now.difference(was) {
            let e = fresh.addr().to_string();
            elements.insert(e.clone());
            delta.added.insert(e);
        }
    }
    delta
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
    // A selector set of single addresses (the common case: endpoint IPs) is a plain hash set.
    // nft reads back every element of every interval set in the table before it changes one,
    // which makes element changes cost O(set size); hash sets change in O(1). A set that
    // holds a CIDR (a network set's) needs intervals; moving between the two is a full
    // (atomic) replace, which the diff handles.
    if let IpSetMembers::Nets(nets) = members
        && single_addresses(nets)
    {
        let (type_, _) = set_type(SetKind::Nets(family));
        return SetDef {
            type_: type_.to_string(),
            interval: false,
            elements: Arc::new(nets.iter().map(|n| n.addr().to_string()).collect()),
        };
    }
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
        elements: Arc::new(elements),
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
                    elements: Arc::default(),
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
        elements: Arc::new(net_elements(&nets).into_iter().collect()),
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
