//! `tortie`: the command-line interface.
//!
//! Exit codes: 0 success, 1 failure, 2 usage error (clap's default for bad arguments).

mod ipam_cmd;
mod manifest;
mod node_cmd;
mod policy_cmd;
mod resources;
mod selector_cmd;
mod table;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// How long any datastore operation may take before the CLI gives up.
pub const DATASTORE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Parser)]
#[command(
    name = "tortie",
    version,
    about = "tortie: Calico-compatible networking and network policy, in Rust"
)]
struct Cli {
    /// Datastore: file:PATH (default file:/var/lib/tortie/store.db) or etcd://HOST:PORT[,HOST:PORT].
    /// Also read from TORTIE_DATASTORE, or Calico's DATASTORE_TYPE=etcdv3 + ETCD_ENDPOINTS.
    #[arg(long, global = true)]
    datastore: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or replace resources from files, directories or stdin (-f -).
    Apply(resources::FileArgs),
    /// Create resources; fails if one already exists.
    Create(resources::CreateArgs),
    /// Replace existing resources; fails if one does not exist.
    Replace(resources::FileArgs),
    /// Delete resources named in files, or KIND NAME...
    Delete(resources::DeleteArgs),
    /// Show resources.
    Get(resources::GetArgs),
    /// Add, change or remove labels on a resource.
    Label(resources::LabelArgs),
    /// Validate manifests without applying them.
    Validate(resources::ValidateArgs),
    /// Run the node agent: register the node, program routes, keep endpoints in sync.
    Agent(tortie_agent::AgentArgs),
    /// Virtual clusters on this machine: nodes, pods and hosts as network namespaces.
    Lab(tortie_lab::LabArgs),
    /// IP address management: show usage, check and repair, release addresses.
    Ipam(ipam_cmd::IpamArgs),
    /// Policy simulation: explain one flow, or print the pod-to-pod truth table.
    Policy(policy_cmd::PolicyArgs),
    /// This node's agent: BGP peer status.
    Node(node_cmd::NodeArgs),
    /// Work with Calico selector expressions.
    Selector(SelectorArgs),
    /// Print the client version.
    Version,
}

#[derive(Debug, Args)]
struct SelectorArgs {
    #[command(subcommand)]
    command: SelectorCommand,
}

#[derive(Debug, Subcommand)]
enum SelectorCommand {
    /// Parse a selector, print its canonical form and, given labels, whether they match.
    Check(selector_cmd::CheckArgs),
}

/// Logs to stderr; `RUST_LOG` (e.g. `info`, `tortie_agent=debug`) sets the level. Colours
/// only on a terminal: a log file (the lab's agent logs, a journal) gets plain text.
fn init_tracing() {
    use std::io::IsTerminal as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The agent runs long and does blocking work (netlink, SQLite): give it worker threads.
    let mut builder = match cli.command {
        Command::Agent(_) | Command::Lab(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ds = cli.datastore.as_deref();
    match cli.command {
        Command::Apply(a) => resources::apply(ds, a, resources::Mode::Apply).await,
        Command::Create(a) => {
            let mode = if a.skip_exists {
                resources::Mode::CreateSkipExists
            } else {
                resources::Mode::Create
            };
            resources::apply(ds, a.files, mode).await
        }
        Command::Replace(a) => resources::apply(ds, a, resources::Mode::Replace).await,
        Command::Delete(a) => resources::delete(ds, a).await,
        Command::Get(a) => resources::get(ds, a).await,
        Command::Label(a) => resources::label(ds, a).await,
        Command::Validate(a) => resources::validate(a),
        Command::Ipam(a) => ipam_cmd::run(ds, a).await,
        Command::Policy(a) => policy_cmd::run(ds, a).await,
        Command::Node(a) => node_cmd::run(a),
        Command::Lab(a) => tortie_lab::run(a, ds).await,
        Command::Agent(a) => {
            init_tracing();
            tortie_agent::run(a.into_config(ds)?).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Selector(SelectorArgs {
            command: SelectorCommand::Check(a),
        }) => selector_cmd::check(a),
        Command::Version => {
            println!("Client Version:    v{}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
    }
}
