//! Routes as plain values, and the netlink calls that add, replace, delete and list them.
//!
//! A [`Route`] converts to exactly one `RTM_NEWROUTE`/`RTM_DELROUTE` message
//! ([`Route::to_message`]) and back ([`Route::from_message`]), so callers build and compare
//! routes as data and only [`add_route`], [`replace_route`] and [`delete_route`] touch the
//! kernel.

use std::net::IpAddr;

use futures::TryStreamExt;
use ipnet::IpNet;
use netlink_packet_core::{NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::Handle;
use rtnetlink::packet_core as netlink_packet_core;

use crate::Error;

/// The main routing table.
pub const MAIN_TABLE: u32 = 254;

/// What the kernel does with matching packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKind {
    /// Forward (via a gateway or straight out of a device).
    Unicast,
    /// Drop silently.
    Blackhole,
    /// Drop with ICMP unreachable.
    Unreachable,
    /// Drop with ICMP prohibited.
    Prohibit,
    /// A local, broadcast, ... route; listed but not created by tortie.
    Other(u8),
}

/// How far the destination is (`scope` in `ip route`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Reached through a gateway (the default).
    Universe,
    /// Directly on the link (`scope link`).
    Link,
    /// This host.
    Host,
    Other(u8),
}

/// A route. Fields are public: build with the constructors and `with_*`/setters, or by hand.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Route {
    pub dst: IpNet,
    pub kind: RouteKind,
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// `onlink`: the gateway is on the link even if no address says so.
    pub onlink: bool,
    pub scope: Scope,
    /// Protocol tag (`proto`), e.g. [`crate::WORKLOAD_ROUTE_PROTOCOL`]; 0 is unspecified.
    pub protocol: u8,
    pub table: u32,
    /// Metric (`metric`/`priority`).
    pub metric: Option<u32>,
    /// Preferred source address (`src`).
    pub src: Option<IpAddr>,
}

impl Route {
    /// A unicast route to `dst` in the main table with no next hop yet.
    pub fn unicast(dst: IpNet) -> Route {
        Route {
            dst: dst.trunc(),
            kind: RouteKind::Unicast,
            gateway: None,
            oif: None,
            onlink: false,
            scope: Scope::Universe,
            protocol: 0,
            table: MAIN_TABLE,
            metric: None,
            src: None,
        }
    }

    /// `dst dev <oif> scope link`.
    pub fn device(dst: IpNet, oif: u32) -> Route {
        Route {
            oif: Some(oif),
            scope: Scope::Link,
            ..Route::unicast(dst)
        }
    }

    /// `dst via <gw> dev <oif> onlink`: a gateway that is reachable on the link without an
    /// address in its subnet (Calico's `default via 169.254.1.1 dev eth0 onlink`).
    pub fn via_onlink(dst: IpNet, gateway: IpAddr, oif: u32) -> Route {
        Route {
            gateway: Some(gateway),
            oif: Some(oif),
            onlink: true,
            ..Route::unicast(dst)
        }
    }

    /// `dst via <gw>` (the kernel picks the device).
    pub fn via(dst: IpNet, gateway: IpAddr) -> Route {
        Route {
            gateway: Some(gateway),
            ..Route::unicast(dst)
        }
    }

    /// `blackhole dst`.
    pub fn blackhole(dst: IpNet) -> Route {
        Route {
            kind: RouteKind::Blackhole,
            ..Route::unicast(dst)
        }
    }

    /// Sets the protocol tag.
    pub fn with_protocol(mut self, protocol: u8) -> Route {
        self.protocol = protocol;
        self
    }

    /// Sets the table.
    pub fn with_table(mut self, table: u32) -> Route {
        self.table = table;
        self
    }

    /// Sets the metric.
    pub fn with_metric(mut self, metric: u32) -> Route {
        self.metric = Some(metric);
        self
    }

