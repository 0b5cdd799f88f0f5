//! The container's init: `berth init`, run as PID 1 of the container's new pid namespace.
//!
//! **Design: clone3 + re-exec, like runc's `init`.** The runtime creates the process with
//! `clone3(CLONE_NEWPID | CLONE_PIDFD)` and the child immediately `execve`s
//! `/proc/self/exe init` (only async-signal-safe calls in between). The init is therefore a
//! fresh, single-threaded process, which is exactly what the namespace and mount work needs
//! (`unshare(CLONE_NEWNS)` and `setns` of most namespaces refuse a multi-threaded caller) and
//! it can use ordinary Rust (allocation, serde, error types) without fork-safety caveats.
//! After the setup below it `execve`s the user's command, so **PID 1 is the user's command**.
//!
//! Protocol over two descriptors (their numbers arrive as arguments):
//! - *config* pipe (runtime → init): the JSON [`InitConfig`], then EOF. The runtime sends it
//!   only after moving the init into the container's cgroup, so reading it is also the "go".
//! - *sync* socket (init → runtime, close-on-exec): nothing on success, because the
//!   successful `execve` closes it and the runtime reads EOF; on failure (panics included),
//!   one JSON [`InitFailure`] naming the step and the exit code to report (127 command not
//!   found, 126 not executable, 125 anything else). With `-t` it first carries the pty
//!   master (SCM_RIGHTS, with a one-newline message), like runc's console socket.
//!
//! Order of the steps (each one needs the previous):
//! 1. reset signal mask and dispositions (the runtime blocks signals it forwards; Rust
//!    ignores SIGPIPE), ask for SIGKILL if the runtime dies, read the configuration;
//! 2. namespaces ([`crate::sandbox::namespaces`]): join the netns, unshare mount/uts/ipc/cgroup
//!    (with a user namespace: join the holder's uts/ipc, unshare the mount namespace only);
//! 3. hostname;
//! 4. rootfs ([`crate::sandbox::rootfs`]): overlay, /proc, /dev, /sys, volumes, masks, pivot_root,
//!    then `--read-only`; with a user namespace ([`crate::sandbox::userns`]) everything up to here
//!    is done as host root, then the pty is allocated (`-t`), the user namespace entered
//!    (uid and gid 0 inside) and a cgroup namespace unshared in it;
//! 5. with `-t` the pty (allocated in the container's devpts), session and controlling
//!    terminal, working directory, resolve the user (`User`/`-u`) through the container's
//!    `/etc/passwd` and `/etc/group` ([`crate::sandbox::user`]), find the command (so that
//!    "not found" is 127 before anything is locked down);
//! 6. rlimits, umask, close stray descriptors;
//! 7. lock down: `no_new_privs`, the bounding set, the user's groups, gid and uid, the
//!    current capabilities (none for a non-root user), seccomp (last: from here on only
//!    `execve`);
//! 8. `execve`.
//!
//! **`berth exec-init`** is the same helper for `berth exec`: the runtime has joined the
//! container's pid namespace for its children and clone3s without `CLONE_NEWPID`, so the
//! helper starts inside it; it moves into the container's cgroup before the "go", then joins
//! the remaining namespaces of PID 1 ([`crate::sandbox::namespaces::join_container`]) and continues
//! with steps 5–8 under the container's capabilities, seccomp policy, environment and
//! working directory.

