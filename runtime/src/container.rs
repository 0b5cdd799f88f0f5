//! Containers: `run` in the foreground, `ps`, `inspect`, `rm`.
//!
//! A foreground run, top-down:
//! 1. validate every flag ([`RunRequest::validate`]) and block the signals to forward;
//! 2. resolve the image (building `busybox` on first use), pick the id, check that the host
//!    has the cgroup controllers the limits need: all before anything is created, so bad
//!    input leaves nothing behind;
//! 3. under the store lock: check the name, write the record (`created`);
//! 4. create the overlay directories, the named netns (with `lo` up), the cgroup (limits);
//! 5. clone3 the init into a new pid namespace, move it into the cgroup, send its
//!    configuration, wait until it has exec'ed the command (or reports 126/127/125);
//! 6. record `running`, supervise until PID 1 exits, record `exited` with its code;
//! 7. release the netns and the cgroup (always, also on failure); with `--rm` remove the
//!    container's directory and record.
//!
//! A record stays after the run (without `--rm`) holding the writable layer, until `rm`.

use std::fs;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::cgroups::{self, Cgroup, CgroupError, CgroupErrors, Layout};
use crate::clock;
use crate::config::{ConfigError, RunRequest};
use crate::image::{ImageError, ImageStore};
use crate::init::InitConfig;
use crate::names::{ContainerId, ContainerName, ImageName, NameError};
use crate::namespaces::{self, NamespaceError};
use crate::process::{self, InitProcess, ProcessError, SignalForwarder, StdioMode};
use crate::rootfs::RootfsSpec;
use crate::state::{
    ContainerRecord, ContainerState, StateError, Status, Store, process_start_time,
};