    fn family(&self) -> AddressFamily {
        if self.dst.addr().is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        }
    }

    /// Checks the route can be expressed: gateway family matches, a device or gateway for
    /// unicast routes.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |reason: &str| {
            Err(Error::Invalid {
                what: format!("route to {}", self.dst),
                reason: reason.to_string(),
            })
        };
        if let Some(gw) = self.gateway
            && gw.is_ipv4() != self.dst.addr().is_ipv4()
        {
            return bad("gateway and destination are of different IP families");
        }
        if self.kind == RouteKind::Unicast && self.gateway.is_none() && self.oif.is_none() {
            return bad("a unicast route needs a gateway or an output interface");
        }
        if self.onlink && self.gateway.is_none() {
            return bad("onlink needs a gateway");
        }
        Ok(())
    }

    /// The netlink message for this route.
    pub fn to_message(&self) -> RouteMessage {
        let mut m = RouteMessage::default();
        m.header.address_family = self.family();
        m.header.destination_prefix_length = self.dst.prefix_len();
        m.header.protocol = RouteProtocol::from(self.protocol);
        m.header.scope = match self.scope {
            Scope::Universe => RouteScope::Universe,
            Scope::Link => RouteScope::Link,
            Scope::Host => RouteScope::Host,
            Scope::Other(v) => RouteScope::from(v),
        };
        m.header.kind = match self.kind {
            RouteKind::Unicast => RouteType::Unicast,
            RouteKind::Blackhole => RouteType::BlackHole,
            RouteKind::Unreachable => RouteType::Unreachable,
            RouteKind::Prohibit => RouteType::Prohibit,
            RouteKind::Other(v) => RouteType::from(v),
        };
        if self.onlink {
            m.header.flags |= RouteFlags::Onlink;
        }
        if self.table < 256 {
            m.header.table = self.table as u8;
        } else {
            m.header.table = 252; // RT_TABLE_COMPAT; the attribute carries the real id
        }
        m.attributes.push(RouteAttribute::Table(self.table));
        if self.dst.prefix_len() > 0 {
            m.attributes
                .push(RouteAttribute::Destination(self.dst.addr().into()));
        }
        if let Some(gw) = self.gateway {
            m.attributes.push(RouteAttribute::Gateway(gw.into()));
        }
        if let Some(oif) = self.oif {
            m.attributes.push(RouteAttribute::Oif(oif));
        }
        if let Some(metric) = self.metric {
            m.attributes.push(RouteAttribute::Priority(metric));
        }
        if let Some(src) = self.src {
            m.attributes.push(RouteAttribute::PrefSource(src.into()));
        }
        m
    }

    /// Reads a route out of a kernel message; `None` for families other than IPv4/IPv6 or
    /// multipath routes (tortie creates neither).
    pub fn from_message(m: &RouteMessage) -> Option<Route> {
        let zero: IpAddr = match m.header.address_family {
            AddressFamily::Inet => std::net::Ipv4Addr::UNSPECIFIED.into(),
            AddressFamily::Inet6 => std::net::Ipv6Addr::UNSPECIFIED.into(),
            _ => return None,
        };
        let mut dst = zero;
        let mut r = Route::unicast(IpNet::new(zero, 0).ok()?);
        r.table = u32::from(m.header.table);
        for a in &m.attributes {
            match a {
                RouteAttribute::Destination(a) => dst = ip_of(a)?,
                RouteAttribute::Gateway(a) => r.gateway = Some(ip_of(a)?),
                RouteAttribute::Oif(i) => r.oif = Some(*i),
                RouteAttribute::Table(t) => r.table = *t,
                RouteAttribute::Priority(p) => r.metric = Some(*p),
                RouteAttribute::PrefSource(a) => r.src = Some(ip_of(a)?),
                RouteAttribute::MultiPath(_) => return None,
                _ => {}
            }
        }
        r.dst = IpNet::new(dst, m.header.destination_prefix_length).ok()?;
        r.protocol = u8::from(m.header.protocol);
        r.onlink = m.header.flags.contains(RouteFlags::Onlink);
        r.scope = match m.header.scope {
            RouteScope::Universe => Scope::Universe,
            RouteScope::Link => Scope::Link,
            RouteScope::Host => Scope::Host,
            other => Scope::Other(u8::from(other)),
        };
        r.kind = match m.header.kind {
            RouteType::Unicast => RouteKind::Unicast,
            RouteType::BlackHole => RouteKind::Blackhole,
            RouteType::Unreachable => RouteKind::Unreachable,
            RouteType::Prohibit => RouteKind::Prohibit,
            other => RouteKind::Other(u8::from(other)),
        };
        Some(r)
    }
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some((*v4).into()),
        RouteAddress::Inet6(v6) => Some((*v6).into()),
        _ => None,
    }
}

