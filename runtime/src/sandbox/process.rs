//! The runtime's side of the container process: starting the init with `clone3`, the
//! config/sync handshake, and supervising PID 1 in the foreground (signal forwarding, the
//! pty, the exit status).
//!
//! **Why clone3 and not fork or `Command`.** PID 1 of a new pid namespace must be *created*
//! in it (`unshare(CLONE_NEWPID)` only affects children), so the process is made by
//! `clone3(CLONE_NEWPID | CLONE_PIDFD)`. Without `CLONE_VM` and with no stack given, clone3
//! behaves like fork, and the child does nothing but async-signal-safe syscalls (`dup2`,
//! `fcntl`, `execve`) on memory prepared beforehand, so it is sound even if the runtime had
//! other threads. The pidfd it returns names the process for `pidfd_send_signal` and
//! `poll` without pid-reuse races.
//!
//! **Signals.** [`SignalForwarder::block`] blocks the forwarded signals for the whole run and
//! reads them from a signalfd; the init unblocks them before exec. A signal arriving during
//! setup is not lost: it is forwarded once PID 1 runs. PID 1 of a pid namespace ignores
//! signals it has no handler for (except SIGKILL), exactly as under docker without `--init`.

use std::cell::Cell;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::pty::Winsize;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg, socketpair,
};
use nix::sys::termios::{self, SetArg, Termios};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{Pid, pipe2};
use serde::{Deserialize, Serialize};

use crate::sandbox::fork::{Forked, clone_fork};
use crate::sandbox::pid::send_signal;
use crate::sandbox::sealed::{self, SealedError, SealedExe};
use crate::timing;

