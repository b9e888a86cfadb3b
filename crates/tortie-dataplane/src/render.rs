//! [`DataplaneModel`] → [`NftTable`]: pure, deterministic (ordered maps all the way).
//!
//! See the crate documentation for the layout. Names from the model pass through
//! [`nft_name`]; workloads whose interface name nft cannot match exactly are left out (their
//! traffic then meets the dispatch chains' fail-closed drop). Host endpoints on such
//! interfaces, on `lo` or on `cali*` are left out too (that traffic is then not host endpoint
//! traffic at all). Everything about host endpoints is rendered only when the model has
//! some, so a node without them gets exactly the table it had before they existed.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use tortie_calc::dataplane::{
    ALL_INTERFACES, DataplaneModel, DirectionChains, EndpointToHost, Family, HostEndpointChains,
    HostEndpointExtras, IpSet, IpSetMembers, PolicyChain, TierChains, WorkloadChains,
};
use tortie_calc::failsafe::FailsafePort;

use crate::rule::{
    MARK_ACCEPT, MARK_PASS, MARK_STAGED_DENY, STAGED_DENY, SetKind, SetRefs, net_elements,
    preview_log, proto_name, render_preview_rule, render_rule,
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
/// Interface name prefix of workload veths, and the nft pattern matching them.
pub const WORKLOAD_IFACE_PREFIX: &str = "cali";
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
/// Failsafe accepts for untracked ingress (raw prerouting): the inbound failsafe ports and,
/// by source port, the replies to the host's outbound failsafe connections, which would
/// otherwise meet untracked policy before conntrack could recognise them (as Calico's raw
/// `cali-failsafe-in`). Accepting here only skips untracked policy: the filter path still
/// requires the reply to be established or the port to be failsafe.
pub const CHAIN_FAILSAFE_IN_RAW: &str = "failsafe-in-raw";
/// Failsafe accepts for untracked egress (raw output): the outbound failsafe ports and, by
/// source port, the host's replies on inbound failsafe connections.
pub const CHAIN_FAILSAFE_OUT_RAW: &str = "failsafe-out-raw";
/// Base chain on the prerouting hook at raw priority: untracked (`doNotTrack`) ingress
/// policy of host endpoints, before conntrack (present only when some host endpoint has any).
pub const CHAIN_RAW_PREROUTING: &str = "raw-prerouting";
/// Base chain on the output hook at raw priority: untracked egress policy of host endpoints.
pub const CHAIN_RAW_OUTPUT: &str = "raw-output";
/// Base chain on the prerouting hook at mangle priority (before DNAT at dstnat): `preDNAT`
/// policy of host endpoints.
pub const CHAIN_PRE_DNAT: &str = "pre-dnat";
/// Dispatch of forwarded traffic arriving through a host endpoint (`applyOnForward` ingress).
pub const CHAIN_FROM_HEP_FWD: &str = "from-hep-fwd";
/// Dispatch of forwarded traffic leaving through a host endpoint (`applyOnForward` egress).
pub const CHAIN_TO_HEP_FWD: &str = "to-hep-fwd";
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
    for (name, chain) in &model.staged_chains {
        t.chains
            .insert(nft_name(name), preview_policy_chain(chain, &mut refs));
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
        let mut to = endpoint_chain(wl, Dir::To, &mut wanted_chains);
        let mut from = endpoint_chain(wl, Dir::From, &mut wanted_chains);
        if let Some(staged) = model.staged_workloads.get(iface) {
            // The preview runs first and returns; the enforced chain then decides.
            for (d, prefix, chain) in [
                (&staged.ingress, "stw", &mut to),
                (&staged.egress, "sfw", &mut from),
            ] {
                let Some(d) = d else { continue };
                let name = nft_name(&format!("{prefix}-{iface}"));
                let preview = preview_chain(d, &model.staged_chains);
                t.chains.insert(name.clone(), preview);
                chain.rules.insert(
                    0,
                    format!("jump {name} {}", comment("staged policy preview")),
                );
            }
        }
        fw.insert(key.clone(), format!("goto {fw_name}"));
        tw.insert(key, format!("goto {tw_name}"));
        t.chains.insert(tw_name, to);
        t.chains.insert(fw_name, from);
    }
    let heps = host_endpoints(&mut t, model, &mut wanted_chains);
    t.maps.insert(MAP_FROM_WL.to_string(), dispatch_map(fw));
    t.maps.insert(MAP_TO_WL.to_string(), dispatch_map(tw));
    static_chains(&mut t, model.endpoint_to_host);
    if let Some(heps) = heps {
        host_endpoint_base_chains(&mut t, heps);
        host_endpoint_stages(&mut t, model, heps, &mut wanted_chains);
    }
    fail_closed_stand_ins(&mut t, &wanted_chains, &refs);
    nat(&mut t, &model.nat.masquerade_pools, &model.nat.all_pools);
    t
}

