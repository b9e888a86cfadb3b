//! Unit tests of the RIB: decision process, export rules, route reflection, graceful restart,
//! filters.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::IpNet;
use tortie_api::bgp::{
    AsPathPrepend, BGPFilterSpec, BgpFilterRule, CommunityMatch, CommunityValue, FilterOperation,
    PrefixLength, PriorityValue,
};
use tortie_api::numorstring::AsNumber;

use super::*;
use crate::filter::{Action, CidrMatch, Community, Direction, Filter, FilterRule, MatchOperator};
use crate::types::{AsSegment, Family, Origin, PathAttrs, Update};

const LOCAL_AS: u32 = 65000;
const PFX: &str = "10.1.0.0/16";

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn router() -> Rib {
    Rib::new(LOCAL_AS, v4("10.0.0.1"), None)
}

fn reflector() -> Rib {
    Rib::new(LOCAL_AS, v4("10.0.0.1"), Some(v4("10.255.0.1")))
}

fn peer(addr: &str, remote_as: u32) -> PeerInfo {
    let addr = ip(addr);
    PeerInfo {
        addr,
        local_as: LOCAL_AS,
        remote_as,
        remote_id: match addr {
            IpAddr::V4(a) => a,
            IpAddr::V6(_) => v4("10.9.9.9"),
        },
        local_addr_v4: Some(v4("10.0.0.1")),
        local_addr_v6: Some("fd00::1".parse().unwrap()),
        rr_client: false,
        next_hop: NextHopMode::Auto,
        families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        import: Filter::default(),
        export: Filter::default(),
    }
}

fn ibgp(addr: &str) -> PeerInfo {
    peer(addr, LOCAL_AS)
}

fn client(addr: &str) -> PeerInfo {
    PeerInfo {
        rr_client: true,
        ..ibgp(addr)
    }
}

fn attrs(path: &[u32], next_hop: &str) -> PathAttrs {
    PathAttrs {
        as_path: if path.is_empty() {
            Vec::new()
        } else {
            vec![AsSegment::Sequence(path.to_vec())]
        },
        ..PathAttrs::local(ip(next_hop))
    }
}

fn announce(routes: &[(&str, &PathAttrs)]) -> Update {
    Update {
        announced: routes
            .iter()
            .map(|(p, a)| (net(p), Arc::new((*a).clone())))
            .collect(),
        ..Update::default()
    }
}

fn withdraw(prefixes: &[&str]) -> Update {
    Update {
        withdrawn: prefixes.iter().map(|p| net(p)).collect(),
        ..Update::default()
    }
}

fn sent<'a>(ch: &'a RibChanges, to: &str) -> Option<&'a Update> {
    ch.to_peers
        .iter()
        .find(|(p, _)| *p == ip(to))
        .map(|(_, u)| u)
}

/// The attributes announced to `to` for `prefix` in this change set.
fn sent_attrs(ch: &RibChanges, to: &str, prefix: &str) -> Option<PathAttrs> {
    sent(ch, to)?
        .announced
        .iter()
        .find(|(p, _)| *p == net(prefix))
        .map(|(_, a)| (**a).clone())
}

fn withdrawn_to(ch: &RibChanges, to: &str) -> Vec<IpNet> {
    sent(ch, to)
        .map(|u| u.withdrawn.clone())
        .unwrap_or_default()
}

fn best_source(rib: &Rib, prefix: &str) -> Option<Source> {
    rib.best()
        .find(|(p, _)| *p == net(prefix))
        .map(|(_, b)| b.source)
}

fn best_attrs(rib: &Rib, prefix: &str) -> Option<PathAttrs> {
    rib.best()
        .find(|(p, _)| *p == net(prefix))
        .map(|(_, b)| (*b.attrs).clone())
}

/// Brings the peers up and has each announce PFX, in the given order and in reverse; the
/// winner must be the same both ways. Returns it.
fn race(rib: impl Fn() -> Rib, routes: &[(PeerInfo, PathAttrs)]) -> Source {
    let run = |order: &mut dyn Iterator<Item = &(PeerInfo, PathAttrs)>| {
        let mut r = rib();
        for (info, a) in order {
            r.peer_up(info.clone());
            r.update(info.addr, announce(&[(PFX, a)]));
        }
        best_source(&r, PFX).unwrap()
    };
    let forward = run(&mut routes.iter());
    let backward = run(&mut routes.iter().rev());
    assert_eq!(forward, backward, "the decision depends on arrival order");
    forward
}

fn from(addr: &str) -> Source {
    Source::Peer(ip(addr))
}

// ---- decision process -------------------------------------------------------------------

#[test]
fn highest_local_pref_wins_over_shorter_path() {
    let mut long = attrs(&[1, 2, 3], "192.0.2.1");
    long.local_pref = Some(200);
    let short = attrs(&[1], "192.0.2.2");
    let won = race(
        router,
        &[(ibgp("10.0.0.2"), long), (ibgp("10.0.0.3"), short)],
    );
    assert_eq!(won, from("10.0.0.2"));
}

#[test]
fn absent_local_pref_counts_as_100() {
    let mut low = attrs(&[1], "192.0.2.1");
    low.local_pref = Some(99);
    let none = attrs(&[1, 2], "192.0.2.2");
    let won = race(router, &[(ibgp("10.0.0.2"), low), (ibgp("10.0.0.3"), none)]);
    assert_eq!(won, from("10.0.0.3"));
}

#[test]
fn ebgp_local_pref_is_ignored() {
    // The eBGP route claims LOCAL_PREF 500 (RFC 4271 §5.1.5: ignored, so 100).
    let mut claims = attrs(&[65001], "192.0.2.1");
    claims.local_pref = Some(500);
    let mut internal = attrs(&[65009, 1], "192.0.2.2");
    internal.local_pref = Some(150);
    let routes = [
        (peer("10.0.0.2", 65001), claims),
        (ibgp("10.0.0.3"), internal),
    ];
    assert_eq!(race(router, &routes), from("10.0.0.3"));
    let mut rib = router();
    rib.peer_up(routes[0].0.clone());
    rib.update(ip("10.0.0.2"), announce(&[(PFX, &routes[0].1)]));
    assert_eq!(best_attrs(&rib, PFX).unwrap().local_pref, None);
}

#[test]
fn locally_originated_wins_over_learned() {
    let mut rib = router();
    rib.peer_up(peer("10.0.0.2", 65001));
    rib.update(
        ip("10.0.0.2"),
        announce(&[(PFX, &attrs(&[65001], "192.0.2.1"))]),
    );
    // Even with a longer AS_PATH the local route wins.
    let local = attrs(&[64999, 64998], "0.0.0.0");
    let ch = rib.set_local(BTreeMap::from([(net(PFX), Arc::new(local))]));
    assert_eq!(ch.best.len(), 1);
    assert_eq!(best_source(&rib, PFX), Some(Source::Local));
}

#[test]
fn shortest_as_path_wins_and_a_set_counts_one() {
    let long = attrs(&[65001, 1, 2], "192.0.2.1");
    let mut set = attrs(&[65002], "192.0.2.2");
    set.as_path.push(AsSegment::Set(vec![7, 8, 9]));
    let routes = [
        (peer("10.0.0.2", 65001), long),
        (peer("10.0.0.3", 65002), set),
    ];
    assert_eq!(race(router, &routes), from("10.0.0.3"));
}

#[test]
fn lowest_origin_wins() {
    let mut incomplete = attrs(&[65001], "192.0.2.1");
    incomplete.origin = Origin::Incomplete;
    let mut egp = attrs(&[65002], "192.0.2.2");
    egp.origin = Origin::Egp;
    let routes = [
        (peer("10.0.0.2", 65001), incomplete),
        (peer("10.0.0.3", 65002), egp),
    ];
    assert_eq!(race(router, &routes), from("10.0.0.3"));
}

#[test]
fn lowest_med_wins_within_the_same_neighbour_as() {
    let mut high = attrs(&[65001], "192.0.2.1");
    high.med = Some(10);
    let mut low = attrs(&[65001], "192.0.2.2");
    low.med = Some(5);
    let routes = [
        (peer("10.0.0.2", 65001), low.clone()),
        (peer("10.0.0.3", 65001), high),
    ];
    assert_eq!(race(router, &routes), from("10.0.0.2"));
    // A missing MED is the lowest possible value.
    let none = attrs(&[65001], "192.0.2.3");
    let routes = [
        (peer("10.0.0.2", 65001), low),
        (peer("10.0.0.4", 65001), none),
    ];
    assert_eq!(race(router, &routes), from("10.0.0.4"));
}

#[test]
fn med_is_not_compared_across_neighbour_ases() {
    // Lower router id wins although its MED is higher: different neighbour AS.
    let mut a = attrs(&[65001], "192.0.2.1");
    a.med = Some(100);
    let mut b = attrs(&[65002], "192.0.2.2");
    b.med = Some(0);
    let routes = [(peer("10.0.0.2", 65001), a), (peer("10.0.0.3", 65002), b)];
    assert_eq!(race(router, &routes), from("10.0.0.2"));
}