/// Errors of the `container` module.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("detect the cgroup layout")]
    CgroupLayout(#[source] CgroupError),
    #[error(transparent)]
    Controller(CgroupError),
    #[error("create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("create the network namespace of container {id}")]
    CreateNetns {
        id: String,
        #[source]
        source: NamespaceError,
    },
    #[error("create the cgroup of container {id}")]
    CreateCgroup {
        id: String,
        #[source]
        source: CgroupError,
    },
    #[error("move container {id} into its cgroup")]
    JoinCgroup {
        id: String,
        #[source]
        source: CgroupError,
    },
    #[error("block signals")]
    Signals(#[source] ProcessError),
    #[error("start container {id}")]
    Start {
        id: String,
        #[source]
        source: ProcessError,
    },
    #[error("container {id}")]
    Supervise {
        id: String,
        #[source]
        source: ProcessError,
    },
    #[error("container {name} is running: stop it first or use rm -f")]
    Running { name: ContainerName },
    #[error("kill container {name} (pid {pid})")]
    Kill {
        name: ContainerName,
        pid: i32,
        #[source]
        source: io::Error,
    },
    #[error("container {name} (pid {pid}) did not exit after SIGKILL")]
    KillTimeout { name: ContainerName, pid: i32 },
    #[error("remove the network namespace of container {id}")]
    RemoveNetns {
        id: String,
        #[source]
        source: NamespaceError,
    },
    #[error("remove the cgroup of container {id}")]
    RemoveCgroup {
        id: String,
        #[source]
        source: CgroupErrors,
    },
    #[error("release container {id}: {}", join_errors(errors))]
    Teardown {
        id: String,
        errors: Vec<ContainerError>,
    },
}

impl ContainerError {
    /// The exit code of `berth run` for this error: 126/127 from the init as docker reports
    /// them, 125 for everything the runtime itself failed at.
    pub fn exit_code(&self) -> i32 {
        match self {
            ContainerError::Start { source, .. } => source.exit_code(),
            _ => 125,
        }
    }
}

fn join_errors(errors: &[ContainerError]) -> String {
    errors
        .iter()
        .map(|e| {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The result of a foreground run.
#[derive(Debug)]
pub struct RunOutcome {
    pub id: ContainerId,
    /// The container's exit code (128 + signal when killed).
    pub exit_code: i32,
    /// Teardown failures after the container ran (reported as warnings: the exit code is
    /// still the container's).
    pub teardown: Vec<ContainerError>,
}

/// `berth run` in the foreground.
pub fn run(store: &Store, request: RunRequest) -> Result<RunOutcome, ContainerError> {
    // 1.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spec = request.validate(|key| std::env::var(key).ok(), cpus)?;
    let signals = SignalForwarder::block().map_err(ContainerError::Signals)?;

    // 2.
    let images = ImageStore::new(store.images_dir());
    let image = images.resolve(&spec.image)?;
    let layout = Layout::detect().map_err(ContainerError::CgroupLayout)?;
    let id = ContainerId::random()?;
    let cgroup = layout.manager(&spec.cgroup_parent, &id);
    cgroups::check_controllers(cgroup.as_ref(), &spec.resources)
        .map_err(ContainerError::Controller)?;
    let wanted_name = spec.name.clone();
    let config = spec.into_config(&image, &id)?;

    // 3.
    let record = {
        let lock = store.lock()?;
        let name = match wanted_name {
            Some(name) => {
                store.check_name_free(&lock, &name)?;
                name
            }
            None => generate_name(store, &lock)?,
        };
        let record = ContainerRecord {
            id: id.clone(),
            name,
            created: clock::now_rfc3339(),
            config,
            state: ContainerState {
                status: Some(Status::Created),
                ..ContainerState::default()
            },
        };
        store.save(&lock, &record)?;
        record
    };

    // 4.–6.
    let result = start_and_supervise(
        store,
        &record,
        images.rootfs(&record.config.image),
        cgroup.as_ref(),
        &signals,
    );

    // 7. Always: the netns and the cgroup go with the process.
    let mut teardown = release(store, &record, Some(cgroup.as_ref()));
    let exit_code = match &result {
        Ok(code) => *code,
        Err(e) => e.exit_code(),
    };
    if record.config.auto_remove {
        match store.lock() {
            Ok(lock) => {
                if let Err(e) = store.remove(&lock, &record.id) {
                    teardown.push(e.into());
                }
            }
            Err(e) => teardown.push(e.into()),
        }
    } else if let Err(e) = store.update_state(&record.id, |s| {
        s.status = Some(Status::Exited);
        s.exit_code = Some(exit_code);
        s.finished_at = Some(clock::now_rfc3339());
    }) {
        teardown.push(e.into());
    }
    match result {
        Ok(exit_code) => Ok(RunOutcome {
            id,
            exit_code,
            teardown,
        }),
        Err(e) if teardown.is_empty() => Err(e),
        Err(e) => {
            teardown.insert(0, e);
            Err(ContainerError::Teardown {
                id: id.short().to_owned(),
                errors: teardown,
            })
        }
    }
}

fn generate_name(
    store: &Store,
    lock: &crate::state::StoreLock,
) -> Result<ContainerName, ContainerError> {
    let mut last = None;
    for _ in 0..16 {
        let name = ContainerName::generate()?;
        match store.check_name_free(lock, &name) {
            Ok(()) => return Ok(name),
            Err(e) => last = Some(e),
        }
    }
    // 16 collisions in a 65536-wide space: the store is crowded; report the last one.
    Err(last.map_or_else(
        || {
            ContainerError::State(StateError::NotFound {
                query: "a free container name".into(),
            })
        },
        ContainerError::State,
    ))
}

fn mkdir(path: PathBuf) -> Result<PathBuf, ContainerError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&path)
        .map_err(|source| ContainerError::CreateDir {
            path: path.clone(),
            source,
        })?;
    Ok(path)
}

/// Steps 4–6 of [`run`]. On any error the init (if started) is killed and reaped by
/// `InitProcess`'s drop; the caller releases the rest.
fn start_and_supervise(
    store: &Store,
    record: &ContainerRecord,
    lower: PathBuf,
    cgroup: &dyn Cgroup,
    signals: &SignalForwarder,
) -> Result<i32, ContainerError> {
    let id = &record.id;
    let config = &record.config;
    let dir = store.container_dir(id);
    let rootfs = RootfsSpec {
        lower,
        upper: mkdir(dir.join("upper"))?,
        work: mkdir(dir.join("work"))?,
        merged: mkdir(dir.join("merged"))?,
        volumes: config.volumes.clone(),
        read_only: config.read_only,
        workdir: config.workdir.clone(),
    };
    let netns = store.netns_path(id);
    namespaces::create_netns(&netns).map_err(|source| ContainerError::CreateNetns {
        id: id.short().to_owned(),
        source,
    })?;
    cgroup
        .create(&config.resources)
        .map_err(|source| ContainerError::CreateCgroup {
            id: id.short().to_owned(),
            source,
        })?;

    let start_err = |source| ContainerError::Start {
        id: id.short().to_owned(),
        source,
    };
    let mut init = InitProcess::spawn(StdioMode {
        interactive: config.interactive,
        tty: config.tty,
    })
    .map_err(start_err)?;
    cgroup
        .add_process(init.pid())
        .map_err(|source| ContainerError::JoinCgroup {
            id: id.short().to_owned(),
            source,
        })?;
    init.send_config(&InitConfig {
        netns,
        hostname: config.hostname.clone(),
        rootfs,
        args: config.args.clone(),
        env: config.env.clone(),
        capabilities: config.capabilities,
        deny_device_nodes: !cgroup.restricts_devices(),
        tty: config
            .tty
            .then(|| process::terminal_size().unwrap_or((24, 80))),
    })
    .map_err(start_err)?;
    let terminal = init.wait_exec().map_err(start_err)?;

    let pid = init.pid();
    store.update_state(id, |s| {
        s.status = Some(Status::Running);
        s.pid = Some(pid);
        s.pid_start_time = process_start_time(pid);
        s.started_at = Some(clock::now_rfc3339());
    })?;
    init.supervise(signals, terminal)
        .map_err(|source| ContainerError::Supervise {
            id: id.short().to_owned(),
            source,
        })
}

/// Releases what a container holds on the host besides its directory: the netns file and
/// the cgroup (killing leftovers). Idempotent; keeps going and returns every failure.
fn release(
    store: &Store,
    record: &ContainerRecord,
    cgroup: Option<&dyn Cgroup>,
) -> Vec<ContainerError> {
    let mut errors = Vec::new();
    let id = record.id.short().to_owned();
    let detected;
    let cgroup = match cgroup {
        Some(cgroup) => Some(cgroup),
        None => match Layout::detect() {
            Ok(layout) => {
                detected = layout.manager(&record.config.cgroup_parent, &record.id);
                Some(detected.as_ref())
            }
            Err(e) => {
                errors.push(ContainerError::CgroupLayout(e));
                None
            }
        },
    };
    if let Some(cgroup) = cgroup {
        if let Err(source) = cgroup.destroy() {
            errors.push(ContainerError::RemoveCgroup {
                id: id.clone(),
                source,
            });
        }
    }
    if let Err(source) = namespaces::remove_netns(&store.netns_path(&record.id)) {
        errors.push(ContainerError::RemoveNetns { id, source });
    }
    errors
}

/// `berth rm [-f]`: removes a container; `force` kills a running one first.
pub fn remove(store: &Store, query: &str, force: bool) -> Result<ContainerId, ContainerError> {
    let record = store.find(query)?;
    if record.live_status() == Status::Running {
        if !force {
            return Err(ContainerError::Running { name: record.name });
        }
        kill(&record)?;
    }
    let mut errors = release(store, &record, None);
    let lock = store.lock()?;
    if let Err(e) = store.remove(&lock, &record.id) {
        errors.push(e.into());
    }
    if errors.is_empty() {
        Ok(record.id)
    } else {
        Err(ContainerError::Teardown {
            id: record.id.short().to_owned(),
            errors,
        })
    }
}

/// SIGKILL to PID 1 (which takes the whole pid namespace with it), then wait for it.
fn kill(record: &ContainerRecord) -> Result<(), ContainerError> {
    let (Some(pid), Some(start)) = (record.state.pid, record.state.pid_start_time) else {
        return Ok(());
    };
    let name = record.name.clone();
    let pidfd = match process::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
        Err(source) => return Err(ContainerError::Kill { name, pid, source }),
    };
    // The pidfd pins the process: if the start time still matches now, the pid was not
    // reused and the signal goes to the container.
    if process_start_time(pid) != Some(start) {
        return Ok(());
    }
    match process::send_signal(pidfd.as_fd(), libc::SIGKILL) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
        Err(source) => return Err(ContainerError::Kill { name, pid, source }),
    }
    if process::wait_pidfd(pidfd.as_fd(), Duration::from_secs(10)) {
        Ok(())
    } else {
        Err(ContainerError::KillTimeout { name, pid })
    }
}

