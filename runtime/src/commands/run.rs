//! `berth run`: a new container, in the foreground (supervised by this process, its output
//! shown and logged) or with `-d` under a monitor ([`crate::commands::monitor`]).

use std::os::fd::OwnedFd;

use berth_netlink::error_chain;

use crate::commands::monitor::{self, Launch, MonitorError};
use crate::lifecycle::create::{self, CreateError};
use crate::lifecycle::release::{self, ReleaseError};
use crate::lifecycle::request::RunRequest;
use crate::lifecycle::start::{self, StartError, Started};
use crate::names::ContainerId;
use crate::network::Networks;
use crate::sandbox::process::{
    self, ProcessError, Relay, SignalForwarder, SpawnOptions, StdioMode, Stream, raw_fds,
};
use crate::state::log::{LogError, LogWriter};
use crate::state::{ContainerRecord, Store};
use crate::timing;

/// Errors of `berth run`.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Create(#[from] CreateError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Monitor(#[from] MonitorError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("block signals")]
    Signals(#[source] ProcessError),
    #[error("create a pipe for the container's stdio")]
    Pipe(#[source] nix::Error),
    #[error("container {id}")]
    Supervise {
        id: String,
        #[source]
        source: ProcessError,
    },
    /// The run failed, and so did releasing the container afterwards.
    #[error("release container {id}: {}; {}", error_chain(error.as_ref()), release::join(teardown))]
    Teardown {
        id: String,
        error: Box<RunError>,
        teardown: Vec<ReleaseError>,
    },
}

impl RunError {
    /// The exit code of `berth run` for this error: 126/127 from the init as docker reports
    /// them, what a monitor reported, 125 for everything the runtime itself failed at.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Start(e) => e.exit_code(),
            RunError::Monitor(e) => e.exit_code(),
            RunError::Teardown { error, .. } => error.exit_code(),
            _ => 125,
        }
    }
}

/// The result of a foreground run.
#[derive(Debug)]
pub struct RunOutcome {
    pub id: ContainerId,
    /// The container's exit code (128 + signal when killed).
    pub exit_code: i32,
    /// Teardown failures after the container ran (reported as warnings: the exit code is
    /// still the container's).
    pub teardown: Vec<ReleaseError>,
    /// The log could not be written (reported as a warning; the output was still shown).
    pub log_error: Option<LogError>,
}

/// `berth run` in the foreground.
pub fn run(
    store: &Store,
    networks: &Networks,
    request: RunRequest,
) -> Result<RunOutcome, RunError> {
    // Blocked first: a signal arriving during setup is forwarded once PID 1 runs.
    let signals = SignalForwarder::block().map_err(RunError::Signals)?;
    let record = timing::step("create", || create::create(store, networks, request))?;
    let id = record.id.clone();
    let result = supervise_foreground(store, networks, &record, &signals);
    let exit_code = match &result {
        Ok((code, _)) => *code,
        Err(e) => e.exit_code(),
    };
    let teardown = timing::step("finish", || {
        release::finish(store, networks, &record, exit_code)
    });
    match result {
        Ok((exit_code, log_error)) => Ok(RunOutcome {
            id,
            exit_code,
            teardown,
            log_error,
        }),
        Err(e) if teardown.is_empty() => Err(e),
        Err(e) => Err(RunError::Teardown {
            id: id.short().to_owned(),
            error: Box::new(e),
            teardown,
        }),
    }
}

/// `berth run -d`: creates the container, starts its monitor, and returns the id once the
/// container runs (or the monitor's error, after it cleaned up).
pub fn run_detached(
    store: &Store,
    networks: &Networks,
    request: RunRequest,
) -> Result<ContainerId, RunError> {
    let record = timing::step("create", || create::create(store, networks, request))?;
    launch_detached(store, networks, &record)?;
    Ok(record.id)
}

/// The second half of [`run_detached`], for a record made by `create::create_all`: its
/// monitor started, returning once the container's command runs.
pub fn launch_detached(
    store: &Store,
    networks: &Networks,
    record: &ContainerRecord,
) -> Result<(), RunError> {
    timing::step("monitor", || {
        monitor::launch(store, networks, record, Launch::Created)
    })?;
    Ok(())
}

/// Start and supervision of a foreground run: start the container, then supervise it with
/// its output shown and recorded in its log (so `berth logs` works for it as for a detached
/// one). Without `-t`, stdout and stderr are pipes this process copies to its own and to the
/// log; with `-t` the pty carries both and its output is logged as stdout. Returns the exit
/// code and the first failure to write the log (the run goes on without it: a full disk must
/// not stop the container).
fn supervise_foreground(
    store: &Store,
    networks: &Networks,
    record: &ContainerRecord,
    signals: &SignalForwarder,
) -> Result<(i32, Option<LogError>), RunError> {
    let config = &record.config;
    let mut log = LogWriter::create(&store.log_path(&record.id))?;
    let pipes = if config.tty {
        None
    } else {
        let pipe = || process::output_pipe().map_err(RunError::Pipe);
        Some((pipe()?, pipe()?))
    };
    let mut options = SpawnOptions::init(StdioMode {
        interactive: config.interactive,
        tty: config.tty,
    });
    if let Some(((_, out), (_, err))) = &pipes {
        options.fds = raw_fds([None, Some(out), Some(err)]);
    }
    let started = start::start(store, networks, record, options);
    // Our copies of the write ends go, so that EOF arrives when the container's do.
    let pipes: Vec<(OwnedFd, Stream)> = pipes
        .map(|((out, _), (err, _))| vec![(out, Stream::Stdout), (err, Stream::Stderr)])
        .unwrap_or_default();
    let Started { mut init, terminal } = started?;
    let mut log_error = None;
    let mut record_chunk = |stream: Stream, bytes: &[u8]| {
        if let Err(e) = log.write(stream, bytes) {
            log_error.get_or_insert(e);
        }
    };
    let relay = Relay {
        pipes,
        record: &mut record_chunk,
    };
    let code = timing::step("container", || init.supervise(signals, terminal, relay)).map_err(
        |source| RunError::Supervise {
            id: record.id.short().to_owned(),
            source,
        },
    )?;
    Ok((code, log_error))
}
