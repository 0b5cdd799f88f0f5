//! Routes.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol,
    RouteScope as PacketScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use std::sync::Arc;

use crate::netlink::Netlink;
use crate::socket::{Errno, NetlinkError};

/// The main routing table (`ip route` without `table`).
pub const MAIN_TABLE: u32 = 254;

/// Errors of the `route` module.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// EEXIST: an identical route (same destination, table, metric) exists.
    #[error("add route {route} in {netns}")]
    Add {
        route: String,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("replace route {route} in {netns}")]
    Replace {
        route: String,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    /// ESRCH: no such route.
    #[error("delete route {route} in {netns}")]
    Delete {
        route: String,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("list {family} routes of table {table} in {netns}")]
    List {
        family: IpFamily,
        table: u32,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("route {route}: gateway {gateway} is not of the destination's address family")]
    MixedFamilies { route: String, gateway: IpAddr },
}

impl Errno for RouteError {
    fn errno(&self) -> Option<i32> {
        match self {
            Self::Add { source, .. }
            | Self::Replace { source, .. }
            | Self::Delete { source, .. }
            | Self::List { source, .. } => source.errno(),
            Self::MixedFamilies { .. } => None,
        }
    }
}

/// IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    V4,
    V6,
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        })
    }
}

impl IpFamily {
    pub fn of(ip: IpAddr) -> IpFamily {
        match ip {
            IpAddr::V4(_) => Self::V4,
            IpAddr::V6(_) => Self::V6,
        }
    }

    /// `0.0.0.0/0` or `::/0`.
    pub fn any(self) -> IpNetwork {
        match self {
            Self::V4 => IpNetwork::V4(ANY_V4),
            Self::V6 => IpNetwork::V6(ANY_V6),
        }
    }

    fn address_family(self) -> AddressFamily {
        match self {
            Self::V4 => AddressFamily::Inet,
            Self::V6 => AddressFamily::Inet6,
        }
    }
}

/// Route scope: `Universe` for routes via a gateway, `Link` for directly reachable networks,
/// `Host` for local addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteScope {
    #[default]
    Universe,
    Link,
    Host,
}

impl From<RouteScope> for PacketScope {
    fn from(scope: RouteScope) -> PacketScope {
        match scope {
            RouteScope::Universe => PacketScope::Universe,
            RouteScope::Link => PacketScope::Link,
            RouteScope::Host => PacketScope::Host,
        }
    }
}

/// A unicast route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination; `0.0.0.0/0` or `::/0` for a default route.
    pub dst: IpNetwork,
    pub gateway: Option<IpAddr>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// `None` is the main table.
    pub table: Option<u32>,
    /// Priority; lower wins.
    pub metric: Option<u32>,
    pub scope: RouteScope,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
    /// Preferred source address.
    pub src: Option<IpAddr>,
}

impl Route {
    /// A route to `dst` with everything else unset (main table, scope universe).
    pub fn new(dst: IpNetwork) -> Route {
        Route {
            dst,
            gateway: None,
            oif: None,
            table: None,
            metric: None,
            scope: RouteScope::Universe,
            mtu: None,
            advmss: None,
            src: None,
        }
    }

    /// The default route (`0.0.0.0/0` or `::/0`, following `gateway`'s family) via `gateway`.
    pub fn default_via(gateway: IpAddr) -> Route {
        Route {
            gateway: Some(gateway),
            ..Route::new(IpFamily::of(gateway).any())
        }
    }

    fn family(&self) -> IpFamily {
        IpFamily::of(self.dst.ip())
    }

    fn table_id(&self) -> u32 {
        self.table.unwrap_or(MAIN_TABLE)
    }

    fn check(&self) -> Result<(), RouteError> {
        for ip in self.gateway.iter().chain(self.src.iter()) {
            if IpFamily::of(*ip) != self.family() {
                return Err(RouteError::MixedFamilies {
                    route: self.to_string(),
                    gateway: *ip,
                });
            }
        }
        Ok(())
    }

