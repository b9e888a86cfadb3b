//! End to end, as root, with a real container runtime: Debian's `podman` (runc, CNI backend)
//! starts two containers on a dual-stack `tortie-cni` network (cniVersion 1.0.0) on node n1 of
//! a 3-node lab. Over IPv4 and IPv6 the containers reach each other, reach a lab pod on node
//! n2, and that pod reaches them back. Their WorkloadEndpoints carry their addresses and MACs,
//! and `podman rm` frees everything: the endpoints, the addresses (`tortie ipam check` stays
//! clean), the host veths and routes, the runtime's netns and CNI cache files, the processes.
//!
//! Containment (`shared/design/test-network.md`): podman runs with its network namespace set
//! to the lab node's (`nsenter --net=/run/netns/<lab>-n1`), so the plugin's "host side" is the
//! node and nothing is added to the machine's root namespace. (`ip netns exec` cannot be used:
//! it remounts /sys, which hides the cgroup mounts from runc: "no cgroup mount found in
//! mountinfo".) Podman reads only a private containers.conf and storage.conf (`CONTAINERS_CONF`,
//! `CONTAINERS_STORAGE_CONF`) pointing its storage, run, tmp and CNI config directories into a
//! temp dir. Containers run from a busybox rootfs directory (`--rootfs`), so no image is pulled
//! or imported (an import would also write podman's blob cache under /var/lib/containers).
//! The only path podman writes outside the temp dir is libcni's fixed cache,
//! /var/lib/cni/results/<network>-<container>-<ifname>, which DEL removes and the guard
//! double-checks.
//!
//! Not root: prints why and passes. With `CI=true` a missing prerequisite fails instead.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tortie_netlink::NetNs;
use tortie_netlink::testing::in_ci as ci;
use tortie_netlink::testing::root_or_skip;

const BIN: &str = env!("CARGO_BIN_EXE_tortie");
const BUSYBOX: &str = "/bin/busybox";
const CNI_CACHE: &str = "/var/lib/cni/results";
/// Every podman call is ended by `timeout` (by PID) after this long.
const PODMAN_TIMEOUT_S: &str = "90";
const HTTP_PORT: u16 = 8080;

/// podman, nsenter, timeout and a static busybox; missing ones skip, or fail under CI.
fn tools_or_skip(what: &str) -> bool {
    let cni = Path::new(BIN).with_file_name("tortie-cni");
    assert!(
        cni.exists(),
        "{} is missing: build it first (cargo build --workspace --bins)",
        cni.display()
    );
    let mut missing = Vec::new();
    for (tool, arg) in [
        ("podman", "--version"),
        ("nsenter", "--version"),
        ("timeout", "--version"),
    ] {
        let ok = Command::new(tool)
            .arg(arg)
            .stdin(Stdio::null())
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            missing.push(tool.to_string());
        }
    }
    if !Path::new(BUSYBOX).exists() {
        missing.push(format!("{BUSYBOX} (busybox-static)"));
    }
    if missing.is_empty() {
        return true;
    }
    assert!(
        !ci(),
        "{what}: missing {missing:?} (scripts/install-deps.sh), and CI=true forbids skipping"
    );
    eprintln!("skipping {what}: missing {missing:?} (run scripts/install-deps.sh)");
    false
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A lab that is torn down on drop, even when the test fails.
struct Lab {
    name: String,
    datastore: String,
}

