//! Packets of Calico `Log` rules as structured log lines.
//!
//! The dataplane renders a Log rule as nft `log prefix "tortie <rule>: " group 1`
//! ([`tortie_dataplane::LOG_GROUP`]): the kernel hands a copy of the packet's first
//! [`COPY_RANGE`] bytes to whoever listens on NFLOG group 1 in that network namespace, instead
//! of writing to the kernel log (which it does not do at all from a non-initial namespace
//! unless `nf_log_all_netns` is set). This module is that listener: a NETLINK_NETFILTER socket
//! opened in the node's namespace, bound to the group, whose messages become one `tracing`
//! event each, target [`TARGET`], message `policy log`, with fields `rule` (the rule's
//! identity, `gnp/audit egress[2]`), `policy`, `direction`, `rule_index`, `src`, `dst`,
//! `protocol`, `src_port`, `dst_port`, `iif`, `oif` (each only when known).
//!
//! The staged policy preview uses the same group with prefixes `tortie staged allow <rule>: `
//! and `tortie staged deny <rule>: ` (the rule may also be `end of tier <tier>` or
//! `no profile matched`): the event then has `staged` = `allow` or `deny`, what the staged
//! policies would have done with the packet, which the enforced policy decided meanwhile.
//!
//! Two threads, both owned by [`PolicyLog`] and told to stop when it is dropped:
//! - the receiver, inside the namespace (entered with [`NetNs::run`], so interface indexes
//!   resolve to names there), reads the socket, parses each packet's IP and transport
//!   headers (by hand, bounds-checked: a malformed message is skipped, never a panic, and the
//!   first one is reported) and queues a [`PolicyLogRecord`] without ever blocking;
//! - the emitter takes records off that bounded queue, writes the events and counts them
//!   (`tortie_agent_policy_log_packets_total{rule}`).
//!
//! Nothing waits on logging: when the queue is full the record is dropped, and when the
//! receiver itself falls behind the kernel drops messages at the socket (it never blocks
//! for a listener); both are counted in `tortie_agent_policy_log_dropped_total`, the latter
//! from gaps in NFLOG's per-group sequence numbers. Policy does not depend on any of this:
//! without a listener the kernel just discards the copies.
//!
//! The NFLOG configuration and packet messages come from `netlink-packet-netfilter`; the
//! socket is `netlink-sys`'s. No `PF_UNBIND`/`PF_BIND` is sent: those only choose the
//! namespace's *default* logger for a family (they were needed before Linux 3.17), whereas
//! `log ... group N` names nfnetlink_log itself; binding it as the default would redirect
//! other users' kernel logging (conntrack's `log_invalid`, say) in the node's namespace.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use netlink_packet_core::{NetlinkMessage, NetlinkPayload};
use netlink_packet_netfilter::nflog::{
    ConfigCmd, ConfigFlags, ConfigMode, PacketNla, Timeout, ULogMessage, config_request,
};
use netlink_packet_netfilter::{NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily};
use netlink_sys::Socket;
use netlink_sys::protocols::NETLINK_NETFILTER;
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tortie_calc::model::proto;
use tortie_netlink::NetNs;

use crate::metrics::{Metrics, RuleLabel};

