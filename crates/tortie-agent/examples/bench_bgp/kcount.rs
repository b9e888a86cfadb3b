//! Counts the benchmark's routes in a namespace's kernel table as they come and go, from
//! rtnetlink route notifications (`RTMGRP_IPV4_ROUTE`), with a full dump to start from and to
//! check the result. Cheaper and more exact than polling `ip route show | wc -l` every few
//! milliseconds while 100k routes go in: each notification costs one `recv`, and the time a
//! count is reached is the time of the notification that reached it.
//!
//! Counted: IPv4 unicast routes of the main table whose prefix length is [`super::PREFIX_LEN`]
//! (nothing else in the benchmark's namespaces has that length), whoever installed them; the
//! `proto` of what was counted is reported too. A notification overrun (`ENOBUFS`) is
//! repaired by a fresh dump and reported.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;
use tortie_netlink::NetNs;

const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const RTM_GETROUTE: u16 = 26;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;
const RTMGRP_IPV4_ROUTE: u32 = 0x40;
const AF_INET: u8 = 2;
const RT_TABLE_MAIN: u32 = 254;
const RTN_UNICAST: u8 = 1;
const RTA_DST: u16 = 1;
const RTA_TABLE: u16 = 15;

/// What the listener knows.
#[derive(Debug, Default)]
pub struct Counts {
    /// Destinations (network byte order as u32) currently present.
    pub present: HashSet<u32>,
    /// When `present` last changed.
    pub last_change: Option<Instant>,
    /// `proto` of the routes added, with how many notifications each.
    pub protocols: BTreeMap<u8, usize>,
    /// Notification overruns repaired by a dump.
    pub overruns: usize,
    pub error: Option<String>,
}

/// The listener thread; stopped on drop.
#[derive(Debug)]
pub struct KernelCounter {
    netns: String,
    prefix_len: u8,
    state: Arc<Mutex<Counts>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl KernelCounter {
    /// Starts listening in namespace `netns` (then dumps once, so nothing is missed).
    pub fn start(netns: &str, prefix_len: u8) -> anyhow::Result<KernelCounter> {
        let ns = NetNs::named(netns)?;
        let mut sock = ns
            .run(|| Socket::new(NETLINK_ROUTE))?
            .context("netlink socket")?;
        sock.bind(&SocketAddr::new(0, RTMGRP_IPV4_ROUTE))
            .context("bind to RTMGRP_IPV4_ROUTE")?;
        // Room for ~100k notifications while the thread is not scheduled (root only).
        setsockopt(&sock, sockopt::RcvBufForce, &(256 << 20)).context("SO_RCVBUFFORCE")?;
        setsockopt(
            &sock,
            sockopt::ReceiveTimeout,
            &TimeVal::new(0, 100_000), // 100 ms, to notice `stop`
        )
        .context("SO_RCVTIMEO")?;
        let state = Arc::new(Mutex::new(Counts::default()));
        {
            let mut s = lock(&state);
            s.present = dump(netns, prefix_len)?;
            s.last_change = Some(Instant::now());
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop, netns) = (state.clone(), stop.clone(), netns.to_string());
            std::thread::Builder::new()
                .name("kcount".into())
                .spawn(move || listen(&sock, &netns, prefix_len, &state, &stop))?
        };
        Ok(KernelCounter {
            netns: netns.to_string(),
            prefix_len,
            state,
            stop,
            thread: Some(thread),
        })
    }