#[test]
fn med_elimination_is_order_independent() {
    // A (AS 1, MED 10, id .2) loses to B (AS 1, MED 5, id .4); then C (AS 2, id .3) beats B on
    // router id. A pairwise comparison in arrival order could end with A.
    let mut a = attrs(&[1], "192.0.2.1");
    a.med = Some(10);
    let mut b = attrs(&[1], "192.0.2.2");
    b.med = Some(5);
    let c = attrs(&[2], "192.0.2.3");
    let routes = [
        (peer("10.0.0.2", 1), a),
        (peer("10.0.0.4", 1), b),
        (peer("10.0.0.3", 2), c),
    ];
    assert_eq!(race(router, &routes), from("10.0.0.3"));
    let rotated = [routes[1].clone(), routes[2].clone(), routes[0].clone()];
    assert_eq!(race(router, &rotated), from("10.0.0.3"));
}

#[test]
fn ebgp_wins_over_ibgp() {
    let internal = attrs(&[65001], "192.0.2.1");
    let external = attrs(&[65002], "192.0.2.2");
    // The iBGP peer has the lower router id; eBGP still wins.
    let routes = [
        (ibgp("10.0.0.2"), internal),
        (peer("10.0.0.3", 65002), external),
    ];
    assert_eq!(race(router, &routes), from("10.0.0.3"));
}

#[test]
fn lowest_router_id_wins_and_originator_id_stands_in_for_it() {
    let a = attrs(&[1], "192.0.2.1");
    let mut p2 = ibgp("10.0.0.2");
    p2.remote_id = v4("1.1.1.9");
    let mut p3 = ibgp("10.0.0.3");
    p3.remote_id = v4("1.1.1.5");
    let routes = [(p2.clone(), a.clone()), (p3.clone(), a.clone())];
    assert_eq!(race(router, &routes), from("10.0.0.3"));
    // RFC 4456 §9: ORIGINATOR_ID replaces the peer's id.
    let mut reflected = a.clone();
    reflected.originator_id = Some(v4("1.1.1.99"));
    let routes = [(p2, a), (p3, reflected)];
    assert_eq!(race(router, &routes), from("10.0.0.2"));
}

#[test]
fn shortest_cluster_list_wins() {
    let mut long = attrs(&[1], "192.0.2.1");
    long.originator_id = Some(v4("1.1.1.1"));
    long.cluster_list = vec![v4("9.9.9.1"), v4("9.9.9.2")];
    let mut short = long.clone();
    short.cluster_list = vec![v4("9.9.9.3")];
    let routes = [(ibgp("10.0.0.2"), long), (ibgp("10.0.0.3"), short)];
    assert_eq!(race(router, &routes), from("10.0.0.3"));
}

#[test]
fn lowest_peer_address_breaks_the_last_tie() {
    let a = attrs(&[1], "192.0.2.1");
    let mut p2 = ibgp("10.0.0.9");
    let mut p3 = ibgp("10.0.0.3");
    p2.remote_id = v4("1.1.1.1");
    p3.remote_id = v4("1.1.1.1");
    let routes = [(p2, a.clone()), (p3, a)];
    assert_eq!(race(router, &routes), from("10.0.0.3"));
}

#[test]
fn best_path_failover_announces_the_next_best() {
    let mut rib = router();
    rib.peer_up(peer("10.0.0.2", 65001));
    rib.peer_up(peer("10.0.0.3", 65002));
    rib.peer_up(ibgp("10.0.0.9"));
    rib.update(
        ip("10.0.0.2"),
        announce(&[(PFX, &attrs(&[65001], "192.0.2.1"))]),
    );
    rib.update(
        ip("10.0.0.3"),
        announce(&[(PFX, &attrs(&[65002, 1], "192.0.2.2"))]),
    );
    assert_eq!(best_source(&rib, PFX), Some(from("10.0.0.2")));
    let ch = rib.update(ip("10.0.0.2"), withdraw(&[PFX]));
    assert_eq!(best_source(&rib, PFX), Some(from("10.0.0.3")));
    assert_eq!(ch.best.len(), 1);
    // The iBGP peer gets the replacement as an announcement, no withdrawal.
    let to_ibgp = sent_attrs(&ch, "10.0.0.9", PFX).unwrap();
    assert_eq!(to_ibgp.next_hop, ip("192.0.2.2"));
    assert!(withdrawn_to(&ch, "10.0.0.9").is_empty());
    // The first eBGP peer now gets the route (it had nothing: its own route was best).
    assert!(sent_attrs(&ch, "10.0.0.2", PFX).is_some());
    // The new best came from 10.0.0.3: it is withdrawn there (it had 10.0.0.2's route).
    assert_eq!(withdrawn_to(&ch, "10.0.0.3"), vec![net(PFX)]);
}

// ---- export rules -----------------------------------------------------------------------

#[test]
fn ibgp_learned_routes_are_not_sent_to_ibgp_peers_without_reflection() {
    let mut rib = router();
    rib.peer_up(ibgp("10.0.0.2"));
    rib.peer_up(ibgp("10.0.0.3"));
    rib.peer_up(peer("10.0.0.4", 65004));
    let ch = rib.update(
        ip("10.0.0.2"),
        announce(&[(PFX, &attrs(&[65001], "192.0.2.1"))]),
    );
    assert!(sent(&ch, "10.0.0.3").is_none());
    assert!(sent(&ch, "10.0.0.2").is_none(), "never back to the source");
    let e = sent_attrs(&ch, "10.0.0.4", PFX).unwrap();
    assert_eq!(e.as_path, vec![AsSegment::Sequence(vec![LOCAL_AS, 65001])]);
    assert_eq!(rib.advertised(ip("10.0.0.3")), 0);
    assert_eq!(rib.advertised(ip("10.0.0.4")), 1);
}

#[test]
fn ebgp_learned_routes_go_to_ibgp_unchanged_and_to_ebgp_with_next_hop_self() {
    let mut rib = router();
    rib.peer_up(peer("10.0.0.2", 65001));
    rib.peer_up(peer("10.0.0.3", 65003));
    rib.peer_up(ibgp("10.0.0.4"));
    let mut a = attrs(&[65001], "192.0.2.1");
    a.med = Some(7);
    let ch = rib.update(ip("10.0.0.2"), announce(&[(PFX, &a)]));
    let i = sent_attrs(&ch, "10.0.0.4", PFX).unwrap();
    assert_eq!(i.next_hop, ip("192.0.2.1"));
    assert_eq!(i.local_pref, Some(100));
    assert_eq!(i.as_path, a.as_path);
    assert_eq!(i.med, Some(7));
    let e = sent_attrs(&ch, "10.0.0.3", PFX).unwrap();
    assert_eq!(e.next_hop, ip("10.0.0.1"));
    assert_eq!(e.local_pref, None);
    assert_eq!(
        e.med, None,
        "RFC 4271 §5.1.4: MED is not passed to another AS"
    );
    assert_eq!(e.as_path, vec![AsSegment::Sequence(vec![LOCAL_AS, 65001])]);
    assert!(sent(&ch, "10.0.0.2").is_none());
}

#[test]
fn ebgp_prepend_starts_a_new_sequence_before_a_set_and_uses_the_session_as() {
    let mut rib = router();
    let mut e = peer("10.0.0.3", 65003);
    e.local_as = 64600;
    rib.peer_up(ibgp("10.0.0.2"));
    rib.peer_up(e);
    let mut a = attrs(&[], "192.0.2.1");
    a.as_path = vec![AsSegment::Set(vec![5, 6])];
    let ch = rib.update(ip("10.0.0.2"), announce(&[(PFX, &a)]));
    let out = sent_attrs(&ch, "10.0.0.3", PFX).unwrap();
    assert_eq!(
        out.as_path,
        vec![AsSegment::Sequence(vec![64600]), AsSegment::Set(vec![5, 6])]
    );
}

#[test]
fn next_hop_self_uses_the_family_address_and_skips_without_one() {
    let mut rib = router();
    let mut e = peer("10.0.0.3", 65003);
    e.local_addr_v6 = None;
    rib.peer_up(peer("10.0.0.2", 65002));
    rib.peer_up(e);
    rib.peer_up(peer("10.0.0.4", 65004));
    let a = attrs(&[65002], "2001:db8::1");
    let ch = rib.update(ip("10.0.0.2"), announce(&[("2001:db8:1::/48", &a)]));
    assert!(
        sent(&ch, "10.0.0.3").is_none(),
        "no IPv6 address for next hop self"
    );
    let out = sent_attrs(&ch, "10.0.0.4", "2001:db8:1::/48").unwrap();
    assert_eq!(out.next_hop, ip("fd00::1"));
}

#[test]
fn keep_leaves_the_next_hop_towards_ebgp() {
    let mut rib = router();
    let mut e = peer("10.0.0.3", 65003);
    e.next_hop = NextHopMode::Keep;
    rib.peer_up(peer("10.0.0.2", 65002));
    rib.peer_up(e);
    let ch = rib.update(
        ip("10.0.0.2"),
        announce(&[(PFX, &attrs(&[65002], "192.0.2.1"))]),
    );
    let out = sent_attrs(&ch, "10.0.0.3", PFX).unwrap();
    assert_eq!(out.next_hop, ip("192.0.2.1"));
    assert_eq!(
        out.as_path,
        vec![AsSegment::Sequence(vec![LOCAL_AS, 65002])]
    );
}

