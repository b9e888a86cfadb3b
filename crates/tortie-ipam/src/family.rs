//! IPv4 / IPv6 address family.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum IpFamily {
    V4,
    V6,
}

impl IpFamily {
    /// Both families, v4 first.
    pub const ALL: [IpFamily; 2] = [IpFamily::V4, IpFamily::V6];

    /// The family of an address.
    pub fn of(ip: IpAddr) -> IpFamily {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }

    /// The family of a network.
    pub fn of_net(net: &IpNet) -> IpFamily {
        IpFamily::of(net.addr())
    }

    /// The path segment Calico uses in IPAM keys: `ipv4` or `ipv6`.
    pub fn key_segment(self) -> &'static str {
        match self {
            IpFamily::V4 => "ipv4",
            IpFamily::V6 => "ipv6",
        }
    }

    /// Address width in bits.
    pub fn bits(self) -> u8 {
        match self {
            IpFamily::V4 => 32,
            IpFamily::V6 => 128,
        }
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::V4 => "IPv4",
            IpFamily::V6 => "IPv6",
        })
    }
}

/// An address as a 128-bit integer (v4 addresses in the low 32 bits).
pub(crate) fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of `family` with integer value `n` (truncated to the family's width).
pub(crate) fn u128_to_ip(family: IpFamily, n: u128) -> IpAddr {
    match family {
        IpFamily::V4 => IpAddr::V4((n as u32).into()),
        IpFamily::V6 => IpAddr::V6(n.into()),
    }
}

/// Number of addresses in `net`, saturating at `u128::MAX` for `::/0`.
pub(crate) fn net_size(net: &IpNet) -> u128 {
    let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
    1u128.checked_shl(host_bits).unwrap_or(u128::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_addresses() {
        for s in ["10.1.2.3", "0.0.0.0", "255.255.255.255", "fd00::1", "::"] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(u128_to_ip(IpFamily::of(ip), ip_to_u128(ip)), ip);
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(net_size(&"10.0.0.0/26".parse().unwrap()), 64);
        assert_eq!(net_size(&"fd00::/122".parse().unwrap()), 64);
        assert_eq!(net_size(&"::/0".parse().unwrap()), u128::MAX);
        assert_eq!(IpFamily::V6.to_string(), "IPv6");
    }
}
