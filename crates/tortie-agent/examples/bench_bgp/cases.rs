//! One B9 or B10 measurement: a fresh topology, the DUT, the apparatus, t0, the wait, the
//! DUT's RSS and CPU, teardown. And the series of rounds (each DUT once per round, in
//! rotated order).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use tokio::runtime::Runtime;

use crate::apparatus::{Apparatus, v4_peer, wait_sessions};
use crate::dut::PeerArg;
use crate::duts::{DutProc, Kind};
use crate::kcount::KernelCounter;
use crate::support::netns::{Host, Topology};
use crate::{DUT_AS, FEEDER_AS, MONITOR_AS, PREFIX_LEN, SETTLE, originate};

/// What every case needs.
pub struct Ctx {
    /// The apparatus's runtime.
    pub rt: Runtime,
    /// The binary run as tortie's DUT.
    pub exe: PathBuf,
    pub tck: u64,
    /// Longest wait for one measurement.
    pub timeout: Duration,
    /// Raw samples, TSV.
    pub raw: String,
    /// Oddities for the report.
    pub notes: Vec<String>,
    case: usize,
}

impl Ctx {
    pub fn new(rt: Runtime, exe: PathBuf, tck: u64, timeout: Duration) -> Ctx {
        Ctx {
            rt,
            exe,
            tck,
            timeout,
            raw: String::from(
                "# b9 dut N M elapsed_s monitor_got cpu_s vmhwm_kib\n\
                 # b10 dut routes install_s withdraw_s cpu_install_s cpu_withdraw_s vmhwm_kib protocols\n",
            ),
            notes: Vec::new(),
            case: 0,
        }
    }

    /// A topology label unique within the run (letters and digits).
    fn label(&mut self, what: &str) -> String {
        self.case += 1;
        format!("{what}{}", self.case)
    }
}

/// `list` rotated left by `round`.
fn rotate(round: usize, list: &[Kind]) -> Vec<Kind> {
    let k = round % list.len();
    list[k..].iter().chain(&list[..k]).copied().collect()
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("not done".into(), |d| format!("{:.3} s", d.as_secs_f64()))
}

// ---- B9 -------------------------------------------------------------------------------

/// One B9 measurement.
#[derive(Debug, Clone)]
pub struct B9Sample {
    pub kind: Kind,
    /// From t0 until the monitor held every prefix; `None`: not within the timeout.
    pub elapsed: Option<Duration>,
    /// What the monitor held at the end.
    pub got: usize,
    pub hwm_kib: u64,
    pub cpu: Duration,
}

/// `runs` rounds of B9 with N = `n`, M = `m` over `kinds`.
pub fn b9_series(
    ctx: &mut Ctx,
    kinds: &[Kind],
    n: usize,
    m: usize,
    runs: usize,
) -> anyhow::Result<Vec<B9Sample>> {
    let mut samples = Vec::new();
    for round in 0..runs {
        for kind in rotate(round, kinds) {
            eprintln!(
                "[bench-bgp] B9 N={n} M={m} round {}/{runs}: {}",
                round + 1,
                kind.name()
            );
            let s =
                b9_case(ctx, kind, n, m).with_context(|| format!("B9 {} M={m}", kind.name()))?;
            eprintln!(
                "[bench-bgp]   {}: {} (monitor {} of {}), RSS peak {:.1} MiB, CPU {:.2} s",
                kind.name(),
                secs(s.elapsed),
                s.got,
                n * m,
                s.hwm_kib as f64 / 1024.0,
                s.cpu.as_secs_f64()
            );
            samples.push(s);
        }
    }
    Ok(samples)
}

/// B9's topology with every session up and idle.
struct B9Lab {
    dut: Option<DutProc>,
    monitor: Apparatus,
    feeds: Vec<Apparatus>,
    /// Dropped last.
    _topo: Topology,
}