#[test]
fn local_routes_get_next_hop_self_unless_keep_with_a_given_next_hop() {
    let mut rib = router();
    let mut keep = ibgp("10.0.0.3");
    keep.next_hop = NextHopMode::Keep;
    rib.peer_up(ibgp("10.0.0.2"));
    rib.peer_up(keep);
    let mut given = attrs(&[], "192.0.2.50");
    given.med = Some(3);
    let routes = BTreeMap::from([
        (net("10.7.0.0/26"), Arc::new(attrs(&[], "0.0.0.0"))),
        (net("10.7.1.0/26"), Arc::new(given)),
    ]);
    let ch = rib.set_local(routes);
    for p in ["10.7.0.0/26", "10.7.1.0/26"] {
        assert_eq!(
            sent_attrs(&ch, "10.0.0.2", p).unwrap().next_hop,
            ip("10.0.0.1")
        );
    }
    let k = |p| sent_attrs(&ch, "10.0.0.3", p).unwrap().next_hop;
    assert_eq!(k("10.7.0.0/26"), ip("10.0.0.1"));
    assert_eq!(k("10.7.1.0/26"), ip("192.0.2.50"));
    let i = sent_attrs(&ch, "10.0.0.2", "10.7.1.0/26").unwrap();
    assert_eq!(i.local_pref, Some(100));
    assert_eq!(i.med, Some(3));
}

#[test]
fn local_med_is_kept_towards_ebgp() {
    let mut rib = router();
    rib.peer_up(peer("10.0.0.3", 65003));
    let mut a = attrs(&[], "0.0.0.0");
    a.med = Some(42);
    let ch = rib.set_local(BTreeMap::from([(net(PFX), Arc::new(a))]));
    let out = sent_attrs(&ch, "10.0.0.3", PFX).unwrap();
    assert_eq!(out.med, Some(42));
    assert_eq!(out.as_path, vec![AsSegment::Sequence(vec![LOCAL_AS])]);
}

#[test]
fn self_hop_rewrites_the_next_hop_towards_ibgp() {
    let mut rib = router();
    let mut i = ibgp("10.0.0.3");
    i.next_hop = NextHopMode::SelfHop;
    rib.peer_up(peer("10.0.0.2", 65002));
    rib.peer_up(i);
    let ch = rib.update(
        ip("10.0.0.2"),
        announce(&[(PFX, &attrs(&[65002], "192.0.2.1"))]),
    );
    assert_eq!(
        sent_attrs(&ch, "10.0.0.3", PFX).unwrap().next_hop,
        ip("10.0.0.1")
    );
}

#[test]
fn not_exported_to_an_ebgp_peer_already_in_the_path() {
    let mut rib = router();
    rib.peer_up(peer("10.0.0.2", 65002));
    rib.peer_up(peer("10.0.0.3", 65003));
    let ch = rib.update(
        ip("10.0.0.2"),
        announce(&[(PFX, &attrs(&[65002, 65003], "192.0.2.1"))]),
    );
    assert!(sent(&ch, "10.0.0.3").is_none());
}

#[test]
fn only_negotiated_families_are_sent_or_accepted() {
    let mut rib = router();
    let mut v4only = peer("10.0.0.3", 65003);
    v4only.families = vec![Family::Ipv4Unicast];
    rib.peer_up(peer("10.0.0.2", 65002));
    rib.peer_up(v4only);
    let a = attrs(&[65002], "2001:db8::1");
    let ch = rib.update(ip("10.0.0.2"), announce(&[("2001:db8::/32", &a)]));
    assert!(sent(&ch, "10.0.0.3").is_none());
    let ch = rib.update(
        ip("10.0.0.3"),
        announce(&[("2001:db9::/32", &attrs(&[65003], "2001:db8::3"))]),
    );
    assert!(ch.is_empty());
    assert_eq!(
        (rib.received(ip("10.0.0.3")), rib.accepted(ip("10.0.0.3"))),
        (1, 0)
    );
}

// ---- route reflection ---------------------------------------------------------------------

#[test]
fn client_routes_are_reflected_to_everyone_with_originator_and_cluster_list() {
    let mut rib = reflector();
    rib.peer_up(client("10.0.0.2"));
    rib.peer_up(client("10.0.0.3"));
    rib.peer_up(ibgp("10.0.0.4"));
    rib.peer_up(peer("10.0.0.5", 65005));
    let ch = rib.update(ip("10.0.0.2"), announce(&[(PFX, &attrs(&[], "10.0.0.2"))]));
    for to in ["10.0.0.3", "10.0.0.4"] {
        let r = sent_attrs(&ch, to, PFX).unwrap();
        assert_eq!(r.originator_id, Some(v4("10.0.0.2")));
        assert_eq!(r.cluster_list, vec![v4("10.255.0.1")]);
        assert_eq!(
            r.next_hop,
            ip("10.0.0.2"),
            "reflected routes keep their next hop"
        );
        assert_eq!(r.local_pref, Some(100));
    }
    let e = sent_attrs(&ch, "10.0.0.5", PFX).unwrap();
    assert_eq!((e.originator_id, e.cluster_list.len()), (None, 0));
    assert!(sent(&ch, "10.0.0.2").is_none());
}

#[test]
fn non_client_routes_are_reflected_to_clients_only() {
    let mut rib = reflector();
    rib.peer_up(ibgp("10.0.0.2"));
    rib.peer_up(ibgp("10.0.0.3"));
    rib.peer_up(client("10.0.0.4"));
    rib.peer_up(peer("10.0.0.5", 65005));
    let ch = rib.update(ip("10.0.0.2"), announce(&[(PFX, &attrs(&[], "10.0.0.2"))]));
    assert!(sent(&ch, "10.0.0.3").is_none());
    assert!(sent_attrs(&ch, "10.0.0.4", PFX).is_some());
    assert!(sent_attrs(&ch, "10.0.0.5", PFX).is_some());
}

#[test]
fn reflection_keeps_an_existing_originator_and_prepends_the_cluster() {
    let mut rib = reflector();
    rib.peer_up(client("10.0.0.2"));
    rib.peer_up(client("10.0.0.3"));
    let mut a = attrs(&[], "10.0.0.7");
    a.originator_id = Some(v4("10.0.0.7"));
    a.cluster_list = vec![v4("10.254.0.1")];
    let ch = rib.update(ip("10.0.0.2"), announce(&[(PFX, &a)]));
    let r = sent_attrs(&ch, "10.0.0.3", PFX).unwrap();
    assert_eq!(r.originator_id, Some(v4("10.0.0.7")));
    assert_eq!(r.cluster_list, vec![v4("10.255.0.1"), v4("10.254.0.1")]);
}

// ---- loop detection -----------------------------------------------------------------------

#[test]
fn looped_routes_are_dropped() {
    let mut rib = reflector();
    let mut e = peer("10.0.0.2", 65002);
    e.local_as = 64600;
    rib.peer_up(e);
    rib.peer_up(client("10.0.0.3"));
    let own_as = attrs(&[65002, LOCAL_AS, 9], "192.0.2.1");
    let session_as = attrs(&[65002, 64600], "192.0.2.1");
    let ch = rib.update(
        ip("10.0.0.2"),
        announce(&[("10.1.0.0/16", &own_as), ("10.2.0.0/16", &session_as)]),
    );
    assert!(ch.is_empty());
    assert_eq!(
        (rib.received(ip("10.0.0.2")), rib.accepted(ip("10.0.0.2"))),
        (2, 0)
    );
    let mut mine = attrs(&[], "10.0.0.3");
    mine.originator_id = Some(v4("10.0.0.1"));
    let mut cluster = attrs(&[], "10.0.0.3");
    cluster.cluster_list = vec![v4("10.9.0.1"), v4("10.255.0.1")];
    let ch = rib.update(
        ip("10.0.0.3"),
        announce(&[("10.3.0.0/16", &mine), ("10.4.0.0/16", &cluster)]),
    );
    assert!(ch.is_empty());
    assert_eq!(rib.accepted(ip("10.0.0.3")), 0);
    assert_eq!(rib.best().count(), 0);
}

#[test]
fn our_as_from_an_ibgp_peer_is_not_a_loop() {
    let mut rib = router();
    rib.peer_up(ibgp("10.0.0.2"));
    rib.update(
        ip("10.0.0.2"),
        announce(&[(PFX, &attrs(&[65001, LOCAL_AS], "192.0.2.1"))]),
    );
    assert_eq!(rib.accepted(ip("10.0.0.2")), 1);
}

// ---- updates and withdrawals --------------------------------------------------------------

#[test]
fn withdrawals_propagate_and_unknown_ones_do_nothing() {
    let mut rib = router();
    rib.peer_up(peer("10.0.0.2", 65002));
    rib.peer_up(ibgp("10.0.0.3"));
    assert!(rib.update(ip("10.0.0.2"), withdraw(&[PFX])).is_empty());
    rib.update(
        ip("10.0.0.2"),
        announce(&[(PFX, &attrs(&[65002], "192.0.2.1"))]),
    );
    let ch = rib.update(ip("10.0.0.2"), withdraw(&[PFX]));
    assert_eq!(ch.best, vec![(net(PFX), None)]);
    assert_eq!(withdrawn_to(&ch, "10.0.0.3"), vec![net(PFX)]);
    assert!(sent(&ch, "10.0.0.2").is_none());
    assert_eq!(rib.received(ip("10.0.0.2")), 0);
    assert_eq!(rib.advertised(ip("10.0.0.3")), 0);
}

