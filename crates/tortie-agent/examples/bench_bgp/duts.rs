//! The devices under test: tortie's DUT process, or a BIRD, FRR or GoBGP router from
//! tortie-bgp's harness, with their peak RSS and CPU time read from `/proc/PID`.
//!
//! Every DUT gets passive IPv4 sessions to the peers it is given; the feeders among them
//! (`noexport`) are sent nothing: BIRD `export none`, an FRR deny-all route-map out, tortie's
//! reject-all export filter. GoBGP cannot filter per destination outside route-server mode
//! (a neighbor set in its global export policy matches the route's source), but it never
//! sends a route to a peer whose AS is on the AS_PATH, and all feeders share one AS.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

use crate::dut::PeerArg;
use crate::support::netns::Host;
use crate::support::peers::{Daemon, PeerSpec, Router, RouterConfig};
use crate::{DUT_AS, SESSION_WAIT};

/// Which DUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Tortie,
    Bird,
    Frr,
    Gobgp,
    /// B9's floor: no DUT, the feeders peer with the monitor.
    Nothing,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tortie => "tortie",
            Kind::Bird => "bird",
            Kind::Frr => "frr",
            Kind::Gobgp => "gobgp",
            Kind::Nothing => "none",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Tortie => "tortie (release)",
            Kind::Bird => "BIRD 2.0.12",
            Kind::Frr => "FRR 8.4.4 (bgpd + zebra)",
            Kind::Gobgp => "GoBGP 3.10.0",
            Kind::Nothing => "no DUT: feeders → monitor directly",
        }
    }

    pub fn daemon(self) -> Option<Daemon> {
        match self {
            Kind::Bird => Some(Daemon::Bird),
            Kind::Frr => Some(Daemon::Frr),
            Kind::Gobgp => Some(Daemon::Gobgp),
            Kind::Tortie | Kind::Nothing => None,
        }
    }
}

/// `tortie,bird,frr,gobgp` (any subset, in this order or not).
pub fn parse_kinds(s: &str) -> anyhow::Result<Vec<Kind>> {
    s.split(',')
        .filter(|x| !x.is_empty())
        .map(|x| match x.trim() {
            "tortie" => Ok(Kind::Tortie),
            "bird" => Ok(Kind::Bird),
            "frr" => Ok(Kind::Frr),
            "gobgp" => Ok(Kind::Gobgp),
            other => bail!("unknown DUT {other:?} (tortie, bird, frr, gobgp)"),
        })
        .collect()
}

/// The tortie DUT process; ended on drop (stdin closed, then SIGKILL by PID after 5 s).
#[derive(Debug)]
pub struct TortieDut {
    child: Child,
    dir: tempfile::TempDir,
}

impl TortieDut {
    fn start(
        exe: &Path,
        host: &Host,
        peers: &[PeerArg],
        kernel: bool,
    ) -> anyhow::Result<TortieDut> {
        // Named like the harness's router directories, so a crashed run's is swept too.
        let dir = tempfile::Builder::new()
            .prefix(&format!("tortie-bgp-{}-dut-", std::process::id()))
            .tempdir()?;
        let log = std::fs::File::create(dir.path().join("dut.log"))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.netns])
            .arg(exe)
            .args(["dut", "--asn", &DUT_AS.to_string()])
            .args(["--router-id", &host.v4.to_string()]);
        for p in peers {
            cmd.arg("--peer").arg(p.to_string());
        }
        if kernel {
            cmd.arg("--kernel");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("spawn the tortie DUT")?;
        let stdout = child.stdout.take().context("DUT stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim() == "ready" {
                    let _ = tx.send(());
                }
            }
        });
        let mut d = TortieDut { child, dir };
        if rx.recv_timeout(Duration::from_secs(15)).is_err() {
            bail!("the tortie DUT did not get ready:\n{}", d.log());
        }
        if let Ok(Some(status)) = d.child.try_wait() {
            bail!("the tortie DUT exited ({status}):\n{}", d.log());
        }
        Ok(d)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dut.log")).unwrap_or_default()
    }

    /// Stops the process and returns its log.
    pub fn stop(&mut self) -> String {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        self.log()
    }
}

impl Drop for TortieDut {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running DUT of any kind.
#[derive(Debug)]
pub enum DutProc {
    Tortie(TortieDut),
    Daemon(Router),
}

impl DutProc {
    /// Starts the DUT in `host` with passive sessions to `peers` (feeders marked `noexport`).
    pub fn start(
        kind: Kind,
        exe: &Path,
        host: &Host,
        peers: &[PeerArg],
        kernel: bool,
    ) -> anyhow::Result<DutProc> {
        let Some(daemon) = kind.daemon() else {
            return Ok(DutProc::Tortie(TortieDut::start(exe, host, peers, kernel)?));
        };
        let mut cfg = RouterConfig::new(&host.netns, host.v4, DUT_AS);
        // Long enough that a DUT busy with a million prefixes never drops a session.
        cfg.hold_time = 90;
        cfg.install_kernel_routes = kernel;
        for p in peers {
            cfg = cfg.peer(PeerSpec::new(IpAddr::V4(p.addr), p.asn).passive());
        }
        let r = Router::start(daemon, &cfg)?;
        let feeders: Vec<(usize, Ipv4Addr)> = peers
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.export)
            .map(|(i, p)| (i, p.addr))
            .collect();
        no_export(&r, &feeders)
            .with_context(|| format!("{}: no export to feeders", kind.name()))?;
        Ok(DutProc::Daemon(r))
    }

