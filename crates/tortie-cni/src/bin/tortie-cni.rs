//! `tortie-cni`: a CNI interface plugin (spec 1.0.0 and 1.1.0: ADD, DEL, CHECK, VERSION, GC,
//! STATUS) that wires pods the way Calico's `calico` plugin does: a `cali…` veth in the host
//! namespace with MAC `ee:ee:ee:ee:ee:ee` and proxy ARP, the pod's `eth0` with /32 and /128
//! addresses and a default route via 169.254.1.1 (IPv6: fe80::ecee:eeff:feee:eeee), a host
//! route per address, and a WorkloadEndpoint in tortie's datastore.
//!
//! Configuration is Calico's conflist entry; a Calico config works with only `"type"`
//! changed to `tortie-cni`. Keys read: `cniVersion`, `name`, `type`, `nodename`,
//! `nodename_file`, `nodename_file_optional`, `mtu`, `datastore_type` (`etcdv3`),
//! `etcd_endpoints`, `datastore` (tortie URL: `file:/path/store.db` or `etcd://h:p,...`),
//! `ipam` (`type` = `tortie-ipam` or `calico-ipam`, both served in-process; `assign_ipv4`,
//! `assign_ipv6`, `ipv4_pools`, `ipv6_pools`, `datastore`), `log_level`, `log_file_path`,
//! `runtimeConfig.ips`, `args.cni.ips`, `args.cni.labels`, `prevResult`,
//! `cni.dev/valid-attachments`. `policy`, `kubernetes` and other Calico keys are accepted and
//! ignored.
//!
//! Environment: the CNI variables (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`,
//! `CNI_IFNAME`, `CNI_ARGS` with `K8S_POD_NAMESPACE`/`K8S_POD_NAME`/`IP`, `CNI_PATH`), and:
//! - `TORTIE_HOST_NETNS=/run/netns/<name>`: the namespace that plays the host. The host end
//!   of the veth, the host routes and the host sysctls go there instead of the plugin's own
//!   namespace. Used by `tortie lab`, whose nodes are namespaces while every process runs in
//!   the root namespace.
//! - `TORTIE_DATASTORE`: datastore URL when the config names none.
//! - `TORTIE_NODENAME`: node name when the config and nodename file give none.
//!
//! Labels of the WorkloadEndpoint come from the Pod record in the datastore
//! (`/calico/resources/v3/core/pods/<ns>/<name>`); without one, from `args.cni.labels`
//! (`[{"key": "app", "value": "web"}]`, the CNI conventions' format).
//!
//! Output: the result or a CNI error as JSON on stdout; logs on stderr or `log_file_path`
//! (never the config, which may hold credentials). Exit status 0 on success, 1 on error.

use std::io::Write;
use std::process::ExitCode;

use tortie_cni::net_plugin;
use tortie_cni::spec::{CniError, code};

fn main() -> ExitCode {
    let get = |k: &str| std::env::var(k).ok();
    let log = Log::from_stdin_hint();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            CniError::new(code::INTERNAL, "cannot start the runtime").with_details(e.to_string())
        })
        .and_then(|rt| rt.block_on(net_plugin::invoke(&get, &mut log.stdin())));
    let command = get("CNI_COMMAND").unwrap_or_default();
    let container = get("CNI_CONTAINERID").unwrap_or_default();
    match result {
        Ok(out) => {
            log.line("info", &format!("{command} {container}: ok"));
            if let Some(out) = out {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            log.line(
                "error",
                &format!("{command} {container}: code {}: {e}", e.code),
            );
            println!("{}", serde_json::to_string(&e).unwrap_or_default());
            ExitCode::FAILURE
        }
    }
}

/// Where log lines go: `log_file_path` from the config (read ahead of parsing, so logging
/// works even when the rest of the config is bad), else stderr. `log_level` `error` or
/// `none`/`off` keeps successes quiet.
struct Log {
    stdin: Vec<u8>,
    file: Option<String>,
    quiet_success: bool,
}

impl Log {
    fn from_stdin_hint() -> Log {
        let mut stdin = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut stdin);
        let v: Option<serde_json::Value> = serde_json::from_slice(&stdin).ok();
        let field = |k: &str| {
            v.as_ref()
                .and_then(|v| v.get(k))
                .and_then(|x| x.as_str())
                .map(str::to_string)
        };
        let level = field("log_level").unwrap_or_default().to_ascii_lowercase();
        Log {
            file: field("log_file_path").filter(|p| !p.is_empty()),
            quiet_success: matches!(level.as_str(), "error" | "fatal" | "panic" | "none" | "off"),
            stdin,
        }
    }

    fn stdin(&self) -> &[u8] {
        &self.stdin
    }

    fn line(&self, level: &str, msg: &str) {
        if level == "info" && self.quiet_success {
            return;
        }
        let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now());
        let line = format!("{ts} [{level}] tortie-cni: {msg}\n");
        if let Some(path) = &self.file {
            if let Some(dir) = std::path::Path::new(path).parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| f.write_all(line.as_bytes()));
            if written.is_ok() {
                return;
            }
        }
        eprint!("{line}");
    }
}
