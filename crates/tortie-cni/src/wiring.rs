//! The pod's network plumbing, as Calico does it (calico-reference §5.3).
//!
//! - A veth pair: the host end `cali<hash>` created directly in the host namespace with MAC
//!   `ee:ee:ee:ee:ee:ee`; the peer created straight into the pod namespace as `CNI_IFNAME`.
//! - Pod side: `/32` and `/128` addresses (no DAD), `169.254.1.1 dev eth0 scope link`,
//!   `default via 169.254.1.1 dev eth0 onlink`, `default via fe80::ecee:eeff:feee:eeee dev
//!   eth0 onlink` for IPv6, and permanent neighbour entries mapping both gateways to
//!   `ee:ee:ee:ee:ee:ee`. (Calico relies on proxy ARP alone, which only answers when the host
//!   has a route to 169.254.1.1, e.g. a default route; lab nodes may have none. The static
//!   entry removes that dependency and an ARP round trip; proxy ARP stays on.)
//! - Host side: proxy ARP answers for 169.254.1.1; `<ip>/32 dev cali… scope link proto 80`.
//!
//! What to create is computed as values by [`Plan`]; [`wire`], [`unwire`] and [`inspect`]
//! are the only functions that talk to the kernel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use tortie_netlink::addr::{add_address, list_addresses};
use tortie_netlink::link::{
    LinkChange, Mac, VethPair, create_veth, delete_link, format_mac, link_by_name, list_links,
    set_link,
};
use tortie_netlink::neigh::set_permanent_neighbour;
use tortie_netlink::route::{
    Route, RouteFilter, add_route, delete_route, list_routes, replace_route,
};
use tortie_netlink::sysctl::{iface_key, write_sysctls};
use tortie_netlink::{Handle, NetNs, WORKLOAD_ROUTE_PROTOCOL};

/// MAC of every host-side veth; the pod's gateway MAC.
pub const HOST_MAC: Mac = [0xee; 6];
/// The IPv4 gateway pods route to; answered by proxy ARP on the host veth.
pub const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The IPv6 gateway: the host veth's link-local address derived from [`HOST_MAC`].
pub const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0xecee, 0xeeff, 0xfeee, 0xeeee);
/// MTU when the config gives none.
pub const DEFAULT_MTU: u32 = 1500;

/// What to build for one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub host_veth: String,
    pub ifname: String,
    pub mtu: u32,
    /// Pod addresses as host routes: /32 and /128.
    pub ips: Vec<IpNet>,
}

fn kv(k: String, v: &str) -> (String, String) {
    (k, v.to_string())
}

impl Plan {
    /// A plan for `ips` (any prefix length; only the address is used).
    pub fn new(host_veth: &str, ifname: &str, mtu: u32, ips: &[IpNet]) -> Plan {
        Plan {
            host_veth: host_veth.to_string(),
            ifname: ifname.to_string(),
            mtu,
            ips: ips.iter().map(|n| IpNet::from(n.addr())).collect(),
        }
    }

    fn has_v4(&self) -> bool {
        self.ips.iter().any(|n| n.addr().is_ipv4())
    }

    fn has_v6(&self) -> bool {
        self.ips.iter().any(|n| n.addr().is_ipv6())
    }

    /// Host-side sysctls, written before the veth comes up.
    pub fn host_sysctls(&self) -> Vec<(String, String)> {
        let v = &self.host_veth;
        let mut out = Vec::new();
        if self.has_v4() {
            out.push(kv(iface_key("ipv4", "conf", v, "route_localnet"), "1"));
            out.push(kv(iface_key("ipv4", "neigh", v, "proxy_delay"), "0"));
            out.push(kv(iface_key("ipv4", "conf", v, "proxy_arp"), "1"));
            out.push(kv(iface_key("ipv4", "conf", v, "forwarding"), "1"));
        }
        if self.has_v6() {
            out.push(kv(iface_key("ipv6", "conf", v, "disable_ipv6"), "0"));
            out.push(kv(iface_key("ipv6", "conf", v, "accept_dad"), "0"));
            out.push(kv(iface_key("ipv6", "conf", v, "accept_ra"), "0"));
            out.push(kv(iface_key("ipv6", "conf", v, "proxy_ndp"), "1"));
            out.push(kv(iface_key("ipv6", "conf", v, "forwarding"), "1"));
        }
        out
    }

    /// Pod-side sysctls (IPv6 on, no DAD on the pod interface), written before it comes up.
    pub fn pod_sysctls(&self) -> Vec<(String, String)> {
        if !self.has_v6() {
            return Vec::new();
        }
        vec![
            kv("net/ipv6/conf/all/disable_ipv6".into(), "0"),
            kv("net/ipv6/conf/default/disable_ipv6".into(), "0"),
            kv("net/ipv6/conf/lo/disable_ipv6".into(), "0"),
            kv(iface_key("ipv6", "conf", &self.ifname, "disable_ipv6"), "0"),
            kv(iface_key("ipv6", "conf", &self.ifname, "accept_dad"), "0"),
        ]
    }

