//! Moving the device into the container and back.
//!
//! Into the container, one request moves the link, renames it to `CNI_IFNAME` and sets its
//! alias to its host name (`Netlink::move_link_renamed`); back, one request moves it, renames
//! it to its host name and restores its old alias. Neither needs a name that is free in both
//! namespaces at once. What the kernel does not carry across is put back by hand afterwards:
//! a move takes the link down, so its up state is restored (and its MTU, in case something
//! in the container changed it). Addresses are not restored: the kernel flushes them on every
//! move, and the reference does not restore them either.
//!
//! When a container's namespace dies with the device inside, the kernel returns a *physical*
//! device to the initial namespace, under the name it had in the container (or `dev<N>` if
//! that is taken there), alias included; a *virtual* one (veth, macvlan, …) is destroyed.
//! [`recover`] finds a returned device by its alias.

use berth_netlink::{Errno, Link, LinkError, Netlink, Netns, RelocateError};

use crate::state::Saved;

/// Errors of the `device` module.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("failed to rename device {device:?} to {ifname:?}: {ifname} exists in {netns}")]
    IfnameTaken {
        device: String,
        ifname: String,
        netns: String,
    },
    #[error("link {name} vanished from {netns} right after the move")]
    Vanished { name: String, netns: String },
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Move(#[from] RelocateError),
}

impl DeviceError {
    /// EEXIST: a name is taken (the device is where it was, or in a state DEL can resume).
    pub fn is_exists(&self) -> bool {
        match self {
            Self::IfnameTaken { .. } => true,
            Self::Link(e) => e.is_exists(),
            Self::Move(e) => e.is_exists(),
            Self::Vanished { .. } => false,
        }
    }
}

/// What a device returns to in the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    pub name: String,
    /// `Some("")` clears the alias; `None` leaves the one it carries (its host name).
    pub alias: Option<String>,
    pub mtu: Option<u32>,
    pub up: bool,
}

impl Home {
    pub fn from_saved(saved: &Saved) -> Home {
        Home {
            name: saved.device.clone(),
            alias: Some(saved.alias.clone()),
            mtu: Some(saved.mtu),
            up: saved.up,
        }
    }

    /// A device moved by the reference plugin, or whose record is lost: its name is in its
    /// alias; it stays down, as the reference leaves it.
    pub fn from_alias(alias: &str) -> Home {
        Home {
            name: alias.to_owned(),
            alias: None,
            mtu: None,
            up: false,
        }
    }
}

/// Moves host link `link` into the container as `ifname`, and brings it up there (as the
/// reference does, with or without IPAM). Returns the link as the container sees it.
pub fn move_in(
    host: &Netlink,
    link: &Link,
    ctr_ns: &Netns,
    ctr: &Netlink,
    ifname: &str,
) -> Result<Link, DeviceError> {
    // Checked first so the common clash changes nothing; the kernel checks again (EEXIST).
    if ctr.link_by_name(ifname)?.is_some() {
        return Err(DeviceError::IfnameTaken {
            device: link.name.clone(),
            ifname: ifname.to_owned(),
            netns: ctr.netns().to_owned(),
        });
    }
    host.move_link_renamed(link.index, ctr_ns, ifname, Some(&link.name))?;
    let moved = ctr
        .link_by_name(ifname)?
        .ok_or_else(|| DeviceError::Vanished {
            name: ifname.to_owned(),
            netns: ctr.netns().to_owned(),
        })?;
    ctr.set_up(moved.index)?;
    ctr.link_by_index(moved.index)?
        .ok_or_else(|| DeviceError::Vanished {
            name: ifname.to_owned(),
            netns: ctr.netns().to_owned(),
        })
}

/// The device in the container: `ifname`, or, when a move request failed half-way (moved but
/// not renamed), still under its host name with no alias yet.
pub fn find_in_container(
    ctr: &Netlink,
    ifname: &str,
    host_name: &str,
) -> Result<Option<Link>, DeviceError> {
    if let Some(link) = ctr.link_by_name(ifname)? {
        return Ok(Some(link));
    }
    Ok(ctr.link_by_name(host_name)?)
}

/// Moves container link `index` back to the host as `home` describes.
pub fn move_out(
    ctr: &Netlink,
    index: u32,
    host_ns: &Netns,
    host: &Netlink,
    home: &Home,
) -> Result<(), DeviceError> {
    // A move closes the link anyway; down first keeps its traffic from stopping mid-rename.
    ctr.set_down(index)?;
    ctr.move_link_renamed(index, host_ns, &home.name, home.alias.as_deref())?;
    let back = host
        .link_by_name(&home.name)?
        .ok_or_else(|| DeviceError::Vanished {
            name: home.name.clone(),
            netns: host.netns().to_owned(),
        })?;
    settle(host, &back, home)
}

/// MTU and up state, once the link is home.
fn settle(host: &Netlink, link: &Link, home: &Home) -> Result<(), DeviceError> {
    if let Some(mtu) = home.mtu.filter(|m| *m != link.mtu) {
        host.set_mtu(link.index, mtu)?;
    }
    if home.up && !link.up {
        host.set_up(link.index)?;
    }
    Ok(())
}

/// Where [`recover`] found the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// Already under its host name (a DEL that was interrupted after the move).
    AlreadyHome,
    /// Back in this namespace under another name (its container namespace died): renamed.
    Renamed { from: String },
    /// Not in this namespace: destroyed with its namespace (virtual devices), or returned to
    /// the initial namespace while the plugin runs in another one.
    Gone,
}

/// Finds the device of `saved` in the host namespace when it is no longer in the container,
/// and gives it back its name and state.
pub fn recover(host: &Netlink, saved: &Saved) -> Result<Recovered, DeviceError> {
    let home = Home::from_saved(saved);
    let links = host.links()?;
    let carries_alias = |l: &Link| l.alias.as_deref() == Some(saved.device.as_str());
    let same_mac = |l: &Link| {
        saved.mac.is_some()
            && l.mac.map(|m| berth_netlink::format_mac(&m)).as_deref() == saved.mac.as_deref()
    };
    if let Some(link) = links
        .iter()
        .find(|l| l.name == saved.device && (carries_alias(l) || same_mac(l)))
    {
        if carries_alias(link) && saved.alias != saved.device {
            host.set_alias(link.index, &saved.alias)?;
        }
        settle(host, link, &home)?;
        return Ok(Recovered::AlreadyHome);
    }
    let Some(link) = links.iter().find(|l| carries_alias(l)) else {
        return Ok(Recovered::Gone);
    };
    host.set_down(link.index)?;
    host.rename(link.index, &saved.device)?;
    host.set_alias(link.index, &saved.alias)?;
    let renamed = host
        .link_by_index(link.index)?
        .ok_or_else(|| DeviceError::Vanished {
            name: saved.device.clone(),
            netns: host.netns().to_owned(),
        })?;
    settle(host, &renamed, &home)?;
    Ok(Recovered::Renamed {
        from: link.name.clone(),
    })
}
