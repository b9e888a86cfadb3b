//! `tortie policy explain` and `tortie policy matrix`: the policy simulator, against the
//! datastore or offline against manifest files (Namespaces, Pods with `status.podIP` and named
//! container ports, ServiceAccounts, policies, tiers, network sets, host endpoints).

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use tortie_api::resource::Resource;
use tortie_calc::eval::{
    Addresses, Decider, Explanation, ForwardVerdict, Packet, Verdict, explain,
};
use tortie_calc::matrix::{PortProto, matrix};
use tortie_calc::model::{EndpointId, proto};
use tortie_calc::world::World;

use crate::manifest;
use crate::resources::{from_kv, open_store, timed};

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Decide one flow: the verdict and the deciding tier, policy and rule, egress and ingress.
    Explain(ExplainArgs),
    /// The pod-to-pod truth table (same shape as `lab matrix`).
    Matrix(MatrixArgs),
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Source: NS/NAME of a pod, an IP address, or hostendpoint/NAME.
    #[arg(long)]
    from: String,
    /// Destination: NS/NAME of a pod, an IP address, or hostendpoint/NAME.
    #[arg(long)]
    to: String,
    /// Destination port.
    #[arg(long, default_value_t = 80)]
    port: u16,
    /// tcp, udp, sctp, icmp, icmpv6 or a protocol number.
    #[arg(long, default_value = "tcp")]
    protocol: String,
    /// ICMP type (with --protocol icmp/icmpv6).
    #[arg(long)]
    icmp_type: Option<u8>,
    /// ICMP code.
    #[arg(long)]
    icmp_code: Option<u8>,
    /// Work offline on these manifest files instead of the datastore.
    #[arg(short = 'f', long = "filename")]
    files: Vec<String>,
    /// text or json.
    #[arg(short = 'o', long, default_value = "text")]
    output: String,
}

#[derive(Debug, Args)]
pub struct MatrixArgs {
    /// Work offline on these manifest files instead of the datastore.
    #[arg(short = 'f', long = "filename")]
    files: Vec<String>,
    /// Ports, e.g. 80,81 (default: every named container port the pods declare).
    #[arg(long)]
    ports: Option<String>,
    /// Protocols, e.g. tcp,udp,sctp.
    #[arg(long)]
    protocols: Option<String>,
    /// Use the pods' IPv6 addresses.
    #[arg(long)]
    ipv6: bool,
    /// table or json.
    #[arg(short = 'o', long, default_value = "table")]
    output: String,
}

pub async fn run(ds: Option<&str>, args: PolicyArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PolicyCommand::Explain(a) => {
            check_output(&a.output, &["text", "json"])?;
            let world = load_world(ds, &a.files).await?;
            explain_cmd(&world, &a)
        }
        PolicyCommand::Matrix(a) => {
            check_output(&a.output, &["table", "json"])?;
            let world = load_world(ds, &a.files).await?;
            matrix_cmd(&world, &a)
        }
    }
}

fn check_output(o: &str, allowed: &[&str]) -> anyhow::Result<()> {
    if allowed.contains(&o) {
        Ok(())
    } else {
        bail!("-o {o:?}: must be one of {}", allowed.join(", "))
    }
}

/// Builds the world from files (validated as `apply` would) or from the datastore.
async fn load_world(ds: Option<&str>, files: &[String]) -> anyhow::Result<World> {
    let resources: Vec<Resource> = if files.is_empty() {
        let store = open_store(ds).await?;
        let prefix = "/calico/resources/v3/";
        let list = timed("listing resources", store.list(prefix)).await?;
        list.items
            .iter()
            .filter_map(|kv| match from_kv(kv) {
                Ok(r) => Some(r),
                Err(e) => {
                    eprintln!("warning: skipping {}: {e:#}", kv.key);
                    None
                }
            })
            .collect()
    } else {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for d in manifest::read_all(files, "default")? {
            // `decode` has already defaulted and validated every object.
            match d {
                Ok((_, r)) => out.push(r),
                Err(e) => errors.push(e.to_string()),
            }
        }
        if !errors.is_empty() {
            bail!("invalid input:\n  {}", errors.join("\n  "));
        }
        out
    };
    let world = World::from_resources(&resources);
    for (key, e) in world.errors() {
        eprintln!("warning: {key} is not enforced: {e}");
    }
    Ok(world)
}