#[test]
fn a_repeated_route_replaces_the_previous_one() {
    let mut rib = router();
    rib.peer_up(peer("10.0.0.2", 65002));
    rib.peer_up(ibgp("10.0.0.3"));
    let a = attrs(&[65002], "192.0.2.1");
    rib.update(ip("10.0.0.2"), announce(&[(PFX, &a)]));
    // Identical again: nothing at all.
    assert!(
        rib.update(ip("10.0.0.2"), announce(&[(PFX, &a)]))
            .is_empty()
    );
    let b = attrs(&[65002, 7], "192.0.2.1");
    let ch = rib.update(ip("10.0.0.2"), announce(&[(PFX, &b)]));
    assert_eq!(sent_attrs(&ch, "10.0.0.3", PFX).unwrap().as_path, b.as_path);
    assert!(withdrawn_to(&ch, "10.0.0.3").is_empty());
    assert_eq!(rib.received(ip("10.0.0.2")), 1);
}

#[test]
fn updates_from_unknown_or_down_peers_are_ignored() {
    let mut rib = router();
    let a = attrs(&[65002], "192.0.2.1");
    assert!(
        rib.update(ip("10.0.0.2"), announce(&[(PFX, &a)]))
            .is_empty()
    );
    assert_eq!(rib.best().count(), 0);
}

#[test]
fn peer_up_sends_the_table_then_end_of_rib() {
    let mut rib = router();
    rib.set_local(BTreeMap::from([
        (net("10.7.0.0/26"), Arc::new(attrs(&[], "0.0.0.0"))),
        (net("fd00:7::/122"), Arc::new(attrs(&[], "::"))),
    ]));
    rib.peer_up(peer("10.0.0.2", 65002));
    rib.update(
        ip("10.0.0.2"),
        announce(&[(PFX, &attrs(&[65002], "192.0.2.1"))]),
    );
    let mut v4only = ibgp("10.0.0.3");
    v4only.families = vec![Family::Ipv4Unicast];
    let ch = rib.peer_up(v4only);
    assert!(ch.best.is_empty());
    let u = sent(&ch, "10.0.0.3").unwrap();
    let prefixes: Vec<IpNet> = u.announced.iter().map(|(p, _)| *p).collect();
    assert_eq!(prefixes, vec![net("10.1.0.0/16"), net("10.7.0.0/26")]);
    assert_eq!(u.end_of_rib, vec![Family::Ipv4Unicast]);
    assert_eq!(ch.to_peers.len(), 1);
    assert_eq!(rib.adj_rib_out(ip("10.0.0.3")).announced, u.announced);
}

#[test]
fn peer_up_without_routes_still_sends_end_of_rib() {
    let mut rib = router();
    let ch = rib.peer_up(ibgp("10.0.0.3"));
    let u = sent(&ch, "10.0.0.3").unwrap();
    assert!(u.announced.is_empty());
    assert_eq!(u.end_of_rib, vec![Family::Ipv4Unicast, Family::Ipv6Unicast]);
}

#[test]
fn peer_down_withdraws_its_routes() {
    let mut rib = router();
    rib.peer_up(peer("10.0.0.2", 65002));
    rib.peer_up(ibgp("10.0.0.3"));
    rib.update(
        ip("10.0.0.2"),
        announce(&[(PFX, &attrs(&[65002], "192.0.2.1"))]),
    );
    let ch = rib.peer_down(ip("10.0.0.2"), false);
    assert_eq!(ch.best, vec![(net(PFX), None)]);
    assert_eq!(withdrawn_to(&ch, "10.0.0.3"), vec![net(PFX)]);
    assert_eq!(rib.received(ip("10.0.0.2")), 0);
    assert!(rib.peer_down(ip("10.0.0.2"), false).is_empty());
}

#[test]
fn set_local_diffs_against_the_previous_set() {
    let mut rib = router();
    rib.peer_up(ibgp("10.0.0.3"));
    let a = Arc::new(attrs(&[], "0.0.0.0"));
    let mut routes = BTreeMap::from([
        (net("10.7.0.0/26"), a.clone()),
        (net("10.7.1.0/26"), a.clone()),
    ]);
    let ch = rib.set_local(routes.clone());
    assert_eq!(sent(&ch, "10.0.0.3").unwrap().announced.len(), 2);
    assert!(rib.set_local(routes.clone()).is_empty());
    // An equal value in another Arc is no change either.
    routes.insert(net("10.7.1.0/26"), Arc::new(attrs(&[], "0.0.0.0")));
    assert!(rib.set_local(routes.clone()).is_empty());
    routes.remove(&net("10.7.0.0/26"));
    let mut changed = attrs(&[], "0.0.0.0");
    changed.communities = vec![1];
    routes.insert(net("10.7.1.0/26"), Arc::new(changed));
    let ch = rib.set_local(routes);
    let u = sent(&ch, "10.0.0.3").unwrap();
    assert_eq!(u.withdrawn, vec![net("10.7.0.0/26")]);
    assert_eq!(u.announced.len(), 1);
    assert_eq!(u.announced[0].1.communities, vec![1]);
    assert_eq!(ch.best.len(), 2);
}

#[test]
fn announcements_share_attributes_and_are_grouped() {
    let mut rib = router();
    rib.peer_up(peer("10.0.0.2", 65002));
    rib.peer_up(peer("10.0.0.3", 65003));
    let a = Arc::new(attrs(&[65002], "192.0.2.1"));
    let b = Arc::new(attrs(&[65002, 1], "192.0.2.1"));
    let announced = (0..6u8)
        .map(|i| {
            let p = IpNet::new(IpAddr::V4(Ipv4Addr::new(10, i, 0, 0)), 16).unwrap();
            (p, if i % 2 == 0 { a.clone() } else { b.clone() })
        })
        .collect();
    let ch = rib.update(
        ip("10.0.0.2"),
        Update {
            announced,
            ..Update::default()
        },
    );
    let u = sent(&ch, "10.0.0.3").unwrap();
    let firsts: Vec<u8> = u
        .announced
        .iter()
        .map(|(p, _)| match p.addr() {
            IpAddr::V4(v) => v.octets()[1],
            IpAddr::V6(_) => 99,
        })
        .collect();
    assert_eq!(firsts, vec![0, 2, 4, 1, 3, 5]);
    assert!(Arc::ptr_eq(&u.announced[0].1, &u.announced[2].1));
    assert!(Arc::ptr_eq(&u.announced[3].1, &u.announced[5].1));
}

#[test]
fn non_canonical_prefixes_are_truncated() {
    let mut rib = router();
    rib.peer_up(peer("10.0.0.2", 65002));
    rib.update(
        ip("10.0.0.2"),
        announce(&[("10.1.2.3/16", &attrs(&[65002], "192.0.2.1"))]),
    );
    assert_eq!(best_source(&rib, "10.1.0.0/16"), Some(from("10.0.0.2")));
    rib.update(ip("10.0.0.2"), withdraw(&["10.1.9.9/16"]));
    assert_eq!(rib.best().count(), 0);
}

// ---- graceful restart -------------------------------------------------------------------

fn restarting() -> (Rib, PeerInfo) {
    let mut rib = router();
    let e = peer("10.0.0.2", 65002);
    rib.peer_up(e.clone());
    rib.peer_up(ibgp("10.0.0.3"));
    let a = attrs(&[65002], "192.0.2.1");
    rib.update(
        e.addr,
        announce(&[
            ("10.1.0.0/16", &a),
            ("10.2.0.0/16", &a),
            ("2001:db8::/32", &a),
        ]),
    );
    (rib, e)
}

#[test]
fn graceful_restart_keeps_stale_routes_until_end_of_rib() {
    let (mut rib, e) = restarting();
    let before: Vec<_> = rib.best().collect();
    let ch = rib.peer_down(e.addr, true);
    assert!(
        ch.is_empty(),
        "stale routes stay in use and stay advertised"
    );
    assert_eq!(rib.stale(e.addr), 3);
    assert_eq!(rib.advertised(ip("10.0.0.3")), 3);
    let ch = rib.peer_up(e.clone());
    assert!(ch.best.is_empty());
    // A fresh 10.1/16 with new attributes replaces the stale one.
    let fresh = attrs(&[65002, 5], "192.0.2.1");
    let ch = rib.update(e.addr, announce(&[("10.1.0.0/16", &fresh)]));
    assert_eq!(ch.best.len(), 1);
    assert_eq!(rib.stale(e.addr), 2);
    // End-of-RIB for IPv4 drops the unrefreshed 10.2/16 only.
    let ch = rib.end_of_rib(e.addr, Family::Ipv4Unicast);
    assert_eq!(ch.best, vec![(net("10.2.0.0/16"), None)]);
    assert_eq!(withdrawn_to(&ch, "10.0.0.3"), vec![net("10.2.0.0/16")]);
    assert_eq!(rib.stale(e.addr), 1);
    assert_eq!(best_source(&rib, "2001:db8::/32"), Some(from("10.0.0.2")));
    assert_eq!(before.len(), 3);
    let ch = rib.purge_stale(e.addr);
    assert_eq!(ch.best, vec![(net("2001:db8::/32"), None)]);
    assert_eq!(rib.stale(e.addr), 0);
    assert!(rib.purge_stale(e.addr).is_empty());
}

