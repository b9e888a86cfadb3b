//! Real BGP daemons (BIRD 2, FRR, GoBGP) in network namespaces, for interop tests and
//! benchmarks against tortie's speaker.
//!
//! A [`Router`] is one daemon started from a [`RouterConfig`] in its own temporary directory
//! (configuration, control sockets, PID files, logs). It runs in the configured namespace via
//! `ip netns exec NS PROGRAM ...`; `ip` execs the program, so the PID we hold is the daemon's.
//! `Drop` ends it by PID (SIGTERM, then SIGKILL after 3 s) and removes the directory, unless
//! `TORTIE_BGP_KEEP_DIRS` is set, which keeps it (and says where) for reading the logs.
//!
//! # Daemon quirks found on Debian 12 (BIRD 2.0.12, FRR 8.4.4, GoBGP 3.10.0)
//!
//! BIRD (`/usr/sbin/bird`, `birdc`):
//! - Started as `bird -f -c CONF -s SOCK -P PIDFILE` (`-f`: foreground). `bird -p -c CONF`
//!   checks the configuration first, so a bad one fails `start` with BIRD's message.
//! - `birdc -s SOCK` talks over the unix socket, so it needs no `ip netns exec`.
//! - One `protocol bgp peerN` per [`PeerSpec`] (N = its index), with an `ipv4`/`ipv6`
//!   channel per family: `import all; export where source ~ [RTS_STATIC, RTS_BGP]`.
//!   Originated prefixes are `blackhole` routes of `protocol static origin4`/`origin6`.
//!   `protocol device` is needed for BGP to come up at all.
//! - Default timers are far too slow for tests (connect retry 120 s); every session gets
//!   `connect delay time 1; connect retry time 2; error wait time 1, 4`.
//! - Every session is `direct` with `gateway direct` (all peers share one L2 segment);
//!   otherwise iBGP next hops are resolved recursively and, with no IGP, are unreachable.
//! - `announce`/`withdraw` rewrite the config and run `birdc configure`.
//! - Learned routes: `show route primary all where source = RTS_BGP`; the next hop is the
//!   first address of the `BGP.next_hop:` attribute (for IPv6 BIRD also lists the
//!   link-local one, second).
//! - Over IPv6, BIRD sends a global *and* a link-local next hop. FRR accepts that only when
//!   bgpd knows the interface (from zebra); see FRR below.
//! - A log line "Invalid NEXT_HOP attribute - neighbor address X" / "Invalid route P
//!   withdrawn" is harmless: it is about *exporting* to neighbor X a route whose next hop is
//!   X itself (X's own prefix heard back from a third router), which BIRD sends as a
//!   withdrawal instead.
//! - Graceful restart: `graceful restart on` in the protocol; after a crash BIRD is started
//!   again with `-R` (graceful restart recovery: R bit set, kernel routes kept, routes
//!   exported once peers sent End-of-RIB). `graceful_restart: false` means
//!   `graceful restart off; long lived graceful restart off` (BIRD's default is "aware").
//!
//! FRR (`/usr/lib/frr/zebra`, `/usr/lib/frr/bgpd`, `vtysh`):
//! - bgpd needs zebra in practice: with `-Z` (no zebra) bgpd has no interface information
//!   and treats every IPv6 UPDATE that carries a link-local next hop (BIRD's, for one) as
//!   an attribute error ("sent a v6 LL next-hop and there's no peer interface information.
//!   Hence, withdrawing"). So each FRR router is a zebra + a bgpd; zebra is started first
//!   and bgpd only once zebra's socket answers, else the first IPv6 updates hit the same
//!   error. `install_kernel_routes: false` starts bgpd with `-n` (zebra still runs, for
//!   interfaces and next-hop tracking, but gets no routes).
//! - Per-instance paths so instances never collide and nothing lands in `/var/run/frr`:
//!   `-f CONF -i PIDFILE -z DIR/zserv.api --vty_socket DIR --log file:DIR/NAME.log`, and
//!   `vtysh --vty_socket DIR`. No `-N` pathspace is needed.
//! - Running as root: `-u root -g root` fails ("user(root) is not part of vty group
//!   specified(frrvty)"); zebra has no `-S`. `-u root -g frrvty` works for both daemons
//!   (a harmless "could chown socket" warning is logged).
//! - FRR keeps a crash-log directory `/var/tmp/frr/<daemon>.<pid>` while a daemon runs; it
//!   is removed on a clean exit, and `Drop`/`stop` remove it after a SIGKILL.
//! - Config: `no bgp ebgp-requires-policy` (else eBGP sends and accepts nothing),
//!   `no bgp default ipv4-unicast` with explicit `activate` per family,
//!   `no bgp network import-check` (so `network P` originates P without a route in zebra),
//!   `neighbor X timers connect 1`, `neighbor X advertisement-interval 0`.
//!   bgpd skips a bad config line with only a log message ("No such command on config line
//!   N: ..."), so `start` fails if this start's log has one.
//! - `announce`/`withdraw` run `network P`/`no network P` through vtysh (and rewrite the
//!   config, which a restart reads).
//! - Learned routes: `show bgp ipv4|ipv6 unicast json`, the `bestpath` entry whose `peerId`
//!   is not `(unspec)` (that is a local `network`); next hop: the first non-link-local
//!   `nexthops[].ip`.
//! - Graceful restart: `bgp graceful-restart` plus `bgp graceful-restart preserve-fw-state`
//!   (without the F bit a helper flushes the stale routes as soon as the session is back).
//!   A restart crashes bgpd alone (zebra stays, as after a bgpd crash) and starts it again;
//!   FRR sets the R bit by itself during its startup period (even on a first start: BIRD
//!   shows "Restart recovery" for a fresh FRR too). `graceful_restart: false`
//!   is `bgp graceful-restart-disable` (FRR's default is helper mode).
//! - FRR doubles a neighbor's idle ("start") timer after each error or NOTIFICATION it sends
//!   on that session, up to 120 s: a test that flaps a session to FRR many times sees the
//!   reconnects slow down (`clear bgp X` through [`Router::cli`] resets it).
//! - `bgp log-neighbor-changes` is on, so `%ADJCHANGE` lines in bgpd.log show session flaps.
//!
//! GoBGP (`/usr/bin/gobgpd`, `gobgp`):
//! - `gobgpd -f CONF -t toml --api-hosts 127.0.0.1:PORT --pprof-disable`; each router gets
//!   its own gRPC port, and the `gobgp -u 127.0.0.1 -p PORT` CLI must run inside the
//!   namespace (`ip netns exec`) because the API listens on that namespace's loopback.
//! - There is no static origination in the config file: originated prefixes are added after
//!   start with `gobgp global rib add P -a ipv4|ipv6` (and again after every restart).
//! - Slow to connect, whatever the config says: GoBGP 3 waits a random 5-10 s before each
//!   active connection attempt (its minimum connect-retry is 5 s; `connect-retry = 1` is
//!   raised to it), so a session where only GoBGP may connect (the other end passive) takes
//!   up to ~10 s to come up. After a session drops it also stays Idle about 5 s, closing
//!   incoming connections ("Closed an accepted connection"). Prefer the other end active.
//! - `idle-hold-time-after-reset` (default 30 s, how long GoBGP refuses a peer after a
//!   reset) is set to 1 s here.
//! - Learned routes: `gobgp -j global rib -a ipv4|ipv6`, the `best` path that has a
//!   `neighbor-ip` (local routes have none); next hop from attribute 3 (NEXT_HOP) or 14
//!   (MP_REACH_NLRI). `gobgp -j neighbor` gives `state.session_state` as a number
//!   (1 idle .. 6 established).
//! - Graceful restart: per neighbor `graceful-restart.config.enabled` and per family
//!   `mp-graceful-restart.config.enabled`; a crashed GoBGP is started again with `-r`
//!   (`--graceful-restart`, sets the R bit).
//! - No kernel routes: that would need GoBGP's zebra client; `install_kernel_routes` is
//!   refused for GoBGP.
//!
//! All three accept TCP MD5 (`password` / `neighbor X password` / `auth-password`); with a
//! mismatch the kernel drops the segments, so the session never gets past Connect/Active.
//!
//! Checked by hand on this machine (BIRD's `show protocols all`, FRR's `show bgp neighbors
//! json`): after a graceful restart BIRD (`-R`), FRR and GoBGP (`-r`) all send the R bit and
//! mark the family preserved (F bit); `harness_selftest.rs` checks that their peers keep
//! the routes throughout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ipnet::IpNet;
use serde_json::Value;

