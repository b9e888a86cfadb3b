//! `bench_bgp netlink-floor`: what B10's route installation costs without BGP, to tell the
//! agent's per-route overhead from the kernel's. In a fresh namespace, R routes
//! `10.x/28 via 198.18.0.2 proto 81` are added and then deleted:
//! * through the agent's `NetlinkDataplane::execute_all`, all R ops in one call (what
//!   `RouteManager::apply` does: windows of messages per `sendmsg`, on a blocking thread), on
//!   a multi-thread runtime like the agent's;
//! * through `NetlinkDataplane::execute`, one awaited op after another (what the agent did
//!   before batching), on a multi-thread runtime;
//! * the same on a current-thread runtime (no cross-thread wake-ups per request);
//! * through the same rtnetlink handle with 64 requests in flight (a diagnostic of what
//!   pipelining would give; not something the agent does);
//!
//! plus one `list_owned` of the R routes (a full apply of the agent starts with one).
//! A diagnostic, not one of the benchmark's cases.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use futures::StreamExt;
use tortie_agent::dataplane::{NetlinkDataplane, NodeDataplane};
use tortie_agent::route::{KernelRoute, ROUTE_PROTOCOL, RouteOp, RouteTarget};
use tortie_netlink::NetNs;
use tortie_netlink::route::{Route, add_route, delete_route};

use super::kcount::KernelCounter;
use super::support::netns::Topology;
use super::{PREFIX_LEN, prefix};

/// Arguments of `bench_bgp netlink-floor`.
#[derive(Debug, clap::Args)]
pub struct FloorArgs {
    #[arg(long, default_value_t = 100_000)]
    pub routes: usize,
    /// Requests in flight for the pipelined case.
    #[arg(long, default_value_t = 64)]
    pub in_flight: usize,
    /// Write this process's PID here (for the driver script's cleanup).
    #[arg(long)]
    pub pid_file: Option<std::path::PathBuf>,
}

const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);

/// Add and delete times of one way of installing.
struct Timing {
    add: Duration,
    del: Duration,
    /// One `list_owned` of all the routes, between the two.
    list: Option<Duration>,
}

pub fn main(args: &FloorArgs) -> anyhow::Result<()> {
    if let Some(p) = &args.pid_file {
        std::fs::write(p, format!("{}\n", std::process::id()))?;
    }
    let mut topo = Topology::new("nlf")?;
    let host = topo.add_host("n")?;
    let path = NetNs::path_of(&host.netns);
    let counter = KernelCounter::start(&host.netns, PREFIX_LEN)?;
    let n = args.routes;
    let mut report = String::from(
        "| how | add s | adds/s | µs/op | delete s | deletes/s |\n| --- | ---: | ---: | ---: | ---: | ---: |\n",
    );
    let t = batched(&path, n)?;
    ensure!(counter.dump_count()? == 0, "routes left");
    row(
        &mut report,
        "agent `NetlinkDataplane::execute_all` (batched, as `RouteManager::apply`), multi-thread runtime",
        n,
        &t,
    );
    let cases = [
        (
            "agent `NetlinkDataplane::execute`, sequential, multi-thread runtime",
            true,
        ),
        (
            "agent `NetlinkDataplane::execute`, sequential, current-thread runtime",
            false,
        ),
    ];
    for (what, multi) in cases {
        let t = sequential(&path, n, multi)?;
        ensure!(counter.dump_count()? == 0, "routes left");
        row(&mut report, what, n, &t);
    }
    let k = args.in_flight.max(1);
    let t = pipelined(&path, n, k)?;
    ensure!(counter.dump_count().context("dump")? == 0, "routes left");
    let what = format!("same rtnetlink handle, {k} requests in flight (diagnostic)");
    row(&mut report, &what, n, &t);
    print!("{report}");
    drop(counter);
    drop(topo);
    Ok(())
}

