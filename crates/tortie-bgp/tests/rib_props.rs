//! Property tests of the RIB through its public API:
//! 1. the Loc-RIB after any sequence of events equals the Loc-RIB computed from scratch from
//!    the final Adj-RIBs-In (and those equal an independent model of what was received), and
//!    so do the Adj-RIBs-Out of the peers that are up;
//! 2. the UPDATEs sent to a peer, applied in order to an empty table from its session start,
//!    give its Adj-RIB-Out — with no no-op announcements or withdrawals of unknown prefixes —
//!    and the best-route deltas applied in order give the Loc-RIB;
//! 3. the order in which peers come up does not change the Loc-RIB.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;
use proptest::prelude::*;
use tortie_bgp::filter::{
    Action, CidrMatch, Community, Filter, FilterRule, MatchOperator, Operation,
};
use tortie_bgp::rib::{Best, NextHopMode, PeerId, PeerInfo, Rib, RibChanges};
use tortie_bgp::{AsSegment, Family, Origin, PathAttrs, Update};

const LOCAL_AS: u32 = 65000;
const ROUTER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const CLUSTER_ID: Ipv4Addr = Ipv4Addr::new(10, 255, 0, 1);

const PREFIXES: [&str; 8] = [
    "10.1.0.0/16",
    "10.1.1.0/24",
    "10.2.0.0/16",
    "10.3.0.0/24",
    "192.168.0.0/16",
    "10.1.1.128/25",
    "fd00:1::/64",
    "fd00:2::/48",
];
const PEERS: usize = 6;

fn prefix(i: usize) -> IpNet {
    PREFIXES[i].parse().unwrap()
}

/// Peer `i`'s session; `alt` = the session re-established with other parameters (RR client
/// flag flipped, an extra import rule rejecting 10.1.1.0/24 and longer).
fn peer(i: usize, alt: bool) -> PeerInfo {
    let mut p = base_peer(i);
    if alt {
        p.rr_client = !p.rr_client;
        let mut reject = FilterRule::new(Family::Ipv4Unicast, Action::Reject);
        reject.cidr = Some(CidrMatch::new(prefix(1), MatchOperator::In));
        p.import = Filter::chain(vec![Filter::new(vec![reject]), p.import]);
    }
    p
}

/// A mix of sessions: eBGP with and without filters, RR clients and non-clients, a v4-only
/// peer without an IPv6 address, a peer over IPv6.
fn base_peer(i: usize) -> PeerInfo {
    let base = |addr: &str, remote_as: u32| PeerInfo {
        addr: addr.parse().unwrap(),
        local_as: LOCAL_AS,
        remote_as,
        remote_id: Ipv4Addr::new(10, 0, 0, 11 + u8::try_from(i).unwrap()),
        local_addr_v4: Some(ROUTER_ID),
        local_addr_v6: Some("fd00::1".parse().unwrap()),
        rr_client: false,
        next_hop: NextHopMode::Auto,
        families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        import: Filter::default(),
        export: Filter::default(),
    };
    match i {
        0 => base("10.0.0.11", 65011),
        1 => {
            let mut p = base("10.0.0.12", 65012);
            p.next_hop = NextHopMode::Keep;
            let mut tag = FilterRule::new(Family::Ipv4Unicast, Action::Accept);
            tag.cidr = Some(CidrMatch::new(prefix(0), MatchOperator::Equal));
            tag.operations = vec![
                Operation::AddCommunity(Community::Standard(3)),
                Operation::SetPriority(300),
            ];
            let mut drop2 = FilterRule::new(Family::Ipv4Unicast, Action::Reject);
            drop2.community = Some(Community::Standard(2));
            p.import = Filter::new(vec![tag, drop2]);
            let mut no_10_2 = FilterRule::new(Family::Ipv4Unicast, Action::Reject);
            no_10_2.cidr = Some(CidrMatch::new(prefix(2), MatchOperator::In));
            let mut prepend = FilterRule::new(Family::Ipv6Unicast, Action::Accept);
            prepend.operations = vec![Operation::PrependAsPath(vec![LOCAL_AS])];
            p.export = Filter::new(vec![no_10_2, prepend]);
            p
        }
        2 => PeerInfo {
            rr_client: true,
            ..base("10.0.0.13", LOCAL_AS)
        },
        3 => PeerInfo {
            next_hop: NextHopMode::SelfHop,
            ..base("10.0.0.14", LOCAL_AS)
        },
        4 => PeerInfo {
            rr_client: true,
            families: vec![Family::Ipv4Unicast],
            local_addr_v6: None,
            ..base("10.0.0.15", LOCAL_AS)
        },
        _ => base("fd00::5", LOCAL_AS),
    }
}

