//! `tortie ipam show|check|release`, in calicoctl's layout.

use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use tortie_ipam::Ipam;

use crate::resources::open_store;

#[derive(Debug, Args)]
pub struct IpamArgs {
    #[command(subcommand)]
    pub command: IpamCommand,
}

#[derive(Debug, Subcommand)]
pub enum IpamCommand {
    /// Show pool and block usage, one address, borrowed addresses or the IPAM configuration.
    Show(ShowArgs),
    /// Check IPAM records for leaks and inconsistencies (and repair them with --fix).
    Check(CheckArgs),
    /// Release addresses that are no longer used.
    Release(ReleaseArgs),
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Show one address: whether it is in use, and by whom.
    #[arg(long)]
    pub ip: Option<IpAddr>,
    /// Also show each block.
    #[arg(long)]
    pub show_blocks: bool,
    /// Show addresses borrowed from other nodes' blocks.
    #[arg(long)]
    pub show_borrowed: bool,
    /// Show the IPAM configuration.
    #[arg(long)]
    pub show_configuration: bool,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Write the report as JSON to this file (- for stdout).
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// Repair what the check finds (every repair is re-validated under compare-and-swap).
    #[arg(long)]
    pub fix: bool,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// Address to release (repeatable).
    #[arg(long, required = true)]
    pub ip: Vec<IpAddr>,
}

pub async fn run(ds: Option<&str>, args: IpamArgs) -> anyhow::Result<ExitCode> {
    let store = open_store(ds).await?;
    let ipam = Ipam::new(store);
    match args.command {
        IpamCommand::Show(a) => show(&ipam, a).await,
        IpamCommand::Check(a) => check(&ipam, a).await,
        IpamCommand::Release(a) => release(&ipam, a).await,
    }
}

/// A boxed table like calicoctl's (tablewriter) output.
fn boxed(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.len());
        }
    }
    let rule = format!(
        "+{}+\n",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+")
    );
    let line = |cells: Vec<String>| {
        let inner: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!(" {c:<w$} ", w = widths[i]))
            .collect();
        format!("|{}|\n", inner.join("|"))
    };
    let mut out = rule.clone();
    out.push_str(&line(header.iter().map(|s| s.to_string()).collect()));
    out.push_str(&rule);
    for r in rows {
        out.push_str(&line(r.clone()));
    }
    out.push_str(&rule);
    out
}

fn pct(part: u128, total: u128) -> String {
    let percent = (part * 100).checked_div(total).unwrap_or(0);
    format!("{part} ({percent}%)")
}