    /// Routes inside the pod, in the order they are added.
    pub fn pod_routes(&self, pod_index: u32) -> Vec<Route> {
        let mut out = Vec::new();
        if self.has_v4() {
            out.push(Route::device(
                IpNet::from(IpAddr::V4(GATEWAY_V4)),
                pod_index,
            ));
            out.push(Route::via_onlink(
                IpNet::V4(ipnet::Ipv4Net::default()),
                GATEWAY_V4.into(),
                pod_index,
            ));
        }
        if self.has_v6() {
            out.push(Route::via_onlink(
                IpNet::V6(ipnet::Ipv6Net::default()),
                GATEWAY_V6.into(),
                pod_index,
            ));
        }
        out
    }

    /// Gateways given permanent neighbour entries (MAC [`HOST_MAC`]) inside the pod.
    pub fn pod_neighbours(&self) -> Vec<IpAddr> {
        let mut out = Vec::new();
        if self.has_v4() {
            out.push(IpAddr::V4(GATEWAY_V4));
        }
        if self.has_v6() {
            out.push(IpAddr::V6(GATEWAY_V6));
        }
        out
    }

    /// Host routes to the pod's addresses through the host veth.
    pub fn host_routes(&self, host_index: u32) -> Vec<Route> {
        self.ips
            .iter()
            .map(|ip| Route::device(*ip, host_index).with_protocol(WORKLOAD_ROUTE_PROTOCOL))
            .collect()
    }
}

/// The two namespaces of an attachment and a netlink handle in each.
#[derive(Debug, Clone)]
pub struct Namespaces {
    pub host: NetNs,
    pub host_nl: Handle,
    pub pod: NetNs,
    pub pod_nl: Handle,
}

/// What [`wire`] built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wired {
    pub host_index: u32,
    /// The pod interface's MAC, `aa:bb:...`.
    pub pod_mac: String,
}

/// A plumbing failure, with enough context to name the step.
pub type WireError = String;

fn step<T>(what: &str, r: Result<T, tortie_netlink::Error>) -> Result<T, WireError> {
    r.map_err(|e| format!("{what}: {}", error_chain(&e)))
}

/// `e: source: source...` in one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Removes leftovers with our names: the host veth, and a veth called `ifname` in the pod.
async fn clear_stale(ns: &Namespaces, plan: &Plan) -> Result<(), WireError> {
    step(
        "delete stale host veth",
        delete_link(&ns.host_nl, &plan.host_veth).await,
    )?;
    if let Some(l) = step(
        "look up pod interface",
        link_by_name(&ns.pod_nl, &plan.ifname).await,
    )? {
        if l.kind.as_deref() != Some("veth") {
            return Err(format!(
                "interface {} already exists in {} and is not a veth ({})",
                plan.ifname,
                ns.pod.label(),
                l.kind.as_deref().unwrap_or("unknown kind")
            ));
        }
        step(
            "delete stale pod interface",
            delete_link(&ns.pod_nl, &plan.ifname).await,
        )?;
    }
    Ok(())
}

/// Builds the plumbing. On error the caller tears down with [`unwire`].
pub async fn wire(ns: &Namespaces, plan: &Plan) -> Result<Wired, WireError> {
    clear_stale(ns, plan).await?;
    let pair = VethPair {
        name: plan.host_veth.clone(),
        peer_name: plan.ifname.clone(),
        peer_netns: &ns.pod,
        mtu: Some(plan.mtu),
        mac: Some(HOST_MAC),
        peer_mac: None,
    };
    step("create veth", create_veth(&ns.host_nl, &pair).await)?;
    let host = step(
        "look up host veth",
        link_by_name(&ns.host_nl, &plan.host_veth).await,
    )?
    .ok_or_else(|| format!("host veth {} vanished after creation", plan.host_veth))?;
    let pod = step(
        "look up pod interface",
        link_by_name(&ns.pod_nl, &plan.ifname).await,
    )?
    .ok_or_else(|| {
        format!(
            "{} vanished from {} after creation",
            plan.ifname,
            ns.pod.label()
        )
    })?;

    step(
        "host sysctls",
        write_sysctls(&ns.host, &plan.host_sysctls()),
    )?;
    let mac_fix = (host.mac != Some(HOST_MAC)).then_some(HOST_MAC);
    let up = LinkChange {
        up: Some(true),
        mac: mac_fix,
        ..LinkChange::default()
    };
    step(
        "bring host veth up",
        set_link(&ns.host_nl, host.index, &up).await,
    )?;

    step("pod sysctls", write_sysctls(&ns.pod, &plan.pod_sysctls()))?;
    let up = LinkChange {
        up: Some(true),
        ..LinkChange::default()
    };
    step(
        "bring pod interface up",
        set_link(&ns.pod_nl, pod.index, &up).await,
    )?;
    for ip in &plan.ips {
        step(
            &format!("add {ip} to {}", plan.ifname),
            add_address(&ns.pod_nl, pod.index, *ip, ip.addr().is_ipv6()).await,
        )?;
    }
    for gw in plan.pod_neighbours() {
        step(
            &format!("add neighbour {gw} in the pod"),
            set_permanent_neighbour(&ns.pod_nl, pod.index, gw, HOST_MAC).await,
        )?;
    }
    for r in plan.pod_routes(pod.index) {
        step(
            &format!("add pod route to {}", r.dst),
            add_route(&ns.pod_nl, &r).await,
        )?;
    }
    for r in plan.host_routes(host.index) {
        add_host_route(&ns.host_nl, &r).await?;
    }
    let pod_mac = pod
        .mac
        .map(|m| format_mac(&m))
        .ok_or_else(|| format!("{} has no MAC address", plan.ifname))?;
    Ok(Wired {
        host_index: host.index,
        pod_mac,
    })
}