/// The `tracing` target of the events.
pub const TARGET: &str = "tortie::policy_log";
/// Bytes of each packet the kernel copies: enough for an IPv6 header with a few extension
/// headers and the ports.
pub const COPY_RANGE: u32 = 128;
/// Records queued between the receiver and the emitter; more are dropped and counted.
pub const QUEUE: usize = 1024;
/// Distinct `rule` label values of the packets metric; further rules count as `other`.
pub const MAX_RULE_SERIES: usize = 1000;
/// How often the receiver looks at the stop flag while no message arrives.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long the kernel may take to acknowledge the group binding.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest the kernel holds packets back to send several in one datagram (its default is
/// 1 s, or 100 packets).
pub const FLUSH_TIMEOUT: Duration = Duration::from_millis(100);
/// How long a resolved interface name is reused.
const IFNAME_TTL: Duration = Duration::from_secs(5);
/// Receive buffer: one datagram holds at most the kernel's NFLOG buffer (a page by default).
const RECV_BUF: usize = 64 * 1024;

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
pub enum PolicyLogError {
    #[error(transparent)]
    Netns(#[from] tortie_netlink::Error),
    #[error("cannot open a NETLINK_NETFILTER socket")]
    Socket(#[source] io::Error),
    #[error("cannot bind NFLOG group {group} (is another listener using it?)")]
    Bind {
        group: u16,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the policy log thread")]
    Thread(#[source] io::Error),
}

/// Where and how to listen.
#[derive(Debug, Clone)]
pub struct PolicyLogConfig {
    /// The node's network namespace (`/run/netns/NAME`), or the agent's own when `None`.
    pub netns: Option<PathBuf>,
    /// NFLOG group; [`tortie_dataplane::LOG_GROUP`].
    pub group: u16,
    /// Bytes of each packet to copy; [`COPY_RANGE`].
    pub copy_range: u32,
    /// Capacity of the queue to the emitter; [`QUEUE`].
    pub queue: usize,
    /// Also gets every record that was logged (tests); dropped when full, never waited on.
    pub observer: Option<SyncSender<PolicyLogRecord>>,
}

impl PolicyLogConfig {
    /// The defaults for the namespace at `netns` (the agent's own when `None`).
    pub fn new(netns: Option<&Path>) -> Self {
        PolicyLogConfig {
            netns: netns.map(Path::to_path_buf),
            group: tortie_dataplane::LOG_GROUP,
            copy_range: COPY_RANGE,
            queue: QUEUE,
            observer: None,
        }
    }
}

/// An interface the packet came in on or goes out of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub index: u32,
    /// Its name in the node's namespace, when it could be resolved.
    pub name: Option<String>,
}

impl fmt::Display for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(n) => f.write_str(n),
            None => write!(f, "#{}", self.index),
        }
    }
}

/// What the copied headers of a packet say; `None` where they were absent or cut short.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PacketSummary {
    pub src: Option<IpAddr>,
    pub dst: Option<IpAddr>,
    /// IP protocol number (of the transport header, past IPv6 extension headers).
    pub protocol: Option<u8>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
}

/// One logged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyLogRecord {
    /// The rule's identity, `gnp/audit egress[0]`: the log prefix without `tortie ` and the
    /// final `: ` (a prefix that is not tortie's is kept whole, trimmed).
    pub rule: String,
    /// For the staged policy preview (`tortie staged allow|deny <rule>: `): what the staged
    /// policies would do, `allow` or `deny` (the packet itself went on to the enforced
    /// policy); `None` for a Log rule.
    pub staged: Option<&'static str>,
    pub packet: PacketSummary,
    pub iif: Option<Interface>,
    pub oif: Option<Interface>,
}

/// A rule identity split up: `gnp/audit egress[2]` → (`gnp/audit`, `egress`, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleRef<'a> {
    pub policy: &'a str,
    pub direction: &'a str,
    pub index: u32,
}

