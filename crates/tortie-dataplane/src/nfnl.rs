//! nf_tables over netfilter netlink, for the two things that must not pay for an `nft`
//! process: reading the generation (every commit and drift check) and changing the members of
//! an address set (a pod joining or leaving a selector, the common change).
//!
//! Written by hand: the messages are small and fixed (a header, a few attributes), and no
//! maintained crate encodes nf_tables set elements (`netlink-packet-netfilter` covers nflog
//! and conntrack; `rustables`/`nftnl` bind libnftnl or cover rules, not batches of elements).
//! Everything else still goes through `nft -f`, whose parser checks rule text.

use std::io;
use std::net::IpAddr;
use std::path::Path;

/// nfnetlink subsystem of nf_tables, and the messages used here.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_CREATE: u16 = 0x400;
const NFPROTO_INET: u8 = 1;
const NFPROTO_UNSPEC: u8 = 0;

/// Most elements one [`update_set_elements`] call sends (one netlink datagram; a larger
/// change goes through `nft -f`, which is not slower per element at that size).
pub const MAX_ELEMENTS: usize = 4096;
/// Most elements per message: an element list is one attribute, whose length is 16 bits
/// (1024 IPv6 elements are 28 KiB).
pub const ELEMENTS_PER_MESSAGE: usize = 1024;
/// Most element messages per batch (each is acknowledged; the acks must fit the socket's
/// receive buffer).
pub const MAX_MESSAGES: usize = 64;

/// How many element messages `changes` take.
pub fn messages_for(changes: &[SetElements]) -> usize {
    changes
        .iter()
        .map(|c| {
            c.removed.len().div_ceil(ELEMENTS_PER_MESSAGE)
                + c.added.len().div_ceil(ELEMENTS_PER_MESSAGE)
        })
        .sum()
}

/// Address elements to delete from and add to one hash set of the `inet` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetElements {
    pub set: String,
    pub removed: Vec<IpAddr>,
    pub added: Vec<IpAddr>,
}

/// Reads the nftables generation of the namespace at `netns` (the caller's when `None`) with
/// one `NFT_MSG_GETGEN` request.
pub fn generation(netns: Option<&Path>) -> io::Result<u32> {
    let socket = socket(netns)?;
    let mut req = Vec::with_capacity(20);
    let at = header(&mut req, msg_type(NFT_MSG_GETGEN), NLM_F_REQUEST, 1);
    nfgen(&mut req, NFPROTO_UNSPEC, 0);
    finish(&mut req, at);
    socket.send_to(&req, &netlink_sys::SocketAddr::new(0, 0), 0)?;
    // The kernel answers inside sendmsg, so the reply is already queued: never block.
    let mut buf = Vec::with_capacity(4096);
    socket.recv_from(&mut buf, nix::libc::MSG_DONTWAIT)?;
    parse_generation(&buf)
}

/// Deletes and adds address elements of sets in table `family`=inet `table`, all in one
/// nf_tables transaction: every change commits or none does (a missing element to delete,
/// a missing set or a wrong address length aborts the whole batch).
pub fn update_set_elements(
    netns: Option<&Path>,
    table: &str,
    changes: &[SetElements],
) -> io::Result<()> {
    let (batch, acks) = encode_batch(table, changes, 1)?;
    if acks == 0 {
        return Ok(());
    }
    let socket = socket(netns)?;
    socket.set_cap_ack(true)?;
    socket.send_to(&batch, &netlink_sys::SocketAddr::new(0, 0), 0)?;
    // The batch is processed inside sendmsg; its acks (one per element message) or its
    // errors are queued by the time it returns.
    let mut seen = 0;
    loop {
        let mut buf = Vec::with_capacity(8192);
        match socket.recv_from(&mut buf, nix::libc::MSG_DONTWAIT) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
        for code in ack_codes(&buf) {
            if code != 0 {
                return Err(io::Error::from_raw_os_error(-code));
            }
            seen += 1;
        }
    }
    if seen < acks {
        return Err(io::Error::other(format!(
            "nf_tables acknowledged {seen} of {acks} set element messages"
        )));
    }
    Ok(())
}

