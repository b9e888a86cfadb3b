//! Interface addresses.

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use rtnetlink::Handle;

use crate::Error;

/// Adds (or replaces, so a repeat is not an error) `net` on link `index`. With `nodad` the
/// address skips IPv6 duplicate address detection and is usable at once (`nodad` in `ip`).
pub async fn add_address(h: &Handle, index: u32, net: IpNet, nodad: bool) -> Result<(), Error> {
    let mut req = h
        .address()
        .add(index, net.addr(), net.prefix_len())
        .replace();
    if nodad {
        let m = req.message_mut();
        m.header.flags |= AddressHeaderFlags::Nodad;
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    req.execute()
        .await
        .map_err(|e| Error::netlink(format!("add address {net} to link {index}"), e))
}

pub(crate) fn address_of(m: &AddressMessage) -> Option<IpNet> {
    // IFA_ADDRESS is the peer on point-to-point links; IFA_LOCAL, when present, is ours.
    let mut addr = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => return IpNet::new(*ip, m.header.prefix_len).ok(),
            AddressAttribute::Address(ip) => addr = Some(*ip),
            _ => {}
        }
    }
    addr.and_then(|ip| IpNet::new(ip, m.header.prefix_len).ok())
}

/// The addresses on link `index`, in kernel order.
pub async fn list_addresses(h: &Handle, index: u32) -> Result<Vec<IpNet>, Error> {
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(|e| Error::netlink(format!("list addresses of link {index}"), e))?;
    Ok(msgs
        .iter()
        .filter(|m| m.header.index == index)
        .filter_map(address_of)
        .collect())
}