impl<'a> RuleRef<'a> {
    /// Splits `<policy> <direction>[<index>]`; `None` for anything else.
    pub fn parse(rule: &'a str) -> Option<RuleRef<'a>> {
        let (policy, last) = rule.rsplit_once(' ')?;
        let (direction, index) = last.strip_suffix(']')?.split_once('[')?;
        if policy.is_empty() || direction.is_empty() {
            return None;
        }
        Some(RuleRef {
            policy,
            direction,
            index: index.parse().ok()?,
        })
    }
}

/// The rule identity in a log prefix written by the dataplane (`tortie <rule>: `); `None`
/// when the prefix is not tortie's. A prefix cut at nft's 127 bytes has no `: ` and gives
/// what is left.
pub fn rule_from_prefix(prefix: &str) -> Option<&str> {
    let rest = prefix.strip_prefix(tortie_dataplane::LOG_PREFIX_START)?;
    let rest = rest.trim_end();
    let rule = rest.strip_suffix(':').unwrap_or(rest).trim_end();
    (!rule.is_empty()).then_some(rule)
}

/// Splits a staged preview's verdict off a rule identity (`staged deny knp/x/a ingress[0]`
/// → (`deny`, `knp/x/a ingress[0]`)); anything else comes back whole with `None`.
pub fn split_staged(rule: &str) -> (Option<&'static str>, &str) {
    if let Some(rest) = rule.strip_prefix(tortie_dataplane::STAGED_ALLOW) {
        (Some("allow"), rest)
    } else if let Some(rest) = rule.strip_prefix(tortie_dataplane::STAGED_DENY) {
        (Some("deny"), rest)
    } else {
        (None, rule)
    }
}

/// Reads the IPv4 or IPv6 header (chosen by the version nibble) and the transport ports
/// from the start of a packet. Whatever is cut off or malformed stays `None`.
pub fn parse_packet(p: &[u8]) -> PacketSummary {
    match p.first().map(|b| b >> 4) {
        Some(4) => parse_ipv4(p),
        Some(6) => parse_ipv6(p),
        _ => PacketSummary::default(),
    }
}

fn bytes<const N: usize>(p: &[u8], at: usize) -> Option<[u8; N]> {
    p.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn ports(p: &[u8], at: usize) -> (Option<u16>, Option<u16>) {
    (
        bytes::<2>(p, at).map(u16::from_be_bytes),
        bytes::<2>(p, at + 2).map(u16::from_be_bytes),
    )
}

fn parse_ipv4(p: &[u8]) -> PacketSummary {
    let mut s = PacketSummary::default();
    let Some(head) = bytes::<20>(p, 0) else {
        return s;
    };
    let ihl = usize::from(head[0] & 0x0f) * 4;
    if ihl < 20 {
        return s;
    }
    s.src = Some(IpAddr::V4(Ipv4Addr::new(
        head[12], head[13], head[14], head[15],
    )));
    s.dst = Some(IpAddr::V4(Ipv4Addr::new(
        head[16], head[17], head[18], head[19],
    )));
    s.protocol = Some(head[9]);
    // Only the first fragment carries the transport header.
    let fragment_offset = u16::from_be_bytes([head[6], head[7]]) & 0x1fff;
    if fragment_offset == 0 && proto::has_ports(head[9]) {
        (s.src_port, s.dst_port) = ports(p, ihl);
    }
    s
}

fn parse_ipv6(p: &[u8]) -> PacketSummary {
    const HOP_BY_HOP: u8 = 0;
    const ROUTING: u8 = 43;
    const FRAGMENT: u8 = 44;
    const AUTH: u8 = 51;
    const DEST_OPTS: u8 = 60;
    let mut s = PacketSummary::default();
    let Some(head) = bytes::<40>(p, 0) else {
        return s;
    };
    let addr = |at: usize| bytes::<16>(&head, at).map(|a| IpAddr::V6(Ipv6Addr::from(a)));
    s.src = addr(8);
    s.dst = addr(24);
    let mut next = head[6];
    let mut at = 40usize;
    // A bounded walk over the extension headers.
    for _ in 0..8 {
        let len = match next {
            HOP_BY_HOP | ROUTING | DEST_OPTS => p.get(at + 1).map(|&l| (usize::from(l) + 1) * 8),
            AUTH => p.get(at + 1).map(|&l| (usize::from(l) + 2) * 4),
            FRAGMENT => {
                // A later fragment has no transport header: name the protocol only.
                let Some(frag) = bytes::<8>(p, at) else {
                    return s;
                };
                s.protocol = Some(frag[0]);
                if u16::from_be_bytes([frag[2], frag[3]]) & 0xfff8 != 0 {
                    return s;
                }
                Some(8)
            }
            _ => {
                s.protocol = Some(next);
                if proto::has_ports(next) {
                    (s.src_port, s.dst_port) = ports(p, at);
                }
                return s;
            }
        };
        let (Some(len), Some(&n)) = (len, p.get(at)) else {
            return s;
        };
        next = n;
        at += len;
    }
    s
}

/// One NFLOG packet message, before interface names are resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    record: PolicyLogRecord,
    /// NFLOG's per-group sequence number (we ask for it), to see what the kernel dropped.
    seq: Option<u32>,
}

/// What one netlink message in a datagram was.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Message {
    Packet(Box<Parsed>),
    /// Something else the socket may carry (acks, done); ignored.
    Other,
    /// Could not be decoded.
    Malformed,
}