fn peer_id(i: usize) -> PeerId {
    base_peer(i).addr
}

fn attrs_strategy() -> impl Strategy<Value = PathAttrs> {
    let asns = prop::sample::select(vec![65011u32, 65012, 65099, 7, LOCAL_AS]);
    (
        prop::collection::vec(asns, 0..3),
        prop::option::of(prop::sample::select(vec![50u32, 100, 200])),
        prop::option::of(prop::sample::select(vec![0u32, 5, 10])),
        prop::sample::select(vec![Origin::Igp, Origin::Egp, Origin::Incomplete]),
        prop::sample::subsequence(vec![1u32, 2], 0..=2),
        prop::option::of(prop::sample::select(vec![
            ROUTER_ID,
            Ipv4Addr::new(10, 0, 0, 13),
            Ipv4Addr::new(1, 1, 1, 1),
        ])),
        prop::sample::subsequence(vec![CLUSTER_ID, Ipv4Addr::new(9, 9, 9, 9)], 0..=1),
        prop::sample::select(vec![1u8, 2]),
    )
        .prop_map(
            |(path, lp, med, origin, communities, orig, clusters, nh)| PathAttrs {
                origin,
                as_path: if path.is_empty() {
                    Vec::new()
                } else {
                    vec![AsSegment::Sequence(path)]
                },
                next_hop: IpAddr::V4(Ipv4Addr::new(192, 0, 2, nh)),
                med,
                local_pref: lp,
                communities,
                large_communities: Vec::new(),
                originator_id: orig,
                cluster_list: clusters,
                atomic_aggregate: false,
            },
        )
}

fn local_strategy() -> impl Strategy<Value = PathAttrs> {
    (
        prop::option::of(prop::sample::select(vec![0u32, 5])),
        prop::sample::subsequence(vec![1u32, 2], 0..=2),
        any::<bool>(),
    )
        .prop_map(|(med, communities, given_nh)| PathAttrs {
            med,
            communities,
            ..PathAttrs::local(if given_nh {
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77))
            } else {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            })
        })
}

#[derive(Debug, Clone)]
enum Op {
    Update {
        peer: usize,
        announce: Vec<(usize, PathAttrs)>,
        /// All announcements share the first one's attributes (one `Arc`, as decoded from
        /// one UPDATE message).
        shared: bool,
        withdraw: Vec<usize>,
        eor: Option<Family>,
    },
    Down(usize, bool),
    /// Peer, alternative session parameters.
    Up(usize, bool),
    EndOfRib(usize, Family),
    Purge(usize),
    SetLocal(Vec<(usize, PathAttrs)>),
}

fn family_strategy() -> impl Strategy<Value = Family> {
    prop::sample::select(vec![Family::Ipv4Unicast, Family::Ipv6Unicast])
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let p = 0..PEERS;
    let routes = prop::collection::vec((0..PREFIXES.len(), attrs_strategy()), 0..4);
    let update = (
        p.clone(),
        routes,
        any::<bool>(),
        prop::collection::vec(0..PREFIXES.len(), 0..3),
        prop::option::weighted(0.2, family_strategy()),
    )
        .prop_map(|(peer, announce, shared, withdraw, eor)| Op::Update {
            peer,
            announce,
            shared,
            withdraw,
            eor,
        });
    prop_oneof![
        8 => update,
        2 => (p.clone(), prop::bool::weighted(0.7)).prop_map(|(i, k)| Op::Down(i, k)),
        3 => (p.clone(), any::<bool>()).prop_map(|(i, alt)| Op::Up(i, alt)),
        1 => (p.clone(), family_strategy()).prop_map(|(i, f)| Op::EndOfRib(i, f)),
        1 => p.prop_map(Op::Purge),
        1 => prop::collection::vec((0..PREFIXES.len(), local_strategy()), 0..4).prop_map(Op::SetLocal),
    ]
}

