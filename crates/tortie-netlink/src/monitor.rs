//! The namespace's interfaces with their addresses, and notifications when they change.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use futures::TryStreamExt;
use futures::channel::mpsc::UnboundedReceiver;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::AddressMessage;
use rtnetlink::Handle;
use rtnetlink::packet_core::NetlinkMessage;
use rtnetlink::sys::SocketAddr;

use crate::{Error, NetNs};

/// Interface name → its addresses.
pub type Interfaces = BTreeMap<String, BTreeSet<IpAddr>>;

/// rtnetlink multicast groups (the legacy bitmask form for `bind`): links, IPv4 and IPv6
/// addresses.
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;

/// Notifications that arrive on an [`interface_events`] socket (their content does not
/// matter: any one is a reason to read [`interfaces`] again).
pub type Events = UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>;

/// Every link in the handle's namespace with its addresses: one dump of links, one of
/// addresses.
pub async fn interfaces(h: &Handle) -> Result<Interfaces, Error> {
    let links = crate::link::list_links(h).await?;
    let msgs: Vec<AddressMessage> = h
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(|e| Error::netlink("list addresses", e))?;
    let names: BTreeMap<u32, &str> = links.iter().map(|l| (l.index, l.name.as_str())).collect();
    let mut out: Interfaces = links
        .iter()
        .map(|l| (l.name.clone(), BTreeSet::new()))
        .collect();
    for m in &msgs {
        if let (Some(name), Some(net)) = (names.get(&m.header.index), crate::addr::address_of(m))
            && let Some(addrs) = out.get_mut(*name)
        {
            addrs.insert(net.addr());
        }
    }
    Ok(out)
}

/// A handle in `ns` whose socket is also subscribed to link and address changes, and the
/// stream of those notifications. The connection runs as a task on the caller's runtime
/// (which must exist) until the handle and the stream are dropped.
pub fn interface_events(ns: &NetNs) -> Result<(Handle, Events), Error> {
    let socket =
        crate::netns::route_socket_in(ns, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR)?;
    let (conn, handle, events) = rtnetlink::from_socket(socket);
    tokio::spawn(conn);
    Ok((handle, events))
}
