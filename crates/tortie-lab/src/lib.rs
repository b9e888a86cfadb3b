//! `tortie lab`: a whole virtual cluster on one Linux machine. Nodes, hosts and pods are
//! network namespaces on a bridge in a fabric namespace; one `tortie agent` per node and the
//! real `tortie-cni` plugin wire them as in a real cluster. Every lab process (CLI, agents,
//! CNI plugin, etcd) runs in the root namespace and reaches the datastore on 127.0.0.1; lab
//! traffic never leaves the lab's namespaces (see `test-network.md`).
//!
//! The `tortie` binary wires [`LabArgs`] in as `tortie lab ...` and calls [`run`] with its
//! global `--datastore` flag, which `lab up` reads as `embedded` or `etcd`.
//!
//! Modules: [`state`] (state file, names, address plan), [`topology`] (underlay steps as
//! data), [`netns`], [`process`], [`datastore`], [`cni`], [`serve`] (built-in server),
//! [`probe`] (probes and matrix), and the command bodies in `up`, `down`, `pods`, `status`
//! and `access`.

pub mod cni;
pub mod datastore;
pub mod netns;
pub mod probe;
pub mod process;
pub mod serve;
pub mod spec;
pub mod state;
pub mod topology;

mod access;
mod down;
mod pods;
mod status;
mod up;

use std::process::ExitCode;

use clap::{Args, Subcommand};

pub use down::{DownReport, down};
pub use serve::{ServeArgs, serve_main};
pub use spec::{LabelList, PodRef, PortProto, PortProtoList, Protocol};
pub use state::{LabState, Plan};
pub use status::http_get;
pub use status::{Readiness, readiness, status_value};

/// The lab name used when none is given.
pub const DEFAULT_LAB: &str = "lab";

/// `tortie lab ...`.
#[derive(Debug, Args)]
pub struct LabArgs {
    /// Which lab: 1-16 lower-case letters and digits.
    #[arg(long = "name", value_name = "L", global = true, default_value = DEFAULT_LAB, env = "TORTIE_LAB")]
    pub lab: String,

    #[command(subcommand)]
    pub command: LabCommand,
}

/// The `lab` subcommands.
#[derive(Debug, Subcommand)]
pub enum LabCommand {
    /// Start a lab: underlay, nodes, datastore (--datastore embedded|etcd), one agent per node.
    Up(UpArgs),
    /// Remove everything a lab made, even after a crash.
    Down,
    /// List nodes, agents, hosts, pods and addresses.
    Status(OutputArgs),
    /// Print the TORTIE_DATASTORE export for the lab's datastore.
    Env,
    /// Add or delete pods.
    Pod(PodArgs),
    /// Run a command inside a pod's (or host's, or node's) namespace.
    Exec(ExecArgs),
    /// Add plain hosts on the underlay.
    Host(HostArgs),
    /// Probe one destination from one pod or host: prints allowed or denied.
    Probe(ProbeArgs),
    /// Probe every pod pair, in parallel, for each port and protocol.
    Matrix(MatrixArgs),
    /// The built-in server pods run (internal).
    #[command(hide = true)]
    Serve(ServeArgs),
}

/// `lab up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=state::MAX_NODES as i64))]
    pub nodes: u16,
    /// Start no agents (tests of the lab itself).
    #[arg(long, hide = true)]
    pub no_agents: bool,
    /// How nodes learn routes to other nodes' pods: `static` (from IPAM) or `bgp` (each
    /// agent's BGP speaker, in a node-to-node mesh).
    #[arg(long, default_value = "static", value_parser = ["static", "bgp"])]
    pub routing: String,
}

/// `-o table|json`.
#[derive(Debug, Args)]
pub struct OutputArgs {
    #[arg(short = 'o', long, default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
}

/// `lab pod ...`.
#[derive(Debug, Args)]
pub struct PodArgs {
    #[command(subcommand)]
    pub command: PodCommand,
}

/// The `lab pod` subcommands.
#[derive(Debug, Subcommand)]
pub enum PodCommand {
    /// Write the Pod record, create the pod's namespace, run the CNI plugin's ADD.
    Add(PodAddArgs),
    /// Run the CNI plugin's DEL, remove the namespace and the Pod record.
    Delete(PodRefArgs),
}