#[test]
fn end_of_rib_inside_an_update_purges_too() {
    let (mut rib, e) = restarting();
    rib.peer_down(e.addr, true);
    rib.peer_up(e.clone());
    let mut u = announce(&[("10.2.0.0/16", &attrs(&[65002], "192.0.2.1"))]);
    u.end_of_rib = vec![Family::Ipv4Unicast];
    let ch = rib.update(e.addr, u);
    assert_eq!(ch.best, vec![(net("10.1.0.0/16"), None)]);
    assert!(rib.end_of_rib(e.addr, Family::Ipv4Unicast).is_empty());
    assert_eq!(rib.stale(e.addr), 1);
}

#[test]
fn stale_routes_are_purged_when_the_timer_expires_while_down() {
    let (mut rib, e) = restarting();
    rib.peer_down(e.addr, true);
    let ch = rib.purge_stale(e.addr);
    assert_eq!(ch.best.len(), 3);
    assert_eq!(withdrawn_to(&ch, "10.0.0.3").len(), 3);
    assert_eq!(rib.received(e.addr), 0);
}

#[test]
fn a_restarted_peer_with_a_new_import_filter_re_evaluates_its_stale_routes() {
    let (mut rib, mut e) = restarting();
    rib.peer_down(e.addr, true);
    let mut reject = FilterRule::new(Family::Ipv4Unicast, Action::Reject);
    reject.cidr = Some(CidrMatch::new(net("10.2.0.0/16"), MatchOperator::Equal));
    e.import = Filter::new(vec![reject]);
    let ch = rib.peer_up(e.clone());
    assert_eq!(ch.best, vec![(net("10.2.0.0/16"), None)]);
    assert_eq!(withdrawn_to(&ch, "10.0.0.3"), vec![net("10.2.0.0/16")]);
    assert_eq!(rib.accepted(e.addr), 2);
}

#[test]
fn peer_down_without_graceful_restart_after_a_restart_drops_stale_routes() {
    let (mut rib, e) = restarting();
    rib.peer_down(e.addr, true);
    let ch = rib.peer_down(e.addr, false);
    assert_eq!(ch.best.len(), 3);
    assert_eq!(rib.stale(e.addr), 0);
}

#[test]
fn peer_up_again_without_down_starts_a_new_session() {
    let (mut rib, e) = restarting();
    let ch = rib.peer_up(e.clone());
    assert_eq!(ch.best.len(), 3);
    assert_eq!(withdrawn_to(&ch, "10.0.0.3").len(), 3);
    let u = sent(&ch, "10.0.0.2").unwrap();
    assert_eq!(u.end_of_rib.len(), 2);
}

// ---- filters ------------------------------------------------------------------------------

fn rule(action: &str) -> BgpFilterRule {
    BgpFilterRule {
        action: action.to_string(),
        ..BgpFilterRule::default()
    }
}

fn cidr_rule(action: &str, op: &str, cidr: &str) -> BgpFilterRule {
    BgpFilterRule {
        cidr: cidr.to_string(),
        match_operator: op.to_string(),
        ..rule(action)
    }
}

fn import_v4(rules: Vec<BgpFilterRule>) -> Filter {
    let spec = BGPFilterSpec {
        import_v4: rules,
        ..BGPFilterSpec::default()
    };
    Filter::from_spec(&spec, Direction::Import).unwrap()
}

/// Runs `f` as an eBGP import filter over a learned route.
fn passes(f: &Filter, prefix: &str, a: &PathAttrs) -> Option<(PathAttrs, Option<u32>)> {
    let input = FilterInput {
        prefix: net(prefix),
        attrs: a,
        priority: None,
        from_peer: true,
        ebgp_session: true,
    };
    f.run(&input, &Arc::new(a.clone()))
        .map(|(a, p)| ((*a).clone(), p))
}

fn plain() -> PathAttrs {
    attrs(&[65002, 7], "192.0.2.1")
}

#[test]
fn filter_equal_and_not_equal() {
    let f = import_v4(vec![cidr_rule("Reject", "Equal", "10.1.0.0/16")]);
    assert!(passes(&f, "10.1.0.0/16", &plain()).is_none());
    assert!(passes(&f, "10.1.1.0/24", &plain()).is_some());
    let f = import_v4(vec![cidr_rule("Reject", "NotEqual", "10.1.0.0/16")]);
    assert!(passes(&f, "10.1.0.0/16", &plain()).is_some());
    assert!(passes(&f, "10.1.1.0/24", &plain()).is_none());
}

#[test]
fn filter_in_and_not_in() {
    let f = import_v4(vec![cidr_rule("Reject", "In", "10.1.0.0/16")]);
    assert!(passes(&f, "10.1.0.0/16", &plain()).is_none());
    assert!(passes(&f, "10.1.200.0/24", &plain()).is_none());
    assert!(
        passes(&f, "10.0.0.0/8", &plain()).is_some(),
        "shorter is not in"
    );
    assert!(passes(&f, "10.2.0.0/24", &plain()).is_some());
    let f = import_v4(vec![cidr_rule("Reject", "NotIn", "10.1.0.0/16")]);
    assert!(passes(&f, "10.1.3.0/24", &plain()).is_some());
    assert!(passes(&f, "10.0.0.0/8", &plain()).is_none());
}

#[test]
fn filter_prefix_length_bounds_in_and_not_in() {
    let mut r = cidr_rule("Accept", "In", "10.1.0.0/16");
    r.prefix_length = Some(PrefixLength {
        min: Some(24),
        max: Some(28),
    });
    let f = import_v4(vec![r.clone(), rule("Reject")]);
    assert!(passes(&f, "10.1.0.0/16", &plain()).is_none());
    assert!(passes(&f, "10.1.5.0/24", &plain()).is_some());
    assert!(passes(&f, "10.1.5.16/28", &plain()).is_some());
    assert!(passes(&f, "10.1.5.16/29", &plain()).is_none());
    // A min below the cidr's own length does not widen it.
    r.prefix_length = Some(PrefixLength {
        min: Some(8),
        max: None,
    });
    let f = import_v4(vec![r.clone(), rule("Reject")]);
    assert!(passes(&f, "10.0.0.0/8", &plain()).is_none());
    assert!(passes(&f, "10.1.0.0/16", &plain()).is_some());
    assert!(passes(&f, "10.1.2.3/32", &plain()).is_some());
    r.match_operator = "NotIn".into();
    r.prefix_length = Some(PrefixLength {
        min: None,
        max: Some(24),
    });
    let f = import_v4(vec![r, rule("Reject")]);
    assert!(passes(&f, "10.1.2.0/25", &plain()).is_some());
    assert!(passes(&f, "10.1.2.0/24", &plain()).is_none());
}

#[test]
fn filter_source_peer_type_community_and_as_path_prefix() {
    let mut src = rule("Reject");
    src.source = "RemotePeers".into();
    let f = Filter::from_spec(
        &BGPFilterSpec {
            export_v4: vec![src],
            ..BGPFilterSpec::default()
        },
        Direction::Export,
    )
    .unwrap();
    let local = FilterInput {
        prefix: net(PFX),
        attrs: &plain(),
        priority: None,
        from_peer: false,
        ebgp_session: true,
    };
    assert!(f.run(&local, &Arc::new(plain())).is_some());
    assert!(passes(&f, PFX, &plain()).is_none());

    let mut pt = rule("Reject");
    pt.peer_type = "iBGP".into();
    let f = import_v4(vec![pt]);
    assert!(passes(&f, PFX, &plain()).is_some(), "an eBGP session");

    let mut c = rule("Reject");
    c.communities = Some(CommunityMatch {
        values: vec!["65002:100".into()],
    });
    let mut l = rule("Reject");
    l.communities = Some(CommunityMatch {
        values: vec!["1:2:3".into()],
    });
    let f = import_v4(vec![c, l]);
    let mut tagged = plain();
    tagged.communities = vec![(65002 << 16) | 100];
    assert!(passes(&f, PFX, &tagged).is_none());
    let mut large = plain();
    large.large_communities = vec![(1, 2, 3)];
    assert!(passes(&f, PFX, &large).is_none());
    assert!(passes(&f, PFX, &plain()).is_some());

    let mut asp = rule("Reject");
    asp.as_path_prefix = Some(vec![65002, 7]);
    let f = import_v4(vec![asp]);
    assert!(passes(&f, PFX, &plain()).is_none());
    assert!(passes(&f, PFX, &attrs(&[65002, 8], "192.0.2.1")).is_some());
    assert!(passes(&f, PFX, &attrs(&[65002], "192.0.2.1")).is_some());
    let mut split = attrs(&[65002], "192.0.2.1");
    split.as_path.push(AsSegment::Sequence(vec![7, 9]));
    assert!(passes(&f, PFX, &split).is_none(), "spans sequence segments");
    let mut set = attrs(&[65002], "192.0.2.1");
    set.as_path.push(AsSegment::Set(vec![7]));
    assert!(passes(&f, PFX, &set).is_some(), "a SET is not a sequence");
}

