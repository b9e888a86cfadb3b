//! The routing core: Adj-RIBs-In, the decision process, the Loc-RIB and the Adj-RIBs-Out
//! (RFC 4271 §3.2, §9), with route reflection (RFC 4456) and graceful restart (RFC 4724).
//!
//! Sans-IO: every input is a method call, every effect is returned in [`RibChanges`] — the
//! UPDATEs to send to each peer and the Loc-RIB changes for the kernel. No clock, no socket.
//!
//! Invariants, after every call:
//! * each destination's best path is the one [`Rib`]'s decision process picks from its current
//!   paths (one per source: the local origination and each peer's accepted route);
//! * each up peer's Adj-RIB-Out holds exactly the export of the current best path of every
//!   prefix of a negotiated family, and the UPDATEs returned so far, applied in order to an
//!   empty table, give that Adj-RIB-Out;
//! * nothing is returned for a change that changes nothing.
//!
//! Cost: a change to one prefix costs O(paths of that prefix + peers); attributes are shared
//! through `Arc`s, and exported attributes are computed once per distinct input `Arc`, target
//! peer and filter rule within a call, so a 100k-prefix UPDATE sharing one attribute set
//! allocates a handful of attribute sets, not 100k.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::collections::hash_map::Entry;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use ipnet::IpNet;

use crate::filter::{Filter, FilterInput, Verdict, prepend_as_path};
use crate::types::{Family, PathAttrs, Update};

/// A peer is known by its address.
pub type PeerId = IpAddr;

/// LOCAL_PREF assumed when absent and sent to iBGP peers when unset (RFC 4271 §5.1.5).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// Calico BGPPeer `nextHopMode` (`keepOriginalNextHop: true` = `Keep`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum NextHopMode {
    /// RFC 4271 §5.1.3: self towards eBGP peers; unchanged towards iBGP peers (including
    /// reflected routes); self for locally originated routes.
    #[default]
    Auto,
    /// Always this speaker's address for the prefix's family.
    SelfHop,
    /// Never changed, also towards eBGP peers. Locally originated routes keep the next hop
    /// they were given unless it is unspecified (`0.0.0.0`/`::`), which becomes self.
    Keep,
}

/// An Established session, as the RIB needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerInfo {
    pub addr: IpAddr,
    /// Our AS on this session (BGPPeer `localASNumber` or the global AS).
    pub local_as: u32,
    pub remote_as: u32,
    /// The peer's BGP Identifier from its OPEN.
    pub remote_id: Ipv4Addr,
    /// Our next hop for IPv4 / IPv6 prefixes when setting next hop self.
    pub local_addr_v4: Option<Ipv4Addr>,
    pub local_addr_v6: Option<Ipv6Addr>,
    /// The peer is a route-reflector client of ours (RFC 4456); only meaningful on iBGP
    /// sessions of a route reflector.
    pub rr_client: bool,
    pub next_hop: NextHopMode,
    /// Negotiated families; nothing of another family is sent or accepted.
    pub families: Vec<Family>,
    pub import: Filter,
    pub export: Filter,
}

impl PeerInfo {
    /// Same AS on both ends.
    pub fn is_ibgp(&self) -> bool {
        self.local_as == self.remote_as
    }
}

/// Where a Loc-RIB route comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// Originated by this node ([`Rib::set_local`]).
    Local,
    Peer(PeerId),
}

/// A Loc-RIB entry: the best path for a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Best {
    /// As accepted by the import filter (eBGP LOCAL_PREF removed).
    pub attrs: Arc<PathAttrs>,
    pub source: Source,
    /// Set by an import filter `setPriority`: the kernel route metric to use (Calico's
    /// `krt_metric`); `None` = the driver's default.
    pub priority: Option<u32>,
}

/// What a call changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RibChanges {
    /// One non-empty UPDATE per peer, in peer address order.
    pub to_peers: Vec<(PeerId, Update)>,
    /// Loc-RIB changes in prefix order: the new best, or `None` = no route any more.
    pub best: Vec<(IpNet, Option<Best>)>,
}

impl RibChanges {
    pub fn is_empty(&self) -> bool {
        self.to_peers.is_empty() && self.best.is_empty()
    }
}

/// What the decision process and export need to know about the peer a path came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct PeerMeta {
    ibgp: bool,
    rr_client: bool,
    remote_id: Ipv4Addr,
}

impl PeerMeta {
    fn of(info: &PeerInfo) -> PeerMeta {
        PeerMeta {
            ibgp: info.is_ibgp(),
            rr_client: info.rr_client,
            remote_id: info.remote_id,
        }
    }
}

