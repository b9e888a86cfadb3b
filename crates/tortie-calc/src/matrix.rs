//! The pod-to-pod truth table, in the shape `tortie lab matrix` prints.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::eval::{Addresses, Packet, explain};
use crate::model::{EndpointId, proto};
use crate::world::World;

/// `{"80/tcp": {"x/a": {"y/b": true}}}`, as `lab matrix -o json`.
pub type Matrix = BTreeMap<String, BTreeMap<String, BTreeMap<String, bool>>>;

/// A port and protocol, `80/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortProto {
    pub port: u16,
    pub protocol: u8,
}

impl std::fmt::Display for PortProto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.port, proto::name(self.protocol))
    }
}

/// Source port the simulated client uses (any ephemeral port; rules on source ports are rare).
pub const CLIENT_PORT: u16 = 40000;

/// Decides every ordered pair of pods (with an address of the family asked for) for each
/// port/protocol. A pod with no such address is left out.
pub fn matrix(world: &World, pps: &[PortProto], ipv6: bool) -> Matrix {
    let addrs = Addresses::new(world);
    let pods: Vec<(String, IpAddr)> = world
        .workloads()
        .into_iter()
        .filter_map(|e| {
            let EndpointId::Workload { namespace, name } = &e.id else {
                return None;
            };
            let ip = e
                .nets
                .iter()
                .map(|n| n.addr())
                .find(|a| a.is_ipv6() == ipv6)?;
            Some((format!("{namespace}/{name}"), ip))
        })
        .collect();
    let mut out = Matrix::new();
    for pp in pps {
        let grid = out.entry(pp.to_string()).or_default();
        for (from, src) in &pods {
            let row = grid.entry(from.clone()).or_default();
            for (to, dst) in &pods {
                let pkt = Packet {
                    src: *src,
                    dst: *dst,
                    protocol: pp.protocol,
                    src_port: CLIENT_PORT,
                    dst_port: pp.port,
                    icmp_type: None,
                    icmp_code: None,
                };
                let e = explain(world, &addrs, &pkt);
                row.insert(to.clone(), e.outcome == crate::eval::Outcome::Allow);
            }
        }
    }
    out
}
