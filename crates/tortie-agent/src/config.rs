//! Agent settings: the clap arguments the CLI flattens into `tortie agent`, and the resolved
//! [`AgentConfig`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use tortie_store::DatastoreUrl;

/// Default address of the health and metrics endpoint (Felix's health port).
pub const DEFAULT_HEALTH_LISTEN: &str = "127.0.0.1:9099";

/// Default namespace of the Secrets BGP passwords are read from (calico-node's namespace in
/// an operator install).
pub const DEFAULT_SECRETS_NAMESPACE: &str = "calico-system";

/// Default period of the full route resync.
pub const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(30);

/// `tortie agent` arguments. The datastore comes from the CLI's global `--datastore` (or
/// `TORTIE_DATASTORE`), passed to [`AgentArgs::into_config`].
#[derive(Debug, Clone, clap::Args)]
pub struct AgentArgs {
    /// This node's name (its Node record and block affinities use it).
    #[arg(long, value_name = "NAME")]
    pub node: String,

    /// This node's underlay IPv4 address with prefix, e.g. 198.18.0.11/24. Written to the
    /// Node's spec.bgp.ipv4Address and spec.addresses; other nodes route to it.
    #[arg(long = "node-ip", value_name = "CIDR")]
    pub node_ip: Option<IpNet>,

    /// This node's underlay IPv6 address with prefix (spec.bgp.ipv6Address).
    #[arg(long = "node-ipv6", value_name = "CIDR")]
    pub node_ipv6: Option<IpNet>,

    /// Program routes and sysctls in this network namespace (e.g. /run/netns/NODE) instead
    /// of the agent's own.
    #[arg(long = "host-netns", value_name = "PATH")]
    pub host_netns: Option<PathBuf>,

    /// Address of the /liveness, /readiness and /metrics endpoint.
    #[arg(long = "health-listen", value_name = "ADDR", default_value = DEFAULT_HEALTH_LISTEN)]
    pub health_listen: SocketAddr,

    /// Period of the full route resync (re-reads the kernel and repairs drift).
    #[arg(long = "resync-interval", value_name = "DURATION", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub resync_interval: Duration,

    /// How pods on other nodes are reached: `static` routes from IPAM (Calico without BGP),
    /// or `bgp`, where the agent's BGP speaker learns them from its peers (Calico's BIRD).
    #[arg(long, value_enum, default_value_t = Routing::Static)]
    pub routing: Routing,

    /// Namespace of the Secrets that BGPPeer `password.secretKeyRef` and BGPConfiguration
    /// `nodeMeshPassword.secretKeyRef` name (calico-node reads them from its own namespace).
    #[arg(
        long = "secrets-namespace",
        env = "TORTIE_SECRETS_NAMESPACE",
        value_name = "NAMESPACE",
        default_value = DEFAULT_SECRETS_NAMESPACE
    )]
    pub secrets_namespace: String,
}

/// Where routes to other nodes' pods come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Routing {
    /// From IPAM: a route per remote block via its node.
    #[default]
    Static,
    /// From BGP: the speaker's best routes.
    Bgp,
}

/// Everything the agent needs to run.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node: String,
    pub node_ip: Option<IpNet>,
    pub node_ipv6: Option<IpNet>,
    pub host_netns: Option<PathBuf>,
    pub health_listen: SocketAddr,
    pub datastore: DatastoreUrl,
    pub resync_interval: Duration,
    pub routing: Routing,
    /// Where BGP passwords' Secrets live.
    pub secrets_namespace: String,
    /// Watch the host namespace's interfaces and addresses (for host endpoints given by
    /// `expectedIPs`); the first policy apply waits for the first reading, at most
    /// [`crate::host_interfaces::FIRST_READ_WAIT`].
    pub watch_host_interfaces: bool,
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--node must not be empty")]
    NoNode,
    #[error("--node-ip {value} is not an IPv4 address")]
    NotIpv4 { value: IpNet },
    #[error("--node-ipv6 {value} is not an IPv6 address")]
    NotIpv6 { value: IpNet },
    #[error("--resync-interval must be at least 1s")]
    ResyncTooShort,
    #[error("--secrets-namespace {value:?} is not a namespace name (a DNS-1123 label)")]
    SecretsNamespace { value: String },
    #[error("datastore setting")]
    Datastore(#[from] tortie_store::StoreError),
}

