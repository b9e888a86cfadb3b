//! Failsafe ports (calico-reference §1.9, §3.3, §6.4): traffic to or from a host endpoint on
//! one of these ports is allowed before any host endpoint policy runs, so that a policy
//! mistake cannot cut a node off from SSH, DHCP, BGP, etcd, Typha or the API server.
//!
//! Inbound entries match the *destination* port of traffic arriving at the host (and, with
//! `net`, its source address); outbound entries match the destination port of traffic the
//! host sends (and, with `net`, its destination address), as Felix's `cali-failsafe-in` /
//! `cali-failsafe-out` chains do.
//!
//! Configuration comes from `FelixConfiguration` `failsafeInboundHostPorts` /
//! `failsafeOutboundHostPorts`, per parameter: `node.<name>` first, then `default`, then
//! Calico's defaults. An empty list is meaningful (no failsafe ports). Per-selector
//! FelixConfigurations (`nodeSelector`) are not read.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Serialize;
use tortie_api::config::ProtoPort;

use crate::convert;
use crate::model::proto;

/// One failsafe entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct FailsafePort {
    /// IP protocol number (TCP, UDP or SCTP).
    pub protocol: u8,
    /// Destination port.
    pub port: u16,
    /// Inbound: the source must be in it; outbound: the destination must be in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub net: Option<IpNet>,
}

impl FailsafePort {
    pub const fn new(protocol: u8, port: u16) -> Self {
        FailsafePort {
            protocol,
            port,
            net: None,
        }
    }

    /// Whether a packet of `protocol` to `dst_port`, whose peer (source for inbound,
    /// destination for outbound) is `peer`, is covered.
    pub fn matches(&self, protocol: u8, dst_port: u16, peer: IpAddr) -> bool {
        self.protocol == protocol
            && self.port == dst_port
            && self.net.is_none_or(|n| n.contains(&peer))
    }
}

impl std::fmt::Display for FailsafePort {
    /// `tcp:22`, or `tcp:22 from 10.0.0.0/8`-style with the net appended after `@`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", proto::name(self.protocol), self.port)?;
        if let Some(n) = &self.net {
            write!(f, "@{n}")?;
        }
        Ok(())
    }
}

/// Calico's `failsafeInboundHostPorts` default: tcp:22, udp:68, tcp:179, tcp:2379, tcp:2380,
/// tcp:5473, tcp:6443, tcp:6666, tcp:6667.
pub fn default_inbound() -> Vec<FailsafePort> {
    use proto::{TCP, UDP};
    [
        (TCP, 22),
        (UDP, 68),
        (TCP, 179),
        (TCP, 2379),
        (TCP, 2380),
        (TCP, 5473),
        (TCP, 6443),
        (TCP, 6666),
        (TCP, 6667),
    ]
    .into_iter()
    .map(|(p, port)| FailsafePort::new(p, port))
    .collect()
}

/// Calico's `failsafeOutboundHostPorts` default: udp:53, udp:67, tcp:179, tcp:2379, tcp:2380,
/// tcp:5473, tcp:6443, tcp:6666, tcp:6667.
pub fn default_outbound() -> Vec<FailsafePort> {
    use proto::{TCP, UDP};
    [
        (UDP, 53),
        (UDP, 67),
        (TCP, 179),
        (TCP, 2379),
        (TCP, 2380),
        (TCP, 5473),
        (TCP, 6443),
        (TCP, 6666),
        (TCP, 6667),
    ]
    .into_iter()
    .map(|(p, port)| FailsafePort::new(p, port))
    .collect()
}

/// The API list as Felix reads it: an empty protocol is TCP, any case is accepted; an entry
/// whose protocol or `net` does not parse is skipped (Felix logs and skips it too; validation
/// rejects such entries on write anyway).
pub fn from_api(list: &[ProtoPort]) -> Vec<FailsafePort> {
    list.iter()
        .filter_map(|p| {
            let protocol = match p.protocol.as_deref().filter(|s| !s.is_empty()) {
                None => proto::TCP,
                Some(s) => proto::parse(s).filter(|n| proto::has_ports(*n))?,
            };
            let net = match p.net.as_deref().filter(|s| !s.is_empty()) {
                None => None,
                Some(s) => Some(convert::parse_net(s)?),
            };
            Some(FailsafePort {
                protocol,
                port: p.port,
                net,
            })
        })
        .collect()
}