/// A line of `berth ps`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerSummary {
    pub id: ContainerId,
    pub name: ContainerName,
    pub image: ImageName,
    pub command: Vec<String>,
    pub created: String,
    pub status: Status,
    /// "Up 5 seconds", "Exited (0) 2 minutes ago", "Created".
    pub status_text: String,
    pub exit_code: Option<i32>,
    pub pid: Option<i32>,
}

impl ContainerSummary {
    fn of(record: &ContainerRecord) -> ContainerSummary {
        let status = record.live_status();
        let status_text = match status {
            Status::Created => "Created".to_owned(),
            Status::Running => format!(
                "Up {}",
                record
                    .state
                    .started_at
                    .as_deref()
                    .and_then(clock::parse_rfc3339)
                    .map_or_else(String::new, |t| clock::humanize(clock::unix_now() - t))
            ),
            Status::Exited => match (record.state.exit_code, &record.state.finished_at) {
                (Some(code), Some(at)) => format!("Exited ({code}) {}", clock::ago(at)),
                _ => "Exited".to_owned(),
            },
        };
        ContainerSummary {
            id: record.id.clone(),
            name: record.name.clone(),
            image: record.config.image.clone(),
            command: record.config.args.clone(),
            created: record.created.clone(),
            status,
            status_text,
            exit_code: record.state.exit_code,
            pid: (status == Status::Running)
                .then_some(record.state.pid)
                .flatten(),
        }
    }
}