fn row(report: &mut String, what: &str, n: usize, t: &Timing) {
    let (add, del) = (t.add.as_secs_f64(), t.del.as_secs_f64());
    let _ = writeln!(
        report,
        "| {what} | {add:.2} | {:.0} | {:.1} | {del:.2} | {:.0} |",
        n as f64 / add,
        add * 1e6 / n as f64,
        n as f64 / del
    );
    if let Some(list) = t.list {
        let _ = writeln!(
            report,
            "| ↳ one `list_owned` of the {n} routes | {:.3} s | | | | |",
            list.as_secs_f64()
        );
    }
}

fn via() -> RouteTarget {
    RouteTarget::Via(IpAddr::V4(GATEWAY))
}

/// What `RouteManager::apply` does with its ops: one awaited `execute` after another.
fn sequential(path: &std::path::Path, n: usize, multi_thread: bool) -> anyhow::Result<Timing> {
    let rt = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    let err = |e: tortie_agent::dataplane::DataplaneError| anyhow::anyhow!(e.chain());
    rt.block_on(async {
        let mut dp = NetlinkDataplane::open(Some(path)).map_err(err)?;
        let t = Instant::now();
        for k in 0..n {
            let op = RouteOp::Add {
                dst: prefix(k),
                target: via(),
            };
            dp.execute(&op).await.map_err(err)?;
        }
        let add = t.elapsed();
        let t = Instant::now();
        let listed = dp.list_owned().await.map_err(err)?;
        let list = t.elapsed();
        ensure!(listed.len() == n, "listed {} of {n}", listed.len());
        let t = Instant::now();
        for k in 0..n {
            let op = RouteOp::Delete(KernelRoute {
                dst: prefix(k),
                target: via(),
                metric: 0,
            });
            dp.execute(&op).await.map_err(err)?;
        }
        Ok(Timing {
            add,
            del: t.elapsed(),
            list: Some(list),
        })
    })
}

/// What `RouteManager::apply` does with its ops: one `execute_all` with all of them.
fn batched(path: &std::path::Path, n: usize) -> anyhow::Result<Timing> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let err = |e: &tortie_agent::dataplane::DataplaneError| anyhow::anyhow!(e.chain());
    rt.block_on(async {
        let mut dp = NetlinkDataplane::open(Some(path)).map_err(|e| err(&e))?;
        let adds: Vec<RouteOp> = (0..n)
            .map(|k| RouteOp::Add {
                dst: prefix(k),
                target: via(),
            })
            .collect();
        let t = Instant::now();
        let results = dp.execute_all(&adds).await;
        let add = t.elapsed();
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            return Err(err(e));
        }
        let t = Instant::now();
        let listed = dp.list_owned().await.map_err(|e| err(&e))?;
        let list = t.elapsed();
        ensure!(listed.len() == n, "listed {} of {n}", listed.len());
        let deletes: Vec<RouteOp> = listed.into_iter().map(RouteOp::Delete).collect();
        let t = Instant::now();
        let results = dp.execute_all(&deletes).await;
        let del = t.elapsed();
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            return Err(err(e));
        }
        Ok(Timing {
            add,
            del,
            list: Some(list),
        })
    })
}

/// The same requests through one rtnetlink handle, `k` at a time.
fn pipelined(path: &std::path::Path, n: usize, k: usize) -> anyhow::Result<Timing> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let ns = NetNs::open(path)?;
        let h = tortie_netlink::netlink_handle_in(&ns)?;
        let routes: Vec<Route> = (0..n)
            .map(|i| Route::via(prefix(i), IpAddr::V4(GATEWAY)).with_protocol(ROUTE_PROTOCOL))
            .collect();
        let t = Instant::now();
        let errs = futures::stream::iter(&routes)
            .map(|r| add_route(&h, r))
            .buffer_unordered(k)
            .filter(|r| std::future::ready(r.is_err()))
            .count()
            .await;
        let add = t.elapsed();
        ensure!(errs == 0, "{errs} adds failed");
        let t = Instant::now();
        let errs = futures::stream::iter(&routes)
            .map(|r| delete_route(&h, r))
            .buffer_unordered(k)
            .filter(|r| std::future::ready(r.is_err()))
            .count()
            .await;
        ensure!(errs == 0, "{errs} deletes failed");
        Ok(Timing {
            add,
            del: t.elapsed(),
            list: None,
        })
    })
}
