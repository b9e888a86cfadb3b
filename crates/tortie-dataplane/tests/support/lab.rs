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
pub struct Lab {
    _nss: Namespaces,
    pub host: String,
    pods: BTreeMap<&'static str, (NetNs, &'static str)>,
}

pub const HOST_MAC: &str = "ee:ee:ee:ee:ee:ee";
/// The host namespace's address on `eth1`.
pub const HOST_IP: &str = "198.18.0.11";
/// The outside peer's address.
pub const EXT_IP: &str = "198.18.0.101";
/// The pods' pool, routed by `ext` via the host.
pub const POD_NET: &str = "10.244.0.0/16";

pub fn lab() -> Lab {
    let mut nss = Namespaces::new();
    let host = nss.add();
    let mut pods = BTreeMap::new();
    for (i, (pod, iface, ip)) in [
        ("a", "calia1", "10.244.1.10"),
        ("b", "calib2", "10.244.2.11"),
        ("c", "calic3", "10.244.3.12"),
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
        pods.insert(pod, (NetNs::named(&ns).expect("open pod netns"), ip));
    }
    let ext = nss.add();
    run(
        "ip",
        &[
            "-n", &host, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns",
            &ext,
        ],
    );
    for (ns, dev, ip) in [(&host, "eth1", HOST_IP), (&ext, "eth0", EXT_IP)] {
        run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        run(
            "ip",
            &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev],
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
    pods.insert("ext", (NetNs::named(&ext).expect("open ext netns"), EXT_IP));
    pods.insert(
        "host",
        (NetNs::named(&host).expect("open host netns"), HOST_IP),
    );
    let host_ns = NetNs::named(&host).expect("open host netns");
    write_sysctls(&host_ns, &[("net/ipv4/ip_forward".into(), "1".into())]).expect("forwarding");
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

    /// Listens on `port` in `pod`; the socket stays in the pod's namespace.
    pub fn listen(&self, pod: &str, port: u16) -> TcpListener {
        let addr = self.addr(pod, port);
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
        let addr = self.addr(to, port);
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
                    assert_eq!(
                        peer.ip(),
                        self.addr(seen_as, 0).ip(),
                        "source address (no NAT between pods)"
                    );
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