use std::convert::Infallible;
use std::ffi::{CString, OsStr};
use std::fs::{self, File};
use std::io::{IoSlice, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::pty::{Winsize, grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::sys::stat::{Mode, umask};
use nix::unistd::{chdir, execve, sethostname, setsid};
use serde::{Deserialize, Serialize};

use crate::sandbox::caps::{self, CapSet, CapsError};
use crate::sandbox::namespaces::{self, NamespaceError};
use crate::sandbox::pid::ProcessRef;
use crate::sandbox::process::InitFailure;
use crate::sandbox::rootfs::{self, MappedRoot, RootfsError, RootfsSpec};
use crate::sandbox::seccomp::{self, SeccompError, SeccompPolicy};
use crate::sandbox::user::{self, UserError};

/// Everything the init needs, sent by the runtime over the config pipe.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitConfig {
    /// The network namespace file to join; `None`: keep the runtime's (`--network host`).
    pub netns: Option<PathBuf>,
    pub hostname: String,
    pub rootfs: RootfsSpec,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub capabilities: CapSet,
    /// Refuse device-node creation in seccomp (no device cgroup on this host).
    pub deny_device_nodes: bool,
    /// `-t`: allocate a pty of this size (rows, columns) in the container's devpts, make its
    /// slave stdin/stdout/stderr, `/dev/console` and the controlling terminal, and send the
    /// master to the runtime.
    pub tty: Option<(u16, u16)>,
    /// With a user namespace: how to enter it (see [`crate::sandbox::userns`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<InitUserns>,
    /// `USER[:GROUP]` to run the command as, resolved in the container's root (see
    /// [`crate::sandbox::user`]); `None`: root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `--privileged`: no seccomp filter.
    #[serde(default)]
    pub privileged: bool,
}

/// The init's part of a user namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitUserns {
    /// The holder whose user, UTS and IPC namespaces the init joins (the netns, also its,
    /// is the netns file as usual).
    pub holder: ProcessRef,
    /// Host ids of the container's root: owner of what the init creates for it (`/dev`,
    /// `/dev/shm`, the device nodes, the working directory, the pty).
    pub root_uid: u32,
    pub root_gid: u32,
    /// Host gid of the container's group 5 (`tty`), the group of its ptys, if mapped.
    pub tty_gid: Option<u32>,
}

/// Everything `berth exec-init` needs: the container to join and the command to become.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecConfig {
    /// PID 1 of the container (host pid) and its start time: the namespaces to join are
    /// `/proc/<pid>/ns/*`, opened only while the start time still matches.
    pub pid: i32,
    pub pid_start_time: u64,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub workdir: PathBuf,
    pub capabilities: CapSet,
    pub deny_device_nodes: bool,
    /// `-t`: allocate a pty of this size in the container's devpts (no `/dev/console`).
    pub tty: Option<(u16, u16)>,
    /// The container has a user namespace: join it last and become its root.
    #[serde(default)]
    pub userns: bool,
    /// `USER[:GROUP]` to run the command as (`exec -u`, else the container's); `None`: root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The container is privileged: no seccomp filter.
    #[serde(default)]
    pub privileged: bool,
}