/// Resolves NS/NAME, an IP, or hostendpoint/NAME to an address (of `family` when given).
fn resolve(world: &World, what: &str, v6: Option<bool>) -> anyhow::Result<IpAddr> {
    if let Ok(ip) = what.parse::<IpAddr>() {
        return Ok(ip);
    }
    let id = if let Some(name) = what.strip_prefix("hostendpoint/") {
        EndpointId::Host {
            name: name.to_string(),
        }
    } else if let Some((ns, name)) = what.split_once('/') {
        EndpointId::Workload {
            namespace: ns.to_string(),
            name: name.to_string(),
        }
    } else {
        bail!("{what:?}: expected NAMESPACE/POD, an IP address, or hostendpoint/NAME");
    };
    let ep = world
        .endpoint(&id)
        .ok_or_else(|| anyhow!("{what:?}: no such endpoint"))?;
    ep.nets
        .iter()
        .map(|n| n.addr())
        .find(|a| v6.is_none_or(|v6| a.is_ipv6() == v6))
        .ok_or_else(|| {
            anyhow!(
                "{what:?} has no address{}",
                if v6 == Some(true) {
                    " of that family"
                } else {
                    ""
                }
            )
        })
}

fn explain_cmd(world: &World, a: &ExplainArgs) -> anyhow::Result<ExitCode> {
    let protocol = proto::parse(&a.protocol)
        .ok_or_else(|| anyhow!("--protocol {:?}: unknown protocol", a.protocol))?;
    let src = resolve(world, &a.from, None).context("--from")?;
    let dst = resolve(world, &a.to, Some(src.is_ipv6())).context("--to")?;
    let pkt = Packet {
        src,
        dst,
        protocol,
        src_port: tortie_calc::matrix::CLIENT_PORT,
        dst_port: a.port,
        icmp_type: a.icmp_type,
        icmp_code: a.icmp_code,
    };
    let addrs = Addresses::new(world);
    let e = explain(world, &addrs, &pkt);
    if a.output == "json" {
        println!("{}", serde_json::to_string_pretty(&e)?);
    } else {
        print!("{}", render_explanation(&e, a));
    }
    Ok(ExitCode::SUCCESS)
}

fn verdict_word(v: &Verdict) -> &'static str {
    if v.allowed() { "ALLOW" } else { "DENY" }
}

fn decider_text(v: &Verdict, dir: &str) -> String {
    match &v.decider {
        Decider::Rule { tier, policy, rule } => {
            format!("tier {tier}, policy {policy}, {dir} rule {rule}")
        }
        Decider::EndOfTier { tier } => {
            format!("end of tier {tier}: policies select the endpoint but none allowed this")
        }
        Decider::Profile { profile, rule } => format!("profile {profile}, {dir} rule {rule}"),
        Decider::NoProfileMatched => "no policy or profile allowed it".into(),
        Decider::MissingProfile { profile } => {
            format!("profile {profile} does not exist (fail closed)")
        }
        Decider::NotAnEndpoint => "not a Calico endpoint: no policy applies".into(),
        Decider::SameEndpoint => "same endpoint: traffic does not leave the pod".into(),
        Decider::Failsafe { protocol, port } => format!(
            "failsafe port {protocol}/{port}: host endpoint traffic allowed before any policy"
        ),
        Decider::NoForwardPolicy => {
            "forwarded through a host endpoint no applyOnForward policy selects: allowed".into()
        }
        Decider::NeighbourDiscovery { icmp_type } => format!(
            "ICMPv6 type {icmp_type} (neighbour discovery or MLD): host endpoint traffic allowed before any policy"
        ),
    }
}

fn describe(v: &Verdict, dir: &str) -> String {
    let mut s = format!("{:<5}  {}", verdict_word(v), decider_text(v, dir));
    for p in &v.passes {
        match (&p.policy, p.rule) {
            (Some(pol), Some(r)) => s.push_str(&format!(
                "\n         passed: tier {}, policy {pol}, {dir} rule {r}",
                p.tier
            )),
            _ => s.push_str(&format!(
                "\n         passed: tier {} (defaultAction Pass)",
                p.tier
            )),
        }
    }
    for l in &v.logs {
        s.push_str(&format!(
            "\n         logged: tier {}, policy {}, {dir} rule {}",
            l.tier, l.policy, l.rule
        ));
    }
    s
}

