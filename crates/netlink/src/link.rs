//! Links: lookup, state changes, veth pairs, deletion.

use std::os::fd::{AsFd, AsRawFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoBridgePort, InfoData, InfoKind, InfoMacVlan, InfoPortData, InfoVeth, LinkAttribute,
    LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};

use std::sync::Arc;

use crate::name::{IfNameError, check_ifname};
use crate::netlink::Netlink;
use crate::netns::Netns;
use crate::socket::{Errno, NetlinkError};

/// A MAC (Ethernet) address.
pub type Mac = [u8; 6];

/// Formats a MAC the usual way, `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Errors of the `link` module. Each variant names the step, the link and the namespace.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("look up link {link} in {netns}")]
    Get {
        link: String,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("list links in {netns}")]
    List {
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("set link {index} up in {netns}")]
    SetUp {
        index: u32,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("set link {index} down in {netns}")]
    SetDown {
        index: u32,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("set mtu {mtu} on link {index} in {netns}")]
    SetMtu {
        index: u32,
        mtu: u32,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("set mac {mac} on link {index} in {netns}")]
    SetMac {
        index: u32,
        mac: String,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("attach link {index} to master {master} in {netns}")]
    SetMaster {
        index: u32,
        master: u32,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("detach link {index} from its master in {netns}")]
    SetNomaster {
        index: u32,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("set promiscuous mode {on} on link {index} in {netns}")]
    SetPromisc {
        index: u32,
        on: bool,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("set allmulticast mode {on} on link {index} in {netns}")]
    SetAllmulti {
        index: u32,
        on: bool,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("set transmit queue length {len} on link {index} in {netns}")]
    SetTxqlen {
        index: u32,
        len: u32,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("set alias {alias:?} on link {index} in {netns}")]
    SetAlias {
        index: u32,
        alias: String,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    /// Refused before anything reached the kernel.
    #[error("refuse to name a link")]
    BadName(#[source] IfNameError),
    #[error("every name for the link is held by another owner in {netns}: {names}")]
    NamesTaken { names: String, netns: Arc<str> },
    #[error("create {kind} link {name} in {netns}")]
    Create {
        kind: LinkKind,
        name: String,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("rename link {index} to {name} in {netns}")]
    Rename {
        index: u32,
        name: String,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("move link {index} from {netns} to {target}")]
    SetNetns {
        index: u32,
        netns: Arc<str>,
        target: String,
        #[source]
        source: NetlinkError,
    },
    #[error(
        "create veth {} in {} <-> {} in {}",
        .pair.name, .pair.netns, .pair.peer, .pair.peer_netns
    )]
    CreateVeth {
        pair: Box<VethNames>,
        #[source]
        source: NetlinkError,
    },
    /// The kernel acknowledged the creation but the link is not there: someone deleted it in
    /// between.
    #[error("link {name} vanished from {netns} right after being created")]
    Vanished { name: String, netns: Arc<str> },
    #[error("delete link {index} in {netns}")]
    Delete {
        index: u32,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
    #[error("delete link {name} in {netns}")]
    DeleteByName {
        name: String,
        netns: Arc<str>,
        #[source]
        source: NetlinkError,
    },
}

impl Errno for LinkError {
    fn errno(&self) -> Option<i32> {
        match self {
            Self::Get { source, .. }
            | Self::List { source, .. }
            | Self::SetUp { source, .. }
            | Self::SetDown { source, .. }
            | Self::SetMtu { source, .. }
            | Self::SetMac { source, .. }
            | Self::SetMaster { source, .. }
            | Self::SetNomaster { source, .. }
            | Self::SetPromisc { source, .. }
            | Self::SetAllmulti { source, .. }
            | Self::SetTxqlen { source, .. }
            | Self::SetAlias { source, .. }
            | Self::Create { source, .. }
            | Self::Rename { source, .. }
            | Self::SetNetns { source, .. }
            | Self::CreateVeth { source, .. }
            | Self::Delete { source, .. }
            | Self::DeleteByName { source, .. } => source.errno(),
            Self::Vanished { .. } => Some(libc::ENODEV),
            Self::NamesTaken { .. } => Some(libc::EEXIST),
            Self::BadName(_) => Some(libc::EINVAL),
        }
    }
}

/// The kinds of link [`LinkError::Create`] names (a one-byte tag keeps `LinkError` small).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Macvlan,
    Ifb,
}

