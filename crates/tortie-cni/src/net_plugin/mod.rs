//! The `tortie-cni` interface plugin: wires pods the way Calico's `calico` plugin does and
//! records them as WorkloadEndpoints.
//!
//! One invocation is resolved into a [`Context`] (environment, config, node, namespaces)
//! before any side effect; then exactly one of ADD ([`add`]), DEL ([`del`]), CHECK, GC or
//! STATUS ([`check`]) runs. Invariants:
//! - ADD is idempotent (same addresses, veth re-created, endpoint rewritten) and a failed ADD
//!   is followed by a full DEL of the attachment, so nothing leaks.
//! - DEL runs every step whatever fails, treats "already gone" as success and reports every
//!   failure at once.
//! - Addresses come from tortie's IPAM in-process (`ipam.type` `tortie-ipam` or
//!   `calico-ipam`); any other IPAM type is CNI error 7.

pub mod add;
pub mod check;
pub mod del;
pub mod result;

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tortie_netlink::NetNs;
use tortie_store::Store;

use crate::config::NetConf;
use crate::env::CniEnv;
use crate::ipam_plugin::Invocation;
use crate::naming::host_veth_name;
use crate::spec::{CniError, Command, VersionInfo, check_version, code};
use crate::wiring::DEFAULT_MTU;

/// IPAM types served in-process by tortie's IPAM.
pub const IPAM_TYPES: [&str; 2] = ["tortie-ipam", "calico-ipam"];
/// Environment variable naming the namespace that plays the host (for labs whose nodes are
/// namespaces); unset means the plugin's own namespace.
pub const HOST_NETNS_ENV: &str = "TORTIE_HOST_NETNS";
/// Where Felix writes the detected pod MTU; read when the config has no `mtu`.
pub const MTU_FILE: &str = "/var/lib/calico/mtu";
/// How long the plugin waits for the datastore to connect.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for one command's work (ADD rollback gets the same again).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything one invocation needs, resolved before any side effect.
#[derive(Debug)]
pub struct Context {
    pub inv: Invocation,
    /// The host namespace; `None` only for DEL/GC when `TORTIE_HOST_NETNS` no longer exists.
    pub host: Option<NetNs>,
    /// The pod namespace; `None` for DEL when `CNI_NETNS` is unset or gone.
    pub pod: Option<NetNs>,
    pub mtu: u32,
}

impl Context {
    /// `(namespace, pod)` from `K8S_POD_NAMESPACE`/`K8S_POD_NAME`, when both are set.
    pub fn pod(&self) -> Option<(&str, &str)> {
        self.inv.env.pod_namespace().zip(self.inv.env.pod_name())
    }

    /// The host-side veth name for this attachment.
    pub fn host_veth(&self) -> String {
        host_veth_name(self.pod(), &self.inv.env.container_id)
    }

    pub fn version(&self) -> &str {
        &self.inv.conf.cni_version
    }
}

/// Rejects configs this plugin cannot serve: a missing or unknown `ipam.type`.
pub fn check_ipam_type(conf: &NetConf) -> Result<(), CniError> {
    if conf.ipam.type_.is_empty() {
        return Err(CniError::new(code::INVALID_CONFIG, "ipam.type is required")
            .with_details(format!("supported: {}", IPAM_TYPES.join(", "))));
    }
    if !IPAM_TYPES.contains(&conf.ipam.type_.as_str()) {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!("unknown IPAM type {:?}", conf.ipam.type_),
        )
        .with_details(format!("supported: {}", IPAM_TYPES.join(", "))));
    }
    Ok(())
}

/// The MTU: config `mtu`, else Felix's MTU file, else 1500.
pub fn mtu(conf: &NetConf, mtu_file: &str) -> Result<u32, CniError> {
    if let Some(m) = conf.mtu.filter(|m| *m > 0) {
        if !(68..=65535).contains(&m) {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!("mtu {m} is out of range 68-65535"),
            ));
        }
        return Ok(m);
    }
    Ok(std::fs::read_to_string(mtu_file)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|m| (68..=65535).contains(m))
        .unwrap_or(DEFAULT_MTU))
}

fn netns_error(var: &str, e: tortie_netlink::Error) -> CniError {
    let c = match &e {
        tortie_netlink::Error::OpenNetns { .. } | tortie_netlink::Error::NotANetns { .. } => {
            code::INVALID_ENV
        }
        _ => code::IO,
    };
    CniError::new(c, format!("{var}: {e}")).with_details(crate::wiring::error_chain(&e))
}

/// Opens the host namespace: `TORTIE_HOST_NETNS` or our own. For DEL and GC a vanished
/// host namespace is `None` (everything in it is gone).
pub fn open_host(
    get: &dyn Fn(&str) -> Option<String>,
    cmd: Command,
) -> Result<Option<NetNs>, CniError> {
    match get(HOST_NETNS_ENV).filter(|s| !s.is_empty()) {
        Some(path) => match NetNs::open(&path) {
            Ok(ns) => Ok(Some(ns)),
            Err(_) if matches!(cmd, Command::Del | Command::Gc) => Ok(None),
            Err(e) => Err(netns_error(HOST_NETNS_ENV, e)),
        },
        None => NetNs::current()
            .map(Some)
            .map_err(|e| netns_error("the plugin's own network namespace", e)),
    }
}

