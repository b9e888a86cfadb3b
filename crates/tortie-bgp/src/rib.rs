//! The routing core: the decision process over each destination's paths (the Loc-RIB), what
//! each peer sent, and what each peer is sent (RFC 4271 §3.2, §9), with route reflection
//! (RFC 4456) and graceful restart (RFC 4724).
//!
//! Sans-IO: every input is a method call, every effect is returned in [`RibChanges`] — the
//! UPDATEs to send to each peer and the Loc-RIB changes for the kernel. No clock, no socket.
//!
//! Invariants, after every call:
//! * each destination's best path is the one [`Rib`]'s decision process picks from its current
//!   paths (one per source: the local origination and each peer's accepted route);
//! * each up peer has been sent exactly the export of the current best path of every prefix
//!   of a negotiated family: the UPDATEs returned so far, applied in order to an empty table,
//!   give that table ([`Rib::adj_rib_out`]);
//! * nothing is returned for a change that changes nothing.
//!
//! Storage (sized for a full table: the whole RIB is ~60 B per prefix plus the shared
//! attribute sets):
//! * The Loc-RIB is the only per-prefix table ([`LocRib`]): one [`Dest`] per prefix, holding
//!   its paths (one [`Path`] inline for the common single path) and which one is best.
//! * There is no separate Adj-RIB-In: a peer's accepted routes *are* its paths in the Loc-RIB.
//!   What the Loc-RIB cannot answer is kept per peer in [`Peer::held`]: routes import rejected
//!   (still counted as received, and re-evaluated if a restarted session changes the import),
//!   and the received attributes of routes import changed (to re-run import on them).
//! * There is no Adj-RIB-Out either: what a peer was last sent for a prefix is the export of
//!   the prefix's previous best path, and export is a pure function of that path, the peer's
//!   session (fixed while it is up) and the speaker's parameters. So a change recomputes the
//!   old export from the best path captured before the change ([`Touched::old`]) and sends the
//!   difference, as BIRD does without an export table; a route refresh re-exports the whole
//!   Loc-RIB ([`Rib::adj_rib_out`]). The per-peer counts are kept as counters.
//!
//! Cost: a change to one prefix costs O(paths of that prefix + peers); attributes are shared
//! through `Arc`s, and exported attributes are computed once per distinct input `Arc`, target
//! peer and filter rule within a call, so a 100k-prefix UPDATE sharing one attribute set
//! allocates a handful of attribute sets, not 100k. Peer-wide events (a session going down,
//! an End-of-RIB sweep of stale routes, a restarted session with new parameters) walk the
//! whole Loc-RIB once.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use hashbrown::HashTable;
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

/// A path's source: [`LOCAL`] or the slot of a peer in [`Peers`]. A slot is only reused in
/// a later call than the one that freed it, after every path of the old peer is gone.
type SourceId = u32;

/// The [`SourceId`] of locally originated paths.
const LOCAL: SourceId = 0;

// `Path::flags` bits.
/// The source session is iBGP.
const F_IBGP: u8 = 1;
/// The source is a route-reflector client.
const F_RR_CLIENT: u8 = 2;
/// `Path::priority` is set.
const F_PRIORITY: u8 = 4;
/// Kept through a graceful restart, not yet refreshed (RFC 4724 §4.2).
const F_STALE: u8 = 8;
/// Import changed the attributes: the received ones are in the source's [`Peer::held`].
const F_HELD: u8 = 16;
/// The flags export depends on.
const EXPORT_FLAGS: u8 = F_IBGP | F_RR_CLIENT | F_PRIORITY;

/// One candidate path for a prefix (post import policy). 24 bytes: what the source peer's
/// session said about it ([`PeerMeta`]) is copied in, so that the export of a path that was
/// replaced can still be computed after its session changed.
#[derive(Debug, Clone)]
struct Path {
    attrs: Arc<PathAttrs>,
    source: SourceId,
    /// Set by an import filter `setPriority` (with [`F_PRIORITY`]).
    priority: u32,
    /// The source peer's BGP Identifier (unused for [`LOCAL`]).
    remote_id: Ipv4Addr,
    flags: u8,
}

impl Path {
    fn local(attrs: Arc<PathAttrs>) -> Path {
        Path {
            attrs,
            source: LOCAL,
            priority: 0,
            remote_id: Ipv4Addr::UNSPECIFIED,
            flags: 0,
        }
    }

    fn learned(
        source: SourceId,
        meta: PeerMeta,
        attrs: Arc<PathAttrs>,
        priority: Option<u32>,
    ) -> Path {
        let mut flags = 0;
        if meta.ibgp {
            flags |= F_IBGP;
        }
        if meta.rr_client {
            flags |= F_RR_CLIENT;
        }
        if priority.is_some() {
            flags |= F_PRIORITY;
        }
        Path {
            attrs,
            source,
            priority: priority.unwrap_or(0),
            remote_id: meta.remote_id,
            flags,
        }
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    /// `None` for a locally originated path.
    fn meta(&self) -> Option<PeerMeta> {
        (self.source != LOCAL).then(|| PeerMeta {
            ibgp: self.has(F_IBGP),
            rr_client: self.has(F_RR_CLIENT),
            remote_id: self.remote_id,
        })
    }

    fn priority(&self) -> Option<u32> {
        self.has(F_PRIORITY).then_some(self.priority)
    }

    /// Whether the two are the same route as far as [`Best`] tells (attributes, source,
    /// priority).
    fn same_route(&self, other: &Path) -> bool {
        self.source == other.source
            && self.priority() == other.priority()
            && self.attrs == other.attrs
    }
}

/// A destination's paths. Nearly every prefix has a single path, kept inline (a `Dest` is 48
/// bytes); a destination never has none (it is removed with its last path).
#[derive(Debug)]
enum Paths {
    One(Path),
    Many(Box<Many>),
}

/// Two or more paths, one per source, and the index of the best one.
#[derive(Debug)]
struct Many {
    paths: Vec<Path>,
    best: usize,
}

impl Paths {
    fn as_slice(&self) -> &[Path] {
        match self {
            Paths::One(p) => std::slice::from_ref(p),
            Paths::Many(m) => &m.paths,
        }
    }

