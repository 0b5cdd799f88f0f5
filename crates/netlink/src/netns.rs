//! Network namespaces as owned file descriptors, and a safe way to run code inside one.
//!
//! The model is the reference plugins' `pkg/ns`, minus its sharp edge: Go has to lock an OS
//! thread, switch it, and switch it back (and a failed switch-back poisons the thread). Here
//! [`Netns::run`] spawns a scoped helper thread, moves *that* thread into the namespace, runs the
//! closure and lets the thread exit. The caller's thread never calls `setns`, so no thread can
//! ever be left behind in the wrong namespace, whatever the closure does (including panicking).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::thread;

use nix::sched::{CloneFlags, setns};
use nix::sys::statfs::{NSFS_MAGIC, PROC_SUPER_MAGIC, fstatfs};

use crate::socket::Errno;

/// The calling thread's network namespace. `/proc/self` would name the *main* thread's, which
/// is wrong as soon as any other thread has been moved.
const THREAD_SELF_NET: &str = "/proc/thread-self/ns/net";

/// Errors of the `netns` module.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The path does not exist (any more). DEL treats this as "already gone".
    #[error("network namespace {path} does not exist")]
    NotFound {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("open network namespace {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("inspect network namespace {path}")]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file exists but is not a namespace file (e.g. an unmounted `/run/netns` entry, which
    /// is an empty regular file), or is a namespace of another type.
    #[error("{path} is not a network namespace ({reason})")]
    NotNetns { path: PathBuf, reason: String },
    #[error("spawn a helper thread to enter {netns}")]
    SpawnThread {
        netns: String,
        #[source]
        source: io::Error,
    },
    #[error("enter network namespace {netns}")]
    Enter {
        netns: String,
        #[source]
        source: io::Error,
    },
}

impl Errno for NetnsError {
    fn errno(&self) -> Option<i32> {
        match self {
            Self::NotFound { .. } => Some(libc::ENOENT),
            Self::Open { source, .. }
            | Self::Stat { source, .. }
            | Self::SpawnThread { source, .. }
            | Self::Enter { source, .. } => source.raw_os_error(),
            Self::NotNetns { .. } => None,
        }
    }
}

/// An open network namespace.
///
/// Holding the descriptor keeps the namespace alive even after its `/run/netns` mount is gone.
/// Equality compares the namespace identity `(st_dev, st_ino)`, not the path.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    path: Option<PathBuf>,
    dev: u64,
    ino: u64,
}

impl Netns {
    /// Opens the namespace file at `path` (a `/run/netns/<name>` bind mount, `/proc/<pid>/ns/net`,
    /// a CNI_NETNS path, ...).
    ///
    /// Like the reference `IsNSorErr`, this checks the filesystem magic (nsfs, or procfs on very
    /// old kernels). A path that does not exist yields [`NetnsError::NotFound`], which DEL can
    /// treat as success; anything else that is not a network namespace yields
    /// [`NetnsError::NotNetns`].
    ///
    /// The open never blocks: `CNI_NETNS` may name a FIFO, whose plain open would wait for a
    /// writer forever; opened non-blocking it fails the magic check at once.
    pub fn open(path: impl AsRef<Path>) -> Result<Netns, NetnsError> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
            .map_err(|source| {
                if source.kind() == io::ErrorKind::NotFound {
                    NetnsError::NotFound {
                        path: path.to_path_buf(),
                        source,
                    }
                } else {
                    NetnsError::Open {
                        path: path.to_path_buf(),
                        source,
                    }
                }
            })?;
        Self::checked(OwnedFd::from(file), Some(path.to_path_buf()))
    }

    /// Opens the network namespace of the calling thread.
    pub fn current() -> Result<Netns, NetnsError> {
        let mut ns = Self::open(THREAD_SELF_NET)?;
        // The path names "whoever opens it", which is meaningless for other threads.
        ns.path = None;
        Ok(ns)
    }

    /// Wraps an already open descriptor after checking that it is a network namespace.
    pub fn from_fd(fd: OwnedFd) -> Result<Netns, NetnsError> {
        Self::checked(fd, None)
    }

    fn checked(fd: OwnedFd, path: Option<PathBuf>) -> Result<Netns, NetnsError> {
        let shown = path
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("fd {}", fd.as_raw_fd())));
        let stat_err = |source: io::Error| NetnsError::Stat {
            path: shown.clone(),
            source,
        };
        let fs = fstatfs(&fd).map_err(|e| stat_err(e.into()))?;
        let magic = fs.filesystem_type();
        if magic != NSFS_MAGIC && magic != PROC_SUPER_MAGIC {
            return Err(NetnsError::NotNetns {
                path: shown,
                reason: format!("filesystem magic {magic:?}"),
            });
        }
        check_ns_type(&fd).map_err(|reason| NetnsError::NotNetns {
            path: shown.clone(),
            reason,
        })?;
        let meta = File::from(fd.try_clone().map_err(stat_err)?)
            .metadata()
            .map_err(stat_err)?;
        Ok(Netns {
            fd,
            path,
            dev: meta.dev(),
            ino: meta.ino(),
        })
    }

    /// The path this namespace was opened from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The namespace inode number, as shown by `readlink /proc/<pid>/ns/net` (`net:[<ino>]`).
    pub fn inode(&self) -> u64 {
        self.ino
    }

    /// Duplicates the descriptor.
    pub fn try_clone(&self) -> io::Result<Netns> {
        Ok(Netns {
            fd: self.fd.try_clone()?,
            path: self.path.clone(),
            dev: self.dev,
            ino: self.ino,
        })
    }

    /// Runs `f` on a fresh helper thread that has joined this namespace, and returns its result.
    ///
    /// The calling thread never changes namespace. Everything `f` creates that binds to "the
    /// current netns" (sockets, `/proc/sys` and `/proc/thread-self/net` files it opens, child
    /// processes it spawns, threads it starts) belongs to this namespace, and stays usable after
    /// `run` returns: sockets and children keep the namespace they were created in.
    ///
    /// A panic in `f` is propagated to the caller.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        thread::scope(|scope| {
            let handle = thread::Builder::new()
                .name("berth-netns".into())
                .spawn_scoped(scope, || -> Result<T, NetnsError> {
                    // This thread is ours and exits right after `f`: it is the only thread that
                    // ever sees the switched namespace, so there is nothing to switch back.
                    setns(self.fd.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| {
                        NetnsError::Enter {
                            netns: self.to_string(),
                            source: e.into(),
                        }
                    })?;
                    Ok(f())
                })
                .map_err(|source| NetnsError::SpawnThread {
                    netns: self.to_string(),
                    source,
                })?;
            match handle.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }
}

