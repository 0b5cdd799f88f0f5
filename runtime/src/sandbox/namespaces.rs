//! Namespaces: the container's named network namespace (created by the runtime, joined by
//! the init), and the fixed order in which the init enters the others.
//!
//! The network namespace exists *before* the container's process, as a file bind-mounted at
//! `<runroot>/netns/<id>` (the way `ip netns add` makes one). That is what lets the CNI phase
//! configure interfaces before the user's command runs, and what CNI_NETNS will name. It is
//! created on a short-lived helper thread that unshares, brings `lo` up, bind-mounts its
//! `/proc/thread-self/ns/net` and exits: the caller's thread never changes namespace
//! (STYLE §6.1).
//!
//! The init (single-threaded, freshly exec'ed, already PID 1 of a new pid namespace made by
//! `clone3`) then applies, in this order:
//! 1. `setns(netns)`: join the prepared network namespace;
//! 2. `unshare(NEWNS | NEWUTS | NEWIPC | NEWCGROUP)`: the cgroup namespace last among the
//!    decisions that depend on placement, because its root is the cgroup the process is in at
//!    unshare time, so the runtime must have moved the init into the container's cgroup first
//!    (it has: the init only proceeds once its configuration arrives, which the runtime
//!    sends after the move). `unshare(CLONE_NEWNS)` needs fs attributes not shared with other
//!    threads: true in a single-threaded process.
//!
//! With a user namespace ([`crate::sandbox::userns`]) the order differs: the netns, UTS and IPC
//! namespaces are the holder's (made in the user namespace), only the mount namespace is
//! unshared at step 2, and the user namespace is entered last, after the root filesystem is
//! ready, followed by a new cgroup namespace ([`Holder`]). `berth exec` joins the
//! namespaces of a running container instead ([`join_container`]).

use std::ffi::CStr;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread;

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};