#[test]
fn filter_operations_modify_accepted_routes() {
    let mut r = rule("Accept");
    r.operations = vec![
        FilterOperation {
            add_community: Some(CommunityValue {
                value: "65000:1".into(),
            }),
            ..FilterOperation::default()
        },
        FilterOperation {
            add_community: Some(CommunityValue {
                value: "7:8:9".into(),
            }),
            ..FilterOperation::default()
        },
        FilterOperation {
            prepend_as_path: Some(AsPathPrepend {
                prefix: vec![AsNumber(1), AsNumber(2)],
            }),
            ..FilterOperation::default()
        },
        FilterOperation {
            set_priority: Some(PriorityValue { value: 512 }),
            ..FilterOperation::default()
        },
    ];
    let f = import_v4(vec![r]);
    let (a, prio) = passes(&f, PFX, &plain()).unwrap();
    assert_eq!(a.communities, vec![(65000 << 16) | 1]);
    assert_eq!(a.large_communities, vec![(7, 8, 9)]);
    assert_eq!(a.as_path, vec![AsSegment::Sequence(vec![1, 2, 65002, 7])]);
    assert_eq!(prio, Some(512));
    // Adding a community the route has does not duplicate it.
    let (again, _) = passes(&f, PFX, &a).unwrap();
    assert_eq!(again.communities, a.communities);
}

#[test]
fn filter_first_match_wins_default_accepts_and_families_are_separate() {
    let spec = BGPFilterSpec {
        import_v4: vec![
            cidr_rule("Accept", "In", "10.1.0.0/16"),
            cidr_rule("Reject", "In", "10.0.0.0/8"),
        ],
        import_v6: vec![rule("Reject")],
        ..BGPFilterSpec::default()
    };
    let f = Filter::from_spec(&spec, Direction::Import).unwrap();
    assert!(passes(&f, "10.1.2.0/24", &plain()).is_some());
    assert!(passes(&f, "10.2.0.0/16", &plain()).is_none());
    assert!(
        passes(&f, "192.168.0.0/16", &plain()).is_some(),
        "default accept"
    );
    assert!(passes(&f, "2001:db8::/32", &plain()).is_none());
    let export = Filter::from_spec(&spec, Direction::Export).unwrap();
    assert!(export.is_empty());
    assert!(Filter::default().is_empty());
}

#[test]
fn filter_chain_keeps_the_order_of_the_peer_filters() {
    let first = import_v4(vec![cidr_rule("Reject", "Equal", PFX)]);
    let second = import_v4(vec![cidr_rule("Accept", "Equal", PFX)]);
    let f = Filter::chain(vec![first.clone(), second.clone()]);
    assert!(passes(&f, PFX, &plain()).is_none());
    let f = Filter::chain(vec![second, first]);
    assert!(passes(&f, PFX, &plain()).is_some());
}

#[test]
fn filter_interface_rules_never_match_bgp_routes() {
    let mut r = rule("Reject");
    r.interface = "*.calico".into();
    let f = import_v4(vec![r]);
    assert!(passes(&f, PFX, &plain()).is_some());
}

#[test]
fn filter_priority_match_uses_the_route_priority() {
    let f = Filter::new(vec![FilterRule {
        priority: Some(512),
        ..FilterRule::new(Family::Ipv4Unicast, Action::Reject)
    }]);
    let a = plain();
    let with = FilterInput {
        prefix: net(PFX),
        attrs: &a,
        priority: Some(512),
        from_peer: true,
        ebgp_session: false,
    };
    assert!(f.run(&with, &Arc::new(a.clone())).is_none());
    assert!(passes(&f, PFX, &a).is_some());
}

#[test]
fn filter_spec_errors_name_the_field() {
    let bad = |r: BgpFilterRule| {
        let spec = BGPFilterSpec {
            export_v6: vec![rule("Accept"), r],
            ..BGPFilterSpec::default()
        };
        Filter::from_spec(&spec, Direction::Export).unwrap_err()
    };
    let e = bad(rule("Drop"));
    assert_eq!(e.field, "exportV6[1].action");
    assert_eq!(e.value, "Drop");
    let e = bad(cidr_rule("Accept", "In", "10.0.0.0/8"));
    assert_eq!(e.field, "exportV6[1].cidr");
    assert!(e.to_string().contains("IPv6"), "{e}");
    let e = bad(cidr_rule("Accept", "Near", "fd00::/8"));
    assert_eq!(e.field, "exportV6[1].matchOperator");
    let e = bad(cidr_rule("Accept", "", "fd00::/8"));
    assert_eq!(e.field, "exportV6[1].matchOperator");
    let mut eq_len = cidr_rule("Accept", "Equal", "fd00::/8");
    eq_len.prefix_length = Some(PrefixLength {
        min: Some(64),
        max: None,
    });
    assert_eq!(bad(eq_len).field, "exportV6[1].prefixLength");
    let mut too_long = cidr_rule("Accept", "In", "fd00::/8");
    too_long.prefix_length = Some(PrefixLength {
        min: None,
        max: Some(129),
    });
    assert_eq!(bad(too_long).field, "exportV6[1].prefixLength.max");
    let mut ops = rule("Reject");
    ops.operations = vec![FilterOperation {
        set_priority: Some(PriorityValue { value: 1 }),
        ..FilterOperation::default()
    }];
    assert_eq!(bad(ops).field, "exportV6[1].operations");
    let mut empty_op = rule("Accept");
    empty_op.operations = vec![FilterOperation::default()];
    assert_eq!(bad(empty_op).field, "exportV6[1].operations[0]");
    let mut comm = rule("Accept");
    comm.communities = Some(CommunityMatch {
        values: vec!["70000:1".into()],
    });
    let e = bad(comm);
    assert_eq!(e.field, "exportV6[1].communities.values");
    assert_eq!(e.value, "70000:1");
    let mut peer_type = rule("Accept");
    peer_type.peer_type = "internal".into();
    assert_eq!(bad(peer_type).field, "exportV6[1].peerType");
}

#[test]
fn community_parsing() {
    assert_eq!(Community::parse("1:2"), Some(Community::Standard(65538)));
    assert_eq!(Community::parse("1:2:3"), Some(Community::Large(1, 2, 3)));
    assert_eq!(Community::parse("65536:1"), None);
    assert_eq!(Community::parse("1"), None);
}

#[test]
fn prepend_extends_the_first_sequence_up_to_255() {
    let mut a = attrs(&[9], "192.0.2.1");
    crate::filter::prepend_as_path(&mut a, &[1, 2]);
    assert_eq!(a.as_path, vec![AsSegment::Sequence(vec![1, 2, 9])]);
    let mut full = attrs(&[7; 255], "192.0.2.1");
    crate::filter::prepend_as_path(&mut full, &[1]);
    assert_eq!(full.as_path.len(), 2);
    assert_eq!(full.as_path[0], AsSegment::Sequence(vec![1]));
    assert_eq!(full.as_path_len(), 256);
}

#[test]
fn import_filter_drops_and_modifies_routes_in_the_rib() {
    let mut rib = router();
    let mut e = peer("10.0.0.2", 65002);
    let mut prio = rule("Accept");
    prio.cidr = "10.1.0.0/16".into();
    prio.match_operator = "Equal".into();
    prio.operations = vec![FilterOperation {
        set_priority: Some(PriorityValue { value: 300 }),
        ..FilterOperation::default()
    }];
    e.import = import_v4(vec![prio, cidr_rule("Reject", "In", "10.2.0.0/16")]);
    rib.peer_up(e);
    rib.peer_up(ibgp("10.0.0.3"));
    let a = attrs(&[65002], "192.0.2.1");
    let ch = rib.update(
        ip("10.0.0.2"),
        announce(&[("10.1.0.0/16", &a), ("10.2.0.0/16", &a)]),
    );
    assert_eq!(ch.best.len(), 1);
    assert_eq!(ch.best[0].1.as_ref().unwrap().priority, Some(300));
    assert_eq!(
        (rib.received(ip("10.0.0.2")), rib.accepted(ip("10.0.0.2"))),
        (2, 1)
    );
    assert_eq!(rib.advertised(ip("10.0.0.3")), 1);
    // Withdrawing the accepted route removes it from the Loc-RIB.
    let ch = rib.update(ip("10.0.0.2"), withdraw(&["10.1.0.0/16"]));
    assert_eq!(ch.best, vec![(net("10.1.0.0/16"), None)]);
}

