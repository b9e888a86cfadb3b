//! Root-only tests of the lab's own pieces: topology up/down, hosts on the bridge, the
//! built-in server, crash recovery, etcd, and agent start-up with a stand-in agent.
//!
//! This binary has its own `main` so it can also play the `tortie` binary the lab spawns:
//! `<this> lab serve ...` runs the real built-in server, `<this> agent ...` a stand-in agent
//! that answers `/readiness` with 200 (or exits at once when the lab name ends in `f`).
//! Tests run one after another. Without root they are skipped, unless `CI=true`, where that
//! is a failure. Each test uses its own lab name and a guard that runs `down` on drop.

mod helpers;
mod lab_tests;
mod pod_tests;
mod stand_ins;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use tortie_lab::LabArgs;

use lab_tests::*;
use pod_tests::*;
use stand_ins::*;
#[derive(Debug, Parser)]
struct Cli {
    #[arg(long, global = true)]
    datastore: Option<String>,
    #[command(subcommand)]
    command: Top,
}

#[derive(Debug, Subcommand)]
enum Top {
    Lab(LabArgs),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("lab") => return play_tortie_lab(&args),
        Some("agent") => return play_agent(&args),
        _ => {}
    }
    if std::env::var_os("CNI_COMMAND").is_some() {
        return play_cni_plugin();
    }
    if !is_root() {
        let msg = "root tests need root (network namespaces)";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            eprintln!("{msg}; CI=true requires them to run");
            return ExitCode::FAILURE;
        }
        eprintln!("skipping: {msg}");
        return ExitCode::SUCCESS;
    }
    let tests: &[(&str, fn())] = &[
        ("topology_up_status_down", topology_up_status_down),
        ("hosts_and_builtin_server", hosts_and_builtin_server),
        ("down_after_crash", down_after_crash),
        (
            "agents_start_and_failures_roll_back",
            agents_start_and_failures_roll_back,
        ),
        ("etcd_datastore", etcd_datastore),
        (
            "pods_with_a_stand_in_cni_plugin",
            pods_with_a_stand_in_cni_plugin,
        ),
    ];
    let filters = name_filters(&args[1..]);
    if args.iter().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, f) in tests {
        if !filters.is_empty() && !filters.iter().any(|flt| name.contains(flt.as_str())) {
            continue;
        }
        ran += 1;
        println!("test {name} ...");
        let started = Instant::now();
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(()) => println!(
                "test {name} ... ok ({:.1}s)",
                started.elapsed().as_secs_f64()
            ),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    if ran == 0 && std::env::var("CI").as_deref() == Ok("true") {
        println!("no root test matched the filters {filters:?}; CI=true forbids running none");
        return ExitCode::FAILURE;
    }
    println!(
        "\ntest result: {}. {} passed; {} failed",
        if failed.is_empty() { "ok" } else { "FAILED" },
        ran - failed.len(),
        failed.len()
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Runs `tortie lab ...` (as the real binary would) on a fresh single-thread runtime.
fn run_cli(args: &[String]) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(2);
        }
    };
    let Top::Lab(lab) = cli.command;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match rt.block_on(tortie_lab::run(lab, cli.datastore.as_deref())) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The test-name filters among libtest-style arguments: words that are not flags and not
/// the value of a flag that takes one (`--test-threads 2`, `--skip x`, `--format pretty`).
fn name_filters(args: &[String]) -> Vec<&String> {
    const TAKES_VALUE: [&str; 6] = [
        "--test-threads",
        "--skip",
        "--format",
        "--color",
        "--logfile",
        "-Z",
    ];
    let mut out = Vec::new();
    let mut skip_next = false;
    for a in args {
        if skip_next {
            skip_next = false;
        } else if TAKES_VALUE.contains(&a.as_str()) {
            skip_next = true;
        } else if !a.starts_with('-') {
            out.push(a);
        }
    }
    out
}