impl Lab {
    fn tortie(name: &str, datastore: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("TORTIE_LAB", name)
            .env_remove("TORTIE_DATASTORE");
        if let Some(ds) = datastore {
            cmd.env("TORTIE_DATASTORE", ds);
        }
        cmd.stdin(Stdio::null()).output().expect("run tortie")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = Lab::tortie(&self.name, Some(&self.datastore), args);
        assert!(
            out.status.success(),
            "tortie {args:?} failed:\n{}",
            text(&out)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    fn up(name: &str) -> Lab {
        let _ = Lab::tortie(name, None, &["lab", "down"]);
        // From here on the guard exists, so a failed `up` is still torn down.
        let mut lab = Lab {
            name: name.to_string(),
            datastore: String::new(),
        };
        let out = Lab::tortie(
            name,
            None,
            &["lab", "up", "--nodes", "3", "--datastore", "embedded"],
        );
        assert!(out.status.success(), "lab up failed:\n{}", text(&out));
        let env = Lab::tortie(name, None, &["lab", "env"]);
        lab.datastore = String::from_utf8_lossy(&env.stdout)
            .split_whitespace()
            .find_map(|w| w.strip_prefix("TORTIE_DATASTORE="))
            .map(|s| s.trim_matches(|c| c == '"' || c == '\'').to_string())
            .expect("lab env prints TORTIE_DATASTORE");
        lab
    }

    fn state(&self) -> Value {
        let p = format!("/run/tortie/lab/{}/state.json", self.name);
        serde_json::from_str(&std::fs::read_to_string(&p).expect("state.json")).expect("state json")
    }

    fn node_netns(&self, node: &str) -> String {
        self.state()["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .find(|n| n["name"] == node)
            .and_then(|n| n["netns"].as_str())
            .expect("node netns")
            .to_string()
    }

    /// Workload endpoints whose `spec.containerID` is `id`.
    fn weps_of(&self, id: &str) -> Vec<Value> {
        let list: Value =
            serde_json::from_str(&self.ok(&["get", "wep", "-A", "-o", "json"])).expect("wep json");
        list["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|w| w["spec"]["containerID"] == id)
            .collect()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = Lab::tortie(&self.name, None, &["lab", "down"]);
    }
}

/// The hard limit `/proc/self/limits` gives for `what` ("Max open files"), if finite.
fn hard_limit(what: &str) -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with(what))?;
    line[what.len()..].split_whitespace().nth(1)?.parse().ok()
}

/// Mount points at or below `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.display().to_string();
    let mut found: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .map(str::to_string)
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.len()));
    found
}

/// Whether `pid` is a live (non-zombie) process.
fn pid_running(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|st| st != "Z"))
        })
        .unwrap_or(false)
}

fn cni_cache_files(network: &str) -> Vec<PathBuf> {
    std::fs::read_dir(CNI_CACHE)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("{network}-"))
                })
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// One podman "installation" in a temp dir, running in a lab node's network namespace.
/// Dropping it removes every container (CNI DEL runs), kills leftover processes by PID,
/// unmounts what podman left under the dir, removes the network's CNI cache files, then
/// deletes the dir (including the CNI conflist and containers.conf written here).
struct Podman {
    dir: tempfile::TempDir,
    node_netns: String,
    network: String,
    /// conmon and container init PIDs, ended by PID if `podman rm` fails.
    pids: Vec<u64>,
}

struct Container {
    name: String,
    id: String,
    ip: String,
    ip6: String,
    mac: String,
    sandbox: String,
}

