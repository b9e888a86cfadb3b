//! A tiny topology for driving `tortie-cni` as a runtime would: a "node" namespace playing
//! the host (`TORTIE_HOST_NETNS`) and pod namespaces, all named `tc<pid>-<tag>-...` and
//! deleted by a guard even on panic. Nothing is configured in the root namespace.

#![allow(dead_code, reason = "each test file uses a different subset")]

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};
use tortie_netlink::NetNs;

pub const CNI_BIN: &str = env!("CARGO_BIN_EXE_tortie-cni");

/// True when running as root. Otherwise prints why the test is skipped, or fails under
/// `CI=true`, where every test must really run.
pub fn is_root() -> bool {
    tortie_netlink::testing::root_or_skip("creating network namespaces")
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip").args(args).output().expect("run ip")
}

fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `ip -j ...` parsed.
pub fn ip_json(args: &[&str]) -> Value {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let out = ip(&full);
    assert!(
        out.status.success(),
        "ip {}: {}",
        full.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.iter().all(u8::is_ascii_whitespace) {
        return json!([]);
    }
    serde_json::from_slice(&out.stdout).expect("ip -j output is JSON")
}

/// The namespaces of one test; deleted on drop.
pub struct Topology {
    pub prefix: String,
    pub node: String,
    names: Vec<String>,
}

impl Topology {
    /// Creates the node namespace `tc<pid>-<tag>-node` with forwarding on, as the node agent
    /// would leave it.
    pub fn new(tag: &str) -> Topology {
        let prefix = format!("tc{}-{tag}", std::process::id());
        let node = format!("{prefix}-node");
        let mut t = Topology {
            prefix,
            node: node.clone(),
            names: Vec::new(),
        };
        t.add_ns(&node);
        for s in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            let out = Command::new("ip")
                .args(["netns", "exec", &node, "sysctl", "-qw", s])
                .output()
                .expect("sysctl");
            assert!(
                out.status.success(),
                "{s}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        t
    }

    fn add_ns(&mut self, name: &str) {
        let _ = ip(&["netns", "del", name]);
        ip_ok(&["netns", "add", name]);
        self.names.push(name.to_string());
        ip_ok(&["-n", name, "link", "set", "lo", "up"]);
    }

    /// Creates a pod namespace `<prefix>-<pod>`; returns its name.
    pub fn pod(&mut self, pod: &str) -> String {
        let name = format!("{}-{pod}", self.prefix);
        self.add_ns(&name);
        name
    }

    /// Deletes a namespace early (the guard ignores it afterwards).
    pub fn delete(&mut self, name: &str) {
        ip_ok(&["netns", "del", name]);
        self.names.retain(|n| n != name);
    }

    pub fn netns_path(name: &str) -> String {
        format!("/run/netns/{name}")
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in self.names.iter().rev() {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

/// One CNI invocation's inputs.
#[derive(Debug, Clone)]
pub struct Call {
    pub env: BTreeMap<String, String>,
    pub conf: Value,
}

impl Call {
    /// A Kubernetes-style call for pod `ns/pod` in `netns`, host side in `node`.
    pub fn k8s(
        command: &str,
        conf: &Value,
        node: &str,
        netns: &str,
        ns: &str,
        pod: &str,
        cid: &str,
    ) -> Call {
        let env = [
            ("CNI_COMMAND", command.to_string()),
            ("CNI_CONTAINERID", cid.to_string()),
            ("CNI_NETNS", Topology::netns_path(netns)),
            ("CNI_IFNAME", "eth0".to_string()),
            (
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={pod};K8S_POD_INFRA_CONTAINER_ID={cid}"),
            ),
            ("CNI_PATH", "/usr/lib/cni".to_string()),
            ("TORTIE_HOST_NETNS", Topology::netns_path(node)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Call {
            env,
            conf: conf.clone(),
        }
    }

    pub fn command(mut self, c: &str) -> Call {
        self.env.insert("CNI_COMMAND".into(), c.into());
        self
    }

    /// Runs the real binary with exactly this environment and stdin.
    pub fn run(&self) -> (bool, Value, String) {
        run_raw(&self.env, &self.conf.to_string())
    }
}

/// Runs `tortie-cni` with `env` (and nothing else) and `stdin`; returns success, stdout JSON
/// (Null when empty) and stderr.
pub fn run_raw(env: &BTreeMap<String, String>, stdin: &str) -> (bool, Value, String) {
    crate::support::run_plugin(CNI_BIN, env, stdin)
}

/// A Calico-style network config (only `type` differs from Calico's).
pub fn netconf(datastore: &str, node: &str, dual_stack: bool) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "k8s-pod-network",
        "type": "tortie-cni",
        "log_level": "info",
        "datastore": datastore,
        "nodename": node,
        "mtu": 1450,
        "ipam": {"type": "calico-ipam", "assign_ipv4": "true", "assign_ipv6": if dual_stack { "true" } else { "false" }},
        "policy": {"type": "k8s"},
        "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"}
    })
}

/// Connects over TCP from `from` to `to_ip:port` where `to` listens; both sockets are created
/// inside their namespaces. Bounded by a 2 s timeout.
pub fn tcp_reaches(from: &str, to: &str, to_ip: IpAddr, port: u16) -> Result<(), String> {
    let to_ns = NetNs::named(to).map_err(|e| e.to_string())?;
    let from_ns = NetNs::named(from).map_err(|e| e.to_string())?;
    let addr = SocketAddr::new(to_ip, port);
    let listener: TcpListener = to_ns
        .run(|| TcpListener::bind(addr))
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("bind {addr} in {to}: {e}"))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let server = std::thread::spawn(move || -> Result<Vec<u8>, String> {
        use std::io::Read;
        // Bounded accept: 3 s in 10 ms steps.
        let mut stream = None;
        for _ in 0..300 {
            match listener.accept() {
                Ok((s, _)) => {
                    stream = Some(s);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        let mut s = stream.ok_or("no connection arrived within 3 s")?;
        s.set_nonblocking(false).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).map_err(|e| e.to_string())?;
        Ok(buf.to_vec())
    });
    let sent = from_ns
        .run(|| -> Result<(), String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .map_err(|e| format!("connect {addr} from {from}: {e}"))?;
            s.write_all(b"hello").map_err(|e| e.to_string())
        })
        .map_err(|e| e.to_string())?;
    let got = server
        .join()
        .map_err(|_| "server thread panicked".to_string())?;
    sent?;
    match got? {
        b if b == b"hello" => Ok(()),
        b => Err(format!("got {b:?}")),
    }
}

/// Link names in a namespace.
pub fn links(netns: &str) -> Vec<String> {
    ip_json(&["-n", netns, "link", "show"])
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect()
}

/// Routes with protocol 80 (tortie's workload routes) in a namespace, as `dst dev`.
pub fn workload_routes(netns: &str) -> Vec<String> {
    let mut out = Vec::new();
    for fam in ["-4", "-6"] {
        for r in ip_json(&["-n", netns, fam, "route", "show", "proto", "80"])
            .as_array()
            .into_iter()
            .flatten()
        {
            out.push(format!(
                "{} {}",
                r["dst"].as_str().unwrap_or(""),
                r["dev"].as_str().unwrap_or("")
            ));
        }
    }
    out
}