/// `lab pod add`.
#[derive(Debug, Args)]
pub struct PodAddArgs {
    /// NAMESPACE/NAME.
    #[arg(value_name = "NS/NAME")]
    pub pod: PodRef,
    /// The node (n1, n2, ...) the pod runs on.
    #[arg(long)]
    pub node: String,
    /// Pod labels, k=v,k2=v2.
    #[arg(long)]
    pub labels: Option<LabelList>,
    /// Addresses the pod must get (the CNI `ips` capability), comma-separated: at most one
    /// per family, e.g. `10.244.1.10,fd00:10:244:1::10`.
    #[arg(long)]
    pub ip: Option<String>,
    /// Run the built-in server on these ports, e.g. 80/tcp,81/tcp,80/udp,81/udp. The Pod
    /// declares them as container ports named `serve-<port>-<protocol>`.
    #[arg(long)]
    pub serve: Option<PortProtoList>,
    /// The pod's service account (`spec.serviceAccountName`).
    #[arg(long)]
    pub service_account: Option<String>,
}

/// A pod argument.
#[derive(Debug, Args)]
pub struct PodRefArgs {
    #[arg(value_name = "NS/NAME")]
    pub pod: PodRef,
}

/// `lab exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// NS/NAME of a pod, or a host or node name.
    pub target: String,
    /// The command, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `lab host ...`.
#[derive(Debug, Args)]
pub struct HostArgs {
    #[command(subcommand)]
    pub command: HostCommand,
}

/// The `lab host` subcommands.
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Add a plain host on the underlay; prints its namespace and addresses.
    Add(HostAddArgs),
}

/// `lab host add`.
#[derive(Debug, Args)]
pub struct HostAddArgs {
    /// Host name: lower-case letters, digits and '-'.
    #[arg(value_name = "NAME")]
    pub host: String,
    /// Run the built-in server on these ports, e.g. 80/tcp,53/udp.
    #[arg(long)]
    pub serve: Option<PortProtoList>,
}

/// `lab probe`.
#[derive(Debug, Args)]
pub struct ProbeArgs {
    /// Source: NS/NAME of a pod, or a host or node name.
    pub from: String,
    /// Destination: NS/NAME of a pod, or a host or node name.
    pub to: String,
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    #[arg(long, default_value = "tcp")]
    pub protocol: Protocol,
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// Probe the destination's first IPv6 address instead of its first IPv4 one.
    #[arg(long)]
    pub ipv6: bool,
}

/// `lab matrix`.
#[derive(Debug, Args)]
pub struct MatrixArgs {
    /// Ports, e.g. 80,81 (default: every port the pods serve).
    #[arg(long)]
    pub ports: Option<String>,
    /// Protocols, e.g. tcp,udp (default: every protocol the pods serve).
    #[arg(long)]
    pub protocols: Option<String>,
    #[arg(short = 'o', long, default_value = "table", value_parser = ["table", "json"])]
    pub output: String,
    #[arg(long, default_value_t = 1000)]
    pub timeout_ms: u64,
    /// Probes run at once (at most 32).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=probe::MAX_PARALLEL as i64))]
    pub parallel: u16,
    /// Probe IPv6 addresses instead of IPv4 ones.
    #[arg(long)]
    pub ipv6: bool,
}

