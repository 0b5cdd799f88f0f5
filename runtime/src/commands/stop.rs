//! `berth stop` and `berth kill`: signals to a container's PID 1.
//!
//! `stop` is docker's: the container's stop signal (the image's `StopSignal`, or
//! `run --stop-signal`; SIGTERM by default), and SIGKILL if PID 1 is still there after the
//! timeout (remember that PID 1 only receives signals it handles: a shell without a trap
//! ignores SIGTERM). It then waits for the container's supervisor to record the exit and release the
//! network, so that a `stop` that returned leaves no attachment behind; if that supervisor
//! is gone (killed), `stop` releases the container itself. `kill` only delivers a signal.

use std::os::fd::AsFd;
use std::time::Duration;

use crate::lifecycle::release::{self, SettleError};
use crate::lifecycle::signal::{self, SignalError};
use crate::names::{ContainerId, ContainerName};
use crate::network::Networks;
use crate::sandbox::pid;
use crate::state::{StateError, Status, Store};

/// Errors of `berth stop` and `berth kill`.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("invalid signal {input:?}: use a name such as TERM or SIGKILL, or a number")]
    BadSignal { input: String },
    #[error("container {name} is not running")]
    NotRunning { name: ContainerName },
    #[error(transparent)]
    Signal(#[from] SignalError),
    #[error("container {name} (pid {pid}) did not exit after SIGKILL")]
    KillTimeout { name: ContainerName, pid: i32 },
    #[error(transparent)]
    Settle(#[from] SettleError),
}

/// `KILL`, `SIGKILL`, `kill` or `9`.
pub fn parse_signal(input: &str) -> Result<i32, StopError> {
    signal::parse_signal(input).ok_or_else(|| StopError::BadSignal {
        input: input.to_owned(),
    })
}

/// `berth kill [-s SIG]`: delivers `signal` to PID 1 of a running container.
pub fn kill(store: &Store, query: &str, signal: i32) -> Result<ContainerId, StopError> {
    let record = store.find(query)?;
    if record.live_status() != Status::Running {
        return Err(StopError::NotRunning { name: record.name });
    }
    match signal::signal_pid1(&record, signal)? {
        Some(_) => Ok(record.id),
        None => Err(StopError::NotRunning { name: record.name }),
    }
}

/// `berth stop [-t N]`: the container's stop signal (the image's `StopSignal` or
/// `--stop-signal`; default SIGTERM), SIGKILL after `timeout`, then settle (see the module
/// doc).
/// Stopping a container that is not running is not an error.
pub fn stop(
    store: &Store,
    networks: &Networks,
    query: &str,
    timeout: Duration,
) -> Result<ContainerId, StopError> {
    let found = store.find(query)?;
    // Being started (its supervisor attaches networks, …): wait until it runs or failed.
    let Some(record) = signal::wait_until_started(store, &found)? else {
        return Ok(found.id);
    };
    if record.live_status() == Status::Running {
        let first = record
            .config
            .stop_signal
            .as_deref()
            .and_then(signal::parse_signal)
            .unwrap_or(libc::SIGTERM);
        if let Some(pidfd) = signal::signal_pid1(&record, first)? {
            if !pid::wait_pidfd(pidfd.as_fd(), timeout) {
                let _ = signal::signal_pid1(&record, libc::SIGKILL)?;
                if !pid::wait_pidfd(pidfd.as_fd(), Duration::from_secs(10)) {
                    return Err(StopError::KillTimeout {
                        name: record.name,
                        pid: record.state.pid.unwrap_or_default(),
                    });
                }
            }
        }
    }
    release::settle(store, networks, &record.id)?;
    Ok(record.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_and_numbers() {
        assert_eq!(parse_signal("KILL").unwrap(), libc::SIGKILL);
        assert_eq!(parse_signal("sigterm").unwrap(), libc::SIGTERM);
        assert_eq!(parse_signal("SIGUSR1").unwrap(), libc::SIGUSR1);
        assert_eq!(parse_signal("9").unwrap(), 9);
        for bad in ["", "NOPE", "0", "-1", "999", "SIG"] {
            assert!(parse_signal(bad).is_err(), "{bad}");
        }
    }
}
