//! Messages captured from BIRD 2, FRR and GoBGP (see the headers of `vectors/*.hex` for how),
//! decoded by the codec and replayed into a session; and a property test that random bytes and
//! mutated vectors never make the decoder or an Established session panic.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use ipnet::IpNet;
use netgauze_bgp_pkt::capabilities::BgpCapability;
use netgauze_bgp_pkt::open::BgpOpenMessage;
use proptest::prelude::*;
use tortie_bgp::codec::{self, FrameDecoder, Message, Notification};
use tortie_bgp::fsm::{
    DownReason, Input, Output, PeerGracefulRestart, Session, SessionConfig, State,
};
use tortie_bgp::{AsSegment, Family, Origin, Update};

const BIRD: &str = include_str!("vectors/bird.hex");
const FRR: &str = include_str!("vectors/frr.hex");
const GOBGP: &str = include_str!("vectors/gobgp.hex");

/// `(name, message)` pairs of a vector file.
fn vectors(file: &str) -> Vec<(&str, Vec<u8>)> {
    file.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, hex) = l.split_once(' ').expect("name and hex");
            (name, decode_hex(hex.trim()))
        })
        .collect()
}

fn decode_hex(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

fn vector(file: &str, name: &str) -> Vec<u8> {
    vectors(file)
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1
}

fn decode(file: &str, name: &str) -> Message {
    codec::decode_message(&vector(file, name), true).unwrap_or_else(|n| panic!("{name}: {n}"))
}

fn open(file: &str) -> BgpOpenMessage {
    match decode(file, "open") {
        Message::Open(open) => open,
        other => panic!("{other:?}"),
    }
}

fn update(file: &str, name: &str) -> Update {
    match decode(file, name) {
        Message::Update(u) => u,
        other => panic!("{other:?}"),
    }
}

/// All UPDATEs whose name starts with `prefix`, merged.
fn updates(file: &str, prefix: &str) -> Update {
    let mut out = Update::default();
    for (name, _) in vectors(file)
        .into_iter()
        .filter(|(n, _)| n.starts_with(prefix))
    {
        let u = update(file, name);
        out.announced.extend(u.announced);
        out.withdrawn.extend(u.withdrawn);
        out.end_of_rib.extend(u.end_of_rib);
    }
    out
}

fn prefixes(u: &Update) -> Vec<IpNet> {
    u.announced.iter().map(|(p, _)| *p).collect()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

const DAEMON_ID: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);

#[test]
fn every_vector_decodes_through_the_frame_decoder() {
    for file in [BIRD, FRR, GOBGP] {
        let all = vectors(file);
        assert!(all.len() >= 8);
        let mut d = FrameDecoder::new();
        for (_, bytes) in &all {
            d.feed(bytes);
        }
        for (name, bytes) in &all {
            let frame = d.next_frame().unwrap().unwrap();
            assert_eq!(&frame, bytes, "{name}");
            codec::decode_message(&frame, true).unwrap_or_else(|n| panic!("{name}: {n}"));
        }
        assert_eq!(d.next_frame(), Ok(None));
    }
}

#[test]
fn bird_open() {
    let open = open(BIRD);
    assert_eq!(open.my_as(), 64512);
    assert_eq!(open.my_asn4(), 64512);
    assert_eq!(open.hold_time(), 240);
    assert_eq!(open.bgp_id(), DAEMON_ID);
    let caps = open.capabilities();
    assert!(caps.contains(&&BgpCapability::RouteRefresh));
    assert!(caps.contains(&&BgpCapability::EnhancedRouteRefresh));
    assert!(
        caps.iter()
            .any(|c| matches!(c, BgpCapability::LongLivedGracefulRestart(_)))
    );
    assert!(
        caps.iter()
            .any(|c| matches!(c, BgpCapability::GracefulRestartCapability(gr) if gr.time() == 120))
    );
}

#[test]
fn frr_open_with_hostname_and_add_path() {
    let open = open(FRR);
    assert_eq!(open.my_asn4(), 64512);
    assert_eq!(open.hold_time(), 180);
    // FRR puts each capability in its own optional parameter.
    assert!(open.params().len() == 1 && open.capabilities().len() >= 10);
    let caps = open.capabilities();
    assert!(
        caps.iter()
            .any(|c| matches!(c, BgpCapability::Fqdn(f) if f.hostname() == "frrcap"))
    );
    assert!(caps.iter().any(|c| matches!(c, BgpCapability::AddPath(_))));
    assert!(caps.contains(&&BgpCapability::CiscoRouteRefresh));
}

#[test]
fn gobgp_open_with_extended_next_hop() {
    let open = open(GOBGP);
    assert_eq!(open.my_asn4(), 64512);
    assert_eq!(open.hold_time(), 90);
    let caps = open.capabilities();
    assert!(
        caps.iter()
            .any(|c| matches!(c, BgpCapability::ExtendedNextHopEncoding(_)))
    );
    assert!(caps.iter().any(|c| matches!(c, BgpCapability::Fqdn(_))));
}

#[test]
fn ipv4_updates() {
    for file in [BIRD, FRR, GOBGP] {
        let mut u = updates(file, "update-ipv4");
        u.announced.sort_by_key(|a| a.0);
        assert_eq!(
            prefixes(&u),
            vec![net("198.18.128.0/24"), net("198.19.0.0/16")]
        );
        let attrs = &u.announced[0].1;
        assert_eq!(attrs.next_hop, IpAddr::V4(DAEMON_ID));
        assert_eq!(attrs.as_path, vec![AsSegment::Sequence(vec![64512])]);
        assert_eq!(attrs.local_pref, None);
    }
    // FRR sends MED 0; GoBGP's CLI routes are INCOMPLETE, one with a community.
    assert_eq!(update(FRR, "update-ipv4").announced[0].1.med, Some(0));
    let gobgp = update(GOBGP, "update-ipv4");
    assert_eq!(gobgp.announced[0].1.origin, Origin::Incomplete);
    assert_eq!(gobgp.announced[0].1.communities, vec![(64512 << 16) | 100]);
    assert_eq!(
        update(BIRD, "update-ipv4").announced[0].1.origin,
        Origin::Igp
    );
}

#[test]
fn ipv6_updates() {
    let expect = [
        // BIRD sends the configured global next hop plus its link-local one; the global is kept.
        (BIRD, "2001:db8::1"),
        // FRR without an IPv6 address on the session: an IPv4-mapped next hop.
        (FRR, "::ffff:198.18.0.1"),
        (GOBGP, "2001:db8::1"),
    ];
    for (file, next_hop) in expect {
        let u = update(file, "update-ipv6");
        assert_eq!(prefixes(&u), vec![net("2001:db8:1::/48")]);
        assert_eq!(
            u.announced[0].1.next_hop,
            next_hop.parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            u.announced[0].1.as_path,
            vec![AsSegment::Sequence(vec![64512])]
        );
    }
}

#[test]
fn end_of_rib_markers() {
    for file in [BIRD, FRR, GOBGP] {
        assert_eq!(
            update(file, "eor-ipv4").end_of_rib,
            vec![Family::Ipv4Unicast]
        );
        assert_eq!(
            update(file, "eor-ipv6").end_of_rib,
            vec![Family::Ipv6Unicast]
        );
    }
    // Ours are byte-identical for IPv4 (an empty UPDATE).
    let ours = codec::encode_update(
        &Update {
            end_of_rib: vec![Family::Ipv4Unicast],
            ..Update::default()
        },
        true,
    )
    .unwrap();
    assert_eq!(ours[0], vector(BIRD, "eor-ipv4"));
}

#[test]
fn notifications() {
    for (file, text) in [
        (BIRD, "Cease / Administrative Shutdown: \"capture done\""),
        (FRR, "Cease / Administrative Shutdown: \"capture done\""),
        (GOBGP, "Cease / Administrative Shutdown"),
    ] {
        let Message::Notification(n) = decode(file, "notification-cease") else {
            panic!()
        };
        assert_eq!(n.to_string(), text);
        let Message::Notification(n) = decode(file, "notification-bad-peer-as") else {
            panic!()
        };
        assert_eq!((n.code, n.subcode), (2, 2));
        assert_eq!(n.to_string(), "OPEN Message Error / Bad Peer AS");
    }
    // BIRD and FRR report the AS they saw: BIRD in four octets, FRR in two.
    let Message::Notification(n) = decode(BIRD, "notification-bad-peer-as") else {
        panic!()
    };
    assert_eq!(n.data, vec![0, 0, 0xfe, 0x4b]);
    let Message::Notification(n) = decode(FRR, "notification-bad-peer-as") else {
        panic!()
    };
    assert_eq!(n.data, 65099u16.to_be_bytes());
}

/// The listener's side of the captured sessions, as a tortie session.
fn listener_config() -> SessionConfig {
    SessionConfig {
        families: vec![Family::Ipv4Unicast, Family::Ipv6Unicast],
        passive: true,
        ..SessionConfig::new(4_200_000_001, 64512, Ipv4Addr::new(198, 18, 0, 2))
    }
}

/// A session that accepted the daemon's connection and got its OPEN and KEEPALIVE.
fn established_with(file: &str) -> (Session, Instant, Vec<Output>) {
    let now = Instant::now();
    let mut s = Session::new(listener_config());
    s.process(now, Input::ManualStart);
    s.process(now, Input::TcpConnected);
    let mut out = s.process(now, Input::Bytes(&vector(file, "open")));
    out.extend(s.process(now, Input::Bytes(&vector(file, "keepalive"))));
    assert_eq!(s.state(), State::Established, "{out:?}");
    (s, now, out)
}

#[test]
fn sessions_with_real_peers() {
    let expected_gr = [
        // BIRD: "AF preserved:" empty (no F bits); FRR sets R on a fresh start.
        (BIRD, false, 90),
        (FRR, true, 90),
        (GOBGP, false, 90),
    ];
    for (file, restarting, hold) in expected_gr {
        let (mut s, now, out) = established_with(file);
        let Some(Output::Established(n)) = out.iter().find(|o| matches!(o, Output::Established(_)))
        else {
            panic!("{out:?}")
        };
        assert_eq!(n.remote_as, 64512);
        assert_eq!(n.remote_id, DAEMON_ID);
        assert_eq!(n.hold_time, hold);
        assert!(n.four_octet_as && n.route_refresh);
        assert_eq!(n.families, vec![Family::Ipv4Unicast, Family::Ipv6Unicast]);
        assert_eq!(
            n.peer_graceful_restart,
            Some(PeerGracefulRestart {
                restart_time: 120,
                restarting,
                preserved: vec![],
            })
        );

        let mut received = Vec::new();
        for (name, bytes) in vectors(file) {
            if name.starts_with("update") || name.starts_with("eor") {
                for o in s.process(now, Input::Bytes(&bytes)) {
                    match o {
                        Output::Received(u) => received.push(u),
                        other => panic!("{name}: {other:?}"),
                    }
                }
            }
        }
        let announced: usize = received.iter().map(|u| u.announced.len()).sum();
        let eor: Vec<Family> = received.iter().flat_map(|u| u.end_of_rib.clone()).collect();
        assert_eq!(announced, 3);
        assert_eq!(eor.len(), 2);

        let out = s.process(now, Input::Bytes(&vector(file, "notification-cease")));
        let Some(Output::Down(reason @ DownReason::NotificationReceived(n))) = out.last() else {
            panic!("{out:?}")
        };
        assert_eq!((n.code, n.subcode), (6, 2));
        assert!(
            reason
                .to_string()
                .starts_with("Received: Cease / Administrative Shutdown")
        );
        assert_eq!(s.state(), State::Idle);
    }
}

#[test]
fn our_bad_peer_as_matches_frr() {
    // A session expecting AS 65099 gets BIRD's OPEN (AS 64512).
    let now = Instant::now();
    let mut s = Session::new(SessionConfig {
        passive: true,
        ..SessionConfig::new(4_200_000_001, 65099, Ipv4Addr::new(198, 18, 0, 2))
    });
    s.process(now, Input::ManualStart);
    s.process(now, Input::TcpConnected);
    let out = s.process(now, Input::Bytes(&vector(BIRD, "open")));
    let expected = Notification::new(2, 2, 64512u32.to_be_bytes());
    assert_eq!(out[0], Output::Send(expected.encode()));
    assert_eq!(
        s.last_error().unwrap().to_string(),
        "Error: OPEN Message Error / Bad Peer AS"
    );
}

/// Every vector, concatenated in capture order, for mutation.
fn corpus() -> Vec<Vec<u8>> {
    [BIRD, FRR, GOBGP]
        .into_iter()
        .flat_map(vectors)
        .map(|(_, bytes)| bytes)
        .collect()
}

#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        match m {
            Mutation::Set(at, b) => {
                let at = at % bytes.len();
                bytes[at] = *b;
            }
            Mutation::Truncate(at) => bytes.truncate(at % bytes.len()),
            Mutation::Insert(at, more) => {
                let at = at % bytes.len();
                bytes.splice(at..at, more.iter().copied());
            }
        }
    }
    bytes
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        6 => (any::<usize>(), any::<u8>()).prop_map(|(a, b)| Mutation::Set(a, b)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        1 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..8)).prop_map(|(a, v)| Mutation::Insert(a, v)),
    ]
}

