//! The container's root filesystem, assembled by the init inside its own mount namespace:
//!
//! 1. make every mount private (nothing below propagates back to the host);
//! 2. overlayfs: lower = the image's layers (never written; shared by every container of
//!    every image that has them), upper/work in the container's directory, mounted on
//!    `merged` through the new mount API, which takes deep images (see
//!    [`berth_image::overlay`]);
//! 3. `/proc` (of the new pid namespace), a tmpfs `/dev` with the usual nodes, `/dev/pts`
//!    (a new devpts instance), `/dev/shm`, `/dev/mqueue` (of the new IPC namespace), `/sys`
//!    read-only (of the new network namespace);
//! 4. volumes, bind-mounted on targets resolved inside the rootfs;
//! 5. masked paths (`/dev/null` or a read-only tmpfs over them) and read-only paths;
//! 6. the working directory, created if missing;
//! 7. `pivot_root` and detach the old root; `--read-only` remounts `/` read-only last.
//!
//! Because the overlay is mounted inside the container's mount namespace only, it goes away
//! with the container's last process: the host's mount table never sees it, and a runtime
//! killed mid-run cannot leave it mounted.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{DirBuilderExt, symlink};
use std::path::{Path, PathBuf};

use berth_fs::resolve::{ResolveError, secure_join};
use berth_image::overlay::{self, Lower, Overlay, OverlayError};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::{Mode, SFlag, makedev, mknod};
use nix::sys::statvfs::{FsFlags, statvfs};
use nix::unistd::{chdir, fchdir, pivot_root};
use serde::{Deserialize, Serialize};

/// Errors of the `rootfs` module: one variant per step.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("make the mount namespace private")]
    MakePrivate(#[source] nix::Error),
    #[error(transparent)]
    Overlay(#[from] OverlayError),
    #[error("mount {what} on {target}")]
    Mount {
        what: &'static str,
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("create mount point {path}")]
    MountPoint {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("create device node {path}")]
    Mknod {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("create symlink {path}")]
    Symlink {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("bind-mount volume {source_path} on {target}")]
    Volume {
        source_path: PathBuf,
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("make {target} read-only")]
    ReadOnly {
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("mask {path}")]
    Mask {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    #[error("create working directory {path}")]
    Workdir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("open {path} for pivot_root")]
    OpenRoot {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("pivot_root into {rootfs}")]
    PivotRoot {
        rootfs: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("detach the old root after pivot_root")]
    DetachOldRoot(#[source] nix::Error),
    #[error("chdir to {path}")]
    Chdir {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("remount / read-only")]
    ReadOnlyRoot(#[source] nix::Error),
}

/// A bind mount into the container (`-v HOST:CONTAINER[:ro]`, validated; also the name
/// files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    pub source: PathBuf,
    pub destination: PathBuf,
    pub read_only: bool,
}

/// The host paths of a container's filesystem (part of the init's configuration).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RootfsSpec {
    /// The image's layers, top first: the overlay's read-only lower directories.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
    /// Mount point of the overlay (only in the container's mount namespace).
    pub merged: PathBuf,
    pub volumes: Vec<Volume>,
    pub read_only: bool,
    pub workdir: PathBuf,
    /// `--privileged`: /sys read-write, nothing masked, /proc/sys & co. writable.
    #[serde(default)]
    pub privileged: bool,
}

/// The container's root as the host sees it, when the container has a user namespace: the
/// image's layers are mounted idmapped with that namespace, and what the init creates on the
/// container's behalf belongs to its root (see [`crate::sandbox::userns`]).
#[derive(Debug)]
pub struct MappedRoot<'a> {
    /// The container's user namespace.
    pub userns: BorrowedFd<'a>,
    /// Host uid and gid of the container's root.
    pub uid: u32,
    pub gid: u32,
    /// Host gid of the container's group 5 (`tty`), if mapped: the group of its ptys.
    pub tty_gid: Option<u32>,
}

