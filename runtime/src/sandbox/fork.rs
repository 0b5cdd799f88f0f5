//! `clone3` used like `fork(2)`, with a pidfd: the one way this crate starts a process that
//! needs new namespaces at birth (the container init, the user-namespace holder).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

use nix::unistd::Pid;

/// Which side of [`clone_fork`] this is.
#[derive(Debug)]
pub enum Forked {
    /// The new process. It shares nothing with its parent's threads: until `execve` or
    /// `_exit` it may only call async-signal-safe functions on memory prepared before.
    Child,
    Parent {
        pid: Pid,
        pidfd: OwnedFd,
    },
}

/// `clone3` with `flags` (e.g. `CLONE_NEWPID`) plus `CLONE_PIDFD`, SIGCHLD on exit, no
/// `CLONE_VM` and no stack: a fork whose child starts in new namespaces.
///
/// # Safety
/// On [`Forked::Child`] the caller runs only async-signal-safe code until `execve` or
/// `_exit` (other threads of this process may have held locks at the time of the clone) and
/// never returns into code that could unwind or allocate.
pub unsafe fn clone_fork(flags: libc::c_int) -> io::Result<Forked> {
    let mut pidfd: libc::c_int = -1;
    // SAFETY: clone_args is plain data (u64 fields); all-zero means "no options".
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    // Small positive bit masks and a signal number.
    args.flags = (flags | libc::CLONE_PIDFD) as u64;
    args.pidfd = (&raw mut pidfd) as u64;
    args.exit_signal = libc::SIGCHLD as u64;
    // SAFETY: without CLONE_VM and without a stack, clone3 behaves like fork: the child gets
    // a copy of this address space; what it may do next is the caller's contract above.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw mut args,
            size_of::<libc::clone_args>(),
        )
    };
    match ret {
        0 => Ok(Forked::Child),
        r if r < 0 => Err(io::Error::last_os_error()),
        pid => Ok(Forked::Parent {
            // Truncation impossible: clone3 returns a pid_t.
            pid: Pid::from_raw(pid as libc::pid_t),
            // SAFETY: with CLONE_PIDFD the kernel stored a new descriptor in `pidfd`, ours.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        }),
    }
}