    fn best(&self) -> &Path {
        match self {
            Paths::One(p) => p,
            Paths::Many(m) => &m.paths[m.best],
        }
    }

    /// The path from `source`, if any.
    fn get_mut(&mut self, source: SourceId) -> Option<&mut Path> {
        match self {
            Paths::One(p) => (p.source == source).then_some(p),
            Paths::Many(m) => m.paths.iter_mut().find(|p| p.source == source),
        }
    }

    /// Adds the path or replaces the one from the same source (returned). The best path is
    /// left for [`Rib::commit`] to choose again.
    fn set(&mut self, path: Path) -> Option<Path> {
        match self {
            Paths::One(p) if p.source == path.source => Some(std::mem::replace(p, path)),
            Paths::One(p) => {
                let first = p.clone();
                *self = Paths::Many(Box::new(Many {
                    paths: vec![first, path],
                    best: 0,
                }));
                None
            }
            Paths::Many(m) => match m.paths.iter_mut().find(|p| p.source == path.source) {
                Some(p) => Some(std::mem::replace(p, path)),
                None => {
                    m.paths.push(path);
                    None
                }
            },
        }
    }

    /// Removes the path from `source` of a destination with several paths (a single path
    /// goes with its destination, [`LocRib::remove_path`]).
    fn remove_of_many(&mut self, source: SourceId) -> Option<Path> {
        let Paths::Many(m) = self else {
            return None;
        };
        let i = m.paths.iter().position(|p| p.source == source)?;
        let removed = m.paths.remove(i);
        m.best = 0;
        if m.paths.len() == 1
            && let Some(last) = m.paths.pop()
        {
            *self = Paths::One(last);
        }
        Some(removed)
    }