/// Errors of the `process` module.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("create a pipe to the container's init")]
    Pipe(#[source] nix::Error),
    #[error("open /dev/null for the container's stdin")]
    DevNull(#[source] io::Error),
    #[error("clone3 the container's init (new pid namespace)")]
    Clone(#[source] io::Error),
    #[error("send the configuration to the container's init")]
    SendConfig(#[source] io::Error),
    #[error("read the container init's report")]
    ReadSync(#[source] io::Error),
    /// The init reported a failure (its message names the step).
    #[error("{message}")]
    Init { message: String, exit_code: i32 },
    #[error("block signals for forwarding")]
    BlockSignals(#[source] nix::Error),
    #[error("create a signalfd")]
    SignalFd(#[source] nix::Error),
    #[error("wait for the container")]
    Wait(#[source] nix::Error),
    #[error("poll the container, signals and terminal")]
    Poll(#[source] nix::Error),
    #[error("serialize the init configuration")]
    Serialize(#[source] serde_json::Error),
    #[error(transparent)]
    Sealed(#[from] SealedError),
}

impl ProcessError {
    /// The exit code `berth run` reports for this failure (docker's 125/126/127).
    pub fn exit_code(&self) -> i32 {
        match self {
            ProcessError::Init { exit_code, .. } => *exit_code,
            _ => 125,
        }
    }
}

/// What the init reports over the sync socket when it cannot exec the command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InitFailure {
    pub message: String,
    pub exit_code: i32,
}

/// A stream of the container's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    /// 0 for stdout, 1 for stderr.
    pub fn index(self) -> usize {
        usize::from(self == Stream::Stderr)
    }

    /// Its name in the container log.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// The signals forwarded to PID 1 (SIGWINCH resizes the pty instead).
const FORWARDED: [Signal; 9] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGCONT,
    Signal::SIGALRM,
    Signal::SIGWINCH,
];

/// Blocks the forwarded signals (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2, SIGCONT,
/// SIGALRM, SIGWINCH) for its lifetime and delivers them through a signalfd. Restores the
/// previous mask on drop.
#[derive(Debug)]
pub struct SignalForwarder {
    fd: SignalFd,
    previous: SigSet,
}

impl SignalForwarder {
    pub fn block() -> Result<SignalForwarder, ProcessError> {
        SignalForwarder::block_only(&FORWARDED)
    }

    /// Blocks just `signals` and delivers them through the signalfd (`berth attach`: Ctrl-C
    /// and friends detach instead of ending the process).
    pub fn block_only(signals: &[Signal]) -> Result<SignalForwarder, ProcessError> {
        let mut set = SigSet::empty();
        for sig in signals {
            set.add(*sig);
        }
        let mut previous = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut previous))
            .map_err(ProcessError::BlockSignals)?;
        let fd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(ProcessError::SignalFd)?;
        Ok(SignalForwarder { fd, previous })
    }

    /// Readable while a blocked signal is pending.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The next pending signal, if any (the signalfd is non-blocking).
    pub fn next(&self) -> Option<libc::c_int> {
        // ssi_signo is a small positive signal number.
        self.fd
            .read_signal()
            .ok()
            .flatten()
            .map(|info| info.ssi_signo as libc::c_int)
    }
}

impl Drop for SignalForwarder {
    fn drop(&mut self) {
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.previous), None);
    }
}

/// What the container's stdin/stdout/stderr are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StdioMode {
    /// `-i`: stdin is passed (or, with a tty, relayed); otherwise it is `/dev/null`.
    pub interactive: bool,
    /// `-t`: the init allocates a pty in the container's own devpts instance and sends the
    /// master back over the sync socket (as runc's console socket); the runtime relays it.
    pub tty: bool,
}

/// The master side of the container's pty, received from the init.
#[derive(Debug)]
pub struct Terminal {
    master: OwnedFd,
    interactive: bool,
}

impl Terminal {
    /// The master (the monitor reads the container's output from it).
    pub fn master(&self) -> BorrowedFd<'_> {
        self.master.as_fd()
    }
}

/// Which helper the runtime starts, and how.
#[derive(Debug, Clone, Copy)]
pub struct SpawnOptions {
    /// `init` (PID 1 of a new container) or `exec-init` (a process joining a running one).
    pub subcommand: &'static str,
    /// `clone3(CLONE_NEWPID)`: PID 1 of a new pid namespace. Without it the child lands in
    /// the pid namespace the caller set for its children (`berth exec`).
    pub new_pid_namespace: bool,
    pub stdio: StdioMode,
    /// Descriptors to install as the child's stdin, stdout and stderr instead of the
    /// caller's (the monitor's pipes). With a tty the init replaces them all anyway.
    pub fds: [Option<RawFd>; 3],
}

impl SpawnOptions {
    /// `berth init` with the caller's stdio: a foreground `berth run`.
    pub fn init(stdio: StdioMode) -> SpawnOptions {
        SpawnOptions {
            subcommand: "init",
            new_pid_namespace: true,
            stdio,
            fds: [None; 3],
        }
    }
}

/// Descriptors for a child's stdio, as [`SpawnOptions::fds`] takes them.
pub fn raw_fds(fds: [Option<&OwnedFd>; 3]) -> [Option<RawFd>; 3] {
    fds.map(|fd| fd.map(AsRawFd::as_raw_fd))
}

/// The caller's terminal size (rows, columns), if stdin or stdout is a terminal.
pub fn terminal_size() -> Option<(u16, u16)> {
    caller_winsize().map(|w| (w.ws_row, w.ws_col))
}

fn caller_winsize() -> Option<Winsize> {
    for fd in [libc::STDIN_FILENO, libc::STDOUT_FILENO] {
        let mut size = Winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one Winsize into the pointer we pass, which lives for
        // the call. A descriptor that is not a terminal just fails.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &raw mut size) };
        if rc == 0 && size.ws_col > 0 {
            return Some(size);
        }
    }
    None
}

/// The container's init process, seen from the runtime.
#[derive(Debug)]
pub struct InitProcess {
    pid: Pid,
    pidfd: OwnedFd,
    config: Option<File>,
    sync: OwnedFd,
    stdio: StdioMode,
    reaped: bool,
}

impl InitProcess {
    /// Starts `berth init` (this executable, re-exec'ed from a sealed copy: crate::sandbox::sealed) as
    /// PID 1 of a new pid namespace, or `berth exec-init` (see [`SpawnOptions`]). The child
    /// waits for [`send_config`](Self::send_config).
    pub fn spawn(options: SpawnOptions) -> Result<InitProcess, ProcessError> {
        let stdio = options.stdio;
        let (config_r, config_w) = pipe2(OFlag::O_CLOEXEC).map_err(ProcessError::Pipe)?;
        // A socket rather than a pipe: with -t it carries the pty master (SCM_RIGHTS).
        let (sync_r, sync_w) = socketpair(
            AddressFamily::Unix,
            SockType::Stream,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(ProcessError::Pipe)?;

        // Everything the child touches is prepared here: after clone3 it may not allocate.
        // The program is a sealed copy of this binary, never the host's file (crate::sandbox::sealed).
        let exe = timing::step("sealed copy", SealedExe::of_self).map_err(ProcessError::Sealed)?;
        // INVARIANT: these literals and decimal numbers contain no NUL byte.
        let cstr = |s: String| CString::new(s).expect("no NUL in init arguments");
        let argv_owned = [
            cstr("berth".into()),
            cstr(options.subcommand.into()),
            cstr("--config-fd".into()),
            cstr(config_r.as_raw_fd().to_string()),
            cstr("--sync-fd".into()),
            cstr(sync_w.as_raw_fd().to_string()),
        ];
        let argv = sealed::null_terminated(&argv_owned);
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        // With a tty the init replaces all three; until then it reads nothing.
        let dev_null = if stdio.tty || !stdio.interactive {
            Some(File::open("/dev/null").map_err(ProcessError::DevNull)?)
        } else {
            None
        };
        let [stdin_given, stdout_fd, stderr_fd] = options.fds;
        let stdin_fd = stdin_given.or(dev_null.as_ref().map(|f| f.as_raw_fd()));

        let flags = if options.new_pid_namespace {
            libc::CLONE_NEWPID
        } else {
            0
        };
        // SAFETY: the child branch below calls only async-signal-safe functions (dup2, fcntl,
        // execve, _exit) on memory prepared above, and never returns.
        let forked = unsafe { clone_fork(flags) }.map_err(ProcessError::Clone)?;
        let (pid, pidfd) = match forked {
            Forked::Child => {
                // --- child: async-signal-safe only, until execve ---
                // SAFETY: plain syscalls on descriptor numbers and pointers prepared before
                // the clone (argv/envp are NULL-terminated arrays of valid C strings).
                unsafe {
                    if let Some(fd) = stdin_fd {
                        libc::dup2(fd, 0);
                    }
                    if let Some(fd) = stdout_fd {
                        libc::dup2(fd, 1);
                    }
                    if let Some(fd) = stderr_fd {
                        libc::dup2(fd, 2);
                    }
                    // The two descriptors the init uses survive the exec; all else is
                    // CLOEXEC.
                    libc::fcntl(config_r.as_raw_fd(), libc::F_SETFD, 0);
                    libc::fcntl(sync_w.as_raw_fd(), libc::F_SETFD, 0);
                    // execveat(fd, "", AT_EMPTY_PATH) runs the sealed copy itself. Its
                    // descriptor is close-on-exec, which an ELF program does not mind.
                    libc::syscall(
                        libc::SYS_execveat,
                        exe.fd().as_raw_fd(),
                        c"".as_ptr(),
                        argv.as_ptr(),
                        envp.as_ptr(),
                        libc::AT_EMPTY_PATH,
                    );
                    libc::_exit(125);
                }
            }
            Forked::Parent { pid, pidfd } => (pid, pidfd),
        };
        // The parent keeps its ends only; dropping the child's ends lets EOF arrive. The
        // copy lives on in the child until its exec of the command.
        drop(exe);
        drop(config_r);
        drop(sync_w);
        Ok(InitProcess {
            pid,
            pidfd,
            config: Some(File::from(config_w)),
            sync: sync_r,
            stdio,
            reaped: false,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid.as_raw()
    }

    /// The pidfd: readable once the process exited.
    pub fn pidfd(&self) -> BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    /// Sends the configuration and closes the pipe: the init's "go". Call it after the
    /// process was moved into its cgroup.
    pub fn send_config<T: Serialize>(&mut self, config: &T) -> Result<(), ProcessError> {
        let json = serde_json::to_vec(config).map_err(ProcessError::Serialize)?;
        let mut pipe = self.config.take().ok_or_else(|| {
            ProcessError::SendConfig(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "configuration already sent",
            ))
        })?;
        pipe.write_all(&json).map_err(ProcessError::SendConfig)
    }

    /// Waits until the init has exec'ed the user's command (EOF on the sync socket) or
    /// reported why it could not. With a tty, returns the pty master the init sent.
    pub fn wait_exec(&mut self) -> Result<Option<Terminal>, ProcessError> {
        let mut report = Vec::new();
        let mut master = None;
        loop {
            let mut buf = [0u8; 4096];
            let mut cmsg = nix::cmsg_space!([RawFd; 1]);
            let (bytes, fds) = {
                let mut iov = [IoSliceMut::new(&mut buf)];
                let msg = match recvmsg::<()>(
                    self.sync.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::MSG_CMSG_CLOEXEC,
                ) {
                    Ok(msg) => msg,
                    Err(nix::Error::EINTR) => continue,
                    Err(e) => return Err(ProcessError::ReadSync(e.into())),
                };
                let mut fds = Vec::new();
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmRights(received) = c {
                            fds.extend(received);
                        }
                    }
                }
                (msg.bytes, fds)
            };
            for fd in fds {
                // SAFETY: SCM_RIGHTS installed this descriptor in our table for us.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                master.get_or_insert(fd);
            }
            if bytes == 0 {
                break;
            }
            report.extend_from_slice(&buf[..bytes]);
        }
        // The pty hand-over is marked by a lone newline, which JSON parsing ignores.
        if report.iter().all(u8::is_ascii_whitespace) {
            // EOF without a word: the successful execve closed the socket. (Every failure
            // of the init, panics included, is reported before it exits; the command itself
            // may well have exited already, so the process state proves nothing here.)
            return Ok(master.map(|master| Terminal {
                master,
                interactive: self.stdio.interactive,
            }));
        }
        match serde_json::from_slice::<InitFailure>(&report) {
            Ok(failure) => Err(ProcessError::Init {
                message: failure.message,
                exit_code: failure.exit_code,
            }),
            Err(_) => Err(ProcessError::Init {
                message: String::from_utf8_lossy(&report).trim().to_owned(),
                exit_code: 125,
            }),
        }
    }

    /// Sends `signal` to PID 1 through the pidfd (no pid-reuse race).
    pub fn signal(&self, signal: libc::c_int) -> io::Result<()> {
        send_signal(self.pidfd.as_fd(), signal)
    }

    /// Reaps the process: its exit code, or 128 + signal when killed.
    pub fn wait(&mut self) -> Result<i32, ProcessError> {
        loop {
            match waitpid(self.pid, None) {
                Ok(WaitStatus::Exited(_, code)) => {
                    self.reaped = true;
                    return Ok(code);
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    self.reaped = true;
                    return Ok(128 + sig as i32);
                }
                Ok(_) | Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(ProcessError::Wait(e)),
            }
        }
    }

    /// Runs PID 1 in the foreground until it exits: forwards signals, relays stdin to the
    /// pty, copies the container's output (the pty, or `relay`'s pipes) to the caller's
    /// stdout and stderr and to `relay.record`, and returns the exit code (128 + signal when
    /// killed). Each stream is copied in the order it was written; the two streams are
    /// independent pipes, so their relative order is only as good as the scheduling.
    pub fn supervise(
        &mut self,
        signals: &SignalForwarder,
        terminal: Option<Terminal>,
        relay: Relay<'_>,
    ) -> Result<i32, ProcessError> {
        let Relay { pipes, record } = relay;
        let pty = terminal;
        let _raw = match &pty {
            Some(p) if p.interactive => RawMode::enter(),
            _ => None,
        };
        let mut sources: Vec<Source<'_>> = Vec::new();
        if let Some(p) = &pty {
            sources.push(Source::Pty(p.master.as_fd()));
        }
        sources.extend(
            pipes
                .into_iter()
                .map(|(fd, stream)| Source::Pipe(fd, stream)),
        );
        for source in &sources {
            let _ = fcntl(source.fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        }
        // Which of the caller's streams has no reader any more (`| head`).
        let gone = [Cell::new(false), Cell::new(false)];
        let mut sink = |stream: Stream, bytes: &[u8]| {
            let written = match stream {
                Stream::Stdout => write_flushed(&mut io::stdout().lock(), bytes),
                Stream::Stderr => write_flushed(&mut io::stderr().lock(), bytes),
            };
            if written.is_err_and(|e| e.kind() == io::ErrorKind::BrokenPipe) {
                gone[stream.index()].set(true);
            }
            record(stream, bytes);
        };
        let mut buf = vec![0u8; 64 * 1024];
        let mut stdin_open = pty.as_ref().is_some_and(|p| p.interactive);
        let stdin = io::stdin();
        loop {
            let mut fds = vec![
                PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN),
                PollFd::new(signals.fd.as_fd(), PollFlags::POLLIN),
            ];
            fds.extend(
                sources
                    .iter()
                    .map(|s| PollFd::new(s.fd(), PollFlags::POLLIN)),
            );
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::Error::EINTR) => continue,
                Err(e) => return Err(ProcessError::Poll(e)),
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            if ready[1] {
                while let Ok(Some(info)) = signals.fd.read_signal() {
                    // ssi_signo is a small positive signal number.
                    let sig = info.ssi_signo as libc::c_int;
                    if sig == libc::SIGWINCH {
                        if let (Some(p), Some(size)) = (&pty, caller_winsize()) {
                            // SAFETY: TIOCSWINSZ reads the Winsize we pass for the call.
                            unsafe {
                                libc::ioctl(p.master.as_raw_fd(), libc::TIOCSWINSZ, &raw const size)
                            };
                        }
                        continue;
                    }
                    // ESRCH: it is exiting; the pidfd reports that next.
                    let _ = self.signal(sig);
                }
            }
            let mut closed = Vec::new();
            for (i, source) in sources.iter().enumerate() {
                let open = !ready[2 + i] || pump(source.fd(), source.stream(), &mut buf, &mut sink);
                // A pipe whose reader is gone is closed on our side too: the command then
                // gets EPIPE (SIGPIPE) as if it wrote there itself. The pty is drained on, so
                // that the container never blocks, and still logged.
                let orphaned =
                    matches!(source, Source::Pipe(_, stream) if gone[stream.index()].get());
                if !open || orphaned {
                    closed.push(i);
                }
            }
            let stdin_ready = stdin_open && ready[2 + sources.len()];
            for i in closed.into_iter().rev() {
                sources.remove(i);
            }
            if let (Some(p), true) = (&pty, stdin_ready) {
                stdin_open = relay_stdin(p.master.as_fd());
            }
            if ready[0] {
                break;
            }
        }
        // PID 1 is gone, and with it the whole pid namespace: every writer of the pipes and
        // the pty slave is closed, so what is left can be drained without blocking.
        for source in &sources {
            let fd = source.fd();
            while pump(fd, source.stream(), &mut buf, &mut sink) {
                let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
                if !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
                    break;
                }
            }
        }
        self.wait()
    }
}

