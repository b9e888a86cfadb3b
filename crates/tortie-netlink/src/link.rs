//! Links: look up, create veth pairs across namespaces, change MAC/MTU/state, delete.

use futures::TryStreamExt;
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{Handle, LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::{Error, NetNs};

/// A MAC address.
pub type Mac = [u8; 6];

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<Mac, Error> {
    let invalid = || Error::Invalid {
        what: "MAC address".to_string(),
        reason: format!("{s:?} is not six colon-separated hex bytes"),
    };
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut out {
        let p = parts.next().ok_or_else(invalid)?;
        if p.len() != 2 {
            return Err(invalid());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| invalid())?;
    }
    if parts.next().is_some() {
        return Err(invalid());
    }
    Ok(out)
}

/// What tortie needs to know about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Hardware address, when the link has a 6-byte one.
    pub mac: Option<Mac>,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// `veth`, `bridge`, `vxlan`... when the kernel reports a kind.
    pub kind: Option<String>,
}

impl Link {
    /// Reads the fields tortie uses out of a link message.
    pub fn from_message(m: &LinkMessage) -> Link {
        let mut link = Link {
            index: m.header.index,
            name: String::new(),
            mac: None,
            mtu: 0,
            up: m.header.flags.contains(LinkFlags::Up),
            kind: None,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => link.name = n.clone(),
                LinkAttribute::Address(b) => link.mac = <Mac>::try_from(b.as_slice()).ok(),
                LinkAttribute::Mtu(v) => link.mtu = *v,
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        if let LinkInfo::Kind(k) = i {
                            link.kind = Some(k.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

/// Looks a link up by name; `None` if there is no such link.
pub async fn link_by_name(h: &Handle, name: &str) -> Result<Option<Link>, Error> {
    let mut s = h.link().get().match_name(name).execute();
    match s.try_next().await {
        Ok(Some(m)) => Ok(Some(Link::from_message(&m))),
        Ok(None) => Ok(None),
        Err(e) => {
            let e = Error::netlink(format!("get link {name}"), e);
            if e.is_not_found() { Ok(None) } else { Err(e) }
        }
    }
}

/// Lists every link in the handle's namespace.
pub async fn list_links(h: &Handle) -> Result<Vec<Link>, Error> {
    h.link()
        .get()
        .execute()
        .map_ok(|m| Link::from_message(&m))
        .try_collect()
        .await
        .map_err(|e| Error::netlink("list links", e))
}

/// A veth pair to create: `name` in the handle's namespace, `peer_name` in `peer_netns`.
#[derive(Debug, Clone)]
pub struct VethPair<'a> {
    pub name: String,
    pub peer_name: String,
    /// The namespace the peer is created in.
    pub peer_netns: &'a NetNs,
    /// MTU of both ends.
    pub mtu: Option<u32>,
    /// MAC of the local end (`name`).
    pub mac: Option<Mac>,
    /// MAC of the peer (`peer_name`); the kernel picks one when `None`.
    pub peer_mac: Option<Mac>,
}

impl VethPair<'_> {
    /// The `RTM_NEWLINK` message: the local end with the peer described in `IFLA_INFO_DATA`,
    /// carrying `IFLA_NET_NS_FD` so the kernel creates it directly in the peer namespace.
    pub fn to_message(&self) -> LinkMessage {
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new().name(self.peer_name.clone());
        if let Some(mtu) = self.mtu {
            peer = peer.mtu(mtu);
        }
        if let Some(mac) = self.peer_mac {
            peer = peer.address(mac.to_vec());
        }
        let peer = peer.setns_by_fd(self.peer_netns.raw_fd()).build();
        let mut local = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(self.name.clone())
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)));
        if let Some(mtu) = self.mtu {
            local = local.mtu(mtu);
        }
        if let Some(mac) = self.mac {
            local = local.address(mac.to_vec());
        }
        local.build()
    }
}

/// Creates a veth pair (fails with EEXIST if `name` exists here or `peer_name` in the peer
/// namespace). Both ends are left down.
pub async fn create_veth(h: &Handle, pair: &VethPair<'_>) -> Result<(), Error> {
    h.link()
        .add(pair.to_message())
        .execute()
        .await
        .map_err(|e| {
            Error::netlink(
                format!(
                    "create veth {} (peer {} in {})",
                    pair.name,
                    pair.peer_name,
                    pair.peer_netns.label()
                ),
                e,
            )
        })
}

/// Changes to make to a link; `None` fields are left alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkChange {
    pub up: Option<bool>,
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
}

/// Applies `change` to the link with index `index`.
pub async fn set_link(h: &Handle, index: u32, change: &LinkChange) -> Result<(), Error> {
    let mut b = LinkUnspec::new_with_index(index);
    match change.up {
        Some(true) => b = b.up(),
        Some(false) => b = b.down(),
        None => {}
    }
    if let Some(mtu) = change.mtu {
        b = b.mtu(mtu);
    }
    if let Some(mac) = change.mac {
        b = b.address(mac.to_vec());
    }
    h.link()
        .set(b.build())
        .execute()
        .await
        .map_err(|e| Error::netlink(format!("set link {index}"), e))
}

/// Deletes the link called `name`. Returns `false` if it did not exist.
pub async fn delete_link(h: &Handle, name: &str) -> Result<bool, Error> {
    let Some(link) = link_by_name(h, name).await? else {
        return Ok(false);
    };
    match h.link().del(link.index).execute().await {
        Ok(()) => Ok(true),
        Err(e) => {
            let e = Error::netlink(format!("delete link {name}"), e);
            if e.is_not_found() { Ok(false) } else { Err(e) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let m = parse_mac("ee:ee:ee:ee:ee:ee").expect("parse");
        assert_eq!(m, [0xee; 6]);
        assert_eq!(format_mac(&[0x0a, 0, 0xff, 1, 2, 3]), "0a:00:ff:01:02:03");
        assert!(parse_mac("ee:ee:ee:ee:ee").is_err());
        assert!(parse_mac("ee:ee:ee:ee:ee:ee:ee").is_err());
        assert!(parse_mac("eee:e:ee:ee:ee:ee").is_err());
        assert!(parse_mac("zz:ee:ee:ee:ee:ee").is_err());
    }
}