    /// Runs the decision process and records its choice.
    fn select(&mut self, params: &Params, addr_of: &impl Fn(SourceId) -> Source) {
        if let Paths::Many(m) = self {
            m.best = select(&m.paths, params, addr_of);
        }
    }
}

/// A Loc-RIB destination.
#[derive(Debug)]
struct Dest {
    prefix: IpNet,
    paths: Paths,
}

/// Destinations per chunk of [`LocRib`] storage (192 KiB).
const CHUNK: usize = 4096;

/// The Loc-RIB: destinations stored densely in fixed-size chunks, found through a hash table
/// of their positions (4 bytes per bucket, ~5–10 bytes per destination). Compared with a map
/// holding the destinations themselves (half empty after it doubles, or a B-tree half full
/// after ascending inserts), no memory goes unused but the index's, and growing never copies
/// the destinations (a plain `Vec` would, holding both copies for a moment). Removing one
/// moves the last destination into its place. Nothing needs the prefixes in order except the
/// few whole-table reports, which sort.
#[derive(Debug)]
struct LocRib {
    index: HashTable<u32>,
    chunks: Vec<Vec<Dest>>,
    len: usize,
    hasher: foldhash::fast::RandomState,
}

impl LocRib {
    fn new() -> LocRib {
        LocRib {
            index: HashTable::new(),
            chunks: Vec::new(),
            len: 0,
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    fn hash(hasher: &foldhash::fast::RandomState, prefix: &IpNet) -> u64 {
        hasher.hash_one(prefix)
    }

    fn at(chunks: &[Vec<Dest>], i: u32) -> &Dest {
        let i = i as usize;
        &chunks[i / CHUNK][i % CHUNK]
    }

    fn at_mut(&mut self, i: usize) -> &mut Dest {
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }

    fn position(i: usize) -> u32 {
        u32::try_from(i).expect("fewer than 2^32 destinations")
    }

    fn find(&self, prefix: &IpNet) -> Option<usize> {
        let h = Self::hash(&self.hasher, prefix);
        let chunks = &self.chunks;
        let i = self
            .index
            .find(h, |&i| Self::at(chunks, i).prefix == *prefix)?;
        Some(*i as usize)
    }

    fn get_mut(&mut self, prefix: &IpNet) -> Option<&mut Dest> {
        self.find(prefix).map(|i| self.at_mut(i))
    }

    /// [`LocRib::get_mut`], first trying position `pos`.
    fn get_hinted(&mut self, prefix: &IpNet, pos: u32) -> Option<&mut Dest> {
        let i = pos as usize;
        if i < self.len && self.at_mut(i).prefix == *prefix {
            return Some(self.at_mut(i));
        }
        self.get_mut(prefix)
    }

    fn iter(&self) -> impl Iterator<Item = &Dest> {
        self.chunks.iter().flatten()
    }

    /// Appends a destination to the storage (its index entry is the caller's business).
    fn push_raw(&mut self, dest: Dest) {
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(c) = self.chunks.last_mut() {
            c.push(dest);
        }
        self.len += 1;
    }

    /// Rebuilds the index from the storage, with room for `capacity` destinations. Done
    /// here rather than by the hash table's own growth, which would re-hash the prefixes in
    /// bucket order: a random walk over the whole storage, one cache miss per destination.
    fn rebuild_index(&mut self, capacity: usize) {
        // The old table goes first, so that the two never exist at once.
        self.index = HashTable::new();
        self.index = HashTable::with_capacity(capacity.max(self.len));
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        let rehash = |&j: &u32| Self::hash(hasher, &Self::at(chunks, j).prefix);
        for (i, d) in chunks.iter().flatten().enumerate() {
            let h = Self::hash(hasher, &d.prefix);
            self.index.insert_unique(h, Self::position(i), rehash);
        }
    }

    /// Makes room in a full index: twice the buckets, or as many if removals left at least
    /// half of its capacity as tombstones (what the hash table's own growth does).
    fn grow_index(&mut self) {
        let buckets = self.index.num_buckets();
        let full = if buckets < 8 {
            buckets.saturating_sub(1)
        } else {
            buckets / 8 * 7
        };
        let capacity = if self.len < full / 2 { full } else { full + 1 };
        self.rebuild_index(capacity.max(16));
    }

    /// Removes the destination at `i`; the last one takes its place.
    fn swap_remove(&mut self, i: usize) -> Dest {
        let last = self.len - 1;
        let prefix = self.at_mut(i).prefix;
        let h = Self::hash(&self.hasher, &prefix);
        if let Ok(e) = self.index.find_entry(h, |&j| j as usize == i) {
            e.remove();
        }
        let Some(mut tail) = self.chunks.last_mut().and_then(Vec::pop) else {
            unreachable!("a destination at {i} of {}", self.len);
        };
        if self.chunks.last().is_some_and(Vec::is_empty) {
            self.chunks.pop();
        }
        self.len = last;
        if i == last {
            return tail;
        }
        let h = Self::hash(&self.hasher, &tail.prefix);
        if let Some(j) = self.index.find_mut(h, |&j| j as usize == last) {
            *j = Self::position(i);
        }
        std::mem::swap(self.at_mut(i), &mut tail);
        tail
    }

    /// Removes the destinations at these positions (ascending).
    fn remove_positions(&mut self, gone: &[usize]) {
        if gone.len() < self.len / 16 {
            // A few: one by one, from the end, so that every position still to remove keeps
            // its destination (what moves comes from beyond it).
            for &i in gone.iter().rev() {
                self.swap_remove(i);
            }
            return;
        }
        // Many: compact the storage in order (freeing each old chunk once it is copied), then
        // index it afresh.
        let old = std::mem::take(&mut self.chunks);
        self.len = 0;
        let mut gone = gone.iter().peekable();
        for (i, d) in old.into_iter().flatten().enumerate() {
            if gone.next_if_eq(&&i).is_none() {
                self.push_raw(d);
            }
        }
        self.rebuild_index(self.len);
    }

    /// Adds a path or replaces the one from the same source. Returns the replaced path, the
    /// best path before the change (`None` for a new destination) and the destination's
    /// position.
    fn set_path(&mut self, prefix: IpNet, path: Path) -> (Option<Path>, Option<Path>, u32) {
        if self.index.len() == self.index.capacity() {
            self.grow_index();
        }
        let h = Self::hash(&self.hasher, &prefix);
        let (chunks, hasher) = (&self.chunks, &self.hasher);
        let entry = self.index.entry(
            h,
            |&i| Self::at(chunks, i).prefix == prefix,
            |&j| Self::hash(hasher, &Self::at(chunks, j).prefix),
        );
        match entry {
            hashbrown::hash_table::Entry::Occupied(e) => {
                let pos = *e.get();
                let d = self.at_mut(pos as usize);
                let old = d.paths.best().clone();
                (d.paths.set(path), Some(old), pos)
            }
            hashbrown::hash_table::Entry::Vacant(e) => {
                let pos = Self::position(self.len);
                e.insert(pos);
                let paths = Paths::One(path);
                self.push_raw(Dest { prefix, paths });
                (None, None, pos)
            }
        }
    }

    /// Removes the path from `source`, and the destination with its last path. Returns the
    /// removed path and the best path before the change.
    fn remove_path(&mut self, prefix: IpNet, source: SourceId) -> Option<(Path, Path)> {
        let i = self.find(&prefix)?;
        let d = self.at_mut(i);
        match &d.paths {
            Paths::One(p) if p.source != source => None,
            Paths::One(_) => match self.swap_remove(i).paths {
                Paths::One(p) => Some((p.clone(), p)),
                Paths::Many(_) => None,
            },
            Paths::Many(_) => {
                let old = d.paths.best().clone();
                d.paths.remove_of_many(source).map(|p| (p, old))
            }
        }
    }

    /// Visits every path of `source`; `keep` says whether it stays. The destinations of the
    /// removed ones are added to `dirty`. One pass over the storage, then the destinations
    /// left without a path are removed together.
    fn sweep(
        &mut self,
        source: SourceId,
        mut keep: impl FnMut(&IpNet, &mut Path) -> bool,
        dirty: &mut Dirty,
    ) {
        let mut gone = Vec::new();
        for (i, d) in self.chunks.iter_mut().flatten().enumerate() {
            let Some(path) = d.paths.get_mut(source) else {
                continue;
            };
            if keep(&d.prefix, path) {
                continue;
            }
            dirty.push(Touched::new(d.prefix, Some(d.paths.best().clone())));
            if d.paths.remove_of_many(source).is_none() {
                gone.push(i);
            }
        }
        if !gone.is_empty() {
            self.remove_positions(&gone);
        }
    }
}

/// Routes a peer sent that the Loc-RIB does not show as received.
#[derive(Debug)]
struct Held {
    /// The attributes as received (pre-policy).
    attrs: Arc<PathAttrs>,
    /// `false`: import rejected it; `true`: the Loc-RIB has it with attributes import
    /// changed ([`F_HELD`]).
    accepted: bool,
    /// A rejected route kept through a graceful restart (accepted ones: [`F_STALE`]).
    stale: bool,
}

#[derive(Debug)]
struct Peer {
    info: PeerInfo,
    /// Established; a down peer is only kept while it has stale routes.
    up: bool,
    /// See [`Held`]; empty while import accepts every route unchanged.
    held: HashMap<IpNet, Held>,
    /// Received routes import accepted (its paths in the Loc-RIB).
    accepted: usize,
    /// Received routes import rejected (in `held`).
    rejected: usize,
    /// Routes of either kind kept stale through a graceful restart.
    stale: usize,
    /// Prefixes exported to the peer in its current session.
    advertised: usize,
}

impl Peer {
    fn received(&self) -> usize {
        self.accepted + self.rejected
    }
}

/// The peers the RIB knows, in slots indexed by [`SourceId`] (slot 0 is [`LOCAL`]).
#[derive(Debug, Default)]
struct Peers {
    ids: BTreeMap<PeerId, SourceId>,
    slots: Vec<Option<Peer>>,
    free: Vec<SourceId>,
}

impl Peers {
    fn id(&self, addr: PeerId) -> Option<SourceId> {
        self.ids.get(&addr).copied()
    }

    fn get(&self, addr: PeerId) -> Option<&Peer> {
        self.slot(self.id(addr)?)
    }

    fn slot(&self, id: SourceId) -> Option<&Peer> {
        self.slots.get(id as usize)?.as_ref()
    }

    fn slot_mut(&mut self, id: SourceId) -> Option<&mut Peer> {
        self.slots.get_mut(id as usize)?.as_mut()
    }

    /// The source as reported in [`Best`]; the peer must be known.
    fn source(&self, id: SourceId) -> Source {
        match self.slot(id) {
            Some(p) if id != LOCAL => Source::Peer(p.info.addr),
            _ => Source::Local,
        }
    }

    fn insert(&mut self, peer: Peer) -> SourceId {
        let addr = peer.info.addr;
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                if self.slots.is_empty() {
                    self.slots.push(None);
                }
                self.slots.push(None);
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 peers")
            }
        };
        self.slots[id as usize] = Some(peer);
        self.ids.insert(addr, id);
        id
    }

