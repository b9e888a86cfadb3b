//! Types shared by the codec, the session FSM, the RIB and the driver.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use ipnet::IpNet;

/// An address family this speaker carries (AFI/SAFI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// AFI 1, SAFI 1.
    Ipv4Unicast,
    /// AFI 2, SAFI 1 (always through MP_REACH/MP_UNREACH, RFC 4760).
    Ipv6Unicast,
}

impl Family {
    /// The family a prefix belongs to.
    pub fn of(prefix: &IpNet) -> Family {
        match prefix {
            IpNet::V4(_) => Family::Ipv4Unicast,
            IpNet::V6(_) => Family::Ipv6Unicast,
        }
    }
}

/// ORIGIN (RFC 4271 §5.1.1), in preference order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    Igp,
    Egp,
    Incomplete,
}

/// One AS_PATH segment with 4-byte ASNs (RFC 6793).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AsSegment {
    Sequence(Vec<u32>),
    Set(Vec<u32>),
}

/// The path attributes of a route, shared between the routes of one UPDATE.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PathAttrs {
    pub origin: Origin,
    pub as_path: Vec<AsSegment>,
    /// NEXT_HOP for IPv4, the MP_REACH next hop for IPv6 (global address).
    pub next_hop: IpAddr,
    pub med: Option<u32>,
    /// LOCAL_PREF; only meaningful on iBGP sessions.
    pub local_pref: Option<u32>,
    /// RFC 1997 communities, as `asn << 16 | value`.
    pub communities: Vec<u32>,
    /// RFC 8092 large communities.
    pub large_communities: Vec<(u32, u32, u32)>,
    /// RFC 4456.
    pub originator_id: Option<Ipv4Addr>,
    /// RFC 4456, nearest cluster first.
    pub cluster_list: Vec<Ipv4Addr>,
    pub atomic_aggregate: bool,
}

impl PathAttrs {
    /// A locally originated route: ORIGIN IGP, empty AS_PATH.
    pub fn local(next_hop: IpAddr) -> PathAttrs {
        PathAttrs {
            origin: Origin::Igp,
            as_path: Vec::new(),
            next_hop,
            med: None,
            local_pref: None,
            communities: Vec::new(),
            large_communities: Vec::new(),
            originator_id: None,
            cluster_list: Vec::new(),
            atomic_aggregate: false,
        }
    }

    /// AS_PATH length for the decision process: a SEQUENCE counts each AS, a SET counts one.
    pub fn as_path_len(&self) -> usize {
        self.as_path
            .iter()
            .map(|s| match s {
                AsSegment::Sequence(v) => v.len(),
                AsSegment::Set(v) => usize::from(!v.is_empty()),
            })
            .sum()
    }

    /// The neighbouring AS (first AS of the first SEQUENCE), for MED comparison.
    pub fn neighbor_as(&self) -> Option<u32> {
        match self.as_path.first() {
            Some(AsSegment::Sequence(v)) => v.first().copied(),
            _ => None,
        }
    }

    /// Whether `asn` appears anywhere in the AS_PATH (loop detection).
    pub fn contains_as(&self, asn: u32) -> bool {
        self.as_path.iter().any(|s| match s {
            AsSegment::Sequence(v) | AsSegment::Set(v) => v.contains(&asn),
        })
    }
}

/// What one UPDATE (or a batch of them) says: routes announced with their attributes, prefixes
/// withdrawn, and End-of-RIB markers (RFC 4724 §2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Update {
    pub announced: Vec<(IpNet, Arc<PathAttrs>)>,
    pub withdrawn: Vec<IpNet>,
    pub end_of_rib: Vec<Family>,
}

impl Update {
    pub fn is_empty(&self) -> bool {
        self.announced.is_empty() && self.withdrawn.is_empty() && self.end_of_rib.is_empty()
    }
}