/// The batch for `changes` (sequence numbers from `seq`) and how many acks it asks for: per
/// set, its deletes then its adds, [`ELEMENTS_PER_MESSAGE`] at most per message. An
/// attribute that would not fit its 16-bit length is an error, never a truncated list.
fn encode_batch(
    table: &str,
    changes: &[SetElements],
    mut seq: u32,
) -> io::Result<(Vec<u8>, usize)> {
    let mut buf = Vec::with_capacity(256);
    let res_id = NFNL_SUBSYS_NFTABLES;
    let at = header(&mut buf, NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, seq);
    nfgen(&mut buf, NFPROTO_UNSPEC, res_id);
    finish(&mut buf, at);
    let mut acks = 0;
    for c in changes {
        for (op, addrs) in [
            (NFT_MSG_DELSETELEM, &c.removed),
            (NFT_MSG_NEWSETELEM, &c.added),
        ] {
            for addrs in addrs.chunks(ELEMENTS_PER_MESSAGE) {
                seq += 1;
                let create = if op == NFT_MSG_NEWSETELEM {
                    NLM_F_CREATE
                } else {
                    0
                };
                let at = header(
                    &mut buf,
                    msg_type(op),
                    NLM_F_REQUEST | NLM_F_ACK | create,
                    seq,
                );
                nfgen(&mut buf, NFPROTO_INET, 0);
                attr_str(&mut buf, NFTA_SET_ELEM_LIST_TABLE, table);
                attr_str(&mut buf, NFTA_SET_ELEM_LIST_SET, &c.set);
                let list = nest(&mut buf, NFTA_SET_ELEM_LIST_ELEMENTS);
                for a in addrs {
                    let elem = nest(&mut buf, NFTA_LIST_ELEM);
                    let key = nest(&mut buf, NFTA_SET_ELEM_KEY);
                    match a {
                        IpAddr::V4(v4) => attr(&mut buf, NFTA_DATA_VALUE, &v4.octets()),
                        IpAddr::V6(v6) => attr(&mut buf, NFTA_DATA_VALUE, &v6.octets()),
                    }
                    end_nest(&mut buf, key)?;
                    end_nest(&mut buf, elem)?;
                }
                end_nest(&mut buf, list)?;
                finish(&mut buf, at);
                acks += 1;
            }
        }
    }
    seq += 1;
    let at = header(&mut buf, NFNL_MSG_BATCH_END, NLM_F_REQUEST, seq);
    nfgen(&mut buf, NFPROTO_UNSPEC, res_id);
    finish(&mut buf, at);
    Ok((buf, acks))
}

fn msg_type(op: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | op
}

/// Starts a message (length patched by [`finish`]); returns where it starts.
fn header(buf: &mut Vec<u8>, ty: u16, flags: u16, seq: u32) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&0u32.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&seq.to_ne_bytes());
    buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
    at
}

/// The nfgenmsg after the header: family, version 0, resource id (big-endian).
fn nfgen(buf: &mut Vec<u8>, family: u8, res_id: u16) {
    buf.push(family);
    buf.push(0);
    buf.extend_from_slice(&res_id.to_be_bytes());
}

fn finish(buf: &mut [u8], at: usize) {
    let len = u32::try_from(buf.len() - at).unwrap_or(u32::MAX);
    buf[at..at + 4].copy_from_slice(&len.to_ne_bytes());
}

fn attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    pad(buf);
}

fn attr_str(buf: &mut Vec<u8>, ty: u16, s: &str) {
    let mut v = Vec::with_capacity(s.len() + 1);
    v.extend_from_slice(s.as_bytes());
    v.push(0);
    attr(buf, ty, &v);
}

fn nest(buf: &mut Vec<u8>, ty: u16) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&0u16.to_ne_bytes());
    buf.extend_from_slice(&(ty | NLA_F_NESTED).to_ne_bytes());
    at
}

fn end_nest(buf: &mut [u8], at: usize) -> io::Result<()> {
    let len = u16::try_from(buf.len() - at).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "netlink attribute longer than 65535 bytes",
        )
    })?;
    buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    Ok(())
}

fn pad(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    b.get(i..i + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]))
}

fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    b.get(i..i + 4)
        .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
}

