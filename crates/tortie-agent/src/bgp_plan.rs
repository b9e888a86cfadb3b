//! The BGP plan for one node: who its speaker peers with and what it advertises. This is
//! the part of Calico that confd renders into `bird.cfg` (calico-reference §7), as a pure
//! function of the datastore.
//!
//! Rules, for node `me`:
//! - AS: the node's `spec.bgp.asNumber`, else BGPConfiguration `default`'s `asNumber`, else
//!   64512. Router id: the node's IPv4 address. Listen port: `node.<me>`'s BGPConfiguration,
//!   else `default`'s, else 179.
//! - Node-to-node mesh (unless `nodeToNodeMeshEnabled: false`): every other node, per family
//!   it has an address of, except route reflectors (nodes with `routeReflectorClusterID`),
//!   and none at all when `me` is a route reflector. The session is passive on the side whose
//!   own IP *string* sorts lower, so only the greater-IP node connects (as Calico does).
//! - BGPPeers apply to `me` when `node` names it, or `nodeSelector` matches its labels, or
//!   neither is set (a global peer). `peerIP` gives one peer; `peerSelector` gives every other
//!   matching node (remote AS from that node, passive by the same IP rule, `rr client` when
//!   `me` is a reflector and the peer is not in its cluster). A node the `peerSelector`
//!   selects peers back with every node the BGPPeer applies to (`reversePeering: Auto`, the
//!   default), so one BGPPeer `nodeSelector: all()`, `peerSelector: route-reflector == 'true'`
//!   sets up both ends of every client session.
//! - An explicit BGPPeer wins over a mesh session to the same address.
//! - Advertised: each block with a confirmed affinity to `me`, plus a /32 (/128) for every
//!   address `me` holds inside a block that is not its own (borrowed), plus the
//!   `serviceClusterIPs`, `serviceExternalIPs` and `serviceLoadBalancerIPs` CIDRs.
//!
//! - Export to every peer, after the peer's BGPFilters: Calico's built-in policy — routes
//!   inside an IP pool and the service CIDRs are advertised, anything else (say, a default
//!   route learned from one router) is not.
//!
//! - Passwords: BGPPeer `password.secretKeyRef` and BGPConfiguration `default`'s
//!   `nodeMeshPassword.secretKeyRef` name a key of a Secret in the agent's
//!   `--secrets-namespace` ([`Secrets`]); its value is the TCP MD5 key. A reference that
//!   cannot be read (no such Secret or key, an empty value, over 80 bytes, not UTF-8) skips
//!   that BGPPeer; for `nodeMeshPassword` the mesh sessions run without a password, as
//!   Calico's confd renders them when it cannot read the Secret. Either way it is a problem.
//!   An `optional: true` reference whose Secret or key is missing means no password.
//!
//! A problem in one BGPPeer (a missing filter, a password that cannot be read) skips that
//! peer and is reported in [`BgpPlan::problems`]; it never stops the others.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::IpNet;
use tortie_api::bgp::{BGPConfigurationSpec, BGPFilterSpec, BGPPeerSpec, SecretKeyRef};
use tortie_bgp::filter::Community;
use tortie_bgp::filter::Filter;
use tortie_bgp::rib::NextHopMode;
use tortie_bgp::speaker::{DEFAULT_RESTART_TIME, PeerConfig, PeerKind};
use tortie_bgp::{Family, PathAttrs, filter};
use tortie_ipam::model::AffinityState;

use crate::config::DEFAULT_SECRETS_NAMESPACE;
use crate::model::{Labels, NodeAddrs, RoutingModel};

/// Calico's default AS number.
pub const DEFAULT_AS: u32 = 64512;
/// BGP's port.
pub const DEFAULT_PORT: u16 = 179;
/// The longest TCP MD5 key the kernel takes (`TCP_MD5SIG_MAXKEYLEN`).
pub const MAX_PASSWORD_BYTES: usize = 80;

/// What BGP needs to know about a node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BgpNode {
    pub addrs: NodeAddrs,
    pub labels: Labels,
    pub as_number: Option<u32>,
    pub rr_cluster_id: Option<Ipv4Addr>,
}

/// The BGP resources of the cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BgpInputs {
    /// BGPConfiguration by name (`default`, `node.<name>`).
    pub configs: BTreeMap<String, BGPConfigurationSpec>,
    /// BGPPeer by name.
    pub peers: BTreeMap<String, BGPPeerSpec>,
    /// BGPFilter by name.
    pub filters: BTreeMap<String, BGPFilterSpec>,
    /// Node by name.
    pub nodes: BTreeMap<String, BgpNode>,
    /// The Secrets passwords are read from.
    pub secrets: Secrets,
}

