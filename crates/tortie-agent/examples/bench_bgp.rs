//! Benchmarks B9 (BGP ingest) and B10 (BGP → kernel FIB) of `shared/design/benchmarks.md`:
//! tortie's speaker side by side with BIRD 2, FRR and GoBGP in one run, in network namespaces
//! (`tests/support` of tortie-bgp builds them and runs the daemons). Driven by
//! `scripts/bench-bgp.sh`; write-up in `docs/bench-notes/bgp.md`.
//!
//! `bench_bgp run [...]` runs the benchmark and prints a markdown report on stdout (progress
//! on stderr). `bench_bgp dut [...]` is tortie as the device under test, started by `run`
//! with `ip netns exec` (see `bench_bgp/dut.rs`).
//!
//! Topology (one bridge, every host a namespace with `198.18.0.i/24`): the DUT, a monitor and
//! N feeders. Feeders and the monitor are tortie speakers inside this process (the same for
//! every DUT); each feeder is an eBGP peer (AS 65101+i) that originates M distinct /28s of
//! 10.0.0.0/8; the monitor (AS 65001) is an eBGP peer of the DUT (AS 65000). The DUT's
//! sessions are passive; it exports nothing to the feeders (BIRD `export none`, an FRR
//! deny-all route-map out, a GoBGP export policy on a neighbor set, a tortie reject-all
//! export filter), so the work is N×M prefixes in and N×M out to the monitor.
//!
//! B9: sessions up (and idle), then every feeder is given its M prefixes at once (t0); the
//! result is the time from t0 until the monitor holds all N×M, with the DUT's peak RSS
//! (VmHWM, FRR: zebra + bgpd) and the CPU time (utime + stime) it used meanwhile. A row
//! without a DUT (feeders straight into the monitor) shows what the apparatus itself costs.
//!
//! B10: one feeder gives the DUT R prefixes; the time until the DUT's namespace has all R in
//! its main table, then the feeder withdraws them all and the time until they are gone,
//! counted from rtnetlink notifications (`bench_bgp/kcount.rs`). tortie's DUT runs the
//! agent's BGP → route manager → netlink path; BIRD exports to `protocol kernel`; FRR's zebra
//! installs (GoBGP cannot install routes).
//!
//! Safety (`shared/design/test-network.md`): every namespace is `tb<pid>-...`, made and
//! removed by the harness's `Topology` (on success, failure or panic); only 198.18.0.0/24
//! and 10.0.0.0/8 inside them; processes are ended by PID; every wait is bounded.

#[path = "../../tortie-bgp/tests/support/mod.rs"]
mod support;

#[path = "bench_bgp/apparatus.rs"]
mod apparatus;
#[path = "bench_bgp/cases.rs"]
mod cases;
#[path = "bench_bgp/dut.rs"]
mod dut;
#[path = "bench_bgp/duts.rs"]
mod duts;
#[path = "bench_bgp/kcount.rs"]
mod kcount;
#[path = "bench_bgp/nlfloor.rs"]
mod nlfloor;
#[path = "bench_bgp/report.rs"]
mod report;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure};
use clap::{Parser, Subcommand};
use ipnet::{IpNet, Ipv4Net};
use tortie_bgp::PathAttrs;
use tortie_bgp::speaker;

use cases::Ctx;
use duts::Kind;

/// Length of every benchmark prefix: /28s of 10.0.0.0/8 (2^20 of them).
pub const PREFIX_LEN: u8 = 28;
const DUT_AS: u32 = 65000;
const MONITOR_AS: u32 = 65001;
/// Every feeder's AS: one neighbouring AS, N sessions (distinct router ids).
const FEEDER_AS: u32 = 65100;
/// How long sessions may take to come up.
const SESSION_WAIT: Duration = Duration::from_secs(45);
/// Quiet time between sessions coming up and t0, and between B10's install and withdraw.
const SETTLE: Duration = Duration::from_secs(2);