use super::{run_bounded, run_ok, wait_for};

/// Set (to anything) to keep each router's directory (configs and logs) after the test.
pub const KEEP_DIRS_ENV: &str = "TORTIE_BGP_KEEP_DIRS";
const CLI_TIMEOUT: Duration = Duration::from_secs(10);
const READY_TIMEOUT: Duration = Duration::from_secs(15);
const BIRD: &str = "/usr/sbin/bird";
const BIRDC: &str = "/usr/sbin/birdc";
const ZEBRA: &str = "/usr/lib/frr/zebra";
const BGPD: &str = "/usr/lib/frr/bgpd";
const VTYSH: &str = "/usr/bin/vtysh";
const GOBGPD: &str = "/usr/bin/gobgpd";
const GOBGP: &str = "/usr/bin/gobgp";

/// Which implementation a [`Router`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Daemon {
    Bird,
    Frr,
    Gobgp,
}

impl Daemon {
    pub const ALL: [Daemon; 3] = [Daemon::Bird, Daemon::Frr, Daemon::Gobgp];

    pub fn name(self) -> &'static str {
        match self {
            Daemon::Bird => "bird",
            Daemon::Frr => "frr",
            Daemon::Gobgp => "gobgp",
        }
    }
}

/// An address family (unicast only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn of(addr: IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        }
    }

    pub fn of_net(net: &IpNet) -> Family {
        Family::of(net.addr())
    }
}

/// One BGP neighbor of a [`Router`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    pub addr: IpAddr,
    pub asn: u32,
    /// Only accept the connection, never open it.
    pub passive: bool,
    /// TCP MD5 signature password (RFC 2385).
    pub password: Option<String>,
    /// This router reflects routes to this (iBGP) neighbor.
    pub rr_client: bool,
    /// The neighbor's port (179).
    pub port: u16,
    /// Families negotiated on this session; [`PeerSpec::new`] picks the address's own.
    /// Only same-family sessions (IPv4 routes over IPv4, IPv6 over IPv6) are exercised by
    /// the self-test; the configs for a mixed session are generated but untested (IPv6
    /// routes over an IPv4 session need next-hop handling that differs per daemon).
    pub families: Vec<Family>,
}

impl PeerSpec {
    pub fn new(addr: IpAddr, asn: u32) -> PeerSpec {
        PeerSpec {
            addr,
            asn,
            passive: false,
            password: None,
            rr_client: false,
            port: 179,
            families: vec![Family::of(addr)],
        }
    }

    pub fn passive(mut self) -> PeerSpec {
        self.passive = true;
        self
    }

    pub fn password(mut self, pw: &str) -> PeerSpec {
        self.password = Some(pw.to_string());
        self
    }

    pub fn rr_client(mut self) -> PeerSpec {
        self.rr_client = true;
        self
    }

    pub fn port(mut self, port: u16) -> PeerSpec {
        self.port = port;
        self
    }

    pub fn families(mut self, families: &[Family]) -> PeerSpec {
        self.families = families.to_vec();
        self
    }
}

/// What a [`Router`] runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterConfig {
    /// Namespace it runs in.
    pub netns: String,
    pub router_id: Ipv4Addr,
    pub asn: u32,
    /// Port it listens on (179).
    pub listen_port: u16,
    pub peers: Vec<PeerSpec>,
    /// Prefixes it originates.
    pub originate: Vec<IpNet>,
    /// RFC 4724 graceful restart (restarting speaker and helper). When false, GR is off
    /// altogether (not each daemon's default).
    pub graceful_restart: bool,
    /// Install best BGP routes in the namespace's kernel table (BIRD, FRR).
    pub install_kernel_routes: bool,
    /// Cluster ID when reflecting routes; default: the router ID.
    pub rr_cluster_id: Option<Ipv4Addr>,
    /// Hold time in seconds (keepalive is a third of it). Short by default: 9 s.
    pub hold_time: u16,
}

impl RouterConfig {
    pub fn new(netns: &str, router_id: Ipv4Addr, asn: u32) -> RouterConfig {
        RouterConfig {
            netns: netns.to_string(),
            router_id,
            asn,
            listen_port: 179,
            peers: Vec::new(),
            originate: Vec::new(),
            graceful_restart: false,
            install_kernel_routes: false,
            rr_cluster_id: None,
            hold_time: 9,
        }
    }

    pub fn peer(mut self, peer: PeerSpec) -> RouterConfig {
        self.peers.push(peer);
        self
    }

    pub fn originate(mut self, prefix: IpNet) -> RouterConfig {
        self.originate.push(prefix);
        self
    }

    fn keepalive(&self) -> u16 {
        (self.hold_time / 3).max(1)
    }

