//! Starting a delay line as a process of its own.
//!
//! The library does not know how its caller's binary is invoked, so `apply` asks a
//! [`Launcher`]. The runtime's is a [`CommandLauncher`] for `berth lab wire` (a hidden
//! subcommand that parses the JSON and calls [`crate::delay_line::run`]); tests re-execute
//! their own binary.

use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::delay_line::DelayLineConfig;

/// Starts `delay_line::run(config)` in a new process that outlives the caller, and returns
/// its pid. The process must not be in the caller's process group or session, so a
/// Ctrl-C of `berth lab impair` does not stop it.
pub trait Launcher {
    fn launch(&self, config: &DelayLineConfig) -> io::Result<u32>;
}

/// Runs `program args… <config JSON>` in a session of its own, stdin and stdout on
/// /dev/null, stderr to `log` (appended) or /dev/null.
#[derive(Debug, Clone)]
pub struct CommandLauncher {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub log: Option<PathBuf>,
}

impl Launcher for CommandLauncher {
    fn launch(&self, config: &DelayLineConfig) -> io::Result<u32> {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args).arg(config.to_json());
        spawn_detached(&mut cmd, self.log.as_ref())
    }
}

/// Spawns `cmd` in a new session with its output as [`CommandLauncher`] describes, and reaps
/// it from a thread, so a caller that lives on (a test) leaves no zombie and one that exits
/// first leaves the process to init.
pub fn spawn_detached(cmd: &mut Command, log: Option<&PathBuf>) -> io::Result<u32> {
    let stderr = match log {
        Some(path) => Stdio::from(File::options().create(true).append(true).open(path)?),
        None => Stdio::null(),
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    // SAFETY: runs in the forked child before exec and calls only setsid(2), which is
    // async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    std::thread::spawn(move || child.wait());
    Ok(pid)
}