/// The Secrets of one namespace, decoded: name → key → value. `Debug` shows names and keys,
/// never values.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets {
    pub namespace: String,
    pub by_name: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
}

impl Default for Secrets {
    fn default() -> Self {
        Secrets {
            namespace: DEFAULT_SECRETS_NAMESPACE.to_string(),
            by_name: BTreeMap::new(),
        }
    }
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: BTreeMap<&String, Vec<&String>> = self
            .by_name
            .iter()
            .map(|(name, data)| (name, data.keys().collect()))
            .collect();
        f.debug_struct("Secrets")
            .field("namespace", &self.namespace)
            .field("keys", &keys)
            .finish()
    }
}

impl Secrets {
    /// The TCP MD5 key a `secretKeyRef` names. `Ok(None)`: an `optional` reference whose
    /// Secret or key is missing (no password). `Err` says why the value cannot be used,
    /// naming the namespace, the Secret and the key.
    pub fn password(&self, r: &SecretKeyRef) -> Result<Option<String>, String> {
        let ns = &self.namespace;
        let optional = r.optional == Some(true);
        if r.name.is_empty() {
            return Err(format!(
                "secretKeyRef names no Secret (key {:?}, namespace {ns})",
                r.key
            ));
        }
        let Some(data) = self.by_name.get(&r.name) else {
            return if optional {
                Ok(None)
            } else {
                Err(format!(
                    "Secret {ns}/{} does not exist (key {:?})",
                    r.name, r.key
                ))
            };
        };
        let Some(value) = data.get(&r.key) else {
            return if optional {
                Ok(None)
            } else {
                Err(format!("Secret {ns}/{} has no key {:?}", r.name, r.key))
            };
        };
        let what = format!("key {:?} of Secret {ns}/{}", r.key, r.name);
        if value.is_empty() {
            return Err(format!("{what} is empty"));
        }
        if value.len() > MAX_PASSWORD_BYTES {
            return Err(format!(
                "{what} is {} bytes; a TCP MD5 key has at most {MAX_PASSWORD_BYTES}",
                value.len()
            ));
        }
        String::from_utf8(value.clone())
            .map(Some)
            .map_err(|_| format!("{what} is not UTF-8 text"))
    }
}

/// The speaker's configuration for one node.
#[derive(Debug, Clone, PartialEq)]
pub struct BgpPlan {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    pub listen_port: u16,
    pub cluster_id: Option<Ipv4Addr>,
    pub node_addrs: NodeAddrs,
    /// Sorted by address.
    pub peers: Vec<PeerConfig>,
    pub originate: BTreeSet<IpNet>,
    /// `prefixAdvertisements`: communities added to advertised routes inside each CIDR.
    pub communities: Vec<(IpNet, Vec<Community>)>,
    /// Peers skipped, and why.
    pub problems: Vec<String>,
}

