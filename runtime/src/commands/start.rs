//! `berth start` and `berth restart`: an existing container runs again.
//!
//! A container that exited (one `run` created without `--rm`, in the foreground or with
//! `-d`) is started with its stored configuration, as docker does: the same id, name and
//! hostname, the same writable layer (what the command wrote persists across runs), the same
//! volumes and limits. What a run holds on the host was released when the previous run ended,
//! so it is all made anew: netns, a fresh CNI ADD per network with the same container id and
//! interface names (the result cache is rewritten; an address may differ, as with docker),
//! the name files (this container's and its peers'), the cgroup. Every run after the first is
//! supervised by a monitor, exactly like `run -d`, whatever the first run was; its output is
//! appended to the same log.
//!
//! `restart` is `stop` (SIGTERM, SIGKILL after the timeout, wait for the release) followed by
//! `start`; a container that is not running is just started.

use std::time::Duration;

use crate::commands::monitor::{self, Launch, MonitorError};
use crate::commands::stop::{self, StopError};
use crate::lifecycle::release::{self, SettleError};
use crate::names::{ContainerId, ContainerName};
use crate::network::ports::{self, PortError};
use crate::network::{NetworkError, Networks};
use crate::sandbox::cgroups::{self, CgroupError, Layout};
use crate::sandbox::pid::ProcessRef;
use crate::state::log::{self, LogError};
use crate::state::{StateError, Status, Store};

/// Errors of `berth start` and `berth restart`.
#[derive(Debug, thiserror::Error)]
pub enum RelaunchError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("container {name} is already running")]
    AlreadyRunning { name: ContainerName },
    #[error("container {name} is being removed (an interrupted removal: rm -f finishes it)")]
    BeingRemoved { name: ContainerName },
    #[error("container {name} was run with --rm: stopping removes it, so it cannot be restarted")]
    RestartAutoRemove { name: ContainerName },
    #[error(transparent)]
    Settle(#[from] SettleError),
    #[error("detect the cgroup layout")]
    CgroupLayout(#[source] CgroupError),
    #[error(transparent)]
    Controller(CgroupError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Ports(#[from] PortError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Stop(#[from] StopError),
    #[error(transparent)]
    Monitor(#[from] MonitorError),
}

impl RelaunchError {
    /// The exit code of `berth start -a` for this error: what the monitor reported (126/127
    /// when the command cannot run), else 125.
    pub fn exit_code(&self) -> i32 {
        match self {
            RelaunchError::Monitor(e) => e.exit_code(),
            _ => 125,
        }
    }
}

/// A container that was started again.
#[derive(Debug, Clone)]
pub struct Relaunched {
    pub id: ContainerId,
    pub name: ContainerName,
    /// Where this run's output starts in the log (what `start -a` prints from).
    pub log_offset: u64,
}

/// `berth start`: runs an existing, stopped container again under a monitor and returns once
/// its command runs (or with the monitor's error; the container then stays exited).
pub fn start(store: &Store, networks: &Networks, query: &str) -> Result<Relaunched, RelaunchError> {
    let record = store.find(query)?;
    let id = record.id.clone();
    let status = record.live_status();
    if status == Status::Running || (status == Status::Created && record.is_supervised()) {
        return Err(RelaunchError::AlreadyRunning { name: record.name });
    }
    if status == Status::Removing {
        return Err(RelaunchError::BeingRemoved { name: record.name });
    }
    // It exited: its supervisor may still be releasing it, or may have died without doing so
    // (then this releases it). Afterwards it holds nothing on the host.
    release::settle(store, networks, &id)?;

    // What `run` checked before creating it, against today's host and definitions.
    let config = &record.config;
    let layout = Layout::detect().map_err(RelaunchError::CgroupLayout)?;
    cgroups::check_controllers(
        layout.manager(&config.cgroup_parent, &id).as_ref(),
        &config.resources,
    )
    .map_err(RelaunchError::Controller)?;
    let loaded = config
        .network
        .networks()
        .iter()
        .map(|name| networks.load(store, name.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    networks.check_capabilities(
        &loaded,
        !config.ports.is_empty(),
        config.mac.is_some(),
        config.ip,
    )?;

    let lock = store.lock()?;
    let records = store.records()?;
    let Some(current) = records.iter().find(|r| r.id == id) else {
        return Err(StateError::NotFound {
            query: query.to_owned(),
        }
        .into());
    };
    if current.live_status() == Status::Removing {
        return Err(RelaunchError::BeingRemoved {
            name: current.name.clone(),
        });
    }
    // Someone else started it since the checks above.
    if current.is_active() {
        return Err(RelaunchError::AlreadyRunning {
            name: current.name.clone(),
        });
    }
    ports::check_free(
        &config.ports,
        records
            .iter()
            .filter(|r| r.id != id && r.is_active())
            .map(|r| (r.name.as_str(), r.config.ports.as_slice())),
    )?;
    let log_offset = log::log_end(&store.log_path(&id))?;
    let Some(record) =
        store.update_state_locked(&lock, &id, |s| s.begin_run(ProcessRef::current()))?
    else {
        return Err(StateError::NotFound {
            query: query.to_owned(),
        }
        .into());
    };
    drop(lock);
    monitor::launch(store, networks, &record, Launch::Existing)?;
    Ok(Relaunched {
        id,
        name: record.name,
        log_offset,
    })
}

/// `berth restart [-t N]`: `stop` then `start`. Refused for `--rm` containers, which are
/// removed when they stop.
pub fn restart(
    store: &Store,
    networks: &Networks,
    query: &str,
    timeout: Duration,
) -> Result<Relaunched, RelaunchError> {
    let record = store.find(query)?;
    if record.config.auto_remove && record.is_active() {
        return Err(RelaunchError::RestartAutoRemove { name: record.name });
    }
    stop::stop(store, networks, record.id.as_str(), timeout)?;
    start(store, networks, record.id.as_str())
}