fn render_explanation(e: &Explanation, a: &ExplainArgs) -> String {
    let name = |id: &Option<EndpointId>, ip: IpAddr| match id {
        Some(id) => format!("{id} ({ip})"),
        None => ip.to_string(),
    };
    let mut out = format!(
        "Flow:     {} -> {} {}/{}\n",
        name(&e.from, e.packet.src),
        name(&e.to, e.packet.dst),
        proto::name(e.packet.protocol),
        a.port
    );
    out.push_str(&format!("Egress:   {}\n", describe(&e.egress, "egress")));
    if let Some(f) = &e.forward_egress {
        out.push_str(&forwarded(f, "out of", "egress"));
    }
    if let Some(f) = &e.forward_ingress {
        out.push_str(&forwarded(f, "into", "ingress"));
    }
    out.push_str(&format!("Ingress:  {}\n", describe(&e.ingress, "ingress")));
    out.push_str(&format!(
        "Verdict:  {}\n",
        if e.outcome == tortie_calc::eval::Outcome::Allow {
            "ALLOW"
        } else {
            "DENY"
        }
    ));
    if let Some(s) = &e.staged {
        out.push_str(&format!(
            "Staged:   {} (what enforcing the staged policies would do)\n  egress:  {}\n  ingress: {}\n",
            if s.outcome == tortie_calc::eval::Outcome::Allow { "ALLOW" } else { "DENY" },
            describe(&s.egress, "egress"),
            describe(&s.ingress, "ingress"),
        ));
    }
    out
}

/// A line for host endpoint policy on forwarded traffic.
fn forwarded(f: &ForwardVerdict, way: &str, dir: &str) -> String {
    format!(
        "Forward:  {}\n          (forwarded {way} the node through {})\n",
        describe(&f.verdict, dir),
        f.host_endpoint
    )
}

fn parse_list<T>(s: &str, f: impl Fn(&str) -> Option<T>, what: &str) -> anyhow::Result<Vec<T>> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(|x| f(x).ok_or_else(|| anyhow!("--{what}: {x:?} is not valid")))
        .collect()
}

fn matrix_cmd(world: &World, a: &MatrixArgs) -> anyhow::Result<ExitCode> {
    let declared: BTreeSet<PortProto> = world
        .workloads()
        .iter()
        .flat_map(|e| {
            e.ports.iter().map(|p| PortProto {
                port: p.port,
                protocol: p.protocol,
            })
        })
        .collect();
    let ports = a
        .ports
        .as_deref()
        .map(|s| parse_list(s, |x| x.parse::<u16>().ok().filter(|p| *p > 0), "ports"))
        .transpose()?;
    let protocols = a
        .protocols
        .as_deref()
        .map(|s| parse_list(s, proto::parse, "protocols"))
        .transpose()?;
    let pps: Vec<PortProto> = match (ports, protocols) {
        (None, None) if declared.is_empty() => vec![PortProto {
            port: 80,
            protocol: proto::TCP,
        }],
        (None, None) => declared.into_iter().collect(),
        (ports, protocols) => {
            let ports = ports.unwrap_or_else(|| {
                let p: BTreeSet<u16> = declared.iter().map(|d| d.port).collect();
                if p.is_empty() {
                    vec![80]
                } else {
                    p.into_iter().collect()
                }
            });
            let protocols = protocols.unwrap_or_else(|| vec![proto::TCP]);
            let mut v: Vec<PortProto> = ports
                .iter()
                .flat_map(|port| {
                    protocols.iter().map(|pr| PortProto {
                        port: *port,
                        protocol: *pr,
                    })
                })
                .collect();
            v.sort();
            v.dedup();
            v
        }
    };
    let m = matrix(world, &pps, a.ipv6);
    if m.values().all(|g| g.is_empty()) {
        bail!(
            "no pods with an IPv{} address to build a matrix from",
            if a.ipv6 { 6 } else { 4 }
        );
    }
    if a.output == "json" {
        println!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        print!("{}", tortie_lab::probe::render_table(&m));
    }
    Ok(ExitCode::SUCCESS)
}