/// Opens `CNI_NETNS`. Required for ADD and CHECK; for DEL a missing one is `None`.
pub fn open_pod(env: &CniEnv) -> Result<Option<NetNs>, CniError> {
    match env.command {
        Command::Add | Command::Check => NetNs::open(&env.netns)
            .map(Some)
            .map_err(|e| netns_error("CNI_NETNS", e)),
        Command::Del if !env.netns.is_empty() => Ok(NetNs::open(&env.netns).ok()),
        _ => Ok(None),
    }
}

/// Connects to the configured datastore; unreachable is "try again later" (11).
pub async fn connect(
    conf: &NetConf,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Arc<dyn Store>, CniError> {
    let url = conf.datastore_url(get)?;
    let url = tortie_store::DatastoreUrl::parse(&url)
        .map_err(|e| CniError::new(code::INVALID_CONFIG, e.to_string()))?;
    match tokio::time::timeout(CONNECT_TIMEOUT, tortie_store::connect(&url)).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!("cannot reach datastore {url}"),
        )
        .with_details(e.to_string())),
        Err(_) => Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!(
                "datastore {url} did not answer within {}s",
                CONNECT_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// One whole invocation: environment from `get`, config from `stdin`. Returns the JSON to
/// print on success (`None` when the command prints nothing).
pub async fn invoke(
    get: &dyn Fn(&str) -> Option<String>,
    stdin: &mut dyn Read,
) -> Result<Option<Value>, CniError> {
    let env = CniEnv::from_lookup(get)?;
    let mut buf = Vec::new();
    stdin.read_to_end(&mut buf).map_err(|e| {
        CniError::new(code::IO, "cannot read the network configuration from stdin")
            .with_details(e.to_string())
    })?;
    if env.command == Command::Version {
        return Ok(Some(
            serde_json::to_value(VersionInfo::current()).unwrap_or_default(),
        ));
    }
    let conf = NetConf::parse(&buf)?;
    let version = conf.cni_version.clone();
    let tag = |e: CniError| e.version(&version);
    check_version(&conf.cni_version).map_err(tag)?;
    check_ipam_type(&conf).map_err(tag)?;
    let mtu = mtu(&conf, MTU_FILE).map_err(tag)?;
    // Namespaces first: a bad path fails before anything is allocated.
    let host = open_host(get, env.command).map_err(tag)?;
    let pod = open_pod(&env).map_err(tag)?;
    let node = conf.node_name(get).map_err(tag)?;
    let store = connect(&conf, get).await.map_err(tag)?;
    let ctx = Context {
        inv: Invocation { env, conf, node },
        host,
        pod,
        mtu,
    };
    run(&ctx, store).await.map_err(tag)
}

/// Runs the command of an assembled context.
pub async fn run(ctx: &Context, store: Arc<dyn Store>) -> Result<Option<Value>, CniError> {
    match ctx.inv.env.command {
        Command::Add => add::add(ctx, store).await.map(Some),
        Command::Del => del::del(ctx, store).await.map(|()| None),
        Command::Check => check::check(ctx, store).await.map(|()| None),
        Command::Gc => check::gc(ctx, store).await.map(|()| None),
        Command::Status => crate::ipam_plugin::status(store.as_ref())
            .await
            .map(|()| None),
        Command::Version => Ok(Some(
            serde_json::to_value(VersionInfo::current()).unwrap_or_default(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(s: &str) -> NetConf {
        NetConf::parse(s.as_bytes()).expect("conf")
    }

    #[test]
    fn ipam_types() {
        assert!(check_ipam_type(&conf(r#"{"ipam":{"type":"calico-ipam"}}"#)).is_ok());
        assert!(check_ipam_type(&conf(r#"{"ipam":{"type":"tortie-ipam"}}"#)).is_ok());
        let e = check_ipam_type(&conf(r#"{"ipam":{"type":"host-local"}}"#)).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(e.msg.contains("host-local"), "{e:?}");
        assert_eq!(
            check_ipam_type(&conf("{}")).unwrap_err().code,
            code::INVALID_CONFIG
        );
    }

    #[test]
    fn mtu_sources() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("mtu");
        let missing = f.to_str().expect("utf8");
        assert_eq!(mtu(&conf(r#"{"mtu":1450}"#), missing).expect("mtu"), 1450);
        assert_eq!(mtu(&conf("{}"), missing).expect("mtu"), 1500);
        std::fs::write(&f, "1410\n").expect("write");
        assert_eq!(mtu(&conf("{}"), missing).expect("mtu"), 1410);
        assert_eq!(mtu(&conf(r#"{"mtu":0}"#), missing).expect("mtu"), 1410);
        assert_eq!(
            mtu(&conf(r#"{"mtu":20}"#), missing).unwrap_err().code,
            code::INVALID_CONFIG
        );
    }

    #[test]
    fn bad_netns_paths_are_named() {
        let env = CniEnv::from_lookup(|k| {
            Some(
                match k {
                    "CNI_COMMAND" => "ADD",
                    "CNI_CONTAINERID" => "c1",
                    "CNI_NETNS" => "/run/netns/definitely-not-there",
                    "CNI_IFNAME" => "eth0",
                    _ => return None,
                }
                .to_string(),
            )
        })
        .expect("env");
        let e = open_pod(&env).unwrap_err();
        assert_eq!(e.code, code::INVALID_ENV);
        assert!(e.msg.contains("/run/netns/definitely-not-there"), "{e:?}");
        let get = |k: &str| (k == HOST_NETNS_ENV).then(|| "/run/netns/nope".to_string());
        assert_eq!(
            open_host(&get, Command::Add).unwrap_err().code,
            code::INVALID_ENV
        );
        assert!(
            open_host(&get, Command::Del)
                .expect("del tolerates")
                .is_none()
        );
    }
}