/// What the base chains need to know about the rendered host endpoints.
#[derive(Debug, Clone, Copy)]
struct Heps {
    /// An all-interfaces (`*`) host endpoint exists.
    all: bool,
    /// The `failsafe-in` chain exists.
    failsafe_in: bool,
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
    let failsafe_in = failsafe_rules(
        &model.failsafe_inbound,
        "saddr",
        "dport",
        "failsafe inbound",
    );
    let failsafe_out = failsafe_rules(
        &model.failsafe_outbound,
        "daddr",
        "dport",
        "failsafe outbound",
    );
    let mut fh = BTreeMap::new();
    let mut th = BTreeMap::new();
    let mut all = false;
    for (iface, hep) in &model.host_endpoints {
        let (fh_name, th_name) = if iface == ALL_INTERFACES {
            all = true;
            (CHAIN_FROM_ALL_HEP.to_string(), CHAIN_TO_ALL_HEP.to_string())
        } else {
            let Some(key) = hep_key(iface) else {
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
    let heps = Heps {
        all,
        failsafe_in: !failsafe_in.is_empty(),
    };
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
    Some(heps)
}

/// The dispatch key of a named host endpoint interface; `None` for interfaces never policed
/// as host endpoints (loopback, workload veths, names nft cannot match exactly).
fn hep_key(iface: &str) -> Option<String> {
    ifname_literal(iface).filter(|_| can_be_host_endpoint(iface))
}

/// Whether a host endpoint may govern interface `iface`: not loopback, not a workload veth.
pub fn can_be_host_endpoint(iface: &str) -> bool {
    iface != LOOPBACK && !iface.starts_with(WORKLOAD_IFACE_PREFIX)
}

/// A host endpoint policy stage outside the filter INPUT/OUTPUT path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// `doNotTrack` ingress, raw prerouting.
    UntrackedIn,
    /// `doNotTrack` egress, raw output.
    UntrackedOut,
    /// `preDNAT` ingress, prerouting at mangle priority.
    PreDnatIn,
    /// `applyOnForward` ingress, filter forward.
    ForwardIn,
    /// `applyOnForward` egress, filter forward.
    ForwardOut,
}

impl Stage {
    const ALL: [Stage; 5] = [
        Stage::UntrackedIn,
        Stage::UntrackedOut,
        Stage::PreDnatIn,
        Stage::ForwardIn,
        Stage::ForwardOut,
    ];

    fn tiers(self, x: &HostEndpointExtras) -> &[TierChains] {
        match self {
            Stage::UntrackedIn => &x.untracked_ingress,
            Stage::UntrackedOut => &x.untracked_egress,
            Stage::PreDnatIn => &x.pre_dnat_ingress,
            Stage::ForwardIn => &x.forward_ingress,
            Stage::ForwardOut => &x.forward_egress,
        }
    }

    /// Per-interface chain prefix; the dispatch map is `<prefix>-dispatch`.
    fn prefix(self) -> &'static str {
        match self {
            Stage::UntrackedIn => "fhu",
            Stage::UntrackedOut => "thu",
            Stage::PreDnatIn => "fhp",
            Stage::ForwardIn => "fhf",
            Stage::ForwardOut => "thf",
        }
    }

    /// The all-interfaces (`*`) host endpoint's chain.
    fn all_chain(self) -> &'static str {
        match self {
            Stage::UntrackedIn => "from-hep-all-untracked",
            Stage::UntrackedOut => "to-hep-all-untracked",
            Stage::PreDnatIn => "from-hep-all-pre-dnat",
            Stage::ForwardIn => "from-hep-all-fwd",
            Stage::ForwardOut => "to-hep-all-fwd",
        }
    }