/// One candidate path for a prefix (post import policy).
#[derive(Debug, Clone)]
struct Path {
    source: Source,
    /// `None` for [`Source::Local`].
    meta: Option<PeerMeta>,
    attrs: Arc<PathAttrs>,
    priority: Option<u32>,
}

/// A Loc-RIB destination: its paths sorted by source, and the selected one.
#[derive(Debug, Default)]
struct Dest {
    paths: Vec<Path>,
    best: Option<Best>,
    best_meta: Option<PeerMeta>,
}

/// The selected path of a destination, as export sees it.
#[derive(Debug, Clone, Copy)]
struct Selected<'a> {
    best: &'a Best,
    meta: Option<PeerMeta>,
}

impl Dest {
    fn selected(&self) -> Option<Selected<'_>> {
        self.best.as_ref().map(|best| Selected {
            best,
            meta: self.best_meta,
        })
    }
}

/// A received route (pre-policy) and what became of it.
#[derive(Debug)]
struct AdjIn {
    attrs: Arc<PathAttrs>,
    accepted: bool,
    /// Kept through a graceful restart, not yet refreshed (RFC 4724 §4.2).
    stale: bool,
}

#[derive(Debug)]
struct Peer {
    info: PeerInfo,
    /// Established; a down peer is only kept while it has stale routes.
    up: bool,
    adj_in: HashMap<IpNet, AdjIn>,
    accepted: usize,
    stale: usize,
    adj_out: HashMap<IpNet, Arc<PathAttrs>>,
}

#[derive(Debug, Clone, Copy)]
struct Params {
    local_as: u32,
    router_id: Ipv4Addr,
    cluster_id: Option<Ipv4Addr>,
}

/// Prefixes whose best path must be recomputed; `true` = re-export even if it is unchanged
/// (the source peer's session parameters changed).
type Dirty = Vec<(IpNet, bool)>;

/// The RIBs of one speaker. See the module docs.
#[derive(Debug)]
pub struct Rib {
    params: Params,
    peers: BTreeMap<PeerId, Peer>,
    loc: BTreeMap<IpNet, Dest>,
    local: BTreeMap<IpNet, Arc<PathAttrs>>,
}

impl Rib {
    /// `cluster_id: Some` makes this speaker a route reflector (RFC 4456).
    pub fn new(local_as: u32, router_id: Ipv4Addr, cluster_id: Option<Ipv4Addr>) -> Rib {
        Rib {
            params: Params {
                local_as,
                router_id,
                cluster_id,
            },
            peers: BTreeMap::new(),
            loc: BTreeMap::new(),
            local: BTreeMap::new(),
        }
    }

    /// A session reached Established. Its whole Adj-RIB-Out is returned for it, followed by
    /// End-of-RIB for each negotiated family (RFC 4724 §2). Routes kept stale from a previous
    /// session stay until replaced, [`Rib::end_of_rib`] or [`Rib::purge_stale`]; they are
    /// re-evaluated with the new session's parameters and import filter. Calling this for a
    /// peer that is already up first drops the old session's routes (as
    /// `peer_down(peer, false)`).
    pub fn peer_up(&mut self, info: PeerInfo) -> RibChanges {
        let addr = info.addr;
        let mut dirty = Dirty::new();
        if self.peers.get(&addr).is_some_and(|p| p.up) {
            self.drop_peer(addr, &mut dirty);
        }
        let peer = self.peers.entry(addr).or_insert_with(|| Peer {
            info: info.clone(),
            up: false,
            adj_in: HashMap::new(),
            accepted: 0,
            stale: 0,
            adj_out: HashMap::new(),
        });
        let changed = peer.info != info;
        peer.info = info;
        peer.up = true;
        peer.adj_out.clear();
        if changed && !peer.adj_in.is_empty() {
            self.reimport(addr, &mut dirty);
        }
        let mut out = Outbox::new(Some(addr));
        let best = self.commit(dirty, &mut out);
        self.dump(addr, &mut out);
        out.into_changes(best)
    }

    /// The session left Established. With `keep_stale` (graceful restart, RFC 4724 §4.2) its
    /// routes stay in use, marked stale; otherwise they are withdrawn.
    pub fn peer_down(&mut self, peer: PeerId, keep_stale: bool) -> RibChanges {
        let Some(p) = self.peers.get_mut(&peer) else {
            return RibChanges::default();
        };
        let mut dirty = Dirty::new();
        if keep_stale {
            p.up = false;
            p.adj_out.clear();
            for e in p.adj_in.values_mut() {
                e.stale = true;
            }
            p.stale = p.adj_in.len();
            if p.adj_in.is_empty() {
                self.peers.remove(&peer);
            }
        } else {
            self.drop_peer(peer, &mut dirty);
        }
        let mut out = Outbox::new(None);
        let best = self.commit(dirty, &mut out);
        out.into_changes(best)
    }

