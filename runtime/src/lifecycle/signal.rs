//! Signals to a container's PID 1, and the waits `stop`, `rm -f` and `exec` build on: for a
//! supervisor to finish starting the container, for a process to exit. Every pid is checked
//! against its start time and held by a pidfd ([`crate::sandbox::pid`]), so a reused pid is
//! never signalled.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use crate::names::ContainerName;
use crate::sandbox::pid::{self, ProcessRef, process_start_time};
use crate::state::{ContainerRecord, StateError, Status, Store};

/// Errors of the `signal` module.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("signal {signal} to container {name} (pid {pid})")]
    Kill {
        name: ContainerName,
        pid: i32,
        signal: i32,
        #[source]
        source: io::Error,
    },
    #[error("container {name} (pid {pid}) did not exit after SIGKILL")]
    KillTimeout { name: ContainerName, pid: i32 },
}

/// A signal as docker and `kill` take it: `KILL`, `SIGKILL`, `kill` or `9`; `None` if it
/// names no signal. The number is the kernel's.
pub fn parse_signal(input: &str) -> Option<i32> {
    if let Ok(n) = input.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok().map(|s| s as i32);
    }
    let upper = input.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// The name of signal `number` (`SIGQUIT`), as a record stores a stop signal.
pub fn signal_name(number: i32) -> Option<&'static str> {
    nix::sys::signal::Signal::try_from(number)
        .ok()
        .map(|s| s.as_str())
}

/// How long a supervisor gets to record an exit and release the container (CNI DEL of
/// every network) before `rm -f` stops waiting for it.
pub const SUPERVISOR_GRACE: Duration = Duration::from_secs(20);

/// How long `stop` and `rm -f` let a supervisor that is starting the container get to PID 1
/// (or to its failure) before they act.
pub const START_GRACE: Duration = Duration::from_secs(10);

/// The record once its live supervisor has finished starting the container (PID 1 runs, or
/// the start failed) or [`START_GRACE`] passed; `None` if the record went meanwhile.
pub fn wait_until_started(
    store: &Store,
    record: &ContainerRecord,
) -> Result<Option<ContainerRecord>, SignalError> {
    let deadline = std::time::Instant::now() + START_GRACE;
    let mut record = record.clone();
    // A supervisor removing its own container (`--rm`) does not wait for itself.
    let me = ProcessRef::current();
    while record.live_status() == Status::Created
        && record.is_supervised()
        && (me.is_none() || record.state.supervisor != me)
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
        match store.load_if_exists(&record.id)? {
            Some(r) => record = r,
            None => return Ok(None),
        }
    }
    Ok(Some(record))
}

/// SIGKILL to PID 1 (which takes the whole pid namespace with it), then give the supervisor
/// time to finish; a supervisor that does not (hung) is killed too (the init dies with it:
/// `PR_SET_PDEATHSIG`). A supervisor still starting the container gets [`START_GRACE`] to
/// finish first: killed in the middle of a CNI ADD, it would leave the plugin to carry on
/// alone while this process runs DEL.
pub fn terminate(store: &Store, record: &ContainerRecord) -> Result<(), SignalError> {
    let Some(record) = wait_until_started(store, record)? else {
        return Ok(());
    };
    let record = &record;
    if let Some(pidfd) = signal_pid1(record, libc::SIGKILL)? {
        let pid = record.state.pid.unwrap_or_default();
        if !pid::wait_pidfd(pidfd.as_fd(), Duration::from_secs(10)) {
            return Err(SignalError::KillTimeout {
                name: record.name.clone(),
                pid,
            });
        }
    }
    let Some(supervisor) = record.state.supervisor else {
        return Ok(());
    };
    if ProcessRef::current() == Some(supervisor) {
        return Ok(());
    }
    let grace = if record.live_status() == Status::Running || record.state.pid.is_some() {
        SUPERVISOR_GRACE
    } else {
        Duration::ZERO
    };
    if !wait_process(supervisor, grace) {
        if let Some(fd) = pidfd_of(supervisor) {
            let _ = pid::send_signal(fd.as_fd(), libc::SIGKILL);
            pid::wait_pidfd(fd.as_fd(), Duration::from_secs(5));
        }
    }
    Ok(())
}

/// A pidfd for `process` if it is still that process.
fn pidfd_of(process: ProcessRef) -> Option<OwnedFd> {
    let fd = pid::pidfd_open(process.pid).ok()?;
    // The pidfd pins the process: if the start time still matches now, it is the one.
    (process_start_time(process.pid) == Some(process.start_time)).then_some(fd)
}

/// Waits up to `timeout` for `process` to exit; true if it is gone.
pub fn wait_process(process: ProcessRef, timeout: Duration) -> bool {
    match pidfd_of(process) {
        Some(fd) => pid::wait_pidfd(fd.as_fd(), timeout) || !process.is_alive(),
        None => true,
    }
}

/// Sends `signal` to the container's PID 1 if it runs; returns its pidfd (to wait on), or
/// `None` if it was not running.
pub fn signal_pid1(record: &ContainerRecord, signal: i32) -> Result<Option<OwnedFd>, SignalError> {
    let (Some(pid), Some(start)) = (record.state.pid, record.state.pid_start_time) else {
        return Ok(None);
    };
    let Some(pidfd) = pidfd_of(ProcessRef {
        pid,
        start_time: start,
    }) else {
        return Ok(None);
    };
    match pid::send_signal(pidfd.as_fd(), signal) {
        Ok(()) => Ok(Some(pidfd)),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(None),
        Err(source) => Err(SignalError::Kill {
            name: record.name.clone(),
            pid,
            signal,
            source,
        }),
    }
}