/// The plan for node `me`. `Err` when `me` has no IPv4 address to serve as router id.
pub fn plan(
    inputs: &BgpInputs,
    routing: &RoutingModel,
    pools: &[IpNet],
    me: &str,
) -> Result<BgpPlan, String> {
    let own = inputs.nodes.get(me).cloned().unwrap_or_default();
    let addrs = routing.nodes.get(me).copied().unwrap_or(own.addrs);
    let router_id = addrs
        .ipv4
        .ok_or_else(|| format!("node {me} has no IPv4 address; BGP needs one as its router id"))?;
    let global = inputs.configs.get("default");
    let node_cfg = inputs.configs.get(&format!("node.{me}"));
    let pick = |f: &dyn Fn(&BGPConfigurationSpec) -> Option<i64>| {
        node_cfg.and_then(f).or_else(|| global.and_then(f))
    };
    let default_as = global.and_then(|g| g.as_number).map_or(DEFAULT_AS, |a| a.0);
    let local_as = own.as_number.unwrap_or(default_as);
    let listen_port = pick(&|c| c.listen_port)
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(DEFAULT_PORT);
    let mut plan = BgpPlan {
        local_as,
        router_id,
        listen_port,
        cluster_id: own.rr_cluster_id,
        node_addrs: addrs,
        peers: Vec::new(),
        originate: originated(routing, me),
        communities: Vec::new(),
        problems: Vec::new(),
    };
    if let Some(g) = global {
        plan.communities = prefix_communities(g, &mut plan.problems);
    }
    for c in global.into_iter() {
        for cidr in c
            .service_cluster_ips
            .iter()
            .chain(&c.service_external_ips)
            .chain(&c.service_load_balancer_ips)
        {
            match cidr.cidr.parse::<IpNet>() {
                Ok(net) => {
                    plan.originate.insert(net.trunc());
                }
                Err(_) => plan.problems.push(format!(
                    "BGPConfiguration default: service CIDR {:?} is not a CIDR",
                    cidr.cidr
                )),
            }
        }
    }

    let allowed = calico_export(pools, &plan.originate);
    let mut peers: BTreeMap<IpAddr, PeerConfig> = BTreeMap::new();
    for (name, spec) in &inputs.peers {
        match explicit_peers(inputs, spec, me, &own, default_as, addrs) {
            Ok(list) => {
                for p in list {
                    peers.entry(p.addr).or_insert(p);
                }
            }
            Err(e) => plan.problems.push(format!("BGPPeer {name}: {e}")),
        }
    }

    let mesh = global
        .and_then(|g| g.node_to_node_mesh_enabled)
        .unwrap_or(true);
    if mesh && own.rr_cluster_id.is_none() {
        let restart = global
            .and_then(|g| g.node_mesh_max_restart_time.as_deref())
            .and_then(|t| humantime::parse_duration(t).ok())
            .map_or(DEFAULT_RESTART_TIME, secs_u16);
        let password = mesh_password(inputs, global, &mut plan.problems);
        for (name, node) in &inputs.nodes {
            if name == me || node.rr_cluster_id.is_some() {
                continue;
            }
            let remote_as = node.as_number.unwrap_or(default_as);
            let pairs = [
                (addrs.ipv4.map(IpAddr::V4), node.addrs.ipv4.map(IpAddr::V4)),
                (addrs.ipv6.map(IpAddr::V6), node.addrs.ipv6.map(IpAddr::V6)),
            ];
            for (mine, theirs) in pairs {
                let (Some(mine), Some(theirs)) = (mine, theirs) else {
                    continue;
                };
                if peers.contains_key(&theirs) {
                    continue;
                }
                let mut p = PeerConfig::new(theirs, remote_as, PeerKind::Mesh);
                p.export = allowed.clone();
                p.passive = waits_for(mine, theirs);
                p.graceful_restart = Some(restart);
                p.families = vec![Family::of(&IpNet::from(theirs))];
                p.password = password.clone();
                peers.insert(theirs, p);
            }
        }
    }
    plan.peers = peers
        .into_values()
        .map(|mut p| {
            if p.kind != PeerKind::Mesh {
                p.export = Filter::chain(vec![p.export, allowed.clone()]);
            }
            p
        })
        .collect();
    Ok(plan)
}

/// `nodeMeshPassword` of the `default` BGPConfiguration. When it cannot be read the mesh runs
/// without a password (Calico's confd treats an unreadable Secret as no password) and the
/// reason is a problem.
fn mesh_password(
    inputs: &BgpInputs,
    global: Option<&BGPConfigurationSpec>,
    problems: &mut Vec<String>,
) -> Option<String> {
    let r = global?
        .node_mesh_password
        .as_ref()?
        .secret_key_ref
        .as_ref()?;
    match inputs.secrets.password(r) {
        Ok(p) => p,
        Err(e) => {
            problems.push(format!(
                "BGPConfiguration default: nodeMeshPassword.secretKeyRef: {e}; the mesh \
                 sessions run without a password"
            ));
            None
        }
    }
}

/// Calico's mesh rule: the node whose IP string sorts lower waits for the other to connect.
fn waits_for(mine: IpAddr, theirs: IpAddr) -> bool {
    theirs.to_string() > mine.to_string()
}

fn secs_u16(d: Duration) -> u16 {
    u16::try_from(d.as_secs()).unwrap_or(u16::MAX)
}

fn applies_to(spec: &BGPPeerSpec, me: &str, labels: &Labels) -> bool {
    if !spec.node.is_empty() {
        return spec.node == me;
    }
    if !spec.node_selector.is_empty() {
        return tortie_selector::Selector::parse(&spec.node_selector)
            .is_ok_and(|s| s.evaluate(labels));
    }
    true
}

