//! A small L2 topology in network namespaces: a fabric namespace holding bridge `br0`, and
//! host namespaces, each with one veth `eth0` whose other end (`p<index>`) is a port of the
//! bridge. Host `i` (1-based, in creation order) gets `198.18.0.i/24` and
//! `fd00:198:18::i/64` (see `shared/design/test-network.md`).
//!
//! Names: `tb<pid>-<label>-fab` and `tb<pid>-<label>-<host>`. Nothing is created in the root
//! namespace: every `ip` command runs with `-n <ns>` and the veth is created inside the fabric
//! namespace with its peer end placed straight into the host namespace. `Drop` ends whatever
//! still runs in those namespaces (by PID, from `ip netns pids`) and deletes them.
//!
//! Note for `ip`: always spell `name X` / `dev X`; a bare interface name such as `a` is
//! parsed as an abbreviated keyword (`address`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{run_bounded, run_ok};

const CMD_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `ip ARGS`; fails with its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    run_ok(Command::new("ip").args(args), CMD_TIMEOUT)
}

/// Runs `program ARGS` inside namespace `ns` (`ip netns exec`, which execs the program, so a
/// spawned child's PID is the program's). Fails on a non-zero exit.
pub fn exec_in(ns: &str, program: &str, args: &[&str]) -> anyhow::Result<String> {
    run_ok(
        Command::new("ip")
            .args(["netns", "exec", ns, program])
            .args(args),
        CMD_TIMEOUT,
    )
}

/// One host namespace on the fabric.
#[derive(Debug, Clone)]
pub struct Host {
    /// The name the test gave it.
    pub name: String,
    /// Its namespace, `tb<pid>-<label>-<name>`.
    pub netns: String,
    /// 1-based position, the last byte of its addresses.
    pub index: u8,
    /// Its one interface, `eth0`.
    pub ifname: String,
    pub v4: Ipv4Addr,
    pub v6: Ipv6Addr,
}

impl Host {
    /// The underlay address of the given family.
    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 {
            IpAddr::V6(self.v6)
        } else {
            IpAddr::V4(self.v4)
        }
    }
}

/// The namespaces of one test; removed on drop.
#[derive(Debug)]
pub struct Topology {
    /// `tb<pid>-<label>`.
    pub prefix: String,
    /// The fabric namespace, holding bridge `br0`.
    pub fabric: String,
    hosts: Vec<Host>,
    /// Every namespace created, in creation order.
    created: Vec<String>,
}

impl Topology {
    /// Creates the fabric namespace and bridge. `label` tells apart topologies of tests that
    /// run in parallel in one process; keep it short (letters and digits).
    pub fn new(label: &str) -> anyhow::Result<Topology> {
        remove_leftovers();
        let prefix = format!("tb{}-{label}", std::process::id());
        let fabric = format!("{prefix}-fab");
        let mut t = Topology {
            prefix,
            fabric: fabric.clone(),
            hosts: Vec::new(),
            created: Vec::new(),
        };
        t.add_ns(&fabric)?;
        ip(&[
            "-n", &fabric, "link", "add", "name", "br0", "type", "bridge",
        ])?;
        ip(&["-n", &fabric, "link", "set", "dev", "br0", "up"])?;
        Ok(t)
    }

    /// [`Topology::new`] plus [`Topology::add_host`] for each name.
    pub fn with_hosts(label: &str, hosts: &[&str]) -> anyhow::Result<Topology> {
        let mut t = Topology::new(label)?;
        for h in hosts {
            t.add_host(h)?;
        }
        Ok(t)
    }

    fn add_ns(&mut self, name: &str) -> anyhow::Result<()> {
        if std::path::Path::new("/run/netns").join(name).exists() {
            bail!("namespace {name} already exists");
        }
        ip(&["netns", "add", name])?;
        self.created.push(name.to_string());
        ip(&["-n", name, "link", "set", "dev", "lo", "up"])?;
        Ok(())
    }

    /// Adds host namespace `<prefix>-<name>` with `eth0` on the bridge and its underlay
    /// addresses (IPv6 without duplicate address detection, so it is usable at once).
    pub fn add_host(&mut self, name: &str) -> anyhow::Result<Host> {
        if self.hosts.iter().any(|h| h.name == name) {
            bail!("host {name} exists already");
        }
        let index = u8::try_from(self.hosts.len() + 1)
            .ok()
            .filter(|i| *i < 250)
            .context("at most 249 hosts per topology")?;
        let netns = format!("{}-{name}", self.prefix);
        self.add_ns(&netns)?;
        // DAD off before the link exists, so the link-local address is not tentative either
        // (BIRD and FRR put it in IPv6 next hops).
        exec_in(
            &netns,
            "sysctl",
            &[
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ],
        )?;
        let port = format!("p{index}");
        ip(&[
            "-n",
            &self.fabric,
            "link",
            "add",
            "name",
            &port,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &netns,
        ])?;
        ip(&[
            "-n",
            &self.fabric,
            "link",
            "set",
            "dev",
            &port,
            "master",
            "br0",
            "up",
        ])?;
        let v4 = Ipv4Addr::new(198, 18, 0, index);
        let v6 = Ipv6Addr::new(0xfd00, 0x198, 0x18, 0, 0, 0, 0, u16::from(index));
        exec_in(
            &netns,
            "sysctl",
            &["-qw", "net.ipv6.conf.eth0.accept_dad=0"],
        )?;
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{v4}/24"),
            "dev",
            "eth0",
        ])?;
        ip(&[
            "-n",
            &netns,
            "addr",
            "add",
            &format!("{v6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ip(&["-n", &netns, "link", "set", "dev", "eth0", "up"])?;
        let host = Host {
            name: name.to_string(),
            netns,
            index,
            ifname: "eth0".to_string(),
            v4,
            v6,
        };
        self.hosts.push(host.clone());
        Ok(host)
    }

    /// The host named `name`; panics if there is none (a test bug).
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name} in topology {}", self.prefix))
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Takes host `name`'s bridge port down or up, like pulling its cable: the host's
    /// `eth0` loses carrier too (a veth's carrier follows its peer's state). Not exercised
    /// by the self-test.
    pub fn set_port_up(&self, name: &str, up: bool) -> anyhow::Result<()> {
        let port = format!("p{}", self.host(name).index);
        ip(&[
            "-n",
            &self.fabric,
            "link",
            "set",
            "dev",
            &port,
            if up { "up" } else { "down" },
        ])?;
        Ok(())
    }

    /// Runs `program ARGS` in host `name`'s namespace.
    pub fn exec(&self, name: &str, program: &str, args: &[&str]) -> anyhow::Result<String> {
        exec_in(&self.host(name).netns, program, args)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in self.created.iter().rev() {
            delete_ns(ns);
        }
    }
}