/// Errors of the `namespaces` module.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("create netns mount point {path}")]
    CreateFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("spawn the helper thread creating netns {path}")]
    SpawnThread {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("helper thread creating netns {path} panicked")]
    ThreadPanicked { path: PathBuf },
    #[error("unshare a new network namespace for {path}")]
    UnshareNet {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("bring lo up in netns {path}")]
    LoopbackUp {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("bind-mount the new network namespace on {path}")]
    BindNetns {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("unmount netns {path}")]
    UnmountNetns {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("remove netns file {path}")]
    RemoveNetns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("open netns {path}")]
    OpenNetns {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("join netns {path}")]
    JoinNetns {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("unshare mount, uts, ipc and cgroup namespaces")]
    Unshare(#[source] nix::Error),
    #[error("unshare a mount namespace")]
    UnshareMount(#[source] nix::Error),
    #[error("unshare a cgroup namespace in the user namespace")]
    UnshareCgroup(#[source] nix::Error),
    #[error("the user namespace holder (pid {pid}) exited")]
    HolderGone { pid: i32 },
    #[error("become uid and gid 0 of the user namespace")]
    BecomeRoot(#[source] nix::Error),
    #[error("open {path}")]
    OpenNs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the container's PID 1 ({pid}) exited")]
    Gone { pid: i32 },
    #[error("join the {kind} namespace of pid {pid}")]
    JoinNs {
        kind: &'static str,
        pid: i32,
        #[source]
        source: nix::Error,
    },
}

/// The namespaces `berth exec` joins, in this order (the pid namespace was joined by the
/// runtime before clone3). The cgroup namespace first: its root is taken from the cgroup the
/// joining process is in, which the runtime already set. The mount namespace last: `setns`
/// into it resets root and cwd to the container's root, after which the host's `/proc` is
/// out of reach; every descriptor is therefore opened before the first `setns`.
const EXEC_ORDER: [(&str, CloneFlags); 5] = [
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// In `berth exec-init` (single-threaded, so joining the mount and user namespaces is
/// allowed): joins the namespaces of the container's PID 1, if `pid` still is that process.
/// With `userns`, its user namespace comes last, once host root has joined the rest (its
/// mount namespace belongs to the host's user namespace, see [`crate::sandbox::userns`]).
pub fn join_container(pid: i32, start_time: u64, userns: bool) -> Result<(), NamespaceError> {
    let open = |kind: &str| {
        let path = PathBuf::from(format!("/proc/{pid}/ns/{kind}"));
        File::open(&path).map_err(|source| NamespaceError::OpenNs { path, source })
    };
    let mut files = Vec::with_capacity(EXEC_ORDER.len());
    for (kind, flag) in EXEC_ORDER {
        files.push((open(kind)?, kind, flag));
    }
    let user = userns.then(|| open("user")).transpose()?;
    // The descriptors pin the namespaces; if the start time still matches now, they are the
    // container's and not those of a process that reused the pid.
    if crate::sandbox::pid::process_start_time(pid) != Some(start_time) {
        return Err(NamespaceError::Gone { pid });
    }
    for (file, kind, flag) in files {
        setns(&file, flag).map_err(|source| NamespaceError::JoinNs { kind, pid, source })?;
    }
    match user {
        Some(user) => enter_user(&user, pid),
        None => Ok(()),
    }
}

/// Creates the network namespace file `path` (which must not exist) with `lo` up.
/// On failure nothing is left behind.
pub fn create_netns(path: &Path) -> Result<(), NamespaceError> {
    make_netns_file(path, NetnsSource::New)
}

/// Makes the network namespace at `source` (`/proc/<pid>/ns/net` of a user namespace's
/// holder, see [`crate::sandbox::userns`]) the file `path` (which must not exist), with `lo` up.
/// On failure nothing is left behind.
pub fn adopt_netns(path: &Path, source: &Path) -> Result<(), NamespaceError> {
    make_netns_file(path, NetnsSource::Existing(source))
}

/// Where the namespace of a netns file comes from.
enum NetnsSource<'a> {
    /// A new one, unshared by the helper thread.
    New,
    /// This namespace file, joined by the helper thread.
    Existing(&'a Path),
}

fn make_netns_file(path: &Path, source: NetnsSource<'_>) -> Result<(), NamespaceError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(path)
        .map_err(|source| NamespaceError::CreateFile {
            path: path.to_path_buf(),
            source,
        })?;
    let result = thread::scope(|scope| {
        let helper = thread::Builder::new()
            .name("berth-netns".into())
            .spawn_scoped(scope, || -> Result<(), NamespaceError> {
                // Only this thread moves, and it exits right after the mount.
                match source {
                    NetnsSource::New => unshare(CloneFlags::CLONE_NEWNET).map_err(|source| {
                        NamespaceError::UnshareNet {
                            path: path.to_path_buf(),
                            source,
                        }
                    })?,
                    NetnsSource::Existing(from) => join_netns(from)?,
                }
                loopback_up().map_err(|source| NamespaceError::LoopbackUp {
                    path: path.to_path_buf(),
                    source,
                })?;
                mount(
                    Some("/proc/thread-self/ns/net"),
                    path,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|source| NamespaceError::BindNetns {
                    path: path.to_path_buf(),
                    source,
                })
            })
            .map_err(|source| NamespaceError::SpawnThread {
                path: path.to_path_buf(),
                source,
            })?;
        helper.join().map_err(|_| NamespaceError::ThreadPanicked {
            path: path.to_path_buf(),
        })?
    });
    if result.is_err() {
        let _ = umount2(path, MntFlags::MNT_DETACH);
        let _ = fs::remove_file(path);
    }
    result
}

/// Sets `IFF_UP` on `lo` in the calling thread's network namespace (the classic ioctl: one
/// socket, no netlink needed for a single flag).
fn loopback_up() -> io::Result<()> {
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own; OwnedFd closes it on every path.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data (a name array and a union of integers/addresses);
    // all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    let name: &CStr = c"lo";
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.to_bytes_with_nul()) {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes ifru_flags of the ifreq we pass, which
    // lives for the duration of the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just filled ifru_flags, the union member SIOCGIFFLAGS uses.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    // IFF_UP is 0x1: fits the short the kernel uses for flags.
    ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: as above; SIOCSIFFLAGS reads the name and ifru_flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &raw const ifr) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts and removes the network namespace file. Idempotent: a missing or already
/// unmounted file is success. `MNT_DETACH` as `ip netns delete`: it succeeds even while a
/// process still holds the namespace; the kernel frees it with its last user.
pub fn remove_netns(path: &Path) -> Result<(), NamespaceError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (never mounted, or unmounted already).
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(source) => {
            return Err(NamespaceError::UnmountNetns {
                path: path.to_path_buf(),
                source,
            });
        }
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NamespaceError::RemoveNetns {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Step 1 in the init: join the prepared network namespace.
pub fn join_netns(path: &Path) -> Result<(), NamespaceError> {
    let file = File::open(path).map_err(|source| NamespaceError::OpenNetns {
        path: path.to_path_buf(),
        source,
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NamespaceError::JoinNetns {
        path: path.to_path_buf(),
        source,
    })
}

/// Step 2 in the init: new mount, UTS, IPC and cgroup namespaces (the pid namespace came
/// with clone3; the network namespace was joined).
pub fn unshare_rest() -> Result<(), NamespaceError> {
    unshare(
        CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWUTS
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWCGROUP,
    )
    .map_err(NamespaceError::Unshare)
}

/// Step 2 with a user namespace: only the mount namespace is new here (UTS and IPC are the
/// holder's, the cgroup namespace comes after the user namespace, see [`Holder::enter`]).
pub fn unshare_mount() -> Result<(), NamespaceError> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(NamespaceError::UnshareMount)
}

/// The namespaces of a user namespace's holder ([`crate::sandbox::userns::Holder`]), opened by the
/// init while it is host root: the user namespace to enter last, and the UTS and IPC
/// namespaces made in it.
#[derive(Debug)]
pub struct Holder {
    user: File,
    uts: File,
    ipc: File,
    pid: i32,
}

impl Holder {
    /// Opens the holder's namespaces if `pid` still is that process (its start time).
    pub fn open(pid: i32, start_time: u64) -> Result<Holder, NamespaceError> {
        let open = |kind: &str| {
            let path = PathBuf::from(format!("/proc/{pid}/ns/{kind}"));
            File::open(&path).map_err(|source| NamespaceError::OpenNs { path, source })
        };
        let holder = Holder {
            user: open("user")?,
            uts: open("uts")?,
            ipc: open("ipc")?,
            pid,
        };
        // The descriptors pin the namespaces: if the start time still matches now, they are
        // the holder's and not those of a process that reused its pid.
        if crate::sandbox::pid::process_start_time(pid) != Some(start_time) {
            return Err(NamespaceError::HolderGone { pid });
        }
        Ok(holder)
    }

    /// The user namespace (for the idmapped image).
    pub fn user(&self) -> BorrowedFd<'_> {
        self.user.as_fd()
    }

    /// Joins the UTS and IPC namespaces (as host root, which may join namespaces owned by
    /// any user namespace).
    pub fn join_uts_ipc(&self) -> Result<(), NamespaceError> {
        for (file, kind, flag) in [
            (&self.uts, "uts", CloneFlags::CLONE_NEWUTS),
            (&self.ipc, "ipc", CloneFlags::CLONE_NEWIPC),
        ] {
            setns(file, flag).map_err(|source| NamespaceError::JoinNs {
                kind,
                pid: self.pid,
                source,
            })?;
        }
        Ok(())
    }

    /// Last step before the command: enters the user namespace and becomes its root
    /// ([`enter_user`]), then unshares the cgroup namespace, which the user namespace thus
    /// owns. From here on the process has no privilege over anything of the host.
    pub fn enter(self) -> Result<(), NamespaceError> {
        enter_user(&self.user, self.pid)?;
        unshare(CloneFlags::CLONE_NEWCGROUP).map_err(NamespaceError::UnshareCgroup)
    }
}

/// Joins the user namespace `user` and switches to its uid and gid 0. `setns` gives every
/// capability in that namespace but keeps the host ids, which are not mapped there; as its
/// root the process keeps those capabilities across `execve`. Needs a single-threaded
/// caller whose fs attributes are not shared (the init and exec-init are).
pub fn enter_user(user: &File, pid: i32) -> Result<(), NamespaceError> {
    setns(user, CloneFlags::CLONE_NEWUSER).map_err(|source| NamespaceError::JoinNs {
        kind: "user",
        pid,
        source,
    })?;
    let root_gid = Gid::from_raw(0);
    setresgid(root_gid, root_gid, root_gid).map_err(NamespaceError::BecomeRoot)?;
    setgroups(&[]).map_err(NamespaceError::BecomeRoot)?;
    let root_uid = Uid::from_raw(0);
    setresuid(root_uid, root_uid, root_uid).map_err(NamespaceError::BecomeRoot)
}