async fn show(ipam: &Ipam, a: ShowArgs) -> anyhow::Result<ExitCode> {
    if let Some(ip) = a.ip {
        return show_ip(ipam, ip).await;
    }
    if a.show_configuration {
        return show_configuration(ipam).await;
    }
    let usage = ipam.usage().await?;
    if a.show_borrowed {
        let rows: Vec<Vec<String>> = usage
            .borrowed
            .iter()
            .map(|b| {
                vec![
                    b.ip.to_string(),
                    b.borrowing_node.clone(),
                    b.block.to_string(),
                    b.block_owner.clone().unwrap_or_default(),
                    if b.allocated_to.as_deref().is_some_and(|s| s.contains('/')) {
                        "pod".into()
                    } else {
                        String::new()
                    },
                    b.allocated_to.clone().unwrap_or_default(),
                ]
            })
            .collect();
        print!(
            "{}",
            boxed(
                &[
                    "IP",
                    "BORROWING-NODE",
                    "BLOCK",
                    "BLOCK OWNER",
                    "TYPE",
                    "ALLOCATED-TO"
                ],
                &rows
            )
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = Vec::new();
    for p in &usage.pools {
        rows.push(vec![
            "IP Pool".to_string(),
            p.cidr.to_string(),
            p.total.to_string(),
            pct(p.in_use, p.total),
            pct(p.reserved, p.total),
            pct(p.free, p.total),
        ]);
        if a.show_blocks {
            for b in usage
                .blocks
                .iter()
                .filter(|b| b.pool.as_deref() == Some(p.name.as_str()))
            {
                let t = u128::from(b.total);
                rows.push(vec![
                    "Block".to_string(),
                    b.cidr.to_string(),
                    b.total.to_string(),
                    pct(u128::from(b.in_use), t),
                    pct(u128::from(b.reserved), t),
                    pct(u128::from(b.free), t),
                ]);
            }
        }
    }
    print!(
        "{}",
        boxed(
            &[
                "GROUPING",
                "CIDR",
                "IPS TOTAL",
                "IPS IN USE",
                "IPS RESERVED",
                "IPS FREE"
            ],
            &rows
        )
    );
    Ok(ExitCode::SUCCESS)
}

async fn show_ip(ipam: &Ipam, ip: IpAddr) -> anyhow::Result<ExitCode> {
    match ipam.ip_info(ip).await? {
        None => println!("IP {ip} is not assigned"),
        Some(info) => {
            println!("IP {ip} is in use");
            println!("Block: {}", info.block);
            if let Some(a) = &info.block_affinity {
                println!(
                    "Block affinity: {a}{}",
                    if info.borrowed { " (borrowed)" } else { "" }
                );
            }
            if let Some(h) = &info.handle {
                println!("Handle: {h}");
            }
            if !info.attrs.is_empty() {
                println!("Attributes:");
                for (k, v) in &info.attrs {
                    println!("  {k}: {v}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn show_configuration(ipam: &Ipam) -> anyhow::Result<ExitCode> {
    let key = tortie_api::Kind::IPAMConfiguration.key(None, "default");
    let spec = match ipam.store().get(&key).await? {
        Some(kv) => {
            let v: serde_json::Value =
                serde_json::from_slice(&kv.value).context("decoding IPAMConfiguration")?;
            v.get("spec").cloned().unwrap_or_default()
        }
        None => serde_json::Value::Null,
    };
    let strict = spec
        .get("strictAffinity")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let auto = spec
        .get("autoAllocateBlocks")
        .and_then(|v| v.as_bool())
        .unwrap_or(true);
    let max = spec
        .get("maxBlocksPerHost")
        .and_then(|v| v.as_i64())
        .filter(|m| *m > 0)
        .unwrap_or(20);
    let rows = vec![
        vec!["StrictAffinity".to_string(), strict.to_string()],
        vec!["AutoAllocateBlocks".to_string(), auto.to_string()],
        vec!["MaxBlocksPerHost".to_string(), max.to_string()],
    ];
    print!("{}", boxed(&["PROPERTY", "VALUE"], &rows));
    Ok(ExitCode::SUCCESS)
}

async fn check(ipam: &Ipam, a: CheckArgs) -> anyhow::Result<ExitCode> {
    println!("Checking IPAM for inconsistencies...");
    let report = ipam.check().await?;
    print!("{report}");
    if let Some(out) = &a.output {
        let json = serde_json::to_string_pretty(&report)?;
        if out == "-" {
            println!("{json}");
        } else {
            std::fs::write(out, json).with_context(|| format!("writing report to {out}"))?;
            println!("Report written to {out}");
        }
    }
    if report.is_clean() {
        return Ok(ExitCode::SUCCESS);
    }
    if !a.fix {
        return Ok(ExitCode::FAILURE);
    }
    let fixed = ipam.fix(&report).await?;
    for f in &fixed.fixed {
        println!("fixed: {f}");
    }
    for s in &fixed.skipped {
        println!("skipped: {s}");
    }
    for e in &fixed.errors {
        eprintln!("error: {e}");
    }
    let after = ipam.check().await?;
    println!("After repair: {}", after.summary_line());
    Ok(if after.is_clean() && fixed.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn release(ipam: &Ipam, a: ReleaseArgs) -> anyhow::Result<ExitCode> {
    let not_allocated = ipam.release_ips(&a.ip).await?;
    for ip in &a.ip {
        if not_allocated.contains(ip) {
            println!("IP {ip} was not assigned");
        } else {
            println!("Successfully released IP {ip}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