/// Feeds bytes to the decoder and to an Established session; neither may panic, and a session
/// that leaves Established must say so.
fn feed_everywhere(bytes: &[u8]) {
    for four_octet_as in [true, false] {
        let mut d = FrameDecoder::new();
        d.feed(bytes);
        while let Ok(Some(frame)) = d.next_frame() {
            let _ = codec::decode_message(&frame, four_octet_as);
        }
        let _ = codec::decode_update(bytes.get(19..).unwrap_or_default(), four_octet_as);
    }
    let (mut s, now, _) = established_with(BIRD);
    let out = s.process(now, Input::Bytes(bytes));
    if s.state() != State::Established {
        assert!(matches!(out.last(), Some(Output::Down(_))), "{out:?}");
        assert!(out.contains(&Output::Disconnect));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        feed_everywhere(&bytes);
        // The same bytes behind a valid marker get past the synchronization check.
        let mut framed = vec![0xff; 16];
        framed.extend_from_slice(&bytes);
        feed_everywhere(&framed);
    }

    #[test]
    fn mutated_vectors_never_panic(
        pick in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(arb_mutation(), 1..6),
    ) {
        let corpus = corpus();
        let original = corpus[pick.index(corpus.len())].clone();
        feed_everywhere(&mutate(original, &mutations));
    }
}