/// One of the container's outputs [`InitProcess::supervise`] reads.
enum Source<'a> {
    /// The pty master (both streams, logged as stdout).
    Pty(BorrowedFd<'a>),
    /// The read end of a pipe, dropped (closed) when it is removed.
    Pipe(OwnedFd, Stream),
}

impl Source<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Source::Pty(fd) => *fd,
            Source::Pipe(fd, _) => fd.as_fd(),
        }
    }

    fn stream(&self) -> Stream {
        match self {
            Source::Pty(_) => Stream::Stdout,
            Source::Pipe(_, stream) => *stream,
        }
    }
}

/// What [`InitProcess::supervise`] does with the container's output besides showing it.
pub struct Relay<'a> {
    /// The read ends of the container's stdout and stderr pipes (a foreground run without
    /// `-t`); empty when the command writes to the caller's descriptors itself (`exec`).
    pub pipes: Vec<(OwnedFd, Stream)>,
    /// Gets every chunk shown (the container log); the pty's output counts as stdout.
    pub record: &'a mut dyn FnMut(Stream, &[u8]),
}

impl std::fmt::Debug for Relay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("pipes", &self.pipes).finish()
    }
}

/// A pipe for one of the container's output streams: (read end, write end), close-on-exec.
pub fn output_pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    pipe2(OFlag::O_CLOEXEC)
}

