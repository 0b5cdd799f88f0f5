//! Node namespaces reachable the iproute2 way: `ip netns exec clab-<lab>-<node> …`.
//!
//! iproute2 looks names up in `/run/netns` (its `NETNS_RUN_DIR`, fixed at build time) and
//! opens the file it finds there, following symlinks. Each node's entry is therefore a
//! symlink to the container's own netns file (`<runroot>/netns/<id>`, the bind mount the
//! runtime keeps while the container runs): no second mount to leak, and the name follows
//! the container across `stop`/`start` (same id, same file). A dangling entry (stopped node)
//! fails `ip netns exec` with "No such file", which is the truth.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, symlink};
use std::path::{Path, PathBuf};

/// iproute2's `NETNS_RUN_DIR`.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Errors of the `netns_names` module.
#[derive(Debug, thiserror::Error)]
pub enum NetnsNameError {
    #[error("create {NETNS_RUN_DIR}")]
    Dir(#[source] io::Error),
    #[error("{path} exists already and is not the lab's: remove it or rename the lab")]
    Taken { path: PathBuf },
    #[error("link {path} to {target}")]
    Link {
        path: PathBuf,
        target: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// `/run/netns/<name>`.
pub fn path_of(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Whether `name` is free in `/run/netns` (or already points at `target`).
pub fn check_free(name: &str, target: Option<&Path>) -> Result<(), NetnsNameError> {
    let path = path_of(name);
    match fs::read_link(&path) {
        Ok(existing) if Some(existing.as_path()) == target => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        _ => Err(NetnsNameError::Taken { path }),
    }
}

/// Points `/run/netns/<name>` at `target`, replacing a symlink the lab made before (a
/// restarted node's).
pub fn link(name: &str, target: &Path) -> Result<(), NetnsNameError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(NETNS_RUN_DIR)
        .map_err(NetnsNameError::Dir)?;
    let path = path_of(name);
    if fs::read_link(&path).is_ok_and(|t| t == target) {
        return Ok(());
    }
    symlink(target, &path).map_err(|source| NetnsNameError::Link {
        path,
        target: target.to_owned(),
        source,
    })
}

/// Removes `/run/netns/<name>` if it is a symlink (never a bind-mounted namespace file of
/// someone else's); a missing entry is success.
pub fn unlink(name: &str) -> Result<(), NetnsNameError> {
    let path = path_of(name);
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            fs::remove_file(&path).map_err(|source| NetnsNameError::Remove { path, source })
        }
        Ok(_) => Err(NetnsNameError::Taken { path }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetnsNameError::Remove { path, source }),
    }
}
