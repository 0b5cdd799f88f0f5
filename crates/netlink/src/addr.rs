//! Interface addresses.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use std::sync::Arc;

use crate::netlink::Netlink;
use crate::socket::{Errno, NetlinkError};

/// Errors of the `addr` module.
#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    /// EEXIST: the address is already on the link.
    #[error("add address {net} to link {index} in {netns}")]
    Add {
        index: u32,
        net: IpNetwork,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    /// EADDRNOTAVAIL: the address is not on the link.
    #[error("delete address {net} from link {index} in {netns}")]
    Delete {
        index: u32,
        net: IpNetwork,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("list addresses in {netns}")]
    List {
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
}

impl Errno for AddrError {
    fn errno(&self) -> Option<i32> {
        match self {
            Self::Add { source, .. } | Self::Delete { source, .. } | Self::List { source, .. } => {
                source.errno()
            }
        }
    }
}

/// Options for [`Netlink::add_addr_with`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AddrOptions {
    /// IPv6: skip duplicate address detection (`IFA_F_NODAD`), so the address is usable at
    /// once instead of "tentative" for about a second. Ignored for IPv4.
    pub nodad: bool,
}

/// Address scope (`ip addr` shows it as `scope global|site|link|host`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrScope {
    Universe,
    Site,
    Link,
    Host,
    Nowhere,
    Other(u8),
}

impl From<AddressScope> for AddrScope {
    fn from(scope: AddressScope) -> AddrScope {
        match scope {
            AddressScope::Universe => Self::Universe,
            AddressScope::Site => Self::Site,
            AddressScope::Link => Self::Link,
            AddressScope::Host => Self::Host,
            AddressScope::Nowhere => Self::Nowhere,
            other => Self::Other(u8::from(other)),
        }
    }
}

/// An address on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Addr {
    pub index: u32,
    /// The local address with its prefix length.
    pub net: IpNetwork,
    pub scope: AddrScope,
    /// IPv6 duplicate address detection is still running.
    pub tentative: bool,
    /// IPv6 duplicate address detection found a duplicate.
    pub dad_failed: bool,
    pub nodad: bool,
}

impl Addr {
    fn from_message(msg: &AddressMessage) -> Option<Addr> {
        let mut local = None;
        let mut address = None;
        let mut flags = AddressFlags::from_bits_retain(u32::from(msg.header.flags.bits()));
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(ip) => local = Some(*ip),
                AddressAttribute::Address(ip) => address = Some(*ip),
                // The 32-bit attribute supersedes the 8-bit header field.
                AddressAttribute::Flags(all) => flags = *all,
                _ => {}
            }
        }
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point
        // links (and equal to IFA_LOCAL otherwise). IPv6 usually sends only IFA_ADDRESS.
        let ip = local.or(address)?;
        let net = IpNetwork::new(ip, msg.header.prefix_len).ok()?;
        Some(Addr {
            index: msg.header.index,
            net,
            scope: msg.header.scope.into(),
            tentative: flags.contains(AddressFlags::Tentative),
            dad_failed: flags.contains(AddressFlags::Dadfailed),
            nodad: flags.contains(AddressFlags::Nodad),
        })
    }
}

