//! [`Netlink`]: an rtnetlink handle bound to one network namespace.
//!
//! The verbs live next to their concept: links in `link.rs`, bridges in `bridge.rs`,
//! addresses in `addr.rs`, routes in `route.rs`.

use std::sync::Arc;

use crate::netns::{Netns, NetnsError};
use crate::socket::{Conn, Errno, NetlinkError};

/// Errors opening a [`Netlink`] handle.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("open rtnetlink socket in {netns}")]
    Enter {
        netns: String,
        #[source]
        source: NetnsError,
    },
    #[error("open rtnetlink socket in {netns}")]
    Socket {
        netns: String,
        #[source]
        source: NetlinkError,
    },
}

impl Errno for OpenError {
    fn errno(&self) -> Option<i32> {
        match self {
            Self::Enter { source, .. } => source.errno(),
            Self::Socket { source, .. } => source.errno(),
        }
    }
}

/// A synchronous rtnetlink client bound to one network namespace.
///
/// A netlink socket belongs to the namespace of the thread that created it, for its whole life.
/// [`Netlink::open_in`] creates it inside [`Netns::run`]; afterwards the handle can be used from
/// any thread (it is `Send + Sync`; concurrent calls are serialized) and always talks to that
/// namespace. A plugin typically holds two: `host` and `ctr`.
#[derive(Debug)]
pub struct Netlink {
    pub(crate) conn: Conn,
    netns: Arc<str>,
}

impl Netlink {
    /// Opens a handle on the namespace `ns`. The calling thread does not change namespace.
    pub fn open_in(ns: &Netns) -> Result<Netlink, OpenError> {
        let netns = ns.to_string();
        let conn = ns
            .run(Conn::open)
            .map_err(|source| OpenError::Enter {
                netns: netns.clone(),
                source,
            })?
            .map_err(|source| OpenError::Socket {
                netns: netns.clone(),
                source,
            })?;
        Ok(Netlink {
            conn,
            netns: netns.into(),
        })
    }

    /// Opens a handle on the calling thread's current namespace.
    pub fn open_current() -> Result<Netlink, OpenError> {
        let netns = Netns::current()
            .map(|ns| ns.to_string())
            .unwrap_or_else(|_| "the current netns".to_owned());
        let conn = Conn::open().map_err(|source| OpenError::Socket {
            netns: netns.clone(),
            source,
        })?;
        Ok(Netlink {
            conn,
            netns: netns.into(),
        })
    }

    /// The namespace this handle talks to, for messages: its path, or `net:[<inode>]`.
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// How many dumps this handle restarted because the kernel flagged them
    /// `NLM_F_DUMP_INTR` (the tables changed mid-dump). Diagnostics only.
    pub fn interrupted_dumps(&self) -> u64 {
        self.conn.interrupted_dumps()
    }

    /// The same, cheap to clone into errors.
    pub(crate) fn label(&self) -> Arc<str> {
        Arc::clone(&self.netns)
    }
}
