//! A container's root filesystem: an overlay of its image's layers (read-only, shared) under
//! its own upper and work directories.
//!
//! **Why the new mount API.** `mount(2)` takes its options in one page: `lowerdir=a:b:c` with
//! a store path of ~100 bytes per layer stops at about 40 layers, and the kernel refuses the
//! mount. `fsopen("overlay")` + `fsconfig(FSCONFIG_SET_STRING, "lowerdir+", layer)` adds the
//! layers one at a time (Linux 6.8; overlayfs takes up to 500 of them), then `fsmount` and
//! `move_mount` attach the result. Each path is passed as it is: no `:` or `,` escaping.
//! Kernels without `lowerdir+` fall back to `mount(2)`, which works while the option string
//! fits.
//!
//! **Idmapped layers.** With a user namespace, each layer is an idmapped detached mount
//! (`open_tree(OPEN_TREE_CLONE)` + `mount_setattr(MOUNT_ATTR_IDMAP)`), handed to overlayfs as
//! a file descriptor (`fsconfig(FSCONFIG_SET_FD, "lowerdir+")`, Linux 6.13): its root-owned
//! files belong to the container's root, nothing is attached anywhere, and the layers on disk
//! are never changed. Copy-ups keep the mapped owner in the upper layer.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::mount::{MsFlags, mount};
use rustix::mount::{
    FsMountFlags, FsOpenFlags, MoveMountFlags, OpenTreeFlags, fsconfig_create, fsconfig_set_fd,
    fsconfig_set_string, fsmount, fsopen, move_mount, open_tree,
};

/// Errors of the `overlay` module.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("an overlay needs at least one layer")]
    NoLayers,
    #[error("mount the overlay of {layers} layers on {target}: {step}{}", kernel_says(.log))]
    Mount {
        layers: usize,
        target: PathBuf,
        step: &'static str,
        log: Vec<String>,
        #[source]
        source: io::Error,
    },
    #[error(
        "mount layer {layer} idmapped for the user namespace ({step}; needs a filesystem with idmapped mounts)"
    )]
    Idmap {
        layer: PathBuf,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "the overlay of {layers} layers needs the kernel's `lowerdir+` (Linux 6.8) or a shorter option string than mount(2) takes"
    )]
    TooDeep { layers: usize },
}

fn kernel_says(log: &[String]) -> String {
    if log.is_empty() {
        String::new()
    } else {
        format!(" (kernel: {})", log.join("; "))
    }
}

/// One lower layer: a directory, or (idmapped) a detached mount of one.
#[derive(Debug)]
pub enum Lower {
    Path(PathBuf),
    Tree { layer: PathBuf, fd: OwnedFd },
}

impl Lower {
    fn path(&self) -> &Path {
        match self {
            Lower::Path(p) | Lower::Tree { layer: p, .. } => p,
        }
    }
}

/// The overlay to mount.
#[derive(Debug)]
pub struct Overlay {
    /// Lower layers, **top first** (overlayfs' order: the first hides the others).
    pub lowers: Vec<Lower>,
    /// Upper and work directories (same filesystem); `None` for a read-only overlay.
    pub upper: Option<(PathBuf, PathBuf)>,
}

const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const AT_RECURSIVE: libc::c_uint = 0x8000;
const AT_EMPTY_PATH: libc::c_uint = 0x1000;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `layer` as a detached mount whose ids are mapped through the user namespace `userns`.
pub fn idmapped(layer: &Path, userns: BorrowedFd<'_>) -> Result<Lower, OverlayError> {
    let err = |step| {
        let layer = layer.to_path_buf();
        move |source: io::Error| OverlayError::Idmap {
            layer,
            step,
            source,
        }
    };
    let tree = open_tree(
        rustix::fs::CWD,
        layer,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(|e| err("open_tree")(e.into()))?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        // A descriptor number is non-negative: the conversion cannot fail.
        userns_fd: u64::try_from(userns.as_raw_fd()).unwrap_or_default(),
    };
    // SAFETY: mount_setattr reads `size_of::<MountAttr>()` bytes from `attr` and the empty
    // NUL-terminated path; both outlive the call, and `tree` is a descriptor we own. (rustix
    // has no wrapper for mount_setattr.)
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            AT_EMPTY_PATH | AT_RECURSIVE,
            &raw const attr,
            size_of::<MountAttr>(),
        )
    };
    if rc != 0 {
        return Err(err("mount_setattr MOUNT_ATTR_IDMAP")(
            io::Error::last_os_error(),
        ));
    }
    Ok(Lower::Tree {
        layer: layer.to_path_buf(),
        fd: tree,
    })
}

