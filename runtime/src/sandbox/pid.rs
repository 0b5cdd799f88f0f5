//! Processes named so that a reused pid is not mistaken for them: a pid with its start time
//! (`/proc/<pid>/stat`), and pidfds, which pin a process while it is signalled or waited for.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use serde::{Deserialize, Serialize};

/// A process named so that a reused pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessRef {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcessRef {
    /// The calling process.
    pub fn current() -> Option<ProcessRef> {
        let pid = i32::try_from(std::process::id()).ok()?;
        ProcessRef::of(pid)
    }

    pub fn of(pid: i32) -> Option<ProcessRef> {
        Some(ProcessRef {
            pid,
            start_time: process_start_time(pid)?,
        })
    }

    /// Still running (not exited, not a zombie), and not a reuse of the pid.
    pub fn is_alive(&self) -> bool {
        live_start_time(self.pid) == Some(self.start_time)
    }
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks since boot).
pub fn process_start_time(pid: i32) -> Option<u64> {
    stat_fields(pid).map(|(_, start)| start)
}

/// The start time of `pid` if it exists and has not exited (a zombie whose runtime was
/// killed may linger until its new parent reaps it: it is not running).
pub fn live_start_time(pid: i32) -> Option<u64> {
    stat_fields(pid)
        .filter(|(state, _)| !matches!(state, 'Z' | 'X'))
        .map(|(_, start)| start)
}

/// (state, start time) from `/proc/<pid>/stat`.
fn stat_fields(pid: i32) -> Option<(char, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    // rest starts at field 3 (state); field 22 is the 20th from there.
    let state = rest.next()?.chars().next()?;
    let start = rest.nth(18)?.parse().ok()?;
    Some((state, start))
}

/// pidfd_send_signal(2).
pub fn send_signal(pidfd: BorrowedFd<'_>, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: integers and a null siginfo pointer (the kernel fills in a default one).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// pidfd_open(2) for a process that is not our child (`rm -f`).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: integers only; a non-negative result is a new descriptor we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // Truncation impossible: descriptors are ints.
    // SAFETY: a fresh descriptor returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits up to `timeout` for the process behind `pidfd` to exit.
pub fn wait_pidfd(pidfd: BorrowedFd<'_>, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(pidfd, PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => return true,
            Ok(_) if left.is_zero() => return false,
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(_) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_readable() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(process_start_time(me).is_some());
        assert_eq!(process_start_time(i32::MAX), None);
    }
}
