//! A sealed in-memory copy of this executable: what `berth` runs inside a container.
//!
//! **Why.** `berth` re-executes itself to become the container's init and the helper of
//! `berth exec` (a fresh single-threaded process is what namespace work needs). Such a process
//! lives inside the container, and its `/proc/<pid>/exe` is a magic link the kernel follows to
//! the executable *file*, whatever the reader's root: a container process could open the host's
//! `berth` binary through it, read it, and once no process runs it any longer (no more
//! ETXTBSY) write it, which is CVE-2019-5736 (runc). The exploit does not even need the short
//! life of the helper: an image whose command is a script `#!/proc/self/exe` makes the kernel
//! run *the runtime's own binary* as the container's process, for as long as the container
//! likes.
//!
//! **What.** Every process `berth` starts inside a container is executed through a
//! descriptor (`execveat(fd, "", …, AT_EMPTY_PATH)`) of a read-only view of the binary, as
//! runc does since 1.2: the binary's directory as the top lower layer of an overlayfs mount
//! attached nowhere ([`read_only_overlay_of_self`]). An overlayfs without an upper layer is
//! read-only in its superblock (no remount makes it writable) and a mount attached nowhere is
//! in no mount namespace a container could reach; nothing is copied, the page cache is the
//! binary's own. Where that mount cannot be made (no overlayfs, not privileged), a copy in a
//! memfd (`memfd_create`) sealed against any change (`F_SEAL_SEAL | F_SEAL_SHRINK |
//! F_SEAL_GROW | F_SEAL_WRITE`), as runc did before and crun does. `/proc/<pid>/exe` of those
//! processes then leads to that view or copy: readable (it is the same program), unwritable,
//! and not the host's file. Either is freed once nothing runs it.
//!
//! **Where.** The init is PID 1 of a new pid namespace: between its `clone3` and its exec
//! nothing else lives in that namespace, so exec'ing it from the copy is enough ([`SealedExe`]).
//! The exec helper is born *inside* the container's pid namespace, where a process with
//! `CAP_SYS_PTRACE` could look at it even before its exec; so `berth exec` first re-executes
//! itself from a copy ([`reexec_sealed`]), and the helper, a child of that, never runs the
//! host's file at all.
//!
//! Cost: one overlayfs mount (or one copy of the binary) per `berth run` and `berth exec`,
//! measured in `runtime/README.md`. `berth lab deploy`, `start` and `exec` re-execute
//! themselves from such a view first ([`reexec_sealed`]): the monitors, inits and exec helpers
//! of all the lab's nodes then share it. A host that refuses executable memfds (`vm.memfd_noexec = 2`) gets an
//! error naming the sysctl rather than a silent fallback to the host's file.