/// Splits a datagram into its netlink messages (4-byte aligned, each with a 16-byte
/// header); stops at the first length that does not fit.
fn split_messages(buf: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(len) = bytes::<4>(buf, at).map(u32::from_ne_bytes) {
        let Ok(len) = usize::try_from(len) else {
            break;
        };
        let end = at.checked_add(len).filter(|_| len >= 16);
        let Some(msg) = end.and_then(|end| buf.get(at..end)) else {
            break;
        };
        out.push(msg);
        at += len.next_multiple_of(4);
    }
    out
}

fn parse_message(m: &[u8]) -> Message {
    let Ok(msg) = NetlinkMessage::<NetfilterMessage>::deserialize(m) else {
        return Message::Malformed;
    };
    let NetlinkPayload::InnerMessage(NetfilterMessage {
        inner: NetfilterMessageInner::ULog(ULogMessage::Packet(nlas)),
        ..
    }) = msg.payload
    else {
        return Message::Other;
    };
    Message::Packet(Box::new(record_from_nlas(&nlas)))
}

fn record_from_nlas(nlas: &[PacketNla]) -> Parsed {
    let mut r = PolicyLogRecord {
        rule: String::new(),
        staged: None,
        packet: PacketSummary::default(),
        iif: None,
        oif: None,
    };
    let mut seq = None;
    let iface = |index: u32| Interface { index, name: None };
    for nla in nlas {
        match nla {
            PacketNla::Prefix(p) => {
                let p = p.to_string_lossy();
                let (staged, rule) = split_staged(rule_from_prefix(&p).unwrap_or(p.trim()));
                r.staged = staged;
                r.rule = rule.to_string();
            }
            PacketNla::Payload(p) => r.packet = parse_packet(p),
            PacketNla::IfIndexInDev(i) => r.iif = Some(iface(*i)),
            PacketNla::IfIndexOutDev(i) => r.oif = Some(iface(*i)),
            PacketNla::Seq(s) => seq = Some(*s),
            _ => {}
        }
    }
    Parsed { record: r, seq }
}

/// Messages the kernel dropped between two sequence numbers.
fn seq_gap(prev: Option<u32>, cur: Option<u32>) -> u64 {
    match (prev, cur) {
        (Some(p), Some(c)) => {
            let gap = c.wrapping_sub(p).wrapping_sub(1);
            // A huge gap is a reordering or a restart, not losses.
            if gap < 1 << 24 { u64::from(gap) } else { 0 }
        }
        _ => 0,
    }
}

/// Interface index → name in the receiver's namespace, kept for [`IFNAME_TTL`].
#[derive(Debug, Default)]
struct IfNames(HashMap<u32, (Option<String>, Instant)>);

impl IfNames {
    fn resolve(&mut self, iface: &mut Option<Interface>) {
        let Some(i) = iface else {
            return;
        };
        let now = Instant::now();
        if self.0.len() > 4096 {
            self.0.clear();
        }
        let entry = self.0.entry(i.index).or_insert((None, now - IFNAME_TTL));
        if now.duration_since(entry.1) >= IFNAME_TTL {
            // nix 0.31 misses the NULL that marks an unknown index and gives "".
            let name = nix::net::if_::if_indextoname(i.index)
                .ok()
                .and_then(|n| n.into_string().ok())
                .filter(|n| !n.is_empty());
            *entry = (name, now);
        }
        i.name.clone_from(&entry.0);
    }
}

/// The running listener. Dropping it stops both threads (within [`POLL_INTERVAL`]; the
/// emitter first writes what is queued).
#[derive(Debug)]
pub struct PolicyLog {
    stop: Arc<AtomicBool>,
    group: u16,
    threads: Vec<JoinHandle<()>>,
}