    fn has_family(&self, f: Family) -> bool {
        self.peers.iter().any(|p| p.families.contains(&f))
            || self.originate.iter().any(|n| Family::of_net(n) == f)
    }
}

/// A learned route as a daemon reports its best path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub next_hop: IpAddr,
    /// AS numbers of the AS_PATH in order (AS_SET members flattened).
    pub as_path: Vec<u32>,
}

/// How [`Router::stop`] ends the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM: the daemon closes its sessions with a Cease NOTIFICATION.
    Clean,
    /// SIGKILL: a crash; peers see the TCP connection close with no NOTIFICATION, which is
    /// what makes a GR helper keep the routes as stale. For FRR only bgpd is killed.
    Crash,
}

/// One daemon process we started.
#[derive(Debug)]
struct Proc {
    name: &'static str,
    child: Child,
}

impl Proc {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Ends the process by PID: `sig` first, SIGKILL if it is still there after `grace`.
    fn end(&mut self, sig: &str, grace: Duration) {
        if !self.alive() {
            return;
        }
        let pid = self.pid().to_string();
        if sig == "KILL" {
            let _ = self.child.kill();
        } else {
            let _ = run_bounded(
                Command::new("kill").args([&format!("-{sig}"), &pid]),
                CLI_TIMEOUT,
            );
        }
        let deadline = Instant::now() + grace;
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.alive() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        // FRR's per-process crash-log directory survives a SIGKILL.
        let _ = fs::remove_dir_all(format!("/var/tmp/frr/{}.{pid}", self.name));
    }
}

/// Ports for GoBGP's gRPC API, unique within this test process.
static NEXT_API_PORT: AtomicU16 = AtomicU16::new(50051);

/// A running BGP daemon in a namespace; ended by PID on drop.
#[derive(Debug)]
pub struct Router {
    daemon: Daemon,
    cfg: Mutex<RouterConfig>,
    dir: tempfile::TempDir,
    /// BIRD: [bird]; FRR: [zebra, bgpd]; GoBGP: [gobgpd]. The last one is the BGP daemon.
    procs: Vec<Proc>,
    /// GoBGP's gRPC port.
    api_port: u16,
}

impl Router {
    /// Writes the configuration, starts the daemon and waits until its control interface
    /// answers (sessions may still be coming up).
    pub fn start(daemon: Daemon, cfg: &RouterConfig) -> anyhow::Result<Router> {
        if daemon == Daemon::Gobgp && cfg.install_kernel_routes {
            bail!("GoBGP cannot install kernel routes here (it would need a zebra client)");
        }
        for p in &cfg.peers {
            if let Some(pw) = &p.password {
                // One word for FRR's CLI, no quoting trouble in BIRD's or GoBGP's files, and
                // the kernel's TCP MD5 key limit.
                if pw.is_empty()
                    || pw.len() > 80
                    || pw
                        .chars()
                        .any(|c| c.is_whitespace() || c == '"' || c == '\\')
                {
                    bail!("unusable MD5 password {pw:?} for {}", p.addr);
                }
            }
            if p.families.is_empty() {
                bail!("peer {} has no address family", p.addr);
            }
        }
        if !Path::new("/run/netns").join(&cfg.netns).exists() {
            bail!("namespace {} does not exist", cfg.netns);
        }
        let dir = tempfile::Builder::new()
            .prefix(&format!(
                "tortie-bgp-{}-{}-",
                std::process::id(),
                daemon.name()
            ))
            .tempdir()
            .context("temp dir")?;
        let mut r = Router {
            daemon,
            cfg: Mutex::new(cfg.clone()),
            dir,
            procs: Vec::new(),
            api_port: if daemon == Daemon::Gobgp {
                NEXT_API_PORT.fetch_add(1, Ordering::Relaxed)
            } else {
                0
            },
        };
        r.launch(false)
            .with_context(|| format!("starting {} in {}", daemon.name(), cfg.netns))?;
        Ok(r)
    }

    pub fn daemon(&self) -> Daemon {
        self.daemon
    }

    /// The configuration as it is now (with runtime announcements and withdrawals).
    pub fn config(&self) -> RouterConfig {
        self.cfg().clone()
    }

    fn cfg(&self) -> std::sync::MutexGuard<'_, RouterConfig> {
        self.cfg.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The router's temporary directory (configuration, sockets, logs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn path_str(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// PID of the BGP daemon (bird, bgpd, gobgpd), or 0 when stopped.
    pub fn pid(&self) -> u32 {
        self.procs.last().map(Proc::pid).unwrap_or(0)
    }

