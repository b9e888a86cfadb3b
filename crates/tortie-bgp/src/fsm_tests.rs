//! Session FSM tests: two [`Session`]s wired back to back in memory, time driven by hand.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use netgauze_bgp_pkt::capabilities::{
    BgpCapability, FourOctetAsCapability, MultiProtocolExtensionsCapability,
};
use netgauze_bgp_pkt::open::{BgpOpenMessage, BgpOpenMessageParameter};

use super::*;
use crate::codec::{self, Notification, update_error};
use crate::types::{AsSegment, Family, PathAttrs, Update};

const BIG_AS: u32 = 4_200_000_001;
const SMALL_AS: u32 = 64512;

fn id(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 0, last)
}

fn config(local_as: u32, remote_as: u32, local_id: Ipv4Addr) -> SessionConfig {
    SessionConfig {
        families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        ..SessionConfig::new(local_as, remote_as, local_id)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    A,
    B,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

enum Wire {
    Bytes(Vec<u8>),
    Closed,
}

/// Two sessions and the TCP connection between them.
struct Pair {
    a: Session,
    b: Session,
    now: Instant,
    /// Socket open on each side.
    open: [bool; 2],
    queue: VecDeque<(Side, Wire)>,
    /// Everything but Send/Disconnect, per side.
    events: [Vec<Output>; 2],
    /// Every message sent, per side.
    sent: [Vec<Vec<u8>>; 2],
    /// Drop what a side sends (a silent peer).
    mute: [bool; 2],
}

fn idx(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

impl Pair {
    fn new(a: SessionConfig, b: SessionConfig) -> Pair {
        Pair {
            a: Session::new(a),
            b: Session::new(b),
            now: Instant::now(),
            open: [false; 2],
            queue: VecDeque::new(),
            events: [Vec::new(), Vec::new()],
            sent: [Vec::new(), Vec::new()],
            mute: [false; 2],
        }
    }

    fn session(&mut self, side: Side) -> &mut Session {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    fn input(&mut self, side: Side, input: Input<'_>) -> Vec<Output> {
        let now = self.now;
        let outputs = self.session(side).process(now, input);
        for o in &outputs {
            match o {
                Output::Send(bytes) => {
                    self.sent[idx(side)].push(bytes.clone());
                    if self.open[idx(side)] && !self.mute[idx(side)] {
                        self.queue
                            .push_back((side.other(), Wire::Bytes(bytes.clone())));
                    }
                }
                Output::Disconnect => {
                    if std::mem::replace(&mut self.open[idx(side)], false) {
                        self.queue.push_back((side.other(), Wire::Closed));
                    }
                }
                other => self.events[idx(side)].push(other.clone()),
            }
        }
        outputs
    }

    fn pump(&mut self) {
        while let Some((to, wire)) = self.queue.pop_front() {
            if !self.open[idx(to)] {
                continue;
            }
            match wire {
                Wire::Bytes(bytes) => {
                    self.input(to, Input::Bytes(&bytes));
                }
                Wire::Closed => {
                    self.input(to, Input::TcpFailed("Connection reset by peer".into()));
                    self.open[idx(to)] = false;
                }
            }
        }
    }

    /// Starts both sessions and brings up the connection `initiator` asked for.
    fn connect(&mut self, initiator: Side) {
        let out = self.input(initiator, Input::ManualStart);
        assert!(out.contains(&Output::Connect), "{out:?}");
        self.input(initiator.other(), Input::ManualStart);
        self.link_up();
    }

    fn link_up(&mut self) {
        self.open = [true, true];
        self.input(Side::A, Input::TcpConnected);
        self.input(Side::B, Input::TcpConnected);
        self.pump();
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.input(Side::A, Input::Tick);
        self.input(Side::B, Input::Tick);
        self.pump();
    }

    fn established(&self, side: Side) -> Option<&Negotiated> {
        self.events[idx(side)].iter().find_map(|o| match o {
            Output::Established(n) => Some(n),
            _ => None,
        })
    }

    fn downs(&self, side: Side) -> Vec<&DownReason> {
        self.events[idx(side)]
            .iter()
            .filter_map(|o| match o {
                Output::Down(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn received(&self, side: Side) -> Vec<&Update> {
        self.events[idx(side)]
            .iter()
            .filter_map(|o| match o {
                Output::Received(u) => Some(u),
                _ => None,
            })
            .collect()
    }

    fn keepalives_sent(&self, side: Side) -> usize {
        self.sent[idx(side)]
            .iter()
            .filter(|m| m.len() == 19 && m[18] == 4)
            .count()
    }
}

fn established_pair(a: SessionConfig, b: SessionConfig) -> Pair {
    let mut pair = Pair::new(a, b);
    pair.connect(Side::A);
    assert_eq!(pair.a.state(), State::Established, "{:?}", pair.events);
    assert_eq!(pair.b.state(), State::Established, "{:?}", pair.events);
    pair
}

fn route(prefix: &str, attrs: &Arc<PathAttrs>) -> (IpNet, Arc<PathAttrs>) {
    (prefix.parse().unwrap(), attrs.clone())
}

/// Sorted copy, for comparing updates whose order the encoding may change.
fn sorted(update: &Update) -> Update {
    let mut u = update.clone();
    u.announced.sort_by_key(|x| x.0);
    u.withdrawn.sort();
    u.end_of_rib.sort();
    u
}

fn merged(updates: &[&Update]) -> Update {
    let mut out = Update::default();
    for u in updates {
        out.announced.extend(u.announced.iter().cloned());
        out.withdrawn.extend(u.withdrawn.iter().cloned());
        out.end_of_rib.extend(u.end_of_rib.iter().cloned());
    }
    sorted(&out)
}

/// An OPEN from a hand-made peer.
fn peer_open(my_as: u16, hold_time: u16, bgp_id: Ipv4Addr, caps: Vec<BgpCapability>) -> Vec<u8> {
    let open = BgpOpenMessage::new(
        my_as,
        hold_time,
        bgp_id,
        vec![BgpOpenMessageParameter::Capabilities(caps.into())],
    );
    codec::encode_open(&open).unwrap()
}

fn mp(family: Family) -> BgpCapability {
    BgpCapability::MultiProtocolExtensions(MultiProtocolExtensionsCapability::new(
        codec::family_address_type(family),
    ))
}

/// A session in OpenSent, its OPEN already sent.
fn open_sent(config: SessionConfig) -> (Session, Instant) {
    let now = Instant::now();
    let mut s = Session::new(config);
    assert_eq!(s.process(now, Input::ManualStart), vec![Output::Connect]);
    let out = s.process(now, Input::TcpConnected);
    assert!(matches!(out.as_slice(), [Output::Send(m)] if m[18] == 1));
    assert_eq!(s.state(), State::OpenSent);
    (s, now)
}

/// The NOTIFICATION a session sent, from its outputs.
fn sent_notification(out: &[Output]) -> Option<Notification> {
    out.iter().find_map(|o| match o {
        Output::Send(m) if m[18] == 3 => Some(Notification::new(m[19], m[20], &m[21..])),
        _ => None,
    })
}

#[test]
fn establishes_with_four_octet_as_from_either_side() {
    for initiator in [Side::A, Side::B] {
        let mut pair = Pair::new(
            config(BIG_AS, SMALL_AS, id(1)),
            config(SMALL_AS, BIG_AS, id(2)),
        );
        pair.connect(initiator);
        let a = pair.established(Side::A).expect("A established").clone();
        let b = pair.established(Side::B).expect("B established").clone();
        assert_eq!(a.remote_as, SMALL_AS);
        assert_eq!(b.remote_as, BIG_AS);
        assert_eq!(a.remote_id, id(2));
        assert_eq!(b.remote_id, id(1));
        assert!(a.four_octet_as && b.four_octet_as);
        assert!(a.route_refresh && b.route_refresh);
        assert_eq!(a.hold_time, 90);
        assert_eq!(a.keepalive, Duration::from_secs(30));
        assert_eq!(a.families, vec![Family::Ipv4Unicast, Family::Ipv6Unicast]);
        assert_eq!(pair.a.negotiated(), Some(&a));
        assert!(pair.events[0].contains(&Output::OpenReceived { remote_id: id(2) }));
        assert!(pair.a.last_error().is_none());
    }
}

#[test]
fn passive_side_waits_for_the_connection() {
    let mut b_config = config(SMALL_AS, BIG_AS, id(2));
    b_config.passive = true;
    let mut pair = Pair::new(config(BIG_AS, SMALL_AS, id(1)), b_config);
    assert!(pair.input(Side::B, Input::ManualStart).is_empty());
    assert_eq!(pair.b.state(), State::Active);
    assert_eq!(pair.b.next_deadline(), None);
    pair.advance(Duration::from_secs(60));
    assert!(!pair.events[1].contains(&Output::Connect));
    pair.input(Side::A, Input::ManualStart);
    pair.link_up();
    assert_eq!(pair.b.state(), State::Established);
}

#[test]
fn families_are_the_intersection() {
    let mut b_config = config(SMALL_AS, BIG_AS, id(2));
    b_config.families = vec![Family::Ipv4Unicast];
    let pair = established_pair(config(BIG_AS, SMALL_AS, id(1)), b_config);
    assert_eq!(
        pair.established(Side::A).unwrap().families,
        vec![Family::Ipv4Unicast]
    );

    let mut a_config = config(BIG_AS, SMALL_AS, id(1));
    a_config.families = vec![Family::Ipv6Unicast];
    let pair = established_pair(a_config, config(SMALL_AS, BIG_AS, id(2)));
    assert_eq!(
        pair.established(Side::B).unwrap().families,
        vec![Family::Ipv6Unicast]
    );
}

#[test]
fn no_common_family_is_unsupported_capability() {
    let mut a_config = config(BIG_AS, SMALL_AS, id(1));
    a_config.families = vec![Family::Ipv6Unicast];
    let mut b_config = config(SMALL_AS, BIG_AS, id(2));
    b_config.families = vec![Family::Ipv4Unicast];
    let mut pair = Pair::new(a_config, b_config);
    pair.connect(Side::A);
    let sent = pair.downs(Side::A)[0].sent().unwrap();
    assert_eq!((sent.code, sent.subcode), (2, 7));
    assert_eq!(sent.data, vec![1, 4, 0, 2, 0, 1]);
}

#[test]
fn peer_without_mp_capability_carries_ipv4_only() {
    let (mut s, now) = open_sent(config(SMALL_AS, 65001, id(1)));
    let open = peer_open(65001, 90, id(2), vec![]);
    let out = s.process(now, Input::Bytes(&open));
    assert_eq!(out[0], Output::Send(codec::keepalive()));
    let n = s.negotiated().unwrap();
    assert_eq!(n.families, vec![Family::Ipv4Unicast]);
    assert!(!n.four_octet_as);
    assert!(!n.route_refresh);
}

#[test]
fn old_speaker_gets_as_trans_and_as4_path() {
    // Our side has a 4-octet AS; the peer is an OLD speaker (no capability 65).
    let (mut s, now) = open_sent(config(BIG_AS, SMALL_AS, id(1)));
    let open = peer_open(
        SMALL_AS as u16,
        90,
        id(2),
        vec![mp(Family::Ipv4Unicast), BgpCapability::RouteRefresh],
    );
    s.process(now, Input::Bytes(&open));
    let out = s.process(now, Input::Bytes(&codec::keepalive()));
    assert_eq!(s.state(), State::Established, "{out:?}");
    assert!(!s.negotiated().unwrap().four_octet_as);

    let mut attrs = PathAttrs::local(IpAddr::V4(id(1)));
    attrs.as_path = vec![AsSegment::Sequence(vec![BIG_AS, 65010])];
    let attrs = Arc::new(attrs);
    let update = Update {
        announced: vec![route("198.18.10.0/24", &attrs)],
        ..Update::default()
    };
    let out = s.process(now, Input::Announce(update.clone()));
    let [Output::Send(message)] = out.as_slice() else {
        panic!("{out:?}");
    };
    // On the wire: AS_PATH with AS_TRANS, AS4_PATH with the real ASN.
    let as_path = [0x40, 2, 6, 2, 2, 0x5b, 0xa0, 0xfd, 0xf2];
    assert!(
        message.windows(as_path.len()).any(|w| w == as_path),
        "{message:02x?}"
    );
    let as4_path = [0xc0, 17, 10, 2, 2];
    assert!(
        message.windows(as4_path.len()).any(|w| w == as4_path),
        "{message:02x?}"
    );
    let decoded = codec::decode_update(&message[19..], false).unwrap();
    assert_eq!(decoded, update);
}

#[test]
fn our_open_uses_as_trans_and_advertises_capabilities() {
    let mut c = config(BIG_AS, SMALL_AS, id(1));
    c.graceful_restart = Some(120);
    let mut s = Session::new(c);
    let now = Instant::now();
    s.process(now, Input::ManualStart);
    let out = s.process(now, Input::TcpConnected);
    let [Output::Send(open)] = out.as_slice() else {
        panic!("{out:?}");
    };
    let Ok(codec::Message::Open(open)) = codec::decode_message(open, true) else {
        panic!("not an OPEN");
    };
    assert_eq!(u32::from(open.my_as()), codec::AS_TRANS);
    assert_eq!(open.hold_time(), 90);
    assert_eq!(open.bgp_id(), id(1));
    let caps = open.capabilities();
    assert!(caps.contains(&&mp(Family::Ipv4Unicast)));
    assert!(caps.contains(&&mp(Family::Ipv6Unicast)));
    assert!(caps.contains(&&BgpCapability::RouteRefresh));
    assert!(
        caps.contains(&&BgpCapability::FourOctetAs(FourOctetAsCapability::new(
            BIG_AS
        )))
    );
    assert!(
        caps.iter()
            .any(|c| matches!(c, BgpCapability::GracefulRestartCapability(gr) if gr.time() == 120))
    );
}

#[test]
fn graceful_restart_capability_is_parsed() {
    let mut a_config = config(BIG_AS, SMALL_AS, id(1));
    a_config.graceful_restart = Some(120);
    let pair = established_pair(a_config, config(SMALL_AS, BIG_AS, id(2)));
    assert_eq!(
        pair.established(Side::B).unwrap().peer_graceful_restart,
        Some(PeerGracefulRestart {
            restart_time: 120,
            restarting: false,
            preserved: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        })
    );
    assert_eq!(
        pair.established(Side::A).unwrap().peer_graceful_restart,
        None
    );
}

#[test]
fn graceful_restart_bits_from_a_restarting_peer() {
    // RFC 4724 §3: R bit set, restart time 300, IPv4 with F bit, IPv6 without.
    let (mut s, now) = open_sent(config(SMALL_AS, 65001, id(1)));
    let open = peer_open(
        65001,
        90,
        id(2),
        vec![mp(Family::Ipv4Unicast), mp(Family::Ipv6Unicast)],
    );
    let gr = [64, 10, 0x81, 0x2c, 0, 1, 1, 0x80, 0, 2, 1, 0x00];
    let open = splice_capability(&open, &gr);
    s.process(now, Input::Bytes(&open));
    assert_eq!(
        s.negotiated().unwrap().peer_graceful_restart,
        Some(PeerGracefulRestart {
            restart_time: 300,
            restarting: true,
            preserved: vec![Family::Ipv4Unicast],
        })
    );
}

/// Appends a raw capability TLV to the single Capabilities parameter of an OPEN.
fn splice_capability(open: &[u8], tlv: &[u8]) -> Vec<u8> {
    let mut out = open.to_vec();
    out.extend_from_slice(tlv);
    out[28] += tlv.len() as u8; // optional parameters length
    out[30] += tlv.len() as u8; // capabilities parameter length
    let len = out.len() as u16;
    out[16..18].copy_from_slice(&len.to_be_bytes());
    out
}

#[test]
fn unknown_capabilities_are_ignored() {
    let (mut s, now) = open_sent(config(SMALL_AS, 65001, id(1)));
    let open = peer_open(65001, 90, id(2), vec![mp(Family::Ipv4Unicast)]);
    // Hostname (73), an unassigned code (200) and a malformed 4-octet AS (length 2).
    let open = splice_capability(&open, &[73, 5, 3, b'f', b'r', b'r', 0]);
    let open = splice_capability(&open, &[200, 2, 1, 2]);
    let open = splice_capability(&open, &[65, 2, 0, 1]);
    let out = s.process(now, Input::Bytes(&open));
    assert_eq!(s.state(), State::OpenConfirm, "{out:?}");
}

#[test]
fn route_announce_and_withdraw_round_trip() {
    let mut pair = established_pair(
        config(BIG_AS, SMALL_AS, id(1)),
        config(SMALL_AS, BIG_AS, id(2)),
    );
    let mut v4 = PathAttrs::local(IpAddr::V4(id(1)));
    v4.as_path = vec![AsSegment::Sequence(vec![BIG_AS])];
    v4.med = Some(10);
    v4.communities = vec![(65000 << 16) | 100];
    v4.large_communities = vec![(BIG_AS, 1, 2)];
    let v4 = Arc::new(v4);
    let mut v6 = (*v4).clone();
    v6.next_hop = IpAddr::V6("2001:db8::1".parse().unwrap());
    let v6 = Arc::new(v6);
    let update = Update {
        announced: vec![
            route("198.18.1.0/24", &v4),
            route("198.18.2.0/26", &v4),
            route("2001:db8:1::/48", &v6),
        ],
        withdrawn: vec![],
        end_of_rib: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
    };
    pair.input(Side::A, Input::Announce(update.clone()));
    pair.pump();
    assert_eq!(merged(&pair.received(Side::B)), sorted(&update));

    pair.events[1].clear();
    let withdraw = Update {
        withdrawn: vec![
            "198.18.1.0/24".parse().unwrap(),
            "2001:db8:1::/48".parse().unwrap(),
        ],
        ..Update::default()
    };
    pair.input(Side::A, Input::Announce(withdraw.clone()));
    pair.pump();
    assert_eq!(merged(&pair.received(Side::B)), sorted(&withdraw));
}

#[test]
fn routes_of_families_not_negotiated_are_not_sent() {
    let mut b_config = config(SMALL_AS, BIG_AS, id(2));
    b_config.families = vec![Family::Ipv4Unicast];
    let mut pair = established_pair(config(BIG_AS, SMALL_AS, id(1)), b_config);
    let v6 = Arc::new(PathAttrs::local(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    let update = Update {
        announced: vec![route("2001:db8::/32", &v6)],
        end_of_rib: vec![Family::Ipv6Unicast],
        ..Update::default()
    };
    let out = pair.input(Side::A, Input::Announce(update));
    assert!(out.is_empty(), "{out:?}");
}

#[test]
fn announce_is_ignored_unless_established() {
    let (mut s, now) = open_sent(config(SMALL_AS, 65001, id(1)));
    let update = Update {
        end_of_rib: vec![Family::Ipv4Unicast],
        ..Update::default()
    };
    assert!(s.process(now, Input::Announce(update)).is_empty());
}

#[test]
fn hold_timer_expires() {
    let mut pair = established_pair(
        config(BIG_AS, SMALL_AS, id(1)),
        config(SMALL_AS, BIG_AS, id(2)),
    );
    pair.mute[1] = true; // B goes silent
    pair.advance(Duration::from_secs(89));
    assert_eq!(pair.a.state(), State::Established);
    pair.advance(Duration::from_secs(1));
    assert_eq!(pair.a.state(), State::Idle);
    assert_eq!(pair.downs(Side::A), vec![&DownReason::HoldTimerExpired]);
    assert_eq!(
        pair.a.last_error().unwrap().to_string(),
        "Error: Hold Timer Expired"
    );
    let n = pair.downs(Side::A)[0].sent().unwrap();
    assert_eq!((n.code, n.subcode), (4, 0));
    // B heard the NOTIFICATION.
    assert_eq!(
        pair.downs(Side::B),
        vec![&DownReason::NotificationReceived(
            Notification::hold_timer_expired()
        )]
    );
    assert_eq!(
        pair.b.last_error().unwrap().to_string(),
        "Received: Hold Timer Expired"
    );
}

#[test]
fn open_sent_hold_timer_is_four_minutes() {
    let (mut s, now) = open_sent(config(SMALL_AS, 65001, id(1)));
    assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(240)));
    assert!(
        s.process(now + Duration::from_secs(239), Input::Tick)
            .is_empty()
    );
    let out = s.process(now + Duration::from_secs(240), Input::Tick);
    assert_eq!(
        sent_notification(&out),
        Some(Notification::hold_timer_expired())
    );
    assert!(out.contains(&Output::Disconnect));
}

#[test]
fn keepalive_cadence() {
    let mut pair = established_pair(
        config(BIG_AS, SMALL_AS, id(1)),
        config(SMALL_AS, BIG_AS, id(2)),
    );
    let start = pair.now;
    let before = pair.keepalives_sent(Side::A);
    assert_eq!(
        pair.a.next_deadline(),
        Some(start + Duration::from_secs(30))
    );
    pair.advance(Duration::from_secs(29));
    assert_eq!(pair.keepalives_sent(Side::A), before);
    pair.advance(Duration::from_secs(1));
    assert_eq!(pair.keepalives_sent(Side::A), before + 1);
    // Ten minutes in ten-second steps: one keepalive every 30 s, the session stays up.
    for _ in 0..60 {
        pair.advance(Duration::from_secs(10));
    }
    assert_eq!(pair.keepalives_sent(Side::A), before + 21);
    assert_eq!(pair.a.state(), State::Established);
    assert_eq!(pair.b.state(), State::Established);
    assert!(pair.downs(Side::A).is_empty());
}

#[test]
fn zero_hold_time_means_no_keepalives() {
    let mut a_config = config(BIG_AS, SMALL_AS, id(1));
    a_config.hold_time = 0;
    let mut pair = established_pair(a_config, config(SMALL_AS, BIG_AS, id(2)));
    assert_eq!(pair.established(Side::B).unwrap().hold_time, 0);
    assert_eq!(pair.a.next_deadline(), None);
    assert_eq!(pair.b.next_deadline(), None);
    pair.advance(Duration::from_secs(3600));
    assert_eq!(pair.b.state(), State::Established);
}

#[test]
fn bad_peer_as_on_both_sides() {
    let mut pair = Pair::new(
        config(BIG_AS, 65000, id(1)),
        config(SMALL_AS, BIG_AS, id(2)),
    );
    pair.connect(Side::A);
    let expected = Notification::new(2, 2, SMALL_AS.to_be_bytes());
    assert_eq!(
        pair.downs(Side::A),
        vec![&DownReason::NotificationSent(expected.clone())]
    );
    assert_eq!(
        pair.downs(Side::B),
        vec![&DownReason::NotificationReceived(expected)]
    );
    assert_eq!(
        pair.b.last_error().unwrap().to_string(),
        "Received: OPEN Message Error / Bad Peer AS"
    );
    assert_eq!(
        pair.a.last_error().unwrap().to_string(),
        "Error: OPEN Message Error / Bad Peer AS"
    );
    assert_eq!(pair.a.state(), State::Idle);
    assert_eq!(pair.b.state(), State::Idle);
}

#[test]
fn bad_peer_as_from_an_old_speaker() {
    let (mut s, now) = open_sent(config(SMALL_AS, 65001, id(1)));
    let out = s.process(now, Input::Bytes(&peer_open(65002, 90, id(2), vec![])));
    assert_eq!(
        sent_notification(&out),
        Some(Notification::new(2, 2, 65002u16.to_be_bytes()))
    );
}

#[test]
fn unacceptable_hold_time() {
    for hold in [1u16, 2] {
        let (mut s, now) = open_sent(config(SMALL_AS, 65001, id(1)));
        let mut open = peer_open(65001, 90, id(2), vec![]);
        open[22..24].copy_from_slice(&hold.to_be_bytes());
        let out = s.process(now, Input::Bytes(&open));
        assert_eq!(
            sent_notification(&out).map(|n| (n.code, n.subcode)),
            Some((2, 6))
        );
        assert_eq!(
            s.last_error().unwrap().to_string(),
            "Error: OPEN Message Error / Unacceptable Hold Time"
        );
    }
}

#[test]
fn unsupported_version() {
    let (mut s, now) = open_sent(config(SMALL_AS, 65001, id(1)));
    let mut open = peer_open(65001, 90, id(2), vec![]);
    open[19] = 3;
    let out = s.process(now, Input::Bytes(&open));
    assert_eq!(
        sent_notification(&out),
        Some(Notification::new(2, 1, [0, 4]))
    );
    assert_eq!(s.state(), State::Idle);
}

#[test]
fn bgp_identifier_checks() {
    // Zero is always bad.
    let (mut s, now) = open_sent(config(SMALL_AS, 65001, id(1)));
    let out = s.process(
        now,
        Input::Bytes(&peer_open(65001, 90, Ipv4Addr::UNSPECIFIED, vec![])),
    );
    assert_eq!(
        sent_notification(&out).map(|n| (n.code, n.subcode)),
        Some((2, 3))
    );
    // Our own identifier is bad from an internal peer ...
    let (mut s, now) = open_sent(config(SMALL_AS, SMALL_AS, id(1)));
    let out = s.process(
        now,
        Input::Bytes(&peer_open(SMALL_AS as u16, 90, id(1), vec![])),
    );
    assert_eq!(
        sent_notification(&out),
        Some(Notification::new(2, 3, id(1).octets()))
    );
    // ... and fine from an external one (RFC 6286 §2.2).
    let (mut s, now) = open_sent(config(SMALL_AS, 65001, id(1)));
    s.process(now, Input::Bytes(&peer_open(65001, 90, id(1), vec![])));
    assert_eq!(s.state(), State::OpenConfirm);
}

#[test]
fn messages_in_the_wrong_state_are_fsm_errors() {
    // KEEPALIVE in OpenSent.
    let (mut s, now) = open_sent(config(SMALL_AS, 65001, id(1)));
    let out = s.process(now, Input::Bytes(&codec::keepalive()));
    assert_eq!(sent_notification(&out), Some(Notification::fsm(1)));
    assert_eq!(
        s.last_error().unwrap().to_string(),
        "Error: Finite State Machine Error / Receive Unexpected Message in OpenSent State"
    );
    // UPDATE in OpenConfirm.
    let (mut s, now) = open_sent(config(SMALL_AS, 65001, id(1)));
    s.process(now, Input::Bytes(&peer_open(65001, 90, id(2), vec![])));
    let eor = codec::encode_update(
        &Update {
            end_of_rib: vec![Family::Ipv4Unicast],
            ..Update::default()
        },
        false,
    )
    .unwrap();
    let out = s.process(now, Input::Bytes(&eor[0]));
    assert_eq!(sent_notification(&out), Some(Notification::fsm(2)));
    // OPEN in Established.
    let mut pair = established_pair(
        config(BIG_AS, SMALL_AS, id(1)),
        config(SMALL_AS, BIG_AS, id(2)),
    );
    let open = peer_open(SMALL_AS as u16, 90, id(2), vec![]);
    let out = pair.input(Side::A, Input::Bytes(&open));
    assert_eq!(sent_notification(&out), Some(Notification::fsm(3)));
    assert_eq!(
        out.last(),
        Some(&Output::Down(DownReason::NotificationSent(
            Notification::fsm(3)
        )))
    );
}

#[test]
fn header_errors_close_the_session() {
    let mut pair = established_pair(
        config(BIG_AS, SMALL_AS, id(1)),
        config(SMALL_AS, BIG_AS, id(2)),
    );
    let out = pair.input(Side::A, Input::Bytes(&[0u8; 19]));
    assert_eq!(sent_notification(&out), Some(Notification::new(1, 1, [])));
    assert_eq!(pair.a.state(), State::Idle);

    let mut pair = established_pair(
        config(BIG_AS, SMALL_AS, id(1)),
        config(SMALL_AS, BIG_AS, id(2)),
    );
    let mut long = codec::keepalive();
    long[16..18].copy_from_slice(&5000u16.to_be_bytes());
    let out = pair.input(Side::A, Input::Bytes(&long));
    assert_eq!(
        sent_notification(&out),
        Some(Notification::new(1, 2, 5000u16.to_be_bytes()))
    );
}

#[test]
fn malformed_update_is_an_update_error() {
    let mut pair = established_pair(
        config(BIG_AS, SMALL_AS, id(1)),
        config(SMALL_AS, BIG_AS, id(2)),
    );
    // NLRI without any attribute.
    let mut update = vec![0xff; 16];
    update.extend_from_slice(&[0, 27, 2, 0, 0, 0, 0, 24, 198, 18, 1]);
    let out = pair.input(Side::A, Input::Bytes(&update));
    assert_eq!(
        sent_notification(&out),
        Some(Notification::new(3, update_error::MISSING_WELL_KNOWN, [1]))
    );
    pair.pump();
    assert_eq!(
        pair.b.last_error().unwrap().to_string(),
        "Received: UPDATE Message Error / Missing Well-known Attribute"
    );
}

#[test]
fn bytes_split_anywhere_are_reassembled() {
    let mut pair = established_pair(
        config(BIG_AS, SMALL_AS, id(1)),
        config(SMALL_AS, BIG_AS, id(2)),
    );
    let attrs = Arc::new(PathAttrs::local(IpAddr::V4(id(2))));
    let update = Update {
        announced: vec![route("198.18.5.0/24", &attrs)],
        ..Update::default()
    };
    let mut bytes = codec::encode_update(&update, true).unwrap().concat();
    bytes.extend(codec::keepalive());
    let mut received = Vec::new();
    for chunk in bytes.chunks(7) {
        for o in pair.input(Side::A, Input::Bytes(chunk)) {
            if let Output::Received(u) = o {
                received.push(u);
            }
        }
    }
    assert_eq!(received, vec![update]);
}

#[test]
fn manual_stop_sends_administrative_shutdown() {
    let mut pair = established_pair(
        config(BIG_AS, SMALL_AS, id(1)),
        config(SMALL_AS, BIG_AS, id(2)),
    );
    let out = pair.input(Side::A, Input::ManualStop);
    let cease = Notification::cease(2);
    assert_eq!(
        out,
        vec![
            Output::Send(cease.encode()),
            Output::Disconnect,
            Output::Down(DownReason::Stopped)
        ]
    );
    pair.pump();
    assert_eq!(pair.a.state(), State::Idle);
    assert_eq!(pair.a.next_deadline(), None);
    assert_eq!(
        pair.downs(Side::B),
        vec![&DownReason::NotificationReceived(cease)]
    );
    assert_eq!(
        pair.b.last_error().unwrap().to_string(),
        "Received: Cease / Administrative Shutdown"
    );
    // B comes back by itself after the error wait; A stays stopped.
    assert_eq!(pair.b.next_deadline(), Some(pair.now + ERROR_WAIT_MIN));
    pair.advance(ERROR_WAIT_MIN);
    assert_eq!(pair.b.state(), State::Connect);
    assert!(pair.events[1].ends_with(&[Output::Connect]));
    pair.advance(Duration::from_secs(600));
    assert_eq!(pair.a.state(), State::Idle);
    // Stopping an idle, stopped session does nothing.
    assert!(pair.input(Side::A, Input::ManualStop).is_empty());
}

#[test]
fn manual_stop_before_connecting() {
    let mut s = Session::new(config(SMALL_AS, 65001, id(1)));
    let now = Instant::now();
    s.process(now, Input::ManualStart);
    assert_eq!(
        s.process(now, Input::ManualStop),
        vec![Output::Disconnect, Output::Down(DownReason::Stopped)]
    );
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.next_deadline(), None);
}

#[test]
fn collision_resolution() {
    assert!(collision_keeps_outgoing(id(2), id(1)));
    assert!(!collision_keeps_outgoing(id(1), id(2)));
    assert!(!collision_keeps_outgoing(id(1), id(1)));
    assert!(collision_keeps_outgoing(
        Ipv4Addr::new(10, 0, 0, 1),
        Ipv4Addr::new(9, 255, 255, 255)
    ));

    let (mut s, now) = open_sent(config(SMALL_AS, 65001, id(1)));
    s.process(now, Input::Bytes(&peer_open(65001, 90, id(2), vec![])));
    assert_eq!(s.state(), State::OpenConfirm);
    let out = s.process(now, Input::CollisionLost);
    let n = Notification::cease(7);
    assert_eq!(
        out,
        vec![
            Output::Send(n.encode()),
            Output::Disconnect,
            Output::Down(DownReason::NotificationSent(n.clone()))
        ]
    );
    assert_eq!(n.to_string(), "Cease / Connection Collision Resolution");
    assert_eq!(s.state(), State::Idle);
    assert_eq!(s.next_deadline(), None);
    assert!(
        s.process(now + Duration::from_secs(600), Input::Tick)
            .is_empty()
    );
}

#[test]
fn route_refresh() {
    let mut b_config = config(SMALL_AS, BIG_AS, id(2));
    b_config.families = vec![Family::Ipv4Unicast];
    let mut pair = established_pair(config(BIG_AS, SMALL_AS, id(1)), b_config);
    pair.input(Side::A, Input::RequestRefresh(Family::Ipv4Unicast));
    pair.pump();
    assert!(pair.events[1].contains(&Output::RefreshRequested(Family::Ipv4Unicast)));
    // Not negotiated: nothing is sent.
    assert!(
        pair.input(Side::A, Input::RequestRefresh(Family::Ipv6Unicast))
            .is_empty()
    );
    // A refresh for a family we do not carry is ignored (RFC 2918 §4).
    let odd = codec::RouteRefresh {
        afi: 1,
        subtype: 0,
        safi: 133,
    };
    let out = pair.input(Side::B, Input::Bytes(&odd.encode()));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(pair.b.state(), State::Established);
}

#[test]
fn tcp_failure_while_connecting_retries() {
    let mut s = Session::new(config(SMALL_AS, 65001, id(1)));
    let now = Instant::now();
    s.process(now, Input::ManualStart);
    assert_eq!(s.state(), State::Connect);
    assert!(
        s.process(now, Input::TcpFailed("Connection refused".into()))
            .is_empty()
    );
    assert_eq!(s.state(), State::Active);
    assert_eq!(
        s.last_error().unwrap().to_string(),
        "Socket: Connection refused"
    );
    assert_eq!(s.next_deadline(), Some(now + Duration::from_secs(5)));
    let out = s.process(now + Duration::from_secs(5), Input::Tick);
    assert_eq!(out, vec![Output::Connect]);
    assert_eq!(s.state(), State::Connect);
    // No answer at all: the attempt is restarted every connect_retry.
    let out = s.process(now + Duration::from_secs(10), Input::Tick);
    assert_eq!(out, vec![Output::Connect]);
}

#[test]
fn tcp_failure_of_an_established_session() {
    let mut pair = established_pair(
        config(BIG_AS, SMALL_AS, id(1)),
        config(SMALL_AS, BIG_AS, id(2)),
    );
    let out = pair.input(Side::A, Input::TcpFailed("Connection reset by peer".into()));
    assert_eq!(
        out,
        vec![
            Output::Disconnect,
            Output::Down(DownReason::Tcp("Connection reset by peer".into()))
        ]
    );
    assert_eq!(pair.a.state(), State::Active);
    assert_eq!(pair.a.negotiated(), None);
    assert_eq!(pair.a.next_deadline(), Some(pair.now + ERROR_WAIT_MIN));
}

#[test]
fn idle_refuses_connections() {
    let mut s = Session::new(config(SMALL_AS, 65001, id(1)));
    assert_eq!(
        s.process(Instant::now(), Input::TcpConnected),
        vec![Output::Disconnect]
    );
}

#[test]
fn error_wait_backs_off_from_5_to_30_seconds() {
    let mut s = Session::new(config(SMALL_AS, 65001, id(1)));
    let mut now = Instant::now();
    s.process(now, Input::ManualStart);
    let mut waits = Vec::new();
    for _ in 0..6 {
        s.process(now, Input::TcpConnected);
        let out = s.process(now, Input::Bytes(&Notification::cease(4).encode()));
        assert!(matches!(
            out.last(),
            Some(Output::Down(DownReason::NotificationReceived(_)))
        ));
        let deadline = s.next_deadline().unwrap();
        waits.push(deadline - now);
        now = deadline;
        assert_eq!(s.process(now, Input::Tick), vec![Output::Connect]);
    }
    let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
    assert_eq!(secs, vec![5, 10, 20, 30, 30, 30]);
    // After a quiet spell the wait starts over.
    now += ERROR_FORGET;
    s.process(now, Input::TcpConnected);
    s.process(now, Input::Bytes(&Notification::cease(4).encode()));
    assert_eq!(s.next_deadline(), Some(now + ERROR_WAIT_MIN));
}

#[test]
fn down_reason_display() {
    let shutdown = Notification::new(6, 2, [5, b'b', b'y', b'e', b'!', b'"']);
    assert_eq!(
        DownReason::NotificationReceived(shutdown).to_string(),
        "Received: Cease / Administrative Shutdown: \"bye!\\\"\""
    );
    assert_eq!(DownReason::Stopped.to_string(), "Stopped");
    assert_eq!(
        DownReason::NotificationSent(Notification::new(9, 1, [])).to_string(),
        "Error: Error code 9 / subcode 1"
    );
    assert_eq!(
        DownReason::NotificationSent(Notification::new(6, 42, [])).to_string(),
        "Error: Cease / subcode 42"
    );
    assert_eq!(State::OpenConfirm.to_string(), "OpenConfirm");
}
