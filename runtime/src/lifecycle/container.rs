//! Containers: create, start, finish (the steps `run` and the monitor share), release,
//! `rm`, and the signals and waits `stop`, `rm -f` and `exec` build on.
//!
//! A run, top-down:
//! 1. [`create`]: validate every flag, resolve the image (building `busybox` on first use),
//!    pick the id, check the cgroup controllers, load the networks and check they can honour
//!    `-p`/`--ip`/`--mac-address`; then, under the store lock, check the name and the host
//!    ports and write the record (`created`, supervised by the calling process). Everything
//!    that can refuse bad input happens before this point, so it leaves nothing behind.
//! 2. [`start`]: the overlay directories, the named netns (with `lo` up), the CNI attachments
//!    (eth0, eth1, … in `--network` order; written to the record before ADD), the name files
//!    (`/etc/hosts` of the peers updated too), the cgroup, then clone3 of the init, which
//!    joins the cgroup, receives its configuration and execs the command; the record says
//!    `running` with PID 1's pid and start time.
//! 3. supervision: in the foreground by `berth run` itself ([`run`]: signals forwarded,
//!    output shown and logged, pty relayed), or by the monitor of a detached container
//!    ([`crate::commands::monitor`]: output logged).
//! 4. [`finish`]: record the exit, then [`release`] (cgroup, CNI DEL, peers' hosts files,
//!    netns: also after a failed start), or with `--rm` remove the container altogether
//!    ([`dispose`], see [`crate::commands::rm`]).

use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_image::{ImageError, ImageName, ImageStore};

use crate::lifecycle::request::{ConfigError, RunRequest};
use crate::names::{ContainerId, ContainerName, NameError};
use crate::network::attachments::{self, AttachmentError};
use crate::network::hosts::{self, HostsError};
use crate::network::ports::{self, PortError};
use crate::network::{NetworkError, Networks};
use crate::sandbox::cgroups::{self, CgroupError, CgroupErrors, Layout};
use crate::sandbox::init::{InitConfig, InitUserns};
use crate::sandbox::namespaces::{self, NamespaceError};
use crate::sandbox::pid::{self, ProcessRef, process_start_time};
use crate::sandbox::process::Stream;
use crate::sandbox::process::{
    self, InitProcess, ProcessError, Relay, SignalForwarder, SpawnOptions, StdioMode, Terminal,
};
use crate::sandbox::rootfs::RootfsSpec;
use crate::sandbox::rootfs::Volume;
use crate::sandbox::userns::{self, Holder, UsernsError, UsernsRequest};
use crate::state::NetworkMode;
use crate::state::clock;
use crate::state::log::{LogError, LogWriter};
use crate::state::{ContainerRecord, ContainerState, StateError, Status, Store};
use crate::timing;