impl PolicyLog {
    /// Opens the socket in the namespace, binds the group and starts the threads. Errors
    /// leave nothing running.
    pub fn start(config: PolicyLogConfig, metrics: Arc<Metrics>) -> Result<Self, PolicyLogError> {
        let ns = config.netns.as_deref().map(NetNs::open).transpose()?;
        let (group, copy_range) = (config.group, config.copy_range);
        let socket = in_netns(ns.as_ref(), move || open_socket(group, copy_range))??;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::sync_channel(config.queue.max(1));
        let emitter = {
            let metrics = metrics.clone();
            let observer = config.observer;
            std::thread::Builder::new()
                .name("tortie-plog-emit".to_string())
                .spawn(move || emit_loop(&rx, &metrics, observer.as_ref()))
                .map_err(PolicyLogError::Thread)?
        };
        let receiver = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("tortie-plog-recv".to_string())
                .spawn(move || {
                    // Inside the namespace, so that interface indexes resolve there.
                    let run = || receive_loop(&socket, &tx, &stop, &metrics);
                    if let Err(e) = in_netns(ns.as_ref(), run) {
                        tracing::warn!(
                            error = %crate::dataplane::error_chain(&e),
                            "policy log listener stopped; Log rules are no longer logged"
                        );
                    }
                })
                // The emitter then ends too: the failed spawn dropped the sender.
                .map_err(PolicyLogError::Thread)?
        };
        Ok(PolicyLog {
            stop,
            group,
            threads: vec![receiver, emitter],
        })
    }

    /// The NFLOG group listened on.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// Stops the listener and waits for its threads (about [`POLL_INTERVAL`]). Blocking.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for PolicyLog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs `f` inside `ns` (on a thread of its own), or right here when `None`.
fn in_netns<T: Send>(
    ns: Option<&NetNs>,
    f: impl FnOnce() -> T + Send,
) -> Result<T, tortie_netlink::Error> {
    match ns {
        Some(ns) => ns.run(f),
        None => Ok(f()),
    }
}

/// A NETLINK_NETFILTER socket bound to NFLOG `group`, copying `copy_range` bytes of each
/// packet, numbering the messages and batching them for at most [`FLUSH_TIMEOUT`].
fn open_socket(group: u16, copy_range: u32) -> Result<Socket, PolicyLogError> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(PolicyLogError::Socket)?;
    socket.bind_auto().map_err(PolicyLogError::Socket)?;
    let mut msg = config_request(
        NetfilterProtoFamily::Unspec,
        group,
        vec![
            ConfigCmd::Bind.into(),
            ConfigMode::new_packet(copy_range).into(),
            ConfigFlags::SEQ.into(),
            Timeout::from(FLUSH_TIMEOUT).into(),
        ],
    );
    msg.header.sequence_number = 1;
    request(&socket, &msg).map_err(|source| PolicyLogError::Bind { group, source })?;
    Ok(socket)
}

/// Sends one request and waits (at most [`ACK_TIMEOUT`]) for its acknowledgement.
fn request(socket: &Socket, msg: &NetlinkMessage<NetfilterMessage>) -> io::Result<()> {
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let seq = msg.header.sequence_number;
    let deadline = Instant::now() + ACK_TIMEOUT;
    let mut rbuf = vec![0u8; RECV_BUF];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the kernel did not acknowledge",
            ));
        }
        if !readable(socket, left)? {
            continue;
        }
        let n = socket.recv(&mut &mut rbuf[..], 0)?;
        for m in split_messages(rbuf.get(..n).unwrap_or_default()) {
            let Ok(reply) = NetlinkMessage::<NetfilterMessage>::deserialize(m) else {
                continue;
            };
            if reply.header.sequence_number != seq {
                continue;
            }
            if let NetlinkPayload::Error(e) = reply.payload {
                return match e.code {
                    None => Ok(()),
                    Some(_) => Err(e.to_io()),
                };
            }
        }
    }
}