/// Reads at most this many buffers per call of [`pump`], so that a container writing
/// without pause cannot starve signal forwarding or the exit check.
const PUMP_ROUNDS: usize = 8;

/// Copies what the non-blocking `fd` holds now (a few buffers at most) to `sink`.
/// False once it reached end of file or failed (a pty master reports EIO once the slave side
/// is closed): the caller stops polling it.
pub fn pump(
    fd: BorrowedFd<'_>,
    stream: Stream,
    buf: &mut [u8],
    sink: &mut dyn FnMut(Stream, &[u8]),
) -> bool {
    let mut rounds = 0;
    while rounds < PUMP_ROUNDS {
        match nix::unistd::read(fd, buf) {
            Ok(0) => return false,
            Ok(n) => {
                sink(stream, &buf[..n]);
                rounds += 1;
            }
            Err(nix::Error::EAGAIN) => return true,
            Err(nix::Error::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}

fn write_flushed(out: &mut dyn Write, bytes: &[u8]) -> io::Result<()> {
    out.write_all(bytes)?;
    out.flush()
}

impl Drop for InitProcess {
    fn drop(&mut self) {
        // A process that was never waited for (an error path) is killed and reaped so that
        // nothing outlives the runtime.
        if !self.reaped {
            let _ = self.signal(libc::SIGKILL);
            let _ = self.wait();
        }
    }
}

/// Copies available stdin to the master; on EOF sends the terminal's EOF character and
/// returns false (stop reading stdin).
fn relay_stdin(master: BorrowedFd<'_>) -> bool {
    let mut buf = [0u8; 8192];
    match nix::unistd::read(io::stdin().as_fd(), &mut buf) {
        Ok(0) | Err(_) => {
            // ^D: the line discipline turns it into end-of-file for the reader inside.
            write_all_fd(master, &[0x04]);
            false
        }
        Ok(n) => {
            write_all_fd(master, &buf[..n]);
            true
        }
    }
}

/// Copies what the non-blocking `from` holds now to `to` (an attach's input to a pty master).
pub fn relay_input(from: BorrowedFd<'_>, to: BorrowedFd<'_>, buf: &mut [u8]) {
    loop {
        match nix::unistd::read(from, buf) {
            Ok(0) => return,
            Ok(n) => write_all_fd(to, &buf[..n]),
            Err(nix::Error::EINTR) => {}
            // EAGAIN: nothing more now.
            Err(_) => return,
        }
    }
}

/// Writes all of `data` to the non-blocking `fd`, waiting (up to a second at a time) while
/// it is full; gives up if the other side stops reading.
pub fn write_all_fd(fd: BorrowedFd<'_>, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(nix::Error::EAGAIN) => {
                let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
                if !matches!(poll(&mut fds, PollTimeout::from(1000u16)), Ok(n) if n > 0) {
                    return;
                }
            }
            Err(nix::Error::EINTR) => {}
            Err(_) => return,
        }
    }
}

/// The caller's terminal in raw mode while a `-it` container runs, restored on drop.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        let stdin = io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}