/// Runs `tortie lab ...`. `datastore_flag` is the CLI's global `--datastore`, which `lab up`
/// reads as `embedded` (default) or `etcd`; the other commands use the lab's own datastore.
pub async fn run(args: LabArgs, datastore_flag: Option<&str>) -> anyhow::Result<ExitCode> {
    let plan = Plan::new(&args.lab)?;
    match args.command {
        LabCommand::Up(a) => up::up(&plan, &a, datastore_flag).await,
        LabCommand::Down => Ok(down::down_cmd(&plan)),
        LabCommand::Status(a) => status::status(&plan, &a.output),
        LabCommand::Env => status::env(&plan),
        LabCommand::Pod(PodArgs {
            command: PodCommand::Add(a),
        }) => pods::pod_add(&plan, a).await,
        LabCommand::Pod(PodArgs {
            command: PodCommand::Delete(a),
        }) => pods::pod_delete(&plan, &a.pod).await,
        LabCommand::Exec(a) => access::exec(&plan, &a),
        LabCommand::Host(HostArgs {
            command: HostCommand::Add(a),
        }) => pods::host_add(&plan, a),
        LabCommand::Probe(a) => access::probe_cmd(&plan, &a),
        LabCommand::Matrix(a) => access::matrix_cmd(&plan, &a),
        LabCommand::Serve(a) => serve::run(a).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// The shape of the `tortie` CLI: a global `--datastore` and `lab` as a subcommand.
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

    fn parse(args: &str) -> Cli {
        Cli::try_parse_from(format!("tortie {args}").split_whitespace())
            .unwrap_or_else(|e| panic!("{args}: {e}"))
    }

    fn lab(cli: Cli) -> LabArgs {
        match cli.command {
            Top::Lab(l) => l,
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn up_reads_the_global_datastore_flag() {
        let cli = parse("lab up --name tl1 --nodes 2 --datastore etcd");
        assert_eq!(cli.datastore.as_deref(), Some("etcd"));
        let l = lab(cli);
        assert_eq!(l.lab, "tl1");
        assert!(matches!(
            l.command,
            LabCommand::Up(UpArgs {
                nodes: 2,
                no_agents: false,
                ..
            })
        ));
        let l = lab(parse("lab up"));
        assert_eq!(l.lab, DEFAULT_LAB);
        assert!(matches!(l.command, LabCommand::Up(UpArgs { nodes: 3, .. })));
    }

    #[test]
    fn pod_add_parses_every_option() {
        let l = lab(parse(
            "lab pod add x/a --node n1 --labels app=web,tier=fe --ip 10.244.1.5 --serve 80/tcp,81/udp",
        ));
        let LabCommand::Pod(PodArgs {
            command: PodCommand::Add(a),
        }) = l.command
        else {
            panic!("not pod add");
        };
        assert_eq!(a.pod.to_string(), "x/a");
        assert_eq!(a.node, "n1");
        assert_eq!(a.labels.unwrap().0.len(), 2);
        assert_eq!(a.ip.as_deref(), Some("10.244.1.5"));
        assert_eq!(a.serve.unwrap().0.len(), 2);
    }

    #[test]
    fn exec_takes_the_command_after_double_dash() {
        let l = lab(parse("lab exec x/a -- ip -4 addr show"));
        let LabCommand::Exec(a) = l.command else {
            panic!("not exec");
        };
        assert_eq!(a.target, "x/a");
        assert_eq!(a.command, ["ip", "-4", "addr", "show"]);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for bad in [
            "lab up --nodes 0",
            "lab pod add xa --node n1",
            "lab pod add x/a --node n1 --serve 80/sctp",
            "lab pod add x/a --node n1 --labels novalue",
            "lab probe x/a y/b --port 80 --protocol icmp",
            "lab status -o yaml",
            "lab exec x/a",
        ] {
            let e = Cli::try_parse_from(format!("tortie {bad}").split_whitespace()).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
    }

    #[test]
    fn host_add_and_probe_and_matrix() {
        let l = lab(parse("lab --name l2 host add ext --serve 53/udp"));
        assert_eq!(l.lab, "l2");
        assert!(matches!(l.command, LabCommand::Host(_)));
        let l = lab(parse(
            "lab probe x/a ext --port 53 --protocol udp --timeout-ms 200",
        ));
        let LabCommand::Probe(p) = l.command else {
            panic!("not probe");
        };
        assert_eq!((p.port, p.protocol, p.timeout_ms), (53, Protocol::Udp, 200));
        let l = lab(parse(
            "lab matrix --ports 80,81 --protocols tcp,udp -o json",
        ));
        assert!(
            matches!(l.command, LabCommand::Matrix(MatrixArgs { ref output, .. }) if output == "json")
        );
        let l = lab(parse("lab serve --listen 80/tcp,80/udp --netns lab-p1"));
        let LabCommand::Serve(s) = l.command else {
            panic!("not serve");
        };
        assert_eq!(s.listen.0.len(), 2);
    }
}
