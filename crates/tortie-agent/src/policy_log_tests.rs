use std::ffi::CString;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};

use super::*;

/// An IPv4 header (no options unless `ihl` > 5) followed by `l4`.
fn ipv4(protocol: u8, frag: u16, ihl: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; usize::from(ihl) * 4];
    p[0] = 0x40 | ihl;
    p[6..8].copy_from_slice(&frag.to_be_bytes());
    p[8] = 64;
    p[9] = protocol;
    p[12..16].copy_from_slice(&[10, 244, 1, 2]);
    p[16..20].copy_from_slice(&[10, 244, 2, 3]);
    p.extend_from_slice(l4);
    p
}

/// An IPv6 header whose next header is `next`, followed by `rest`.
fn ipv6(next: u8, rest: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 40];
    p[0] = 0x60;
    p[6] = next;
    p[7] = 64;
    let src: Ipv6Addr = "fd00:10:244::2".parse().expect("addr");
    let dst: Ipv6Addr = "fd00:10:244::1:3".parse().expect("addr");
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p.extend_from_slice(rest);
    p
}

fn l4_ports(sport: u16, dport: u16) -> Vec<u8> {
    let mut v = sport.to_be_bytes().to_vec();
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&[0; 16]);
    v
}

#[test]
fn ipv4_tcp() {
    let s = parse_packet(&ipv4(proto::TCP, 0x4000, 5, &l4_ports(40000, 443)));
    assert_eq!(
        s,
        PacketSummary {
            src: Some("10.244.1.2".parse().expect("ip")),
            dst: Some("10.244.2.3".parse().expect("ip")),
            protocol: Some(proto::TCP),
            src_port: Some(40000),
            dst_port: Some(443),
        }
    );
    // IP options move the transport header.
    let s = parse_packet(&ipv4(proto::UDP, 0, 7, &l4_ports(53, 5353)));
    assert_eq!((s.src_port, s.dst_port), (Some(53), Some(5353)));
}

#[test]
fn ipv4_later_fragments_and_portless_protocols_have_no_ports() {
    let s = parse_packet(&ipv4(proto::TCP, 0x2000 | 185, 5, &l4_ports(1, 2)));
    assert_eq!(s.protocol, Some(proto::TCP));
    assert_eq!((s.src_port, s.dst_port), (None, None));
    let s = parse_packet(&ipv4(proto::ICMP, 0, 5, &[8, 0, 0, 0]));
    assert_eq!(s.protocol, Some(proto::ICMP));
    assert_eq!((s.src_port, s.dst_port), (None, None));
}

#[test]
fn ipv6_udp_past_extension_headers() {
    let s = parse_packet(&ipv6(proto::UDP, &l4_ports(5000, 53)));
    assert_eq!(
        s,
        PacketSummary {
            src: Some("fd00:10:244::2".parse().expect("ip")),
            dst: Some("fd00:10:244::1:3".parse().expect("ip")),
            protocol: Some(proto::UDP),
            src_port: Some(5000),
            dst_port: Some(53),
        }
    );
    // Hop-by-hop (8 bytes), then destination options (16 bytes), then UDP.
    let mut rest = vec![60, 0, 0, 0, 0, 0, 0, 0];
    rest.extend_from_slice(&[proto::UDP, 1]);
    rest.extend_from_slice(&[0; 14]);
    rest.extend_from_slice(&l4_ports(5001, 9));
    let s = parse_packet(&ipv6(0, &rest));
    assert_eq!(s.protocol, Some(proto::UDP));
    assert_eq!((s.src_port, s.dst_port), (Some(5001), Some(9)));
    // First fragment: ports; a later one: protocol only.
    let mut first = vec![proto::TCP, 0, 0, 1, 0, 0, 0, 7];
    first.extend_from_slice(&l4_ports(1234, 80));
    let s = parse_packet(&ipv6(44, &first));
    assert_eq!((s.protocol, s.dst_port), (Some(proto::TCP), Some(80)));
    let later = [proto::TCP, 0, 0x05, 0x01, 0, 0, 0, 7, 1, 2, 3, 4];
    let s = parse_packet(&ipv6(44, &later));
    assert_eq!((s.protocol, s.src_port), (Some(proto::TCP), None));
    // ICMPv6 has no ports.
    let s = parse_packet(&ipv6(proto::ICMPV6, &[128, 0, 0, 0]));
    assert_eq!((s.protocol, s.src_port), (Some(proto::ICMPV6), None));
}

#[test]
fn truncated_packets_give_what_is_there() {
    let full = ipv4(proto::UDP, 0, 5, &l4_ports(1000, 9));
    for n in 0..full.len() {
        let s = parse_packet(&full[..n]);
        match n {
            0..20 => assert_eq!(s, PacketSummary::default(), "{n}"),
            20..22 => assert_eq!((s.protocol, s.src_port), (Some(proto::UDP), None), "{n}"),
            22..24 => assert_eq!((s.src_port, s.dst_port), (Some(1000), None), "{n}"),
            _ => assert_eq!(s.dst_port, Some(9), "{n}"),
        }
    }
    let full = ipv6(0, &[proto::UDP, 0, 0, 0, 0, 0, 0, 0, 0x13, 0x88, 0, 9]);
    for n in 0..full.len() {
        let s = parse_packet(&full[..n]);
        if n < 40 {
            assert_eq!(s, PacketSummary::default(), "{n}");
        } else {
            assert!(s.src.is_some() && s.dst_port.is_none(), "{n}: {s:?}");
        }
    }
    assert_eq!(parse_packet(&full).dst_port, Some(9));
}

