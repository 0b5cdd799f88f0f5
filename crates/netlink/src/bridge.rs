//! Bridges, bridge-port settings and bridge VLANs.

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    AfSpecBridge, BridgeFlag, BridgeVlanInfo, BridgeVlanInfoFlags, InfoBridge, InfoBridgePort,
    InfoData, InfoKind, InfoPortData, InfoPortKind, LinkAttribute, LinkExtentMask, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::link::{Link, LinkError, Mac, link_msg};
use std::sync::Arc;

use crate::name::{IfNameError, check_ifname};
use crate::netlink::Netlink;
use crate::socket::{Errno, NetlinkError};

/// Errors of the `bridge` module.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// EEXIST here (see [`Errno::is_exists`]) lets concurrent creators fall back to a lookup;
    /// [`Netlink::ensure_bridge`] does exactly that.
    #[error("create bridge {name} in {netns}")]
    Create {
        name: String,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    /// Refused before anything reached the kernel.
    #[error("refuse to name a bridge")]
    BadName(#[source] IfNameError),
    #[error("look up bridge {name}")]
    Lookup {
        name: String,
        #[source]
        source: Box<LinkError>,
    },
    #[error("{name} in {netns} exists but is a {kind} device, not a bridge")]
    NotABridge {
        name: String,
        netns: Arc<str>,
        kind: String,
    },
    #[error("set hairpin mode {on} on bridge port {index} in {netns}")]
    SetHairpin {
        index: u32,
        on: bool,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("set isolated {on} on bridge port {index} in {netns}")]
    SetIsolated {
        index: u32,
        on: bool,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("add vlan {vid} to link {index} in {netns}")]
    AddVlan {
        index: u32,
        vid: u16,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("delete vlan {vid} from link {index} in {netns}")]
    DelVlan {
        index: u32,
        vid: u16,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("list vlans of link {index} in {netns}")]
    ListVlans {
        index: u32,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
}

impl Errno for BridgeError {
    fn errno(&self) -> Option<i32> {
        match self {
            Self::Create { source, .. }
            | Self::SetHairpin { source, .. }
            | Self::SetIsolated { source, .. }
            | Self::AddVlan { source, .. }
            | Self::DelVlan { source, .. }
            | Self::ListVlans { source, .. } => source.errno(),
            Self::Lookup { source, .. } => source.errno(),
            Self::NotABridge { .. } => None,
            Self::BadName(_) => Some(libc::EINVAL),
        }
    }
}

/// A bridge to create with [`Netlink::add_bridge`] or [`Netlink::ensure_bridge`].
#[derive(Debug, Clone, Copy)]
pub struct BridgeSpec<'a> {
    pub name: &'a str,
    pub mtu: Option<u32>,
    /// Needs CONFIG_BRIDGE_VLAN_FILTERING; kernels without it answer EOPNOTSUPP.
    pub vlan_filtering: bool,
    pub mac: Option<Mac>,
}

impl<'a> BridgeSpec<'a> {
    pub fn new(name: &'a str) -> BridgeSpec<'a> {
        BridgeSpec {
            name,
            mtu: None,
            vlan_filtering: false,
            mac: None,
        }
    }
}

/// One VLAN of a bridge port (or of the bridge itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeVlan {
    pub vid: u16,
    /// Untagged ingress traffic is classified into this VLAN.
    pub pvid: bool,
    /// Egress traffic of this VLAN leaves untagged.
    pub untagged: bool,
}

/// Which device a VLAN request configures (`bridge vlan ... master|self`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VlanTarget {
    /// `master`: the port's membership, configured through its bridge (the usual case).
    #[default]
    Master,
    /// `self`: the device itself; used on the bridge device for the bridge's own VLANs.
    Device,
}

