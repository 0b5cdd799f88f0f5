//! Running a plugin (or the invoker) the way the fuzzer needs: inside the fake host, in a
//! sandbox that keeps a misbehaving plugin's writes inside the world's directory, in a process
//! group of its own (so a hang or an injected kill takes its children too), with a time limit.

use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use netns_fixtures::TestNetns;

/// A plugin that has not exited after this long is hung (the limit).
pub const HANG_LIMIT: Duration = Duration::from_secs(5);
/// Output kept per stream: enough for any error message, bounded against a runaway plugin.
const OUTPUT_CAP: usize = 4 << 20;

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    /// Killed by a signal we did not send.
    Signal(i32),
    /// Still running after [`HANG_LIMIT`]: its process group was killed.
    Hung,
    /// Killed on purpose (crash injection) before it exited by itself.
    Injected,
}

#[derive(Debug, Clone)]
pub struct Run {
    pub exit: Exit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

impl Run {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// The directories a sandboxed process may write to, with everything else read-only:
/// `world` (the world's temporary directory), `/var/lib` and `/run/cni` (bound to directories
/// inside `world`, so the plugins' default `dataDir`s land there), `/proc/sys/net` (the
/// namespace's own sysctls) and `/run/xtables.lock`. A path-traversal bug in a plugin then
/// fails with EROFS instead of writing on the real host.
#[derive(Debug, Clone)]
pub struct Sandbox {
    world: CString,
    var_lib: CString,
    run_cni: CString,
    xtables_lock: bool,
}

/// Where the sandbox mounts the world's stand-ins for the plugins' default directories.
pub const VAR_LIB: &str = "/var/lib";
pub const RUN_CNI: &str = "/run/cni";
const XTABLES_LOCK: &str = "/run/xtables.lock";

impl Sandbox {
    /// `world` must contain the directories `root/var-lib` and `root/run-cni`.
    pub fn new(world: &Path) -> Sandbox {
        let c = |p: &Path| CString::new(p.as_os_str().as_bytes()).unwrap();
        // The mount points must exist. /run/cni is where the reference plugins keep state;
        // /run is a tmpfs on most hosts (it is on the root file system here), so creating the
        // empty directory leaves nothing that survives a reboot.
        std::fs::create_dir_all(RUN_CNI).unwrap();
        Sandbox {
            world: c(world),
            var_lib: c(&world.join("root/var-lib")),
            run_cni: c(&world.join("root/run-cni")),
            xtables_lock: Path::new(XTABLES_LOCK).is_file(),
        }
    }

    /// Installs the sandbox as `cmd`'s pre-exec step. Every step must succeed, or the spawn
    /// fails: a plugin never runs half-sandboxed.
    fn apply(&self, cmd: &mut Command) {
        let sandbox = self.clone();
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe calls are allowed: it makes raw syscalls (unshare, mount) on
        // strings prepared before the fork, and builds io::Error from errno (no allocation).
        unsafe {
            cmd.pre_exec(move || sandbox.enter());
        }
    }

