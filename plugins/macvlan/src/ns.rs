//! The namespaces a call works in, with an rtnetlink handle on each.
//!
//! The plugin runs in the host's namespace (the runtime starts it there), so the host handle is
//! opened on the calling thread's namespace. The container's handle is opened inside its
//! namespace (`Netlink::open_in`) and then used from this thread: no thread of ours ever
//! switches namespace except the throwaway helpers of `Netns::run`.

use std::path::{Path, PathBuf};

use berth_netlink::{Netlink, Netns, NetnsError, OpenError};

/// Errors of the `ns` module.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    /// CNI_NETNS cannot be opened as a network namespace (the runtime's input: code 4).
    #[error("failed to open netns {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: NetnsError,
    },
    #[error("open rtnetlink in {netns}")]
    Netlink {
        netns: String,
        #[source]
        source: OpenError,
    },
}

impl NsError {
    /// The namespace is gone: its file no longer exists, or is the empty file an unmounted
    /// `/run/netns` entry leaves behind. DEL has nothing left to do in it.
    pub fn is_gone(&self) -> bool {
        matches!(
            self,
            NsError::Open {
                source: NetnsError::NotFound { .. } | NetnsError::NotNetns { .. },
                ..
            }
        )
    }
}

/// A namespace and a handle bound to it. The `Netns` stays open so the namespace cannot go
/// away under us, and so the macvlan can be created in it by descriptor.
#[derive(Debug)]
pub struct Opened {
    pub ns: Netns,
    pub nl: Netlink,
}

pub fn open(path: &Path) -> Result<Opened, NsError> {
    let ns = Netns::open(path).map_err(|source| NsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let nl = Netlink::open_in(&ns).map_err(|source| NsError::Netlink {
        netns: path.display().to_string(),
        source,
    })?;
    Ok(Opened { ns, nl })
}

/// The handle on the calling thread's namespace: the host's.
pub fn host() -> Result<Netlink, NsError> {
    Netlink::open_current().map_err(|source| NsError::Netlink {
        netns: "the host's namespace".to_owned(),
        source,
    })
}