/// Waits up to `timeout` for the socket to have something to read (or an error).
fn readable(socket: &Socket, timeout: Duration) -> io::Result<bool> {
    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(n) => Ok(n > 0),
        Err(Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Reads packets until `stop`, queueing a record for each without ever blocking.
fn receive_loop(
    socket: &Socket,
    tx: &SyncSender<PolicyLogRecord>,
    stop: &AtomicBool,
    metrics: &Metrics,
) {
    if let Err(e) = receive(socket, tx, stop, metrics) {
        tracing::warn!(error = %e, "policy log listener failed; Log rules are no longer logged");
    }
}

fn receive(
    socket: &Socket,
    tx: &SyncSender<PolicyLogRecord>,
    stop: &AtomicBool,
    metrics: &Metrics,
) -> io::Result<()> {
    let mut buf = vec![0u8; RECV_BUF];
    let mut state = ReceiveState::default();
    while !stop.load(Ordering::Relaxed) {
        if !readable(socket, POLL_INTERVAL)? {
            continue;
        }
        let n = match socket.recv(&mut &mut buf[..], 0) {
            Ok(n) => n,
            // The socket buffer overflowed: the kernel dropped messages (the sequence
            // numbers tell how many).
            Err(e) if e.raw_os_error() == Some(Errno::ENOBUFS as i32) => {
                tracing::debug!("policy log socket overflowed");
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if !state.on_datagram(buf.get(..n).unwrap_or_default(), tx, metrics) {
            break;
        }
    }
    Ok(())
}

/// What the receiver remembers between datagrams.
#[derive(Debug, Default)]
struct ReceiveState {
    names: IfNames,
    last_seq: Option<u32>,
    malformed_warned: bool,
}

impl ReceiveState {
    /// Queues a record per packet message of `datagram`, counting what cannot be queued and
    /// what the kernel dropped before it. `false` once the emitter is gone.
    fn on_datagram(
        &mut self,
        datagram: &[u8],
        tx: &SyncSender<PolicyLogRecord>,
        metrics: &Metrics,
    ) -> bool {
        for m in split_messages(datagram) {
            let parsed = match parse_message(m) {
                Message::Packet(p) => p,
                Message::Other => continue,
                Message::Malformed => {
                    if !self.malformed_warned {
                        self.malformed_warned = true;
                        tracing::warn!(
                            bytes = m.len(),
                            "undecodable NFLOG message skipped (further ones are not reported)"
                        );
                    }
                    continue;
                }
            };
            let Parsed { mut record, seq } = *parsed;
            metrics
                .policy_log_dropped
                .inc_by(seq_gap(self.last_seq, seq));
            if seq.is_some() {
                self.last_seq = seq;
            }
            self.names.resolve(&mut record.iif);
            self.names.resolve(&mut record.oif);
            match tx.try_send(record) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    metrics.policy_log_dropped.inc();
                }
                Err(TrySendError::Disconnected(_)) => return false,
            }
        }
        true
    }
}

/// Writes one event per record, counts it and hands it to the observer.
fn emit_loop(
    rx: &Receiver<PolicyLogRecord>,
    metrics: &Metrics,
    observer: Option<&SyncSender<PolicyLogRecord>>,
) {
    let mut series = HashSet::new();
    while let Ok(r) = rx.recv() {
        emit(&r);
        let label = match r.staged {
            Some(v) => format!("staged {v} {}", r.rule),
            None => r.rule.clone(),
        };
        let rule = if series.contains(&label) || series.len() < MAX_RULE_SERIES {
            series.insert(label.clone());
            label
        } else {
            "other".to_string()
        };
        metrics
            .policy_log_packets
            .get_or_create(&RuleLabel { rule })
            .inc();
        if let Some(o) = observer {
            let _ = o.try_send(r);
        }
    }
}

/// The `tracing` event of one record.
fn emit(r: &PolicyLogRecord) {
    let rule_ref = RuleRef::parse(&r.rule);
    let p = &r.packet;
    tracing::info!(
        target: TARGET,
        rule = r.rule.as_str(),
        staged = r.staged,
        policy = rule_ref.map(|x| x.policy),
        direction = rule_ref.map(|x| x.direction),
        rule_index = rule_ref.map(|x| x.index),
        src = p.src.map(display),
        dst = p.dst.map(display),
        protocol = p.protocol.map(proto::name),
        src_port = p.src_port,
        dst_port = p.dst_port,
        iif = r.iif.as_ref().map(display),
        oif = r.oif.as_ref().map(display),
        "policy log"
    );
}

#[cfg(test)]
#[path = "policy_log_tests.rs"]
mod tests;
