//! `berth exec`: a new process inside a running container.
//!
//! It must end up in every namespace of the container's PID 1, in its cgroup, with its
//! capabilities, `no_new_privs`, seccomp policy, environment and working directory:
//! 0. this process re-executes itself from a sealed copy of the binary
//!    ([`crate::sandbox::sealed::reexec_sealed`]), so that nothing it starts inside the container can
//!    reach the host's `berth` binary;
//! 1. the pid namespace cannot be entered by the process itself (`setns(CLONE_NEWPID)` only
//!    applies to children), so this process joins it *for its children* first;
//! 2. clone3 (without `CLONE_NEWPID`) of `berth exec-init`, which is therefore born inside
//!    the container's pid namespace, as its own session;
//! 3. the runtime moves it into the container's cgroup, then sends its configuration;
//! 4. the helper, single-threaded after exec, joins cgroup, ipc, uts, net and mount
//!    namespaces of PID 1 ([`crate::sandbox::namespaces::join_container`]) and becomes the command
//!    exactly like the init (`find` → 126/127, rlimits, lock-down, `execve`);
//! 5. this process forwards signals, relays the pty, and returns the exit code.
//!
//! With a user namespace, the helper joins it last, once it has joined the others as host
//! root (the container's mount namespace belongs to the host's user namespace, see
//! [`crate::sandbox::userns`]), and becomes its root.
//!
//! The command runs as `-u`, else as the container's user, resolved like PID 1's through the
//! container's `/etc/passwd` and `/etc/group` ([`crate::sandbox::user`]) once the helper's
//! root is the container's.

use std::fs::File;
use std::path::PathBuf;

use nix::sched::{CloneFlags, setns};

use crate::lifecycle::request::{self, RequestError, is_clean_absolute};
use crate::lifecycle::signal::{SignalError, signal_pid1};
use crate::names::ContainerName;
use crate::sandbox::cgroups::{CgroupError, Layout};
use crate::sandbox::init::ExecConfig;
use crate::sandbox::pid::process_start_time;
use crate::sandbox::process::{
    self, InitProcess, ProcessError, Relay, SignalForwarder, SpawnOptions, StdioMode,
};
use crate::sandbox::sealed::{self, SealedError};
use crate::sandbox::user::UserSpec;
use crate::state::{StateError, Status, Store};

/// The flags of `berth exec`, as typed; the `berth` binary parses its command line straight
/// into this (clap).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ExecRequest {
    /// Keep stdin open (pass it to the process).
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to pass the caller's value).
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Working directory (default: the container's).
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// Run as this user (name or uid, optionally :group or :gid; default: the container's).
    #[arg(short = 'u', long, value_name = "USER[:GROUP]")]
    pub user: Option<String>,
    /// The container, then the command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        num_args = 2..,
        value_name = "CONTAINER COMMAND [ARG...]"
    )]
    pub container_and_command: Vec<String>,
}

impl ExecRequest {
    /// The container (name, id or id prefix).
    pub fn container(&self) -> &str {
        self.container_and_command
            .first()
            .map_or("", String::as_str)
    }

    /// The command and its arguments.
    pub fn command(&self) -> &[String] {
        self.container_and_command.get(1..).unwrap_or_default()
    }
}