/// `berth ps [-a]`: running containers, or all of them.
pub fn list(store: &Store, all: bool) -> Result<Vec<ContainerSummary>, ContainerError> {
    Ok(store
        .records()?
        .iter()
        .map(ContainerSummary::of)
        .filter(|s| all || s.status == Status::Running)
        .collect())
}

/// `berth inspect`: the record plus what it implies on the host.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    #[serde(flatten)]
    pub record: ContainerRecord,
    pub status: Status,
    pub paths: InspectPaths,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectPaths {
    pub directory: PathBuf,
    pub rootfs_lower: PathBuf,
    pub rootfs_upper: PathBuf,
    pub netns: PathBuf,
    pub cgroups: Vec<PathBuf>,
}

pub fn inspect(store: &Store, query: &str) -> Result<Inspection, ContainerError> {
    let record = store.find(query)?;
    let layout = Layout::detect().map_err(ContainerError::CgroupLayout)?;
    let cgroup = layout.manager(&record.config.cgroup_parent, &record.id);
    let images = ImageStore::new(store.images_dir());
    let dir = store.container_dir(&record.id);
    Ok(Inspection {
        status: record.live_status(),
        paths: InspectPaths {
            rootfs_lower: images.rootfs(&record.config.image),
            rootfs_upper: dir.join("upper"),
            directory: dir,
            netns: store.netns_path(&record.id),
            cgroups: cgroup.paths(),
        },
        record,
    })
}

/// `berth image rm`: refuses while a container (running or not) uses the image, since its
/// rootfs is that container's lower layer.
pub fn remove_image(store: &Store, name: &str) -> Result<ImageName, ContainerError> {
    let name = ImageName::try_from(name)?;
    let _lock = store.lock()?;
    if let Some(user) = store.records()?.iter().find(|r| r.config.image == name) {
        return Err(ImageError::InUse {
            name,
            container: user.name.to_string(),
        }
        .into());
    }
    ImageStore::new(store.images_dir()).remove(&name)?;
    Ok(name)
}