/// An independent model of what each peer sent us: prefix → (attrs, stale).
#[derive(Debug, Default)]
struct Model {
    up: BTreeSet<usize>,
    /// The parameters of each peer's latest session.
    info: BTreeMap<usize, PeerInfo>,
    adj_in: BTreeMap<usize, BTreeMap<IpNet, (Arc<PathAttrs>, bool)>>,
    local: BTreeMap<IpNet, Arc<PathAttrs>>,
    /// What each peer has been told in its current session.
    told: BTreeMap<PeerId, BTreeMap<IpNet, Arc<PathAttrs>>>,
    /// The Loc-RIB as reported by the best-route deltas.
    best: BTreeMap<IpNet, Best>,
}

impl Model {
    fn apply(&mut self, rib: &mut Rib, op: &Op) -> RibChanges {
        match op.clone() {
            Op::Update {
                peer,
                announce,
                shared,
                withdraw,
                eor,
            } => {
                let first = announce.first().map(|(_, a)| Arc::new(a.clone()));
                let update = Update {
                    announced: announce
                        .into_iter()
                        .map(|(i, a)| match (&first, shared) {
                            (Some(f), true) => (prefix(i), f.clone()),
                            _ => (prefix(i), Arc::new(a)),
                        })
                        .collect(),
                    withdrawn: withdraw.into_iter().map(prefix).collect(),
                    end_of_rib: eor.into_iter().collect(),
                };
                if self.up.contains(&peer) {
                    let table = self.adj_in.entry(peer).or_default();
                    for p in &update.withdrawn {
                        table.remove(p);
                    }
                    for (p, a) in &update.announced {
                        table.insert(*p, (a.clone(), false));
                    }
                    if let Some(f) = eor {
                        table.retain(|p, (_, stale)| !*stale || Family::of(p) != f);
                    }
                }
                rib.update(peer_id(peer), update)
            }
            Op::Down(peer, keep) => {
                self.up.remove(&peer);
                if !keep {
                    self.adj_in.remove(&peer);
                } else if let Some(table) = self.adj_in.get_mut(&peer) {
                    table.values_mut().for_each(|(_, stale)| *stale = true);
                }
                self.told.remove(&peer_id(peer));
                rib.peer_down(peer_id(peer), keep)
            }
            Op::Up(peer, alt) => {
                if !self.up.insert(peer) {
                    self.adj_in.remove(&peer);
                }
                self.told.insert(peer_id(peer), BTreeMap::new());
                let info = self::peer(peer, alt);
                self.info.insert(peer, info.clone());
                rib.peer_up(info)
            }
            Op::EndOfRib(peer, f) => {
                if let Some(t) = self.adj_in.get_mut(&peer) {
                    t.retain(|p, (_, stale)| !*stale || Family::of(p) != f);
                }
                rib.end_of_rib(peer_id(peer), f)
            }
            Op::Purge(peer) => {
                if let Some(t) = self.adj_in.get_mut(&peer) {
                    t.retain(|_, (_, stale)| !*stale);
                }
                rib.purge_stale(peer_id(peer))
            }
            Op::SetLocal(routes) => {
                self.local = routes
                    .into_iter()
                    .map(|(i, a)| (prefix(i), Arc::new(a)))
                    .collect();
                rib.set_local(self.local.clone())
            }
        }
    }

    /// Applies the returned deltas, checking each is a real change.
    fn absorb(&mut self, ch: RibChanges) -> Result<(), TestCaseError> {
        for (peer, update) in ch.to_peers {
            prop_assert!(!update.is_empty());
            let table = self.told.get_mut(&peer);
            prop_assert!(table.is_some(), "an UPDATE for {} which is not up", peer);
            let table = table.unwrap();
            for p in &update.withdrawn {
                prop_assert!(table.remove(p).is_some(), "withdrawal of unsent {}", p);
            }
            for (p, a) in update.announced {
                prop_assert!(table.get(&p) != Some(&a), "no-op announcement of {}", p);
                table.insert(p, a);
            }
        }
        for (p, b) in ch.best {
            match b {
                Some(b) => {
                    prop_assert!(self.best.get(&p) != Some(&b), "no-op best change {}", p);
                    self.best.insert(p, b);
                }
                None => prop_assert!(self.best.remove(&p).is_some(), "best {} was not there", p),
            }
        }
        Ok(())
    }
}

fn loc_rib(rib: &Rib) -> BTreeMap<IpNet, Best> {
    rib.best().collect()
}