    /// PIDs of every process of this router (FRR: zebra and bgpd).
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Proc::pid).collect()
    }

    /// Resident memory of the router's processes (FRR: zebra + bgpd), from VmRSS.
    pub fn rss_kib(&self) -> u64 {
        self.procs
            .iter()
            .filter_map(|p| {
                let s = fs::read_to_string(format!("/proc/{}/status", p.pid())).ok()?;
                let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
                line.split_whitespace().nth(1)?.parse::<u64>().ok()
            })
            .sum()
    }

    /// CPU time (user + system) used so far by the router's processes.
    pub fn cpu_time(&self) -> Duration {
        let tck = clock_ticks();
        let ticks: u64 = self
            .procs
            .iter()
            .filter_map(|p| {
                let s = fs::read_to_string(format!("/proc/{}/stat", p.pid())).ok()?;
                // Fields after the parenthesised command name; utime and stime are fields
                // 14 and 15 of the whole line, so 12 and 13 of what follows ") ".
                let rest = s.rsplit_once(") ")?.1;
                let f: Vec<&str> = rest.split_whitespace().collect();
                Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
            })
            .sum();
        Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / tck)
    }

    /// Whether every process of the router is running.
    pub fn running(&mut self) -> bool {
        !self.procs.is_empty() && self.procs.iter_mut().all(Proc::alive)
    }

    /// The last lines of each of the router's logs, for error messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        let mut files: Vec<PathBuf> = fs::read_dir(self.dir.path())
            .map(|d| {
                d.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "log"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        for f in files {
            let Ok(text) = fs::read_to_string(&f) else {
                continue;
            };
            let lines: Vec<&str> = text.lines().collect();
            if lines.is_empty() {
                continue;
            }
            let from = lines.len().saturating_sub(25);
            let _ = writeln!(
                out,
                "--- {} (last {} lines)",
                f.display(),
                lines.len() - from
            );
            for l in &lines[from..] {
                let _ = writeln!(out, "{l}");
            }
        }
        out
    }

    // ---- lifecycle ------------------------------------------------------------------

    /// Starts the processes; `restarting` marks a graceful-restart recovery.
    fn launch(&mut self, restarting: bool) -> anyhow::Result<()> {
        match self.daemon {
            Daemon::Bird => self.launch_bird(restarting),
            Daemon::Frr => self.launch_frr(),
            Daemon::Gobgp => self.launch_gobgp(restarting),
        }
    }

    fn spawn(&mut self, name: &'static str, program: &str, args: &[String]) -> anyhow::Result<()> {
        let netns = self.cfg().netns.clone();
        // Appended to, so that a restart keeps what happened before it.
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path(&format!("{name}.stdout.log")))?;
        let err = out.try_clone()?;
        let child = Command::new("ip")
            .args(["netns", "exec", &netns, program])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("spawn {program}"))?;
        self.procs.push(Proc { name, child });
        Ok(())
    }

    /// Waits until `ready` holds, failing early if one of the processes exits.
    fn wait_ready(
        &mut self,
        what: &str,
        mut ready: impl FnMut(&Router) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let exited = self
                .procs
                .iter_mut()
                .find_map(|p| Some((p.name, p.child.try_wait().ok()??)));
            if let Some((name, status)) = exited {
                bail!(
                    "{name} exited ({status}) before {what}\n{}",
                    self.log_tail()
                );
            }
            if ready(self) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{what}: not ready within {READY_TIMEOUT:?}\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(super::POLL);
        }
    }

    /// Ends the daemon (see [`Stop`]); the directory and configuration stay for
    /// [`Router::start_again`].
    pub fn stop(&mut self, how: Stop) {
        let keep_zebra = self.daemon == Daemon::Frr && how == Stop::Crash;
        let (sig, grace) = match how {
            Stop::Clean => ("TERM", Duration::from_secs(3)),
            Stop::Crash => ("KILL", Duration::from_secs(3)),
        };
        // Last first: bgpd before zebra.
        while let Some(mut p) = self.procs.pop() {
            if keep_zebra && p.name == "zebra" {
                self.procs.push(p);
                break;
            }
            p.end(sig, grace);
        }
    }

    /// Starts a stopped daemon again with the same configuration (including runtime
    /// announcements). `restarting`: as the restarting speaker of RFC 4724 (BIRD `-R`,
    /// GoBGP `-r`; FRR does it by itself when GR is configured).
    pub fn start_again(&mut self, restarting: bool) -> anyhow::Result<()> {
        // FRR after a crash keeps zebra; anything else half-running is ended first.
        if !(self.daemon == Daemon::Frr
            && self.procs.len() == 1
            && self.procs[0].name == "zebra"
            && self.procs[0].alive())
        {
            self.stop(Stop::Clean);
        }
        self.launch(restarting)
            .with_context(|| format!("restarting {}", self.daemon.name()))
    }

    /// [`Router::stop`] then [`Router::start_again`]: `graceful` is a crash (SIGKILL, no
    /// NOTIFICATION) followed by a graceful-restart start; otherwise a clean stop and a
    /// plain start.
    pub fn restart(&mut self, graceful: bool) -> anyhow::Result<()> {
        self.stop(if graceful { Stop::Crash } else { Stop::Clean });
        self.start_again(graceful)
    }

    // ---- runtime changes --------------------------------------------------------------

    /// Starts originating `prefix`.
    pub fn announce(&self, prefix: IpNet) -> anyhow::Result<()> {
        {
            let mut cfg = self.cfg();
            if !cfg.originate.contains(&prefix) {
                cfg.originate.push(prefix);
            }
        }
        self.apply_origin_change(prefix, true)
    }

    /// Stops originating `prefix`.
    pub fn withdraw(&self, prefix: IpNet) -> anyhow::Result<()> {
        self.cfg().originate.retain(|p| *p != prefix);
        self.apply_origin_change(prefix, false)
    }

    fn apply_origin_change(&self, prefix: IpNet, add: bool) -> anyhow::Result<()> {
        match self.daemon {
            Daemon::Bird => {
                self.write_bird_conf()?;
                let out = self.birdc(&["configure"])?;
                if !out.contains("Reconfigured") && !out.contains("Reconfiguration in progress") {
                    bail!("birdc configure: {out}\n{}", self.log_tail());
                }
                Ok(())
            }
            Daemon::Frr => {
                self.write_frr_conf()?;
                let asn = self.cfg().asn;
                let af = match Family::of_net(&prefix) {
                    Family::Ipv4 => "address-family ipv4 unicast",
                    Family::Ipv6 => "address-family ipv6 unicast",
                };
                let net = format!("{}network {prefix}", if add { "" } else { "no " });
                self.vtysh_config(&[&format!("router bgp {asn}"), af, &net])
            }
            Daemon::Gobgp => {
                self.gobgp(&[
                    "global",
                    "rib",
                    if add { "add" } else { "del" },
                    &prefix.to_string(),
                    "-a",
                    gobgp_family(Family::of_net(&prefix)),
                ])?;
                Ok(())
            }
        }
    }

    // ---- state ----------------------------------------------------------------------

    /// The best BGP route per prefix that came from a peer (not its own originations).
    pub fn routes(&self) -> anyhow::Result<BTreeMap<IpNet, Route>> {
        match self.daemon {
            Daemon::Bird => self.bird_routes(),
            Daemon::Frr => self.frr_routes(),
            Daemon::Gobgp => self.gobgp_routes(),
        }
    }

    /// [`Router::routes`] reduced to the next hop.
    pub fn learned(&self) -> anyhow::Result<BTreeMap<IpNet, IpAddr>> {
        Ok(self
            .routes()?
            .into_iter()
            .map(|(p, r)| (p, r.next_hop))
            .collect())
    }

    /// The session state with `peer`, normalised to the RFC 4271 names: "Idle", "Connect",
    /// "Active", "OpenSent", "OpenConfirm", "Established" (anything else as reported).
    pub fn session_state(&self, peer: IpAddr) -> anyhow::Result<String> {
        let raw = match self.daemon {
            Daemon::Bird => self.bird_state(peer)?,
            Daemon::Frr => self.frr_state(peer)?,
            Daemon::Gobgp => self.gobgp_state(peer)?,
        };
        Ok(normalise_state(&raw))
    }

    /// Waits until the session with `peer` is Established.
    pub fn wait_established(&self, peer: IpAddr, timeout: Duration) -> anyhow::Result<()> {
        let mut last = String::from("(never read)");
        let res = wait_for(
            &format!(
                "{} session with {peer} to be Established",
                self.daemon.name()
            ),
            timeout,
            || match self.session_state(peer) {
                Ok(s) if s == "Established" => Some(()),
                Ok(s) => {
                    last = s;
                    None
                }
                Err(e) => {
                    last = format!("error: {e:#}");
                    None
                }
            },
            String::new,
        );
        res.map_err(|e| anyhow::anyhow!("{e}last state: {last}\n{}", self.log_tail()))
    }

    /// Polls [`Router::learned`] until `want` accepts it; returns that table.
    pub fn wait_learned(
        &self,
        want: impl Fn(&BTreeMap<IpNet, IpAddr>) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<BTreeMap<IpNet, IpAddr>> {
        let table = self.wait_routes(
            |t| want(&t.iter().map(|(p, r)| (*p, r.next_hop)).collect()),
            timeout,
        )?;
        Ok(table.into_iter().map(|(p, r)| (p, r.next_hop)).collect())
    }

    /// Polls [`Router::routes`] until `want` accepts it; returns that table.
    pub fn wait_routes(
        &self,
        want: impl Fn(&BTreeMap<IpNet, Route>) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<BTreeMap<IpNet, Route>> {
        let mut last = String::from("(never read)");
        let res = wait_for(
            &format!("{} to learn the wanted routes", self.daemon.name()),
            timeout,
            || match self.routes() {
                Ok(t) if want(&t) => Some(t),
                Ok(t) => {
                    last = format!("{t:?}");
                    None
                }
                Err(e) => {
                    last = format!("error: {e:#}");
                    None
                }
            },
            String::new,
        );
        res.map_err(|e| anyhow::anyhow!("{e}last learned: {last}\n{}", self.log_tail()))
    }

    // ---- raw CLIs -------------------------------------------------------------------

    /// Runs the daemon's CLI with `args` (`birdc -s SOCK ARGS`, `vtysh --vty_socket DIR
    /// ARGS`, `gobgp -u 127.0.0.1 -p PORT ARGS` in the namespace); returns stdout.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        match self.daemon {
            Daemon::Bird => self.birdc(args),
            Daemon::Frr => self.vtysh(args),
            Daemon::Gobgp => self.gobgp(args),
        }
    }

    fn birdc(&self, args: &[&str]) -> anyhow::Result<String> {
        run_ok(
            Command::new(BIRDC)
                .args(["-s", &self.path_str("bird.ctl")])
                .args(args),
            CLI_TIMEOUT,
        )
    }

    fn vtysh(&self, args: &[&str]) -> anyhow::Result<String> {
        run_ok(
            Command::new(VTYSH)
                .args(["--vty_socket", &self.path_str("")])
                .args(args),
            CLI_TIMEOUT,
        )
    }

    /// `vtysh -c 'show ...'`.
    fn vtysh_show(&self, show: &str) -> anyhow::Result<String> {
        self.vtysh(&["-c", show])
    }

    /// Runs configuration commands (after `configure terminal`); any `%` message is an error.
    fn vtysh_config(&self, lines: &[&str]) -> anyhow::Result<()> {
        let mut args = vec!["-c", "configure terminal"];
        for l in lines {
            args.push("-c");
            args.push(l);
        }
        let out = self.vtysh(&args)?;
        if out.lines().any(|l| l.trim_start().starts_with('%')) {
            bail!("vtysh {lines:?}: {out}");
        }
        Ok(())
    }

    fn gobgp(&self, args: &[&str]) -> anyhow::Result<String> {
        let netns = self.cfg().netns.clone();
        let port = self.api_port.to_string();
        run_ok(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &netns,
                    GOBGP,
                    "-u",
                    "127.0.0.1",
                    "-p",
                    &port,
                ])
                .args(args),
            CLI_TIMEOUT,
        )
    }

    // ---- BIRD -----------------------------------------------------------------------

    fn bird_conf(&self) -> String {
        let cfg = self.cfg();
        let mut c = String::new();
        let _ = writeln!(c, "log \"{}\" all;", self.path_str("bird.log"));
        let _ = writeln!(c, "router id {};", cfg.router_id);
        let _ = writeln!(c, "protocol device {{ scan time 10; }}");
        for (fam, ch) in [(Family::Ipv4, "ipv4"), (Family::Ipv6, "ipv6")] {
            if !cfg.has_family(fam) {
                continue;
            }
            let suffix = &ch[2..];
            let _ = writeln!(c, "protocol static origin{suffix} {{");
            let _ = writeln!(c, "  {ch};");
            for p in cfg.originate.iter().filter(|p| Family::of_net(p) == fam) {
                let _ = writeln!(c, "  route {p} blackhole;");
            }
            let _ = writeln!(c, "}}");
            if cfg.install_kernel_routes {
                let _ = writeln!(c, "protocol kernel kernel{suffix} {{");
                let _ = writeln!(
                    c,
                    "  {ch} {{ import none; export where source = RTS_BGP; }};"
                );
                if cfg.graceful_restart {
                    let _ = writeln!(c, "  graceful restart on;");
                }
                let _ = writeln!(c, "}}");
            }
        }
        for (i, p) in cfg.peers.iter().enumerate() {
            let _ = writeln!(c, "protocol bgp peer{i} {{");
            let _ = writeln!(c, "  local port {} as {};", cfg.listen_port, cfg.asn);
            let _ = writeln!(c, "  neighbor {} port {} as {};", p.addr, p.port, p.asn);
            let _ = writeln!(c, "  direct;");
            let _ = writeln!(
                c,
                "  hold time {}; keepalive time {};",
                cfg.hold_time,
                cfg.keepalive()
            );
            let _ = writeln!(
                c,
                "  connect delay time 1; connect retry time 2; error wait time 1, 4;"
            );
            if p.passive {
                let _ = writeln!(c, "  passive on;");
            }
            if let Some(pw) = &p.password {
                let _ = writeln!(c, "  password \"{pw}\";");
            }
            if p.rr_client {
                let _ = writeln!(c, "  rr client;");
                let _ = writeln!(
                    c,
                    "  rr cluster id {};",
                    cfg.rr_cluster_id.unwrap_or(cfg.router_id)
                );
            }
            if cfg.graceful_restart {
                let _ = writeln!(c, "  graceful restart on;");
            } else {
                let _ = writeln!(c, "  graceful restart off;");
                let _ = writeln!(c, "  long lived graceful restart off;");
            }
            for f in &p.families {
                let ch = match f {
                    Family::Ipv4 => "ipv4",
                    Family::Ipv6 => "ipv6",
                };
                let _ = writeln!(
                    c,
                    "  {ch} {{ import all; export where source ~ [RTS_STATIC, RTS_BGP]; gateway direct; }};"
                );
            }
            let _ = writeln!(c, "}}");
        }
        c
    }

    fn write_bird_conf(&self) -> anyhow::Result<()> {
        let conf = self.bird_conf();
        let path = self.path("bird.conf");
        fs::write(&path, &conf)?;
        let out = run_bounded(
            Command::new(BIRD).args(["-p", "-c", &path.display().to_string()]),
            CLI_TIMEOUT,
        )?;
        if !out.status.success() {
            bail!(
                "BIRD rejects its config: {}{}\n{conf}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    fn launch_bird(&mut self, restarting: bool) -> anyhow::Result<()> {
        self.write_bird_conf()?;
        let _ = fs::remove_file(self.path("bird.ctl"));
        let mut args = vec![
            "-f".to_string(),
            "-c".to_string(),
            self.path_str("bird.conf"),
            "-s".to_string(),
            self.path_str("bird.ctl"),
            "-P".to_string(),
            self.path_str("bird.pid"),
        ];
        if restarting {
            args.push("-R".to_string());
        }
        self.spawn("bird", BIRD, &args)?;
        self.wait_ready("BIRD control socket", |r| {
            r.birdc(&["show", "status"])
                .is_ok_and(|s| s.contains("Daemon is up and running"))
        })
    }

    fn bird_routes(&self) -> anyhow::Result<BTreeMap<IpNet, Route>> {
        let out = self.birdc(&[
            "show", "route", "primary", "all", "where", "source", "=", "RTS_BGP",
        ])?;
        parse_bird_routes(&out)
    }

    fn bird_state(&self, peer: IpAddr) -> anyhow::Result<String> {
        let i = self
            .cfg()
            .peers
            .iter()
            .position(|p| p.addr == peer)
            .with_context(|| format!("{peer} is not a configured peer"))?;
        let out = self.birdc(&["show", "protocols", "all", &format!("peer{i}")])?;
        if let Some(s) = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("BGP state:"))
        {
            return Ok(s.trim().to_string());
        }
        // A protocol that is down prints no "BGP state:" line.
        if out.lines().any(|l| l.starts_with(&format!("peer{i} "))) {
            return Ok("Idle".to_string());
        }
        bail!("no state for peer{i} in: {out}")
    }

    // ---- FRR ------------------------------------------------------------------------

    fn frr_conf(&self) -> String {
        let cfg = self.cfg();
        let mut c = String::new();
        let _ = writeln!(c, "frr defaults traditional");
        let _ = writeln!(c, "hostname {}", cfg.netns);
        let _ = writeln!(c, "!");
        let _ = writeln!(c, "router bgp {}", cfg.asn);
        let _ = writeln!(c, " bgp router-id {}", cfg.router_id);
        let _ = writeln!(c, " bgp log-neighbor-changes");
        let _ = writeln!(c, " no bgp ebgp-requires-policy");
        let _ = writeln!(c, " no bgp default ipv4-unicast");
        let _ = writeln!(c, " no bgp network import-check");
        if let Some(id) = cfg.rr_cluster_id {
            let _ = writeln!(c, " bgp cluster-id {id}");
        }
        if cfg.graceful_restart {
            let _ = writeln!(c, " bgp graceful-restart");
            let _ = writeln!(c, " bgp graceful-restart preserve-fw-state");
        } else {
            let _ = writeln!(c, " bgp graceful-restart-disable");
        }
        let _ = writeln!(c, " timers bgp {} {}", cfg.keepalive(), cfg.hold_time);
        for p in &cfg.peers {
            let a = p.addr;
            let _ = writeln!(c, " neighbor {a} remote-as {}", p.asn);
            if p.port != 179 {
                let _ = writeln!(c, " neighbor {a} port {}", p.port);
            }
            if p.passive {
                let _ = writeln!(c, " neighbor {a} passive");
            }
            if let Some(pw) = &p.password {
                let _ = writeln!(c, " neighbor {a} password {pw}");
            }
            let _ = writeln!(c, " neighbor {a} timers connect 1");
            let _ = writeln!(c, " neighbor {a} advertisement-interval 0");
        }
        for (fam, af) in [(Family::Ipv4, "ipv4"), (Family::Ipv6, "ipv6")] {
            if !cfg.has_family(fam) {
                continue;
            }
            let _ = writeln!(c, " address-family {af} unicast");
            for p in cfg.originate.iter().filter(|p| Family::of_net(p) == fam) {
                let _ = writeln!(c, "  network {p}");
            }
            for p in cfg.peers.iter().filter(|p| p.families.contains(&fam)) {
                let _ = writeln!(c, "  neighbor {} activate", p.addr);
                if p.rr_client {
                    let _ = writeln!(c, "  neighbor {} route-reflector-client", p.addr);
                }
            }
            let _ = writeln!(c, " exit-address-family");
        }
        let _ = writeln!(c, "!");
        c
    }

    fn write_frr_conf(&self) -> anyhow::Result<()> {
        fs::write(self.path("bgpd.conf"), self.frr_conf())?;
        Ok(())
    }

    fn frr_common_args(&self, name: &str) -> Vec<String> {
        [
            "-f",
            &self.path_str(&format!("{name}.conf")),
            "-i",
            &self.path_str(&format!("{name}.pid")),
            "-z",
            &self.path_str("zserv.api"),
            "--vty_socket",
            &self.path_str(""),
            "-u",
            "root",
            "-g",
            "frrvty",
            "--log",
            &format!("file:{}", self.path_str(&format!("{name}.log"))),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn launch_frr(&mut self) -> anyhow::Result<()> {
        let (netns, listen_port, kernel) = {
            let c = self.cfg();
            (c.netns.clone(), c.listen_port, c.install_kernel_routes)
        };
        if self.procs.is_empty() {
            fs::write(self.path("zebra.conf"), format!("hostname {netns}\n"))?;
            let args = self.frr_common_args("zebra");
            self.spawn("zebra", ZEBRA, &args)?;
            self.wait_ready("zebra", |r| {
                r.path("zserv.api").exists()
                    && r.vtysh(&["-d", "zebra", "-c", "show interface brief"])
                        .is_ok_and(|s| s.contains("eth0") || s.contains("lo"))
            })?;
        }
        self.write_frr_conf()?;
        // The log is appended to across restarts; only what this start wrote counts.
        let log_from = fs::metadata(self.path("bgpd.log"))
            .map(|m| m.len())
            .unwrap_or(0);
        let mut args = self.frr_common_args("bgpd");
        args.extend(["-p".to_string(), listen_port.to_string()]);
        if !kernel {
            args.push("-n".to_string());
        }
        self.spawn("bgpd", BGPD, &args)?;
        self.wait_ready("bgpd", |r| {
            r.vtysh(&["-d", "bgpd", "-c", "show bgp summary json"])
                .is_ok()
        })?;
        let log = fs::read(self.path("bgpd.log")).unwrap_or_default();
        let log = String::from_utf8_lossy(log.get(log_from as usize..).unwrap_or_default());
        if let Some(bad) = log
            .lines()
            .find(|l| l.contains("on config line") || l.contains("Unknown command"))
        {
            bail!("bgpd rejected a config line: {bad}\n{}", self.frr_conf());
        }
        Ok(())
    }

    fn frr_routes(&self) -> anyhow::Result<BTreeMap<IpNet, Route>> {
        let mut routes = BTreeMap::new();
        for af in ["ipv4", "ipv6"] {
            let out = self.vtysh_show(&format!("show bgp {af} unicast json"))?;
            let v: Value = serde_json::from_str(&out)
                .with_context(|| format!("FRR {af} table is not JSON: {out}"))?;
            parse_frr_routes(&v, &mut routes)?;
        }
        Ok(routes)
    }

    fn frr_state(&self, peer: IpAddr) -> anyhow::Result<String> {
        let out = self.vtysh_show("show bgp neighbors json")?;
        let v: Value = serde_json::from_str(&out).context("FRR neighbors JSON")?;
        let obj = v
            .as_object()
            .context("FRR neighbors JSON is not an object")?;
        for (k, n) in obj {
            if k.parse::<IpAddr>().ok() == Some(peer) {
                return n["bgpState"]
                    .as_str()
                    .map(str::to_string)
                    .context("no bgpState");
            }
        }
        bail!("FRR has no neighbor {peer}")
    }

    // ---- GoBGP ----------------------------------------------------------------------

    fn gobgp_conf(&self) -> String {
        let cfg = self.cfg();
        let mut c = String::new();
        let _ = writeln!(c, "[global.config]");
        let _ = writeln!(c, "  as = {}", cfg.asn);
        let _ = writeln!(c, "  router-id = \"{}\"", cfg.router_id);
        let _ = writeln!(c, "  port = {}", cfg.listen_port);
        for p in &cfg.peers {
            let _ = writeln!(c, "\n[[neighbors]]");
            let _ = writeln!(c, "  [neighbors.config]");
            let _ = writeln!(c, "    neighbor-address = \"{}\"", p.addr);
            let _ = writeln!(c, "    peer-as = {}", p.asn);
            if let Some(pw) = &p.password {
                let _ = writeln!(c, "    auth-password = \"{pw}\"");
            }
            let _ = writeln!(c, "  [neighbors.timers.config]");
            let _ = writeln!(c, "    connect-retry = 1");
            let _ = writeln!(c, "    hold-time = {}", cfg.hold_time);
            let _ = writeln!(c, "    keepalive-interval = {}", cfg.keepalive());
            let _ = writeln!(c, "    idle-hold-time-after-reset = 1");
            let _ = writeln!(c, "  [neighbors.transport.config]");
            let _ = writeln!(c, "    passive-mode = {}", p.passive);
            let _ = writeln!(c, "    remote-port = {}", p.port);
            if p.rr_client {
                let _ = writeln!(c, "  [neighbors.route-reflector.config]");
                let _ = writeln!(c, "    route-reflector-client = true");
                let _ = writeln!(
                    c,
                    "    route-reflector-cluster-id = \"{}\"",
                    cfg.rr_cluster_id.unwrap_or(cfg.router_id)
                );
            }
            if cfg.graceful_restart {
                let _ = writeln!(c, "  [neighbors.graceful-restart.config]");
                let _ = writeln!(c, "    enabled = true");
                let _ = writeln!(c, "    restart-time = 120");
            }
            for f in &p.families {
                let _ = writeln!(c, "  [[neighbors.afi-safis]]");
                let _ = writeln!(c, "    [neighbors.afi-safis.config]");
                let _ = writeln!(c, "      afi-safi-name = \"{}-unicast\"", gobgp_family(*f));
                if cfg.graceful_restart {
                    let _ = writeln!(c, "    [neighbors.afi-safis.mp-graceful-restart.config]");
                    let _ = writeln!(c, "      enabled = true");
                }
            }
        }
        c
    }

    fn launch_gobgp(&mut self, restarting: bool) -> anyhow::Result<()> {
        fs::write(self.path("gobgpd.toml"), self.gobgp_conf())?;
        let mut args = vec![
            "-f".to_string(),
            self.path_str("gobgpd.toml"),
            "-t".to_string(),
            "toml".to_string(),
            "--api-hosts".to_string(),
            format!("127.0.0.1:{}", self.api_port),
            "--pprof-disable".to_string(),
            "-l".to_string(),
            "info".to_string(),
        ];
        if restarting && self.cfg().graceful_restart {
            args.push("-r".to_string());
        }
        self.spawn("gobgpd", GOBGPD, &args)?;
        self.wait_ready("gobgpd API", |r| r.gobgp(&["global"]).is_ok())?;
        let originate = self.cfg().originate.clone();
        for p in originate {
            self.gobgp(&[
                "global",
                "rib",
                "add",
                &p.to_string(),
                "-a",
                gobgp_family(Family::of_net(&p)),
            ])?;
        }
        Ok(())
    }

    fn gobgp_routes(&self) -> anyhow::Result<BTreeMap<IpNet, Route>> {
        let mut routes = BTreeMap::new();
        for f in [Family::Ipv4, Family::Ipv6] {
            let out = self.gobgp(&["-j", "global", "rib", "-a", gobgp_family(f)])?;
            if out.trim().is_empty() || out.trim() == "null" {
                continue;
            }
            let v: Value = serde_json::from_str(&out)
                .with_context(|| format!("GoBGP table is not JSON: {out}"))?;
            parse_gobgp_routes(&v, &mut routes)?;
        }
        Ok(routes)
    }

    fn gobgp_state(&self, peer: IpAddr) -> anyhow::Result<String> {
        let out = self.gobgp(&["-j", "neighbor"])?;
        let v: Value = serde_json::from_str(&out).context("GoBGP neighbor JSON")?;
        for n in v.as_array().context("GoBGP neighbors are not a list")? {
            let addr = n["state"]["neighbor_address"]
                .as_str()
                .or_else(|| n["conf"]["neighbor_address"].as_str());
            if addr.and_then(|a| a.parse::<IpAddr>().ok()) != Some(peer) {
                continue;
            }
            let st = &n["state"]["session_state"];
            return Ok(match st {
                Value::Number(num) => match num.as_u64() {
                    Some(1) => "Idle",
                    Some(2) => "Connect",
                    Some(3) => "Active",
                    Some(4) => "OpenSent",
                    Some(5) => "OpenConfirm",
                    Some(6) => "Established",
                    _ => "Unknown",
                }
                .to_string(),
                Value::String(s) => s.clone(),
                // Protobuf JSON leaves out zero values: UNKNOWN.
                _ => "Unknown".to_string(),
            });
        }
        bail!("GoBGP has no neighbor {peer}")
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.stop(Stop::Clean);
        if std::env::var_os(KEEP_DIRS_ENV).is_some() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "{KEEP_DIRS_ENV}: kept {} of {}",
                self.dir.path().display(),
                self.daemon.name()
            );
        }
    }
}