/// The error codes (0 = ack) of the NLMSG_ERROR messages in one datagram.
fn ack_codes(buf: &[u8]) -> Vec<i32> {
    let mut codes = Vec::new();
    let mut at = 0;
    while let (Some(len), Some(ty)) = (u32_at(buf, at), u16_at(buf, at + 4)) {
        let len = len as usize;
        if len < 16 {
            break;
        }
        if ty == NLMSG_ERROR
            && let Some(code) = u32_at(buf, at + 16)
        {
            codes.push(code as i32);
        }
        at += (len + 3) & !3;
    }
    codes
}

/// A netfilter netlink socket in the namespace at `netns` (the caller's when `None`), made
/// on a thread inside it ([`tortie_netlink::NetNs::run`]): a socket belongs to the namespace
/// it was created in.
fn socket(netns: Option<&Path>) -> io::Result<netlink_sys::Socket> {
    let open = || netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER);
    match netns {
        None => open(),
        Some(path) => tortie_netlink::NetNs::open(path)
            .and_then(|ns| ns.run(open))
            .map_err(io::Error::other)?,
    }
}

fn parse_generation(msg: &[u8]) -> io::Result<u32> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
    let len = u32_at(msg, 0).ok_or_else(|| bad("short netlink reply"))? as usize;
    let msg = msg
        .get(..len)
        .ok_or_else(|| bad("truncated netlink reply"))?;
    match u16_at(msg, 4) {
        Some(NLMSG_ERROR) => {
            let code = u32_at(msg, 16).ok_or_else(|| bad("short netlink error"))? as i32;
            Err(io::Error::from_raw_os_error(-code))
        }
        Some(t) if t == msg_type(NFT_MSG_NEWGEN) => {
            // Attributes follow the 16-byte header and the 4-byte nfgenmsg.
            let mut at = 20;
            while let (Some(alen), Some(atype)) = (u16_at(msg, at), u16_at(msg, at + 2)) {
                let alen = usize::from(alen);
                if alen < 4 {
                    break;
                }
                if atype & 0x3fff == NFTA_GEN_ID
                    && let Some(b) = msg.get(at + 4..at + 8)
                {
                    return Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                }
                at += (alen + 3) & !3;
            }
            Err(bad("no generation in the reply"))
        }
        _ => Err(bad("unexpected netlink reply")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks the messages of a batch: (type, flags, seq, payload after the nfgenmsg).
    fn messages(buf: &[u8]) -> Vec<(u16, u16, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(len) = u32_at(buf, at) {
            let len = len as usize;
            let m = &buf[at..at + len];
            out.push((
                u16_at(m, 4).unwrap(),
                u16_at(m, 6).unwrap(),
                u32_at(m, 8).unwrap(),
                m[20..].to_vec(),
            ));
            at += len;
        }
        assert_eq!(at, buf.len(), "messages fill the batch exactly");
        out
    }

    #[test]
    fn a_batch_deletes_then_adds_between_begin_and_end() {
        let changes = [SetElements {
            set: "s4-x".into(),
            removed: vec!["10.244.1.10".parse().unwrap()],
            added: vec![
                "10.244.1.20".parse().unwrap(),
                "10.244.1.21".parse().unwrap(),
            ],
        }];
        let (buf, acks) = encode_batch("tortie", &changes, 7).expect("encode");
        assert_eq!(acks, 2);
        let m = messages(&buf);
        let types: Vec<u16> = m.iter().map(|x| x.0).collect();
        assert_eq!(
            types,
            [
                NFNL_MSG_BATCH_BEGIN,
                msg_type(NFT_MSG_DELSETELEM),
                msg_type(NFT_MSG_NEWSETELEM),
                NFNL_MSG_BATCH_END
            ]
        );
        let seqs: Vec<u32> = m.iter().map(|x| x.2).collect();
        assert_eq!(seqs, [7, 8, 9, 10]);
        assert_eq!(m[1].1, NLM_F_REQUEST | NLM_F_ACK);
        assert_eq!(m[2].1, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE);
        // Batch begin/end name the nf_tables subsystem in res_id (big-endian).
        assert_eq!(&buf[16..20], &[0, 0, 0, 10]);
        // The delete: table, set, one element whose key is the 4 address bytes.
        let p = &m[1].3;
        assert_eq!(&p[..4], &[11, 0, 1, 0]);
        assert_eq!(&p[4..11], b"tortie\0");
        assert_eq!(&p[12..16], &[9, 0, 2, 0]);
        assert_eq!(&p[16..21], b"s4-x\0");
        // elements(nest 3) > elem(nest 1) > key(nest 1) > value(1): 10.244.1.10
        assert_eq!(
            u16_at(p, 26),
            Some(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED)
        );
        assert_eq!(u16_at(p, 24), Some(4 + 4 + 4 + 8));
        assert_eq!(&p[36..40], &[8, 0, 1, 0]);
        assert_eq!(&p[40..44], &[10, 244, 1, 10]);
        assert_eq!(p.len(), 44);
        // The add carries two elements.
        assert_eq!(m[2].3.len(), 24 + 4 + 2 * 16);
    }

    #[test]
    fn ipv6_keys_are_sixteen_bytes_and_empty_changes_send_nothing() {
        let changes = [SetElements {
            set: "s6-y".into(),
            removed: vec![],
            added: vec!["fd00:10:244::1".parse().unwrap()],
        }];
        let (buf, acks) = encode_batch("tortie", &changes, 1).expect("encode");
        assert_eq!(acks, 1);
        let m = messages(&buf);
        assert_eq!(m.len(), 3);
        let p = &m[1].3;
        assert_eq!(u16_at(p, p.len() - 20), Some(20));
        assert_eq!(
            &p[p.len() - 16..],
            &"fd00:10:244::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        let empty = [SetElements {
            set: "s4-x".into(),
            removed: vec![],
            added: vec![],
        }];
        assert_eq!(encode_batch("tortie", &empty, 1).expect("encode").1, 0);
    }

    /// A set change larger than one attribute can hold is split over several messages, each
    /// list complete (the kernel would read a capped list as a shorter one).
    #[test]
    fn large_changes_are_split_into_whole_messages() {
        let v6: Vec<IpAddr> = (0..2500u32)
            .map(|i| {
                IpAddr::V6(std::net::Ipv6Addr::from(
                    0xfd00_0010_0244_0000_0000_0000_0000_0000u128 + u128::from(i),
                ))
            })
            .collect();
        let v4: Vec<IpAddr> = (0..4096u32)
            .map(|i| IpAddr::V4(std::net::Ipv4Addr::from(0x0af4_0000 + i)))
            .collect();
        let changes = [
            SetElements {
                set: "s6-x".into(),
                removed: Vec::new(),
                added: v6,
            },
            SetElements {
                set: "s4-x".into(),
                removed: v4,
                added: Vec::new(),
            },
        ];
        assert_eq!(messages_for(&changes), 3 + 4);
        let (buf, acks) = encode_batch("tortie", &changes, 1).expect("encode");
        assert_eq!(acks, 7);
        let m = messages(&buf);
        assert_eq!(m.len(), 2 + 7);
        let mut elements = 0;
        for (_, _, _, p) in &m[1..m.len() - 1] {
            // After the table (12) and set (12) attributes: the list, its length exact.
            let len = usize::from(u16_at(p, 24).expect("list length"));
            assert_eq!(24 + len, p.len(), "the list is the rest of the message");
            let per = if p[16] == b's' && p[17] == b'6' {
                28
            } else {
                16
            };
            elements += (len - 4) / per;
        }
        assert_eq!(elements, 2500 + 4096);
        let one = |n: usize| SetElements {
            set: "s4-x".into(),
            removed: Vec::new(),
            added: vec![IpAddr::V4(std::net::Ipv4Addr::LOCALHOST); n],
        };
        assert!(
            end_nest(&mut vec![0u8; 70_000], 0).is_err(),
            "no silent cap"
        );
        assert_eq!(messages_for(&[one(1024)]), 1);
        assert_eq!(messages_for(&[one(1025)]), 2);
    }

    #[test]
    fn acks_and_errors_are_read_from_a_datagram() {
        let mut buf = Vec::new();
        for code in [0i32, -2] {
            let at = header(&mut buf, NLMSG_ERROR, 0, 3);
            buf.extend_from_slice(&code.to_ne_bytes());
            buf.extend_from_slice(&[0; 16]); // the capped original header
            finish(&mut buf, at);
        }
        assert_eq!(ack_codes(&buf), [0, -2]);
        assert!(ack_codes(&[1, 2, 3]).is_empty());
    }
}