    pub fn counts(&self) -> MutexGuard<'_, Counts> {
        lock(&self.state)
    }

    /// Routes present now, by the notifications.
    pub fn count(&self) -> usize {
        self.counts().present.len()
    }

    /// Waits (polling every 2 ms, until `deadline`) for `want` routes; returns when the
    /// count reached it (the notification's arrival), or `None` on timeout.
    pub fn wait_for(&self, want: usize, deadline: Instant) -> anyhow::Result<Option<Instant>> {
        loop {
            {
                let c = self.counts();
                if let Some(e) = &c.error {
                    bail!("kernel route listener: {e}");
                }
                if c.present.len() == want {
                    return Ok(c.last_change);
                }
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// A fresh dump's count, to check the notifications' one.
    pub fn dump_count(&self) -> anyhow::Result<usize> {
        Ok(dump(&self.netns, self.prefix_len)?.len())
    }
}

impl Drop for KernelCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn lock(m: &Mutex<Counts>) -> MutexGuard<'_, Counts> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn listen(sock: &Socket, netns: &str, prefix_len: u8, state: &Mutex<Counts>, stop: &AtomicBool) {
    let mut buf = vec![0u8; 1 << 20];
    while !stop.load(Ordering::Relaxed) {
        let n = match sock.recv(&mut &mut buf[..], 0) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.raw_os_error() == Some(libc_enobufs()) => {
                // Lost notifications: start again from a dump.
                match dump(netns, prefix_len) {
                    Ok(present) => {
                        let mut s = lock(state);
                        s.present = present;
                        s.last_change = Some(Instant::now());
                        s.overruns += 1;
                    }
                    Err(e) => {
                        lock(state).error = Some(format!("dump after overrun: {e:#}"));
                        return;
                    }
                }
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                lock(state).error = Some(format!("recv: {e}"));
                return;
            }
        };
        let now = Instant::now();
        let mut s = lock(state);
        let mut changed = false;
        for_each_message(&buf[..n], |ty, payload| {
            if ty != RTM_NEWROUTE && ty != RTM_DELROUTE {
                return;
            }
            let Some((dst, proto)) = our_route(payload, prefix_len) else {
                return;
            };
            if ty == RTM_NEWROUTE {
                *s.protocols.entry(proto).or_default() += 1;
                changed |= s.present.insert(dst);
            } else {
                changed |= s.present.remove(&dst);
            }
        });
        if changed {
            s.last_change = Some(now);
        }
    }
}

/// ENOBUFS on Linux.
fn libc_enobufs() -> i32 {
    nix::errno::Errno::ENOBUFS as i32
}

/// Calls `f(type, payload)` for each netlink message in `buf`.
fn for_each_message(mut buf: &[u8], mut f: impl FnMut(u16, &[u8])) {
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < 16 || len > buf.len() {
            return;
        }
        f(ty, &buf[16..len]);
        let next = (len + 3) & !3;
        buf = buf.get(next..).unwrap_or_default();
    }
}

/// The destination and `proto` of a route message, if it is one of ours: IPv4 unicast in
/// the main table with the benchmark's prefix length.
fn our_route(rtm: &[u8], prefix_len: u8) -> Option<(u32, u8)> {
    if rtm.len() < 12 || rtm[0] != AF_INET || rtm[1] != prefix_len || rtm[7] != RTN_UNICAST {
        return None;
    }
    let mut table = u32::from(rtm[4]);
    let proto = rtm[5];
    let mut dst = None;
    let mut attrs = &rtm[12..];
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let ty = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            break;
        }
        let v = &attrs[4..len];
        match ty {
            RTA_DST if v.len() == 4 => dst = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
            RTA_TABLE if v.len() == 4 => table = u32::from_ne_bytes([v[0], v[1], v[2], v[3]]),
            _ => {}
        }
        attrs = attrs.get((len + 3) & !3..).unwrap_or_default();
    }
    (table == RT_TABLE_MAIN).then_some(())?;
    Some((dst?, proto))
}

/// Our routes in `netns`'s main table now, by an RTM_GETROUTE dump.
fn dump(netns: &str, prefix_len: u8) -> anyhow::Result<HashSet<u32>> {
    let ns = NetNs::named(netns)?;
    let mut sock = ns
        .run(|| Socket::new(NETLINK_ROUTE))?
        .context("netlink socket")?;
    sock.bind_auto().context("bind")?;
    setsockopt(&sock, sockopt::ReceiveTimeout, &TimeVal::new(10, 0)).context("SO_RCVTIMEO")?;
    let mut req = Vec::with_capacity(28);
    req.extend_from_slice(&28u32.to_ne_bytes());
    req.extend_from_slice(&RTM_GETROUTE.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    req.extend_from_slice(&[AF_INET, 0, 0, 0, 0, 0, 0, 0]);
    req.extend_from_slice(&0u32.to_ne_bytes()); // rtm_flags
    sock.send(&req, 0).context("send dump request")?;
    let mut present = HashSet::new();
    let mut buf = vec![0u8; 1 << 20];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if Instant::now() >= deadline {
            bail!("route dump in {netns} did not finish within 30 s");
        }
        let n = sock.recv(&mut &mut buf[..], 0).context("recv route dump")?;
        let mut done = false;
        let mut error = None;
        for_each_message(&buf[..n], |ty, payload| match ty {
            NLMSG_DONE => done = true,
            NLMSG_ERROR => {
                let code = payload
                    .get(..4)
                    .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                if code != 0 {
                    error = Some(code);
                }
                done = true;
            }
            RTM_NEWROUTE => {
                if let Some((dst, _)) = our_route(payload, prefix_len) {
                    present.insert(dst);
                }
            }
            _ => {}
        });
        if let Some(code) = error {
            bail!("route dump in {netns}: netlink error {code}");
        }
        if done {
            return Ok(present);
        }
    }
}