impl std::fmt::Display for LinkKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LinkKind::Macvlan => "macvlan",
            LinkKind::Ifb => "ifb",
        })
    }
}

/// The names in a [`LinkError::CreateVeth`] (boxed: keeps `LinkError` small).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethNames {
    pub name: String,
    pub netns: Arc<str>,
    pub peer: String,
    pub peer_netns: Arc<str>,
}

/// A network interface as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    pub mac: Option<Mac>,
    /// Administratively up (`IFF_UP`), not "has carrier".
    pub up: bool,
    pub promisc: bool,
    /// `IFF_ALLMULTI`: receives all multicast frames.
    pub allmulti: bool,
    /// Transmit queue length (`IFLA_TXQLEN`).
    pub txqlen: u32,
    /// `IFLA_IFALIAS`, a free-form label (Berth records owners there).
    pub alias: Option<String>,
    /// `IFLA_PERM_ADDRESS`: the hardware's own MAC, when the driver reports one.
    pub perm_mac: Option<Mac>,
    /// The bridge (or other master) this link is attached to.
    pub master: Option<u32>,
    /// `veth`, `bridge`, ...; `None` for links without a kind (`lo`, physical NICs).
    pub kind: Option<String>,
    /// `IFLA_LINK`: for a veth, the peer's index, counted in the peer's namespace.
    pub link_index: Option<u32>,
    /// `IFLA_LINK_NETNSID`: the peer's namespace as a netns id of this namespace, when the
    /// peer lives elsewhere.
    pub netns_id: Option<i32>,
    /// Port settings, when the link is a bridge port.
    pub bridge_port: Option<BridgePortInfo>,
}

/// The bridge-port settings Berth manages (see `Netlink::set_bridge_port_hairpin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BridgePortInfo {
    pub hairpin: bool,
    pub isolated: bool,
}

impl Link {
    pub(crate) fn from_message(msg: &LinkMessage) -> Link {
        let flags = msg.header.flags;
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            mtu: 0,
            mac: None,
            up: flags.contains(LinkFlags::Up),
            promisc: flags.contains(LinkFlags::Promisc),
            allmulti: flags.contains(LinkFlags::Allmulti),
            txqlen: 0,
            alias: None,
            perm_mac: None,
            master: None,
            kind: None,
            link_index: None,
            netns_id: None,
            bridge_port: None,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name.clone_from(name),
                LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
                LinkAttribute::Address(addr) => link.mac = addr.as_slice().try_into().ok(),
                LinkAttribute::PermAddress(addr) => {
                    link.perm_mac = addr.as_slice().try_into().ok();
                }
                LinkAttribute::TxQueueLen(len) => link.txqlen = *len,
                LinkAttribute::IfAlias(alias) if !alias.is_empty() => {
                    link.alias = Some(alias.clone());
                }
                LinkAttribute::Controller(master) if *master != 0 => link.master = Some(*master),
                LinkAttribute::Link(peer) if *peer != 0 => link.link_index = Some(*peer),
                LinkAttribute::LinkNetNsId(id) => link.netns_id = Some(*id),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(kind) => link.kind = Some(kind.to_string()),
                            LinkInfo::PortData(InfoPortData::BridgePort(port)) => {
                                link.bridge_port = Some(bridge_port_info(port));
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        link
    }
}

fn bridge_port_info(attrs: &[InfoBridgePort]) -> BridgePortInfo {
    let mut info = BridgePortInfo::default();
    for attr in attrs {
        match attr {
            InfoBridgePort::HairpinMode(on) => info.hairpin = *on,
            InfoBridgePort::Isolated(on) => info.isolated = *on,
            _ => {}
        }
    }
    info
}

/// A veth pair to create with [`Netlink::add_veth_pair`].
#[derive(Debug, Clone, Copy)]
pub struct VethPair<'a> {
    /// The end created in the handle's namespace.
    pub name: &'a str,
    pub peer_name: &'a str,
    /// Where the peer is created; `None` keeps it next to `name`.
    pub peer_netns: Option<&'a Netns>,
    /// Applied to both ends.
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
    pub peer_mac: Option<Mac>,
}

impl<'a> VethPair<'a> {
    pub fn new(name: &'a str, peer_name: &'a str) -> VethPair<'a> {
        VethPair {
            name,
            peer_name,
            peer_netns: None,
            mtu: None,
            mac: None,
            peer_mac: None,
        }
    }
}