/// Errors of the `container` module.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    ImageName(#[from] berth_image::NameError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Ports(#[from] PortError),
    #[error(transparent)]
    Hosts(#[from] HostsError),
    #[error(transparent)]
    Attachment(#[from] AttachmentError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Exec(#[from] crate::commands::exec::ExecError),
    #[error(transparent)]
    Userns(#[from] UsernsError),
    #[error("detect the cgroup layout")]
    CgroupLayout(#[source] CgroupError),
    #[error(transparent)]
    Controller(CgroupError),
    #[error("give {path} to the container's root")]
    Chown {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
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
    #[error("container {id}")]
    Attach {
        id: String,
        #[source]
        source: NetworkError,
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
    #[error("container {name} is not running")]
    NotRunning { name: ContainerName },
    #[error("container {name} is already running")]
    AlreadyRunning { name: ContainerName },
    #[error("container {name} is being removed (an interrupted removal: rm -f finishes it)")]
    BeingRemoved { name: ContainerName },
    #[error("container {name} was run with --rm: stopping removes it, so it cannot be restarted")]
    RestartAutoRemove { name: ContainerName },
    #[error(
        "the exit code of container {name} is unknown: its supervisor died, or --rm removed it first"
    )]
    ExitUnknown { name: ContainerName },
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
    #[error("invalid signal {input:?}: use a name such as TERM or SIGKILL, or a number")]
    Signal { input: String },
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
    #[error("start the monitor of container {id}")]
    SpawnMonitor {
        id: String,
        #[source]
        source: io::Error,
    },
    #[error("wait for the container's output")]
    Follow(#[source] nix::Error),
    #[error("create a pipe for the container's stdio")]
    Pipe(#[source] nix::Error),
    #[error("create the stdin FIFO {path}")]
    Stdin {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// What a detached container's monitor reported (its message names the step).
    #[error("{message}")]
    Monitor { message: String, exit_code: i32 },
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
            ContainerError::Monitor { exit_code, .. } => *exit_code,
            ContainerError::Teardown { errors, .. } => errors.first().map_or(125, Self::exit_code),
            _ => 125,
        }
    }
}

/// `err: cause: cause`, on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn join_errors(errors: &[ContainerError]) -> String {
    errors
        .iter()
        .map(|e| error_chain(e))
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
    /// The log could not be written (reported as a warning; the output was still shown).
    pub log_error: Option<LogError>,
}

/// `berth run` in the foreground.
pub fn run(
    store: &Store,
    networks: &Networks,
    request: RunRequest,
) -> Result<RunOutcome, ContainerError> {
    // Blocked first: a signal arriving during setup is forwarded once PID 1 runs.
    let signals = SignalForwarder::block().map_err(ContainerError::Signals)?;
    let record = timing::step("create", || create(store, networks, request))?;
    let id = record.id.clone();
    let result = supervise_foreground(store, networks, &record, &signals);
    let exit_code = match &result {
        Ok((code, _)) => *code,
        Err(e) => e.exit_code(),
    };
    let mut teardown = timing::step("finish", || finish(store, networks, &record, exit_code));
    match result {
        Ok((exit_code, log_error)) => Ok(RunOutcome {
            id,
            exit_code,
            teardown,
            log_error,
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

/// Steps 2 and 3 of a foreground run: start the container, then supervise it with its output
/// shown and recorded in its log (so `berth logs` works for it as for a detached one).
/// Without `-t`, stdout and stderr are pipes this process copies to its own and to the log;
/// with `-t` the pty carries both and its output is logged as stdout. Returns the exit code
/// and the first failure to write the log (the run goes on without it: a full disk must not
/// stop the container).
fn supervise_foreground(
    store: &Store,
    networks: &Networks,
    record: &ContainerRecord,
    signals: &SignalForwarder,
) -> Result<(i32, Option<LogError>), ContainerError> {
    let config = &record.config;
    let mut log = LogWriter::create(&store.log_path(&record.id))?;
    let pipes = if config.tty {
        None
    } else {
        let pipe = || process::output_pipe().map_err(ContainerError::Pipe);
        Some((pipe()?, pipe()?))
    };
    let mut options = SpawnOptions::init(StdioMode {
        interactive: config.interactive,
        tty: config.tty,
    });
    if let Some(((_, out), (_, err))) = &pipes {
        options.fds = raw_fds([None, Some(out), Some(err)]);
    }
    let started = start(store, networks, record, options);
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
        |source| ContainerError::Supervise {
            id: record.id.short().to_owned(),
            source,
        },
    )?;
    Ok((code, log_error))
}

/// Step 1: validation, then the record (supervised by the calling process).
pub fn create(
    store: &Store,
    networks: &Networks,
    request: RunRequest,
) -> Result<ContainerRecord, ContainerError> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spec = request.validate(|key| std::env::var(key).ok(), cpus)?;

    let images = ImageStore::new(store.images_dir());
    let image = images.resolve(&spec.image)?;
    let layout = Layout::detect().map_err(ContainerError::CgroupLayout)?;
    let id = ContainerId::random()?;
    let cgroup = layout.manager(&spec.cgroup_parent, &id);
    cgroups::check_controllers(cgroup.as_ref(), &spec.resources)
        .map_err(ContainerError::Controller)?;
    let loaded = spec
        .network
        .networks()
        .iter()
        .map(|name| networks.load(store, name.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    networks.check_capabilities(&loaded, !spec.ports.is_empty(), spec.mac.is_some(), spec.ip)?;
    let wanted_name = spec.name.clone();

    let lock = store.lock()?;
    let name = match wanted_name {
        Some(name) => {
            store.check_name_free(&lock, &name)?;
            name
        }
        None => generate_name(store, &lock)?,
    };
    let records = store.records()?;
    // Under the lock, so that two containers created at once get different ranges. Every
    // record's range counts, running or not: a stopped container keeps its range.
    let userns = match &spec.userns {
        UsernsRequest::Host => None,
        UsernsRequest::Maps(maps) => Some(maps.clone()),
        UsernsRequest::Auto => Some(userns::allocate(
            userns::base_from_env(std::env::var("BERTH_USERNS_BASE").ok())?,
            records.iter().filter_map(|r| r.config.userns.as_ref()),
        )?),
    };
    let config = spec.into_config(&image, &id, userns)?;
    if !config.ports.is_empty() {
        ports::check_free(
            &config.ports,
            records
                .iter()
                .filter(|r| r.is_active())
                .map(|r| (r.name.as_str(), r.config.ports.as_slice())),
        )?;
    }
    let record = ContainerRecord {
        id,
        name,
        created: clock::now_rfc3339(),
        config,
        state: ContainerState {
            status: Some(Status::Created),
            supervisor: ProcessRef::current(),
            ..ContainerState::default()
        },
    };
    // What killed `berth` processes left: best effort here, `system prune` reports failures.
    let _ = store.sweep(&lock);
    store.create(&lock, &record)?;
    Ok(record)
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

/// A directory inside the container's directory, kept if it exists (a new run of a stopped
/// container reuses its layer). Not recursive: a container directory that is gone (removed
/// meanwhile) must stay gone rather than come back without its record.
fn mkdir(path: PathBuf) -> Result<PathBuf, ContainerError> {
    match fs::DirBuilder::new().mode(0o755).create(&path) {
        Ok(()) => Ok(path),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(path),
        Err(source) => Err(ContainerError::CreateDir { path, source }),
    }
}

/// A container whose command runs.
#[derive(Debug)]
pub struct Started {
    pub init: InitProcess,
    /// With `-t`: the pty master.
    pub terminal: Option<Terminal>,
}

/// Step 2. On error the init (if started) is killed and reaped by `InitProcess`'s drop; the
/// caller runs [`finish`], which releases the rest.
pub fn start(
    store: &Store,
    networks: &Networks,
    record: &ContainerRecord,
    options: SpawnOptions,
) -> Result<Started, ContainerError> {
    let id = &record.id;
    let short = || id.short().to_owned();
    let config = &record.config;
    let dir = store.container_dir(id);
    let images = ImageStore::new(store.images_dir());
    let upper = mkdir(dir.join("upper"))?;
    let work = mkdir(dir.join("work"))?;
    let merged = mkdir(dir.join("merged"))?;

    // With a user namespace, its holder makes the network, UTS and IPC namespaces in it
    // (crate::sandbox::userns); it lives until the init has joined them.
    let userns = config
        .userns
        .as_ref()
        .map(|ns| timing::step("userns", || Holder::spawn(ns)).map(|h| (h, ns)))
        .transpose()?;
    let netns = match config.network {
        NetworkMode::Host => None,
        NetworkMode::None | NetworkMode::Cni(_) => {
            let path = store.netns_path(id);
            timing::step("netns", || match &userns {
                None => namespaces::create_netns(&path),
                Some((holder, _)) => namespaces::adopt_netns(&path, &holder.ns_path("net")),
            })
            .map_err(|source| ContainerError::CreateNetns {
                id: short(),
                source,
            })?;
            Some(path)
        }
    };
    let dns = match &netns {
        Some(path) => timing::step("cni add", || {
            attachments::attach_all(store, networks, record, path)
        })?,
        None => None,
    };
    timing::step("name files", || -> Result<(), ContainerError> {
        let lock = store.lock()?;
        hosts::write_all(store, &lock, id, dns.as_ref())?;
        Ok(())
    })?;

    let layout = Layout::detect().map_err(ContainerError::CgroupLayout)?;
    let cgroup = layout.manager(&config.cgroup_parent, id);
    timing::step("cgroup", || cgroup.create(&config.resources)).map_err(|source| {
        ContainerError::CreateCgroup {
            id: short(),
            source,
        }
    })?;

    // The name files, unless the user mounted something of their own there.
    let mut volumes = config.volumes.clone();
    for (source, destination) in hosts::files(&dir) {
        if !volumes
            .iter()
            .any(|v| v.destination == Path::new(destination))
        {
            volumes.push(Volume {
                source,
                destination: destination.into(),
                read_only: false,
            });
        }
    }
    let rootfs = RootfsSpec {
        lower: images.rootfs(&config.image),
        upper,
        work,
        merged,
        volumes,
        read_only: config.read_only,
        workdir: config.workdir.clone(),
    };

    // The container's root owns its root directory (the upper layer's) and its name files;
    // the init idmaps the image onto `lower`.
    let init_userns = match &userns {
        Some((holder, ns)) => {
            let (uid, gid) = ns.root();
            let owned = [rootfs.upper.clone()]
                .into_iter()
                .chain(hosts::files(&dir).map(|(source, _)| source));
            for path in owned {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(|source| ContainerError::Chown { path, source })?;
            }
            Some(InitUserns {
                holder: holder.process()?,
                root_uid: uid,
                root_gid: gid,
                tty_gid: ns.gid_map.to_host(TTY_GID),
                lower_mount: mkdir(dir.join("lower"))?,
            })
        }
        None => None,
    };

    let start_err = |source| ContainerError::Start {
        id: short(),
        source,
    };
    let mut init = InitProcess::spawn(options).map_err(start_err)?;
    cgroup
        .add_process(init.pid())
        .map_err(|source| ContainerError::JoinCgroup {
            id: short(),
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
        userns: init_userns,
    })
    .map_err(start_err)?;
    let terminal = timing::step("init to exec", || init.wait_exec()).map_err(start_err)?;
    // The init joined the holder's namespaces; they live on with the container.
    drop(userns);

    let pid = init.pid();
    store.update_state(id, |s| {
        s.status = Some(Status::Running);
        s.pid = Some(pid);
        s.pid_start_time = process_start_time(pid);
        s.started_at = Some(clock::now_rfc3339());
    })?;
    Ok(Started { init, terminal })
}

/// The group of ptys inside a container (devpts `gid=5`, as docker and runc).
const TTY_GID: u32 = 5;

/// Step 4: records the exit (so `ps` shows it at once), releases what the container holds,
/// then removes it (`--rm`) or marks it settled. Returns the teardown failures.
pub fn finish(
    store: &Store,
    networks: &Networks,
    record: &ContainerRecord,
    exit_code: i32,
) -> Vec<ContainerError> {
    let mut teardown = Vec::new();
    if let Err(e) = store.update_state(&record.id, |s| {
        s.status = Some(Status::Exited);
        s.exit_code = Some(exit_code);
        s.finished_at = Some(clock::now_rfc3339());
    }) {
        teardown.push(e.into());
    }
    if record.config.auto_remove {
        teardown.extend(dispose(store, networks, &record.id));
        return teardown;
    }
    teardown.extend(release(store, networks, &record.id));
    if let Err(e) = store.update_state(&record.id, |s| s.supervisor = None) {
        teardown.push(e.into());
    }
    teardown
}

/// Releases what a container holds on the host besides its directory: the cgroup (killing
/// leftovers), its CNI attachments (DEL in reverse order; the peers' hosts files follow),
/// the netns file. Idempotent; keeps going and returns every failure.
pub fn release(store: &Store, networks: &Networks, id: &ContainerId) -> Vec<ContainerError> {
    let record = match store.load_if_exists(id) {
        Ok(Some(r)) => r,
        Ok(None) => return Vec::new(),
        Err(e) => return vec![e.into()],
    };
    let short = id.short().to_owned();
    let mut errors = Vec::new();
    match Layout::detect() {
        Ok(layout) => {
            let manager = layout.manager(&record.config.cgroup_parent, id);
            if let Err(source) = timing::step("cgroup destroy", || manager.destroy()) {
                errors.push(ContainerError::RemoveCgroup {
                    id: short.clone(),
                    source,
                });
            }
        }
        Err(e) => errors.push(ContainerError::CgroupLayout(e)),
    }
    errors.extend(
        attachments::detach_all(store, networks, &record)
            .into_iter()
            .map(ContainerError::from),
    );
    // Attachments the record does not name (none, unless the record was damaged): the CNI
    // cache knows what ADD ran for this id.
    if errors.is_empty() {
        errors.extend(
            attachments::release_cached(store, networks, id)
                .1
                .into_iter()
                .map(ContainerError::from),
        );
    }
    let netns = store.netns_path(id);
    if let Err(source) = timing::step("netns remove", || namespaces::remove_netns(&netns)) {
        errors.push(ContainerError::RemoveNetns { id: short, source });
    }
    errors
}

/// Removes a container that runs no more: marks it removing, releases it, deletes it, in the
/// order [`crate::commands::rm`] explains. A record gone meanwhile is success. Returns every
/// failure; the record then stays, marked removing, for the next `rm -f` or `system prune`.
pub fn dispose(store: &Store, networks: &Networks, id: &ContainerId) -> Vec<ContainerError> {
    let marked = store.update_state(id, |s| {
        s.status = Some(Status::Removing);
        s.supervisor = ProcessRef::current();
    });
    match marked {
        Ok(Some(_)) => {}
        Ok(None) => return Vec::new(),
        Err(e) => return vec![e.into()],
    }
    let mut errors = release(store, networks, id);
    if errors.is_empty() {
        if let Err(e) = store.lock().and_then(|lock| store.remove(&lock, id)) {
            errors.push(e.into());
        }
    }
    errors
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
) -> Result<Option<ContainerRecord>, ContainerError> {
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
pub(crate) fn terminate(store: &Store, record: &ContainerRecord) -> Result<(), ContainerError> {
    let Some(record) = wait_until_started(store, record)? else {
        return Ok(());
    };
    let record = &record;
    if let Some(pidfd) = signal_pid1(record, libc::SIGKILL)? {
        let pid = record.state.pid.unwrap_or_default();
        if !pid::wait_pidfd(pidfd.as_fd(), Duration::from_secs(10)) {
            return Err(ContainerError::KillTimeout {
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
pub fn signal_pid1(
    record: &ContainerRecord,
    signal: i32,
) -> Result<Option<OwnedFd>, ContainerError> {
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
        Err(source) => Err(ContainerError::Kill {
            name: record.name.clone(),
            pid,
            signal,
            source,
        }),
    }
}

/// After the container's PID 1 is gone: waits for its supervisor to record the exit and
/// release it; if the supervisor died without doing so (`berth` was killed), does it here
/// (`--rm` containers are then removed, as their supervisor would have).
pub fn settle(store: &Store, networks: &Networks, id: &ContainerId) -> Result<(), ContainerError> {
    let Some(record) = store.load_if_exists(id)? else {
        return Ok(());
    };
    if let Some(supervisor) = record.state.supervisor {
        if ProcessRef::current() != Some(supervisor) {
            wait_process(supervisor, SUPERVISOR_GRACE);
        }
    }
    let Some(record) = store.load_if_exists(id)? else {
        return Ok(());
    };
    let orphaned = !record.is_supervised()
        && record.live_status() != Status::Running
        && (record.state.supervisor.is_some() || !record.state.attachments.is_empty());
    if !orphaned {
        return Ok(());
    }
    // A `--rm` container goes, and so does one whose removal was interrupted.
    let errors = if record.config.auto_remove || record.live_status() == Status::Removing {
        dispose(store, networks, id)
    } else {
        let mut errors = release(store, networks, id);
        let updated = store.update_state(id, |s| {
            s.status = Some(Status::Exited);
            s.supervisor = None;
            s.finished_at.get_or_insert_with(clock::now_rfc3339);
        });
        if let Err(e) = updated {
            errors.push(e.into());
        }
        errors
    };
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ContainerError::Teardown {
            id: id.short().to_owned(),
            errors,
        })
    }
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

/// Descriptors for a child's stdio, as [`SpawnOptions::fds`] takes them.
pub fn raw_fds(fds: [Option<&OwnedFd>; 3]) -> [Option<RawFd>; 3] {
    use std::os::fd::AsRawFd;
    fds.map(|fd| fd.map(AsRawFd::as_raw_fd))
}
