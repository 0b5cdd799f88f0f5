//! Running competitors' processes: inside a test namespace, timed, with their resource usage,
//! and (for crun and podman) in a private mount namespace that hides what they must not see
//! or must not leave behind.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use netns_fixtures::TestNetns;

use crate::cni::ms_since;

/// GNU time (Debian package `time`).
pub const TIME: &str = "/usr/bin/time";

/// GNU time's `%M` (peak RSS in KiB, the last line of its `-o` file), in MiB.
pub fn max_rss_mib(file: &Path) -> Result<f64> {
    let text = std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
    let kib: f64 = text
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("no %M in {text:?}"))?;
    Ok(kib / 1024.0)
}

/// Makes `cmd` start in a private mount namespace in which
/// - the cgroup2 mount at `/sys/fs/cgroup/unified` is gone: this kernel runs cgroup v1 with
///   an empty cgroup2 next to it ("hybrid"), which crun refuses; without it crun sees a plain
///   v1 host, as runc and berth do;
/// - each of `tmpfs_over` is covered by a fresh tmpfs: podman keeps global state in `/run`,
///   `/dev/shm` (its shm lock file, the OCI runtime's state dir) and `/var/lib/cni` (libcni's
///   cache), which must not outlive the benchmark.
///
/// Only the child's view changes; the host's mounts and files stay as they are.
pub fn private_mounts(cmd: &mut Command, tmpfs_over: &[&str]) -> Result<()> {
    // Everything the child needs is allocated here, before the fork: between fork and exec
    // only async-signal-safe work is allowed (no allocation).
    let root = CString::new("/")?;
    let unified = CString::new("/sys/fs/cgroup/unified")?;
    let tmpfs = CString::new("tmpfs")?;
    let targets = tmpfs_over
        .iter()
        .map(|t| CString::new(*t))
        .collect::<Result<Vec<_>, _>>()?;
    // SAFETY: the closure runs in the forked child before exec. It makes raw syscalls on
    // memory allocated before the fork and builds io::Error from errno (no allocation), which
    // is async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Private first, so that nothing below propagates back to the host.
            if libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // EINVAL/ENOENT on hosts without that mount: nothing to hide then.
            libc::umount2(unified.as_ptr(), libc::MNT_DETACH);
            for t in &targets {
                if libc::mount(
                    tmpfs.as_ptr(),
                    t.as_ptr(),
                    tmpfs.as_ptr(),
                    0,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

/// Runs `cmd` to completion from inside `ns` and returns its wall time in ms. A non-zero exit
/// is an error carrying stderr.
pub fn timed(ns: &TestNetns, cmd: &mut Command) -> Result<f64> {
    let what = format!("{cmd:?}");
    let (ms, out) = ns
        .run(|| {
            let start = Instant::now();
            let out = cmd.output();
            (ms_since(start), out)
        })
        .with_context(|| format!("enter {}", ns.name()))?;
    let out = out.with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(ms)
}

/// What one process cost, from `wait4`.
#[derive(Debug, Clone)]
pub struct Usage {
    /// User + system CPU time.
    pub cpu_ms: f64,
    pub success: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `cmd` from inside `ns` with `stdin`, and reaps it with `wait4` for its CPU time.
/// (Not its peak RSS: `ru_maxrss` keeps the peak of the address space that `exec` replaced,
/// here our own, larger process; see `footprint`.)
pub fn run_with_usage(ns: &TestNetns, cmd: &mut Command, stdin: &[u8]) -> Result<Usage> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ns
        .run(|| cmd.spawn())
        .with_context(|| format!("enter {}", ns.name()))?
        .with_context(|| format!("spawn {cmd:?}"))?;
    let input = child.stdin.take();
    let mut out_pipe = child.stdout.take();
    let mut err_pipe = child.stderr.take();
    let (stdout, stderr) = std::thread::scope(|scope| {
        scope.spawn(move || {
            if let Some(mut input) = input {
                // A process that exits without reading gives EPIPE: not our concern here.
                let _ = input.write_all(stdin);
            }
        });
        let err = scope.spawn(move || {
            let mut buf = Vec::new();
            if let Some(p) = err_pipe.as_mut() {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        });
        let mut out = Vec::new();
        if let Some(p) = out_pipe.as_mut() {
            let _ = p.read_to_end(&mut out);
        }
        (out, err.join().unwrap_or_default())
    });
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data, for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our own child, not reaped yet (`child` is never waited on through std);
    // both pointers are to live locals.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    if reaped != pid {
        return Err(io::Error::last_os_error()).context("wait4");
    }
    let tv_ms = |tv: libc::timeval| {
        #[allow(clippy::cast_precision_loss)] // seconds and microseconds of one short process
        let ms = tv.tv_sec as f64 * 1e3 + tv.tv_usec as f64 / 1e3;
        ms
    };
    Ok(Usage {
        cpu_ms: tv_ms(usage.ru_utime) + tv_ms(usage.ru_stime),
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        stdout,
        stderr,
    })
}
