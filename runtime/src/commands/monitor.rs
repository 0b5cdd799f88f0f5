//! Detached containers (`berth run -d`) and their monitor.
//!
//! `berth run -d` creates the record like a foreground run (`start` and `restart` reuse an
//! existing one, [`launch`]), then re-executes itself as
//! `berth monitor <id>` in a new session (`setsid`: no controlling terminal, so closing the
//! terminal or Ctrl-C does not reach it) with stdin and stderr on `/dev/null` and stdout a
//! pipe back to the CLI. The monitor becomes the container's supervisor: it starts the
//! container (netns, CNI, cgroup, init, exactly as the foreground path), reports one JSON
//! line on that pipe (`{"ok":true}` or the error and the exit code `run` should return),
//! and closes it; the CLI prints the id, or the error, and exits. From then on the monitor:
//! - reads the container's stdout and stderr (pipes; with `-t` the pty master) and appends
//!   them to `ctr.log` ([`crate::state::log`]); with `-i` the container's stdin is a FIFO the
//!   monitor holds open, so a shell waiting for input keeps running (like `docker run -di`)
//!   and `berth attach` can feed it (`StdinFifo`);
//! - waits for PID 1 (its pidfd), records the exit status and time, releases the cgroup,
//!   the CNI attachments and the netns, and with `--rm` removes the container.
//!
//! The monitor is PID 1's parent, so the init's `PR_SET_PDEATHSIG` ties the container's life
//! to it: a killed monitor takes the container with it, and the record (whose supervisor is
//! then dead) tells `ps`, `rm -f` and `system prune` what is left to clean up. SIGINT, SIGTERM
//! and SIGHUP are ignored by the monitor; only SIGKILL ends it early.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_netlink::error_chain;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

use crate::lifecycle::release;
use crate::lifecycle::start::{self, Started};
use crate::names::{ContainerId, NameError};
use crate::network::Networks;
use crate::sandbox::pid::ProcessRef;
use crate::sandbox::process::{self, SpawnOptions, StdioMode, Stream, raw_fds};
use crate::state::log::{LogError, LogWriter};
use crate::state::{ContainerRecord, StateError, Store};

/// Errors of the monitor and of launching one.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("start the monitor of container {id}")]
    SpawnMonitor {
        id: String,
        #[source]
        source: io::Error,
    },
    #[error("create a pipe for the container's stdio")]
    Pipe(#[source] nix::Error),
    #[error("create the stdin FIFO {path}")]
    Stdin {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// What a detached container's monitor reported (its message names the step).
    #[error("{message}")]
    Monitor { message: String, exit_code: i32 },
}

impl MonitorError {
    /// The exit code `berth run -d` (or `start`) reports: the monitor's, else 125.
    pub fn exit_code(&self) -> i32 {
        match self {
            MonitorError::Monitor { exit_code, .. } => *exit_code,
            _ => 125,
        }
    }
}

/// The monitor's one-line report to `berth run -d`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    ok: bool,
    #[serde(default)]
    message: String,
    #[serde(default)]
    exit_code: i32,
}

/// Whose container a monitor is launched for, which decides what a failure to launch it
/// leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// Just created by `run -d`: nothing ever ran, so the record goes too.
    Created,
    /// An existing container started again (`start`, `restart`): it stays, exited.
    Existing,
}

/// Starts `berth monitor <id>` for `record` (whose state the caller set to "created",
/// supervised by the calling process) and waits for its report: `Ok` once the container's
/// command runs, else the monitor's error (after it released what it had set up).
pub fn launch(
    store: &Store,
    networks: &Networks,
    record: &ContainerRecord,
    launch: Launch,
) -> Result<(), MonitorError> {
    let id = &record.id;
    let spawn_err = |source| MonitorError::SpawnMonitor {
        id: id.short().to_owned(),
        source,
    };
    let mut command = Command::new("/proc/self/exe");
    command
        .arg0("berth")
        .arg("--root")
        .arg(store.root())
        .arg("--runroot")
        .arg(store.runroot());
    for dir in networks.plugin_path() {
        command.arg("--cni-plugin-dir").arg(dir);
    }
    command
        .arg("monitor")
        .arg(id.as_str())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent; it is all the
    // child does between fork and exec.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            // Nothing was started: whatever release finds is undone; a new record goes.
            let _ = release::finish(store, networks, record, 125);
            if launch == Launch::Created && !record.config.auto_remove {
                let _ = release::dispose(store, networks, id);
            }
            return Err(spawn_err(e));
        }
    };
    let mut report = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut report);
    }
    // The monitor keeps running; it was started in its own session and is reaped by
    // whoever inherits it once this process exits.
    drop(child);
    match serde_json::from_str::<Report>(report.trim()) {
        Ok(Report { ok: true, .. }) => Ok(()),
        Ok(Report {
            message, exit_code, ..
        }) => Err(MonitorError::Monitor { message, exit_code }),
        Err(_) => {
            // The monitor died before reporting: clean up what it left.
            let _ = release::settle(store, networks, id);
            Err(MonitorError::Monitor {
                message: format!(
                    "the monitor of container {} exited without reporting",
                    id.short()
                ),
                exit_code: 125,
            })
        }
    }
}

