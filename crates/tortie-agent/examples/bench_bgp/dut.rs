//! `bench_bgp dut ...`: tortie as the device under test, one process, started by the bench
//! with `ip netns exec NS` so that its sockets (and its kernel routes) are in the DUT's
//! namespace and its RSS and CPU time can be read from `/proc/PID`.
//!
//! Two modes:
//! * speaker (B9): one [`Speaker`] with the given peers; the best-route changes it reports are
//!   drained (and counted), nothing is installed — as BIRD without `protocol kernel`.
//! * `--kernel` (B10): what the agent runs with `--routing bgp`, minus the datastore: the
//!   agent's [`Bgp`] (speaker + learned routes), its [`RouteManager`] and its
//!   [`NetlinkDataplane`] installing `proto 81` routes, driven the way
//!   `tortie_agent::main_loop` drives them: every batch of route changes is absorbed and the
//!   desired routes updated at the changed prefixes, an apply is scheduled [`APPLY_COALESCE`]
//!   later, and the first apply waits for every peer's End-of-RIB (or [`BGP_INITIAL_WAIT`]).
//!
//! Prints `ready` on stdout once listening. Ends on SIGTERM, when stdin closes (the bench
//! died) or after `--max-secs`. Timing lines for each apply go to stderr.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::oneshot;
use tortie_agent::NetlinkDataplane;
use tortie_agent::bgp::{Bgp, BgpEvent};
use tortie_agent::bgp_plan::BgpPlan;
use tortie_agent::main_loop::{APPLY_COALESCE, BGP_INITIAL_WAIT, MIN_BACKOFF};
use tortie_agent::model::NodeAddrs;
use tortie_agent::route::RouteSet;
use tortie_agent::route_manager::{ApplyOutcome, RouteManager};
use tortie_bgp::Family;
use tortie_bgp::filter::{Action, Filter, FilterRule};
use tortie_bgp::speaker::{self, PeerConfig, PeerKind, RouteChange, Speaker, SpeakerConfig};

/// Arguments of `bench_bgp dut`.
#[derive(Debug, clap::Args)]
pub struct DutArgs {
    #[arg(long)]
    pub asn: u32,
    /// Router id, IPv4 source and next-hop-self address.
    #[arg(long)]
    pub router_id: Ipv4Addr,
    /// A passive IPv4 peer, `ADDR/AS`; `ADDR/AS/noexport` sends it nothing (a feeder).
    #[arg(long = "peer")]
    pub peers: Vec<PeerArg>,
    /// Install learned routes in the namespace's main table, as the agent does.
    #[arg(long)]
    pub kernel: bool,
    /// Exit after this long whatever happens.
    #[arg(long, default_value_t = 3600)]
    pub max_secs: u64,
}

/// One `--peer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerArg {
    pub addr: Ipv4Addr,
    pub asn: u32,
    pub export: bool,
}

impl FromStr for PeerArg {
    type Err = String;
    fn from_str(s: &str) -> Result<PeerArg, String> {
        let mut it = s.split('/');
        let addr = it.next().and_then(|a| a.parse().ok());
        let asn = it.next().and_then(|a| a.parse().ok());
        let export = match it.next() {
            None => true,
            Some("noexport") => false,
            Some(x) => return Err(format!("unknown peer flag {x:?}")),
        };
        match (addr, asn, it.next()) {
            (Some(addr), Some(asn), None) => Ok(PeerArg { addr, asn, export }),
            _ => Err(format!("expected ADDR/AS[/noexport], got {s:?}")),
        }
    }
}

impl std::fmt::Display for PeerArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.asn)?;
        if !self.export {
            f.write_str("/noexport")?;
        }
        Ok(())
    }
}