impl Netlink {
    /// Creates a bridge (NLM_F_EXCL). On EEXIST the error's [`Errno::is_exists`] is true.
    pub fn add_bridge(&self, spec: &BridgeSpec<'_>) -> Result<Link, BridgeError> {
        check_ifname(spec.name).map_err(BridgeError::BadName)?;
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(spec.name.to_owned()));
        if let Some(mtu) = spec.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = spec.mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        let mut info = vec![LinkInfo::Kind(InfoKind::Bridge)];
        if spec.vlan_filtering {
            info.push(LinkInfo::Data(InfoData::Bridge(vec![
                InfoBridge::VlanFiltering(true),
            ])));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(info));
        self.conn
            .request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|source| BridgeError::Create {
                name: spec.name.to_owned(),
                netns: self.label(),
                source,
            })?;
        self.created(spec.name)
            .map_err(|source| BridgeError::Lookup {
                name: spec.name.to_owned(),
                source: Box::new(source),
            })
    }

    /// Creates the bridge, or returns the existing one of that name (checking it is a bridge).
    /// Safe against concurrent creators: whoever loses the EXCL race looks the winner's up.
    /// An existing bridge is returned as is; `spec`'s settings are not re-applied.
    pub fn ensure_bridge(&self, spec: &BridgeSpec<'_>) -> Result<Link, BridgeError> {
        match self.add_bridge(spec) {
            Err(e) if e.is_exists() => {}
            other => return other,
        }
        let lookup = |source| BridgeError::Lookup {
            name: spec.name.to_owned(),
            source: Box::new(source),
        };
        let link = self.created(spec.name).map_err(lookup)?;
        match link.kind.as_deref() {
            Some("bridge") => Ok(link),
            kind => Err(BridgeError::NotABridge {
                name: spec.name.to_owned(),
                netns: self.label(),
                kind: kind.unwrap_or("kind-less").to_owned(),
            }),
        }
    }

    /// `ip link set dev X type bridge_slave hairpin on|off`: let frames go back out of the port
    /// they came in on (a container reaching itself through a host port mapping).
    pub fn set_bridge_port_hairpin(&self, index: u32, on: bool) -> Result<(), BridgeError> {
        self.set_bridge_port(index, InfoBridgePort::HairpinMode(on))
            .map_err(|source| BridgeError::SetHairpin {
                index,
                on,
                netns: self.label(),
                source,
            })
    }

    /// `ip link set dev X type bridge_slave isolated on|off`: isolated ports only talk to
    /// non-isolated ones.
    pub fn set_bridge_port_isolated(&self, index: u32, on: bool) -> Result<(), BridgeError> {
        self.set_bridge_port(index, InfoBridgePort::Isolated(on))
            .map_err(|source| BridgeError::SetIsolated {
                index,
                on,
                netns: self.label(),
                source,
            })
    }

    fn set_bridge_port(&self, index: u32, attr: InfoBridgePort) -> Result<(), NetlinkError> {
        // IFLA_INFO_SLAVE_KIND + IFLA_INFO_SLAVE_DATA on RTM_NEWLINK reach the master's
        // slave_changelink; the port must already be attached to a bridge (else EOPNOTSUPP).
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(vec![attr])),
        ]));
        self.change_link(msg)
    }

    /// `bridge vlan add dev X vid V [pvid] [untagged] [master|self]`. Needs a kernel with
    /// CONFIG_BRIDGE_VLAN_FILTERING (EOPNOTSUPP otherwise).
    pub fn bridge_vlan_add(
        &self,
        index: u32,
        vlan: BridgeVlan,
        target: VlanTarget,
    ) -> Result<(), BridgeError> {
        self.conn
            .request(
                RouteNetlinkMessage::SetLink(vlan_msg(index, vlan, target)),
                0,
            )
            .map(drop)
            .map_err(|source| BridgeError::AddVlan {
                index,
                vid: vlan.vid,
                netns: self.label(),
                source,
            })
    }

    /// `bridge vlan del dev X vid V [master|self]`.
    pub fn bridge_vlan_del(
        &self,
        index: u32,
        vlan: BridgeVlan,
        target: VlanTarget,
    ) -> Result<(), BridgeError> {
        self.conn
            .request(
                RouteNetlinkMessage::DelLink(vlan_msg(index, vlan, target)),
                0,
            )
            .map(drop)
            .map_err(|source| BridgeError::DelVlan {
                index,
                vid: vlan.vid,
                netns: self.label(),
                source,
            })
    }

    /// The VLANs of one bridge port (or bridge), as `bridge vlan show dev X` lists them.
    pub fn bridge_vlans(&self, index: u32) -> Result<Vec<BridgeVlan>, BridgeError> {
        let mut msg = LinkMessage::default();
        msg.header.interface_family = AddressFamily::Bridge;
        msg.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::Brvlan]));
        let replies = self
            .conn
            .dump(RouteNetlinkMessage::GetLink(msg))
            .map_err(|source| BridgeError::ListVlans {
                index,
                netns: self.label(),
                source,
            })?;
        Ok(replies
            .iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) if link.header.index == index => Some(link),
                _ => None,
            })
            .flat_map(|link| link.attributes.iter())
            .filter_map(|attr| match attr {
                LinkAttribute::AfSpecBridge(spec) => Some(spec),
                _ => None,
            })
            .flatten()
            .filter_map(|spec| match spec {
                AfSpecBridge::VlanInfo(info) => Some(BridgeVlan {
                    vid: info.vid,
                    pvid: info.flags.contains(BridgeVlanInfoFlags::Pvid),
                    untagged: info.flags.contains(BridgeVlanInfoFlags::Untagged),
                }),
                _ => None,
            })
            .collect())
    }
}

fn vlan_msg(index: u32, vlan: BridgeVlan, target: VlanTarget) -> LinkMessage {
    let mut flags = BridgeVlanInfoFlags::empty();
    flags.set(BridgeVlanInfoFlags::Pvid, vlan.pvid);
    flags.set(BridgeVlanInfoFlags::Untagged, vlan.untagged);
    let mut msg = link_msg(index);
    msg.header.interface_family = AddressFamily::Bridge;
    msg.attributes.push(LinkAttribute::AfSpecBridge(vec![
        AfSpecBridge::Flags(match target {
            VlanTarget::Master => BridgeFlag::Controller,
            VlanTarget::Device => BridgeFlag::LowerDev,
        }),
        AfSpecBridge::VlanInfo(BridgeVlanInfo {
            flags,
            vid: vlan.vid,
        }),
    ]));
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_request_carries_flags_and_target() {
        let msg = vlan_msg(
            4,
            BridgeVlan {
                vid: 10,
                pvid: true,
                untagged: false,
            },
            VlanTarget::Device,
        );
        assert_eq!(msg.header.index, 4);
        assert_eq!(msg.header.interface_family, AddressFamily::Bridge);
        let LinkAttribute::AfSpecBridge(spec) = &msg.attributes[0] else {
            panic!("expected IFLA_AF_SPEC: {msg:?}");
        };
        assert_eq!(spec[0], AfSpecBridge::Flags(BridgeFlag::LowerDev));
        assert_eq!(
            spec[1],
            AfSpecBridge::VlanInfo(BridgeVlanInfo {
                flags: BridgeVlanInfoFlags::Pvid,
                vid: 10
            })
        );
    }
}