/// `berth monitor <id>` (internal). Returns the process exit code (0, or 1 when the
/// container could not be started: the error went to `berth run -d`).
pub fn main(store: &Store, networks: &Networks, id: &str) -> i32 {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: SIG_IGN runs no code of ours. The init resets dispositions before exec.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    let outcome = ContainerId::try_from(id)
        .map_err(MonitorError::from)
        .and_then(|id| monitor(store, networks, &id));
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            // Still connected to `berth run -d` if the failure came before the report.
            report(&Report {
                ok: false,
                message: error_chain(&e),
                exit_code: e.exit_code(),
            });
            1
        }
    }
}

/// Writes the report to stdout (the pipe to `berth run -d`), then points stdout and stderr
/// at `/dev/null` so that the CLI sees EOF and nothing of ours can block on a dead reader.
fn report(report: &Report) {
    if let Ok(json) = serde_json::to_string(report) {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{json}");
        let _ = out.flush();
    }
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        // SAFETY: dup2 onto the standard descriptors; `null` stays open for the call.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(null.as_raw_fd(), 2);
        }
    }
}

/// A pipe: (read end, write end), both close-on-exec.
fn pipe() -> Result<(OwnedFd, OwnedFd), MonitorError> {
    process::output_pipe().map_err(MonitorError::Pipe)
}