/// A RIB built from scratch: the peers with their latest session parameters, each sending
/// its Adj-RIB-In in one UPDATE, and the local routes.
fn from_scratch(
    rr: bool,
    info: &BTreeMap<usize, PeerInfo>,
    adj_in: &BTreeMap<usize, Update>,
    local: &BTreeMap<IpNet, Arc<PathAttrs>>,
) -> Rib {
    let mut rib = new_rib(rr);
    for (i, p) in info {
        rib.peer_up(p.clone());
        if let Some(routes) = adj_in.get(i) {
            rib.update(p.addr, routes.clone());
        }
    }
    rib.set_local(local.clone());
    rib
}

fn new_rib(rr: bool) -> Rib {
    Rib::new(LOCAL_AS, ROUTER_ID, rr.then_some(CLUSTER_ID))
}

fn check(rib: &Rib, model: &Model, rr: bool) -> Result<(), TestCaseError> {
    // (1) Adj-RIBs-In match the model, and the Loc-RIB is what they give from scratch.
    let mut adj_in = BTreeMap::new();
    for i in 0..PEERS {
        let got = rib.adj_rib_in(peer_id(i));
        let want: Vec<(IpNet, Arc<PathAttrs>)> = model
            .adj_in
            .get(&i)
            .map(|t| t.iter().map(|(p, (a, _))| (*p, a.clone())).collect())
            .unwrap_or_default();
        prop_assert_eq!(&got.announced, &want, "Adj-RIB-In of peer {}", i);
        prop_assert_eq!(rib.received(peer_id(i)), want.len());
        if !want.is_empty() {
            adj_in.insert(i, got);
        }
    }
    let loc = loc_rib(rib);
    let scratch = from_scratch(rr, &model.info, &adj_in, &model.local);
    prop_assert_eq!(&loc, &loc_rib(&scratch));
    // ... and so are the Adj-RIBs-Out of the peers that are up.
    for &i in &model.up {
        let id = peer_id(i);
        prop_assert_eq!(
            rib.adj_rib_out(id),
            scratch.adj_rib_out(id),
            "Adj-RIB-Out of {}",
            i
        );
    }
    // (2) The deltas add up to the Adj-RIBs-Out and the Loc-RIB.
    prop_assert_eq!(&loc, &model.best);
    for i in 0..PEERS {
        let id = peer_id(i);
        let out: BTreeMap<IpNet, Arc<PathAttrs>> =
            rib.adj_rib_out(id).announced.into_iter().collect();
        let told = model.told.get(&id).cloned().unwrap_or_default();
        prop_assert_eq!(&out, &told, "Adj-RIB-Out of peer {}", i);
        prop_assert_eq!(rib.advertised(id), told.len());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn loc_rib_and_adj_ribs_out_follow_from_the_inputs(
        rr in any::<bool>(),
        ops in prop::collection::vec(op_strategy(), 1..40),
    ) {
        let mut rib = new_rib(rr);
        let mut model = Model::default();
        for i in 0..PEERS {
            let ch = model.apply(&mut rib, &Op::Up(i, false));
            model.absorb(ch)?;
        }
        for op in &ops {
            let ch = model.apply(&mut rib, op);
            model.absorb(ch)?;
            check(&rib, &model, rr)?;
        }
    }

    #[test]
    fn the_order_peers_come_up_in_does_not_matter(
        rr in any::<bool>(),
        routes in prop::collection::vec(
            prop::collection::vec((0..PREFIXES.len(), attrs_strategy()), 0..6),
            PEERS,
        ),
        alt in prop::collection::vec(any::<bool>(), PEERS),
        order in Just((0..PEERS).collect::<Vec<_>>()).prop_shuffle(),
        local in prop::collection::vec((0..PREFIXES.len(), local_strategy()), 0..3),
    ) {
        let local: BTreeMap<IpNet, Arc<PathAttrs>> =
            local.into_iter().map(|(i, a)| (prefix(i), Arc::new(a))).collect();
        let run = |order: &[usize], local_first: bool| {
            let mut rib = new_rib(rr);
            if local_first {
                rib.set_local(local.clone());
            }
            for &i in order {
                rib.peer_up(peer(i, alt[i]));
                let announced = routes[i].iter().map(|(p, a)| (prefix(*p), Arc::new(a.clone())));
                rib.update(peer_id(i), Update { announced: announced.collect(), ..Update::default() });
            }
            if !local_first {
                rib.set_local(local.clone());
            }
            loc_rib(&rib)
        };
        let canonical: Vec<usize> = (0..PEERS).collect();
        prop_assert_eq!(run(&order, true), run(&canonical, false));
    }
}