/// Errors of the init, one variant per step.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("read the configuration from the runtime")]
    ReadConfig(#[source] std::io::Error),
    #[error("parse the configuration from the runtime")]
    ParseConfig(#[source] serde_json::Error),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    #[error("set hostname {hostname}")]
    Hostname {
        hostname: String,
        #[source]
        source: nix::Error,
    },
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error("start a new session")]
    Setsid(#[source] nix::Error),
    #[error("allocate the container's pty: {step}")]
    Pty {
        step: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("make the pty the controlling terminal")]
    ControllingTty(#[source] std::io::Error),
    #[error("chdir to {path}")]
    Workdir {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("exec {command}: executable file not found in $PATH")]
    NotFound { command: String },
    #[error("exec {command}: {path} is not an executable file")]
    NotExecutable { command: String, path: PathBuf },
    #[error("{what} contains a NUL byte")]
    Nul { what: &'static str },
    #[error(transparent)]
    User(#[from] UserError),
    #[error("set no_new_privs")]
    NoNewPrivs(#[source] std::io::Error),
    #[error(transparent)]
    Caps(#[from] CapsError),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error("exec {command}")]
    Exec {
        command: String,
        #[source]
        source: nix::Error,
    },
}

impl InitError {
    /// Docker's convention: 127 when the command cannot be found, 126 when it cannot be
    /// executed, 125 when the runtime itself failed.
    pub fn exit_code(&self) -> i32 {
        match self {
            InitError::NotFound { .. } => 127,
            InitError::NotExecutable { .. } => 126,
            InitError::Exec { source, .. } => match *source {
                nix::Error::ENOENT => 127,
                nix::Error::EACCES | nix::Error::ENOEXEC | nix::Error::EISDIR => 126,
                _ => 125,
            },
            _ => 125,
        }
    }
}

/// Entry point of `berth init`. Never returns: it either becomes the user's command or
/// reports why not over the sync socket and exits.
pub fn main(config_fd: RawFd, sync_fd: RawFd) -> ! {
    run_helper(sync_fd, || setup_and_exec(config_fd, sync_fd))
}

/// Entry point of `berth exec-init`: joins a running container's namespaces and becomes the
/// command of `berth exec`. The runtime already placed it in the container's pid namespace
/// (setns before clone3) and cgroup.
pub fn exec_main(config_fd: RawFd, sync_fd: RawFd) -> ! {
    run_helper(sync_fd, || join_and_exec(config_fd, sync_fd))
}

fn run_helper(sync_fd: RawFd, body: impl FnOnce() -> Result<Infallible, InitError>) -> ! {
    // `sync_fd` is the write end of the sync socket, inherited across exec. It is used as a
    // raw descriptor and never closed here. Close-on-exec: a successful execve closes it,
    // which the runtime reads as success.
    // SAFETY: F_SETFD on a descriptor we own, no pointers.
    unsafe { libc::fcntl(sync_fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    // A panic must be reported too: the runtime reads a silent EOF as "exec succeeded".
    std::panic::set_hook(Box::new(move |info| {
        report(
            sync_fd,
            &InitFailure {
                message: format!("the container's init panicked: {info}"),
                exit_code: 125,
            },
        );
    }));
    let err = match body() {
        Err(err) => err,
        Ok(never) => match never {},
    };
    report(
        sync_fd,
        &InitFailure {
            message: error_chain(&err),
            exit_code: err.exit_code(),
        },
    );
    std::process::exit(1)
}

/// Writes a failure report to the sync socket (nothing more can be done if that fails: the
/// runtime is gone).
fn report(sync_fd: RawFd, failure: &InitFailure) {
    let Ok(json) = serde_json::to_vec(failure) else {
        return;
    };
    // SAFETY: the sync descriptor is never closed by this process (it closes on exec or
    // exit), so it is valid for the duration of this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(sync_fd) };
    let mut rest = json.as_slice();
    while !rest.is_empty() {
        match nix::unistd::write(fd, rest) {
            Ok(0) => break,
            Ok(n) => rest = &rest[n..],
            Err(nix::Error::EINTR) => {}
            Err(_) => break,
        }
    }
}

/// `err` and its sources, joined with ": " (the runtime prints it after its own context).
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn setup_and_exec(config_fd: RawFd, sync_fd: RawFd) -> Result<Infallible, InitError> {
    // 1. Signals, parent death, configuration.
    reset_signals();
    // SAFETY: PR_SET_PDEATHSIG takes a signal number, no pointers. If the supervisor (the
    // foreground `berth run`, or the monitor of a detached container) dies, the container
    // dies with it, and its record tells `rm -f` / `system prune` what to release. Survives
    // the final execve.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let config = read_config(config_fd)?;

    // 2. Namespaces, in their fixed order (see crate::sandbox::namespaces; with a user namespace,
    // crate::sandbox::userns: the holder's are joined, the user namespace is entered at the end).
    let userns = config
        .userns
        .as_ref()
        .map(|u| namespaces::Holder::open(u.holder.pid, u.holder.start_time).map(|h| (h, u)))
        .transpose()?;
    if let Some(netns) = &config.netns {
        namespaces::join_netns(netns)?;
    }
    match &userns {
        None => namespaces::unshare_rest()?,
        Some((holder, _)) => {
            holder.join_uts_ipc()?;
            namespaces::unshare_mount()?;
        }
    }

    // 3. Hostname, in the new UTS namespace.
    sethostname(&config.hostname).map_err(|source| InitError::Hostname {
        hostname: config.hostname.clone(),
        source,
    })?;

    // 4. Root filesystem. umask 0 so that device nodes and mount points get exactly the
    // modes asked for; the command gets the conventional 022 below.
    umask(Mode::empty());
    let mapped = userns.as_ref().map(|(holder, u)| MappedRoot {
        userns: holder.user(),
        uid: u.root_uid,
        gid: u.root_gid,
        tty_gid: u.tty_gid,
    });
    rootfs::prepare(&config.rootfs, mapped.as_ref())?;
    rootfs::pivot(&config.rootfs.merged)?;
    if config.rootfs.read_only {
        rootfs::make_root_read_only()?;
    }

    // With a user namespace, the last privileged steps: the pty (binding `/dev/console`
    // is a mount, which the mount namespace, owned by the host, only allows host root),
    // then into the user namespace.
    let mut tty = match config.tty {
        Some(size) => Tty::Allocate {
            size,
            console: true,
        },
        None => Tty::None,
    };
    if let Some((holder, u)) = userns {
        if let Tty::Allocate { size, console } = tty {
            open_console(size, sync_fd, console, Some((u.root_uid, u.root_gid)))?;
            tty = Tty::Ready;
        }
        holder.enter()?;
    }

    become_command(
        &CommandSpec {
            args: &config.args,
            env: &config.env,
            workdir: &config.rootfs.workdir,
            capabilities: config.capabilities,
            deny_device_nodes: config.deny_device_nodes,
            tty,
            user: config.user.as_deref(),
            seccomp: !config.privileged,
        },
        sync_fd,
    )
}

/// `berth exec-init`: steps 1, 2 (joining instead of creating) and 5–8 of the init.
fn join_and_exec(config_fd: RawFd, sync_fd: RawFd) -> Result<Infallible, InitError> {
    reset_signals();
    // SAFETY: PR_SET_PDEATHSIG takes a signal number, no pointers: the command dies with
    // `berth exec` (which forwards signals and reports its exit code).
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) };
    let bytes = read_fd(config_fd)?;
    let config: ExecConfig = serde_json::from_slice(&bytes).map_err(InitError::ParseConfig)?;
    namespaces::join_container(config.pid, config.pid_start_time, config.userns)?;
    umask(Mode::empty());
    become_command(
        &CommandSpec {
            args: &config.args,
            env: &config.env,
            workdir: &config.workdir,
            capabilities: config.capabilities,
            deny_device_nodes: config.deny_device_nodes,
            tty: match config.tty {
                Some(size) => Tty::Allocate {
                    size,
                    console: false,
                },
                None => Tty::None,
            },
            user: config.user.as_deref(),
            seccomp: !config.privileged,
        },
        sync_fd,
    )
}

/// The command a helper becomes, and how it is locked down.
struct CommandSpec<'a> {
    args: &'a [String],
    env: &'a [String],
    workdir: &'a Path,
    capabilities: CapSet,
    deny_device_nodes: bool,
    tty: Tty,
    /// `USER[:GROUP]`, `None`: root.
    user: Option<&'a str>,
    /// Install the seccomp filter (not for a privileged container).
    seccomp: bool,
}

/// The command's terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tty {
    /// None: stdio as the runtime passed it.
    None,
    /// A pty of this size (rows, columns), allocated by [`open_console`]; with `console`
    /// its slave also becomes `/dev/console` (the init, not an exec).
    Allocate { size: (u16, u16), console: bool },
    /// Allocated already (fds 0–2 are the slave): the init of a user namespace.
    Ready,
}

/// Steps 5–8, shared by the init and exec-init: terminal and session, working directory,
/// the command (127/126 decided here), process attributes, lock-down, execve.
fn become_command(config: &CommandSpec<'_>, sync_fd: RawFd) -> Result<Infallible, InitError> {
    // 5. Session (the container never shares the runtime's process group, so a Ctrl-C at
    // the terminal reaches only the runtime, which forwards it), terminal, cwd, command.
    if let Tty::Allocate { size, console } = config.tty {
        open_console(size, sync_fd, console, None)?;
    }
    setsid().map_err(InitError::Setsid)?;
    if config.tty != Tty::None {
        // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal); fd 0 is the pty
        // slave the runtime installed.
        if unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) } < 0 {
            return Err(InitError::ControllingTty(std::io::Error::last_os_error()));
        }
    }
    chdir(config.workdir).map_err(|source| InitError::Workdir {
        path: config.workdir.to_path_buf(),
        source,
    })?;
    // The user, through the container's passwd and group files: our root is the
    // container's by now (pivot_root, or the joined mount namespace), so the image's files
    // are read as the container sees them. HOME from passwd unless the environment has one.
    let user = user::resolve_in_root(config.user)?;
    let mut env = config.env.to_vec();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        env.push(format!("HOME={}", user.home));
    }
    let command = config.args.first().cloned().unwrap_or_default();
    let path_env = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(berth_image::DEFAULT_PATH);
    let program = find_executable(&command, path_env)?;
    let c_program = cstring(program.as_os_str(), "the command path")?;
    let c_args = config
        .args
        .iter()
        .map(|a| cstring(OsStr::new(a), "an argument"))
        .collect::<Result<Vec<_>, _>>()?;
    let c_env = env
        .iter()
        .map(|e| cstring(OsStr::new(e), "an environment variable"))
        .collect::<Result<Vec<_>, _>>()?;

    // 6. Process attributes (the user's groups and ids come with the capabilities below).
    set_rlimits();
    umask(Mode::from_bits_truncate(0o022));
    close_stray_fds();

    // 7. Lock down. The filter is compiled before capabilities go (compilation allocates,
    // which is fine; installation needs no privilege thanks to no_new_privs).
    let filters = config
        .seccomp
        .then(|| {
            seccomp::compile_filters(SeccompPolicy {
                caps: config.capabilities,
                deny_device_nodes: config.deny_device_nodes,
            })
        })
        .transpose()?;
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integers only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(InitError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    // The bounding set while still root (it needs CAP_SETPCAP), then the user (needing
    // CAP_SETUID/SETGID, still effective), then the current sets: the container's set for
    // root; for anyone else the kernel emptied them at setresuid and they stay empty.
    caps::limit_bounding(config.capabilities)?;
    user::switch_to(&user)?;
    caps::set_process(if user.uid == 0 {
        config.capabilities
    } else {
        CapSet::EMPTY
    })?;
    if let Some(filters) = &filters {
        seccomp::install(filters)?;
    }

    // 8. Become the command.
    execve(&c_program, &c_args, &c_env).map_err(|source| InitError::Exec { command, source })
}

/// Allocates the pty inside the container (its devpts instance, so `tty` and `/dev/pts/0`
/// mean what they should), makes the slave fds 0-2 and `/dev/console`, and sends the
/// master to the runtime over the sync socket with SCM_RIGHTS (the message is a single
/// newline, which the runtime's JSON parsing of a later failure report ignores). `owner`:
/// the slave is given to these host ids (the root of a user namespace, which the init
/// enters after this).
fn open_console(
    (rows, cols): (u16, u16),
    sync_fd: RawFd,
    console: bool,
    owner: Option<(u32, u32)>,
) -> Result<(), InitError> {
    let pty_err = |step| move |source| InitError::Pty { step, source };
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(pty_err("open /dev/ptmx"))?;
    grantpt(&master).map_err(pty_err("grantpt"))?;
    unlockpt(&master).map_err(pty_err("unlockpt"))?;
    let slave_path = ptsname_r(&master).map_err(pty_err("ptsname"))?;
    let size = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads the Winsize we pass, which lives for the call.
    unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &raw const size) };
    let slave = nix::fcntl::open(
        Path::new(&slave_path),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(pty_err("open the slave"))?;
    if let Some((uid, gid)) = owner {
        nix::unistd::fchown(
            &slave,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(pty_err("give the slave to the container's root"))?;
    }
    if console {
        rootfs::bind_console(Path::new(&slave_path))?;
    }
    for target in [0, 1, 2] {
        // SAFETY: dup2 onto the standard descriptors; `slave` stays open for the call.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(pty_err("dup2 the slave")(nix::Error::last()));
        }
    }
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        sync_fd,
        &[IoSlice::new(b"\n")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(pty_err("send the master to the runtime"))?;
    // Our copies close here: the runtime holds the master, fds 0-2 the slave.
    Ok(())
}

fn read_config(fd: RawFd) -> Result<InitConfig, InitError> {
    let bytes = read_fd(fd)?;
    serde_json::from_slice(&bytes).map_err(InitError::ParseConfig)
}

/// Reads the config pipe to its end.
fn read_fd(fd: RawFd) -> Result<Vec<u8>, InitError> {
    // SAFETY: the runtime passed us this descriptor as the read end of the config pipe;
    // we take ownership and close it after reading.
    let mut file = unsafe { File::from_raw_fd(fd) };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(InitError::ReadConfig)?;
    Ok(bytes)
}

fn cstring(s: &OsStr, what: &'static str) -> Result<CString, InitError> {
    CString::new(s.as_bytes()).map_err(|_| InitError::Nul { what })
}

/// Unblocks every signal and restores default dispositions: the runtime blocked the signals
/// it forwards before cloning, and Rust's runtime set SIGPIPE to ignored; both would be
/// inherited by the user's command across execve.
fn reset_signals() {
    // SAFETY: sigset_t is plain data; sigemptyset initializes it; sigprocmask with a valid
    // set pointer and a null old-set pointer.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &raw const set, std::ptr::null_mut());
    }
    for sig in 1..libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL runs no code of ours; invalid numbers just fail.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
}

/// `cmd` as execvp would find it, checked here so the runtime can report 127/126 precisely:
/// a name with a `/` is taken as is; otherwise each `$PATH` entry is tried, remembering a
/// non-executable match (reported as 126 if nothing better is found).
fn find_executable(cmd: &str, path_env: &str) -> Result<PathBuf, InitError> {
    if cmd.is_empty() {
        return Err(InitError::NotFound {
            command: cmd.to_owned(),
        });
    }
    let executable = |p: &Path| {
        fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .ok()
    };
    if cmd.contains('/') {
        let path = PathBuf::from(cmd);
        return match executable(&path) {
            Some(true) => Ok(path),
            Some(false) => Err(InitError::NotExecutable {
                command: cmd.to_owned(),
                path,
            }),
            None => Err(InitError::NotFound {
                command: cmd.to_owned(),
            }),
        };
    }
    let mut not_executable = None;
    for dir in path_env.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(cmd);
        match executable(&candidate) {
            Some(true) => return Ok(candidate),
            Some(false) => {
                not_executable.get_or_insert(candidate);
            }
            None => {}
        }
    }
    Err(match not_executable {
        Some(path) => InitError::NotExecutable {
            command: cmd.to_owned(),
            path,
        },
        None => InitError::NotFound {
            command: cmd.to_owned(),
        },
    })
}