impl Podman {
    fn new(lab: &Lab, node: &str) -> Podman {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-podman-", lab.name))
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        let network = format!("tortie-{}", lab.name);
        let plugin_dir = Path::new(BIN).parent().expect("bin dir");
        for sub in ["cni", "root", "runroot", "tmp"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let nofile = hard_limit("Max open files").unwrap_or(1024).min(1024);
        let nproc = hard_limit("Max processes").unwrap_or(4096).min(4096);
        // Podman's defaults (nofile/nproc in the millions) exceed the hard limits of some
        // machines, which runc then fails to set ("error setting rlimits").
        let conf = format!(
            r#"[containers]
default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]

[network]
network_backend = "cni"
cni_plugin_dirs = ["{plugins}"]
network_config_dir = "{d}/cni"
default_network = "{network}"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "none"
tmp_dir = "{d}/tmp"
static_dir = "{d}/root/libpod"
volume_path = "{d}/root/volumes"
"#,
            plugins = plugin_dir.display(),
            d = d.display(),
        );
        std::fs::write(d.join("containers.conf"), conf).expect("containers.conf");
        let storage = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{d}/root\"\nrunroot = \"{d}/runroot\"\n",
            d = d.display()
        );
        std::fs::write(d.join("storage.conf"), storage).expect("storage.conf");
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [{
                "type": "tortie-cni",
                "nodename": node,
                "datastore": lab.datastore,
                "mtu": 1500,
                "ipam": {"type": "tortie-ipam", "assign_ipv4": "true", "assign_ipv6": "true"},
            }],
        });
        std::fs::write(
            d.join("cni").join(format!("{network}.conflist")),
            serde_json::to_vec_pretty(&conflist).expect("json"),
        )
        .expect("conflist");
        Podman {
            node_netns: lab.node_netns(node),
            network,
            pids: Vec::new(),
            dir,
        }
    }

    /// A busybox root filesystem for one container, serving `hello from NAME` over HTTP.
    fn rootfs(&self, name: &str) -> PathBuf {
        let root = self.dir.path().join(format!("rootfs-{name}"));
        for sub in ["bin", "etc", "proc", "sys", "dev", "tmp", "www"] {
            std::fs::create_dir_all(root.join(sub)).expect("mkdir rootfs");
        }
        std::fs::copy(BUSYBOX, root.join("bin/busybox")).expect("copy busybox");
        for applet in ["sh", "nc", "httpd", "sleep", "printf", "cat"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).expect("symlink");
        }
        std::fs::write(root.join("www/index.html"), format!("hello from {name}\n")).expect("www");
        root
    }

    fn run(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        Command::new("timeout")
            .args(["--kill-after=5", PODMAN_TIMEOUT_S, "nsenter"])
            .arg(format!("--net=/run/netns/{}", self.node_netns))
            .arg("podman")
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", d.join("storage.conf"))
            .stdin(Stdio::null())
            .output()
            .expect("run podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed:\n{}",
            text(&out)
        );
        String::from_utf8(out.stdout).expect("utf8")
    }

    /// Starts `name` on the tortie network running busybox httpd, and reads back its address.
    fn start(&mut self, name: &str) -> Container {
        let rootfs = self.rootfs(name);
        let port = HTTP_PORT.to_string();
        let id = self
            .ok(&[
                "run",
                "-d",
                "--name",
                name,
                "--network",
                &self.network,
                "--rootfs",
                rootfs.to_str().expect("path"),
                "httpd",
                "-f",
                "-p",
                &port,
                "-h",
                "/www",
            ])
            .trim()
            .to_string();
        let inspect: Value =
            serde_json::from_str(&self.ok(&["inspect", name])).expect("inspect json");
        let c = &inspect[0];
        for key in ["/State/ConmonPid", "/State/Pid"] {
            let pid = c.pointer(key).and_then(Value::as_u64).filter(|p| *p > 0);
            // Recorded so cleanup can check them; a missing one would make that check vacuous.
            self.pids
                .push(pid.unwrap_or_else(|| panic!("{name}: inspect has no {key}: {c}")));
        }
        assert_eq!(c["Id"], id.as_str(), "{c}");
        assert_eq!(c["State"]["Status"], "running", "{c}");
        let net = &c["NetworkSettings"]["Networks"][&self.network];
        let field = |k: &str| net[k].as_str().unwrap_or_default().to_string();
        let (ip, ip6, mac) = (
            field("IPAddress"),
            field("GlobalIPv6Address"),
            field("MacAddress"),
        );
        assert!(
            ip.starts_with("10.244."),
            "{name} got no IPv4 pool address: {c}"
        );
        assert!(
            ip6.starts_with("fd00:10:244:"),
            "{name} got no IPv6 pool address: {c}"
        );
        let sandbox = c["NetworkSettings"]["SandboxKey"]
            .as_str()
            .expect("SandboxKey")
            .to_string();
        assert!(
            !sandbox.is_empty() && std::path::Path::new(&sandbox).exists(),
            "{name}: no network namespace at SandboxKey {sandbox:?}"
        );
        Container {
            name: name.to_string(),
            id,
            ip,
            ip6,
            mac,
            sandbox,
        }
    }

    /// Runs `sh -c script` in a container.
    fn exec(&self, c: &Container, script: &str) -> Output {
        self.run(&["exec", &c.name, "sh", "-c", script])
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--force", "--time", "0", "--all"]);
        for pid in &self.pids {
            if pid_running(*pid) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            }
        }
        for m in mounts_under(self.dir.path()) {
            let _ = Command::new("umount").args(["-l", &m]).status();
        }
        for f in cni_cache_files(&self.network) {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Tries `f` until it succeeds, at most `attempts` times, 300 ms apart.
fn retry(what: &str, attempts: usize, mut f: impl FnMut() -> Result<String, String>) -> String {
    let mut last = String::new();
    for i in 0..attempts {
        match f() {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        if i + 1 < attempts {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    panic!("{what}: no success after {attempts} attempts; last:\n{last}");
}

/// From a container, an HTTP GET (busybox nc, 3 s timeout) must return `expect`.
fn http_from(p: &Podman, from: &Container, ip: &str, port: u16, expect: &str) {
    let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} {port}");
    retry(&format!("{} -> {ip}:{port}", from.name), 10, || {
        let out = p.exec(from, &script);
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && body.contains(expect) {
            Ok(body)
        } else {
            Err(text(&out))
        }
    });
}

/// From a lab pod's namespace, an HTTP GET to a container must return `expect`.
fn http_from_pod(pod_netns: &str, ip: &str, port: u16, expect: &str) {
    let ns = NetNs::named(pod_netns).expect("open pod netns");
    let addr = SocketAddr::new(ip.parse::<IpAddr>().expect("ip"), port);
    retry(&format!("{pod_netns} -> {addr}"), 10, || {
        ns.run(|| -> std::io::Result<String> {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
            s.set_read_timeout(Some(Duration::from_secs(3)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut body = String::new();
            s.read_to_string(&mut body)?;
            Ok(body)
        })
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
        .and_then(|b| if b.contains(expect) { Ok(b) } else { Err(b) })
    });
}

fn ip_cmd(args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ip");
    assert!(out.status.success(), "ip {args:?}:\n{}", text(&out));
    String::from_utf8(out.stdout).expect("utf8")
}

#[test]
fn podman_containers_on_a_tortie_cni_network() {
    let what = "podman_containers_on_a_tortie_cni_network";
    if !root_or_skip(what) || !tools_or_skip(what) {
        return;
    }
    let started = Instant::now();
    let lab = Lab::up(&format!("tp{}", std::process::id() % 100_000));
    let pod_line = lab.ok(&[
        "lab", "pod", "add", "x/web", "--node", "n2", "--serve", "80/tcp",
    ]);
    let state = lab.state();
    let pod = &state["pods"]["x/web"];
    let pod_ips: Vec<String> = pod["ips"]
        .as_array()
        .expect("pod ips")
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    let pod_netns = pod["netns"].as_str().expect("pod netns").to_string();
    assert!(
        pod_ips.len() == 2
            && pod_ips[0].starts_with("10.244.")
            && pod_ips[1].starts_with("fd00:10:244:"),
        "{pod_line}"
    );

    // Declared after the lab, so it is dropped (containers removed) before the lab goes down.
    let mut podman = Podman::new(&lab, "n1");
    let backend = podman.ok(&["info", "--format", "{{.Host.NetworkBackend}}"]);
    assert_eq!(backend.trim(), "cni", "podman must use its CNI backend");
    let nets = podman.ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert!(
        nets.lines()
            .any(|l| l == format!("{} tortie-cni", podman.network)),
        "{nets}"
    );

    let a = podman.start("a");
    let b = podman.start("b");
    assert_ne!(a.ip, b.ip);
    assert_ne!(a.ip6, b.ip6);
    let node_ns = podman.node_netns.clone();

    // Each container has a WorkloadEndpoint on n1 with its addresses, MAC and host veth; the
    // host side (veth, /32 and /128 routes) is in the node's namespace, not the machine's.
    let root_links = ip_cmd(&["-o", "link"]);
    let node_routes =
        ip_cmd(&["-n", &node_ns, "route"]) + &ip_cmd(&["-n", &node_ns, "-6", "route"]);
    let node_links = ip_cmd(&["-n", &node_ns, "-o", "link"]);
    let mut host_veths = Vec::new();
    for c in [&a, &b] {
        let weps = lab.weps_of(&c.id);
        assert_eq!(weps.len(), 1, "{} endpoints: {weps:?}", c.name);
        let spec = &weps[0]["spec"];
        assert_eq!(spec["node"], "n1", "{spec}");
        assert_eq!(spec["orchestrator"], "cni", "{spec}");
        assert_eq!(spec["endpoint"], "eth0", "{spec}");
        assert_eq!(
            spec["ipNetworks"],
            serde_json::json!([format!("{}/32", c.ip), format!("{}/128", c.ip6)]),
            "{spec}"
        );
        assert_eq!(spec["mac"], c.mac.as_str(), "{spec}");
        let veth = spec["interfaceName"].as_str().expect("iface").to_string();
        assert!(node_links.contains(&format!(": {veth}@")), "{node_links}");
        assert!(
            !root_links.contains(&veth),
            "host veth leaked to the root namespace"
        );
        for ip in [&c.ip, &c.ip6] {
            assert!(
                node_routes
                    .lines()
                    .any(|l| l.starts_with(&format!("{ip} dev {veth} "))),
                "no route to {ip} via {veth}:\n{node_routes}"
            );
        }
        // Podman ran the plugin with the conflist's version and cached its result.
        let cache = Path::new(CNI_CACHE).join(format!("{}-{}-eth0", podman.network, c.id));
        let cached: Value = serde_json::from_str(
            &std::fs::read_to_string(&cache).unwrap_or_else(|e| panic!("{cache:?}: {e}")),
        )
        .expect("cache json");
        assert_eq!(cached["result"]["cniVersion"], "1.0.0", "{cached}");
        host_veths.push(veth);
    }

    // Outside Kubernetes the CNI plugin gives the network a profile, as Calico's does: its
    // members reach each other and anything else is denied until a policy allows it.
    let profile = lab.ok(&["get", "profile", &podman.network, "-o", "json"]);
    assert!(
        profile.contains(&format!("has({})", podman.network)),
        "network profile: {profile}"
    );
    let first = a.ip.parse::<IpAddr>().expect("ip");
    let denied = NetNs::named(&pod_netns)
        .expect("pod netns")
        .run(move || {
            TcpStream::connect_timeout(&SocketAddr::new(first, HTTP_PORT), Duration::from_secs(1))
                .is_ok()
        })
        .expect("run in pod netns");
    assert!(
        !denied,
        "a lab pod reached a container before any policy allowed it"
    );
    let allow = format!(
        "apiVersion: projectcalico.org/v3\nkind: GlobalNetworkPolicy\nmetadata: {{name: lab-pods-to-containers}}\n\
         spec:\n  selector: has({net})\n  ingress:\n  - action: Allow\n    source: {{selector: projectcalico.org/orchestrator == 'k8s'}}\n  - action: Allow\n    source: {{selector: has({net})}}\n  egress:\n  - action: Allow\n",
        net = podman.network
    );
    let file = std::env::temp_dir().join(format!("podman-e2e-allow-{}.yaml", std::process::id()));
    std::fs::write(&file, allow).expect("write policy");
    lab.ok(&["apply", "-f", file.to_str().expect("utf8 path")]);
    let _ = std::fs::remove_file(&file);

    // IPv4 and IPv6: container <-> container on the same node, container -> lab pod on n2,
    // lab pod -> container (allowed by the policy above).
    for (family, pod_ip) in [(4, &pod_ips[0]), (6, &pod_ips[1])] {
        let ip_of = |c: &Container| {
            if family == 4 {
                c.ip.clone()
            } else {
                c.ip6.clone()
            }
        };
        http_from(&podman, &a, &ip_of(&b), HTTP_PORT, "hello from b");
        http_from(&podman, &b, &ip_of(&a), HTTP_PORT, "hello from a");
        for c in [&a, &b] {
            http_from(&podman, c, pod_ip, 80, &format!("tortie-lab {pod_netns}"));
            http_from_pod(
                &pod_netns,
                &ip_of(c),
                HTTP_PORT,
                &format!("hello from {}", c.name),
            );
        }
    }

    // Removal runs CNI DEL: endpoints, addresses, veths, routes, netns and cache all go.
    podman.ok(&["rm", "--force", "--time", "0", &a.name, &b.name]);
    assert_eq!(podman.ok(&["ps", "-aq"]).trim(), "");
    let node_routes =
        ip_cmd(&["-n", &node_ns, "route"]) + &ip_cmd(&["-n", &node_ns, "-6", "route"]);
    let node_links = ip_cmd(&["-n", &node_ns, "-o", "link"]);
    for (c, veth) in [&a, &b].into_iter().zip(&host_veths) {
        assert!(lab.weps_of(&c.id).is_empty(), "{} endpoint left", c.name);
        for ip in [&c.ip, &c.ip6] {
            let show = lab.ok(&["ipam", "show", "--ip", ip]);
            assert!(show.contains("not assigned"), "{}: {show}", c.name);
            assert!(
                !node_routes
                    .lines()
                    .any(|l| l.starts_with(&format!("{ip} "))),
                "{ip} route left:\n{node_routes}"
            );
        }
        assert!(
            !node_links.contains(veth.as_str()),
            "{veth} left:\n{node_links}"
        );
        assert!(!Path::new(&c.sandbox).exists(), "{} left", c.sandbox);
    }
    assert!(
        cni_cache_files(&podman.network).is_empty(),
        "CNI cache files left: {:?}",
        cni_cache_files(&podman.network)
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while podman.pids.iter().any(|p| pid_running(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<u64> = podman
        .pids
        .iter()
        .copied()
        .filter(|p| pid_running(*p))
        .collect();
    assert!(left.is_empty(), "container processes left: {left:?}");
    let check = lab.ok(&["ipam", "check"]);
    assert!(check.contains("found 0 problems"), "{check}");
    // The lab pod is untouched.
    assert_eq!(
        lab.weps_of(pod["container_id"].as_str().expect("cid"))
            .len(),
        1
    );

    let dir = podman.dir.path().to_path_buf();
    drop(podman);
    assert!(!dir.exists(), "podman temp dir left");
    assert!(mounts_under(&dir).is_empty(), "mounts left under {dir:?}");
    eprintln!("{what}: ok in {:?}", started.elapsed());
}