/// Errors of `berth exec`.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("container {name} is not running")]
    NotRunning { name: ContainerName },
    #[error(transparent)]
    Signal(#[from] SignalError),
    #[error("open the pid namespace of container {name} ({path})")]
    OpenPidNs {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Sealed(SealedError),
    #[error("join the pid namespace of container {name}")]
    JoinPidNs {
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("block signals")]
    Signals(#[source] ProcessError),
    #[error("start container {id}")]
    Start {
        id: String,
        #[source]
        source: ProcessError,
    },
    #[error("detect the cgroup layout")]
    CgroupLayout(#[source] CgroupError),
    #[error("move container {id} into its cgroup")]
    JoinCgroup {
        id: String,
        #[source]
        source: CgroupError,
    },
    #[error("container {id}")]
    Supervise {
        id: String,
        #[source]
        source: ProcessError,
    },
}

impl ExecError {
    /// The exit code of `berth exec` for this error: 126/127 when the command cannot be
    /// found or run, as docker reports them; 125 for everything the runtime failed at.
    pub fn exit_code(&self) -> i32 {
        match self {
            ExecError::Start { source, .. } => source.exit_code(),
            _ => 125,
        }
    }
}

/// Runs the command in the container and returns its exit code (128 + signal when killed).
pub fn exec(store: &Store, request: ExecRequest) -> Result<i32, ExecError> {
    let record = store.find(request.container())?;
    let not_running = || ExecError::NotRunning {
        name: record.name.clone(),
    };
    if record.live_status() != Status::Running {
        return Err(not_running());
    }
    let (Some(pid), Some(start)) = (record.state.pid, record.state.pid_start_time) else {
        return Err(not_running());
    };
    let host_env = |key: &str| std::env::var(key).ok();
    let mut env: Vec<(String, String)> = record
        .config
        .env
        .iter()
        .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    for input in &request.env {
        if let Some((key, value)) = request::parse_env(input, &host_env)? {
            request::set_env(&mut env, key, value);
        }
    }
    if request.tty && !env.iter().any(|(k, _)| k == "TERM") {
        env.push(("TERM".into(), "xterm".into()));
    }
    let workdir = match request.workdir.clone() {
        Some(w) if is_clean_absolute(w.as_ref()) => PathBuf::from(w),
        Some(w) => return Err(RequestError::Workdir { input: w }.into()),
        None => record.config.workdir.clone(),
    };
    if let Some(user) = &request.user {
        UserSpec::parse(user).map_err(RequestError::User)?;
    }
    if request.command().is_empty() {
        return Err(RequestError::NoCommand {
            image: record.config.image.clone(),
        }
        .into());
    }

    // 0. From here on this process makes children inside the container: it must not run the
    // host's binary itself (crate::sandbox::sealed). Re-executed, it starts over and comes back here.
    sealed::reexec_sealed().map_err(ExecError::Sealed)?;

    // 1. The pid namespace, for our children. Pinned by a pidfd of PID 1 (signal 0 checks
    // it exists) and checked by start time once the namespace file is open.
    let Some(_pin) = signal_pid1(&record, 0)? else {
        return Err(not_running());
    };
    let path = PathBuf::from(format!("/proc/{pid}/ns/pid"));
    let pid_ns = File::open(&path).map_err(|source| ExecError::OpenPidNs {
        name: record.name.to_string(),
        path: path.clone(),
        source,
    })?;
    if process_start_time(pid) != Some(start) {
        return Err(not_running());
    }
    setns(&pid_ns, CloneFlags::CLONE_NEWPID).map_err(|source| ExecError::JoinPidNs {
        name: record.name.to_string(),
        source,
    })?;

    // 2.–3.
    let signals = SignalForwarder::block().map_err(ExecError::Signals)?;
    let short = || record.id.short().to_owned();
    let start_err = |source| ExecError::Start {
        id: short(),
        source,
    };
    let mut helper = InitProcess::spawn(SpawnOptions {
        subcommand: "exec-init",
        new_pid_namespace: false,
        stdio: StdioMode {
            interactive: request.interactive,
            tty: request.tty,
        },
        fds: [None; 3],
    })
    .map_err(start_err)?;
    let layout = Layout::detect().map_err(ExecError::CgroupLayout)?;
    let cgroup = layout.manager(&record.config.cgroup_parent, &record.id);
    cgroup
        .add_process(helper.pid())
        .map_err(|source| ExecError::JoinCgroup {
            id: short(),
            source,
        })?;
    helper
        .send_config(&ExecConfig {
            pid,
            pid_start_time: start,
            args: request.command().to_vec(),
            env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
            workdir,
            capabilities: record.config.capabilities,
            deny_device_nodes: !cgroup.restricts_devices(),
            tty: request
                .tty
                .then(|| process::terminal_size().unwrap_or((24, 80))),
            userns: record.config.userns.is_some(),
            user: request.user.clone().or_else(|| record.config.user.clone()),
            privileged: record.config.privileged,
        })
        .map_err(start_err)?;
    // 4.–5.
    let terminal = helper.wait_exec().map_err(start_err)?;
    helper
        .supervise(
            &signals,
            terminal,
            Relay {
                pipes: Vec::new(),
                record: &mut |_, _| {},
            },
        )
        .map_err(|source| ExecError::Supervise {
            id: short(),
            source,
        })
}