    pub fn kind(&self) -> Kind {
        match self {
            DutProc::Tortie(_) => Kind::Tortie,
            DutProc::Daemon(r) => match r.daemon() {
                Daemon::Bird => Kind::Bird,
                Daemon::Frr => Kind::Frr,
                Daemon::Gobgp => Kind::Gobgp,
            },
        }
    }

    pub fn pids(&self) -> Vec<u32> {
        match self {
            DutProc::Tortie(t) => vec![t.child.id()],
            DutProc::Daemon(r) => r.pids(),
        }
    }

    /// Peak resident memory (VmHWM), summed over the DUT's processes.
    pub fn hwm_kib(&self) -> u64 {
        self.pids().into_iter().filter_map(vm_hwm_kib).sum()
    }

    /// CPU time (user + system) so far, summed over the DUT's processes.
    pub fn cpu(&self, tck: u64) -> Duration {
        self.pids()
            .into_iter()
            .filter_map(|p| cpu_time(p, tck))
            .sum()
    }

    /// Waits until the DUT itself reports the sessions Established (daemons; for tortie the
    /// peers' view, checked by the caller, is all there is).
    pub fn wait_established(&self, peers: &[Ipv4Addr]) -> anyhow::Result<()> {
        if let DutProc::Daemon(r) = self {
            for p in peers {
                r.wait_established(IpAddr::V4(*p), SESSION_WAIT)?;
            }
        }
        Ok(())
    }

    pub fn alive(&mut self) -> bool {
        match self {
            DutProc::Tortie(t) => matches!(t.child.try_wait(), Ok(None)),
            DutProc::Daemon(r) => r.running(),
        }
    }
}

/// Makes the daemon advertise nothing to the feeders (peer indexes in its config).
fn no_export(r: &Router, feeders: &[(usize, Ipv4Addr)]) -> anyhow::Result<()> {
    if feeders.is_empty() {
        return Ok(());
    }
    match r.daemon() {
        Daemon::Bird => bird_no_export(r, feeders),
        Daemon::Frr => frr_no_export(r, feeders),
        // See the module docs: the shared feeder AS keeps GoBGP from sending them anything.
        Daemon::Gobgp => Ok(()),
    }
}

/// Rewrites the harness's `protocol bgp peerN` blocks of the feeders to `export none` and
/// reconfigures (before any session is up).
fn bird_no_export(r: &Router, feeders: &[(usize, Ipv4Addr)]) -> anyhow::Result<()> {
    let path = r.dir().join("bird.conf");
    let conf = std::fs::read_to_string(&path)?;
    let old = "export where source ~ [RTS_STATIC, RTS_BGP];";
    let (mut out, mut cur, mut changed) = (String::new(), None::<usize>, 0);
    for line in conf.lines() {
        if let Some(rest) = line.strip_prefix("protocol bgp peer") {
            cur = rest.split_whitespace().next().and_then(|n| n.parse().ok());
        } else if line == "}" {
            cur = None;
        }
        if cur.is_some_and(|i| feeders.iter().any(|(f, _)| *f == i)) && line.contains(old) {
            out.push_str(&line.replace(old, "export none;"));
            changed += 1;
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    ensure!(
        changed == feeders.len(),
        "bird.conf has an unexpected shape:\n{conf}"
    );
    std::fs::write(&path, out)?;
    let o = r.cli(&["configure"])?;
    ensure!(o.contains("Reconfigured"), "birdc configure: {o}");
    Ok(())
}

/// A deny-all route-map out on each feeder, through vtysh.
fn frr_no_export(r: &Router, feeders: &[(usize, Ipv4Addr)]) -> anyhow::Result<()> {
    let mut lines: Vec<String> = vec![
        "configure terminal".into(),
        "route-map BENCH-NONE deny 10".into(),
        "exit".into(),
        format!("router bgp {DUT_AS}"),
        "address-family ipv4 unicast".into(),
    ];
    lines.extend(
        feeders
            .iter()
            .map(|(_, a)| format!("neighbor {a} route-map BENCH-NONE out")),
    );
    let args: Vec<String> = lines
        .into_iter()
        .flat_map(|c| ["-c".to_string(), c])
        .collect();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = r.cli(&refs)?;
    ensure!(
        !o.lines().any(|l| l.trim_start().starts_with('%')),
        "vtysh: {o}"
    );
    Ok(())
}

fn proc_status_field(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    proc_status_field(pid, "VmHWM:")
}

fn cpu_time(pid: u32, tck: u64) -> Option<Duration> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // utime and stime are fields 14 and 15; 12 and 13 after the ") " closing the name.
    let rest = s.rsplit_once(") ")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(
        ticks.saturating_mul(1_000_000_000) / tck,
    ))
}

/// `getconf CLK_TCK` (100 if it cannot be read).
pub fn clock_ticks() -> u64 {
    crate::support::run_ok(
        Command::new("getconf").arg("CLK_TCK"),
        Duration::from_secs(5),
    )
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .filter(|t| *t > 0)
    .unwrap_or(100)
}
