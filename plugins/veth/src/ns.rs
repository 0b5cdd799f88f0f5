//! Opening the namespaces a call works in, and an rtnetlink handle in each.
//!
//! The plugin runs in the host's namespace (the runtime starts it there), so the host handle is
//! opened on the calling thread's namespace. The container's and the peer's handles are opened
//! inside their namespaces (`Netlink::open_in`) and then used from this thread: no thread of
//! ours ever switches namespace.

use std::path::{Path, PathBuf};

use berth_netlink::{Errno, Netlink, Netns, NetnsError, OpenError};

/// Whose namespace: decides the error code (CNI_NETNS is the runtime's, `peer.netns` the
/// configuration's) and the wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Container,
    Peer,
    Host,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Container => "the container's namespace (CNI_NETNS)",
            Role::Peer => "the peer's namespace (peer.netns)",
            Role::Host => "the host's namespace",
        })
    }
}

/// Errors of the `ns` module.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("open {role}")]
    Open {
        role: Role,
        #[source]
        source: NetnsError,
    },
    #[error("open rtnetlink in {role}")]
    Netlink {
        role: Role,
        #[source]
        source: OpenError,
    },
    #[error("peer.netns {path} is the container's own namespace (CNI_NETNS): a veth needs two")]
    PeerIsContainer { path: PathBuf },
}

impl NsError {
    /// The namespace file does not exist (any more): DEL has nothing to do there.
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            NsError::Open {
                source: NetnsError::NotFound { .. },
                ..
            }
        )
    }

    pub fn role(&self) -> Option<Role> {
        match self {
            NsError::Open { role, .. } | NsError::Netlink { role, .. } => Some(*role),
            NsError::PeerIsContainer { .. } => None,
        }
    }
}

/// A namespace and a handle bound to it. The `Netns` stays open so that the namespace cannot
/// go away under us and so a veth peer can be created in it by descriptor.
#[derive(Debug)]
pub struct Opened {
    pub ns: Netns,
    pub nl: Netlink,
}

pub fn open(path: &Path, role: Role) -> Result<Opened, NsError> {
    let ns = Netns::open(path).map_err(|source| NsError::Open { role, source })?;
    let nl = Netlink::open_in(&ns).map_err(|source| NsError::Netlink { role, source })?;
    Ok(Opened { ns, nl })
}

/// The handle on the calling thread's namespace: the host's.
pub fn host() -> Result<Netlink, NsError> {
    Netlink::open_current().map_err(|source| NsError::Netlink {
        role: Role::Host,
        source,
    })
}

impl Errno for NsError {
    fn errno(&self) -> Option<i32> {
        match self {
            NsError::Open { source, .. } => source.errno(),
            NsError::Netlink { source, .. } => source.errno(),
            NsError::PeerIsContainer { .. } => None,
        }
    }
}