    /// The request for RTM_NEWROUTE (`for_delete == false`) or RTM_DELROUTE.
    fn to_message(&self, for_delete: bool) -> RouteMessage {
        let table = self.table_id();
        let mut msg = RouteMessage::default();
        msg.header.address_family = self.family().address_family();
        msg.header.destination_prefix_length = self.dst.prefix();
        // Tables above 255 only fit in RTA_TABLE; the header then says "unspec".
        msg.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
        msg.attributes.push(RouteAttribute::Table(table));
        if for_delete {
            // As `ip route del`: scope NOWHERE, protocol and type unspec act as wildcards, so the
            // route is matched by destination, table, and whatever else is given.
            msg.header.scope = PacketScope::NoWhere;
            msg.header.protocol = RouteProtocol::Unspec;
            msg.header.kind = RouteType::Unspec;
        } else {
            msg.header.scope = self.scope.into();
            msg.header.protocol = RouteProtocol::Boot;
            msg.header.kind = RouteType::Unicast;
        }
        if self.dst.prefix() > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(route_address(self.dst.ip())));
        }
        if let Some(gw) = self.gateway {
            msg.attributes
                .push(RouteAttribute::Gateway(route_address(gw)));
        }
        if let Some(oif) = self.oif {
            msg.attributes.push(RouteAttribute::Oif(oif));
        }
        if let Some(metric) = self.metric {
            msg.attributes.push(RouteAttribute::Priority(metric));
        }
        if let Some(src) = self.src {
            msg.attributes
                .push(RouteAttribute::PrefSource(route_address(src)));
        }
        let metrics: Vec<RouteMetric> = self
            .mtu
            .map(RouteMetric::Mtu)
            .into_iter()
            .chain(self.advmss.map(RouteMetric::Advmss))
            .collect();
        // Metrics are matched exactly on delete; leave them out so a delete by destination
        // works whatever they are.
        if !metrics.is_empty() && !for_delete {
            msg.attributes.push(RouteAttribute::Metrics(metrics));
        }
        msg
    }

    /// Parses a dumped route; `None` for what this type cannot represent (non-unicast types,
    /// multipath routes).
    fn from_message(msg: &RouteMessage) -> Option<Route> {
        if msg.header.kind != RouteType::Unicast {
            return None;
        }
        let family = match msg.header.address_family {
            AddressFamily::Inet => IpFamily::V4,
            AddressFamily::Inet6 => IpFamily::V6,
            _ => return None,
        };
        let mut route = Route::new(family.any());
        let mut dst = route.dst.ip();
        route.table = Some(u32::from(msg.header.table));
        route.scope = match msg.header.scope {
            PacketScope::Universe => RouteScope::Universe,
            PacketScope::Link => RouteScope::Link,
            PacketScope::Host => RouteScope::Host,
            _ => return None,
        };
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(addr) => dst = ip_of(addr)?,
                RouteAttribute::Gateway(addr) => route.gateway = Some(ip_of(addr)?),
                RouteAttribute::PrefSource(addr) => route.src = Some(ip_of(addr)?),
                RouteAttribute::Oif(oif) => route.oif = Some(*oif),
                RouteAttribute::Priority(metric) => route.metric = Some(*metric),
                RouteAttribute::Table(table) => route.table = Some(*table),
                RouteAttribute::MultiPath(_) => return None,
                RouteAttribute::Metrics(metrics) => {
                    for metric in metrics {
                        match metric {
                            RouteMetric::Mtu(mtu) => route.mtu = Some(*mtu),
                            RouteMetric::Advmss(mss) => route.advmss = Some(*mss),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        route.dst = IpNetwork::new(dst, msg.header.destination_prefix_length).ok()?;
        Some(route)
    }
}

// Evaluated at compile time: a bad prefix would fail the build, not a caller.
const ANY_V4: Ipv4Network = match Ipv4Network::new_checked(Ipv4Addr::UNSPECIFIED, 0) {
    Some(net) => net,
    None => panic!("0 is a valid IPv4 prefix length"),
};
const ANY_V6: Ipv6Network = match Ipv6Network::new_checked(Ipv6Addr::UNSPECIFIED, 0) {
    Some(net) => net,
    None => panic!("0 is a valid IPv6 prefix length"),
};

fn route_address(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(v4) => RouteAddress::Inet(v4),
        IpAddr::V6(v6) => RouteAddress::Inet6(v6),
    }
}

fn ip_of(addr: &RouteAddress) -> Option<IpAddr> {
    match addr {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

impl fmt::Display for Route {
    /// Like `ip route`: `198.18.1.0/24 via 198.18.0.1 dev 3 table 254 metric 100`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.dst)?;
        if let Some(gw) = self.gateway {
            write!(f, " via {gw}")?;
        }
        if let Some(oif) = self.oif {
            write!(f, " dev {oif}")?;
        }
        if let Some(src) = self.src {
            write!(f, " src {src}")?;
        }
        if let Some(table) = self.table {
            write!(f, " table {table}")?;
        }
        if let Some(metric) = self.metric {
            write!(f, " metric {metric}")?;
        }
        match self.scope {
            RouteScope::Universe => {}
            RouteScope::Link => write!(f, " scope link")?,
            RouteScope::Host => write!(f, " scope host")?,
        }
        if let Some(mtu) = self.mtu {
            write!(f, " mtu {mtu}")?;
        }
        if let Some(mss) = self.advmss {
            write!(f, " advmss {mss}")?;
        }
        Ok(())
    }
}

impl Netlink {
    /// Adds a route (NLM_F_CREATE | NLM_F_EXCL): EEXIST if an identical one exists.
    pub fn add_route(&self, route: &Route) -> Result<(), RouteError> {
        route.check()?;
        self.conn
            .request(
                RouteNetlinkMessage::NewRoute(route.to_message(false)),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map(drop)
            .map_err(|source| RouteError::Add {
                route: route.to_string(),
                netns: self.label(),
                source,
            })
    }

    /// Adds the route, or replaces the one with the same destination, table and metric.
    pub fn replace_route(&self, route: &Route) -> Result<(), RouteError> {
        route.check()?;
        self.conn
            .request(
                RouteNetlinkMessage::NewRoute(route.to_message(false)),
                NLM_F_CREATE | NLM_F_REPLACE,
            )
            .map(drop)
            .map_err(|source| RouteError::Replace {
                route: route.to_string(),
                netns: self.label(),
                source,
            })
    }

    /// Deletes the route matching `route`'s destination, table and whichever of gateway, oif,
    /// metric and src are set. ESRCH (see [`Errno::is_not_found`]) if there is none.
    pub fn del_route(&self, route: &Route) -> Result<(), RouteError> {
        route.check()?;
        self.conn
            .request(RouteNetlinkMessage::DelRoute(route.to_message(true)), 0)
            .map(drop)
            .map_err(|source| RouteError::Delete {
                route: route.to_string(),
                netns: self.label(),
                source,
            })
    }

    /// Lists the unicast routes of `family` in `table` (`None`: the main table). Multipath and
    /// non-unicast routes (local, broadcast, blackhole, ...) are left out.
    pub fn routes(&self, family: IpFamily, table: Option<u32>) -> Result<Vec<Route>, RouteError> {
        let table = table.unwrap_or(MAIN_TABLE);
        let mut msg = RouteMessage::default();
        msg.header.address_family = family.address_family();
        let replies = self
            .conn
            .dump(RouteNetlinkMessage::GetRoute(msg))
            .map_err(|source| RouteError::List {
                family,
                table,
                netns: self.label(),
                source,
            })?;
        Ok(replies
            .iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewRoute(route) => Route::from_message(route),
                _ => None,
            })
            .filter(|route| route.table == Some(table))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().expect("valid network")
    }

    fn full_route() -> Route {
        Route {
            gateway: Some("198.18.0.1".parse().expect("ip")),
            oif: Some(3),
            table: Some(1000),
            metric: Some(100),
            scope: RouteScope::Universe,
            mtu: Some(1400),
            advmss: Some(1360),
            src: Some("198.18.0.2".parse().expect("ip")),
            ..Route::new(net("198.18.7.0/24"))
        }
    }

    #[test]
    fn add_message_round_trips_through_the_parser() {
        let route = full_route();
        let msg = route.to_message(false);
        assert_eq!(msg.header.table, RouteHeader::RT_TABLE_UNSPEC);
        assert!(msg.attributes.contains(&RouteAttribute::Table(1000)));
        assert_eq!(Route::from_message(&msg), Some(route));
    }

    #[test]
    fn delete_message_uses_wildcards_and_no_metrics() {
        let msg = full_route().to_message(true);
        assert_eq!(msg.header.scope, PacketScope::NoWhere);
        assert_eq!(msg.header.kind, RouteType::Unspec);
        assert!(
            !msg.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Metrics(_)))
        );
    }

    #[test]
    fn default_route_has_no_destination_attribute() {
        let route = Route::default_via("fd42:b347::1".parse().expect("ip"));
        assert_eq!(route.dst, net("::/0"));
        let msg = route.to_message(false);
        assert_eq!(msg.header.table, 254);
        assert_eq!(msg.header.address_family, AddressFamily::Inet6);
        assert!(
            !msg.attributes
                .iter()
                .any(|a| matches!(a, RouteAttribute::Destination(_)))
        );
    }

    #[test]
    fn mixed_families_are_rejected_before_the_kernel() {
        let route = Route {
            gateway: Some("fd42:b347::1".parse().expect("ip")),
            ..Route::new(net("198.18.0.0/24"))
        };
        assert!(matches!(
            route.check(),
            Err(RouteError::MixedFamilies { .. })
        ));
    }

    #[test]
    fn display_reads_like_ip_route() {
        assert_eq!(
            full_route().to_string(),
            "198.18.7.0/24 via 198.18.0.1 dev 3 src 198.18.0.2 table 1000 metric 100 mtu 1400 advmss 1360"
        );
    }
}
