//! Moving an existing link into another namespace, renamed and relabelled on the way, in one
//! request (what `host-device` does to a host's NIC and back).
//!
//! One `RTM_NEWLINK` carrying `IFLA_NET_NS_FD`, `IFLA_IFNAME` and `IFLA_IFALIAS`: the kernel
//! (`do_setlink`) first moves the link, and if its current name is taken in the target it uses
//! the new name right away (`__dev_change_net_namespace(dev, net, pat)`); then it renames the
//! link (it is down now: a move closes it) and sets the alias, both already in the target. So
//! the link never needs a name that is free in *both* namespaces, unlike a move followed by a
//! rename, which fails when the target already has a link of the old name. The request is not
//! atomic: when the rename fails after the move (the new name is taken in the target), the
//! link stays in the target under its old name and the error is returned.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;

use netlink_packet_route::link::LinkAttribute;

use crate::link::link_msg;
use crate::name::{IfNameError, check_ifname};
use crate::netlink::Netlink;
use crate::netns::Netns;
use crate::socket::{Errno, NetlinkError};

/// Errors of the `relocate` module.
#[derive(Debug, thiserror::Error)]
pub enum RelocateError {
    /// Refused before anything reached the kernel.
    #[error("refuse to name a link")]
    BadName(#[source] IfNameError),
    #[error("move link {index} from {netns} to {target} as {name}")]
    Move {
        index: u32,
        netns: Arc<str>,
        target: String,
        name: String,
        #[source]
        source: NetlinkError,
    },
}

impl Errno for RelocateError {
    fn errno(&self) -> Option<i32> {
        match self {
            Self::Move { source, .. } => source.errno(),
            Self::BadName(_) => Some(libc::EINVAL),
        }
    }
}

impl Netlink {
    /// Moves link `index` of this namespace into `target`, named `name` there, with `alias`
    /// as its `IFLA_IFALIAS` (`Some("")` clears it, `None` leaves it). Look it up in `target`
    /// by `name` afterwards: its index may change.
    pub fn move_link_renamed(
        &self,
        index: u32,
        target: &Netns,
        name: &str,
        alias: Option<&str>,
    ) -> Result<(), RelocateError> {
        check_ifname(name).map_err(RelocateError::BadName)?;
        let mut msg = link_msg(index);
        // The descriptor stays open for the call: `target` is borrowed.
        msg.attributes
            .push(LinkAttribute::NetNsFd(target.as_fd().as_raw_fd()));
        msg.attributes.push(LinkAttribute::IfName(name.to_owned()));
        if let Some(alias) = alias {
            msg.attributes
                .push(LinkAttribute::IfAlias(alias.to_owned()));
        }
        self.change_link(msg).map_err(|source| RelocateError::Move {
            index,
            netns: self.label(),
            target: target.to_string(),
            name: name.to_owned(),
            source,
        })
    }
}
