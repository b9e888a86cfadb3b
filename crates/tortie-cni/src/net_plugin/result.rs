//! The ADD result: interfaces (host veth, pod interface with its sandbox), /32 and /128
//! addresses on the pod interface, and default routes via the link-local gateways. A
//! chained `prevResult` is kept and extended.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use crate::spec::{CniError, CniResult, Interface, IpConfig, Route, code};
use crate::wiring::{GATEWAY_V4, GATEWAY_V6, HOST_MAC};

/// What the result describes.
#[derive(Debug, Clone)]
pub struct Attachment<'a> {
    pub host_veth: &'a str,
    pub ifname: &'a str,
    pub pod_mac: &'a str,
    /// CNI_NETNS.
    pub sandbox: &'a str,
    pub ips: &'a [IpNet],
}

/// Parses a `prevResult`, if any.
pub fn prev_result(v: Option<&Value>) -> Result<Option<CniResult>, CniError> {
    v.map(|v| {
        serde_json::from_value(v.clone()).map_err(|e| {
            CniError::new(code::DECODE, "cannot decode prevResult").with_details(e.to_string())
        })
    })
    .transpose()
}

/// Builds the result for `version`, appending to `prev` when chained.
pub fn build(version: &str, prev: Option<CniResult>, a: &Attachment<'_>) -> CniResult {
    let mut r = prev.unwrap_or_else(|| CniResult {
        cni_version: version.to_string(),
        interfaces: Vec::new(),
        ips: Vec::new(),
        routes: Vec::new(),
        dns: Default::default(),
    });
    r.interfaces.push(Interface {
        name: a.host_veth.to_string(),
        mac: tortie_netlink::link::format_mac(&HOST_MAC),
        sandbox: String::new(),
    });
    let pod_index = r.interfaces.len();
    r.interfaces.push(Interface {
        name: a.ifname.to_string(),
        mac: a.pod_mac.to_string(),
        sandbox: a.sandbox.to_string(),
    });
    for n in a.ips {
        r.ips.push(IpConfig {
            version: None,
            address: IpNet::from(n.addr()),
            gateway: None,
            interface: Some(pod_index),
        });
    }
    let mut defaults = Vec::new();
    if a.ips.iter().any(|n| n.addr().is_ipv4()) {
        defaults.push(Route {
            dst: IpNet::V4(ipnet::Ipv4Net::default()),
            gw: Some(IpAddr::V4(GATEWAY_V4)),
        });
    }
    if a.ips.iter().any(|n| n.addr().is_ipv6()) {
        defaults.push(Route {
            dst: IpNet::V6(ipnet::Ipv6Net::default()),
            gw: Some(IpAddr::V6(GATEWAY_V6)),
        });
    }
    for d in defaults {
        if !r.routes.contains(&d) {
            r.routes.push(d);
        }
    }
    r.for_version(version)
}

/// The pod addresses a previous result put on `ifname` in `sandbox` (for CHECK).
pub fn addresses_of(r: &CniResult, ifname: &str, sandbox: &str) -> Vec<IpNet> {
    r.ips
        .iter()
        .filter(|ip| match ip.interface.and_then(|i| r.interfaces.get(i)) {
            Some(iface) => {
                iface.name == ifname && (iface.sandbox == sandbox || iface.sandbox.is_empty())
            }
            None => true,
        })
        .map(|ip| ip.address)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn attachment(ips: &[IpNet]) -> Attachment<'_> {
        Attachment {
            host_veth: "calic440f455693",
            ifname: "eth0",
            pod_mac: "0a:58:0a:f4:01:05",
            sandbox: "/run/netns/p1",
            ips,
        }
    }

    #[test]
    fn result_json_per_version() {
        let ips: Vec<IpNet> = vec![
            "10.244.1.5/26".parse().expect("net"),
            "fd00:10:244::5/122".parse().expect("net"),
        ];
        let r = build("1.0.0", None, &attachment(&ips));
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(
            v,
            json!({
                "cniVersion": "1.0.0",
                "interfaces": [
                    {"name": "calic440f455693", "mac": "ee:ee:ee:ee:ee:ee"},
                    {"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": "/run/netns/p1"}
                ],
                "ips": [
                    {"address": "10.244.1.5/32", "interface": 1},
                    {"address": "fd00:10:244::5/128", "interface": 1}
                ],
                "routes": [
                    {"dst": "0.0.0.0/0", "gw": "169.254.1.1"},
                    {"dst": "::/0", "gw": "fe80::ecee:eeff:feee:eeee"}
                ]
            })
        );
        let old = serde_json::to_value(build("0.3.1", None, &attachment(&ips))).expect("json");
        assert_eq!(old["ips"][0]["version"], "4");
        assert_eq!(old["ips"][1]["version"], "6");
        let r11 = build("1.1.0", None, &attachment(&ips));
        assert_eq!(r11.cni_version, "1.1.0");
        assert_eq!(
            addresses_of(&r11, "eth0", "/run/netns/p1"),
            vec![
                "10.244.1.5/32".parse::<IpNet>().expect("net"),
                "fd00:10:244::5/128".parse().expect("net"),
            ]
        );
    }

    #[test]
    fn chained_prev_result_is_extended() {
        let prev = json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "lo0"}],
            "ips": [{"address": "192.0.2.1/24", "interface": 0}],
            "dns": {"nameservers": ["10.96.0.10"]}
        });
        let prev = prev_result(Some(&prev)).expect("decode");
        let ips: Vec<IpNet> = vec!["10.244.1.5/32".parse().expect("net")];
        let r = build("1.0.0", prev, &attachment(&ips));
        assert_eq!(r.interfaces.len(), 3);
        assert_eq!(r.ips[1].interface, Some(2));
        assert_eq!(r.dns.nameservers, ["10.96.0.10"]);
        assert_eq!(addresses_of(&r, "eth0", "/run/netns/p1").len(), 1);
        assert_eq!(
            prev_result(Some(&json!({"ips": "nope"}))).unwrap_err().code,
            code::DECODE
        );
    }
}