async fn send(h: &Handle, msg: RouteNetlinkMessage, flags: u16, what: String) -> Result<(), Error> {
    let mut req = netlink_packet_core::NetlinkMessage::from(msg);
    req.header.flags = flags;
    let mut h = h.clone();
    let mut resp = h
        .request(req)
        .map_err(|e| Error::netlink(what.clone(), e))?;
    use futures::StreamExt;
    while let Some(m) = resp.next().await {
        if let netlink_packet_core::NetlinkPayload::Error(err) = m.payload
            && err.code.is_some()
        {
            return Err(Error::netlink(what, rtnetlink::Error::NetlinkError(err)));
        }
    }
    Ok(())
}

/// One route change, as [`add_route`], [`replace_route`] and [`delete_route`] make it; also the
/// unit of [`crate::batch::RouteSocket`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteRequest {
    /// Create; fails with EEXIST if a route with the same destination, table and metric exists.
    Add(Route),
    /// Create or replace the route with the same destination, table and metric.
    Replace(Route),
    /// Delete the matching route (see [`delete_route`] for what matches).
    Delete(Route),
}

impl RouteRequest {
    /// The route it is about.
    pub fn route(&self) -> &Route {
        match self {
            RouteRequest::Add(r) | RouteRequest::Replace(r) | RouteRequest::Delete(r) => r,
        }
    }

    /// The netlink message and its header flags (always with `NLM_F_ACK`).
    pub fn message(&self) -> (RouteNetlinkMessage, u16) {
        match self {
            RouteRequest::Add(r) => (
                RouteNetlinkMessage::NewRoute(r.to_message()),
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
            ),
            RouteRequest::Replace(r) => (
                RouteNetlinkMessage::NewRoute(r.to_message()),
                NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
            ),
            RouteRequest::Delete(r) => {
                let mut m = r.to_message();
                m.header.scope = RouteScope::NoWhere; // match any scope, as `ip route del` does
                m.header.flags = RouteFlags::empty();
                (RouteNetlinkMessage::DelRoute(m), NLM_F_REQUEST | NLM_F_ACK)
            }
        }
    }

    /// What errors name the request by: `add route Route { .. }`.
    pub fn describe(&self) -> String {
        match self {
            RouteRequest::Add(r) => format!("add route {r:?}"),
            RouteRequest::Replace(r) => format!("replace route {r:?}"),
            RouteRequest::Delete(r) => format!("delete route {r:?}"),
        }
    }
}

async fn request(h: &Handle, req: RouteRequest) -> Result<(), Error> {
    let (msg, flags) = req.message();
    send(h, msg, flags, req.describe()).await
}

/// Adds `route`; fails with EEXIST ([`Error::is_exists`]) if an equal route exists.
pub async fn add_route(h: &Handle, route: &Route) -> Result<(), Error> {
    route.validate()?;
    request(h, RouteRequest::Add(route.clone())).await
}

/// Adds `route`, replacing any route to the same destination (same table, metric, TOS).
pub async fn replace_route(h: &Handle, route: &Route) -> Result<(), Error> {
    route.validate()?;
    request(h, RouteRequest::Replace(route.clone())).await
}