/// The DUT (none for [`Kind::Nothing`]: the feeders peer with the monitor), the monitor and
/// `n` feeders, sessions Established on both sides.
fn b9_lab(ctx: &mut Ctx, kind: Kind, n: usize) -> anyhow::Result<B9Lab> {
    let mut topo = Topology::new(&ctx.label("b9"))?;
    let dut_host = match kind {
        Kind::Nothing => None,
        _ => Some(topo.add_host("dut")?),
    };
    let mon = topo.add_host("mon")?;
    let feeders: Vec<Host> = (0..n)
        .map(|i| topo.add_host(&format!("f{i}")))
        .collect::<anyhow::Result<_>>()?;
    let feeder_args = feeders.iter().map(|f| PeerArg {
        addr: f.v4,
        asn: FEEDER_AS,
        export: false,
    });
    // The DUT first, so that it listens when the others connect.
    let (dut, monitor, upstream) = match &dut_host {
        Some(h) => {
            let mut peers = vec![PeerArg {
                addr: mon.v4,
                asn: MONITOR_AS,
                export: true,
            }];
            peers.extend(feeder_args);
            let dut = DutProc::start(kind, &ctx.exe, h, &peers, false)?;
            let to_dut = vec![v4_peer(h.v4, DUT_AS, false, true)];
            let monitor = Apparatus::start(&ctx.rt, &mon, MONITOR_AS, false, to_dut)?;
            (Some(dut), monitor, (h.v4, DUT_AS))
        }
        None => {
            let peers = feeder_args
                .map(|p| v4_peer(p.addr, p.asn, true, p.export))
                .collect();
            let monitor = Apparatus::start(&ctx.rt, &mon, MONITOR_AS, true, peers)?;
            (None, monitor, (mon.v4, MONITOR_AS))
        }
    };
    let feeds: Vec<Apparatus> = feeders
        .iter()
        .map(|f| {
            let up = vec![v4_peer(upstream.0, upstream.1, false, true)];
            Apparatus::start(&ctx.rt, f, FEEDER_AS, false, up)
        })
        .collect::<anyhow::Result<_>>()?;
    let mut all: Vec<(&Apparatus, usize)> = feeds.iter().map(|f| (f, 1)).collect();
    all.push((&monitor, if dut.is_some() { 1 } else { n }));
    wait_sessions("B9 sessions", &all)?;
    if let Some(d) = &dut {
        let mut addrs = vec![mon.v4];
        addrs.extend(feeders.iter().map(|f| f.v4));
        d.wait_established(&addrs)?;
    }
    Ok(B9Lab {
        dut,
        monitor,
        feeds,
        _topo: topo,
    })
}

fn b9_case(ctx: &mut Ctx, kind: Kind, n: usize, m: usize) -> anyhow::Result<B9Sample> {
    let mut lab = b9_lab(ctx, kind, n)?;
    // Each feeder's table, built before t0.
    let mut tables: Vec<_> = (0..n).map(|i| originate(i * m..(i + 1) * m)).collect();
    std::thread::sleep(SETTLE);
    ensure!(
        lab.monitor.learned() == 0,
        "the monitor learned routes early"
    );
    lab.monitor.expect(n * m);
    let cpu = |lab: &B9Lab| lab.dut.as_ref().map(|d| d.cpu(ctx.tck)).unwrap_or_default();
    let cpu0 = cpu(&lab);
    let t0 = Instant::now();
    for (f, t) in lab.feeds.iter().zip(tables.drain(..)) {
        f.speaker.set_local_routes(t);
    }
    let reached = lab.monitor.wait_reached(t0 + ctx.timeout);
    let sample = B9Sample {
        kind,
        elapsed: reached.map(|t| t - t0),
        got: lab.monitor.learned(),
        hwm_kib: lab.dut.as_ref().map_or(0, DutProc::hwm_kib),
        cpu: cpu(&lab).saturating_sub(cpu0),
    };
    if let Some(d) = &mut lab.dut {
        ensure!(d.alive(), "the {} DUT died", kind.name());
    }
    // The DUT must have sent the feeders nothing (`received` counts what their import
    // rejected too: the feeders share an AS, so anything sent back would be a loop).
    let leaked: usize = lab.feeds.iter().map(Apparatus::received).sum();
    ensure!(
        leaked == 0,
        "{}: feeders got {leaked} routes back",
        kind.name()
    );
    let _ = writeln!(
        ctx.raw,
        "b9\t{}\t{n}\t{m}\t{}\t{}\t{:.3}\t{}",
        kind.name(),
        sample
            .elapsed
            .map_or("-".into(), |e| format!("{:.3}", e.as_secs_f64())),
        sample.got,
        sample.cpu.as_secs_f64(),
        sample.hwm_kib
    );
    drop(lab.feeds);
    drop(lab.monitor);
    if let Some(DutProc::Tortie(t)) = &mut lab.dut {
        let log = t.stop();
        if let Some(s) = log.lines().find(|l| l.contains("summary")) {
            eprintln!("[bench-bgp]   tortie DUT: {s}");
        }
    }
    Ok(sample)
}

