//! `berth attach` (and `start -a`): follow the output of a running container and return its
//! exit code when it ends.
//!
//! The output is the container's log, followed from where it ended when the attach began
//! (`start -a`: from where this run's output starts), like `logs -f` without the history:
//! every supervisor (a monitor, or a foreground `berth run`) writes it, so attaching needs no
//! connection to the supervisor and any number of attaches can follow one container. The
//! end of the run is read from the record: the supervisor records the exit only after it
//! copied the last output to the log, so everything is printed before attach returns.
//!
//! Input: a `-i` container under a monitor reads its stdin from a FIFO the monitor keeps
//! open (see [`crate::commands::monitor`]); attach copies its own stdin into it. End of file on
//! attach's stdin closes only attach's end: the container's stdin stays open, as after
//! `docker attach` without `--stdin-once`. Ctrl-C (SIGINT), SIGTERM and SIGHUP detach: the
//! container keeps running, and nothing is forwarded to it. The terminal is not switched to
//! raw mode (a `-t` container receives lines as the caller's terminal edits them).

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;

use crate::names::{ContainerId, ContainerName};
use crate::sandbox::process::{self, ProcessError, SignalForwarder};
use crate::state::log::{self, LogError, LogPrinter, LogTail};
use crate::state::{ContainerRecord, StateError, Status, Store};

/// Errors of `berth attach`.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("container {name} is not running")]
    NotRunning { name: ContainerName },
    #[error("block signals")]
    Signals(#[source] ProcessError),
    #[error("wait for the container's output")]
    Follow(#[source] nix::Error),
    #[error(
        "the exit code of container {name} is unknown: its supervisor died, or --rm removed it first"
    )]
    ExitUnknown { name: ContainerName },
}

/// How an attach ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachEnd {
    /// The container exited with this code (128 + signal when killed).
    Exited(i32),
    /// Ctrl-C (or SIGTERM, SIGHUP): the container goes on without us.
    Detached,
}

/// Where the followed output starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// The end of the log now: `berth attach` (the container must be running).
    Now,
    /// This offset of the log: `start -a`, from where the new run's output begins.
    Offset(u64),
}

/// How often the log and the record are looked at, in milliseconds.
const POLL_INTERVAL_MS: u16 = 50;

/// Follows container `query` until it exits (or the caller detaches). With `stdin`, the
/// caller's stdin is copied to the container's if it is a `-i` container under a monitor.
pub fn attach(
    store: &Store,
    query: &str,
    since: Since,
    stdin: bool,
) -> Result<AttachEnd, AttachError> {
    let record = store.find(query)?;
    let id = record.id.clone();
    if since == Since::Now && record.live_status() != Status::Running {
        return Err(AttachError::NotRunning { name: record.name });
    }
    let signals = SignalForwarder::block_only(&[Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP])
        .map_err(AttachError::Signals)?;
    let path = store.log_path(&id);
    let offset = match since {
        Since::Now => log::log_end(&path)?,
        Since::Offset(offset) => offset,
    };
    let mut tail = LogTail::new(&path, offset);
    let mut printer = LogPrinter::new(io::stdout().lock(), io::stderr().lock(), false);
    let mut input = if stdin && record.config.interactive {
        Input::open(store, &id)
    } else {
        None
    };
    let caller_stdin = io::stdin();
    loop {
        // Decide before reading: the supervisor records the exit after the last output.
        let now = store.load_if_exists(&id)?;
        let finished = now.as_ref().is_none_or(run_finished);
        // A reader that went away (`| head`) does not detach: the exit code still counts.
        tail.print_new(&mut printer)?;
        if finished {
            return match now.and_then(|r| r.state.exit_code) {
                Some(code) => Ok(AttachEnd::Exited(code)),
                None => Err(AttachError::ExitUnknown { name: record.name }),
            };
        }
        let mut fds = vec![PollFd::new(signals.fd(), PollFlags::POLLIN)];
        if input.is_some() {
            fds.push(PollFd::new(caller_stdin.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, PollTimeout::from(POLL_INTERVAL_MS)) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(e) => return Err(AttachError::Follow(e)),
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready[0] && signals.next().is_some() {
            return Ok(AttachEnd::Detached);
        }
        if ready.get(1).copied().unwrap_or(false) {
            if let Some(fifo) = &input {
                if !fifo.forward() {
                    input = None;
                }
            }
        }
    }
}

/// This run of the container is over: its supervisor recorded the exit, or there is no
/// supervisor left and no process running (it died with `berth`).
fn run_finished(record: &ContainerRecord) -> bool {
    matches!(record.state.status, Some(Status::Exited | Status::Removing))
        || (!record.is_supervised() && record.live_status() != Status::Running)
}

/// The write end of a `-i` container's stdin FIFO.
struct Input {
    fifo: OwnedFd,
}

impl Input {
    /// `None` when nobody reads the FIFO (the container runs in the foreground, whose
    /// stdin is its `berth run`'s; or it just exited) or it does not exist.
    fn open(store: &Store, id: &ContainerId) -> Option<Input> {
        // Non-blocking: a FIFO without a reader refuses (ENXIO) instead of waiting.
        let fifo = nix::fcntl::open(
            &store.stdin_path(id),
            OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .ok()?;
        Some(Input { fifo })
    }

    /// Copies what the caller's stdin has to the FIFO; false at end of file (or when the
    /// container stopped reading), after which only our end is closed.
    fn forward(&self) -> bool {
        let mut buf = [0u8; 8192];
        match nix::unistd::read(io::stdin().as_fd(), &mut buf) {
            Err(nix::Error::EINTR | nix::Error::EAGAIN) => true,
            Ok(0) | Err(_) => false,
            Ok(n) => {
                process::write_all_fd(self.fifo.as_fd(), &buf[..n]);
                true
            }
        }
    }
}