    /// Forgets a peer that has no path left in the Loc-RIB.
    fn remove(&mut self, id: SourceId, freed: &mut Vec<SourceId>) {
        if let Some(p) = self.slots.get_mut(id as usize).and_then(Option::take) {
            self.ids.remove(&p.info.addr);
            freed.push(id);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Params {
    local_as: u32,
    router_id: Ipv4Addr,
    cluster_id: Option<Ipv4Addr>,
}

/// A prefix whose best path must be recomputed, with the best path it had before the call
/// (`None` = no destination), from which what each peer was sent is recomputed.
#[derive(Debug)]
struct Touched {
    prefix: IpNet,
    /// Re-export even if the best path is unchanged (its source's session changed).
    force: bool,
    /// Where the destination was in the Loc-RIB's storage, if known: saves a lookup unless
    /// removals moved it since ([`LocRib::get_hinted`]).
    pos: u32,
    old: Option<Path>,
}

/// [`Touched::pos`] when unknown.
const NO_POS: u32 = u32::MAX;

impl Touched {
    fn new(prefix: IpNet, old: Option<Path>) -> Touched {
        Touched {
            prefix,
            force: false,
            pos: NO_POS,
            old,
        }
    }
}

type Dirty = Vec<Touched>;

/// The RIBs of one speaker. See the module docs.
#[derive(Debug)]
pub struct Rib {
    params: Params,
    peers: Peers,
    loc: LocRib,
    local: BTreeMap<IpNet, Arc<PathAttrs>>,
    /// Slots freed by the current call, reusable from the next one.
    freed: Vec<SourceId>,
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
            peers: Peers::default(),
            loc: LocRib::new(),
            local: BTreeMap::new(),
            freed: Vec::new(),
        }
    }

    /// A session reached Established. Everything exported to it is returned, followed by
    /// End-of-RIB for each negotiated family (RFC 4724 §2). Routes kept stale from a previous
    /// session stay until replaced, [`Rib::end_of_rib`] or [`Rib::purge_stale`]; they are
    /// re-evaluated with the new session's parameters and import filter. Calling this for a
    /// peer that is already up first drops the old session's routes (as
    /// `peer_down(peer, false)`).
    pub fn peer_up(&mut self, info: PeerInfo) -> RibChanges {
        let addr = info.addr;
        let mut dirty = Dirty::new();
        let id = match self.peers.id(addr) {
            Some(id) => {
                if self.peers.slot(id).is_some_and(|p| p.up) {
                    self.drop_routes(id, &mut dirty);
                }
                id
            }
            None => self.peers.insert(Peer {
                info: info.clone(),
                up: false,
                held: HashMap::new(),
                accepted: 0,
                rejected: 0,
                stale: 0,
                advertised: 0,
            }),
        };
        let Some(peer) = self.peers.slot_mut(id) else {
            unreachable!("peer {addr} has a slot");
        };
        let changed = peer.info != info;
        peer.info = info;
        peer.up = true;
        peer.advertised = 0;
        if changed && peer.received() > 0 {
            self.reimport(id, &mut dirty);
        }
        let mut out = Outbox::new(Some(id));
        let best = self.commit(dirty, &mut out);
        self.dump(id, &mut out);
        out.into_changes(best)
    }

    /// The session left Established. With `keep_stale` (graceful restart, RFC 4724 §4.2) its
    /// routes stay in use, marked stale; otherwise they are withdrawn.
    pub fn peer_down(&mut self, peer: PeerId, keep_stale: bool) -> RibChanges {
        let Some(id) = self.peers.id(peer) else {
            return RibChanges::default();
        };
        let mut dirty = Dirty::new();
        if keep_stale {
            let Rib { peers, loc, .. } = self;
            let Some(p) = peers.slot_mut(id) else {
                return RibChanges::default();
            };
            p.up = false;
            p.advertised = 0;
            if p.accepted > 0 {
                loc.sweep(
                    id,
                    |_, path| {
                        path.set(F_STALE, true);
                        true
                    },
                    &mut dirty,
                );
            }
            for h in p.held.values_mut() {
                h.stale |= !h.accepted;
            }
            p.stale = p.received();
            if p.received() == 0 {
                self.peers.remove(id, &mut self.freed);
            }
        } else {
            self.drop_routes(id, &mut dirty);
            self.peers.remove(id, &mut self.freed);
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
    /// refreshes a stale one. Received routes are kept whether or not import accepts them
    /// (see the module docs). End-of-RIB markers are applied too, after the routes (so a
    /// later [`Rib::end_of_rib`] for the same family is a no-op).
    pub fn update(&mut self, peer: PeerId, update: Update) -> RibChanges {
        let Rib {
            params, peers, loc, ..
        } = self;
        let Some(id) = peers.id(peer) else {
            return RibChanges::default();
        };
        let Some(p) = peers.slot_mut(id).filter(|p| p.up) else {
            return RibChanges::default();
        };
        let mut dirty = Dirty::new();
        for prefix in update.withdrawn {
            withdraw(loc, id, p, prefix.trunc(), &mut dirty);
        }
        let mut memo = ImportMemo::default();
        let meta = PeerMeta::of(&p.info);
        for (prefix, attrs) in update.announced {
            let prefix = prefix.trunc();
            let imported = import_route(params, &p.info, prefix, &attrs, &mut memo);
            let route = Received {
                prefix,
                attrs,
                stale: false,
            };
            store(loc, (id, meta), p, route, imported, false, &mut dirty);
        }
        for family in update.end_of_rib {
            purge_peer(loc, id, p, Some(family), &mut dirty);
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
            if !routes.contains_key(prefix)
                && let Some((_, old)) = self.loc.remove_path(*prefix, LOCAL)
            {
                dirty.push(Touched::new(*prefix, Some(old)));
            }
        }
        for (prefix, attrs) in &routes {
            if self.local.get(prefix).is_some_and(|old| old == attrs) {
                continue;
            }
            let (_, old, pos) = self.loc.set_path(*prefix, Path::local(attrs.clone()));
            dirty.push(Touched {
                pos,
                ..Touched::new(*prefix, old)
            });
        }
        self.local = routes;
        let mut out = Outbox::new(None);
        let best = self.commit(dirty, &mut out);
        out.into_changes(best)
    }

    /// Everything currently advertised to the peer (for a route refresh, RFC 2918): the
    /// export of the whole Loc-RIB, in prefix order grouped by attributes; no End-of-RIB.
    pub fn adj_rib_out(&self, peer: PeerId) -> Update {
        let mut announced = Vec::new();
        if let Some(id) = self.peers.id(peer)
            && let Some(t) = self.peers.slot(id).filter(|p| p.up)
        {
            let mut out = Outbox::new(None);
            for d in self.loc.iter() {
                let best = Some(d.paths.best());
                if let Some(a) = export_route(&self.params, (id, &t.info), d.prefix, best, &mut out)
                {
                    announced.push((d.prefix, a));
                }
            }
        }
        announced.sort_unstable_by_key(|(p, _)| *p);
        group_by_value(&mut announced);
        Update {
            announced,
            ..Update::default()
        }
    }

    /// Everything received from the peer and kept (pre-policy), in prefix order.
    pub fn adj_rib_in(&self, peer: PeerId) -> Update {
        let mut announced: Vec<(IpNet, Arc<PathAttrs>)> = match self.peers.id(peer) {
            Some(id) => self
                .received_routes(id)
                .into_iter()
                .map(|r| (r.prefix, r.attrs))
                .collect(),
            None => Vec::new(),
        };
        announced.sort_unstable_by_key(|(p, _)| *p);
        Update {
            announced,
            ..Update::default()
        }
    }

    /// The Loc-RIB in prefix order (a sorted copy: for reports and tests).
    pub fn best(&self) -> impl Iterator<Item = (IpNet, Best)> + use<> {
        let mut all: Vec<(IpNet, Best)> = self
            .loc
            .iter()
            .map(|d| (d.prefix, self.to_best(d.paths.best())))
            .collect();
        all.sort_unstable_by_key(|(p, _)| *p);
        all.into_iter()
    }

    /// The number of prefixes in the Loc-RIB.
    pub fn loc_rib_len(&self) -> usize {
        self.loc.len
    }

    /// Routes received from the peer (including rejected and stale ones).
    pub fn received(&self, peer: PeerId) -> usize {
        self.peers.get(peer).map_or(0, Peer::received)
    }

    /// Received routes the import policy accepted.
    pub fn accepted(&self, peer: PeerId) -> usize {
        self.peers.get(peer).map_or(0, |p| p.accepted)
    }

    /// Prefixes currently advertised to the peer.
    pub fn advertised(&self, peer: PeerId) -> usize {
        self.peers.get(peer).map_or(0, |p| p.advertised)
    }

    /// Routes of the peer kept stale through a graceful restart.
    pub fn stale(&self, peer: PeerId) -> usize {
        self.peers.get(peer).map_or(0, |p| p.stale)
    }

    fn to_best(&self, p: &Path) -> Best {
        Best {
            attrs: p.attrs.clone(),
            source: self.peers.source(p.source),
            priority: p.priority(),
        }
    }

    /// The peer's received routes as received: its paths in the Loc-RIB (with the attributes
    /// from before import where import changed them) and the ones import rejected.
    fn received_routes(&self, id: SourceId) -> Vec<Received> {
        let Some(p) = self.peers.slot(id) else {
            return Vec::new();
        };
        let mut routes = Vec::with_capacity(p.received());
        if p.accepted > 0 {
            for d in self.loc.iter() {
                let Some(path) = d.paths.as_slice().iter().find(|x| x.source == id) else {
                    continue;
                };
                let held = path.has(F_HELD).then(|| p.held.get(&d.prefix)).flatten();
                let attrs = held.map_or(&path.attrs, |h| &h.attrs).clone();
                let stale = path.has(F_STALE);
                routes.push(Received {
                    prefix: d.prefix,
                    attrs,
                    stale,
                });
            }
        }
        for (prefix, h) in &p.held {
            if !h.accepted {
                routes.push(Received {
                    prefix: *prefix,
                    attrs: h.attrs.clone(),
                    stale: h.stale,
                });
            }
        }
        routes
    }

    /// Removes all of the peer's routes (the peer stays known).
    fn drop_routes(&mut self, id: SourceId, dirty: &mut Dirty) {
        let Rib { peers, loc, .. } = self;
        let Some(p) = peers.slot_mut(id) else {
            return;
        };
        if p.accepted > 0 {
            loc.sweep(id, |_, _| false, dirty);
        }
        p.held.clear();
        (p.accepted, p.rejected, p.stale) = (0, 0, 0);
    }

    /// Re-runs import over the peer's received routes with its current session parameters;
    /// their destinations are re-exported even if the best path stays.
    fn reimport(&mut self, id: SourceId, dirty: &mut Dirty) {
        let routes = self.received_routes(id);
        let Rib {
            params, peers, loc, ..
        } = self;
        let Some(p) = peers.slot_mut(id) else {
            return;
        };
        let mut memo = ImportMemo::default();
        let meta = PeerMeta::of(&p.info);
        for route in routes {
            let imported = import_route(params, &p.info, route.prefix, &route.attrs, &mut memo);
            store(loc, (id, meta), p, route, imported, true, dirty);
        }
    }

    fn purge(&mut self, addr: PeerId, family: Option<Family>) -> RibChanges {
        let Some(id) = self.peers.id(addr) else {
            return RibChanges::default();
        };
        let Some(p) = self.peers.slot_mut(id) else {
            return RibChanges::default();
        };
        let mut dirty = Dirty::new();
        purge_peer(&mut self.loc, id, p, family, &mut dirty);
        if !p.up && p.received() == 0 {
            self.peers.remove(id, &mut self.freed);
        }
        let mut out = Outbox::new(None);
        let best = self.commit(dirty, &mut out);
        out.into_changes(best)
    }

    /// Runs the decision process for the touched prefixes and sends every up peer except
    /// `out.skip` the difference between the export of the old and the new best path.
    /// Returns the Loc-RIB changes.
    fn commit(&mut self, mut dirty: Dirty, out: &mut Outbox) -> Vec<(IpNet, Option<Best>)> {
        // Stable: of several touches of a prefix the first one saw the best path from before
        // the call.
        dirty.sort_by_key(|t| t.prefix);
        dirty.dedup_by(|later, first| {
            let same = later.prefix == first.prefix;
            if same {
                first.force |= later.force;
            }
            same
        });
        let Rib {
            params,
            peers,
            loc,
            freed,
            ..
        } = self;
        let targets: Vec<SourceId> = peers
            .ids
            .values()
            .copied()
            .filter(|&id| Some(id) != out.skip && peers.slot(id).is_some_and(|p| p.up))
            .collect();
        let mut changes = Vec::new();
        for t in dirty {
            let new = match loc.get_hinted(&t.prefix, t.pos) {
                Some(d) => {
                    d.paths.select(params, &|id| peers.source(id));
                    Some(d.paths.best())
                }
                None => None,
            };
            let changed = match (&t.old, new) {
                (Some(o), Some(n)) => !o.same_route(n),
                (None, None) => false,
                _ => true,
            };
            if changed {
                let best = new.map(|p| Best {
                    attrs: p.attrs.clone(),
                    source: peers.source(p.source),
                    priority: p.priority(),
                });
                changes.push((t.prefix, best));
            }
            if !changed && !t.force {
                continue;
            }
            for &tid in &targets {
                let Some(peer) = peers.slot_mut(tid) else {
                    continue;
                };
                let info = &peer.info;
                let was = export_route(params, (tid, info), t.prefix, t.old.as_ref(), out);
                let now = export_route(params, (tid, info), t.prefix, new, out);
                out.diff(tid, peer, t.prefix, was, now);
            }
        }
        // Slots freed in this call are safe to reuse now: no path refers to them any more.
        peers.free.append(freed);
        changes
    }

    /// Everything exported to a peer that just came up, then End-of-RIB per family.
    fn dump(&mut self, id: SourceId, out: &mut Outbox) {
        let Rib {
            params, peers, loc, ..
        } = self;
        let Some(peer) = peers.slot_mut(id) else {
            return;
        };
        for d in loc.iter() {
            let best = Some(d.paths.best());
            let new = export_route(params, (id, &peer.info), d.prefix, best, out);
            out.diff(id, peer, d.prefix, None, new);
        }
        let mut families = peer.info.families.clone();
        families.sort_unstable();
        families.dedup();
        out.update(id, peer.info.addr).end_of_rib = families;
    }
}

/// A received route, as received.
#[derive(Debug)]
struct Received {
    prefix: IpNet,
    attrs: Arc<PathAttrs>,
    stale: bool,
}

/// Applies a withdrawal from peer `id`.
fn withdraw(loc: &mut LocRib, id: SourceId, p: &mut Peer, prefix: IpNet, dirty: &mut Dirty) {
    if !p.held.is_empty()
        && let Some(h) = p.held.remove(&prefix)
        && !h.accepted
    {
        p.rejected -= 1;
        p.stale -= usize::from(h.stale);
        return;
    }
    if let Some((removed, old)) = loc.remove_path(prefix, id) {
        p.accepted -= 1;
        p.stale -= usize::from(removed.has(F_STALE));
        dirty.push(Touched::new(prefix, Some(old)));
    }
}

/// Stores a route received from peer `id` (`imported`: what import made of it, `None` =
/// rejected), replacing the peer's previous route for the prefix. `force`: re-export its
/// destination even if the best path stays.
fn store(
    loc: &mut LocRib,
    (id, meta): (SourceId, PeerMeta),
    p: &mut Peer,
    route: Received,
    imported: Option<(Arc<PathAttrs>, Option<u32>)>,
    force: bool,
    dirty: &mut Dirty,
) {
    let Received {
        prefix,
        attrs: received,
        stale,
    } = route;
    if !p.held.is_empty()
        && let Some(h) = p.held.remove(&prefix)
        && !h.accepted
    {
        p.rejected -= 1;
        p.stale -= usize::from(h.stale);
    }
    let touched = match imported {
        Some((attrs, priority)) => {
            let held = !Arc::ptr_eq(&attrs, &received);
            let mut path = Path::learned(id, meta, attrs, priority);
            path.set(F_STALE, stale);
            path.set(F_HELD, held);
            let (replaced, old, pos) = loc.set_path(prefix, path);
            if let Some(r) = replaced {
                p.accepted -= 1;
                p.stale -= usize::from(r.has(F_STALE));
            }
            p.accepted += 1;
            p.stale += usize::from(stale);
            if held {
                let h = Held {
                    attrs: received,
                    accepted: true,
                    stale: false,
                };
                p.held.insert(prefix, h);
            }
            Touched {
                prefix,
                force,
                pos,
                old,
            }
        }
        None => {
            let h = Held {
                attrs: received,
                accepted: false,
                stale,
            };
            p.held.insert(prefix, h);
            p.rejected += 1;
            p.stale += usize::from(stale);
            let Some((removed, old)) = loc.remove_path(prefix, id) else {
                return;
            };
            p.accepted -= 1;
            p.stale -= usize::from(removed.has(F_STALE));
            Touched {
                force,
                ..Touched::new(prefix, Some(old))
            }
        }
    };
    dirty.push(touched);
}

/// Removes the peer's stale routes (of `family`, or all).
fn purge_peer(
    loc: &mut LocRib,
    id: SourceId,
    p: &mut Peer,
    family: Option<Family>,
    dirty: &mut Dirty,
) {
    if p.stale == 0 {
        return;
    }
    let of_family = |prefix: &IpNet| family.is_none_or(|f| f == Family::of(prefix));
    let Peer {
        held,
        accepted,
        rejected,
        stale,
        ..
    } = p;
    if *accepted > 0 {
        loc.sweep(
            id,
            |prefix, path| {
                if !path.has(F_STALE) || !of_family(prefix) {
                    return true;
                }
                *accepted -= 1;
                *stale -= 1;
                if path.has(F_HELD) {
                    held.remove(prefix);
                }
                false
            },
            dirty,
        );
    }
    held.retain(|prefix, h| {
        if h.accepted || !h.stale || !of_family(prefix) {
            return true;
        }
        *rejected -= 1;
        *stale -= 1;
        false
    });
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
fn select(paths: &[Path], params: &Params, addr_of: &impl Fn(SourceId) -> Source) -> usize {
    if paths.len() < 2 {
        return 0;
    }
    let mut c: Vec<usize> = (0..paths.len()).collect();
    let attrs = |i: usize| &paths[i].attrs;
    keep_min(&mut c, |i| {
        Reverse(attrs(i).local_pref.unwrap_or(DEFAULT_LOCAL_PREF))
    });
    keep_min(&mut c, |i| paths[i].source != LOCAL);
    keep_min(&mut c, |i| attrs(i).as_path_len());
    keep_min(&mut c, |i| attrs(i).origin);
    med_eliminate(&mut c, paths, params.local_as);
    keep_min(&mut c, |i| paths[i].has(F_IBGP));
    keep_min(&mut c, |i| match paths[i].meta() {
        None => params.router_id,
        Some(m) => attrs(i).originator_id.unwrap_or(m.remote_id),
    });
    keep_min(&mut c, |i| attrs(i).cluster_list.len());
    keep_min(&mut c, |i| addr_of(paths[i].source));
    c.first().copied().unwrap_or(0)
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
    (tid, t): (SourceId, &PeerInfo),
    prefix: IpNet,
    best: Option<&Path>,
    out: &mut Outbox,
) -> Option<Arc<PathAttrs>> {
    let best = best?;
    let family = Family::of(&prefix);
    let (reflect, plain) = match out.recent(tid, best, family) {
        Some(r) => (r.reflect?, r.plain.clone()),
        None => {
            let reflect = eligible(params, (tid, t), family, best);
            let plain = match reflect {
                Some(reflect) if t.export.is_empty() => Some(export_with(
                    params,
                    (tid, t),
                    family,
                    best,
                    reflect,
                    None,
                    out,
                )),
                _ => None,
            };
            out.remember(tid, best, family, reflect, plain.clone());
            (reflect?, plain)
        }
    };
    if let Some(result) = plain {
        return result;
    }
    let input = FilterInput {
        prefix,
        attrs: &best.attrs,
        priority: best.priority(),
        from_peer: best.source != LOCAL,
        ebgp_session: !t.is_ibgp(),
    };
    match t.export.evaluate(&input) {
        Verdict::Reject => None,
        Verdict::Accept(rule) => export_with(params, (tid, t), family, best, reflect, rule, out),
    }
}

/// The rules of [`export_route`] that do not depend on the prefix: `None` = not advertised,
/// `Some(reflect)` = advertised (subject to the export filter), reflected or not.
fn eligible(
    params: &Params,
    (tid, t): (SourceId, &PeerInfo),
    family: Family,
    best: &Path,
) -> Option<bool> {
    if !t.families.contains(&family) || best.source == tid {
        return None;
    }
    let reflect = match best.meta() {
        Some(m) if m.ibgp && t.is_ibgp() => {
            if params.cluster_id.is_none() || (!m.rr_client && !t.rr_client) {
                return None;
            }
            true
        }
        _ => false,
    };
    if !t.is_ibgp() && best.attrs.contains_as(t.remote_as) {
        return None;
    }
    Some(reflect)
}

/// The export filter's operations (`rule`) and then [`export_attrs`], memoised per call.
fn export_with(
    params: &Params,
    (tid, t): (SourceId, &PeerInfo),
    family: Family,
    best: &Path,
    reflect: bool,
    rule: Option<usize>,
    out: &mut Outbox,
) -> Option<Arc<PathAttrs>> {
    let meta = best.meta();
    let key = (tid, best.source, meta, rule, family);
    let attrs = &best.attrs;
    let Outbox { memo, interned, .. } = out;
    memo.get(attrs, key, || {
        let (filtered, _) = t.export.apply(rule, attrs, None);
        let a = export_attrs(params, t, family, meta, reflect, &filtered)?;
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
/// the source (local, or which peer) and what its session said when the path was imported,
/// the export rule that accepted it and the family (which self address).
type ExportKey = (SourceId, SourceId, Option<PeerMeta>, Option<usize>, Family);

/// The UPDATEs being built by one call.
#[derive(Debug)]
struct Outbox {
    /// The peer that just came up: it gets its full table from [`Rib::dump`] instead.
    skip: Option<SourceId>,
    /// Per target peer, by [`SourceId`].
    updates: Vec<Option<(PeerId, Update)>>,
    memo: Memo<ExportKey, Option<Arc<PathAttrs>>>,
    interned: HashSet<Arc<PathAttrs>>,
    /// Per target peer, by [`SourceId`]: the last path exported and what came of it.
    recent: Vec<Option<Recent>>,
}

/// What [`export_route`] decided for the last path it saw for a target, reused for the next
/// prefix whose best path has the same inputs (attributes `Arc`, source, what its session
/// said, priority) and family — consecutive prefixes of an UPDATE usually share all of
/// them. Only what does not depend on the prefix is kept: [`eligible`]'s answer, and the
/// result itself when the target has no export filter.
#[derive(Debug)]
struct Recent {
    /// Holds the attributes `Arc`, so its address cannot be reused within the call.
    path: Path,
    family: Family,
    reflect: Option<bool>,
    plain: Option<Option<Arc<PathAttrs>>>,
}

impl Outbox {
    fn new(skip: Option<SourceId>) -> Outbox {
        Outbox {
            skip,
            updates: Vec::new(),
            memo: Memo::default(),
            interned: HashSet::new(),
            recent: Vec::new(),
        }
    }

    fn update(&mut self, tid: SourceId, peer: PeerId) -> &mut Update {
        let i = tid as usize;
        if self.updates.len() <= i {
            self.updates.resize_with(i + 1, || None);
        }
        &mut self.updates[i]
            .get_or_insert_with(|| (peer, Update::default()))
            .1
    }

    fn recent(&self, tid: SourceId, best: &Path, family: Family) -> Option<&Recent> {
        let r = self.recent.get(tid as usize)?.as_ref()?;
        let same = r.family == family
            && Arc::ptr_eq(&r.path.attrs, &best.attrs)
            && r.path.source == best.source
            && r.path.remote_id == best.remote_id
            && r.path.priority == best.priority
            && r.path.flags & EXPORT_FLAGS == best.flags & EXPORT_FLAGS;
        same.then_some(r)
    }

    fn remember(
        &mut self,
        tid: SourceId,
        best: &Path,
        family: Family,
        reflect: Option<bool>,
        plain: Option<Option<Arc<PathAttrs>>>,
    ) {
        let i = tid as usize;
        if self.recent.len() <= i {
            self.recent.resize_with(i + 1, || None);
        }
        self.recent[i] = Some(Recent {
            path: best.clone(),
            family,
            reflect,
            plain,
        });
    }

    /// Sends `peer` the difference between what it was sent for `prefix` (`old`, the export
    /// of the previous best path) and `new`.
    fn diff(
        &mut self,
        tid: SourceId,
        peer: &mut Peer,
        prefix: IpNet,
        old: Option<Arc<PathAttrs>>,
        new: Option<Arc<PathAttrs>>,
    ) {
        match (old, new) {
            (Some(o), Some(n)) if o == n => {}
            (o, Some(n)) => {
                peer.advertised += usize::from(o.is_none());
                self.update(tid, peer.info.addr).announced.push((prefix, n));
            }
            (Some(_), None) => {
                peer.advertised -= 1;
                self.update(tid, peer.info.addr).withdrawn.push(prefix);
            }
            (None, None) => {}
        }
    }

    fn into_changes(self, best: Vec<(IpNet, Option<Best>)>) -> RibChanges {
        let mut to_peers: Vec<(PeerId, Update)> = self
            .updates
            .into_iter()
            .flatten()
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