/// Ends every process still in `ns` (by PID: SIGKILL, then reaped by its parent or init),
/// then deletes the namespace. Best effort, bounded.
fn delete_ns(ns: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let pids = ns_pids(ns);
        if pids.is_empty() || Instant::now() >= deadline {
            break;
        }
        for pid in pids {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let _ = run_bounded(
                Command::new("kill").args(["-KILL", &pid.to_string()]),
                CMD_TIMEOUT,
            );
            // An FRR daemon killed this way leaves its crash-log directory behind.
            let comm = comm.trim();
            if matches!(comm, "bgpd" | "zebra") {
                let _ = std::fs::remove_dir_all(format!("/var/tmp/frr/{comm}.{pid}"));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = run_bounded(Command::new("ip").args(["netns", "del", ns]), CMD_TIMEOUT);
}

/// PIDs of the processes in namespace `ns`, from `ip netns pids`.
pub fn ns_pids(ns: &str) -> Vec<u32> {
    ip(&["netns", "pids", ns])
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether `name` is `<prefix><pid>-...` for a PID that no longer runs (and is not ours).
fn owner_gone(name: &str, prefix: &str) -> bool {
    let Some(pid) = name
        .strip_prefix(prefix)
        .and_then(|r| r.split_once('-'))
        .and_then(|(pid, _)| pid.parse::<u32>().ok())
    else {
        return false;
    };
    pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes what a test process that no longer runs (a crashed or killed run whose guards
/// never ran) left behind: namespaces `tb<pid>-...`, ending the processes still inside them
/// by PID, and the routers' directories `<tmp>/tortie-bgp-<pid>-...`.
pub fn remove_leftovers() {
    if let Ok(list) = ip(&["netns", "list"]) {
        for line in list.lines() {
            if let Some(name) = line.split_whitespace().next()
                && owner_gone(name, "tb")
            {
                delete_ns(name);
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) {
        for e in dir.flatten() {
            if owner_gone(&e.file_name().to_string_lossy(), "tortie-bgp-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Established TCP connections in namespace `ns` as (local, remote) pairs, from `ss`.
pub fn tcp_established(ns: &str) -> anyhow::Result<Vec<(SocketAddr, SocketAddr)>> {
    let out = exec_in(ns, "ss", &["-Htn", "state", "established"])?;
    let mut conns = Vec::new();
    for line in out.lines() {
        // Recv-Q Send-Q Local Peer (the state column is left out when filtering by state).
        let cols: Vec<&str> = line.split_whitespace().collect();
        if cols.len() < 4 {
            continue;
        }
        let parse = |s: &str| -> Option<SocketAddr> {
            let (host, port) = s.rsplit_once(':')?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let host = host.split('%').next()?;
            Some(SocketAddr::new(host.parse().ok()?, port.parse().ok()?))
        };
        if let (Some(l), Some(r)) = (parse(cols[2]), parse(cols[3])) {
            conns.push((l, r));
        }
    }
    Ok(conns)
}

/// Routes with a gateway in namespace `ns`'s main table, IPv4 and IPv6 (the ones a BGP
/// daemon installed; these namespaces have no default route), as prefix → gateway.
pub fn kernel_routes(ns: &str) -> anyhow::Result<std::collections::BTreeMap<ipnet::IpNet, IpAddr>> {
    let mut routes = std::collections::BTreeMap::new();
    for fam in ["-4", "-6"] {
        let out = ip(&["-j", fam, "-n", ns, "route", "show"])?;
        if out.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&out).with_context(|| format!("ip -j route: {out}"))?;
        for r in v.as_array().into_iter().flatten() {
            let (Some(dst), Some(gw)) = (r["dst"].as_str(), r["gateway"].as_str()) else {
                continue;
            };
            let dst = if dst.contains('/') {
                dst.to_string()
            } else if fam == "-4" {
                format!("{dst}/32")
            } else {
                format!("{dst}/128")
            };
            if let (Ok(dst), Ok(gw)) = (dst.parse(), gw.parse()) {
                routes.insert(dst, gw);
            }
        }
    }
    Ok(routes)
}