/// The speaker's configuration of a peer: passive, IPv4 only, no graceful restart (as the
/// daemons are configured by the harness), and for a feeder an export filter rejecting all.
pub fn peer_config(p: &PeerArg) -> PeerConfig {
    let mut c = PeerConfig::new(IpAddr::V4(p.addr), p.asn, PeerKind::Global);
    c.passive = true;
    c.families = vec![Family::Ipv4Unicast];
    c.graceful_restart = None;
    if !p.export {
        c.export = Filter::new(vec![FilterRule::new(Family::Ipv4Unicast, Action::Reject)]);
    }
    c
}

/// Runs the DUT until it is told to stop.
pub fn main(args: DutArgs) -> anyhow::Result<()> {
    // As `tortie agent` builds its runtime.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        if args.kernel {
            run_kernel(&args).await
        } else {
            run_speaker(&args).await
        }
    })
}

/// Resolves on SIGTERM, on EOF of stdin, or after `max`.
fn stop_signal(max: Duration) -> anyhow::Result<impl Future<Output = ()>> {
    let (tx, rx) = oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        let _ = tx.send(());
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = rx => {}
            _ = term.recv() => {}
            () = tokio::time::sleep(max) => eprintln!("dut: --max-secs reached"),
        }
    })
}

fn ready() -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    Ok(())
}

async fn run_speaker(args: &DutArgs) -> anyhow::Result<()> {
    let stop = stop_signal(Duration::from_secs(args.max_secs))?;
    let config = SpeakerConfig {
        local_as: args.asn,
        router_id: args.router_id,
        listen_port: Some(179),
        cluster_id: None,
        local_v4: Some(args.router_id),
        local_v6: None,
        sockets: speaker::local_sockets(),
    };
    let (speaker, mut routes) = Speaker::start(config).await.context("speaker")?;
    speaker.set_peers(args.peers.iter().map(peer_config).collect());
    let drain = tokio::spawn(async move {
        let mut n = 0usize;
        while let Some(batch) = routes.recv().await {
            n += batch.len();
        }
        n
    });
    ready()?;
    stop.await;
    speaker.shutdown().await;
    if let Ok(n) = drain.await {
        eprintln!("dut: summary route_changes={n}");
    }
    Ok(())
}

/// What the kernel-mode loop spent its time on.
#[derive(Debug, Default)]
struct Stats {
    batches: usize,
    changes: usize,
    recalcs: usize,
    recalc: Duration,
    applies: usize,
    /// Applies that listed the kernel and planned everything.
    full: usize,
    apply: Duration,
    ops: usize,
}

/// The routing half of `tortie_agent::main_loop::MainLoop` with `--routing bgp`, in sync
/// from the start (no datastore): the BGP side, the route manager and the kernel.
struct KernelLoop {
    bgp: Bgp,
    routes: RouteManager,
    /// `MainLoop::bgp_base`: the node's own blackholes (none here).
    base: RouteSet,
    dp: NetlinkDataplane,
    /// `MainLoop::bgp_hold_until`: no programming until every peer sent End-of-RIB.
    hold_until: Option<tokio::time::Instant>,
    apply_at: Option<tokio::time::Instant>,
    stats: Stats,
    started: Instant,
}

impl KernelLoop {
    async fn start(args: &DutArgs) -> anyhow::Result<KernelLoop> {
        let plan = BgpPlan {
            local_as: args.asn,
            router_id: args.router_id,
            listen_port: 179,
            cluster_id: None,
            node_addrs: NodeAddrs {
                ipv4: Some(args.router_id),
                ipv6: None,
            },
            peers: args.peers.iter().map(peer_config).collect(),
            originate: BTreeSet::new(),
            communities: Vec::new(),
            problems: Vec::new(),
        };
        let mut bgp = Bgp::new(None);
        bgp.apply(Ok(plan)).await;
        if let Err(e) = bgp.readiness()
            && bgp.peers().is_empty()
        {
            bail!("BGP did not start: {e}");
        }
        let dp = NetlinkDataplane::open(None).map_err(|e| anyhow::anyhow!(e.chain()))?;
        let mut routes = RouteManager::new();
        routes.on_in_sync();
        let now = tokio::time::Instant::now();
        Ok(KernelLoop {
            bgp,
            routes,
            base: RouteSet::new(),
            dp,
            hold_until: Some(now + BGP_INITIAL_WAIT),
            // `MainLoop::on_in_sync` schedules an apply at once.
            apply_at: Some(now),
            stats: Stats::default(),
            started: Instant::now(),
        })
    }

