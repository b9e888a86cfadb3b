//! Route changes in batches: many messages per `sendmsg`, every answer matched to its request.
//!
//! [`add_route`](crate::route::add_route) and its siblings send one request through
//! rtnetlink's connection task and await its answer: at 100k routes that is 15–50 µs per
//! route, mostly task wake-ups, where the kernel needs a few. A [`RouteSocket`] writes up to a
//! window of requests back to back into one buffer and sends it with one `sendmsg` on a plain
//! netlink socket (as FRR's zebra does). The kernel runs the messages of a buffer in order and
//! answers each one — every message carries `NLM_F_ACK` — under that message's own sequence
//! number, which is how each outcome goes back to its request. A failed message does not stop
//! the ones after it.
//!
//! Outcomes other than the kernel's answer are reported on the requests concerned, never
//! guessed ([`Error::Unanswered`], with the errno):
//! - the answers overflowed the socket's receive buffer (the kernel drops an answer it cannot
//!   queue and flags `ENOBUFS`): the buffer is raised at open (`SO_RCVBUFFORCE`) and the
//!   window sized to it, so this should not happen; if it does, every request of the window
//!   left without an answer fails with `ENOBUFS`;
//! - no answer within [`ANSWER_TIMEOUT`]: `ETIMEDOUT`;
//! - `sendmsg` failed: every request of the window, with that error.
//!
//! Written by hand on netlink-packet-core/-route (messages) and netlink-sys (the socket)
//! because rtnetlink has no batched requests. The socket is blocking: call
//! [`RouteSocket::execute`] from a blocking thread. The windowing and the matching of answers
//! run against a [`Transport`], which the unit tests script.

use std::io;
use std::num::NonZeroI32;
use std::os::fd::AsFd;
use std::time::Duration;

use netlink_packet_core::{
    ErrorMessage, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLMSG_ERROR, NetlinkBuffer, NetlinkMessage,
    NlasIterator,
};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{setsockopt, sockopt};
use rtnetlink::packet_core as netlink_packet_core;
use rtnetlink::sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::route::RouteRequest;
use crate::{Error, NetNs};

/// Most requests per `sendmsg`.
pub const DEFAULT_WINDOW: usize = 1024;
/// Most bytes per `sendmsg`: the kernel refuses a buffer larger than the socket's send buffer
/// (208 KiB by default).
const MAX_SEND_BYTES: usize = 64 * 1024;
/// The receive buffer asked for at open.
const RCVBUF_BYTES: usize = 4 << 20;
/// Receive-buffer room reserved per answer when sizing the window (an answer's buffer takes
/// about 1 KiB of the socket's receive budget).
const ANSWER_ROOM: usize = 2048;
/// How long to wait for the next answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// Room for one received datagram (one answer, with the extended ack).
const RECV_BYTES: usize = 8192;
/// `NLMSGERR_ATTR_MSG`: the extended ack's text.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Length of `struct nlmsghdr`.
const HEADER_LEN: usize = 16;