// ---- B10 ------------------------------------------------------------------------------

/// One B10 measurement.
#[derive(Debug, Clone)]
pub struct B10Sample {
    pub kind: Kind,
    /// From the announcement until every route is in the table; `None`: not within the
    /// timeout (or the dump disagreed).
    pub install: Option<Duration>,
    /// From the withdrawal until none is left.
    pub withdraw: Option<Duration>,
    pub cpu_install: Duration,
    pub cpu_withdraw: Duration,
    pub hwm_kib: u64,
    /// The `proto` of the routes counted.
    pub protocols: String,
}

/// `runs` rounds of B10 with `routes` routes over `kinds`.
pub fn b10_series(
    ctx: &mut Ctx,
    kinds: &[Kind],
    routes: usize,
    runs: usize,
) -> anyhow::Result<Vec<B10Sample>> {
    let mut samples = Vec::new();
    for round in 0..runs {
        for kind in rotate(round, kinds) {
            eprintln!(
                "[bench-bgp] B10 R={routes} round {}/{runs}: {}",
                round + 1,
                kind.name()
            );
            let s = b10_case(ctx, kind, routes).with_context(|| format!("B10 {}", kind.name()))?;
            eprintln!(
                "[bench-bgp]   {}: install {}, withdraw {}, CPU {:.2} / {:.2} s, RSS peak {:.1} MiB, proto {}",
                kind.name(),
                secs(s.install),
                secs(s.withdraw),
                s.cpu_install.as_secs_f64(),
                s.cpu_withdraw.as_secs_f64(),
                s.hwm_kib as f64 / 1024.0,
                s.protocols
            );
            samples.push(s);
        }
    }
    Ok(samples)
}

/// B10's topology: the DUT installing routes, one feeder, the kernel route counter.
struct B10Lab {
    dut: DutProc,
    feed: Apparatus,
    counter: KernelCounter,
    _topo: Topology,
}

fn b10_lab(ctx: &mut Ctx, kind: Kind) -> anyhow::Result<B10Lab> {
    let mut topo = Topology::new(&ctx.label("bk"))?;
    let dut_host = topo.add_host("dut")?;
    let feeder = topo.add_host("f0")?;
    let peers = [PeerArg {
        addr: feeder.v4,
        asn: FEEDER_AS,
        export: false,
    }];
    let dut = DutProc::start(kind, &ctx.exe, &dut_host, &peers, true)?;
    let counter = KernelCounter::start(&dut_host.netns, PREFIX_LEN)?;
    ensure!(counter.count() == 0, "routes in the DUT's table before t0");
    let to_dut = vec![v4_peer(dut_host.v4, DUT_AS, false, true)];
    let feed = Apparatus::start(&ctx.rt, &feeder, FEEDER_AS, false, to_dut)?;
    wait_sessions("B10 session", &[(&feed, 1)])?;
    dut.wait_established(&[feeder.v4])?;
    Ok(B10Lab {
        dut,
        feed,
        counter,
        _topo: topo,
    })
}