/// Deletes the route matching `route`'s destination, table, kind and (when non-zero)
/// protocol, gateway and output interface; any scope matches. Returns `false` if no such
/// route existed.
pub async fn delete_route(h: &Handle, route: &Route) -> Result<bool, Error> {
    match request(h, RouteRequest::Delete(route.clone())).await {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Which routes [`list_routes`] returns; `None` fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteFilter {
    /// `Some(false)` for IPv4 only, `Some(true)` for IPv6 only.
    pub ipv6: Option<bool>,
    pub table: Option<u32>,
    pub protocol: Option<u8>,
    pub oif: Option<u32>,
}

impl RouteFilter {
    /// Routes of one protocol tag in the main table, both families.
    pub fn protocol(protocol: u8) -> RouteFilter {
        RouteFilter {
            protocol: Some(protocol),
            table: Some(MAIN_TABLE),
            ..RouteFilter::default()
        }
    }

    /// Whether `r` passes the filter.
    pub fn matches(&self, r: &Route) -> bool {
        self.ipv6.is_none_or(|v6| r.dst.addr().is_ipv6() == v6)
            && self.table.is_none_or(|t| r.table == t)
            && self.protocol.is_none_or(|p| r.protocol == p)
            && self.oif.is_none_or(|o| r.oif == Some(o))
    }
}

/// Lists routes (all tables dumped, then filtered), sorted.
pub async fn list_routes(h: &Handle, filter: &RouteFilter) -> Result<Vec<Route>, Error> {
    let families: &[bool] = match filter.ipv6 {
        Some(false) => &[false],
        Some(true) => &[true],
        None => &[false, true],
    };
    let mut out = Vec::new();
    for &v6 in families {
        let mut m = RouteMessage::default();
        m.header.address_family = if v6 {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        let msgs: Vec<RouteMessage> = h
            .route()
            .get(m)
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::netlink("list routes", e))?;
        out.extend(
            msgs.iter()
                .filter_map(Route::from_message)
                .filter(|r| filter.matches(r)),
        );
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().expect("net")
    }

    #[test]
    fn round_trips_through_messages() {
        let routes = [
            Route::device(net("10.244.1.5/32"), 7).with_protocol(80),
            Route::via_onlink(net("0.0.0.0/0"), "169.254.1.1".parse().expect("ip"), 2),
            Route::via_onlink(
                net("::/0"),
                "fe80::ecee:eeff:feee:eeee".parse().expect("ip"),
                2,
            ),
            Route::blackhole(net("10.244.3.0/26")).with_protocol(81),
            Route::via(net("10.244.64.0/26"), "198.18.0.2".parse().expect("ip"))
                .with_table(1000)
                .with_metric(5),
        ];
        for r in routes {
            let m = r.to_message();
            assert_eq!(Route::from_message(&m), Some(r.clone()), "{m:?}");
        }
    }

    #[test]
    fn message_fields() {
        let r = Route::device(net("10.244.1.5/32"), 7).with_protocol(80);
        let m = r.to_message();
        assert_eq!(m.header.scope, RouteScope::Link);
        assert_eq!(m.header.kind, RouteType::Unicast);
        assert_eq!(u8::from(m.header.protocol), 80);
        assert_eq!(m.header.table, 254);
        let d = Route::via_onlink(net("0.0.0.0/0"), "169.254.1.1".parse().expect("ip"), 2);
        let m = d.to_message();
        assert!(m.header.flags.contains(RouteFlags::Onlink));
        assert!(
            !m.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Destination(_))),
            "a default route carries no RTA_DST"
        );
        assert_eq!(
            Route::blackhole(net("10.244.3.0/26"))
                .to_message()
                .header
                .kind,
            RouteType::BlackHole
        );
        // Host bits are dropped.
        assert_eq!(Route::unicast(net("10.1.2.3/24")).dst, net("10.1.2.0/24"));
    }

    #[test]
    fn validation() {
        let v6gw: IpAddr = "fe80::1".parse().expect("ip");
        assert!(Route::via(net("10.0.0.0/8"), v6gw).validate().is_err());
        assert!(Route::unicast(net("10.0.0.0/8")).validate().is_err());
        assert!(Route::blackhole(net("10.0.0.0/8")).validate().is_ok());
        let mut r = Route::device(net("10.0.0.0/8"), 1);
        r.onlink = true;
        assert!(r.validate().is_err());
    }

    #[test]
    fn filters() {
        let a = Route::device(net("10.244.1.5/32"), 7).with_protocol(80);
        let b = Route::device(net("fd00::5/128"), 7).with_protocol(80);
        let c = Route::blackhole(net("10.244.3.0/26")).with_protocol(81);
        let f = RouteFilter::protocol(80);
        assert!(f.matches(&a) && f.matches(&b) && !f.matches(&c));
        let f = RouteFilter {
            ipv6: Some(true),
            ..RouteFilter::default()
        };
        assert!(!f.matches(&a) && f.matches(&b));
        let f = RouteFilter {
            oif: Some(8),
            ..RouteFilter::default()
        };
        assert!(!f.matches(&a));
    }
}