/// The macvlan modes (`IFLA_MACVLAN_MODE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacvlanMode {
    Private,
    Vepa,
    Bridge,
    Passthru,
}

/// A macvlan link to create with [`Netlink::add_macvlan`].
#[derive(Debug, Clone, Copy)]
pub struct MacvlanSpec<'a> {
    pub name: &'a str,
    /// The parent link's index, in the handle's namespace.
    pub parent: u32,
    pub mode: MacvlanMode,
    /// Where the link is created; `None` keeps it beside its parent.
    pub netns: Option<&'a Netns>,
    pub mtu: Option<u32>,
    pub mac: Option<Mac>,
}

/// A message addressing an existing link by index, for change requests.
pub(crate) fn link_msg(index: u32) -> LinkMessage {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg
}

impl Netlink {
    /// Looks a link up by name; `Ok(None)` if there is none.
    pub fn link_by_name(&self, name: &str) -> Result<Option<Link>, LinkError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        self.get_link(msg).map_err(|source| LinkError::Get {
            link: name.to_owned(),
            netns: self.label(),
            source,
        })
    }

    /// Looks a link up by index; `Ok(None)` if there is none.
    pub fn link_by_index(&self, index: u32) -> Result<Option<Link>, LinkError> {
        self.get_link(link_msg(index))
            .map_err(|source| LinkError::Get {
                link: index.to_string(),
                netns: self.label(),
                source,
            })
    }

    fn get_link(&self, msg: LinkMessage) -> Result<Option<Link>, NetlinkError> {
        match self.conn.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.iter().find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(Link::from_message(link)),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Lists every link of the namespace.
    pub fn links(&self) -> Result<Vec<Link>, LinkError> {
        let replies = self
            .conn
            .dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))
            .map_err(|source| LinkError::List {
                netns: self.label(),
                source,
            })?;
        Ok(replies
            .iter()
            .filter_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(link) => Some(Link::from_message(link)),
                _ => None,
            })
            .collect())
    }

    /// Sends a change request (RTM_NEWLINK without NLM_F_CREATE) for an existing link.
    pub(crate) fn change_link(&self, msg: LinkMessage) -> Result<(), NetlinkError> {
        self.conn
            .request(RouteNetlinkMessage::NewLink(msg), 0)
            .map(drop)
    }

    fn set_flag(&self, index: u32, flag: LinkFlags, on: bool) -> Result<(), NetlinkError> {
        let mut msg = link_msg(index);
        msg.header.change_mask = flag;
        if on {
            msg.header.flags = flag;
        }
        self.change_link(msg)
    }

    pub fn set_up(&self, index: u32) -> Result<(), LinkError> {
        self.set_flag(index, LinkFlags::Up, true)
            .map_err(|source| LinkError::SetUp {
                index,
                netns: self.label(),
                source,
            })
    }

    pub fn set_down(&self, index: u32) -> Result<(), LinkError> {
        self.set_flag(index, LinkFlags::Up, false)
            .map_err(|source| LinkError::SetDown {
                index,
                netns: self.label(),
                source,
            })
    }

    pub fn set_promisc(&self, index: u32, on: bool) -> Result<(), LinkError> {
        self.set_flag(index, LinkFlags::Promisc, on)
            .map_err(|source| LinkError::SetPromisc {
                index,
                on,
                netns: self.label(),
                source,
            })
    }

    pub fn set_allmulti(&self, index: u32, on: bool) -> Result<(), LinkError> {
        self.set_flag(index, LinkFlags::Allmulti, on)
            .map_err(|source| LinkError::SetAllmulti {
                index,
                on,
                netns: self.label(),
                source,
            })
    }

    pub fn set_txqlen(&self, index: u32, len: u32) -> Result<(), LinkError> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::TxQueueLen(len));
        self.change_link(msg)
            .map_err(|source| LinkError::SetTxqlen {
                index,
                len,
                netns: self.label(),
                source,
            })
    }

    /// Sets `IFLA_IFALIAS`; an empty alias removes it.
    pub fn set_alias(&self, index: u32, alias: &str) -> Result<(), LinkError> {
        let mut msg = link_msg(index);
        msg.attributes
            .push(LinkAttribute::IfAlias(alias.to_owned()));
        self.change_link(msg).map_err(|source| LinkError::SetAlias {
            index,
            alias: alias.to_owned(),
            netns: self.label(),
            source,
        })
    }

    pub fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), LinkError> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        self.change_link(msg).map_err(|source| LinkError::SetMtu {
            index,
            mtu,
            netns: self.label(),
            source,
        })
    }

    pub fn set_mac(&self, index: u32, mac: Mac) -> Result<(), LinkError> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        self.change_link(msg).map_err(|source| LinkError::SetMac {
            index,
            mac: format_mac(&mac),
            netns: self.label(),
            source,
        })
    }

    /// Attaches the link to a bridge (or other master device).
    pub fn set_master(&self, index: u32, master: u32) -> Result<(), LinkError> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::Controller(master));
        self.change_link(msg)
            .map_err(|source| LinkError::SetMaster {
                index,
                master,
                netns: self.label(),
                source,
            })
    }

    pub fn set_nomaster(&self, index: u32) -> Result<(), LinkError> {
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::Controller(0));
        self.change_link(msg)
            .map_err(|source| LinkError::SetNomaster {
                index,
                netns: self.label(),
                source,
            })
    }

    /// Renames a link. Set it down first: many kernels refuse (EBUSY) to rename a link that
    /// is up (6.x allows it for some drivers, e.g. veth).
    pub fn rename(&self, index: u32, name: &str) -> Result<(), LinkError> {
        check_ifname(name).map_err(LinkError::BadName)?;
        let mut msg = link_msg(index);
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        self.change_link(msg).map_err(|source| LinkError::Rename {
            index,
            name: name.to_owned(),
            netns: self.label(),
            source,
        })
    }

    /// Moves a link into another namespace. Its index there may differ; look it up by name
    /// with a handle on `target`.
    pub fn set_netns(&self, index: u32, target: &Netns) -> Result<(), LinkError> {
        let mut msg = link_msg(index);
        // The descriptor stays open for the call: `target` is borrowed.
        msg.attributes
            .push(LinkAttribute::NetNsFd(target.as_fd().as_raw_fd()));
        self.change_link(msg).map_err(|source| LinkError::SetNetns {
            index,
            netns: self.label(),
            target: target.to_string(),
            source,
        })
    }

    /// Creates a veth pair in one request, the peer directly inside `pair.peer_netns`
    /// (`IFLA_NET_NS_FD` on the peer), so it never appears in this namespace. Returns this
    /// side; [`Link::link_index`] is the peer's index in its namespace.
    ///
    /// EEXIST (see [`Errno::is_exists`]) means either name is taken in its namespace.
    pub fn add_veth_pair(&self, pair: &VethPair<'_>) -> Result<Link, LinkError> {
        check_ifname(pair.name).map_err(LinkError::BadName)?;
        check_ifname(pair.peer_name).map_err(LinkError::BadName)?;
        let mut peer = LinkMessage::default();
        peer.attributes
            .push(LinkAttribute::IfName(pair.peer_name.to_owned()));
        if let Some(ns) = pair.peer_netns {
            // The descriptor stays open for the call: `pair` borrows the Netns.
            peer.attributes
                .push(LinkAttribute::NetNsFd(ns.as_fd().as_raw_fd()));
        }
        if let Some(mac) = pair.peer_mac {
            peer.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }

        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(pair.name.to_owned()));
        if let Some(mtu) = pair.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
            peer.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = pair.mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]));

        self.conn
            .request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|source| LinkError::CreateVeth {
                pair: Box::new(VethNames {
                    name: pair.name.to_owned(),
                    netns: self.label(),
                    peer: pair.peer_name.to_owned(),
                    peer_netns: pair
                        .peer_netns
                        .map_or_else(|| self.label(), |ns| ns.to_string().into()),
                }),
                source,
            })?;
        self.created(pair.name)
    }

    /// Creates a macvlan link on `spec.parent`, directly inside `spec.netns` when given
    /// (`IFLA_NET_NS_FD`), so it never appears under its final name beside the parent. Look
    /// it up with a handle on the namespace it was created in.
    pub fn add_macvlan(&self, spec: &MacvlanSpec<'_>) -> Result<(), LinkError> {
        let mode = match spec.mode {
            MacvlanMode::Private => MacVlanMode::Private,
            MacvlanMode::Vepa => MacVlanMode::Vepa,
            MacvlanMode::Bridge => MacVlanMode::Bridge,
            MacvlanMode::Passthru => MacVlanMode::Passthrough,
        };
        check_ifname(spec.name).map_err(LinkError::BadName)?;
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(spec.name.to_owned()));
        msg.attributes.push(LinkAttribute::Link(spec.parent));
        if let Some(ns) = spec.netns {
            // The descriptor stays open for the call: `spec` borrows the Netns.
            msg.attributes
                .push(LinkAttribute::NetNsFd(ns.as_fd().as_raw_fd()));
        }
        if let Some(mtu) = spec.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = spec.mac {
            msg.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::MacVlan),
            LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(mode)])),
        ]));
        self.conn
            .request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map(drop)
            .map_err(|source| LinkError::Create {
                kind: LinkKind::Macvlan,
                name: spec.name.to_owned(),
                netns: spec
                    .netns
                    .map_or_else(|| self.label(), |ns| ns.to_string().into()),
                source,
            })
    }

    /// Creates an `ifb` (intermediate functional block) device, down, in this namespace.
    pub fn add_ifb(&self, name: &str, mtu: Option<u32>) -> Result<Link, LinkError> {
        check_ifname(name).map_err(LinkError::BadName)?;
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        msg.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Ifb)]));
        self.conn
            .request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|source| LinkError::Create {
                kind: LinkKind::Ifb,
                name: name.to_owned(),
                netns: self.label(),
                source,
            })?;
        self.created(name)
    }

    /// Looks up a link that was just created.
    pub(crate) fn created(&self, name: &str) -> Result<Link, LinkError> {
        self.link_by_name(name)?.ok_or_else(|| LinkError::Vanished {
            name: name.to_owned(),
            netns: self.label(),
        })
    }

    /// Deletes a link. Deleting either end of a veth pair deletes both.
    pub fn del_link(&self, index: u32) -> Result<(), LinkError> {
        self.conn
            .request(RouteNetlinkMessage::DelLink(link_msg(index)), 0)
            .map(drop)
            .map_err(|source| LinkError::Delete {
                index,
                netns: self.label(),
                source,
            })
    }

    /// Deletes a link by name; `Ok(false)` if there was none (idempotent DEL).
    pub fn del_link_by_name_if_exists(&self, name: &str) -> Result<bool, LinkError> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.conn.request(RouteNetlinkMessage::DelLink(msg), 0) {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(source) => Err(LinkError::DeleteByName {
                name: name.to_owned(),
                netns: self.label(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_is_formatted_lowercase_with_colons() {
        assert_eq!(
            format_mac(&[0x02, 0xab, 0, 1, 0x10, 0xff]),
            "02:ab:00:01:10:ff"
        );
    }

    #[test]
    fn link_message_is_parsed() {
        let mut msg = link_msg(7);
        msg.header.flags = LinkFlags::Up | LinkFlags::Promisc;
        msg.attributes = vec![
            LinkAttribute::IfName("eth0".into()),
            LinkAttribute::Mtu(1400),
            LinkAttribute::Address(vec![2, 0, 0, 0, 0, 1]),
            LinkAttribute::Controller(3),
            LinkAttribute::Link(9),
            LinkAttribute::LinkNetNsId(0),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::PortData(InfoPortData::BridgePort(vec![
                    InfoBridgePort::HairpinMode(true),
                    InfoBridgePort::Isolated(false),
                ])),
            ]),
        ];
        let link = Link::from_message(&msg);
        assert_eq!(link.index, 7);
        assert_eq!(link.name, "eth0");
        assert_eq!(link.mtu, 1400);
        assert_eq!(link.mac, Some([2, 0, 0, 0, 0, 1]));
        assert!(link.up && link.promisc);
        assert_eq!(link.master, Some(3));
        assert_eq!(link.kind.as_deref(), Some("veth"));
        assert_eq!(link.link_index, Some(9));
        assert_eq!(link.netns_id, Some(0));
        assert_eq!(
            link.bridge_port,
            Some(BridgePortInfo {
                hairpin: true,
                isolated: false
            })
        );
    }

    #[test]
    fn master_zero_means_none_and_odd_address_is_no_mac() {
        let mut msg = link_msg(1);
        msg.attributes = vec![
            LinkAttribute::Controller(0),
            LinkAttribute::Address(vec![0; 4]),
        ];
        let link = Link::from_message(&msg);
        assert_eq!(link.master, None);
        assert_eq!(link.mac, None);
        assert!(!link.up);
    }
}
