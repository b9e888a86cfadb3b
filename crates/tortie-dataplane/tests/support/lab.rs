//! Real packets: a host namespace with veths to pod namespaces.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use tortie_netlink::NetNs;
use tortie_netlink::sysctl::write_sysctls;

use super::netns::{Namespaces, run};

/// A host namespace with two veths to pod namespaces (`calia1` → a, `calib2` → b) and a
/// third (`calic3` → c) that no endpoint claims. Pods route everything via 169.254.1.1,
/// which (as with Calico) is nobody's address: the pod has a permanent neighbour entry for it
/// with the host veth's MAC. The host has /32 routes to the pods and permanent neighbours for
/// them, so no ARP is needed.
///
/// Two more names for host endpoint tests: `host` is the host namespace itself (its address
/// 198.18.0.11 on `eth1`) and `ext` a plain namespace on the other end of `eth1`
/// (198.18.0.101/24), an outside peer of the host, with a route to the pods (10.244.0.0/16)
/// via the host.
///
/// Every name also has an IPv6 address (test-network.md's plan: pods in fd00:10:244::/56,
/// the host and `ext` on fd00:198:18::/64), wired the same way: pods route via the
/// link-local gateway [`GW6`] (a permanent neighbour with the host veth's MAC).
pub struct Lab {
    _nss: Namespaces,
    pub host: String,
    /// name → (namespace, IPv4, IPv6)
    pods: BTreeMap<&'static str, (NetNs, &'static str, &'static str)>,
}

pub const HOST_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// The host namespace's address on `eth1`.
pub const HOST_IP: &str = "198.18.0.11";
/// The outside peer's address.
pub const EXT_IP: &str = "198.18.0.101";
/// The pods' pool, routed by `ext` via the host.
pub const POD_NET: &str = "10.244.0.0/16";
/// The host namespace's IPv6 address on `eth1`, the outside peer's and the pods' pool.
pub const HOST_IP6: &str = "fd00:198:18::11";
pub const EXT_IP6: &str = "fd00:198:18::101";
pub const POD_NET6: &str = "fd00:10:244::/56";
/// The pods' IPv6 gateway: link-local, nobody's address (as 169.254.1.1 for IPv4).
pub const GW6: &str = "fe80::1";