/// Adds a host route; an existing route to the same address through our veth is replaced,
/// one through another interface is a conflict named in the error.
async fn add_host_route(h: &Handle, r: &Route) -> Result<(), WireError> {
    match add_route(h, r).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_exists() => {
            let existing = step(
                "list host routes",
                list_routes(h, &RouteFilter::default()).await,
            )?;
            let other = existing
                .iter()
                .find(|x| x.dst == r.dst && x.table == r.table && x.oif != r.oif);
            match other {
                None => step("replace host route", replace_route(h, r).await),
                Some(x) => {
                    let dev = match x.oif {
                        Some(i) => link_name(h, i).await,
                        None => "no device".to_string(),
                    };
                    Err(format!(
                        "host route to {} already exists through {dev} (another workload has this address?)",
                        r.dst
                    ))
                }
            }
        }
        Err(e) => step(&format!("add host route to {}", r.dst), Err(e)),
    }
}

async fn link_name(h: &Handle, index: u32) -> String {
    match list_links(h).await {
        Ok(links) => links
            .into_iter()
            .find(|l| l.index == index)
            .map(|l| l.name)
            .unwrap_or_else(|| format!("ifindex {index}")),
        Err(_) => format!("ifindex {index}"),
    }
}

/// Tears down an attachment. `pod` is the pod namespace and its handle, when it still
/// exists; `delete_host_veth` is false when a newer sandbox owns the host veth. Every step
/// runs; the errors of all failed steps are returned ("already gone" is success).
pub async fn unwire(
    host_nl: &Handle,
    pod: Option<&Handle>,
    host_veth: &str,
    ifname: &str,
    delete_host_veth: bool,
) -> Vec<WireError> {
    let mut errors = Vec::new();
    if let Some(pod_nl) = pod
        && let Err(e) = delete_link(pod_nl, ifname).await
    {
        errors.push(format!("delete {ifname} in the pod: {}", error_chain(&e)));
    }
    if !delete_host_veth {
        return errors;
    }
    match link_by_name(host_nl, host_veth).await {
        Ok(Some(l)) => {
            // The kernel drops the veth's routes with it; remove ours first all the same, so
            // nothing is left if the link delete fails.
            let filter = RouteFilter {
                oif: Some(l.index),
                ..RouteFilter::protocol(WORKLOAD_ROUTE_PROTOCOL)
            };
            match list_routes(host_nl, &filter).await {
                Ok(routes) => {
                    for r in routes {
                        if let Err(e) = delete_route(host_nl, &r).await {
                            errors.push(format!(
                                "delete host route to {}: {}",
                                r.dst,
                                error_chain(&e)
                            ));
                        }
                    }
                }
                Err(e) => errors.push(format!("list host routes: {}", error_chain(&e))),
            }
            if let Err(e) = delete_link(host_nl, host_veth).await {
                errors.push(format!("delete host veth {host_veth}: {}", error_chain(&e)));
            }
        }
        Ok(None) => {}
        Err(e) => errors.push(format!(
            "look up host veth {host_veth}: {}",
            error_chain(&e)
        )),
    }
    errors
}