fn explicit_peers(
    inputs: &BgpInputs,
    spec: &BGPPeerSpec,
    me: &str,
    own: &BgpNode,
    default_as: u32,
    addrs: NodeAddrs,
) -> Result<Vec<PeerConfig>, String> {
    let kind = if spec.node.is_empty() && spec.node_selector.is_empty() {
        PeerKind::Global
    } else {
        PeerKind::NodeSpecific
    };
    let sel = if spec.peer_selector.is_empty() {
        None
    } else {
        Some(
            tortie_selector::Selector::parse(&spec.peer_selector)
                .map_err(|e| format!("peerSelector {:?}: {e}", spec.peer_selector))?,
        )
    };
    // Forward: the BGPPeer applies to `me`, so `me` peers with `peerIP` or the nodes it
    // selects. Reverse (Calico's `reversePeering: Auto`): `me` is selected by the
    // peerSelector, so it peers back with every node the BGPPeer applies to.
    let forward = applies_to(spec, me, &own.labels);
    let reverse = spec.reverse_peering.as_deref() != Some("Manual")
        && sel.as_ref().is_some_and(|s| s.evaluate(&own.labels));
    if !forward && !reverse {
        return Ok(Vec::new());
    }
    let password = match spec
        .password
        .as_ref()
        .and_then(|p| p.secret_key_ref.as_ref())
    {
        Some(r) => inputs
            .secrets
            .password(r)
            .map_err(|e| format!("password.secretKeyRef: {e}; the peer is skipped"))?,
        None => None,
    };
    let (import, export) = filters(inputs, &spec.filters)?;
    let next_hop = match (spec.keep_original_next_hop, spec.next_hop_mode.as_deref()) {
        (Some(true), _) | (_, Some("Keep")) => NextHopMode::Keep,
        (_, Some("Self")) => NextHopMode::SelfHop,
        _ => NextHopMode::Auto,
    };
    let duration = |field: &str, v: &Option<String>| -> Result<Option<Duration>, String> {
        v.as_deref()
            .map(|s| humantime::parse_duration(s).map_err(|e| format!("{field} {s:?}: {e}")))
            .transpose()
    };
    let keepalive = duration("keepaliveTime", &spec.keepalive_time)?;
    let restart = duration("maxRestartTime", &spec.max_restart_time)?;
    let configure = |addr: IpAddr, port: Option<u16>, remote_as: u32| {
        let mut p = PeerConfig::new(addr, remote_as, kind);
        p.port = port.unwrap_or(DEFAULT_PORT);
        p.local_as = spec.local_as_number.map(|a| a.0);
        p.next_hop = next_hop;
        p.import = import.clone();
        p.export = export.clone();
        p.password = password.clone();
        if let Some(k) = keepalive {
            // BIRD's hold time is 3 × keepalive.
            p.hold_time = secs_u16(k).saturating_mul(3);
        }
        if let Some(r) = restart {
            p.graceful_restart = Some(secs_u16(r));
        }
        p.families = vec![Family::of(&IpNet::from(addr))];
        p
    };
    if !spec.peer_ip.is_empty() {
        if !forward {
            return Ok(Vec::new());
        }
        let (ip, port) = tortie_api::bgp::parse_peer_ip(&spec.peer_ip)
            .ok_or_else(|| format!("peerIP {:?} is not an address", spec.peer_ip))?;
        let remote_as = spec
            .as_number
            .map(|a| a.0)
            .ok_or_else(|| "asNumber is required with peerIP".to_string())?;
        return Ok(vec![configure(ip, port, remote_as)]);
    }
    let Some(sel) = sel else {
        return Err("needs peerIP or peerSelector".to_string());
    };
    let mut out = Vec::new();
    for (other, node) in &inputs.nodes {
        let chosen = (forward && sel.evaluate(&node.labels))
            || (reverse && applies_to(spec, other, &node.labels));
        if other == me || !chosen {
            continue;
        }
        let remote_as = node.as_number.unwrap_or(default_as);
        let pairs = [
            (addrs.ipv4.map(IpAddr::V4), node.addrs.ipv4.map(IpAddr::V4)),
            (addrs.ipv6.map(IpAddr::V6), node.addrs.ipv6.map(IpAddr::V6)),
        ];
        for (mine, theirs) in pairs {
            let (Some(mine), Some(theirs)) = (mine, theirs) else {
                continue;
            };
            let mut p = configure(theirs, None, remote_as);
            p.passive = waits_for(mine, theirs);
            p.rr_client = own.rr_cluster_id.is_some() && node.rr_cluster_id != own.rr_cluster_id;
            out.push(p);
        }
    }
    Ok(out)
}