fn family(ip: IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// The request for both RTM_NEWADDR and RTM_DELADDR.
fn addr_msg(index: u32, net: IpNetwork, options: AddrOptions) -> AddressMessage {
    let mut msg = AddressMessage::default();
    msg.header.family = family(net.ip());
    msg.header.prefix_len = net.prefix();
    msg.header.index = index;
    msg.header.scope = AddressScope::Universe;
    match net {
        IpNetwork::V4(v4) => {
            // As `ip addr add`: IFA_LOCAL is the address, IFA_ADDRESS the same when there is no
            // peer, and the broadcast address is set explicitly (the kernel does not derive it).
            msg.attributes
                .push(AddressAttribute::Local(IpAddr::V4(v4.ip())));
            msg.attributes
                .push(AddressAttribute::Address(IpAddr::V4(v4.ip())));
            if v4.prefix() < 31 {
                msg.attributes
                    .push(AddressAttribute::Broadcast(v4.broadcast()));
            }
        }
        IpNetwork::V6(v6) => {
            msg.attributes
                .push(AddressAttribute::Address(IpAddr::V6(v6.ip())));
            if options.nodad {
                msg.header.flags = AddressHeaderFlags::Nodad;
                msg.attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
    }
    msg
}

impl Netlink {
    /// Adds `net` (address + prefix length) to a link. For IPv4 the broadcast address is set
    /// too. EEXIST if the link already has it.
    pub fn add_addr(&self, index: u32, net: IpNetwork) -> Result<(), AddrError> {
        self.add_addr_with(index, net, AddrOptions::default())
    }

    /// [`Netlink::add_addr`] with options (e.g. IPv6 `nodad`).
    pub fn add_addr_with(
        &self,
        index: u32,
        net: IpNetwork,
        options: AddrOptions,
    ) -> Result<(), AddrError> {
        self.conn
            .request(
                RouteNetlinkMessage::NewAddress(addr_msg(index, net, options)),
                NLM_F_CREATE | NLM_F_EXCL,
            )
            .map(drop)
            .map_err(|source| AddrError::Add {
                index,
                net,
                netns: self.label(),
                source,
            })
    }

    /// Removes `net` from a link. EADDRNOTAVAIL if it is not there.
    pub fn del_addr(&self, index: u32, net: IpNetwork) -> Result<(), AddrError> {
        self.conn
            .request(
                RouteNetlinkMessage::DelAddress(addr_msg(index, net, AddrOptions::default())),
                0,
            )
            .map(drop)
            .map_err(|source| AddrError::Delete {
                index,
                net,
                netns: self.label(),
                source,
            })
    }

    /// Lists the addresses of one link, or of all links.
    pub fn addrs(&self, index: Option<u32>) -> Result<Vec<Addr>, AddrError> {
        let mut msg = AddressMessage::default();
        // With NETLINK_GET_STRICT_CHK the kernel filters by index; we filter again below for
        // kernels that ignore it.
        msg.header.index = index.unwrap_or(0);
        let replies = self
            .conn
            .dump(RouteNetlinkMessage::GetAddress(msg))
            .map_err(|source| AddrError::List {
                netns: self.label(),
                source,
            })?;
        Ok(replies
            .iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewAddress(addr) => Addr::from_message(addr),
                _ => None,
            })
            .filter(|addr| index.is_none_or(|i| addr.index == i))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn net(s: &str) -> IpNetwork {
        s.parse().expect("valid network")
    }

    #[test]
    fn ipv4_request_sets_local_address_and_broadcast() {
        let msg = addr_msg(3, net("198.18.5.7/24"), AddrOptions::default());
        assert_eq!(msg.header.family, AddressFamily::Inet);
        assert_eq!(msg.header.prefix_len, 24);
        assert_eq!(msg.header.index, 3);
        let ip = IpAddr::V4(Ipv4Addr::new(198, 18, 5, 7));
        assert!(msg.attributes.contains(&AddressAttribute::Local(ip)));
        assert!(msg.attributes.contains(&AddressAttribute::Address(ip)));
        assert!(
            msg.attributes
                .contains(&AddressAttribute::Broadcast(Ipv4Addr::new(198, 18, 5, 255)))
        );
    }

    #[test]
    fn point_to_point_prefixes_have_no_broadcast() {
        for n in ["198.18.0.1/31", "198.18.0.1/32"] {
            let msg = addr_msg(1, net(n), AddrOptions::default());
            assert!(
                !msg.attributes
                    .iter()
                    .any(|a| matches!(a, AddressAttribute::Broadcast(_))),
                "{n}"
            );
        }
    }

    #[test]
    fn ipv6_nodad_sets_the_flag() {
        let msg = addr_msg(1, net("fd42:b347::1/64"), AddrOptions { nodad: true });
        assert_eq!(msg.header.family, AddressFamily::Inet6);
        assert!(
            msg.attributes
                .contains(&AddressAttribute::Flags(AddressFlags::Nodad))
        );
        let parsed = Addr::from_message(&msg).expect("parse back");
        assert_eq!(parsed.net, net("fd42:b347::1/64"));
        assert!(parsed.nodad);
    }

    #[test]
    fn parse_prefers_local_over_peer_address() {
        let mut msg = addr_msg(2, net("198.18.0.1/24"), AddrOptions::default());
        msg.attributes
            .retain(|a| !matches!(a, AddressAttribute::Address(_)));
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(Ipv4Addr::new(
                198, 18, 0, 2,
            ))));
        let addr = Addr::from_message(&msg).expect("parse");
        assert_eq!(addr.net, net("198.18.0.1/24"));
        assert_eq!(addr.scope, AddrScope::Universe);
    }
}