    /// The peer finished sending `family` (RFC 4724 §4.2): its routes of that family still
    /// stale are removed.
    pub fn end_of_rib(&mut self, peer: PeerId, family: Family) -> RibChanges {
        self.purge(peer, Some(family))
    }

    /// The restart timer expired: all the peer's stale routes are removed.
    pub fn purge_stale(&mut self, peer: PeerId) -> RibChanges {
        self.purge(peer, None)
    }

    /// An UPDATE from an Established peer (ignored otherwise). Withdrawals are applied before
    /// announcements; a withdrawal of an unknown prefix does nothing; an announcement replaces
    /// the peer's previous route for the prefix (RFC 4271 §9.1.4 implicit withdraw) and
    /// refreshes a stale one. Received routes are kept (Adj-RIB-In) whether or not import
    /// accepts them. End-of-RIB markers are applied too, after the routes (so a later
    /// [`Rib::end_of_rib`] for the same family is a no-op).
    pub fn update(&mut self, peer: PeerId, update: Update) -> RibChanges {
        let Rib {
            params, peers, loc, ..
        } = self;
        let Some(p) = peers.get_mut(&peer).filter(|p| p.up) else {
            return RibChanges::default();
        };
        let mut dirty = Dirty::new();
        for prefix in update.withdrawn {
            let prefix = prefix.trunc();
            if let Some(old) = p.adj_in.remove(&prefix) {
                p.forget(&old);
                if old.accepted {
                    loc_remove(loc, prefix, Source::Peer(peer));
                    dirty.push((prefix, false));
                }
            }
        }
        let mut memo = ImportMemo::default();
        let meta = PeerMeta::of(&p.info);
        for (prefix, attrs) in update.announced {
            let prefix = prefix.trunc();
            let result = import_route(params, &p.info, prefix, &attrs, &mut memo);
            let accepted = result.is_some();
            let entry = AdjIn {
                attrs,
                accepted,
                stale: false,
            };
            let was_accepted = match p.adj_in.insert(prefix, entry) {
                Some(old) => {
                    p.forget(&old);
                    old.accepted
                }
                None => false,
            };
            p.accepted += usize::from(accepted);
            if let Some((attrs, priority)) = result {
                let source = Source::Peer(peer);
                let path = Path {
                    source,
                    meta: Some(meta),
                    attrs,
                    priority,
                };
                loc_set(loc, prefix, path);
            } else if was_accepted {
                loc_remove(loc, prefix, Source::Peer(peer));
            } else {
                continue;
            }
            dirty.push((prefix, false));
        }
        for family in update.end_of_rib {
            purge_peer(loc, peer, p, Some(family), &mut dirty);
        }
        let mut out = Outbox::new(None);
        let best = self.commit(dirty, &mut out);
        out.into_changes(best)
    }

    /// The complete set of locally originated routes, diffed against the previous set. The
    /// attributes are used as given (empty AS_PATH and ORIGIN IGP for a plain origination;
    /// LOCAL_PREF, MED and communities are kept); the next hop is replaced per
    /// [`NextHopMode`] on export.
    pub fn set_local(&mut self, routes: BTreeMap<IpNet, Arc<PathAttrs>>) -> RibChanges {
        let routes: BTreeMap<IpNet, Arc<PathAttrs>> = if routes.keys().all(|p| *p == p.trunc()) {
            routes
        } else {
            routes.into_iter().map(|(p, a)| (p.trunc(), a)).collect()
        };
        let mut dirty = Dirty::new();
        for prefix in self.local.keys() {
            if !routes.contains_key(prefix) {
                loc_remove(&mut self.loc, *prefix, Source::Local);
                dirty.push((*prefix, false));
            }
        }
        for (prefix, attrs) in &routes {
            if self.local.get(prefix).is_some_and(|old| old == attrs) {
                continue;
            }
            let path = Path {
                source: Source::Local,
                meta: None,
                attrs: attrs.clone(),
                priority: None,
            };
            loc_set(&mut self.loc, *prefix, path);
            dirty.push((*prefix, false));
        }
        self.local = routes;
        let mut out = Outbox::new(None);
        let best = self.commit(dirty, &mut out);
        out.into_changes(best)
    }

    /// Everything currently advertised to the peer (for a route refresh, RFC 2918), in
    /// prefix order grouped by attributes; no End-of-RIB.
    pub fn adj_rib_out(&self, peer: PeerId) -> Update {
        let mut announced: Vec<(IpNet, Arc<PathAttrs>)> = self
            .peers
            .get(&peer)
            .map(|p| p.adj_out.iter().map(|(k, v)| (*k, v.clone())).collect())
            .unwrap_or_default();
        announced.sort_unstable_by_key(|(p, _)| *p);
        group_by_value(&mut announced);
        Update {
            announced,
            ..Update::default()
        }
    }