/// The import and export filters of a peer, from its BGPFilter names in order.
fn filters(inputs: &BgpInputs, names: &[String]) -> Result<(Filter, Filter), String> {
    let mut import = Vec::new();
    let mut export = Vec::new();
    for n in names {
        let spec = inputs
            .filters
            .get(n)
            .ok_or_else(|| format!("filters: BGPFilter {n:?} does not exist"))?;
        import.push(
            Filter::from_spec(spec, filter::Direction::Import)
                .map_err(|e| format!("BGPFilter {n}: {e}"))?,
        );
        export.push(
            Filter::from_spec(spec, filter::Direction::Export)
                .map_err(|e| format!("BGPFilter {n}: {e}"))?,
        );
    }
    Ok((Filter::chain(import), Filter::chain(export)))
}

/// Calico's `calico_export_to_bgp_peers`: accept routes inside a pool or an advertised
/// service CIDR, reject the rest.
fn calico_export(pools: &[IpNet], originated: &BTreeSet<IpNet>) -> Filter {
    use tortie_bgp::filter::{Action, CidrMatch, FilterRule, MatchOperator};
    let mut rules = Vec::new();
    for net in pools.iter().chain(originated) {
        let mut r = FilterRule::new(Family::of(net), Action::Accept);
        r.cidr = Some(CidrMatch::new(*net, MatchOperator::In));
        rules.push(r);
    }
    rules.push(FilterRule::new(Family::Ipv4Unicast, Action::Reject));
    rules.push(FilterRule::new(Family::Ipv6Unicast, Action::Reject));
    Filter::new(rules)
}

/// BGPConfiguration `prefixAdvertisements`, with community names resolved through
/// `communities` (or given literally as `aa:nn` / `aa:nn:mm`).
fn prefix_communities(
    cfg: &BGPConfigurationSpec,
    problems: &mut Vec<String>,
) -> Vec<(IpNet, Vec<Community>)> {
    let mut out = Vec::new();
    for (i, adv) in cfg.prefix_advertisements.iter().enumerate() {
        let Ok(net) = adv.cidr.parse::<IpNet>() else {
            problems.push(format!(
                "BGPConfiguration default: prefixAdvertisements[{i}].cidr {:?} is not a CIDR",
                adv.cidr
            ));
            continue;
        };
        let mut list = Vec::new();
        for c in &adv.communities {
            let value = cfg
                .communities
                .iter()
                .find(|n| &n.name == c)
                .map_or(c.as_str(), |n| n.value.as_str());
            match Community::parse(value) {
                Some(v) => list.push(v),
                None => problems.push(format!(
                    "BGPConfiguration default: prefixAdvertisements[{i}].communities: {c:?} is \
                     neither a defined community nor aa:nn / aa:nn:mm"
                )),
            }
        }
        out.push((net.trunc(), list));
    }
    out
}

/// The routes to originate: each prefix with the communities of every prefixAdvertisement
/// containing it (Calico's `apply_communities`, `net ~ cidr`).
pub fn originated_routes(plan: &BgpPlan) -> BTreeMap<IpNet, std::sync::Arc<PathAttrs>> {
    let mut routes = tortie_bgp::speaker::originate(plan.originate.iter().copied());
    for (prefix, attrs) in routes.iter_mut() {
        let mut tagged: Option<PathAttrs> = None;
        for (cidr, list) in &plan.communities {
            if !cidr.contains(prefix) {
                continue;
            }
            let a = tagged.get_or_insert_with(|| (**attrs).clone());
            for c in list {
                match *c {
                    Community::Standard(v) if !a.communities.contains(&v) => a.communities.push(v),
                    Community::Large(x, y, z) if !a.large_communities.contains(&(x, y, z)) => {
                        a.large_communities.push((x, y, z))
                    }
                    _ => {}
                }
            }
        }
        if let Some(a) = tagged {
            *attrs = std::sync::Arc::new(a);
        }
    }
    routes
}

/// Own confirmed blocks, and single addresses `me` holds in blocks that are not its own.
pub fn originated(routing: &RoutingModel, me: &str) -> BTreeSet<IpNet> {
    let mut out = BTreeSet::new();
    let mut own = BTreeSet::new();
    for ((node, cidr), state) in &routing.affinities {
        if node == me && *state == AffinityState::Confirmed {
            out.insert(*cidr);
            own.insert(*cidr);
        }
    }
    for (cidr, allocs) in &routing.allocations {
        if own.contains(cidr) {
            continue;
        }
        for (ip, node) in allocs {
            if node == me {
                out.insert(IpNet::from(*ip));
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "bgp_plan_tests.rs"]
mod tests;