impl Overlay {
    /// Mounts the overlay on `target`.
    pub fn mount(&self, target: &Path) -> Result<(), OverlayError> {
        if self.lowers.is_empty() {
            return Err(OverlayError::NoLayers);
        }
        match self.mount_new_api(target) {
            Ok(()) => Ok(()),
            // No fsopen (ENOSYS) or no `lowerdir+` (EINVAL on the first one): the old way,
            // if the layers are paths and fit.
            Err(Fallback::Legacy) => self.mount_legacy(target),
            Err(Fallback::Failed(e)) => Err(e),
        }
    }

    fn mount_new_api(&self, target: &Path) -> Result<(), Fallback> {
        let layers = self.lowers.len();
        let fail = |step: &'static str, log: Vec<String>, source: rustix::io::Errno| {
            Fallback::Failed(OverlayError::Mount {
                layers,
                target: target.to_path_buf(),
                step,
                log,
                source: source.into(),
            })
        };
        let fs = match fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
            Ok(fs) => fs,
            Err(rustix::io::Errno::NOSYS) => return Err(Fallback::Legacy),
            Err(e) => return Err(fail("fsopen", Vec::new(), e)),
        };
        for (i, lower) in self.lowers.iter().enumerate() {
            let set = match lower {
                Lower::Path(p) => fsconfig_set_string(fs.as_fd(), "lowerdir+", p.as_path()),
                Lower::Tree { fd, .. } => fsconfig_set_fd(fs.as_fd(), "lowerdir+", fd.as_fd()),
            };
            match set {
                Ok(()) => {}
                Err(rustix::io::Errno::INVAL)
                    if i == 0 && matches!(lower, Lower::Path(_)) && !knows_lowerdir_plus(&fs) =>
                {
                    return Err(Fallback::Legacy);
                }
                Err(e) => return Err(fail("fsconfig lowerdir+", read_log(&fs), e)),
            }
        }
        if let Some((upper, work)) = &self.upper {
            fsconfig_set_string(fs.as_fd(), "upperdir", upper.as_path())
                .map_err(|e| fail("fsconfig upperdir", read_log(&fs), e))?;
            fsconfig_set_string(fs.as_fd(), "workdir", work.as_path())
                .map_err(|e| fail("fsconfig workdir", read_log(&fs), e))?;
        }
        fsconfig_create(fs.as_fd()).map_err(|e| fail("fsconfig create", read_log(&fs), e))?;
        let mnt = fsmount(
            fs.as_fd(),
            FsMountFlags::FSMOUNT_CLOEXEC,
            rustix::mount::MountAttrFlags::empty(),
        )
        .map_err(|e| fail("fsmount", read_log(&fs), e))?;
        move_mount(
            mnt.as_fd(),
            "",
            rustix::fs::CWD,
            target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| fail("move_mount", Vec::new(), e))
    }

    fn mount_legacy(&self, target: &Path) -> Result<(), OverlayError> {
        let layers = self.lowers.len();
        let mut paths = Vec::with_capacity(layers);
        for lower in &self.lowers {
            match lower {
                Lower::Path(p) => paths.push(escape(p)),
                // Only the new API takes descriptors.
                Lower::Tree { .. } => return Err(OverlayError::TooDeep { layers }),
            }
        }
        let mut options = format!("lowerdir={}", paths.join(":"));
        if let Some((upper, work)) = &self.upper {
            options.push_str(&format!(
                ",upperdir={},workdir={}",
                escape(upper),
                escape(work)
            ));
        }
        // The kernel copies one page of options.
        if options.len() >= 4096 {
            return Err(OverlayError::TooDeep { layers });
        }
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|errno| OverlayError::Mount {
            layers,
            target: target.to_path_buf(),
            step: "mount(2)",
            log: Vec::new(),
            source: errno.into(),
        })
    }

    /// The layer paths, top first (for `inspect`).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.lowers.iter().map(|l| l.path().to_path_buf()).collect()
    }
}

enum Fallback {
    Legacy,
    Failed(OverlayError),
}

/// Whether the kernel's complaint about the first `lowerdir+` is that it does not know the
/// key (an old kernel) rather than about the layer.
fn knows_lowerdir_plus(fs: &OwnedFd) -> bool {
    !read_log(fs)
        .iter()
        .any(|m| m.contains("Unknown parameter") || m.contains("lowerdir+"))
}