fn gobgp_family(f: Family) -> &'static str {
    match f {
        Family::Ipv4 => "ipv4",
        Family::Ipv6 => "ipv6",
    }
}

fn clock_ticks() -> u64 {
    run_bounded(Command::new("getconf").arg("CLK_TCK"), CLI_TIMEOUT)
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .filter(|t| *t > 0)
        .unwrap_or(100)
}

fn normalise_state(raw: &str) -> String {
    let key: String = raw
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase();
    match key.as_str() {
        "idle" | "bgpfsmidle" => "Idle",
        "connect" | "bgpfsmconnect" => "Connect",
        "active" | "bgpfsmactive" => "Active",
        "opensent" | "bgpfsmopensent" => "OpenSent",
        "openconfirm" | "bgpfsmopenconfirm" => "OpenConfirm",
        "established" | "bgpfsmestablished" => "Established",
        _ => return raw.to_string(),
    }
    .to_string()
}

fn parse_as_path(s: &str) -> Vec<u32> {
    s.split(|c: char| c.is_whitespace() || c == '{' || c == '}' || c == ',' || c == '(' || c == ')')
        .filter_map(|t| t.parse().ok())
        .collect()
}

/// Parses `birdc show route primary all ...` (attribute lines are tab-indented):
///
/// ```text
/// Table master4:
/// 10.3.0.0/24          unicast [peer1 04:56:50.998] * (100) [AS65003?]
///     via 198.18.0.3 on eth0
///     Type: BGP univ
///     BGP.as_path: 65003
///     BGP.next_hop: 198.18.0.3
/// ```
fn parse_bird_routes(out: &str) -> anyhow::Result<BTreeMap<IpNet, Route>> {
    let mut routes = BTreeMap::new();
    let mut cur: Option<(IpNet, Option<IpAddr>, Vec<u32>)> = None;
    let mut flush = |cur: &mut Option<(IpNet, Option<IpAddr>, Vec<u32>)>| -> anyhow::Result<()> {
        if let Some((net, nh, path)) = cur.take() {
            let next_hop = nh.with_context(|| format!("BIRD route {net} has no BGP.next_hop"))?;
            routes.insert(
                net,
                Route {
                    next_hop,
                    as_path: path,
                },
            );
        }
        Ok(())
    };
    for line in out.lines() {
        if line.is_empty() || line.starts_with("BIRD ") || line.starts_with("Table ") {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            let first = line.split_whitespace().next().unwrap_or_default();
            if let Ok(net) = first.parse::<IpNet>() {
                flush(&mut cur)?;
                cur = Some((net, None, Vec::new()));
                continue;
            }
            bail!("unexpected line in BIRD routes: {line:?}\n{out}");
        }
        let t = line.trim();
        if let Some((_, nh, path)) = cur.as_mut() {
            if let Some(v) = t.strip_prefix("BGP.next_hop:") {
                *nh = v.split_whitespace().next().and_then(|a| a.parse().ok());
            } else if let Some(v) = t.strip_prefix("BGP.as_path:") {
                *path = parse_as_path(v);
            }
        }
    }
    flush(&mut cur)?;
    Ok(routes)
}