    /// Everything received from the peer and kept (pre-policy), in prefix order.
    pub fn adj_rib_in(&self, peer: PeerId) -> Update {
        let mut announced: Vec<(IpNet, Arc<PathAttrs>)> = self
            .peers
            .get(&peer)
            .map(|p| {
                let routes = p.adj_in.iter();
                routes.map(|(k, v)| (*k, v.attrs.clone())).collect()
            })
            .unwrap_or_default();
        announced.sort_unstable_by_key(|(p, _)| *p);
        Update {
            announced,
            ..Update::default()
        }
    }

    /// The Loc-RIB in prefix order.
    pub fn best(&self) -> impl Iterator<Item = (&IpNet, &Best)> {
        self.loc
            .iter()
            .filter_map(|(p, d)| d.best.as_ref().map(|b| (p, b)))
    }

    /// Routes received from the peer (including rejected and stale ones).
    pub fn received(&self, peer: PeerId) -> usize {
        self.peers.get(&peer).map_or(0, |p| p.adj_in.len())
    }

    /// Received routes the import policy accepted.
    pub fn accepted(&self, peer: PeerId) -> usize {
        self.peers.get(&peer).map_or(0, |p| p.accepted)
    }

    /// Routes in the peer's Adj-RIB-Out.
    pub fn advertised(&self, peer: PeerId) -> usize {
        self.peers.get(&peer).map_or(0, |p| p.adj_out.len())
    }

    /// Routes of the peer kept stale through a graceful restart.
    pub fn stale(&self, peer: PeerId) -> usize {
        self.peers.get(&peer).map_or(0, |p| p.stale)
    }

    /// Removes all of the peer's routes and forgets it.
    fn drop_peer(&mut self, addr: PeerId, dirty: &mut Dirty) {
        let Some(p) = self.peers.remove(&addr) else {
            return;
        };
        for (prefix, e) in p.adj_in {
            if e.accepted {
                loc_remove(&mut self.loc, prefix, Source::Peer(addr));
                dirty.push((prefix, false));
            }
        }
    }

    /// Re-runs import over the peer's kept routes with its current session parameters.
    fn reimport(&mut self, addr: PeerId, dirty: &mut Dirty) {
        let Rib {
            params, peers, loc, ..
        } = self;
        let Some(p) = peers.get_mut(&addr) else {
            return;
        };
        let mut memo = ImportMemo::default();
        let meta = PeerMeta::of(&p.info);
        let mut accepted = 0;
        for (prefix, e) in &mut p.adj_in {
            match import_route(params, &p.info, *prefix, &e.attrs, &mut memo) {
                Some((attrs, priority)) => {
                    let source = Source::Peer(addr);
                    let path = Path {
                        source,
                        meta: Some(meta),
                        attrs,
                        priority,
                    };
                    loc_set(loc, *prefix, path);
                    e.accepted = true;
                    accepted += 1;
                }
                None if e.accepted => {
                    loc_remove(loc, *prefix, Source::Peer(addr));
                    e.accepted = false;
                }
                None => continue,
            }
            dirty.push((*prefix, true));
        }
        p.accepted = accepted;
    }

    fn purge(&mut self, addr: PeerId, family: Option<Family>) -> RibChanges {
        let Some(p) = self.peers.get_mut(&addr) else {
            return RibChanges::default();
        };
        let mut dirty = Dirty::new();
        purge_peer(&mut self.loc, addr, p, family, &mut dirty);
        if !p.up && p.adj_in.is_empty() {
            self.peers.remove(&addr);
        }
        let mut out = Outbox::new(None);
        let best = self.commit(dirty, &mut out);
        out.into_changes(best)
    }

    /// Runs the decision process for the dirty prefixes and exports the changed ones to every
    /// up peer except `out.skip`. Returns the Loc-RIB changes.
    fn commit(&mut self, mut dirty: Dirty, out: &mut Outbox) -> Vec<(IpNet, Option<Best>)> {
        dirty.sort_unstable_by_key(|(p, _)| *p);
        dirty.dedup_by(|later, first| {
            let same = later.0 == first.0;
            if same {
                first.1 |= later.1;
            }
            same
        });
        let mut changes = Vec::new();
        for (prefix, force) in dirty {
            let Some(d) = self.loc.get_mut(&prefix) else {
                continue;
            };
            let idx = select(&d.paths, &self.params);
            let new = idx.map(|i| best_of(&d.paths[i]));
            d.best_meta = idx.and_then(|i| d.paths[i].meta);
            let changed = new != d.best;
            if changed {
                d.best.clone_from(&new);
                changes.push((prefix, new));
            }
            if changed || force {
                for (addr, peer) in &mut self.peers {
                    if !peer.up || out.skip == Some(*addr) {
                        continue;
                    }
                    let sel = d.selected();
                    let exported = export_route(&self.params, &peer.info, prefix, sel, out);
                    out.diff(*addr, &mut peer.adj_out, prefix, exported);
                }
            }
            if d.paths.is_empty() {
                self.loc.remove(&prefix);
            }
        }
        changes
    }

