//! Storage keys, in Calico's etcd v3 layout (libcalico-go `backend/model`).
//!
//! - block: `/calico/ipam/v2/assignment/ipv4/block/10.244.1.0-26` (only the `/` of the CIDR
//!   becomes `-`, exactly as Calico writes it, so an etcd shared with Calico lines up);
//! - affinity: `/calico/ipam/v2/host/<node>/ipv4/block/10.244.1.0-26`;
//! - handle: `/calico/ipam/v2/handle/<handleID>`;
//! - tortie's own GC observations (not a Calico key): `/tortie/ipam/v1/observations/...`.
//!
//! Invariant: `parse_*` inverts the matching builder for every valid input.

use ipnet::IpNet;

use crate::family::IpFamily;

/// Root of every Calico IPAM key.
pub const IPAM_ROOT: &str = "/calico/ipam/v2/";
/// Prefix of all block affinity keys (all hosts).
pub const AFFINITY_ROOT: &str = "/calico/ipam/v2/host/";
/// Prefix of all handle keys.
pub const HANDLE_PREFIX: &str = "/calico/ipam/v2/handle/";
/// Prefix of tortie's leak observations (first-seen times of orphaned allocations).
pub const LEAK_OBSERVATION_PREFIX: &str = "/tortie/ipam/v1/observations/leak/";
/// Prefix of tortie's empty-block observations.
pub const EMPTY_BLOCK_OBSERVATION_PREFIX: &str = "/tortie/ipam/v1/observations/empty-block/";

/// `10.244.1.0/26` → `10.244.1.0-26`, as in Calico's keys.
pub fn cidr_dashed(cidr: &IpNet) -> String {
    cidr.to_string().replacen('/', "-", 1)
}

/// Inverse of [`cidr_dashed`].
pub fn parse_cidr_dashed(s: &str) -> Option<IpNet> {
    let (addr, len) = s.rsplit_once('-')?;
    format!("{addr}/{len}").parse().ok()
}

/// Prefix under which all blocks of `family` live.
pub fn block_prefix(family: IpFamily) -> String {
    format!("{IPAM_ROOT}assignment/{}/block/", family.key_segment())
}

/// The key of the block `cidr`.
pub fn block_key(cidr: &IpNet) -> String {
    format!(
        "{}{}",
        block_prefix(IpFamily::of_net(cidr)),
        cidr_dashed(cidr)
    )
}

/// The block CIDR of a block key.
pub fn parse_block_key(key: &str) -> Option<IpNet> {
    IpFamily::ALL
        .iter()
        .find_map(|f| key.strip_prefix(&block_prefix(*f)))
        .and_then(parse_cidr_dashed)
}

/// Prefix of one host's affinities of one family.
pub fn host_affinity_prefix(host: &str, family: IpFamily) -> String {
    format!("{AFFINITY_ROOT}{host}/{}/block/", family.key_segment())
}

/// The key of `host`'s affinity to block `cidr`.
pub fn affinity_key(host: &str, cidr: &IpNet) -> String {
    format!(
        "{}{}",
        host_affinity_prefix(host, IpFamily::of_net(cidr)),
        cidr_dashed(cidr)
    )
}

/// `(host, cidr)` of an affinity key.
pub fn parse_affinity_key(key: &str) -> Option<(String, IpNet)> {
    let rest = key.strip_prefix(AFFINITY_ROOT)?;
    let (host, rest) = rest.split_once('/')?;
    let (_family, rest) = rest.split_once('/')?;
    let dashed = rest.strip_prefix("block/")?;
    Some((host.to_string(), parse_cidr_dashed(dashed)?))
}

/// The key of handle `id`.
pub fn handle_key(id: &str) -> String {
    format!("{HANDLE_PREFIX}{id}")
}

/// The handle ID of a handle key.
pub fn parse_handle_key(key: &str) -> Option<&str> {
    key.strip_prefix(HANDLE_PREFIX).filter(|h| !h.is_empty())
}

/// Key of the leak observation for one address.
pub(crate) fn leak_observation_key(ip: std::net::IpAddr) -> String {
    format!("{LEAK_OBSERVATION_PREFIX}{ip}")
}

/// Key of the empty-block observation for one block.
pub(crate) fn empty_block_observation_key(cidr: &IpNet) -> String {
    format!("{EMPTY_BLOCK_OBSERVATION_PREFIX}{}", cidr_dashed(cidr))
}

/// Why a handle ID cannot be used as a key segment, if it cannot.
pub(crate) fn handle_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("a handle must not be empty")
    } else if id.contains('/') {
        Some("a handle must not contain '/'")
    } else if id.chars().any(char::is_whitespace) {
        Some("a handle must not contain whitespace")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_keys_match_calico() {
        let v4: IpNet = "10.244.1.0/26".parse().unwrap();
        assert_eq!(
            block_key(&v4),
            "/calico/ipam/v2/assignment/ipv4/block/10.244.1.0-26"
        );
        assert_eq!(parse_block_key(&block_key(&v4)), Some(v4));
        let v6: IpNet = "fd00:1::/122".parse().unwrap();
        assert_eq!(
            block_key(&v6),
            "/calico/ipam/v2/assignment/ipv6/block/fd00:1::-122"
        );
        assert_eq!(parse_block_key(&block_key(&v6)), Some(v6));
    }

    #[test]
    fn affinity_keys_round_trip() {
        let net: IpNet = "10.0.0.64/26".parse().unwrap();
        let k = affinity_key("node-1", &net);
        assert_eq!(k, "/calico/ipam/v2/host/node-1/ipv4/block/10.0.0.64-26");
        assert_eq!(parse_affinity_key(&k), Some(("node-1".into(), net)));
        assert_eq!(
            parse_affinity_key("/calico/ipam/v2/host/x/ipv4/other"),
            None
        );
    }

    #[test]
    fn handle_keys() {
        assert_eq!(
            handle_key("k8s-pod-network.abc"),
            "/calico/ipam/v2/handle/k8s-pod-network.abc"
        );
        assert_eq!(parse_handle_key(&handle_key("h")), Some("h"));
        assert!(handle_problem("a/b").is_some());
        assert!(handle_problem("").is_some());
        assert!(handle_problem("k8s-pod-network.abc").is_none());
    }
}