/// Parses `show bgp ipv4|ipv6 unicast json` of FRR into `routes`.
fn parse_frr_routes(v: &Value, routes: &mut BTreeMap<IpNet, Route>) -> anyhow::Result<()> {
    let Some(table) = v["routes"].as_object() else {
        return Ok(());
    };
    for (prefix, paths) in table {
        let net: IpNet = prefix
            .parse()
            .with_context(|| format!("FRR prefix {prefix}"))?;
        let Some(best) = paths.as_array().and_then(|ps| {
            ps.iter().find(|p| {
                p["bestpath"].as_bool() == Some(true) && p["valid"].as_bool() == Some(true)
            })
        }) else {
            continue;
        };
        if best["peerId"].as_str().is_none_or(|id| id == "(unspec)") {
            continue;
        }
        let next_hop = best["nexthops"]
            .as_array()
            .and_then(|nhs| {
                nhs.iter()
                    .filter(|nh| nh["scope"].as_str() != Some("link-local"))
                    .find_map(|nh| nh["ip"].as_str()?.parse::<IpAddr>().ok())
            })
            .with_context(|| format!("FRR route {prefix} has no usable next hop: {best}"))?;
        routes.insert(
            net,
            Route {
                next_hop,
                as_path: parse_as_path(best["path"].as_str().unwrap_or_default()),
            },
        );
    }
    Ok(())
}