#[test]
fn export_filter_sees_the_loc_rib_route_and_prepends_after_our_as() {
    let mut rib = router();
    let mut e = peer("10.0.0.3", 65003);
    let mut asp = rule("Reject");
    asp.as_path_prefix = Some(vec![65009]);
    let mut pre = rule("Accept");
    pre.operations = vec![FilterOperation {
        prepend_as_path: Some(AsPathPrepend {
            prefix: vec![AsNumber(LOCAL_AS), AsNumber(LOCAL_AS)],
        }),
        ..FilterOperation::default()
    }];
    e.export = Filter::from_spec(
        &BGPFilterSpec {
            export_v4: vec![asp, pre],
            ..BGPFilterSpec::default()
        },
        Direction::Export,
    )
    .unwrap();
    rib.peer_up(peer("10.0.0.2", 65002));
    rib.peer_up(peer("10.0.0.9", 65009));
    rib.peer_up(e);
    let ch = rib.update(
        ip("10.0.0.9"),
        announce(&[("10.9.0.0/16", &attrs(&[65009], "192.0.2.9"))]),
    );
    assert!(sent(&ch, "10.0.0.3").is_none());
    let ch = rib.update(
        ip("10.0.0.2"),
        announce(&[(PFX, &attrs(&[65002], "192.0.2.1"))]),
    );
    let out = sent_attrs(&ch, "10.0.0.3", PFX).unwrap();
    assert_eq!(
        out.as_path,
        vec![AsSegment::Sequence(vec![
            LOCAL_AS, LOCAL_AS, LOCAL_AS, 65002
        ])]
    );
    assert_eq!(rib.advertised(ip("10.0.0.3")), 1);
}

#[test]
fn ipv6_next_hop_helpers_are_consistent() {
    // A locally originated IPv6 route with an unspecified next hop gets the IPv6 self address.
    let mut rib = router();
    rib.peer_up(peer("10.0.0.3", 65003));
    let ch = rib.set_local(BTreeMap::from([(
        net("fd00:7::/64"),
        Arc::new(PathAttrs::local(IpAddr::V6(Ipv6Addr::UNSPECIFIED))),
    )]));
    assert_eq!(
        sent_attrs(&ch, "10.0.0.3", "fd00:7::/64").unwrap().next_hop,
        ip("fd00::1")
    );
}

#[test]
fn a_restarted_peer_that_became_a_client_has_its_stale_routes_reflected() {
    let mut rib = reflector();
    let mut n = ibgp("10.0.0.2");
    rib.peer_up(n.clone());
    rib.peer_up(ibgp("10.0.0.3"));
    rib.update(n.addr, announce(&[(PFX, &attrs(&[], "10.0.0.2"))]));
    assert_eq!(
        rib.advertised(ip("10.0.0.3")),
        0,
        "non-client to non-client"
    );
    rib.peer_down(n.addr, true);
    n.rr_client = true;
    let ch = rib.peer_up(n.clone());
    assert!(ch.best.is_empty());
    let r = sent_attrs(&ch, "10.0.0.3", PFX).unwrap();
    assert_eq!(r.originator_id, Some(v4("10.0.0.2")));
    // And back: no longer a client, the reflected route is withdrawn.
    rib.peer_down(n.addr, true);
    n.rr_client = false;
    let ch = rib.peer_up(n);
    assert_eq!(withdrawn_to(&ch, "10.0.0.3"), vec![net(PFX)]);
}

// ---- storage: no Adj-RIB-In/Out tables ---------------------------------------------------

#[test]
fn a_destination_with_one_path_stays_small() {
    // The sizes the memory budget of a full table rests on (docs/bench-notes/bgp.md).
    assert_eq!(std::mem::size_of::<Path>(), 24);
    assert_eq!(std::mem::size_of::<Paths>(), 24);
    assert_eq!(std::mem::size_of::<Dest>(), 48);
}

/// The `i`-th /28 of 10.0.0.0/8.
fn nth(i: u32) -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | (i << 4)), 28).unwrap())
}

#[test]
fn a_table_spanning_many_chunks_keeps_every_prefix_through_removals() {
    const N: u32 = 3 * CHUNK as u32 + 100;
    let mut rib = router();
    let (a, b, m) = (
        peer("10.0.0.2", 65002),
        peer("10.0.0.3", 65003),
        peer("10.0.0.9", 65009),
    );
    for p in [&a, &b, &m] {
        rib.peer_up(p.clone());
    }
    let from_a = Arc::new(attrs(&[65002], "192.0.2.2"));
    let from_b = Arc::new(attrs(&[65003, 1], "192.0.2.3"));
    let all = |x: &Arc<PathAttrs>| Update {
        announced: (0..N).map(|i| (nth(i), x.clone())).collect(),
        ..Update::default()
    };
    rib.update(a.addr, all(&from_a));
    // b's longer paths are second best everywhere; every destination now has two paths.
    let ch = rib.update(b.addr, all(&from_b));
    assert!(ch.is_empty());
    assert_eq!(rib.loc_rib_len(), N as usize);
    // a withdraws every third prefix: b's path takes over there.
    let gone: Vec<IpNet> = (0..N).filter(|i| i % 3 == 0).map(nth).collect();
    let ch = rib.update(
        a.addr,
        Update {
            withdrawn: gone.clone(),
            ..Update::default()
        },
    );
    assert_eq!(ch.best.len(), gone.len());
    assert_eq!(sent(&ch, "10.0.0.9").unwrap().announced.len(), gone.len());
    // b goes away: the destinations only b had go with it, in the middle of the chunks.
    let ch = rib.peer_down(b.addr, false);
    assert_eq!(ch.best.len(), gone.len());
    assert_eq!(withdrawn_to(&ch, "10.0.0.9"), gone);
    assert_eq!(rib.loc_rib_len(), (N as usize) - gone.len());
    let loc: BTreeMap<IpNet, Source> = rib.best().map(|(p, b)| (p, b.source)).collect();
    for i in 0..N {
        let want = (i % 3 != 0).then(|| from("10.0.0.2"));
        assert_eq!(loc.get(&nth(i)).copied(), want, "{}", nth(i));
    }
    assert_eq!(rib.advertised(m.addr), rib.loc_rib_len());
    // A peer with a few destinations of its own, scattered: its going removes them one by
    // one rather than compacting the table.
    let c = peer("10.0.0.4", 65004);
    rib.peer_up(c.clone());
    let few: Vec<IpNet> = [1, 700, 5000, 9000, 12_000].map(|i| nth(N + i)).to_vec();
    let from_c = Arc::new(attrs(&[65004], "192.0.2.4"));
    rib.update(
        c.addr,
        Update {
            announced: few.iter().map(|p| (*p, from_c.clone())).collect(),
            ..Update::default()
        },
    );
    let ch = rib.peer_down(c.addr, false);
    assert_eq!(withdrawn_to(&ch, "10.0.0.9"), few);
    assert_eq!(rib.loc_rib_len(), (N as usize) - gone.len());
    let loc: BTreeMap<IpNet, Source> = rib.best().map(|(p, b)| (p, b.source)).collect();
    for i in 0..N {
        let want = (i % 3 != 0).then(|| from("10.0.0.2"));
        assert_eq!(loc.get(&nth(i)).copied(), want, "{}", nth(i));
    }
    // And the rest, in descending order (each removal moves the last destination).
    let rest: Vec<IpNet> = (0..N).rev().filter(|i| i % 3 != 0).map(nth).collect();
    rib.update(
        a.addr,
        Update {
            withdrawn: rest,
            ..Update::default()
        },
    );
    assert_eq!(rib.loc_rib_len(), 0);
    assert_eq!(rib.advertised(m.addr), 0);
    assert_eq!(rib.received(a.addr), 0);
}

#[test]
fn withdrawals_and_failovers_reach_the_other_peers_and_advertised_counts_follow() {
    let mut rib = router();
    let (a, b, m) = (
        peer("10.0.0.2", 65002),
        peer("10.0.0.3", 65003),
        peer("10.0.0.9", 65009),
    );
    for p in [&a, &b, &m] {
        rib.peer_up(p.clone());
    }
    rib.update(a.addr, announce(&[(PFX, &attrs(&[65002], "192.0.2.2"))]));
    rib.update(b.addr, announce(&[(PFX, &attrs(&[65003, 1], "192.0.2.3"))]));
    rib.update(
        b.addr,
        announce(&[("10.9.0.0/16", &attrs(&[65003], "192.0.2.3"))]),
    );
    assert_eq!(rib.advertised(m.addr), 2);
    // a is best for PFX and was sent to b; nothing goes back where it came from.
    assert_eq!(rib.advertised(b.addr), 1);
    assert_eq!(rib.advertised(a.addr), 1);
    // The best path goes: the monitor gets b's path in its place, b gets a withdrawal.
    let ch = rib.update(a.addr, withdraw(&[PFX]));
    assert_eq!(
        sent_attrs(&ch, "10.0.0.9", PFX).unwrap().as_path,
        vec![AsSegment::Sequence(vec![LOCAL_AS, 65003, 1])]
    );
    assert_eq!(withdrawn_to(&ch, "10.0.0.3"), vec![net(PFX)]);
    assert_eq!(rib.advertised(m.addr), 2);
    assert_eq!(rib.advertised(b.addr), 0);
    assert_eq!(rib.advertised(a.addr), 2);
    // The last path goes: withdrawn everywhere it was sent.
    let ch = rib.update(b.addr, withdraw(&[PFX, "10.9.0.0/16"]));
    assert_eq!(
        withdrawn_to(&ch, "10.0.0.9"),
        vec![net(PFX), net("10.9.0.0/16")]
    );
    assert_eq!(
        withdrawn_to(&ch, "10.0.0.2"),
        vec![net(PFX), net("10.9.0.0/16")]
    );
    assert!(sent(&ch, "10.0.0.3").is_none());
    for p in [&a, &b, &m] {
        assert_eq!(rib.advertised(p.addr), 0);
        assert!(rib.adj_rib_out(p.addr).announced.is_empty());
    }
}