#[derive(Debug, Parser)]
#[command(about = "B9/B10: tortie's BGP speaker beside bird2, frr and gobgpd")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the benchmark (as root) and print a markdown report.
    Run(RunArgs),
    /// tortie as the device under test (started by `run`).
    Dut(dut::DutArgs),
    /// Diagnostic: the agent's route installation without BGP (as root).
    NetlinkFloor(nlfloor::FloorArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Rounds per case (each DUT once per round, in rotated order).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// B9: feeders (N).
    #[arg(long, default_value_t = 10)]
    feeders: usize,
    /// B9: prefixes per feeder (M).
    #[arg(long, default_value_t = 10_000)]
    prefixes: usize,
    /// B9: the large case's prefixes per feeder; 0 skips it.
    #[arg(long, default_value_t = 100_000)]
    large_prefixes: usize,
    /// Rounds of the large case.
    #[arg(long, default_value_t = 1)]
    large_runs: usize,
    /// B10: routes.
    #[arg(long, default_value_t = 100_000)]
    routes: usize,
    /// DUTs, comma-separated: tortie, bird, frr, gobgp.
    #[arg(long, default_value = "tortie,bird,frr,gobgp")]
    duts: String,
    /// Only `b9` or `b10`.
    #[arg(long)]
    only: Option<String>,
    /// Longest wait for one measurement (a DUT that takes longer is reported as not done).
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
    /// Skip B9's row without a DUT.
    #[arg(long)]
    no_floor: bool,
    /// Write raw samples (TSV) here.
    #[arg(long)]
    raw: Option<PathBuf>,
    /// Write this process's PID here (for the driver script's cleanup).
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// The binary run as tortie's DUT (`<exe> dut ...`); default: this one. For A/B runs of
    /// a change to the speaker with the same feeders and monitor.
    #[arg(long)]
    dut_exe: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Dut(args) => dut::main(args),
        Cmd::Run(args) => run(args),
        Cmd::NetlinkFloor(args) => {
            ensure!(
                support::root_or_skip("bench_bgp netlink-floor"),
                "run as root"
            );
            nlfloor::main(&args)
        }
    }
}

/// Prefix `k` of the benchmark: the k-th /28 of 10.0.0.0/8.
fn prefix(k: usize) -> IpNet {
    let k = u32::try_from(k).expect("at most 2^20 prefixes");
    IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | (k << 4)), PREFIX_LEN).expect("valid"))
}

/// Prefixes `range` originated with this speaker as next hop.
fn originate(range: std::ops::Range<usize>) -> BTreeMap<IpNet, Arc<PathAttrs>> {
    speaker::originate(range.map(prefix))
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    // Without root `root_or_skip` says why (under CI=true it panics instead).
    ensure!(
        support::root_or_skip("bench_bgp"),
        "run as root (it creates network namespaces)"
    );
    if let Some(p) = &args.pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))?;
    }
    let kinds = duts::parse_kinds(&args.duts)?;
    ensure!(!kinds.is_empty(), "no DUT");
    ensure!(
        args.runs > 0 && args.feeders > 0 && args.feeders < 200,
        "bad --runs/--feeders"
    );
    let max = 1usize << (PREFIX_LEN - 8);
    ensure!(
        args.feeders * args.prefixes.max(args.large_prefixes) <= max && args.routes <= max,
        "at most {max} prefixes"
    );
    let (do_b9, do_b10) = match args.only.as_deref() {
        None => (true, true),
        Some("b9") => (true, false),
        Some("b10") => (false, true),
        Some(x) => bail!("--only {x:?}: b9 or b10"),
    };
    // Feeders and the monitor: one runtime with two workers, like the machine's cores.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("apparatus")
        .enable_all()
        .build()?;
    let exe = match &args.dut_exe {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut ctx = Ctx::new(rt, exe, duts::clock_ticks(), timeout);
    let mut out = String::new();
    if do_b9 {
        let mut b9_kinds = kinds.clone();
        if !args.no_floor {
            b9_kinds.push(Kind::Nothing);
        }
        let mut sizes = vec![(args.prefixes, args.runs)];
        if args.large_prefixes > 0 {
            sizes.push((args.large_prefixes, args.large_runs));
        }
        for (m, runs) in sizes {
            let s = cases::b9_series(&mut ctx, &b9_kinds, args.feeders, m, runs)?;
            out.push_str(&report::b9_table(&s, &b9_kinds, args.feeders, m, timeout));
        }
    }
    if do_b10 {
        // GoBGP cannot install routes (it would need its zebra client).
        let b10_kinds: Vec<Kind> = kinds.into_iter().filter(|k| *k != Kind::Gobgp).collect();
        let s = cases::b10_series(&mut ctx, &b10_kinds, args.routes, args.runs)?;
        out.push_str(&report::b10_table(&s, &b10_kinds, args.routes, timeout));
    }
    if !ctx.notes.is_empty() {
        out.push_str("\nNotes:\n");
        for n in &ctx.notes {
            out.push_str(&format!("- {n}\n"));
        }
    }
    print!("{out}");
    if let Some(p) = &args.raw {
        std::fs::write(p, &ctx.raw)?;
    }
    Ok(())
}