/// Parses `gobgp -j global rib -a ipv4|ipv6` into `routes`.
fn parse_gobgp_routes(v: &Value, routes: &mut BTreeMap<IpNet, Route>) -> anyhow::Result<()> {
    let Some(table) = v.as_object() else {
        return Ok(());
    };
    for (prefix, paths) in table {
        let net: IpNet = prefix
            .parse()
            .with_context(|| format!("GoBGP prefix {prefix}"))?;
        let Some(best) = paths
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["best"].as_bool() == Some(true)))
        else {
            continue;
        };
        if best.get("neighbor-ip").is_none() {
            continue; // our own
        }
        let attrs = best["attrs"].as_array().cloned().unwrap_or_default();
        let next_hop = attrs
            .iter()
            .filter(|a| matches!(a["type"].as_u64(), Some(3 | 14)))
            .find_map(|a| a["nexthop"].as_str()?.parse::<IpAddr>().ok())
            .with_context(|| format!("GoBGP route {prefix} has no next hop: {best}"))?;
        let as_path = attrs
            .iter()
            .filter(|a| a["type"].as_u64() == Some(2))
            .flat_map(|a| a["as_paths"].as_array().cloned().unwrap_or_default())
            .flat_map(|seg| seg["asns"].as_array().cloned().unwrap_or_default())
            .filter_map(|n| n.as_u64().and_then(|n| u32::try_from(n).ok()))
            .collect();
        routes.insert(net, Route { next_hop, as_path });
    }
    Ok(())
}