impl PartialEq for Netns {
    fn eq(&self, other: &Self) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
}

impl Eq for Netns {}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl fmt::Display for Netns {
    /// The path if there is one, else `net:[<inode>]` like `/proc/<pid>/ns/net`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{}", path.display()),
            None => write!(f, "net:[{}]", self.ino),
        }
    }
}

/// Refines the magic check: an nsfs file could be a mount, pid, ... namespace. `NS_GET_NSTYPE`
/// (Linux 4.11) tells; where the ioctl is unknown (ENOTTY, old procfs files) the magic check has
/// to be enough, as in the reference.
fn check_ns_type(fd: &OwnedFd) -> Result<(), String> {
    // SAFETY: NS_GET_NSTYPE takes no argument and only reads the descriptor, which is open for
    // the duration of the call because we borrow its owner.
    let kind = unsafe { libc::ioctl(fd.as_raw_fd(), libc::NS_GET_NSTYPE) };
    if kind < 0 {
        return Ok(());
    }
    if kind == libc::CLONE_NEWNET {
        Ok(())
    } else {
        Err(format!("namespace type {kind:#x}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_is_equal_to_itself_and_has_no_path() {
        let a = Netns::current().expect("open current netns");
        let b = Netns::current().expect("open current netns");
        assert_eq!(a, b);
        assert!(a.path().is_none());
        assert_eq!(a.to_string(), format!("net:[{}]", a.inode()));
    }

    #[test]
    fn missing_path_is_not_found() {
        let err = Netns::open("/nonexistent/berth/netns").expect_err("must fail");
        assert!(matches!(err, NetnsError::NotFound { .. }), "{err:?}");
        assert!(err.is_not_found());
    }

    #[test]
    fn directory_is_not_a_netns() {
        let err = Netns::open("/").expect_err("a directory is not a netns");
        assert!(matches!(err, NetnsError::NotNetns { .. }), "{err:?}");
        assert_eq!(err.errno(), None);
    }

    /// Issue 11, finding 1: a FIFO at CNI_NETNS made `open` wait for a writer forever.
    #[test]
    fn a_fifo_is_not_a_netns_and_does_not_block() {
        let dir = std::env::temp_dir().join(format!("berth-netns-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let fifo = dir.join("netns");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let (tx, rx) = std::sync::mpsc::channel();
        let path = fifo.clone();
        thread::spawn(move || {
            let _ = tx.send(Netns::open(&path).map(drop));
        });
        let got = rx.recv_timeout(std::time::Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&dir);
        let err = got
            .expect("Netns::open blocked on a FIFO")
            .expect_err("a FIFO is not a netns");
        assert!(matches!(err, NetnsError::NotNetns { .. }), "{err:?}");
    }

    #[test]
    fn other_namespace_types_are_rejected() {
        // nsfs passes the magic check; NS_GET_NSTYPE tells it is a UTS namespace.
        let err = Netns::open("/proc/thread-self/ns/uts").expect_err("uts is not net");
        assert!(matches!(err, NetnsError::NotNetns { .. }), "{err:?}");
    }
}