#[test]
fn a_withdrawal_and_reannouncement_in_one_update_sends_nothing() {
    let mut rib = router();
    let (a, m) = (peer("10.0.0.2", 65002), peer("10.0.0.9", 65009));
    rib.peer_up(a.clone());
    rib.peer_up(m.clone());
    let x = attrs(&[65002], "192.0.2.2");
    rib.update(a.addr, announce(&[(PFX, &x)]));
    let mut u = announce(&[(PFX, &x)]);
    u.withdrawn = vec![net(PFX)];
    assert!(rib.update(a.addr, u).is_empty());
    assert_eq!(rib.advertised(m.addr), 1);
}

#[test]
fn rejected_and_rewritten_routes_are_counted_and_re_evaluated_after_a_restart() {
    let mut rib = router();
    let mut e = peer("10.0.0.2", 65002);
    let m = peer("10.0.0.9", 65009);
    // 10.1/16 rejected, 10.2/16 tagged with a community, 10.3/16 accepted as is.
    let mut reject = FilterRule::new(Family::Ipv4Unicast, Action::Reject);
    reject.cidr = Some(CidrMatch::new(net("10.1.0.0/16"), MatchOperator::Equal));
    let mut tag = FilterRule::new(Family::Ipv4Unicast, Action::Accept);
    tag.cidr = Some(CidrMatch::new(net("10.2.0.0/16"), MatchOperator::Equal));
    tag.operations = vec![crate::filter::Operation::AddCommunity(Community::Standard(
        7,
    ))];
    e.import = Filter::new(vec![reject, tag]);
    rib.peer_up(e.clone());
    rib.peer_up(m.clone());
    let a = attrs(&[65002], "192.0.2.2");
    let routes = [
        ("10.1.0.0/16", &a),
        ("10.2.0.0/16", &a),
        ("10.3.0.0/16", &a),
    ];
    rib.update(e.addr, announce(&routes));
    assert_eq!((rib.received(e.addr), rib.accepted(e.addr)), (3, 2));
    assert_eq!(rib.advertised(m.addr), 2);
    assert_eq!(
        best_attrs(&rib, "10.2.0.0/16").unwrap().communities,
        vec![7]
    );
    // The Adj-RIB-In shows the routes as received, also the rewritten and the rejected one.
    let adj_in = rib.adj_rib_in(e.addr).announced;
    assert_eq!(adj_in.len(), 3);
    assert!(adj_in.iter().all(|(_, x)| **x == a));

    // The session restarts with the filter turned around: 10.1/16 now passes untouched
    // (from what was received), 10.2/16 is rejected, 10.3/16 is tagged.
    rib.peer_down(e.addr, true);
    assert_eq!(rib.stale(e.addr), 3);
    let mut reject = FilterRule::new(Family::Ipv4Unicast, Action::Reject);
    reject.cidr = Some(CidrMatch::new(net("10.2.0.0/16"), MatchOperator::Equal));
    let mut tag = FilterRule::new(Family::Ipv4Unicast, Action::Accept);
    tag.cidr = Some(CidrMatch::new(net("10.3.0.0/16"), MatchOperator::Equal));
    tag.operations = vec![crate::filter::Operation::AddCommunity(Community::Standard(
        8,
    ))];
    e.import = Filter::new(vec![reject, tag]);
    let ch = rib.peer_up(e.clone());
    assert_eq!(ch.best.len(), 3);
    assert_eq!(best_attrs(&rib, "10.1.0.0/16").unwrap(), a);
    assert_eq!(best_source(&rib, "10.2.0.0/16"), None);
    assert_eq!(
        best_attrs(&rib, "10.3.0.0/16").unwrap().communities,
        vec![8]
    );
    assert_eq!(withdrawn_to(&ch, "10.0.0.9"), vec![net("10.2.0.0/16")]);
    let to_m = sent(&ch, "10.0.0.9").unwrap();
    assert_eq!(to_m.announced.len(), 2);
    assert_eq!((rib.received(e.addr), rib.accepted(e.addr)), (3, 2));
    assert_eq!(rib.stale(e.addr), 3, "re-evaluated, still not refreshed");
    assert_eq!(rib.advertised(m.addr), 2);
    let adj_in = rib.adj_rib_in(e.addr).announced;
    assert!(adj_in.len() == 3 && adj_in.iter().all(|(_, x)| **x == a));

    // End-of-RIB without a refresh sweeps all three, the rejected one included.
    let ch = rib.end_of_rib(e.addr, Family::Ipv4Unicast);
    assert_eq!(ch.best.len(), 2);
    assert_eq!((rib.received(e.addr), rib.accepted(e.addr)), (0, 0));
    assert_eq!(rib.stale(e.addr), 0);
    assert_eq!(rib.advertised(m.addr), 0);
    assert_eq!(rib.loc_rib_len(), 0);
}

#[test]
fn a_rejected_route_replaced_by_an_accepted_one_and_back() {
    let mut rib = router();
    let mut e = peer("10.0.0.2", 65002);
    let m = peer("10.0.0.9", 65009);
    let mut drop2 = FilterRule::new(Family::Ipv4Unicast, Action::Reject);
    drop2.community = Some(Community::Standard(2));
    e.import = Filter::new(vec![drop2]);
    rib.peer_up(e.clone());
    rib.peer_up(m.clone());
    let mut bad = attrs(&[65002], "192.0.2.2");
    bad.communities = vec![2];
    let good = attrs(&[65002], "192.0.2.2");
    rib.update(e.addr, announce(&[(PFX, &bad)]));
    assert_eq!((rib.received(e.addr), rib.accepted(e.addr)), (1, 0));
    let ch = rib.update(e.addr, announce(&[(PFX, &good)]));
    assert_eq!(sent_attrs(&ch, "10.0.0.9", PFX).unwrap().as_path.len(), 1);
    assert_eq!((rib.received(e.addr), rib.accepted(e.addr)), (1, 1));
    let ch = rib.update(e.addr, announce(&[(PFX, &bad)]));
    assert_eq!(withdrawn_to(&ch, "10.0.0.9"), vec![net(PFX)]);
    assert_eq!((rib.received(e.addr), rib.accepted(e.addr)), (1, 0));
    assert_eq!(rib.advertised(m.addr), 0);
    rib.update(e.addr, withdraw(&[PFX]));
    assert_eq!(rib.received(e.addr), 0);
    assert!(rib.adj_rib_in(e.addr).announced.is_empty());
}

#[test]
fn a_prefix_dependent_export_filter_applies_to_each_prefix_of_a_shared_attribute_set() {
    // Consecutive prefixes with one attribute `Arc` reuse export's prefix-independent
    // decisions (`Recent`); the export filter must still see every prefix.
    let mut rib = router();
    let e = peer("10.0.0.2", 65002);
    let mut m = peer("10.0.0.9", 65009);
    let mut no = FilterRule::new(Family::Ipv4Unicast, Action::Reject);
    no.cidr = Some(CidrMatch::new(net("10.2.0.0/16"), MatchOperator::Equal));
    m.export = Filter::new(vec![no]);
    let plain = peer("10.0.0.8", 65008);
    for p in [&e, &m, &plain] {
        rib.peer_up(p.clone());
    }
    let a = Arc::new(attrs(&[65002], "192.0.2.2"));
    let u = Update {
        announced: ["10.1.0.0/16", "10.2.0.0/16", "10.3.0.0/16", "2001:db8::/32"]
            .map(|p| (net(p), a.clone()))
            .to_vec(),
        ..Update::default()
    };
    let ch = rib.update(e.addr, u);
    let to = |peer: &str| -> Vec<IpNet> {
        let mut v: Vec<IpNet> = sent(&ch, peer)
            .map(|u| u.announced.iter().map(|(p, _)| *p).collect())
            .unwrap_or_default();
        v.sort();
        v
    };
    assert_eq!(
        to("10.0.0.9"),
        vec![net("10.1.0.0/16"), net("10.3.0.0/16"), net("2001:db8::/32")]
    );
    assert_eq!(to("10.0.0.8").len(), 4);
    // IPv6 prefixes get the IPv6 next hop even right after IPv4 ones with the same `Arc`.
    assert_eq!(
        sent_attrs(&ch, "10.0.0.8", "2001:db8::/32")
            .unwrap()
            .next_hop,
        ip("fd00::1")
    );
    assert_eq!(
        sent_attrs(&ch, "10.0.0.8", "10.3.0.0/16").unwrap().next_hop,
        ip("10.0.0.1")
    );
    assert_eq!(rib.advertised(m.addr), 3);
    assert_eq!(rib.adj_rib_out(m.addr).announced.len(), 3);
}
