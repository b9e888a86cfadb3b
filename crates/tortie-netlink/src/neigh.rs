//! Neighbour (ARP/NDP) entries.

use std::net::IpAddr;

use rtnetlink::Handle;

use crate::Error;
use crate::link::{Mac, format_mac};

/// Adds or replaces a permanent neighbour entry: `ip neigh replace <ip> lladdr <mac> dev
/// <index> nud permanent`.
pub async fn set_permanent_neighbour(
    h: &Handle,
    index: u32,
    ip: IpAddr,
    mac: Mac,
) -> Result<(), Error> {
    h.neighbours()
        .add(index, ip)
        .link_layer_address(&mac)
        .replace()
        .execute()
        .await
        .map_err(|e| {
            Error::netlink(
                format!(
                    "set neighbour {ip} lladdr {} on link {index}",
                    format_mac(&mac)
                ),
                e,
            )
        })
}