/// Compares the kernel state with what `plan` describes; returns every mismatch.
pub async fn inspect(ns: &Namespaces, plan: &Plan) -> Vec<String> {
    let mut problems = Vec::new();
    let host = match link_by_name(&ns.host_nl, &plan.host_veth).await {
        Ok(Some(l)) => Some(l),
        Ok(None) => {
            problems.push(format!("host veth {} does not exist", plan.host_veth));
            None
        }
        Err(e) => {
            problems.push(format!("look up host veth: {}", error_chain(&e)));
            None
        }
    };
    if let Some(h) = &host {
        if h.mac != Some(HOST_MAC) {
            problems.push(format!("host veth {} has the wrong MAC", plan.host_veth));
        }
        if !h.up {
            problems.push(format!("host veth {} is down", plan.host_veth));
        }
        match list_routes(&ns.host_nl, &RouteFilter::default()).await {
            Ok(routes) => {
                for want in plan.host_routes(h.index) {
                    if !routes
                        .iter()
                        .any(|r| r.dst == want.dst && r.oif == want.oif)
                    {
                        problems.push(format!(
                            "no host route to {} via {}",
                            want.dst, plan.host_veth
                        ));
                    }
                }
            }
            Err(e) => problems.push(format!("list host routes: {}", error_chain(&e))),
        }
    }
    match link_by_name(&ns.pod_nl, &plan.ifname).await {
        Ok(Some(p)) => {
            if !p.up {
                problems.push(format!("{} is down in the pod", plan.ifname));
            }
            match list_addresses(&ns.pod_nl, p.index).await {
                Ok(addrs) => {
                    for ip in &plan.ips {
                        if !addrs.contains(ip) {
                            problems.push(format!("{} lacks address {ip}", plan.ifname));
                        }
                    }
                }
                Err(e) => problems.push(format!("list pod addresses: {}", error_chain(&e))),
            }
            match list_routes(&ns.pod_nl, &RouteFilter::default()).await {
                Ok(routes) => {
                    for want in plan.pod_routes(p.index) {
                        let found = routes.iter().any(|r| {
                            r.dst == want.dst && r.oif == want.oif && r.gateway == want.gateway
                        });
                        if !found {
                            problems.push(format!("pod route to {} is missing", want.dst));
                        }
                    }
                }
                Err(e) => problems.push(format!("list pod routes: {}", error_chain(&e))),
            }
        }
        Ok(None) => problems.push(format!("{} does not exist in the pod", plan.ifname)),
        Err(e) => problems.push(format!("look up pod interface: {}", error_chain(&e))),
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan::new(
            "calic440f455693",
            "eth0",
            1450,
            &[
                "10.244.1.5/26".parse().expect("net"),
                "fd00:10:244::5/122".parse().expect("net"),
            ],
        )
    }

    #[test]
    fn addresses_become_host_routes() {
        let p = plan();
        assert_eq!(
            p.ips,
            vec![
                "10.244.1.5/32".parse::<IpNet>().expect("net"),
                "fd00:10:244::5/128".parse().expect("net")
            ]
        );
        let routes = p.host_routes(9);
        assert_eq!(routes.len(), 2);
        assert!(routes.iter().all(|r| r.oif == Some(9)
            && r.protocol == WORKLOAD_ROUTE_PROTOCOL
            && r.scope == tortie_netlink::route::Scope::Link));
    }

    #[test]
    fn pod_routes_use_the_link_local_gateways() {
        let routes = plan().pod_routes(2);
        let shown: Vec<String> = routes
            .iter()
            .map(|r| format!("{} {:?} {}", r.dst, r.gateway, r.onlink))
            .collect();
        assert_eq!(
            shown,
            [
                "169.254.1.1/32 None false",
                "0.0.0.0/0 Some(169.254.1.1) true",
                "::/0 Some(fe80::ecee:eeff:feee:eeee) true"
            ]
        );
        let v4only = Plan::new(
            "caliX",
            "eth0",
            1500,
            &["10.0.0.1/32".parse().expect("net")],
        );
        assert_eq!(v4only.pod_routes(2).len(), 2);
        assert!(v4only.pod_sysctls().is_empty());
        assert!(
            v4only
                .host_sysctls()
                .iter()
                .all(|(k, _)| k.starts_with("net/ipv4/"))
        );
    }

    #[test]
    fn sysctls_match_calico() {
        let p = plan();
        let host: Vec<String> = p
            .host_sysctls()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        for want in [
            "net/ipv4/conf/calic440f455693/proxy_arp=1",
            "net/ipv4/neigh/calic440f455693/proxy_delay=0",
            "net/ipv4/conf/calic440f455693/forwarding=1",
            "net/ipv6/conf/calic440f455693/proxy_ndp=1",
            "net/ipv6/conf/calic440f455693/accept_dad=0",
            "net/ipv6/conf/calic440f455693/accept_ra=0",
        ] {
            assert!(
                host.contains(&want.to_string()),
                "{want} missing from {host:?}"
            );
        }
        let pod: Vec<String> = p
            .pod_sysctls()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert!(
            pod.contains(&"net/ipv6/conf/eth0/accept_dad=0".to_string()),
            "{pod:?}"
        );
        assert_eq!(GATEWAY_V6.to_string(), "fe80::ecee:eeff:feee:eeee");
    }
}