/// Hidden from the container (docker's list): kernel memory, keys, timers, hardware.
pub const MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
    "/proc/interrupts",
];

/// Visible but read-only (docker's list): kernel tunables and triggers.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// (name, major, minor): the device nodes of `/dev`, all mode 0666.
const DEVICES: [(&str, u64, u64); 6] = [
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

fn mount_err(what: &'static str, target: &Path) -> impl FnOnce(nix::Error) -> RootfsError {
    let target = target.to_path_buf();
    move |source| RootfsError::Mount {
        what,
        target,
        source,
    }
}

fn mkdir_all(path: &Path) -> Result<(), RootfsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|source| RootfsError::MountPoint {
            path: path.to_path_buf(),
            source,
        })
}

/// Steps 1–6 (see the module docs), before `pivot_root`. With `mapped`, the image is the
/// lower layer through an idmapped mount, and `/dev`, its nodes and `/dev/shm` belong to the
/// container's root.
pub fn prepare(spec: &RootfsSpec, mapped: Option<&MappedRoot<'_>>) -> Result<(), RootfsError> {
    // 1. Private, recursively: the new mount namespace starts as a copy whose mounts are
    // peers of the host's when those are shared; without this the overlay and everything
    // below would propagate into the host's mount table.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(RootfsError::MakePrivate)?;

    // 2. The overlay of the image's layers. With a user namespace each layer is an idmapped
    // detached mount: its root-owned files belong to the container's root, and copy-ups keep
    // that owner in the upper layer; the layers on disk never change. The overlay keeps its
    // own reference to each, so nothing is attached anywhere but the overlay itself.
    let root = &spec.merged;
    let lowers = spec
        .lowers
        .iter()
        .map(|layer| match mapped {
            None => Ok(Lower::Path(layer.clone())),
            Some(m) => overlay::idmapped(layer, m.userns),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Overlay {
        lowers,
        upper: Some((spec.upper.clone(), spec.work.clone())),
    }
    .mount(root)?;

    // 3. Kernel filesystems.
    let nosuid_nodev_noexec = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let proc = secure_join(root, Path::new("/proc"))?;
    mkdir_all(&proc)?;
    mount(
        Some("proc"),
        &proc,
        Some("proc"),
        nosuid_nodev_noexec,
        None::<&str>,
    )
    .map_err(mount_err("proc", &proc))?;

    let dev = secure_join(root, Path::new("/dev"))?;
    mkdir_all(&dev)?;
    let owner = mapped.map_or_else(String::new, |m| format!(",uid={},gid={}", m.uid, m.gid));
    mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME,
        Some(format!("mode=755,size=65536k{owner}").as_str()),
    )
    .map_err(mount_err("tmpfs", &dev))?;
    populate_dev(&dev, mapped)?;

    let sys = secure_join(root, Path::new("/sys"))?;
    mkdir_all(&sys)?;
    mount(
        Some("sysfs"),
        &sys,
        Some("sysfs"),
        if spec.privileged {
            nosuid_nodev_noexec
        } else {
            nosuid_nodev_noexec | MsFlags::MS_RDONLY
        },
        None::<&str>,
    )
    .map_err(mount_err("sysfs", &sys))?;

    // 4. Volumes, shallow destinations first so /a is mounted before /a/b.
    let mut volumes: Vec<&Volume> = spec.volumes.iter().collect();
    volumes.sort_by_key(|v| v.destination.components().count());
    for volume in volumes {
        mount_volume(root, volume)?;
    }

    // 5. Masked and read-only paths (none for a privileged container, as with docker: a lab
    // router writes /proc/sys/net and reads what it likes).
    let null = dev.join("null");
    let (masked, readonly): (&[&str], &[&str]) = if spec.privileged {
        (&[], &[])
    } else {
        (&MASKED_PATHS, &READONLY_PATHS)
    };
    for path in masked {
        mask(root, path, &null)?;
    }
    for path in readonly {
        let target = root.join(path.trim_start_matches('/'));
        if fs::symlink_metadata(&target).is_err() {
            continue;
        }
        mount(
            Some(&target),
            &target,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(mount_err("read-only bind", &target))?;
        remount_read_only(&target)?;
    }

    // 6. The working directory (docker creates a missing one, owned by the container's root).
    let workdir = secure_join(root, &spec.workdir)?;
    let workdir_err = |source| RootfsError::Workdir {
        path: spec.workdir.clone(),
        source,
    };
    let missing: Vec<PathBuf> = workdir
        .ancestors()
        .take_while(|p| *p != root.as_path() && fs::symlink_metadata(p).is_err())
        .map(Path::to_path_buf)
        .collect();
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&workdir)
        .map_err(workdir_err)?;
    if let Some(m) = mapped {
        for dir in &missing {
            std::os::unix::fs::lchown(dir, Some(m.uid), Some(m.gid)).map_err(workdir_err)?;
        }
    }
    Ok(())
}

/// Device nodes, the standard symlinks, `/dev/pts`, `/dev/shm`, `/dev/mqueue`.
fn populate_dev(dev: &Path, mapped: Option<&MappedRoot<'_>>) -> Result<(), RootfsError> {
    for (name, major, minor) in DEVICES {
        let path = dev.join(name);
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .map_err(|source| RootfsError::Mknod {
            path: path.clone(),
            source,
        })?;
        if let Some(m) = mapped {
            std::os::unix::fs::lchown(&path, Some(m.uid), Some(m.gid)).map_err(|source| {
                RootfsError::MountPoint {
                    path: path.clone(),
                    source,
                }
            })?;
        }
    }
    let links = [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("core", "/proc/kcore"),
    ];
    for (name, target) in links {
        let path = dev.join(name);
        symlink(target, &path).map_err(|source| RootfsError::Symlink { path, source })?;
    }

    let pts = dev.join("pts");
    mkdir_all(&pts)?;
    // The ids in these options are the mounter's, i.e. the host's: with a user namespace,
    // the container's `tty` group and root as the host knows them.
    let tty_gid = match mapped {
        None => Some(5),
        Some(m) => m.tty_gid,
    };
    let pts_options = match tty_gid {
        Some(gid) => format!("newinstance,ptmxmode=0666,mode=0620,gid={gid}"),
        None => "newinstance,ptmxmode=0666,mode=0620".to_owned(),
    };
    mount(
        Some("devpts"),
        &pts,
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some(pts_options.as_str()),
    )
    .map_err(mount_err("devpts", &pts))?;

    let shm = dev.join("shm");
    mkdir_all(&shm)?;
    let owner = mapped.map_or_else(String::new, |m| format!(",uid={},gid={}", m.uid, m.gid));
    mount(
        Some("shm"),
        &shm,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(format!("mode=1777,size=65536k{owner}").as_str()),
    )
    .map_err(mount_err("tmpfs", &shm))?;

    let mqueue = dev.join("mqueue");
    mkdir_all(&mqueue)?;
    mount(
        Some("mqueue"),
        &mqueue,
        Some("mqueue"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(mount_err("mqueue", &mqueue))
}

/// Bind-mounts a volume on its destination, resolved inside the rootfs (a symlink in the
/// image cannot redirect it to the host), creating a directory or an empty file to mount on.
fn mount_volume(root: &Path, volume: &Volume) -> Result<(), RootfsError> {
    let target = secure_join(root, &volume.destination)?;
    let source_is_dir = fs::metadata(&volume.source)
        .map(|m| m.is_dir())
        .unwrap_or(true);
    if source_is_dir {
        mkdir_all(&target)?;
    } else {
        if let Some(parent) = target.parent() {
            mkdir_all(parent)?;
        }
        if fs::symlink_metadata(&target).is_err() {
            File::create(&target).map_err(|source| RootfsError::MountPoint {
                path: target.clone(),
                source,
            })?;
        }
    }
    mount(
        Some(&volume.source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|source| RootfsError::Volume {
        source_path: volume.source.clone(),
        target: target.clone(),
        source,
    })?;
    if volume.read_only {
        remount_read_only(&target)?;
    }
    Ok(())
}

/// `/dev/null` over a file, a read-only empty tmpfs over a directory; absent paths are fine.
fn mask(root: &Path, path: &str, null: &Path) -> Result<(), RootfsError> {
    let target = root.join(path.trim_start_matches('/'));
    let Ok(meta) = fs::symlink_metadata(&target) else {
        return Ok(());
    };
    let err = |source| RootfsError::Mask {
        path: PathBuf::from(path),
        source,
    };
    if meta.is_dir() {
        mount(
            Some("tmpfs"),
            &target,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=0"),
        )
        .map_err(err)
    } else {
        mount(
            Some(null),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(err)
    }
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// Makes the bind mount at `target` read-only, submounts included. mount_setattr (5.12+)
/// does it recursively in one call; the classic bind remount is the fallback (it keeps the
/// mount's nosuid/nodev/noexec, which a remount would otherwise clear).
fn remount_read_only(target: &Path) -> Result<(), RootfsError> {
    let err = |source| RootfsError::ReadOnly {
        target: target.to_path_buf(),
        source,
    };
    let c_target = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|_| err(nix::Error::EINVAL))?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr reads `size_of::<MountAttr>()` bytes from `attr` and the
    // NUL-terminated path; both outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c_target.as_ptr(),
            AT_RECURSIVE,
            &raw const attr,
            size_of::<MountAttr>(),
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let errno = nix::Error::last();
    if errno != nix::Error::ENOSYS {
        return Err(err(errno));
    }
    let current = statvfs(target).map_err(err)?.flags();
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    for (st, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if current.contains(st) {
            flags |= ms;
        }
    }
    mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(err)
}

/// Step 7: make `rootfs` the root. `pivot_root(".", ".")` stacks the old root on top of the
/// new one at `/` (no `put_old` directory needed inside the image, as runc does); the old
/// root is then reached through a descriptor opened before, made a slave so the unmount does
/// not propagate to the host, and lazily detached.
pub fn pivot(rootfs: &Path) -> Result<(), RootfsError> {
    let open_dir = |path: &Path| {
        File::open(path).map_err(|source| RootfsError::OpenRoot {
            path: path.to_path_buf(),
            source,
        })
    };
    let new_root = open_dir(rootfs)?;
    let old_root = open_dir(Path::new("/"))?;
    let pivot_err = |source| RootfsError::PivotRoot {
        rootfs: rootfs.to_path_buf(),
        source,
    };
    fchdir(new_root.as_fd()).map_err(pivot_err)?;
    pivot_root(".", ".").map_err(pivot_err)?;
    fchdir(old_root.as_fd()).map_err(pivot_err)?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(RootfsError::DetachOldRoot)?;
    umount2(".", MntFlags::MNT_DETACH).map_err(RootfsError::DetachOldRoot)?;
    chdir("/").map_err(|source| RootfsError::Chdir {
        path: PathBuf::from("/"),
        source,
    })
}

/// `--read-only`: after everything is mounted, the root itself becomes read-only (`/dev`,
/// `/dev/shm`, `/proc` and volumes keep their own flags, as with docker).
pub fn make_root_read_only() -> Result<(), RootfsError> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(RootfsError::ReadOnlyRoot)
}

/// `-t`: the pty slave also serves as `/dev/console` (after `pivot_root`, in the tmpfs /dev).
pub fn bind_console(slave: &Path) -> Result<(), RootfsError> {
    let console = Path::new("/dev/console");
    File::create(console).map_err(|source| RootfsError::MountPoint {
        path: console.to_path_buf(),
        source,
    })?;
    mount(
        Some(slave),
        console,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(mount_err("the pty slave", console))
}