/// Open files: 1048576 like podman (the kernel's default `fs.nr_open`), else as high as
/// allowed. Other limits are inherited.
fn set_rlimits() {
    const NOFILE: u64 = 1_048_576;
    if setrlimit(Resource::RLIMIT_NOFILE, NOFILE, NOFILE).is_err() {
        if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// Marks every descriptor above stderr close-on-exec, so nothing of the runtime leaks into
/// the container (the sync socket is already close-on-exec).
fn close_stray_fds() {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range takes integers only; with CLOSE_RANGE_CLOEXEC nothing is closed
    // now, so no File/OwnedFd of ours is invalidated.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_docker() {
        let not_found = InitError::NotFound {
            command: "x".into(),
        };
        assert_eq!(not_found.exit_code(), 127);
        let exec = |source| InitError::Exec {
            command: "x".into(),
            source,
        };
        assert_eq!(exec(nix::Error::EACCES).exit_code(), 126);
        assert_eq!(exec(nix::Error::ENOENT).exit_code(), 127);
        assert_eq!(exec(nix::Error::E2BIG).exit_code(), 125);
        assert_eq!(InitError::Setsid(nix::Error::EPERM).exit_code(), 125);
    }

    #[test]
    fn path_lookup() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        fs::create_dir(&bin).unwrap();
        fs::write(bin.join("tool"), "").unwrap();
        fs::set_permissions(bin.join("tool"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(bin.join("data"), "").unwrap();
        let path = format!("/nonexistent:{}", bin.display());
        assert_eq!(find_executable("tool", &path).unwrap(), bin.join("tool"));
        assert_eq!(find_executable("data", &path).unwrap_err().exit_code(), 126);
        assert_eq!(find_executable("nope", &path).unwrap_err().exit_code(), 127);
        assert_eq!(
            find_executable(bin.to_str().unwrap(), &path)
                .unwrap_err()
                .exit_code(),
            126
        );
    }
}