    fn ingress(self) -> bool {
        matches!(
            self,
            Stage::UntrackedIn | Stage::PreDnatIn | Stage::ForwardIn
        )
    }

    /// What follows each policy jump: the policy's allow is final for this stage.
    fn on_accept(self) -> String {
        let accept = mark_hex(MARK_ACCEPT);
        match self {
            // Allowed untracked: not tracked, and accepted by the filter hooks on the mark.
            Stage::UntrackedIn | Stage::UntrackedOut => format!(
                "meta mark & {accept} == {accept} notrack accept {}",
                comment("untracked policy accepted")
            ),
            Stage::PreDnatIn => format!(
                "meta mark & {accept} == {accept} accept {}",
                comment("pre-DNAT policy accepted")
            ),
            Stage::ForwardIn | Stage::ForwardOut => format!(
                "meta mark & {accept} == {accept} return {}",
                comment("return if policy accepted")
            ),
        }
    }
}

/// The untracked, pre-DNAT and forward stages of host endpoint policy: for each stage some
/// host endpoint has policy in, one chain per such endpoint, a dispatch map (every named host
/// endpoint: its chain, or `return` when it has no policy in the stage, so that it does not
/// fall through to the `*` endpoint's) and the hook into the packet path.
fn host_endpoint_stages(
    t: &mut NftTable,
    model: &DataplaneModel,
    heps: Heps,
    wanted: &mut BTreeSet<String>,
) {
    let used = |stage: Stage| {
        model
            .host_endpoint_extras
            .values()
            .any(|x| !stage.tiers(x).is_empty())
    };
    let untracked_in = used(Stage::UntrackedIn);
    let untracked_out = used(Stage::UntrackedOut);
    let pre_dnat = used(Stage::PreDnatIn);
    let accept = mark_hex(MARK_ACCEPT);
    let clear = format!(
        "meta mark set meta mark & {} {}",
        mark_hex(!(MARK_ACCEPT | MARK_PASS)),
        comment("clear accept and pass marks")
    );
    let accepted_early = format!(
        "meta mark & {accept} == {accept} accept {}",
        comment("allowed by untracked or pre-DNAT policy")
    );
    // Before conntrack, a failsafe connection's replies look like any other packet: the raw
    // failsafe chains also accept them, by source port (Calico's raw failsafe chains).
    let raw_failsafe_in = untracked_in
        && raw_failsafe_chain(
            t,
            CHAIN_FAILSAFE_IN_RAW,
            "failsafe inbound",
            &model.failsafe_inbound,
            &model.failsafe_outbound,
            "saddr",
        );
    let raw_failsafe_out = untracked_out
        && raw_failsafe_chain(
            t,
            CHAIN_FAILSAFE_OUT_RAW,
            "failsafe outbound",
            &model.failsafe_outbound,
            &model.failsafe_inbound,
            "daddr",
        );
    let none = HostEndpointExtras::default();
    for stage in Stage::ALL {
        if !used(stage) {
            continue;
        }
        let mut map = BTreeMap::new();
        let mut all_chain = false;
        for iface in model.host_endpoints.keys() {
            let x = model.host_endpoint_extras.get(iface).unwrap_or(&none);
            let tiers = stage.tiers(x);
            let name = if iface == ALL_INTERFACES {
                if tiers.is_empty() {
                    continue;
                }
                all_chain = true;
                stage.all_chain().to_string()
            } else {
                let Some(key) = hep_key(iface) else {
                    continue;
                };
                if tiers.is_empty() {
                    map.insert(key, "return".to_string());
                    continue;
                }
                let name = nft_name(&format!("{}-{iface}", stage.prefix()));
                map.insert(key, format!("goto {name}"));
                name
            };
            let mut rules = Vec::new();
            if stage == Stage::PreDnatIn {
                rules.push("ct state invalid drop".to_string());
            }
            match stage {
                Stage::UntrackedIn | Stage::PreDnatIn => rules.push(host_nd_accept(true)),
                Stage::UntrackedOut => rules.push(host_nd_accept(false)),
                Stage::ForwardIn | Stage::ForwardOut => {}
            }
            let failsafe = match stage {
                Stage::UntrackedIn if raw_failsafe_in => Some(CHAIN_FAILSAFE_IN_RAW),
                Stage::PreDnatIn if heps.failsafe_in => Some(CHAIN_FAILSAFE_IN),
                Stage::UntrackedOut if raw_failsafe_out => Some(CHAIN_FAILSAFE_OUT_RAW),
                _ => None,
            };
            if let Some(chain) = failsafe {
                rules.push(format!("jump {chain}"));
            }
            rules.push(clear.clone());
            rules.extend(tier_rules(tiers, &stage.on_accept(), wanted));
            t.chains.insert(name, ChainDef { hook: None, rules });
        }
        let map_name = format!("{}-dispatch", stage.prefix());
        t.maps.insert(map_name.clone(), dispatch_map(map));
        let (iif, wl) = if stage.ingress() {
            ("iifname", WORKLOAD_IFACE_PATTERN)
        } else {
            ("oifname", WORKLOAD_IFACE_PATTERN)
        };
        let mut rules = Vec::new();
        match stage {
            Stage::UntrackedIn | Stage::UntrackedOut => rules.push(clear.clone()),
            Stage::PreDnatIn if untracked_in => rules.push(format!(
                "meta mark & {accept} == {accept} accept {}",
                comment("allowed by untracked policy")
            )),
            Stage::PreDnatIn => rules.push(clear.clone()),
            Stage::ForwardIn | Stage::ForwardOut => {}
        }
        if stage == Stage::PreDnatIn {
            rules.push("ct state established,related accept".to_string());
        }
        rules.push(format!(
            "{iif} \"{wl}\" return {}",
            comment("workload traffic: not host endpoint traffic")
        ));
        if stage != Stage::ForwardIn && stage != Stage::ForwardOut {
            rules.push(format!(
                "{iif} \"{LOOPBACK}\" return {}",
                comment("loopback is never policed")
            ));
        }
        rules.push(format!("{iif} vmap @{map_name}"));
        if all_chain {
            rules.push(format!("goto {}", stage.all_chain()));
        }
        let (name, hook) = match stage {
            Stage::UntrackedIn => (
                CHAIN_RAW_PREROUTING,
                base_hook("filter", "prerouting", "raw"),
            ),
            Stage::UntrackedOut => (CHAIN_RAW_OUTPUT, base_hook("filter", "output", "raw")),
            Stage::PreDnatIn => (CHAIN_PRE_DNAT, base_hook("filter", "prerouting", "mangle")),
            Stage::ForwardIn => (CHAIN_FROM_HEP_FWD, None),
            Stage::ForwardOut => (CHAIN_TO_HEP_FWD, None),
        };
        t.chains.insert(name.to_string(), ChainDef { hook, rules });
    }
    // The filter hooks accept what untracked or pre-DNAT policy allowed (the mark survives
    // from prerouting), right after the established flows.
    if (untracked_in || pre_dnat)
        && let Some(input) = t.chains.get_mut(CHAIN_INPUT)
    {
        input.rules.insert(1, accepted_early);
    }
    if untracked_out && let Some(output) = t.chains.get_mut(CHAIN_OUTPUT) {
        output.rules.insert(
            1,
            format!(
                "meta mark & {accept} == {accept} accept {}",
                comment("allowed by untracked policy")
            ),
        );
    }
    if let Some(forward) = t.chains.get_mut(CHAIN_FORWARD) {
        if used(Stage::ForwardIn) {
            // Allowed by untracked or pre-DNAT policy: the forward ingress policy is skipped
            // (as Calico); the workload and forward egress policy still apply.
            let rule = if untracked_in || pre_dnat {
                format!("meta mark & {accept} == 0 jump {CHAIN_FROM_HEP_FWD}")
            } else {
                format!("jump {CHAIN_FROM_HEP_FWD}")
            };
            forward.rules.insert(1, rule);
        }
        if used(Stage::ForwardOut) {
            forward.rules.push(format!("jump {CHAIN_TO_HEP_FWD}"));
        }
    }
}