#[test]
fn garbage_never_panics() {
    assert_eq!(parse_packet(&[]), PacketSummary::default());
    // Version 5, and an IPv4 header length below 20 bytes.
    assert_eq!(parse_packet(&[0x55; 60]), PacketSummary::default());
    assert_eq!(parse_packet(&[0x44; 60]), PacketSummary::default());
    // A loop of extension headers ends within the bound.
    let hops = ipv6(0, &[0u8; 200]);
    assert_eq!(parse_packet(&hops).protocol, None);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..400 {
        let mut p = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            p.push(x.to_le_bytes()[0]);
        }
        for first in [0x45, 0x4f, 0x60] {
            if let Some(b) = p.first_mut() {
                *b = first;
            }
            let _ = parse_packet(&p);
            let _ = split_messages(&p);
            let _ = parse_message(&p);
        }
    }
}

#[test]
fn prefixes_name_rules() {
    assert_eq!(
        rule_from_prefix("tortie gnp/audit egress[0]: "),
        Some("gnp/audit egress[0]")
    );
    assert_eq!(
        rule_from_prefix("tortie knp/x/allow-web ingress[12]:"),
        Some("knp/x/allow-web ingress[12]")
    );
    // Cut at nft's limit: what is left.
    assert_eq!(rule_from_prefix("tortie np/ns/lo"), Some("np/ns/lo"));
    assert_eq!(rule_from_prefix("IN=eth0 "), None);
    assert_eq!(rule_from_prefix("tortie : "), None);
    assert_eq!(
        split_staged("staged deny snp/x/lock ingress[0]"),
        (Some("deny"), "snp/x/lock ingress[0]")
    );
    assert_eq!(
        split_staged("staged allow end of tier default"),
        (Some("allow"), "end of tier default")
    );
    assert_eq!(
        split_staged("gnp/audit egress[0]"),
        (None, "gnp/audit egress[0]")
    );
    assert_eq!(
        RuleRef::parse("knp/x/allow-web ingress[3]"),
        Some(RuleRef {
            policy: "knp/x/allow-web",
            direction: "ingress",
            index: 3
        })
    );
    assert_eq!(
        RuleRef::parse("profile/kns.default egress[0]").map(|r| r.policy),
        Some("profile/kns.default")
    );
    for bad in [
        "gnp/audit",
        "gnp/audit egress",
        "gnp/audit egress[x]",
        " egress[1]",
        "a [1]",
    ] {
        assert_eq!(RuleRef::parse(bad), None, "{bad}");
    }
}

fn nflog_message(seq: u32, prefix: &str, payload: Vec<u8>) -> Vec<u8> {
    let nlas = vec![
        PacketNla::Prefix(CString::new(prefix).expect("prefix")),
        PacketNla::IfIndexInDev(1),
        PacketNla::IfIndexOutDev(0x7fff_fff0),
        PacketNla::Seq(seq),
        PacketNla::Payload(payload),
    ];
    let mut msg = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::IPv4, 0, 1),
            ULogMessage::Packet(nlas),
        )),
    );
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

fn record(rule: &str) -> PolicyLogRecord {
    PolicyLogRecord {
        rule: rule.to_string(),
        staged: None,
        packet: PacketSummary::default(),
        iif: None,
        oif: None,
    }
}

#[test]
fn nflog_messages_become_records() {
    let mut dgram = nflog_message(
        7,
        "tortie gnp/audit egress[0]: ",
        ipv4(proto::UDP, 0, 5, &l4_ports(1000, 9)),
    );
    while !dgram.len().is_multiple_of(4) {
        dgram.push(0);
    }
    dgram.extend(nflog_message(8, "someone else ", vec![0x60]));
    dgram.extend_from_slice(&[1, 2, 3]);
    let msgs = split_messages(&dgram);
    assert_eq!(msgs.len(), 2);
    let Message::Packet(p) = parse_message(msgs[0]) else {
        panic!("not a packet: {:?}", parse_message(msgs[0]));
    };
    assert_eq!(p.seq, Some(7));
    assert_eq!(p.record.rule, "gnp/audit egress[0]");
    assert_eq!(p.record.packet.dst_port, Some(9));
    assert_eq!(p.record.iif.as_ref().map(|i| i.index), Some(1));
    let Message::Packet(p) = parse_message(msgs[1]) else {
        panic!("not a packet");
    };
    assert_eq!(p.record.rule, "someone else");
    assert_eq!(p.record.packet, PacketSummary::default());
    // A message cut short is malformed, not a panic.
    assert_eq!(parse_message(&msgs[0][..30]), Message::Malformed);
}

