//! The host end of the container's veth: the link both directions are shaped on.
//!
//! As in the reference, it is the veth peer of `CNI_IFNAME` (read in the container's
//! namespace), and it must be listed in `prevResult` as an interface without a sandbox: the
//! plugin only shapes what the chain reported creating. Berth also checks that the link it
//! finds by that index really is the peer (a veth whose own peer is the container's end),
//! since an index read in one namespace means nothing in another.

use std::path::{Path, PathBuf};

use berth_cni::CniResult;
use berth_netlink::{Link, LinkError, Netlink, Netns, NetnsError, OpenError};

/// Why the host end could not be found. The first four carry the reference's messages.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("no interfaces provided (prevResult lists none)")]
    NoInterfaces,
    #[error("container interface {ifname} has no veth peer: {reason}")]
    NoPeer { ifname: String, reason: String },
    #[error("veth peer with index {index} is not in host ns")]
    PeerElsewhere { index: u32 },
    #[error(
        "no veth peer of container interface found in host ns (host end {name} is not in prevResult)"
    )]
    NotInPrevResult { name: String },
    #[error("failed to open netns {path:?}")]
    OpenNetns {
        path: PathBuf,
        #[source]
        source: NetnsError,
    },
    #[error("open rtnetlink in the container's namespace")]
    OpenNetlink(#[source] OpenError),
    #[error("look up the host end of {ifname}")]
    Lookup {
        ifname: String,
        #[source]
        source: LinkError,
    },
}

/// An rtnetlink handle in the container's namespace (the socket keeps the namespace alive).
pub struct Container {
    pub netlink: Netlink,
}

impl Container {
    pub fn open(path: &Path) -> Result<Container, HostError> {
        let netns = Netns::open(path).map_err(|source| HostError::OpenNetns {
            path: path.to_path_buf(),
            source,
        })?;
        let netlink = Netlink::open_in(&netns).map_err(HostError::OpenNetlink)?;
        Ok(Container { netlink })
    }
}

/// The names of `prev`'s host-side interfaces (no sandbox, or an empty one).
pub fn host_interfaces(prev: &CniResult) -> impl Iterator<Item = &str> {
    prev.interfaces
        .iter()
        .filter(|i| i.sandbox.as_deref().unwrap_or("").is_empty())
        .map(|i| i.name.as_str())
}

/// The host end of `ifname`, as ADD and CHECK need it.
pub fn find(
    host: &Netlink,
    ctr: &Container,
    ifname: &str,
    prev: &CniResult,
) -> Result<Link, HostError> {
    if prev.interfaces.is_empty() {
        return Err(HostError::NoInterfaces);
    }
    let peer = peer_of(host, ctr, ifname)?;
    if !host_interfaces(prev).any(|name| name == peer.name) {
        return Err(HostError::NotInPrevResult { name: peer.name });
    }
    Ok(peer)
}

/// The host-side peer of the container's `ifname`, whatever `prevResult` says (DEL uses this
/// before falling back on `prevResult`).
pub fn peer_of(host: &Netlink, ctr: &Container, ifname: &str) -> Result<Link, HostError> {
    let no_peer = |reason: String| HostError::NoPeer {
        ifname: ifname.to_owned(),
        reason,
    };
    let lookup = |source| HostError::Lookup {
        ifname: ifname.to_owned(),
        source,
    };
    let link = ctr
        .netlink
        .link_by_name(ifname)
        .map_err(lookup)?
        .ok_or_else(|| no_peer("Link not found".to_owned()))?;
    if link.kind.as_deref() != Some("veth") {
        return Err(no_peer(format!(
            "interface {ifname:?} was not a veth interface"
        )));
    }
    let index = link
        .link_index
        .ok_or_else(|| no_peer("the kernel reports no peer index".to_owned()))?;
    let peer = host
        .link_by_index(index)
        .map_err(lookup)?
        .ok_or(HostError::PeerElsewhere { index })?;
    // Same index, different link: the peer lives in a third namespace.
    if peer.kind.as_deref() != Some("veth") || peer.link_index != Some(link.index) {
        return Err(HostError::PeerElsewhere { index });
    }
    Ok(peer)
}