    /// The peer's whole Adj-RIB-Out after it came up, then End-of-RIB per family.
    fn dump(&mut self, addr: PeerId, out: &mut Outbox) {
        let Some(peer) = self.peers.get_mut(&addr) else {
            return;
        };
        for (prefix, d) in &self.loc {
            let exported = export_route(&self.params, &peer.info, *prefix, d.selected(), out);
            out.diff(addr, &mut peer.adj_out, *prefix, exported);
        }
        let mut families = peer.info.families.clone();
        families.sort_unstable();
        families.dedup();
        out.update(addr).end_of_rib = families;
    }
}

impl Peer {
    /// Bookkeeping for an Adj-RIB-In entry that is being removed or replaced.
    fn forget(&mut self, old: &AdjIn) {
        self.accepted -= usize::from(old.accepted);
        self.stale -= usize::from(old.stale);
    }
}

/// Removes the peer's stale routes (of `family`, or all).
fn purge_peer(
    loc: &mut BTreeMap<IpNet, Dest>,
    addr: PeerId,
    p: &mut Peer,
    family: Option<Family>,
    dirty: &mut Dirty,
) {
    if p.stale == 0 {
        return;
    }
    let (mut accepted, mut stale) = (p.accepted, p.stale);
    p.adj_in.retain(|prefix, e| {
        if !e.stale || family.is_some_and(|f| f != Family::of(prefix)) {
            return true;
        }
        stale -= 1;
        if e.accepted {
            accepted -= 1;
            loc_remove(loc, *prefix, Source::Peer(addr));
            dirty.push((*prefix, false));
        }
        false
    });
    (p.accepted, p.stale) = (accepted, stale);
}

fn loc_set(loc: &mut BTreeMap<IpNet, Dest>, prefix: IpNet, path: Path) {
    let d = loc.entry(prefix).or_default();
    match d.paths.binary_search_by_key(&path.source, |p| p.source) {
        Ok(i) => d.paths[i] = path,
        Err(i) => {
            // Most destinations have one path; a plain `insert` into an empty Vec allocates
            // room for four (~120 wasted bytes per prefix on a full table).
            d.paths.reserve_exact(1);
            d.paths.insert(i, path);
        }
    }
}

/// Removes a path; the destination itself goes in [`Rib::commit`] (the prefix must be dirty).
fn loc_remove(loc: &mut BTreeMap<IpNet, Dest>, prefix: IpNet, source: Source) {
    if let Some(d) = loc.get_mut(&prefix)
        && let Ok(i) = d.paths.binary_search_by_key(&source, |p| p.source)
    {
        d.paths.remove(i);
    }
}

fn best_of(p: &Path) -> Best {
    Best {
        attrs: p.attrs.clone(),
        source: p.source,
        priority: p.priority,
    }
}

/// The decision process (RFC 4271 §9.1.1, §9.1.2.2, RFC 4456 §9), as a sequence of
/// eliminations over the whole candidate set, so the result does not depend on the order in
/// which paths arrived:
/// 1. highest degree of preference: LOCAL_PREF (100 when absent; eBGP-learned routes carry
///    none, RFC 4271 §5.1.5);
/// 2. locally originated over learned;
/// 3. a) shortest AS_PATH (a SET counts one);
/// 4. b) lowest ORIGIN;
/// 5. c) lowest MED (absent = 0) among routes from the same neighbouring AS — the first AS of
///    the path, or our own AS for an empty path;
/// 6. d) eBGP-learned over iBGP-learned (step e, IGP cost, does not apply: next hops are
///    directly connected or resolved by the kernel);
/// 7. f) lowest BGP Identifier of the advertising peer, or ORIGINATOR_ID when present;
/// 8. RFC 4456: shortest CLUSTER_LIST;
/// 9. g) lowest peer address.
fn select(paths: &[Path], params: &Params) -> Option<usize> {
    match paths.len() {
        0 => return None,
        1 => return Some(0),
        _ => {}
    }
    let mut c: Vec<usize> = (0..paths.len()).collect();
    let attrs = |i: usize| &paths[i].attrs;
    keep_min(&mut c, |i| {
        Reverse(attrs(i).local_pref.unwrap_or(DEFAULT_LOCAL_PREF))
    });
    keep_min(&mut c, |i| paths[i].meta.is_some());
    keep_min(&mut c, |i| attrs(i).as_path_len());
    keep_min(&mut c, |i| attrs(i).origin);
    med_eliminate(&mut c, paths, params.local_as);
    keep_min(&mut c, |i| paths[i].meta.is_some_and(|m| m.ibgp));
    keep_min(&mut c, |i| match paths[i].meta {
        None => params.router_id,
        Some(m) => attrs(i).originator_id.unwrap_or(m.remote_id),
    });
    keep_min(&mut c, |i| attrs(i).cluster_list.len());
    keep_min(&mut c, |i| paths[i].source);
    c.first().copied()
}