    fn schedule_apply(&mut self, delay: Duration) {
        let at = tokio::time::Instant::now() + delay;
        self.apply_at = Some(self.apply_at.map_or(at, |cur| cur.min(at)));
    }

    /// `MainLoop::apply`, with timing.
    async fn apply(&mut self) {
        self.apply_at = None;
        if !self.routes.needs_apply() {
            return;
        }
        if let Some(until) = self.hold_until {
            let now = tokio::time::Instant::now();
            if now < until {
                self.apply_at = Some(until);
                return;
            }
            self.hold_until = None;
        }
        let t = Instant::now();
        let result = self.routes.apply(&mut self.dp).await;
        let took = t.elapsed();
        self.stats.applies += 1;
        self.stats.apply += took;
        match result {
            Ok(ApplyOutcome::Applied(r)) => {
                self.stats.ops += r.done.len();
                self.stats.full += usize::from(r.full);
                eprintln!(
                    "dut: t={:.3} apply ops={} programmed={} full={} ms={:.1}",
                    self.started.elapsed().as_secs_f64(),
                    r.done.len(),
                    r.programmed,
                    r.full,
                    took.as_secs_f64() * 1e3
                );
            }
            Ok(ApplyOutcome::NotInSync) => {}
            Err(e) => {
                self.stats.ops += e.report.done.len();
                eprintln!("dut: apply failed: {e}");
                self.schedule_apply(MIN_BACKOFF);
            }
        }
    }

    /// `MainLoop::on_bgp_routes`: the desired routes updated at the changed prefixes (the
    /// node's own blackholes, none here, else a route via the learned next hop).
    fn on_routes(&mut self, changes: Vec<RouteChange>) {
        self.stats.batches += 1;
        self.stats.changes += changes.len();
        let changed = self.bgp.absorb(changes);
        if changed.is_empty() {
            return;
        }
        let t = Instant::now();
        let (bgp, base) = (&self.bgp, &self.base);
        self.routes
            .on_changes(changed.iter().map(|p| (*p, bgp.desired_at(base, p))));
        if self.routes.needs_apply() {
            self.schedule_apply(APPLY_COALESCE);
        }
        self.stats.recalcs += 1;
        self.stats.recalc += t.elapsed();
    }

    /// `MainLoop::on_bgp_status`: the hold ends when every peer has sent its table.
    fn on_status(&mut self) {
        if self.bgp.converged() && self.hold_until.take().is_some() {
            self.schedule_apply(Duration::ZERO);
        }
    }

    fn summary(&self) -> String {
        let s = &self.stats;
        format!(
            "dut: summary batches={} changes={} recalcs={} recalc_ms={:.1} applies={} full={} apply_ms={:.1} ops={}",
            s.batches,
            s.changes,
            s.recalcs,
            s.recalc.as_secs_f64() * 1e3,
            s.applies,
            s.full,
            s.apply.as_secs_f64() * 1e3,
            s.ops
        )
    }
}

async fn run_kernel(args: &DutArgs) -> anyhow::Result<()> {
    let stop = stop_signal(Duration::from_secs(args.max_secs))?;
    tokio::pin!(stop);
    let mut k = KernelLoop::start(args).await?;
    ready()?;
    loop {
        let at = k.apply_at;
        tokio::select! {
            // As the agent's loop: timers before the event streams.
            biased;
            () = &mut stop => break,
            () = sleep_until_opt(at) => k.apply().await,
            ev = k.bgp.next_event() => match ev {
                BgpEvent::Routes(changes) => k.on_routes(changes),
                BgpEvent::Status => k.on_status(),
            },
        }
    }
    eprintln!("{}", k.summary());
    k.bgp.shutdown().await;
    Ok(())
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