    fn enter(&self) -> io::Result<()> {
        const READ_ONLY: libc::c_ulong = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY;
        check(
            // SAFETY: unshare takes no pointers.
            unsafe { libc::unshare(libc::CLONE_NEWNS) },
        )?;
        // Private first: nothing below may propagate back to the host's mount table.
        mount(None, c"/", libc::MS_REC | libc::MS_PRIVATE)?;
        bind(&self.world, &self.world)?;
        bind(&self.var_lib, c"/var/lib")?;
        bind(&self.run_cni, c"/run/cni")?;
        if self.xtables_lock {
            bind(c"/run/xtables.lock", c"/run/xtables.lock")?;
        }
        bind(c"/proc/sys", c"/proc/sys")?;
        bind(c"/proc/sys/net", c"/proc/sys/net")?;
        // MS_BIND makes these per-mount flags of this namespace's copies: the host's file
        // systems stay writable (without it, MS_REMOUNT would act on the superblock).
        mount(None, c"/proc/sys", READ_ONLY)?;
        mount(None, c"/", READ_ONLY)?;
        mount(None, c"/sys", READ_ONLY)?;
        // Writable file systems that are mount points on some hosts and not on others (here
        // they are on /): EINVAL means "not a mount point", covered by / above.
        for dir in [c"/tmp", c"/run", c"/var", c"/dev/shm", c"/home", c"/work"] {
            match mount(None, dir, READ_ONLY) {
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => {}
                other => other?,
            }
        }
        // std changed directory before this ran: that directory is the read-only copy under
        // the world's bind mount. Enter the bind mount itself, so relative paths (a relative
        // `dataDir`) are writable as the world is. (Every spawn starts in the world.)
        // SAFETY: chdir reads a NUL-terminated path that outlives the call.
        check(unsafe { libc::chdir(self.world.as_ptr()) })
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn mount(
    source: Option<&std::ffi::CStr>,
    target: &std::ffi::CStr,
    flags: libc::c_ulong,
) -> io::Result<()> {
    let source = source.map_or(std::ptr::null(), std::ffi::CStr::as_ptr);
    // SAFETY: every pointer is a NUL-terminated string that outlives the call, or null where
    // mount(2) allows it (source and data of a propagation change or remount).
    check(unsafe {
        libc::mount(
            source,
            target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    })
}

fn bind(source: &std::ffi::CStr, target: &std::ffi::CStr) -> io::Result<()> {
    mount(Some(source), target, libc::MS_BIND)
}

/// One process to run.
#[derive(Debug, Clone)]
pub struct Spawn {
    pub bin: PathBuf,
    pub args: Vec<String>,
    /// The whole environment (nothing is inherited).
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    pub cwd: PathBuf,
    /// Hung after this long ([`HANG_LIMIT`]; shorter in the harness's own tests).
    pub limit: Duration,
}

impl Spawn {
    pub fn new(bin: impl Into<PathBuf>, cwd: &Path) -> Spawn {
        Spawn {
            bin: bin.into(),
            args: Vec::new(),
            env: vec![(
                "PATH".into(),
                std::env::var("PATH").unwrap_or_else(|_| {
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
                }),
            )],
            stdin: Vec::new(),
            cwd: cwd.to_path_buf(),
            limit: HANG_LIMIT,
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Spawn {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn arg(mut self, arg: &str) -> Spawn {
        self.args.push(arg.to_owned());
        self
    }

    pub fn stdin(mut self, bytes: Vec<u8>) -> Spawn {
        self.stdin = bytes;
        self
    }
}

/// What to do to the process while it runs.
#[derive(Debug, Clone, Copy)]
pub enum Kill {
    /// Nothing: wait up to [`HANG_LIMIT`].
    Never,
    /// SIGKILL its whole process group after this delay.
    Group(Duration),
    /// SIGKILL only the process after this delay; its children live on (orphaned), and are
    /// waited for (up to [`HANG_LIMIT`]) before this returns.
    Leader(Duration),
}

/// Runs `spec` inside `host`, sandboxed, and waits for it and every process of its group.
pub fn run(host: &TestNetns, sandbox: &Sandbox, spec: &Spawn, kill: Kill) -> Run {
    let mut cmd = Command::new(&spec.bin);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    sandbox.apply(&mut cmd);
    let start = Instant::now();
    // Spawned from a thread inside the namespace: the child inherits it.
    let mut child: Child = host
        .run(|| cmd.spawn())
        .unwrap_or_else(|e| panic!("enter {}: {e}", host.name()))
        .unwrap_or_else(|e| panic!("spawn {} (sandboxed): {e}", spec.bin.display()));
    let pid = child.id() as libc::pid_t;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    thread::scope(|scope| {
        let input = spec.stdin.as_slice();
        scope.spawn(move || {
            if let Some(mut stdin) = stdin {
                // A plugin may exit (or hang) without reading: EPIPE is no failure here.
                let _ = stdin.write_all(input);
            }
        });
        let out = scope.spawn(move || drain(stdout));
        let err = scope.spawn(move || drain(stderr));
        let (tx, rx) = mpsc::channel();
        scope.spawn(move || {
            let status = child.wait();
            let _ = tx.send(status);
        });
        let (delay, group) = match kill {
            Kill::Never => (spec.limit, true),
            Kill::Group(d) => (d, true),
            Kill::Leader(d) => (d, false),
        };
        let mut exit = match rx.recv_timeout(delay) {
            Ok(status) => Some(status.map_or(Exit::Code(-1), exit_of)),
            Err(_) => None,
        };
        if exit.is_none() {
            let target = if group { -pid } else { pid };
            // SAFETY: kill takes no pointers; the pid is our child's (not reaped yet: the
            // waiter thread has not returned), its group id equals its pid.
            unsafe { libc::kill(target, libc::SIGKILL) };
            let status = rx.recv().unwrap_or_else(|_| panic!("waiter thread died"));
            exit = Some(match kill {
                Kill::Never => Exit::Hung,
                _ => Exit::Injected,
            });
            let _ = status;
        }
        // Whatever is left of the group (orphaned children of a killed leader, or children
        // of a plugin that exited early) gets HANG_LIMIT to finish, then is killed.
        let hung_orphans = reap_group(pid, Instant::now() + HANG_LIMIT);
        let mut exit = exit.unwrap_or(Exit::Code(-1));
        if hung_orphans && exit != Exit::Injected {
            exit = Exit::Hung;
        }
        Run {
            exit,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
            elapsed: start.elapsed(),
        }
    })
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(sig)) => Exit::Signal(sig),
        (None, None) => Exit::Code(-1),
    }
}

fn drain(pipe: Option<impl Read>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else {
        return kept;
    };
    let mut buf = [0u8; 65536];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    kept
}

/// Makes this process the reaper of its orphaned descendants, so that the processes a killed
/// plugin or invoker leaves behind can be waited for (and do not linger as zombies).
pub fn become_subreaper() {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    assert_eq!(
        rc,
        0,
        "prctl(PR_SET_CHILD_SUBREAPER): {}",
        io::Error::last_os_error()
    );
}

/// Waits for every process of group `pgid` that was reparented to us; kills the group at
/// `deadline`. Returns whether it had to.
fn reap_group(pgid: libc::pid_t, deadline: Instant) -> bool {
    let mut killed = false;
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a local.
        let rc = unsafe { libc::waitpid(-pgid, &mut status, libc::WNOHANG) };
        if rc > 0 {
            continue;
        }
        // ECHILD: none of ours left in the group. rc == 0: some still running. Members that
        // are not our children (not yet reparented) show through kill(…, 0).
        // SAFETY: kill with signal 0 only checks for existence.
        let alive = unsafe { libc::kill(-pgid, 0) } == 0;
        if rc < 0 && !alive {
            return killed;
        }
        if Instant::now() >= deadline && !killed {
            // SAFETY: see above; SIGKILL to a group we created.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            killed = true;
        }
        if Instant::now() >= deadline + HANG_LIMIT {
            // Unkillable (uninterruptible sleep): give up waiting, report it as hung.
            return true;
        }
        thread::sleep(Duration::from_millis(2));
    }
}