/// Gives the feeder `table` and waits until the DUT's table holds `want` of our routes;
/// returns the time (checked by a dump) and the DUT's CPU time meanwhile.
fn b10_phase(
    ctx: &mut Ctx,
    lab: &B10Lab,
    table: BTreeMap<ipnet::IpNet, std::sync::Arc<tortie_bgp::PathAttrs>>,
    want: usize,
) -> anyhow::Result<(Option<Duration>, Duration)> {
    let cpu0 = lab.dut.cpu(ctx.tck);
    let t0 = Instant::now();
    lab.feed.speaker.set_local_routes(table);
    let done = lab.counter.wait_for(want, t0 + ctx.timeout)?;
    let cpu = lab.dut.cpu(ctx.tck).saturating_sub(cpu0);
    let Some(done) = done else {
        eprintln!(
            "[bench-bgp]   {want} routes wanted, {} there after {:?}",
            lab.counter.count(),
            ctx.timeout
        );
        return Ok((None, cpu));
    };
    let dumped = lab.counter.dump_count()?;
    if dumped != want {
        ctx.notes.push(format!(
            "{}: notifications counted {want} routes but a dump found {dumped}",
            lab.dut.kind().name()
        ));
        return Ok((None, cpu));
    }
    Ok((Some(done - t0), cpu))
}

fn b10_case(ctx: &mut Ctx, kind: Kind, routes: usize) -> anyhow::Result<B10Sample> {
    let mut lab = b10_lab(ctx, kind)?;
    let table = originate(0..routes);
    std::thread::sleep(SETTLE);
    let (install, cpu_install) = b10_phase(ctx, &lab, table, routes)?;
    let (mut withdraw, mut cpu_withdraw) = (None, Duration::ZERO);
    if install.is_some() {
        std::thread::sleep(SETTLE);
        (withdraw, cpu_withdraw) = b10_phase(ctx, &lab, BTreeMap::new(), 0)?;
    }
    ensure!(lab.dut.alive(), "the {} DUT died", kind.name());
    let (protocols, overruns) = {
        let c = lab.counter.counts();
        let p: Vec<String> = c.protocols.keys().map(|p| proto_name(*p)).collect();
        (p.join(","), c.overruns)
    };
    if overruns > 0 {
        ctx.notes.push(format!(
            "{}: {overruns} netlink notification overrun(s), repaired by a dump (times less exact)",
            kind.name()
        ));
    }
    let s = B10Sample {
        kind,
        install,
        withdraw,
        cpu_install,
        cpu_withdraw,
        hwm_kib: lab.dut.hwm_kib(),
        protocols,
    };
    let tsv = |d: Option<Duration>| d.map_or("-".into(), |d| format!("{:.3}", d.as_secs_f64()));
    let _ = writeln!(
        ctx.raw,
        "b10\t{}\t{routes}\t{}\t{}\t{:.3}\t{:.3}\t{}\t{}",
        kind.name(),
        tsv(s.install),
        tsv(s.withdraw),
        s.cpu_install.as_secs_f64(),
        s.cpu_withdraw.as_secs_f64(),
        s.hwm_kib,
        s.protocols
    );
    drop(lab.feed);
    if let DutProc::Tortie(t) = &mut lab.dut {
        let log = t.stop();
        if let Some(s) = log.lines().find(|l| l.contains("summary")) {
            eprintln!("[bench-bgp]   tortie DUT: {s}");
            let _ = writeln!(ctx.raw, "# tortie b10 {s}");
        }
    }
    Ok(s)
}

fn proto_name(p: u8) -> String {
    match p {
        12 => "bird (12)".into(),
        186 => "bgp (186)".into(),
        p => p.to_string(),
    }
}