/// The failsafe settings of one FelixConfiguration: `None` = not set there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailsafeConfig {
    pub inbound: Option<Vec<FailsafePort>>,
    pub outbound: Option<Vec<FailsafePort>>,
}

impl FailsafeConfig {
    /// The settings of a FelixConfiguration spec.
    pub fn of(spec: &tortie_api::config::FelixConfigurationSpec) -> Self {
        FailsafeConfig {
            inbound: spec.failsafe_inbound_host_ports.as_deref().map(from_api),
            outbound: spec.failsafe_outbound_host_ports.as_deref().map(from_api),
        }
    }
}

/// The effective failsafe ports of a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failsafe {
    pub inbound: Vec<FailsafePort>,
    pub outbound: Vec<FailsafePort>,
}

impl Default for Failsafe {
    /// Calico's defaults.
    fn default() -> Self {
        Failsafe {
            inbound: default_inbound(),
            outbound: default_outbound(),
        }
    }
}

/// Per parameter: the node's own configuration, then the global one, then Calico's default.
pub fn resolve(node: Option<&FailsafeConfig>, global: Option<&FailsafeConfig>) -> Failsafe {
    let pick = |f: fn(&FailsafeConfig) -> &Option<Vec<FailsafePort>>| {
        node.and_then(|c| f(c).clone())
            .or_else(|| global.and_then(|c| f(c).clone()))
    };
    Failsafe {
        inbound: pick(|c| &c.inbound).unwrap_or_else(default_inbound),
        outbound: pick(|c| &c.outbound).unwrap_or_else(default_outbound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::proto::{SCTP, TCP, UDP};

    fn pp(protocol: Option<&str>, port: u16, net: Option<&str>) -> ProtoPort {
        ProtoPort {
            protocol: protocol.map(str::to_string),
            port,
            net: net.map(str::to_string),
        }
    }

    #[test]
    fn defaults_are_calicos() {
        let s = |v: Vec<FailsafePort>| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            s(default_inbound()),
            [
                "tcp:22", "udp:68", "tcp:179", "tcp:2379", "tcp:2380", "tcp:5473", "tcp:6443",
                "tcp:6666", "tcp:6667"
            ]
        );
        assert_eq!(
            s(default_outbound()),
            [
                "udp:53", "udp:67", "tcp:179", "tcp:2379", "tcp:2380", "tcp:5473", "tcp:6443",
                "tcp:6666", "tcp:6667"
            ]
        );
    }

    #[test]
    fn api_entries_parse_like_felix() {
        let got = from_api(&[
            pp(None, 22, None),
            pp(Some("udp"), 53, Some("10.0.0.0/8")),
            pp(Some("SCTP"), 9, Some("fd00::1")),
            pp(Some("icmp"), 1, None),
            pp(Some("TCP"), 80, Some("nope")),
        ]);
        assert_eq!(
            got,
            [
                FailsafePort::new(TCP, 22),
                FailsafePort {
                    protocol: UDP,
                    port: 53,
                    net: Some("10.0.0.0/8".parse().unwrap())
                },
                FailsafePort {
                    protocol: SCTP,
                    port: 9,
                    net: Some("fd00::1/128".parse().unwrap())
                },
            ]
        );
        let p = got[1];
        assert!(p.matches(UDP, 53, "10.1.2.3".parse().unwrap()));
        assert!(!p.matches(UDP, 53, "192.0.2.1".parse().unwrap()));
        assert!(!p.matches(TCP, 53, "10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn node_config_wins_per_parameter_then_global_then_default() {
        let global = FailsafeConfig {
            inbound: Some(vec![FailsafePort::new(TCP, 2222)]),
            outbound: None,
        };
        let node = FailsafeConfig {
            inbound: None,
            outbound: Some(vec![]),
        };
        let f = resolve(Some(&node), Some(&global));
        assert_eq!(f.inbound, [FailsafePort::new(TCP, 2222)]);
        assert!(f.outbound.is_empty(), "an empty list disables failsafes");
        assert_eq!(resolve(None, None), Failsafe::default());
        assert_eq!(resolve(None, Some(&global)).outbound, default_outbound());
    }
}