use std::ffi::{CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Errors of the `sealed` module.
#[derive(Debug, thiserror::Error)]
pub enum SealedError {
    #[error("open /proc/self/exe")]
    OpenSelf(#[source] io::Error),
    #[error("create a memfd for the sealed copy of berth (vm.memfd_noexec = 2 refuses one)")]
    Create(#[source] io::Error),
    #[error("copy /proc/self/exe into the memfd")]
    Copy(#[source] io::Error),
    #[error("seal the copy of berth")]
    Seal(#[source] io::Error),
    #[error("execute berth from its sealed copy (vm.memfd_noexec = 2 refuses it)")]
    Exec(#[source] io::Error),
    #[error("argument or environment variable with a NUL byte")]
    Nul,
}

/// The seals that make the copy immutable: no more seals, no size change, no write.
const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// `MFD_EXEC` (Linux 6.3): asks for an executable memfd explicitly, as the kernel wants to be
/// told since `vm.memfd_noexec` exists. Older kernels refuse the unknown flag (EINVAL), and
/// their memfds are executable anyway.
const MFD_EXEC: libc::c_uint = 0x0010;

/// A sealed copy of this executable, to exec with [`SealedExe::fd`] and `execveat`.
#[derive(Debug)]
pub struct SealedExe {
    fd: OwnedFd,
}

impl SealedExe {
    /// This process's executable, sealed: `/proc/self/exe` itself when this process already
    /// runs from a sealed copy (after [`reexec_sealed`]), else a new copy of it.
    pub fn of_self() -> Result<SealedExe, SealedError> {
        let exe = File::open("/proc/self/exe").map_err(SealedError::OpenSelf)?;
        if is_sealed(exe.as_fd()) {
            return Ok(SealedExe { fd: exe.into() });
        }
        if let Some(fd) = read_only_overlay_of_self() {
            return Ok(SealedExe { fd });
        }
        Self::copy_of_self(&exe)
    }

    /// A sealed memfd copy of `exe`, where [`read_only_overlay_of_self`] cannot be made.
    fn copy_of_self(exe: &File) -> Result<SealedExe, SealedError> {
        let copy = File::from(create_memfd()?);
        copy_all(exe, &copy).map_err(SealedError::Copy)?;
        // F_SEAL_EXEC (Linux 6.3) also freezes the mode bits. Older kernels refuse it, so it
        // goes first, on its own, before F_SEAL_SEAL forbids any further seal.
        // SAFETY: F_ADD_SEALS takes an int; the descriptor is ours.
        unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, libc::F_SEAL_EXEC) };
        // SAFETY: as above.
        if unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
            return Err(SealedError::Seal(io::Error::last_os_error()));
        }
        Ok(SealedExe { fd: copy.into() })
    }

    /// The descriptor to pass to `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`. It is
    /// close-on-exec: the exec'd program does not inherit it (fine for an ELF file, which the
    /// kernel has opened by then).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Whether `fd` is a [`SealedExe`]: a memfd carrying (at least) its seals, or a file of a
/// [`read_only_overlay_of_self`] mount. Anything else (a regular file) is not.
pub fn is_sealed(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: F_GET_SEALS takes no argument and only reads the descriptor's seals.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    (seals >= 0 && seals & SEALS == SEALS) || on_private_read_only_overlay(fd)
}

/// `OVERLAYFS_SUPER_MAGIC`.
const OVERLAYFS_MAGIC: i64 = 0x794c_7630;

/// This executable seen through an overlayfs mount of its directory that is attached
/// nowhere, as runc (1.2 and later) does: no copy (the page cache is the binary's own), and
/// nothing to write through. An overlayfs with lower layers only is read-only in its
/// superblock, which no remount can change, and a mount attached nowhere cannot be reached
/// from another mount namespace. Overlayfs wants two lower layers for that: the binary's
/// directory on top, and an empty directory made for the occasion below it (removed once
/// the mount holds it). `None` where this cannot be done (no fsopen or overlayfs, a binary
/// in `/`, an unprivileged caller): the caller copies the binary instead.
fn read_only_overlay_of_self() -> Option<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    use rustix::mount::{
        FsMountFlags, FsOpenFlags, MountAttrFlags, fsconfig_create, fsconfig_set_string, fsmount,
        fsopen,
    };

    let exe = std::fs::read_link("/proc/self/exe").ok()?;
    let (dir, name) = (exe.parent()?, exe.file_name()?);
    // A binary replaced or removed since it started: its path names something else now.
    if exe.as_os_str().as_bytes().ends_with(b" (deleted)") || dir == Path::new("/") {
        return None;
    }
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).ok()?;
    let empty = EmptyDir::create()?;
    let escape = |p: &Path| {
        let text = p.to_str()?;
        Some(text.replace('\\', "\\\\").replace(':', "\\:"))
    };
    let lowers = format!("{}:{}", escape(dir)?, escape(&empty.0)?);
    fsconfig_set_string(fs.as_fd(), "lowerdir", lowers.as_str()).ok()?;
    // Spurious kernel log lines otherwise, when the two layers are on different filesystems.
    let _ = fsconfig_set_string(fs.as_fd(), "xino", "off");
    fsconfig_create(fs.as_fd()).ok()?;
    drop(empty);
    let mnt = fsmount(
        fs.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOSUID,
    )
    .ok()?;
    let file = rustix::fs::openat(
        mnt.as_fd(),
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    on_private_read_only_overlay(file.as_fd()).then_some(file)
}

/// An empty directory of ours under the temporary directory, removed on drop.
struct EmptyDir(PathBuf);

impl EmptyDir {
    fn create() -> Option<EmptyDir> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        // Unique among processes and among the threads of one (a lab starts nodes at once).
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = base.join(format!(".berth-exe-lower-{}-{n}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&path).ok()?;
        Some(EmptyDir(path))
    }
}

impl Drop for EmptyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Whether `fd` is a file of a read-only overlayfs mount that is attached nowhere in this
/// mount namespace (see [`read_only_overlay_of_self`]).
fn on_private_read_only_overlay(fd: BorrowedFd<'_>) -> bool {
    use rustix::fs::{AtFlags, StatVfsMountFlags, StatxFlags};
    let Ok(fs) = rustix::fs::fstatfs(fd) else {
        return false;
    };
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between architectures
    let overlay = fs.f_type as i64 == OVERLAYFS_MAGIC;
    if !overlay
        || !rustix::fs::fstatvfs(fd).is_ok_and(|v| v.f_flag.contains(StatVfsMountFlags::RDONLY))
    {
        return false;
    }
    let Ok(stat) = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID) else {
        return false;
    };
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let id = stat.stx_mnt_id.to_string();
    !mountinfo
        .lines()
        .any(|line| line.split(' ').next() == Some(id.as_str()))
}

/// Where [`reexec_sealed`] tells the re-executed process (and the children it starts)
/// which file its copy was made from.
const ORIGINAL_EXE_ENV: &str = "BERTH_ORIGINAL_EXE";

/// The installed executable this process runs: `/proc/self/exe`, or for a sealed copy made
/// by [`reexec_sealed`] (in this process or a parent), the file it was copied from.
pub fn original_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok();
    if running_sealed() {
        if let Some(original) = std::env::var_os(ORIGINAL_EXE_ENV) {
            return Some(PathBuf::from(original));
        }
    }
    exe
}

/// Whether this process runs from a sealed copy.
pub fn running_sealed() -> bool {
    File::open("/proc/self/exe").is_ok_and(|exe| is_sealed(exe.as_fd()))
}

fn create_memfd() -> Result<OwnedFd, SealedError> {
    let base = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // The name shows in /proc/<pid>/exe as `/memfd:berth (deleted)`.
    let name = c"berth";
    let mut fd = -1;
    for flags in [base | MFD_EXEC, base] {
        // SAFETY: a NUL-terminated name and integer flags; returns a new descriptor or -1.
        fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
        if fd >= 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
            break;
        }
    }
    if fd < 0 {
        return Err(SealedError::Create(io::Error::last_os_error()));
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Copies all of `from` into `to` inside the kernel (`sendfile`; a memfd accepts it).
fn copy_all(from: &File, to: &File) -> io::Result<()> {
    let mut left = from.metadata()?.len();
    while left > 0 {
        let chunk = usize::try_from(left).unwrap_or(usize::MAX).min(1 << 30);
        // SAFETY: two valid descriptors; a null offset means "from the file position of `from`".
        let n = unsafe {
            libc::sendfile(
                to.as_raw_fd(),
                from.as_raw_fd(),
                std::ptr::null_mut(),
                chunk,
            )
        };
        match n {
            n if n > 0 => left = left.saturating_sub(n as u64),
            0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the executable shrank while being copied",
                ));
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}

/// Re-executes this process, with the same arguments and environment, from a sealed copy of
/// its executable, unless it already runs from one; returns only then (or on error). Call it
/// before the process starts anything inside a container (`berth exec`, see the module doc):
/// every child it makes afterwards runs the copy too.
pub fn reexec_sealed() -> Result<(), SealedError> {
    if running_sealed() {
        return Ok(());
    }
    let exe = SealedExe::of_self()?;
    let cstring = |s: OsString| CString::new(s.into_vec()).map_err(|_| SealedError::Nul);
    let args = std::env::args_os()
        .map(cstring)
        .collect::<Result<Vec<_>, _>>()?;
    // The copy's own path says nothing of where berth is installed: passed on for
    // [`original_exe`] (the CNI plugins are looked for beside it).
    let original = std::env::current_exe().ok();
    let env = std::env::vars_os()
        .filter(|(k, _)| k != ORIGINAL_EXE_ENV)
        .chain(original.map(|p| (OsString::from(ORIGINAL_EXE_ENV), p.into_os_string())))
        .map(|(k, v)| {
            let mut kv = k;
            kv.push("=");
            kv.push(v);
            cstring(kv)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let argv = null_terminated(&args);
    let envp = null_terminated(&env);
    // SAFETY: execveat with a valid descriptor, an empty path (AT_EMPTY_PATH: the descriptor
    // itself is executed) and NULL-terminated arrays of valid C strings that outlive the
    // call. It returns only on failure.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            exe.fd().as_raw_fd(),
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    Err(SealedError::Exec(io::Error::last_os_error()))
}

/// `strings` as a NULL-terminated array of pointers (valid while `strings` is).
pub fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn the_copy_is_this_executable_and_cannot_change() {
        let exe = File::open("/proc/self/exe").unwrap();
        let sealed = SealedExe::copy_of_self(&exe).unwrap();
        assert!(is_sealed(sealed.fd()));
        let path = format!("/proc/self/fd/{}", sealed.fd().as_raw_fd());
        assert!(std::fs::read(&path).unwrap() == this_executable());
        // Writing, growing or shrinking the copy is refused (EPERM), whatever the open mode.
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        assert_eq!(f.write(b"x").unwrap_err().raw_os_error(), Some(libc::EPERM));
        assert!(f.set_len(1).is_err());
        // SAFETY: F_ADD_SEALS on our descriptor: refused, since F_SEAL_SEAL is set.
        let rc = unsafe { libc::fcntl(sealed.fd().as_raw_fd(), libc::F_ADD_SEALS, 0) };
        assert!(rc < 0);
        // A regular file is not a sealed copy.
        assert!(!is_sealed(exe.as_fd()));
    }

    #[test]
    fn the_overlay_view_is_this_executable_and_read_only() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: an overlayfs mount needs root");
            return;
        }
        let fd = read_only_overlay_of_self().expect("an overlay view of the test binary");
        assert!(is_sealed(fd.as_fd()));
        let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        assert!(std::fs::read(&path).unwrap() == this_executable());
        let write = std::fs::OpenOptions::new().write(true).open(&path);
        assert_eq!(
            write.unwrap_err().raw_os_error(),
            Some(libc::EROFS),
            "the view must be read-only"
        );
        // The empty lower layer is gone; the mount stays usable.
        let leftovers: Vec<_> = std::fs::read_dir(std::env::temp_dir())
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&format!(".berth-exe-lower-{}-", std::process::id())))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        assert!(std::fs::read(&path).is_ok());
    }

    fn this_executable() -> Vec<u8> {
        let mut bytes = Vec::new();
        File::open("/proc/self/exe")
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        bytes
    }
}