/// What the kernel logged on the filesystem context (`e overlayfs: …` lines).
fn read_log(fs: &OwnedFd) -> Vec<String> {
    let mut out = Vec::new();
    // SAFETY: a duplicate of a descriptor we own, closed when `file` drops.
    let dup = unsafe { libc::fcntl(fs.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return out;
    }
    // SAFETY: `dup` is a fresh descriptor owned by nobody else.
    let mut file = unsafe { File::from_raw_fd(dup as RawFd) };
    let mut buf = [0u8; 1024];
    // Each read returns one message; ENODATA when there are no more.
    for _ in 0..16 {
        match file.read(&mut buf) {
            Ok(n) if n > 0 => out.push(String::from_utf8_lossy(&buf[..n]).trim().to_owned()),
            _ => break,
        }
    }
    out
}

/// A path in `mount(2)`'s overlay options: `\`, `:` and `,` escaped.
fn escape(path: &Path) -> String {
    let text = path.to_string_lossy();
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\\' | ':' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::fs;

    use super::*;

    /// Runs `f` on a thread of its own in a new mount namespace where every mount is
    /// private: what it mounts is gone when the thread ends, and the host never sees it.
    pub(crate) fn in_mount_namespace<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|s| {
            s.spawn(|| {
                // unshare(CLONE_NEWNS) is allowed on one thread of a multi-threaded
                // process: the thread gets its own fs context (setns would not be).
                nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
                mount(
                    None::<&str>,
                    "/",
                    None::<&str>,
                    MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                    None::<&str>,
                )
                .unwrap();
                f()
            })
            .join()
            .unwrap()
        })
    }

    fn layers(root: &Path, n: usize) -> Vec<PathBuf> {
        // Long names, as the store's: 64 hex digits each.
        (0..n)
            .map(|i| {
                let dir = root.join(format!("{i:064}")).join("diff");
                fs::create_dir_all(&dir).unwrap();
                fs::write(dir.join(format!("f{i}")), i.to_string()).unwrap();
                fs::write(dir.join("top"), i.to_string()).unwrap();
                dir
            })
            .collect()
    }

    #[test]
    fn two_hundred_layers_mount() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = layers(&tmp.path().join("layers"), 200);
        let upper = tmp.path().join("upper");
        let work = tmp.path().join("work");
        let merged = tmp.path().join("merged");
        for d in [&upper, &work, &merged] {
            fs::create_dir(d).unwrap();
        }
        // mount(2) cannot: the option string is far past a page.
        let legacy = Overlay {
            lowers: dirs.iter().rev().map(|d| Lower::Path(d.clone())).collect(),
            upper: Some((upper.clone(), work.clone())),
        };
        assert!(matches!(
            legacy.mount_legacy(&merged),
            Err(OverlayError::TooDeep { layers: 200 })
        ));
        let seen = in_mount_namespace(|| {
            legacy.mount(&merged).unwrap();
            fs::write(merged.join("new"), b"upper").unwrap();
            let seen = (
                fs::read_to_string(merged.join("f0")).unwrap(),
                fs::read_to_string(merged.join("f199")).unwrap(),
                fs::read_to_string(merged.join("top")).unwrap(),
                fs::read_dir(&merged).unwrap().count(),
            );
            nix::mount::umount2(&merged, nix::mount::MntFlags::MNT_DETACH).unwrap();
            seen
        });
        assert_eq!(seen, ("0".into(), "199".into(), "199".into(), 202));
        assert_eq!(fs::read(upper.join("new")).unwrap(), b"upper");
        // Nothing stays mounted: the namespace died with its thread.
        assert_eq!(fs::read_dir(&merged).unwrap().count(), 0);
    }

    #[test]
    fn few_layers_mount_the_old_way_too() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = layers(&tmp.path().join("layers"), 3);
        let merged = tmp.path().join("merged");
        fs::create_dir(&merged).unwrap();
        let overlay = Overlay {
            lowers: dirs.iter().rev().map(|d| Lower::Path(d.clone())).collect(),
            upper: None,
        };
        let top = in_mount_namespace(|| {
            overlay.mount_legacy(&merged).unwrap();
            fs::read_to_string(merged.join("top")).unwrap()
        });
        assert_eq!(top, "2");
    }
}