/// Keeps the candidates with the smallest key.
fn keep_min<K: Ord>(c: &mut Vec<usize>, key: impl Fn(usize) -> K) {
    if c.len() < 2 {
        return;
    }
    let Some(min) = c.iter().map(|&i| key(i)).min() else {
        return;
    };
    c.retain(|&i| key(i) == min);
}

/// RFC 4271 §9.1.2.2 c): drops every route for which another candidate from the same
/// neighbouring AS has a lower MED.
fn med_eliminate(c: &mut Vec<usize>, paths: &[Path], local_as: u32) {
    if c.len() < 2 {
        return;
    }
    let neighbor = |i: usize| {
        let a = &paths[i].attrs;
        if a.as_path.is_empty() {
            Some(local_as)
        } else {
            a.neighbor_as()
        }
    };
    let med = |i: usize| paths[i].attrs.med.unwrap_or(0);
    let keep: Vec<usize> = c
        .iter()
        .copied()
        .filter(|&i| {
            let n = neighbor(i);
            n.is_none() || !c.iter().any(|&j| neighbor(j) == n && med(j) < med(i))
        })
        .collect();
    *c = keep;
}

/// Memoises per-`Arc` work within one call. The key `Arc` is kept alive so its address cannot
/// be reused by another attribute set during the call.
#[derive(Debug)]
struct Memo<K, V> {
    map: HashMap<(usize, K), (Arc<PathAttrs>, V)>,
}

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Memo {
            map: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash, V: Clone> Memo<K, V> {
    fn get(&mut self, attrs: &Arc<PathAttrs>, key: K, compute: impl FnOnce() -> V) -> V {
        let k = (Arc::as_ptr(attrs).addr(), key);
        if let Some((_, v)) = self.map.get(&k) {
            return v.clone();
        }
        let v = compute();
        self.map.insert(k, (attrs.clone(), v.clone()));
        v
    }
}

#[derive(Debug, Default)]
struct ImportMemo {
    checked: Memo<(), Option<Arc<PathAttrs>>>,
    filtered: Memo<usize, (Arc<PathAttrs>, Option<u32>)>,
}

/// Import of one received route: loop checks, attribute clean-up, then the import filter.
/// `None` = not accepted.
fn import_route(
    params: &Params,
    info: &PeerInfo,
    prefix: IpNet,
    attrs: &Arc<PathAttrs>,
    memo: &mut ImportMemo,
) -> Option<(Arc<PathAttrs>, Option<u32>)> {
    if !info.families.contains(&Family::of(&prefix)) {
        return None;
    }
    let clean = memo
        .checked
        .get(attrs, (), || check_received(params, info, attrs))?;
    if info.import.is_empty() {
        return Some((clean, None));
    }
    let input = FilterInput {
        prefix,
        attrs: &clean,
        priority: None,
        from_peer: true,
        ebgp_session: !info.is_ibgp(),
    };
    match info.import.evaluate(&input) {
        Verdict::Reject => None,
        Verdict::Accept(None) => Some((clean, None)),
        Verdict::Accept(Some(rule)) => Some(
            memo.filtered
                .get(&clean, rule, || info.import.apply(Some(rule), &clean, None)),
        ),
    }
}

/// Loop detection and clean-up of a received attribute set; `None` = drop the route.
fn check_received(
    params: &Params,
    info: &PeerInfo,
    attrs: &Arc<PathAttrs>,
) -> Option<Arc<PathAttrs>> {
    let ebgp = !info.is_ibgp();
    // RFC 4271 §9.1.2: our AS in the path is a loop. Both the session's AS and the speaker's
    // global AS count (they differ with BGPPeer localASNumber).
    if ebgp && (attrs.contains_as(info.local_as) || attrs.contains_as(params.local_as)) {
        return None;
    }
    // RFC 4456 §8: our own route reflected back, or a loop between clusters.
    if attrs.originator_id == Some(params.router_id) {
        return None;
    }
    if params
        .cluster_id
        .is_some_and(|c| attrs.cluster_list.contains(&c))
    {
        return None;
    }
    // RFC 4271 §5.1.5: LOCAL_PREF from an external peer is ignored.
    if ebgp && attrs.local_pref.is_some() {
        let mut a = PathAttrs::clone(attrs);
        a.local_pref = None;
        return Some(Arc::new(a));
    }
    Some(attrs.clone())
}

/// The attributes to advertise to `t` for `prefix` given its selected path, or `None` when
/// the route is not advertised to that peer. Rules, in order:
/// * only negotiated families;
/// * never back to the peer it came from;
/// * iBGP-learned routes go to iBGP peers only through reflection (RFC 4271 §9.2, RFC 4456
///   §6): from a client to every other peer, from a non-client to clients only;
/// * not to an eBGP peer whose AS is already in the AS_PATH (it would drop it as a loop);
/// * the peer's export filter, on the route as it is in the Loc-RIB (as BIRD runs export
///   filters before its own attribute updates); then [`export_attrs`].
fn export_route(
    params: &Params,
    t: &PeerInfo,
    prefix: IpNet,
    sel: Option<Selected<'_>>,
    out: &mut Outbox,
) -> Option<Arc<PathAttrs>> {
    let sel = sel?;
    let family = Family::of(&prefix);
    if !t.families.contains(&family) {
        return None;
    }
    let reflect = match (sel.best.source, sel.meta) {
        (Source::Peer(from), _) if from == t.addr => return None,
        (Source::Peer(_), Some(m)) if m.ibgp && t.is_ibgp() => {
            if params.cluster_id.is_none() || (!m.rr_client && !t.rr_client) {
                return None;
            }
            true
        }
        _ => false,
    };
    let attrs = &sel.best.attrs;
    if !t.is_ibgp() && attrs.contains_as(t.remote_as) {
        return None;
    }
    let rule = if t.export.is_empty() {
        None
    } else {
        let input = FilterInput {
            prefix,
            attrs,
            priority: sel.best.priority,
            from_peer: matches!(sel.best.source, Source::Peer(_)),
            ebgp_session: !t.is_ibgp(),
        };
        match t.export.evaluate(&input) {
            Verdict::Reject => return None,
            Verdict::Accept(rule) => rule,
        }
    };
    let key = (t.addr, sel.best.source, rule, family);
    let Outbox { memo, interned, .. } = out;
    memo.get(attrs, key, || {
        let (filtered, _) = t.export.apply(rule, attrs, None);
        let a = export_attrs(params, t, family, sel.meta, reflect, &filtered)?;
        Some(intern(interned, a))
    })
}

/// The protocol's attribute changes on export (RFC 4271 §5.1, RFC 4456 §8).
/// To eBGP: our AS prepended (RFC 4271 §5.1.2), LOCAL_PREF, ORIGINATOR_ID and CLUSTER_LIST
/// removed, MED removed unless locally originated (§5.1.4), next hop self unless `Keep`.
/// To iBGP: LOCAL_PREF set (100 when absent), next hop unchanged unless `SelfHop` or
/// locally originated; when reflecting, ORIGINATOR_ID set to the source peer's identifier if
/// absent and our cluster id prepended to CLUSTER_LIST. Next hop self needs our address of the
/// prefix's family; without it the route is not advertised (`None`).
fn export_attrs(
    params: &Params,
    t: &PeerInfo,
    family: Family,
    from: Option<PeerMeta>,
    reflect: bool,
    attrs: &Arc<PathAttrs>,
) -> Option<Arc<PathAttrs>> {
    let local = from.is_none();
    let keep_local = local && !attrs.next_hop.is_unspecified();
    let mut a = PathAttrs::clone(attrs);
    let self_hop = if t.is_ibgp() {
        a.local_pref = Some(a.local_pref.unwrap_or(DEFAULT_LOCAL_PREF));
        if reflect {
            if a.originator_id.is_none() {
                a.originator_id = from.map(|m| m.remote_id);
            }
            if let Some(c) = params.cluster_id {
                a.cluster_list.insert(0, c);
            }
        }
        match t.next_hop {
            NextHopMode::SelfHop => true,
            NextHopMode::Keep => local && !keep_local,
            NextHopMode::Auto => local,
        }
    } else {
        prepend_as_path(&mut a, &[t.local_as]);
        a.local_pref = None;
        a.originator_id = None;
        a.cluster_list.clear();
        if !local {
            a.med = None;
        }
        t.next_hop != NextHopMode::Keep || (local && !keep_local)
    };
    if self_hop {
        a.next_hop = match family {
            Family::Ipv4Unicast => IpAddr::V4(t.local_addr_v4?),
            Family::Ipv6Unicast => IpAddr::V6(t.local_addr_v6?),
        };
    }
    Some(if a == **attrs {
        attrs.clone()
    } else {
        Arc::new(a)
    })
}

/// One shared `Arc` per distinct attribute set within a call.
fn intern(set: &mut HashSet<Arc<PathAttrs>>, a: Arc<PathAttrs>) -> Arc<PathAttrs> {
    if let Some(e) = set.get(&*a) {
        return e.clone();
    }
    set.insert(a.clone());
    a
}

/// Orders announcements so that those with equal attributes are adjacent (groups in the
/// order of their first prefix, prefixes in order within a group), sharing one `Arc`.
fn group_by_value(announced: &mut [(IpNet, Arc<PathAttrs>)]) {
    let mut first: HashMap<Arc<PathAttrs>, usize> = HashMap::new();
    for (i, (_, a)) in announced.iter_mut().enumerate() {
        match first.get_key_value(&**a) {
            Some((shared, _)) => *a = shared.clone(),
            None => {
                first.insert(a.clone(), i);
            }
        }
    }
    announced.sort_by_key(|(_, a)| first.get(&**a).copied());
}

/// [`group_by_value`] for announcements whose equal attributes already share one `Arc`
/// (everything exported within one call is interned). Runs of one `Arc` skip the lookup.
fn group_by_arc(announced: &mut [(IpNet, Arc<PathAttrs>)]) {
    let mut first: HashMap<usize, usize> = HashMap::new();
    let mut groups = Vec::with_capacity(announced.len());
    let mut prev: Option<(usize, usize)> = None;
    for (i, (_, a)) in announced.iter().enumerate() {
        let ptr = Arc::as_ptr(a).addr();
        let group = match prev {
            Some((p, g)) if p == ptr => g,
            _ => *first.entry(ptr).or_insert(i),
        };
        prev = Some((ptr, group));
        groups.push(group);
    }
    if first.len() < 2 {
        return;
    }
    let mut keyed: Vec<(usize, (IpNet, Arc<PathAttrs>))> =
        groups.into_iter().zip(announced.iter().cloned()).collect();
    keyed.sort_by_key(|(g, _)| *g);
    for (slot, (_, entry)) in announced.iter_mut().zip(keyed) {
        *slot = entry;
    }
}

/// What an exported attribute set depends on besides the input attributes: the target peer,
/// the source (local, or which peer: its session parameters), the export rule that accepted
/// it and the family (which self address).
type ExportKey = (PeerId, Source, Option<usize>, Family);

/// The UPDATEs being built by one call.
#[derive(Debug)]
struct Outbox {
    /// The peer that just came up: it gets its full table from [`Rib::dump`] instead.
    skip: Option<PeerId>,
    updates: HashMap<PeerId, Update>,
    memo: Memo<ExportKey, Option<Arc<PathAttrs>>>,
    interned: HashSet<Arc<PathAttrs>>,
}

impl Outbox {
    fn new(skip: Option<PeerId>) -> Outbox {
        Outbox {
            skip,
            updates: HashMap::new(),
            memo: Memo::default(),
            interned: HashSet::new(),
        }
    }

    fn update(&mut self, peer: PeerId) -> &mut Update {
        self.updates.entry(peer).or_default()
    }

    /// Brings one Adj-RIB-Out entry to `new`, recording the UPDATE if anything changes.
    fn diff(
        &mut self,
        peer: PeerId,
        adj_out: &mut HashMap<IpNet, Arc<PathAttrs>>,
        prefix: IpNet,
        new: Option<Arc<PathAttrs>>,
    ) {
        match new {
            Some(a) => {
                match adj_out.entry(prefix) {
                    Entry::Occupied(mut o) => {
                        if *o.get() == a {
                            return;
                        }
                        o.insert(a.clone());
                    }
                    Entry::Vacant(v) => {
                        v.insert(a.clone());
                    }
                }
                self.update(peer).announced.push((prefix, a));
            }
            None => {
                if adj_out.remove(&prefix).is_some() {
                    self.update(peer).withdrawn.push(prefix);
                }
            }
        }
    }

    fn into_changes(self, best: Vec<(IpNet, Option<Best>)>) -> RibChanges {
        let mut to_peers: Vec<(PeerId, Update)> = self
            .updates
            .into_iter()
            .filter(|(_, u)| !u.is_empty())
            .map(|(peer, mut u)| {
                u.announced.sort_by_key(|(p, _)| *p);
                group_by_arc(&mut u.announced);
                u.withdrawn.sort_unstable();
                (peer, u)
            })
            .collect();
        to_peers.sort_unstable_by_key(|(peer, _)| *peer);
        RibChanges { to_peers, best }
    }
}

#[cfg(test)]
#[path = "rib_tests.rs"]
mod tests;