/// Where windows go: the kernel, or a script in tests.
pub trait Transport {
    /// Sends one buffer of messages.
    fn send(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Receives one datagram into `buf` (cleared first), waiting at most `timeout`;
    /// `ErrorKind::TimedOut` when none came.
    fn recv(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> io::Result<()>;
}

/// A netlink socket in one namespace for batched route changes.
#[derive(Debug)]
pub struct RouteSocket {
    socket: Socket,
    windows: Windows,
}

impl RouteSocket {
    /// A socket made inside `ns`, its receive buffer raised, the window sized to it.
    pub fn open(ns: &NetNs) -> Result<RouteSocket, Error> {
        let sock_err = |source| Error::Socket {
            netns: ns.label().to_string(),
            source,
        };
        let socket = ns.run(|| Socket::new(NETLINK_ROUTE))?.map_err(sock_err)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(sock_err)?;
        // Answers carry only the request's header, and the kernel's text on failure; both are
        // optional (older kernels), so failures to set them are ignored.
        let _ = socket.set_cap_ack(true);
        let _ = socket.set_ext_ack(true);
        if setsockopt(&socket.as_fd(), sockopt::RcvBufForce, &RCVBUF_BYTES).is_err() {
            let _ = socket.set_rx_buf_sz(RCVBUF_BYTES);
        }
        let rcvbuf = socket.get_rx_buf_sz().map_err(sock_err)?;
        socket.set_non_blocking(true).map_err(sock_err)?;
        Ok(RouteSocket {
            socket,
            windows: Windows::new((rcvbuf / ANSWER_ROOM).clamp(1, DEFAULT_WINDOW)),
        })
    }

    /// Requests per `sendmsg`.
    pub fn window(&self) -> usize {
        self.windows.window
    }

    /// Sends at most `n` requests per `sendmsg` (never more than the receive buffer allows).
    pub fn set_window(&mut self, n: usize) {
        self.windows.window = n.clamp(1, self.windows.max_window);
    }

    /// Executes every request, in order, a window per `sendmsg`; one result per request. A
    /// failure never stops the others. Invalid routes fail without being sent; a delete of a
    /// route that is not there succeeds (as [`crate::route::delete_route`] returning
    /// `false`). Blocks until every request is answered or given up on.
    pub fn execute(&mut self, reqs: &[RouteRequest]) -> Vec<Result<(), Error>> {
        self.windows.run(&mut Kernel(&self.socket), reqs)
    }
}

/// The kernel end of a [`RouteSocket`].
struct Kernel<'a>(&'a Socket);

impl Transport for Kernel<'_> {
    fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        let n = self.0.send(buf, 0)?;
        if n == buf.len() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "short netlink send",
            ))
        }
    }

    fn recv(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> io::Result<()> {
        let mut waited = false;
        // The socket is non-blocking: try, else wait once (interrupted waits retry a few times).
        for _ in 0..8 {
            buf.clear();
            buf.reserve(RECV_BYTES);
            match self.0.recv(buf, 0) {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !waited => {
                    let mut fds = [PollFd::new(self.0.as_fd(), PollFlags::POLLIN)];
                    let t = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
                    match poll(&mut fds, t) {
                        Ok(0) => break,
                        Ok(_) => waited = true,
                        Err(Errno::EINTR) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        Err(io::ErrorKind::TimedOut.into())
    }
}

/// The windowing state: window size, next sequence number, buffers.
#[derive(Debug)]
struct Windows {
    window: usize,
    max_window: usize,
    seq: u32,
    timeout: Duration,
    send_buf: Vec<u8>,
    recv_buf: Vec<u8>,
}

impl Windows {
    fn new(max_window: usize) -> Windows {
        Windows {
            window: max_window,
            max_window,
            seq: 1,
            timeout: ANSWER_TIMEOUT,
            send_buf: Vec::new(),
            recv_buf: Vec::new(),
        }
    }

    /// Sends `reqs` window by window over `t` and matches the answers by sequence number.
    fn run(&mut self, t: &mut dyn Transport, reqs: &[RouteRequest]) -> Vec<Result<(), Error>> {
        let mut results: Vec<Option<Result<(), Error>>> = Vec::with_capacity(reqs.len());
        results.resize_with(reqs.len(), || None);
        // Indices into `reqs` of this window's messages; message k has sequence `base + k`.
        let mut sent: Vec<usize> = Vec::with_capacity(self.window);
        let mut next = 0;
        while next < reqs.len() {
            self.send_buf.clear();
            sent.clear();
            let base = self.seq;
            while next < reqs.len()
                && sent.len() < self.window
                && self.send_buf.len() < MAX_SEND_BYTES
            {
                let req = &reqs[next];
                let valid = match req {
                    RouteRequest::Add(r) | RouteRequest::Replace(r) => r.validate(),
                    RouteRequest::Delete(_) => Ok(()),
                };
                match valid {
                    Ok(()) => {
                        encode(
                            req,
                            base.wrapping_add(sent.len() as u32),
                            &mut self.send_buf,
                        );
                        sent.push(next);
                    }
                    Err(e) => results[next] = Some(Err(e)),
                }
                next += 1;
            }
            self.seq = base.wrapping_add(sent.len() as u32);
            if sent.is_empty() {
                continue;
            }
            let failure = match t.send(&self.send_buf) {
                Ok(()) => self.collect(t, reqs, &sent, base, &mut results),
                Err(e) => Some(e),
            };
            if let Some(e) = failure {
                for &i in &sent {
                    if results[i].is_none() {
                        results[i] = Some(Err(Error::Unanswered {
                            what: reqs[i].describe(),
                            source: copy_io(&e),
                        }));
                    }
                }
            }
        }
        results.into_iter().map(|r| r.unwrap_or(Ok(()))).collect()
    }

    /// Reads answers until every request of the window (`sent`, from sequence `base`) has one;
    /// else returns why not.
    fn collect(
        &mut self,
        t: &mut dyn Transport,
        reqs: &[RouteRequest],
        sent: &[usize],
        base: u32,
        results: &mut [Option<Result<(), Error>>],
    ) -> Option<io::Error> {
        let mut open = sent.len();
        let mut lost: Option<io::Error> = None;
        let mut answers = Vec::new();
        // Each datagram answers a request of this window or is a stale one of an earlier,
        // given-up window: bounded by both.
        for _ in 0..sent.len() + self.max_window + 64 {
            if open == 0 {
                return None;
            }
            // After an overflow, what the kernel did queue is already there: no waiting.
            let timeout = if lost.is_some() {
                Duration::ZERO
            } else {
                self.timeout
            };
            match t.recv(&mut self.recv_buf, timeout) {
                Ok(()) => {
                    answers.clear();
                    parse_answers(&self.recv_buf, &mut answers);
                    for a in answers.drain(..) {
                        let k = a.seq.wrapping_sub(base) as usize;
                        if let Some(&i) = sent.get(k)
                            && results[i].is_none()
                        {
                            results[i] = Some(outcome(&reqs[i], a));
                            open -= 1;
                        }
                    }
                }
                Err(e) if lost.is_none() && e.raw_os_error() == Some(Errno::ENOBUFS as i32) => {
                    lost = Some(e);
                }
                Err(e) => return Some(lost.unwrap_or(e)),
            }
        }
        (open > 0).then(|| lost.unwrap_or_else(|| io::Error::other("too many stray answers")))
    }
}

/// Appends `req` as one message with sequence number `seq`, padded to 4 bytes.
fn encode(req: &RouteRequest, seq: u32, buf: &mut Vec<u8>) {
    let (msg, flags) = req.message();
    let mut m = NetlinkMessage::from(msg);
    m.header.flags = flags;
    m.header.sequence_number = seq;
    m.finalize();
    let start = buf.len();
    buf.resize(start + m.buffer_len(), 0);
    m.serialize(&mut buf[start..]);
    buf.resize(align4(buf.len()), 0);
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One answer of the kernel: the request's sequence number, its errno (0: done), and the
/// kernel's explanation (extended ack), if any.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    seq: u32,
    errno: i32,
    text: Option<String>,
}

/// The answers (`NLMSG_ERROR` messages) in one datagram; anything else is skipped.
fn parse_answers(datagram: &[u8], out: &mut Vec<Answer>) {
    let mut off = 0;
    while let Some(rest) = datagram.get(off..)
        && !rest.is_empty()
    {
        let Ok(nb) = NetlinkBuffer::new_checked(rest) else {
            return;
        };
        if nb.message_type() == NLMSG_ERROR
            && let Some(a) = parse_answer(nb.flags(), nb.sequence_number(), nb.payload())
        {
            out.push(a);
        }
        off += align4(nb.length() as usize);
    }
}

/// `struct nlmsgerr` (the code, then the request's header or whole message) and, with
/// `NLM_F_ACK_TLVS`, attributes of which `NLMSGERR_ATTR_MSG` is the text.
fn parse_answer(flags: u16, seq: u32, payload: &[u8]) -> Option<Answer> {
    let code = i32::from_ne_bytes(payload.get(0..4)?.try_into().ok()?);
    let mut text = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        let echoed = if flags & NLM_F_CAPPED != 0 {
            HEADER_LEN
        } else {
            u32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?) as usize
        };
        if let Some(attrs) = payload.get(4 + align4(echoed)..) {
            text = NlasIterator::new(attrs)
                .filter_map(Result::ok)
                .find(|nla| nla.kind() == NLMSGERR_ATTR_MSG)
                .map(|nla| {
                    String::from_utf8_lossy(nla.value())
                        .trim_end_matches('\0')
                        .to_string()
                });
        }
    }
    Some(Answer {
        seq,
        errno: code.saturating_neg(),
        text,
    })
}

/// The result of `req` given its answer.
fn outcome(req: &RouteRequest, a: Answer) -> Result<(), Error> {
    let Some(code) = NonZeroI32::new(a.errno.saturating_neg()) else {
        return Ok(());
    };
    let mut msg = ErrorMessage::default();
    msg.code = Some(code);
    let mut what = req.describe();
    if let Some(text) = a.text.filter(|t| !t.is_empty()) {
        what = format!("{what} ({text})");
    }
    let e = Error::netlink(what, rtnetlink::Error::NetlinkError(msg));
    if matches!(req, RouteRequest::Delete(_)) && e.is_not_found() {
        return Ok(());
    }
    Err(e)
}

fn copy_io(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::net::IpAddr;

    use ipnet::IpNet;
    use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST};
    use netlink_packet_route::RouteNetlinkMessage;

    use super::*;
    use crate::route::Route;

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    fn gw() -> IpAddr {
        "198.18.0.2".parse().expect("ip")
    }

    fn adds(n: usize) -> Vec<RouteRequest> {
        (0..n)
            .map(|i| {
                let dst =
                    IpNet::new(IpAddr::from([10, (i >> 8) as u8, i as u8, 0]), 24).expect("net");
                RouteRequest::Add(Route::via(dst, gw()).with_protocol(81))
            })
            .collect()
    }

    /// One request as the scripted kernel sees it.
    #[derive(Debug, Clone)]
    struct Seen {
        seq: u32,
        flags: u16,
        delete: bool,
        dst: Option<IpAddr>,
    }

    /// A scripted kernel: decodes every sent buffer and answers each message with
    /// `verdict(message)` (an errno, 0 for done), one datagram per answer; can lose answers
    /// (from the n-th on, as an overflowing receive buffer does) or stay silent.
    struct Script {
        verdict: Box<dyn Fn(&Seen) -> i32>,
        sends: Vec<Vec<Seen>>,
        queue: VecDeque<io::Result<Vec<u8>>>,
        /// Answers after this many are dropped and `ENOBUFS` reported once.
        keep: Option<usize>,
        silent: bool,
        answered: usize,
    }

    impl Script {
        fn new(verdict: impl Fn(&Seen) -> i32 + 'static) -> Script {
            Script {
                verdict: Box::new(verdict),
                sends: Vec::new(),
                queue: VecDeque::new(),
                keep: None,
                silent: false,
                answered: 0,
            }
        }
    }

    /// An answer datagram as the kernel writes it with `NETLINK_CAP_ACK` and
    /// `NETLINK_EXT_ACK`: header, code, the request's header, and on failure the text.
    fn answer_bytes(seq: u32, errno: i32, text: Option<&str>) -> Vec<u8> {
        let mut payload = (-errno).to_ne_bytes().to_vec();
        payload.extend_from_slice(&[0u8; HEADER_LEN]); // the echoed header (content unused)
        let mut flags = NLM_F_CAPPED;
        if let Some(t) = text {
            flags |= NLM_F_ACK_TLVS;
            let mut v = t.as_bytes().to_vec();
            v.push(0);
            let len = 4 + v.len();
            payload.extend_from_slice(&(len as u16).to_ne_bytes());
            payload.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
            payload.extend_from_slice(&v);
            payload.resize(align4(payload.len()), 0);
        }
        let mut out = ((HEADER_LEN + payload.len()) as u32).to_ne_bytes().to_vec();
        out.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        out.extend_from_slice(&flags.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&payload);
        out
    }

    fn decode(buf: &[u8]) -> Vec<Seen> {
        let mut seen = Vec::new();
        let mut off = 0;
        while off < buf.len() {
            let nb = NetlinkBuffer::new_checked(&buf[off..]).expect("framing");
            let len = nb.length() as usize;
            let m = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[off..off + len])
                .expect("a route message");
            let (delete, rm) = match m.payload {
                netlink_packet_core::NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::NewRoute(r),
                ) => (false, r),
                netlink_packet_core::NetlinkPayload::InnerMessage(
                    RouteNetlinkMessage::DelRoute(r),
                ) => (true, r),
                other => panic!("unexpected {other:?}"),
            };
            let dst = Route::from_message(&rm).map(|r| r.dst.addr());
            seen.push(Seen {
                seq: m.header.sequence_number,
                flags: m.header.flags,
                delete,
                dst,
            });
            off += align4(len);
        }
        seen
    }

    impl Transport for Script {
        fn send(&mut self, buf: &[u8]) -> io::Result<()> {
            let seen = decode(buf);
            if !self.silent {
                for s in &seen {
                    let errno = (self.verdict)(s);
                    self.answered += 1;
                    if let Some(k) = self.keep
                        && self.answered > k
                    {
                        // As the kernel: the overflow is reported by the next receive,
                        // before what was queued.
                        if self.answered == k + 1 {
                            self.queue
                                .push_front(Err(io::Error::from_raw_os_error(libc_enobufs())));
                        }
                        continue;
                    }
                    let text = (errno != 0).then_some("Nexthop has invalid gateway");
                    self.queue.push_back(Ok(answer_bytes(s.seq, errno, text)));
                }
            }
            self.sends.push(seen);
            Ok(())
        }

        fn recv(&mut self, buf: &mut Vec<u8>, _timeout: Duration) -> io::Result<()> {
            buf.clear();
            match self.queue.pop_front() {
                Some(Ok(d)) => {
                    buf.extend_from_slice(&d);
                    Ok(())
                }
                Some(Err(e)) => Err(e),
                None => Err(io::ErrorKind::TimedOut.into()),
            }
        }
    }

    fn libc_enobufs() -> i32 {
        Errno::ENOBUFS as i32
    }

    fn windows(n: usize) -> Windows {
        let mut w = Windows::new(n);
        w.timeout = Duration::ZERO;
        w
    }

    #[test]
    fn windows_carry_every_request_once_with_distinct_sequence_numbers() {
        let reqs = adds(10);
        let mut k = Script::new(|_| 0);
        let results = windows(4).run(&mut k, &reqs);
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(
            k.sends.iter().map(Vec::len).collect::<Vec<_>>(),
            [4, 4, 2],
            "three sendmsg calls"
        );
        let seqs: Vec<u32> = k.sends.iter().flatten().map(|s| s.seq).collect();
        assert_eq!(seqs, (1..=10).collect::<Vec<u32>>());
        for s in k.sends.iter().flatten() {
            assert_eq!(
                s.flags,
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                "every add is acknowledged"
            );
            assert!(!s.delete);
        }
        assert_eq!(
            k.sends[0][1].dst,
            Some(IpAddr::from([10, 0, 1, 0])),
            "in order"
        );
    }

    #[test]
    fn a_failure_in_the_middle_is_reported_on_its_request_only() {
        let reqs = adds(9);
        let bad = Some(IpAddr::from([10, 0, 4, 0]));
        let mut k = Script::new(move |s| if s.dst == bad { 101 } else { 0 });
        let results = windows(1024).run(&mut k, &reqs);
        assert_eq!(k.sends.len(), 1, "one sendmsg");
        for (i, r) in results.iter().enumerate() {
            if i == 4 {
                let e = r.as_ref().expect_err("the unreachable gateway fails");
                assert_eq!(e.errno(), Some(101));
                let text = e.to_string();
                assert!(text.contains("add route"), "{text}");
                assert!(text.contains("10.0.4.0/24"), "{text}");
                assert!(text.contains("(Nexthop has invalid gateway)"), "{text}");
            } else {
                assert!(r.is_ok(), "request {i}: {r:?}");
            }
        }
    }

    #[test]
    fn deleting_a_missing_route_succeeds_but_other_errors_do_not() {
        let r = Route::via(net("10.1.0.0/24"), gw()).with_protocol(81);
        let reqs = [
            RouteRequest::Delete(r.clone()),
            RouteRequest::Add(r.clone()),
            RouteRequest::Replace(r),
        ];
        // ESRCH for the delete, EEXIST for the add, EPERM for the replace.
        let mut k = Script::new(|s| match s.seq {
            1 => 3,
            2 => 17,
            _ => 1,
        });
        let results = windows(8).run(&mut k, &reqs);
        assert!(k.sends[0][0].delete);
        assert!(results[0].is_ok(), "{:?}", results[0]);
        assert!(results[1].as_ref().expect_err("exists").is_exists());
        assert_eq!(results[2].as_ref().expect_err("perm").errno(), Some(1));
    }

    #[test]
    fn lost_answers_fail_their_requests_and_the_rest_stand() {
        let reqs = adds(10);
        let mut k = Script::new(|_| 0);
        k.keep = Some(6);
        let results = windows(10).run(&mut k, &reqs);
        for (i, r) in results.iter().enumerate() {
            if i < 6 {
                assert!(r.is_ok(), "request {i}: {r:?}");
            } else {
                let e = r.as_ref().expect_err("answer lost");
                assert!(matches!(e, Error::Unanswered { .. }), "{e:?}");
                assert_eq!(e.errno(), Some(Errno::ENOBUFS as i32));
            }
        }
    }

    #[test]
    fn silence_times_out_and_later_stale_answers_are_ignored() {
        let reqs = adds(3);
        let mut w = windows(8);
        let mut k = Script::new(|_| 0);
        k.silent = true;
        let results = w.run(&mut k, &reqs);
        assert!(results.iter().all(|r| matches!(
            r,
            Err(Error::Unanswered { source, .. }) if source.kind() == io::ErrorKind::TimedOut
        )));
        // The late answers of that window arrive before the next window's: ignored.
        for s in k.sends[0].clone() {
            k.queue.push_back(Ok(answer_bytes(s.seq, 17, None)));
        }
        k.silent = false;
        let results = w.run(&mut k, &reqs);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(k.sends[1][0].seq, 4, "sequence numbers are never reused");
    }

    #[test]
    fn invalid_routes_fail_without_being_sent() {
        let mut reqs = adds(3);
        let v6gw: IpAddr = "fe80::1".parse().expect("ip");
        reqs.insert(1, RouteRequest::Add(Route::via(net("10.9.0.0/24"), v6gw)));
        let mut k = Script::new(|_| 0);
        let results = windows(8).run(&mut k, &reqs);
        assert!(matches!(results[1], Err(Error::Invalid { .. })));
        assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok());
        assert_eq!(k.sends[0].len(), 3);
    }

    #[test]
    fn answers_are_parsed_with_and_without_the_text() {
        let mut out = Vec::new();
        let mut two = answer_bytes(7, 0, None);
        two.extend(answer_bytes(8, 101, Some("Nexthop has invalid gateway")));
        parse_answers(&two, &mut out);
        assert_eq!(
            out,
            [
                Answer {
                    seq: 7,
                    errno: 0,
                    text: None
                },
                Answer {
                    seq: 8,
                    errno: 101,
                    text: Some("Nexthop has invalid gateway".into())
                }
            ]
        );
        // Truncated input yields what was whole.
        out.clear();
        parse_answers(&two[..two.len() - 3], &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn a_window_respects_the_byte_limit() {
        let reqs = adds(3000);
        let mut k = Script::new(|_| 0);
        let results = windows(4096).run(&mut k, &reqs);
        assert!(results.iter().all(Result::is_ok));
        assert!(k.sends.len() >= 3, "{} sends", k.sends.len());
    }
}