pub fn lab() -> Lab {
    let mut nss = Namespaces::new();
    let host = nss.add();
    let mut pods = BTreeMap::new();
    for (i, (pod, iface, ip, ip6)) in [
        ("a", "calia1", "10.244.1.10", "fd00:10:244:1::10"),
        ("b", "calib2", "10.244.2.11", "fd00:10:244:2::11"),
        ("c", "calic3", "10.244.3.12", "fd00:10:244:3::12"),
    ]
    .into_iter()
    .enumerate()
    {
        let ns = nss.add();
        let pod_mac = format!("02:00:00:00:00:0{}", i + 1);
        run(
            "ip",
            &[
                "-n", &host, "link", "add", iface, "address", HOST_MAC, "type", "veth", "peer",
                "name", "eth0", "address", &pod_mac, "netns", &ns,
            ],
        );
        run("ip", &["-n", &host, "link", "set", iface, "up"]);
        run("ip", &["-n", &ns, "link", "set", "lo", "up"]);
        run("ip", &["-n", &ns, "link", "set", "eth0", "up"]);
        run(
            "ip",
            &["-n", &ns, "addr", "add", &format!("{ip}/32"), "dev", "eth0"],
        );
        run(
            "ip",
            &[
                "-n",
                &ns,
                "route",
                "add",
                "169.254.1.1",
                "dev",
                "eth0",
                "scope",
                "link",
            ],
        );
        run(
            "ip",
            &[
                "-n",
                &ns,
                "route",
                "add",
                "default",
                "via",
                "169.254.1.1",
                "dev",
                "eth0",
            ],
        );
        run(
            "ip",
            &[
                "-n",
                &ns,
                "neigh",
                "replace",
                "169.254.1.1",
                "lladdr",
                HOST_MAC,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        );
        run(
            "ip",
            &[
                "-n",
                &host,
                "route",
                "add",
                &format!("{ip}/32"),
                "dev",
                iface,
            ],
        );
        run(
            "ip",
            &[
                "-n",
                &host,
                "neigh",
                "replace",
                ip,
                "lladdr",
                &pod_mac,
                "dev",
                iface,
                "nud",
                "permanent",
            ],
        );
        let v6 = |ns: &str, args: &[&str]| {
            let mut all = vec!["-n", ns, "-6"];
            all.extend_from_slice(args);
            run("ip", &all);
        };
        let ip6_128 = format!("{ip6}/128");
        v6(&ns, &["addr", "add", &ip6_128, "dev", "eth0", "nodad"]);
        v6(&ns, &["route", "add", GW6, "dev", "eth0"]);
        v6(&ns, &["route", "add", "default", "via", GW6, "dev", "eth0"]);
        v6(
            &ns,
            &[
                "neigh",
                "replace",
                GW6,
                "lladdr",
                HOST_MAC,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        );
        v6(&host, &["route", "add", &ip6_128, "dev", iface]);
        v6(
            &host,
            &[
                "neigh",
                "replace",
                ip6,
                "lladdr",
                &pod_mac,
                "dev",
                iface,
                "nud",
                "permanent",
            ],
        );
        pods.insert(pod, (NetNs::named(&ns).expect("open pod netns"), ip, ip6));
    }
    let ext = nss.add();
    run(
        "ip",
        &[
            "-n", &host, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns",
            &ext,
        ],
    );
    for (ns, dev, ip, ip6) in [
        (&host, "eth1", HOST_IP, HOST_IP6),
        (&ext, "eth0", EXT_IP, EXT_IP6),
    ] {
        run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        run(
            "ip",
            &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev],
        );
        run(
            "ip",
            &[
                "-n",
                ns,
                "-6",
                "addr",
                "add",
                &format!("{ip6}/64"),
                "dev",
                dev,
                "nodad",
            ],
        );
        run("ip", &["-n", ns, "link", "set", dev, "up"]);
    }
    // The outside peer reaches the pods through the host (forwarded through `eth1`), as a
    // router in front of a Calico node would; the pods already route everything to the host.
    run(
        "ip",
        &[
            "-n", &ext, "route", "add", POD_NET, "via", HOST_IP, "dev", "eth0",
        ],
    );
    run(
        "ip",
        &[
            "-n", &ext, "-6", "route", "add", POD_NET6, "via", HOST_IP6, "dev", "eth0",
        ],
    );
    pods.insert(
        "ext",
        (NetNs::named(&ext).expect("open ext netns"), EXT_IP, EXT_IP6),
    );
    pods.insert(
        "host",
        (
            NetNs::named(&host).expect("open host netns"),
            HOST_IP,
            HOST_IP6,
        ),
    );
    let host_ns = NetNs::named(&host).expect("open host netns");
    write_sysctls(
        &host_ns,
        &[
            ("net/ipv4/ip_forward".into(), "1".into()),
            ("net/ipv6/conf/all/forwarding".into(), "1".into()),
        ],
    )
    .expect("forwarding");
    Lab {
        _nss: nss,
        host,
        pods,
    }
}

pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

impl Lab {
    pub fn addr(&self, pod: &str, port: u16) -> SocketAddr {
        SocketAddr::new(self.pods[pod].1.parse().expect("ip"), port)
    }

    /// The namespace name of `pod` (`ext`, a pod, or `host`).
    pub fn namespace_of(&self, pod: &str) -> String {
        self.pods[pod]
            .0
            .label()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string()
    }

    /// `pod`'s IPv6 address and `port`.
    pub fn addr6(&self, pod: &str, port: u16) -> SocketAddr {
        SocketAddr::new(self.pods[pod].2.parse().expect("ip"), port)
    }

    /// Listens on `port` in `pod`; the socket stays in the pod's namespace.
    pub fn listen(&self, pod: &str, port: u16) -> TcpListener {
        self.listen_on(self.addr(pod, port), pod)
    }

    /// [`Lab::listen`] on the pod's IPv6 address.
    pub fn listen6(&self, pod: &str, port: u16) -> TcpListener {
        self.listen_on(self.addr6(pod, port), pod)
    }

    fn listen_on(&self, addr: SocketAddr, pod: &str) -> TcpListener {
        let l = self.pods[pod]
            .0
            .run(move || TcpListener::bind(addr))
            .expect("enter pod")
            .expect("bind");
        l.set_nonblocking(true).expect("nonblocking");
        l
    }

    /// Connects from `from` to `to:port` and sends a byte the listener must receive.
    /// `Ok` = delivered, `Err` = the connect error (bounded by [`CONNECT_TIMEOUT`]).
    pub fn connect(
        &self,
        from: &str,
        to: &str,
        port: u16,
        l: &TcpListener,
    ) -> Result<(), std::io::ErrorKind> {
        self.connect_seen_as(from, to, port, l, from)
    }

    /// [`Lab::connect`] over IPv6 (both ends' IPv6 addresses).
    pub fn connect6(
        &self,
        from: &str,
        to: &str,
        port: u16,
        l: &TcpListener,
    ) -> Result<(), std::io::ErrorKind> {
        self.connect_between(from, self.addr6(to, port), l, self.addr6(from, 0))
    }

    /// [`Lab::connect`] where the listener sees the connection come from `seen_as`'s address
    /// (the host's, when the host masquerades a pod's traffic to the outside peer).
    pub fn connect_seen_as(
        &self,
        from: &str,
        to: &str,
        port: u16,
        l: &TcpListener,
        seen_as: &str,
    ) -> Result<(), std::io::ErrorKind> {
        self.connect_between(from, self.addr(to, port), l, self.addr(seen_as, 0))
    }

    /// Connects from `from` to `addr`, sends a byte `l` must receive from `seen`'s address.
    fn connect_between(
        &self,
        from: &str,
        addr: SocketAddr,
        l: &TcpListener,
        seen: SocketAddr,
    ) -> Result<(), std::io::ErrorKind> {
        let mut s = self.pods[from]
            .0
            .run(move || TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT))
            .expect("enter pod")
            .map_err(|e| e.kind())?;
        s.write_all(b"x").expect("send");
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            match l.accept() {
                Ok((mut c, peer)) => {
                    assert_eq!(peer.ip(), seen.ip(), "source address (no NAT between pods)");
                    c.set_nonblocking(false).expect("blocking");
                    c.set_read_timeout(Some(Duration::from_secs(1)))
                        .expect("timeout");
                    let mut b = [0u8; 1];
                    c.read_exact(&mut b).expect("read the byte");
                    return Ok(());
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        }
    }
}