#[test]
fn full_queues_and_kernel_gaps_count_as_dropped() {
    let metrics = Metrics::new();
    let (tx, rx) = mpsc::sync_channel(1);
    let mut state = ReceiveState::default();
    let mut dgram = Vec::new();
    for seq in [0, 1, 5] {
        dgram.extend(nflog_message(seq, "tortie gnp/a ingress[0]: ", vec![]));
    }
    assert!(state.on_datagram(&dgram, &tx, &metrics));
    // One queued; two found the queue full; seq 2..=4 never arrived.
    assert_eq!(metrics.policy_log_dropped.get(), 2 + 3);
    let got = rx.try_recv().expect("one record");
    assert_eq!(got.rule, "gnp/a ingress[0]");
    // Interface 1 exists in every namespace (`lo`); the other one does not.
    assert_eq!(got.iif.and_then(|i| i.name).as_deref(), Some("lo"));
    assert_eq!(
        got.oif.map(|i| i.to_string()).as_deref(),
        Some("#2147483632")
    );
    drop(rx);
    assert!(!state.on_datagram(&nflog_message(6, "x", vec![]), &tx, &metrics));
    assert_eq!(seq_gap(Some(u32::MAX), Some(0)), 0);
    assert_eq!(seq_gap(Some(9), Some(3)), 0);
    assert_eq!(seq_gap(None, Some(3)), 0);
}

/// Records every event's target and fields.
#[derive(Default)]
struct Capture(std::sync::Mutex<Vec<(String, std::collections::BTreeMap<String, String>)>>);

struct Fields<'a>(&'a mut std::collections::BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn fmt::Debug) {
        self.0.insert(f.name().to_string(), format!("{v:?}"));
    }
    fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
        self.0.insert(f.name().to_string(), v.to_string());
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, e: &tracing::Event<'_>) {
        let mut fields = std::collections::BTreeMap::new();
        e.record(&mut Fields(&mut fields));
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((e.metadata().target().to_string(), fields));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// One test for everything that goes through `emit`: tracing caches per call site whether
/// anyone listens, and a call site first reached on another test's thread while this one
/// installs its subscriber can be cached as unheard.
#[test]
fn events_carry_rule_and_packet_fields_and_are_counted() {
    let capture = Arc::new(Capture::default());
    let mut r = record("knp/x/allow-web ingress[2]");
    r.packet = parse_packet(&ipv4(proto::TCP, 0, 5, &l4_ports(40000, 80)));
    r.iif = Some(Interface {
        index: 7,
        name: Some("calia1".into()),
    });
    r.oif = Some(Interface {
        index: 9,
        name: None,
    });
    let mut unknown = record("someone else");
    unknown.packet = PacketSummary::default();
    tracing::subscriber::with_default(capture.clone(), || {
        emit(&r);
        emit(&unknown);
    });
    let got = capture.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(got.len(), 2, "{got:?}");
    let (target, f) = &got[0];
    assert_eq!(target, TARGET);
    let want = [
        ("message", "policy log"),
        ("rule", "knp/x/allow-web ingress[2]"),
        ("policy", "knp/x/allow-web"),
        ("direction", "ingress"),
        ("rule_index", "2"),
        ("src", "10.244.1.2"),
        ("dst", "10.244.2.3"),
        ("protocol", "tcp"),
        ("src_port", "40000"),
        ("dst_port", "80"),
        ("iif", "calia1"),
        ("oif", "#9"),
    ];
    for (k, v) in want {
        assert_eq!(f.get(k).map(String::as_str), Some(v), "{k} in {f:?}");
    }
    // Absent values are left out rather than written as placeholders.
    let (_, f) = &got[1];
    let keys: Vec<&str> = f.keys().map(String::as_str).collect();
    assert_eq!(keys, ["message", "rule"], "{f:?}");

    // The emitter: counts by rule and feeds the observer.
    let metrics = Metrics::new();
    let (tx, rx) = mpsc::sync_channel(MAX_RULE_SERIES + 10);
    let (otx, orx) = mpsc::sync_channel(4);
    tx.send(record("gnp/audit egress[0]")).expect("send");
    tx.send(record("gnp/audit egress[0]")).expect("send");
    for i in 0..MAX_RULE_SERIES {
        tx.send(record(&format!("gnp/p{i} ingress[0]")))
            .expect("send");
    }
    drop(tx);
    emit_loop(&rx, &metrics, Some(&otx));
    let text = metrics.encode();
    assert!(
        text.contains("tortie_agent_policy_log_packets_total{rule=\"gnp/audit egress[0]\"} 2"),
        "{text}"
    );
    // The first rule took one series, so the last one is counted as `other`.
    assert!(
        text.contains("tortie_agent_policy_log_packets_total{rule=\"other\"} 1"),
        "missing other"
    );
    // The observer kept what fit, and nothing waited for it.
    assert_eq!(orx.try_iter().count(), 4);
}