/// A raw failsafe chain `name`: `ours` by destination port, and the replies of the other
/// direction's failsafe connections (`theirs`) by source port, `peer` being the remote
/// address in both. `false` (and no chain) when both lists are empty.
fn raw_failsafe_chain(
    t: &mut NftTable,
    name: &str,
    what: &str,
    ours: &[FailsafePort],
    theirs: &[FailsafePort],
    peer: &str,
) -> bool {
    let mut rules = failsafe_rules(ours, peer, "dport", what);
    rules.extend(failsafe_rules(
        theirs,
        peer,
        "sport",
        &format!("{what}: replies"),
    ));
    if rules.is_empty() {
        return false;
    }
    t.chains
        .insert(name.to_string(), ChainDef { hook: None, rules });
    true
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
    let mut rules = vec!["ct state invalid drop".to_string(), host_nd_accept(false)];
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

/// A host endpoint's own IPv6 neighbour and router discovery and MLD (types 130–136, 143),
/// accepted before any host endpoint policy, untracked and pre-DNAT included: with them
/// dropped, IPv6 through the interface stops once the neighbour caches expire, failsafe
/// ports included. (Conntrack does not track them, so `ct state` does not let them through.)
/// In prerouting, which also sees forwarded traffic, only what is addressed to the host
/// itself (its addresses, or multicast): forwarded ICMPv6 of those types meets policy.
fn host_nd_accept(prerouting: bool) -> String {
    let types: Vec<String> = tortie_calc::eval::HOST_ND_ICMPV6_TYPES
        .iter()
        .map(u8::to_string)
        .collect();
    let to_host = if prerouting {
        "fib daddr type { local, multicast } "
    } else {
        ""
    };
    format!(
        "{to_host}icmpv6 type {{ {} }} accept {}",
        types.join(", "),
        comment("ICMPv6 neighbour discovery and MLD")
    )
}

/// Failsafe accepts: every entry without a `net` in one set lookup
/// (`meta l4proto . th dport { tcp . 22, ... }`), one rule per entry with a `net` (its
/// `peer` address: the source inbound, the destination outbound). `port` is the field the
/// failsafe port is matched in: `dport`, or `sport` for the replies of the other direction's
/// failsafe connections (raw chains only).
fn failsafe_rules(ports: &[FailsafePort], peer: &str, port: &str, what: &str) -> Vec<String> {
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
            "meta l4proto . th {port} {{ {} }} accept {}",
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
                "{ip} {peer} {net} meta l4proto {} th {port} {} accept {}",
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

/// Addresses that left and joined one hash set of addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetDelta {
    pub removed: BTreeSet<IpAddr>,
    pub added: BTreeSet<IpAddr>,
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
            elements.remove(&gone.addr().to_string());
            delta.removed.insert(gone.addr());
        }
        for fresh in now.difference(was) {
            elements.insert(fresh.addr().to_string());
            delta.added.insert(fresh.addr());
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

/// A preview policy chain: its verdicts are logged and marked, never enforced.
fn preview_policy_chain(chain: &PolicyChain, refs: &mut SetRefs) -> ChainDef {
    ChainDef {
        hook: None,
        rules: chain
            .rules
            .iter()
            .flat_map(|r| render_preview_rule(r, refs))
            .collect(),
    }
}

/// `stw-<iface>` / `sfw-<iface>`: the staged view's tiers and profiles as preview chains.
/// The first verdict (allow, deny, end of tier, no profile matched) is logged as what the
/// staged policies would do; nothing is dropped or accepted here, and the marks are
/// cleared again on the way out so the enforced chain starts clean. Only chains the model
/// defines are jumped to (a missing one must not become a drop, as it would elsewhere).
fn preview_chain(d: &DirectionChains, defined: &BTreeMap<String, PolicyChain>) -> ChainDef {
    let (tiers, profiles) = (&d.tiers, &d.profiles);
    let all = mark_hex(MARK_ACCEPT | MARK_PASS | MARK_STAGED_DENY);
    let decided = mark_hex(MARK_ACCEPT | MARK_STAGED_DENY);
    let clear = format!(
        "meta mark set meta mark & {}",
        mark_hex(!(MARK_ACCEPT | MARK_PASS | MARK_STAGED_DENY))
    );
    let deny = |what: &str| {
        format!(
            "{} meta mark set meta mark | {}",
            preview_log(&format!("{STAGED_DENY}{what}")),
            mark_hex(MARK_STAGED_DENY)
        )
    };
    let mut rules = vec![format!(
        "{clear} {}",
        comment("staged preview: clear marks")
    )];
    for tier in tiers {
        rules.push(format!(
            "meta mark set meta mark & {} {}",
            mark_hex(!MARK_PASS),
            comment(&format!("start of tier {}", tier.tier))
        ));
        for p in tier.policies.iter().filter(|p| defined.contains_key(*p)) {
            rules.push(format!("meta mark & {all} == 0 jump {}", nft_name(p)));
        }
        if tier.end_drop {
            rules.push(format!(
                "meta mark & {all} == 0 {}",
                deny(&format!("end of tier {}", tier.tier))
            ));
        }
    }
    for p in profiles.iter().filter(|p| defined.contains_key(*p)) {
        rules.push(format!("meta mark & {decided} == 0 jump {}", nft_name(p)));
    }
    rules.push(format!(
        "meta mark & {decided} == 0 {}",
        deny("no profile matched")
    ));
    rules.push(format!("{clear} {}", comment("staged preview: done")));
    ChainDef { hook: None, rules }
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
    let accepted = format!("meta mark & {accept} == {accept} return");
    let mut rules = vec![format!(
        "meta mark set meta mark & {} {}",
        mark_hex(!(MARK_ACCEPT | MARK_PASS)),
        comment("clear accept and pass marks")
    )];
    rules.extend(tier_rules(
        tiers,
        &format!("{accepted} {}", comment("return if policy accepted")),
        wanted,
    ));
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

/// Per tier: clear PASS, then per policy `meta mark & PASS == 0 jump <chain>` followed by
/// `on_accept`; at the end of a tier with `end_drop`, drop unless something passed.
fn tier_rules(tiers: &[TierChains], on_accept: &str, wanted: &mut BTreeSet<String>) -> Vec<String> {
    let pass = mark_hex(MARK_PASS);
    let mut rules = Vec::new();
    for tier in tiers {
        rules.push(format!(
            "meta mark set meta mark & {} {}",
            mark_hex(!MARK_PASS),
            comment(&format!("start of tier {}", tier.tier))
        ));
        for p in &tier.policies {
            let chain = nft_name(p);
            rules.push(format!("meta mark & {pass} == 0 jump {chain}"));
            rules.push(on_accept.to_string());
            wanted.insert(chain);
        }
        if tier.end_drop {
            rules.push(format!(
                "meta mark & {pass} == 0 drop {}",
                comment(&format!("end of tier {}", tier.tier))
            ));
        }
    }
    rules
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
