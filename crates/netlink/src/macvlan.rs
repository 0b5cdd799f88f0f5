//! What the kernel reports about a macvlan link beyond [`Link`]: its mode (for the macvlan
//! plugin's CHECK) and whether it has a carrier (IPv6 DAD only runs on a link with one).

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::{
    InfoData, InfoMacVlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};

use crate::link::{Link, LinkError, MacvlanMode, link_msg};
use crate::netlink::Netlink;
use crate::socket::Errno;

/// A link's macvlan details, from one `RTM_GETLINK`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MacvlanState {
    pub link: Link,
    /// `Some` for a macvlan in one of the modes Berth creates; `None` for any other kind of
    /// link, or a macvlan in `source` mode.
    pub mode: Option<MacvlanMode>,
    /// `IFF_LOWER_UP`: the link (and so its parent) has a carrier.
    pub carrier: bool,
}

impl MacvlanState {
    fn from_message(msg: &LinkMessage) -> MacvlanState {
        let link = Link::from_message(msg);
        let mode = (link.kind.as_deref() == Some("macvlan"))
            .then(|| mode_of(msg))
            .flatten();
        MacvlanState {
            link,
            mode,
            carrier: msg.header.flags.contains(LinkFlags::LowerUp),
        }
    }
}

fn mode_of(msg: &LinkMessage) -> Option<MacvlanMode> {
    let infos = msg.attributes.iter().find_map(|attr| match attr {
        LinkAttribute::LinkInfo(infos) => Some(infos),
        _ => None,
    })?;
    let data = infos.iter().find_map(|info| match info {
        LinkInfo::Data(InfoData::MacVlan(data)) => Some(data),
        _ => None,
    })?;
    data.iter().find_map(|attr| match attr {
        InfoMacVlan::Mode(MacVlanMode::Private) => Some(MacvlanMode::Private),
        InfoMacVlan::Mode(MacVlanMode::Vepa) => Some(MacvlanMode::Vepa),
        InfoMacVlan::Mode(MacVlanMode::Bridge) => Some(MacvlanMode::Bridge),
        InfoMacVlan::Mode(MacVlanMode::Passthrough) => Some(MacvlanMode::Passthru),
        _ => None,
    })
}

impl Netlink {
    /// The macvlan details of link `index`; `Ok(None)` if there is no such link.
    pub fn macvlan_state(&self, index: u32) -> Result<Option<MacvlanState>, LinkError> {
        match self
            .conn
            .request(RouteNetlinkMessage::GetLink(link_msg(index)), 0)
        {
            Ok(replies) => Ok(replies.iter().find_map(|reply| match reply {
                RouteNetlinkMessage::NewLink(msg) => Some(MacvlanState::from_message(msg)),
                _ => None,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(source) => Err(LinkError::Get {
                link: index.to_string(),
                netns: self.label(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::link::InfoKind;

    fn macvlan_msg(mode: MacVlanMode) -> LinkMessage {
        let mut msg = link_msg(4);
        msg.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
        msg.attributes = vec![
            LinkAttribute::IfName("eth0".into()),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::MacVlan),
                LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(mode)])),
            ]),
        ];
        msg
    }

    #[test]
    fn mode_and_carrier_are_parsed() {
        for (wire, ours) in [
            (MacVlanMode::Private, MacvlanMode::Private),
            (MacVlanMode::Vepa, MacvlanMode::Vepa),
            (MacVlanMode::Bridge, MacvlanMode::Bridge),
            (MacVlanMode::Passthrough, MacvlanMode::Passthru),
        ] {
            let state = MacvlanState::from_message(&macvlan_msg(wire));
            assert_eq!(state.mode, Some(ours));
            assert!(state.carrier);
            assert_eq!(state.link.name, "eth0");
        }
        assert_eq!(
            MacvlanState::from_message(&macvlan_msg(MacVlanMode::Source)).mode,
            None
        );
    }

    #[test]
    fn other_kinds_have_no_mode() {
        let mut msg = link_msg(2);
        msg.attributes = vec![LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
            InfoKind::Veth,
        )])];
        let state = MacvlanState::from_message(&msg);
        assert_eq!(state.mode, None);
        assert!(!state.carrier);
    }
}