fn monitor(store: &Store, networks: &Networks, id: &ContainerId) -> Result<(), MonitorError> {
    let Some(record) = store.update_state(id, |s| s.supervisor = ProcessRef::current())? else {
        return Err(StateError::NotFound {
            query: id.to_string(),
        }
        .into());
    };
    let config = &record.config;
    let mut log = LogWriter::create(&store.log_path(id))?;

    // The container's stdio: pipes for stdout and stderr (none with -t: the pty carries
    // both); with -i, stdin comes from the container's FIFO (see `StdinFifo`).
    let (out, err) = if config.tty {
        (None, None)
    } else {
        (Some(pipe()?), Some(pipe()?))
    };
    let stdin = if config.interactive {
        Some(StdinFifo::create(&store.stdin_path(id), config.tty)?)
    } else {
        None
    };
    // With -t the init replaces all three with the pty slave; until then it must not hold
    // our stdout (the report pipe), or `berth run -d` would wait for it.
    let null: OwnedFd = File::options()
        .write(true)
        .open("/dev/null")
        .map_err(|source| MonitorError::SpawnMonitor {
            id: id.short().to_owned(),
            source,
        })?
        .into();
    let fds = raw_fds([
        stdin.as_ref().and_then(|s| s.container_end.as_ref()),
        Some(out.as_ref().map_or(&null, |(_, w)| w)),
        Some(err.as_ref().map_or(&null, |(_, w)| w)),
    ]);
    let options = SpawnOptions {
        subcommand: "init",
        new_pid_namespace: true,
        stdio: StdioMode {
            interactive: config.interactive,
            tty: config.tty,
        },
        fds,
    };
    let started = start::start(store, networks, &record, options);
    // Our copies of the container's ends: dropped, so EOF arrives when the container's go.
    let out = out.map(|(r, _)| r);
    let err = err.map(|(r, _)| r);
    let stdin = stdin.map(StdinFifo::into_monitor_end);
    let Started { mut init, terminal } = match started {
        Ok(started) => started,
        Err(e) => {
            let code = e.exit_code();
            let teardown = release::finish(store, networks, &record, code);
            let message = std::iter::once(error_chain(&e))
                .chain(teardown.iter().map(|t| error_chain(t)))
                .collect::<Vec<_>>()
                .join("; ");
            report(&Report {
                ok: false,
                message,
                exit_code: code,
            });
            return Ok(());
        }
    };
    report(&Report {
        ok: true,
        message: String::new(),
        exit_code: 0,
    });

    let mut sources: Vec<(BorrowedFd<'_>, Stream)> = Vec::new();
    if let Some(t) = &terminal {
        sources.push((t.master(), Stream::Stdout));
    }
    if let Some(fd) = &out {
        sources.push((fd.as_fd(), Stream::Stdout));
    }
    if let Some(fd) = &err {
        sources.push((fd.as_fd(), Stream::Stderr));
    }
    // With -it, what `attach` writes to the FIFO goes to the pty.
    let input = match (&stdin, &terminal) {
        (Some(fifo), Some(t)) => Some((fifo.as_fd(), t.master())),
        _ => None,
    };
    copy_until_exit(init.pidfd(), &mut sources, input, &mut log);
    let exit_code = match init.wait() {
        Ok(code) => code,
        Err(e) => {
            let _ = log.write(
                Stream::Stderr,
                format!("berth: {}\n", error_chain(&e)).as_bytes(),
            );
            125
        }
    };
    for warning in release::finish(store, networks, &record, exit_code) {
        let _ = log.write(
            Stream::Stderr,
            format!("berth: warning: {}\n", error_chain(&warning)).as_bytes(),
        );
    }
    Ok(())
}

/// The stdin of a `-i` container under a monitor: a FIFO at `<dir>/stdin`, so that
/// `berth attach` (any process, any time) can feed it. The monitor holds it open for reading
/// and writing: there is always a writer, so the container never reads end-of-file when no
/// attach is connected (like `docker run -di`), and always a reader, so an attach can open it
/// without blocking. Without a tty the container reads its own read-only descriptor of the
/// FIFO; with one its stdin is the pty, and the monitor relays what arrives to the master.
struct StdinFifo {
    monitor_end: OwnedFd,
    container_end: Option<OwnedFd>,
}

impl StdinFifo {
    fn create(path: &Path, tty: bool) -> Result<StdinFifo, MonitorError> {
        let err = |source: io::Error| MonitorError::Stdin {
            path: path.to_path_buf(),
            source,
        };
        let nix_err = |e: nix::Error| err(e.into());
        // The FIFO of a previous run is made anew (whatever else might be there too).
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o600)).map_err(nix_err)?;
        let monitor_end = nix::fcntl::open(path, OFlag::O_RDWR | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(nix_err)?;
        let container_end = if tty {
            None
        } else {
            // Non-blocking only for the open (a FIFO's read open waits for a writer, which
            // exists); the container then reads it like any blocking stdin.
            let fd = nix::fcntl::open(
                path,
                OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(nix_err)?;
            fcntl(&fd, FcntlArg::F_SETFL(OFlag::empty())).map_err(nix_err)?;
            Some(fd)
        };
        Ok(StdinFifo {
            monitor_end,
            container_end,
        })
    }

    /// Once the container holds its end: ours (the container's copy is dropped here).
    fn into_monitor_end(self) -> OwnedFd {
        self.monitor_end
    }
}

/// Copies the container's output to the log until PID 1 exits, then drains what is left
/// (all writers are gone by then: the pid namespace died with PID 1).
fn copy_until_exit(
    pidfd: BorrowedFd<'_>,
    sources: &mut Vec<(BorrowedFd<'_>, Stream)>,
    input: Option<(BorrowedFd<'_>, BorrowedFd<'_>)>,
    log: &mut LogWriter,
) {
    for (fd, _) in sources.iter() {
        let _ = fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    }
    if let Some((fifo, _)) = input {
        let _ = fcntl(fifo, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
    }
    let mut buf = vec![0u8; 64 * 1024];
    // A full disk must not stall the container: a chunk the log refuses is dropped.
    let mut sink = |stream: Stream, bytes: &[u8]| {
        let _ = log.write(stream, bytes);
    };
    loop {
        let mut fds: Vec<PollFd<'_>> = vec![PollFd::new(pidfd, PollFlags::POLLIN)];
        fds.extend(
            sources
                .iter()
                .map(|(fd, _)| PollFd::new(*fd, PollFlags::POLLIN)),
        );
        if let Some((fifo, _)) = input {
            fds.push(PollFd::new(fifo, PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(_) => break,
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        let mut closed = Vec::new();
        for (i, (fd, stream)) in sources.iter().enumerate() {
            if ready[i + 1] && !process::pump(*fd, *stream, &mut buf, &mut sink) {
                closed.push(i);
            }
        }
        if let Some((fifo, master)) = input {
            if ready[1 + sources.len()] {
                process::relay_input(fifo, master, &mut buf);
            }
        }
        for i in closed.into_iter().rev() {
            sources.remove(i);
        }
        if ready[0] {
            break;
        }
    }
    for (fd, stream) in sources.iter() {
        while process::pump(*fd, *stream, &mut buf, &mut sink) {
            let mut fds = [PollFd::new(*fd, PollFlags::POLLIN)];
            if !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
                break;
            }
        }
    }
}