impl AgentConfig {
    /// A config for `node` with defaults and the datastore from the environment.
    pub fn new(node: impl Into<String>, datastore: DatastoreUrl) -> Self {
        Self {
            node: node.into(),
            node_ip: None,
            node_ipv6: None,
            host_netns: None,
            health_listen: DEFAULT_HEALTH_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9099))),
            datastore,
            resync_interval: DEFAULT_RESYNC_INTERVAL,
            routing: Routing::Static,
            secrets_namespace: DEFAULT_SECRETS_NAMESPACE.to_string(),
            watch_host_interfaces: true,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node.trim().is_empty() {
            return Err(ConfigError::NoNode);
        }
        if let Some(v) = self.node_ip
            && !matches!(v, IpNet::V4(_))
        {
            return Err(ConfigError::NotIpv4 { value: v });
        }
        if let Some(v) = self.node_ipv6
            && !matches!(v, IpNet::V6(_))
        {
            return Err(ConfigError::NotIpv6 { value: v });
        }
        if self.resync_interval < Duration::from_secs(1) {
            return Err(ConfigError::ResyncTooShort);
        }
        if !tortie_api::validate::is_dns1123_label(&self.secrets_namespace) {
            return Err(ConfigError::SecretsNamespace {
                value: self.secrets_namespace.clone(),
            });
        }
        Ok(())
    }
}

impl AgentArgs {
    /// Resolves the datastore (flag, then `TORTIE_DATASTORE`, then Calico's variables, then
    /// the default file) and validates.
    pub fn into_config(self, datastore: Option<&str>) -> Result<AgentConfig, ConfigError> {
        let config = AgentConfig {
            node: self.node,
            node_ip: self.node_ip,
            node_ipv6: self.node_ipv6,
            host_netns: self.host_netns,
            health_listen: self.health_listen,
            datastore: DatastoreUrl::from_env_or(datastore)?,
            resync_interval: self.resync_interval,
            routing: self.routing,
            secrets_namespace: self.secrets_namespace,
            watch_host_interfaces: true,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    #[test]
    fn parses_flags_with_defaults() {
        let cli = Cli::try_parse_from([
            "t",
            "--node",
            "n1",
            "--node-ip",
            "198.18.0.11/24",
            "--host-netns",
            "/run/netns/n1",
        ])
        .unwrap();
        assert_eq!(cli.agent.health_listen.to_string(), "127.0.0.1:9099");
        assert_eq!(cli.agent.resync_interval, Duration::from_secs(30));
        let cfg = cli.agent.into_config(Some("memory:")).unwrap();
        assert_eq!(cfg.datastore, DatastoreUrl::Memory);
        assert_eq!(cfg.node_ip.unwrap().to_string(), "198.18.0.11/24");
        assert_eq!(cfg.secrets_namespace, "calico-system");
    }

    #[test]
    fn secrets_namespace_flag_and_check() {
        let cli = Cli::try_parse_from(["t", "--node", "n1", "--secrets-namespace", "kube-system"])
            .unwrap();
        let cfg = cli.agent.into_config(Some("memory:")).unwrap();
        assert_eq!(cfg.secrets_namespace, "kube-system");
        let cli =
            Cli::try_parse_from(["t", "--node", "n1", "--secrets-namespace", "Bad_NS"]).unwrap();
        let err = cli.agent.into_config(Some("memory:")).unwrap_err();
        assert!(err.to_string().contains("\"Bad_NS\""), "{err}");
    }

    #[test]
    fn rejects_wrong_families() {
        let cli = Cli::try_parse_from(["t", "--node", "n1", "--node-ip", "fd00::1/64"]).unwrap();
        let err = cli.agent.into_config(Some("memory:")).unwrap_err();
        assert!(err.to_string().contains("not an IPv4"), "{err}");
        assert!(Cli::try_parse_from(["t"]).is_err(), "--node is required");
    }
}
