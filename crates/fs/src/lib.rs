//! Files as one-shot processes that can be killed at any instruction must handle them, and
//! paths inside a tree that is not ours to trust.
//!
//! - [`resolve`]: a path resolved inside a root directory as if it were `/` (symlinks
//!   followed, never out of the root): an image's or a container's tree, from the host.
//! - [`mounts`]: mount points under a directory, and deleting a tree only once nothing is
//!   mounted in it.
//! - [`read_regular`]: a path from a configuration or the environment may name a FIFO (an
//!   `open` that blocks until a writer comes, i.e. forever), a device or a directory. Open it
//!   without blocking and refuse anything but a regular file, with a size limit.
//! - [`write_atomic`]: write a temporary beside the target, then rename it over the target, so
//!   a reader sees the old or the new content, never half of it. The temporary's name carries
//!   the writer's pid: `.<name>.<pid>.tmp`.
//! - [`sweep_temporaries`]: a writer killed between write and rename leaves its temporary.
//!   The next command that owns the directory removes those whose writer is gone (or that are
//!   older than any write takes), so every write-then-rename has its sweep.

pub mod mounts;
pub mod resolve;

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The suffix of every temporary [`write_atomic`] creates.
const TMP_SUFFIX: &str = ".tmp";

/// A temporary older than this is stale whoever wrote it: a write takes milliseconds, and a pid
/// can be reused by another process long before.
pub const STALE_AFTER: Duration = Duration::from_secs(600);

/// Reads the regular file at `path`, at most `max` bytes (more is an error: a configuration or
/// cache file is small, a 1 GB one is an attack or a mistake). The open never blocks: a FIFO,
/// socket, device or directory is refused with `InvalidInput` naming what it is.
pub fn read_regular(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a regular file ({})",
                path.display(),
                kind_of(&meta)
            ),
        ));
    }
    if meta.len() > max {
        return Err(too_big(path, max));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // A file that grows while we read is still cut at `max + 1`, to notice it.
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_big(path, max));
    }
    Ok(bytes)
}

fn too_big(path: &Path, max: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{} is larger than {max} bytes", path.display()),
    )
}

fn kind_of(meta: &fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = meta.file_type();
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() || t.is_block_device() {
        "a device"
    } else {
        "not a file"
    }
}

/// How [`write_atomic`] writes.
#[derive(Debug, Clone, Copy)]
pub struct WriteOptions {
    /// Permission bits of the new file.
    pub mode: u32,
    /// fsync the file before the rename (and the directory after it): for state that must
    /// survive a power cut, not for hints or caches of what the kernel forgets anyway.
    pub durable: bool,
}

impl Default for WriteOptions {
    fn default() -> WriteOptions {
        WriteOptions {
            mode: 0o600,
            durable: true,
        }
    }
}

/// The temporary `write_atomic` uses for `path` in this process.
pub fn temporary_for(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_else(|| OsStr::new("file"));
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".{}{TMP_SUFFIX}", std::process::id()));
    path.with_file_name(tmp)
}

/// Writes `bytes` to `path` through a temporary in the same directory and a rename. On error
/// the temporary is removed; if the process is killed, [`sweep_temporaries`] removes it later.
pub fn write_atomic(path: &Path, bytes: &[u8], opts: WriteOptions) -> io::Result<()> {
    let tmp = temporary_for(path);
    let written = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(opts.mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        // The mode given to open is filtered by the umask; the file must have exactly `mode`.
        file.set_permissions(fs::Permissions::from_mode(opts.mode))?;
        file.write_all(bytes)?;
        if opts.durable {
            file.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    if opts.durable {
        if let Some(dir) = path.parent() {
            // The rename is durable once the directory is.
            File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

/// Removes the temporaries of [`write_atomic`] in `dir` that no live writer owns: their pid
/// is not running, or they are older than [`STALE_AFTER`]. Returns how many it removed. A
/// missing directory has none.
pub fn sweep_temporaries(dir: &Path) -> io::Result<usize> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(pid) = temporary_pid(&name) else {
            continue;
        };
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE_AFTER);
        if old || !process_alive(pid) {
            match fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                // Its writer renamed it, or another sweep got there first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

/// The writer's pid of a temporary named `.<name>.<pid>.tmp`.
fn temporary_pid(name: &OsStr) -> Option<u32> {
    let name = name.to_str()?;
    let rest = name.strip_prefix('.')?.strip_suffix(TMP_SUFFIX)?;
    let (_, pid) = rest.rsplit_once('.')?;
    pid.parse().ok()
}

/// Whether `pid` is a process that can still write: a zombie (`Z`) or a dead one (`X`) cannot,
/// though its /proc entry stays until its parent reaps it (seconds, for a killed monitor).
fn process_alive(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S ...`: comm may hold spaces and parentheses, the state follows the last ')'.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X" | "x"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_fifo_is_refused_at_once_instead_of_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = read_regular(&fifo, 1024).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("a FIFO"), "{err}");
        let err = read_regular(dir.path(), 1024).unwrap_err();
        assert!(err.to_string().contains("a directory"), "{err}");
    }

    #[test]
    fn reads_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        fs::write(&f, b"0123456789").unwrap();
        assert_eq!(read_regular(&f, 10).unwrap(), b"0123456789");
        assert_eq!(
            read_regular(&f, 9).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("state.json");
        write_atomic(&f, b"one", WriteOptions::default()).unwrap();
        write_atomic(
            &f,
            b"two",
            WriteOptions {
                mode: 0o644,
                durable: false,
            },
        )
        .unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsStr::new("state.json").to_owned()]);
    }

    #[test]
    fn the_sweep_removes_dead_writers_temporaries_only() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("results");
        // A writer that is gone: pid 0 is never a process's.
        let dead = dir.path().join(".results.0.tmp");
        fs::write(&dead, b"half").unwrap();
        // A live writer: this process.
        let live = temporary_for(&target);
        fs::write(&live, b"writing").unwrap();
        // Not ours at all.
        let other = dir.path().join("notes.tmp");
        fs::write(&other, b"x").unwrap();
        assert_eq!(sweep_temporaries(dir.path()).unwrap(), 1);
        assert!(!dead.exists() && live.exists() && other.exists());
        assert_eq!(sweep_temporaries(&dir.path().join("missing")).unwrap(), 0);
    }

    #[test]
    fn a_zombie_writes_nothing() {
        assert!(process_alive(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped yet: a zombie.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while process_alive(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!process_alive(pid), "a zombie counts as alive");
        child.wait().unwrap();
        assert!(!process_alive(pid));
    }

    #[test]
    fn temporary_names_carry_the_pid() {
        let t = temporary_for(Path::new("/x/net-ctr-eth0"));
        let pid = std::process::id();
        assert_eq!(t, PathBuf::from(format!("/x/.net-ctr-eth0.{pid}.tmp")));
        assert_eq!(temporary_pid(t.file_name().unwrap()), Some(pid));
        assert_eq!(temporary_pid(OsStr::new(".a.b.tmp")), None);
        assert_eq!(temporary_pid(OsStr::new("a.1.tmp")), None);
    }
}
