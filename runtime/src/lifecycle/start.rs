//! Starting a container: from its record to its command running as PID 1 (see
//! [`crate::lifecycle`], step 3).

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use berth_image::{ImageError, ImageStore};

use crate::network::Networks;
use crate::network::attachments::{self, AttachmentError};
use crate::network::hosts::{self, HostsError};
use crate::sandbox::cgroups::{CgroupError, Layout};
use crate::sandbox::init::{InitConfig, InitUserns};
use crate::sandbox::namespaces::{self, NamespaceError};
use crate::sandbox::pid::process_start_time;
use crate::sandbox::process::{self, InitProcess, ProcessError, SpawnOptions, Terminal};
use crate::sandbox::rootfs::{RootfsSpec, Volume};
use crate::sandbox::userns::{Holder, UsernsError};
use crate::state::clock;
use crate::state::{ContainerRecord, MAX_NETWORK_HOPS, NetworkMode, StateError, Status, Store};
use crate::timing;

/// Errors of the `start` module, one variant per step.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("create directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Userns(#[from] UsernsError),
    #[error("create the network namespace of container {id}")]
    CreateNetns {
        id: String,
        #[source]
        source: NamespaceError,
    },
    /// docker's words (`getNetworkedContainer`): `--network container:` needs its target
    /// running at every start.
    #[error("cannot join network of a non running container: {target}")]
    TargetNotRunning { target: String },
    #[error("container {id} joins the network of container {target}, which is gone")]
    TargetGone {
        id: String,
        target: String,
        #[source]
        source: StateError,
    },
    #[error(
        "container {id} joins the network of a chain of more than {MAX_NETWORK_HOPS} containers sharing one namespace"
    )]
    TargetChain { id: String },
    #[error(transparent)]
    Attachment(#[from] AttachmentError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Hosts(#[from] HostsError),
    #[error("detect the cgroup layout")]
    CgroupLayout(#[source] CgroupError),
    #[error("create the cgroup of container {id}")]
    CreateCgroup {
        id: String,
        #[source]
        source: CgroupError,
    },
    #[error("the image of container {id}")]
    Image {
        id: String,
        #[source]
        source: Box<ImageError>,
    },
    #[error("give {path} to the container's root")]
    Chown {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("start container {id}")]
    Start {
        id: String,
        #[source]
        source: ProcessError,
    },
    #[error("move container {id} into its cgroup")]
    JoinCgroup {
        id: String,
        #[source]
        source: CgroupError,
    },
}

impl StartError {
    /// The exit code `berth run` reports: the init's 126/127 as docker reports them, 125 for
    /// everything the runtime itself failed at.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Start { source, .. } => source.exit_code(),
            _ => 125,
        }
    }
}

/// A directory inside the container's directory, kept if it exists (a new run of a stopped
/// container reuses its layer). Not recursive: a container directory that is gone (removed
/// meanwhile) must stay gone rather than come back without its record.
fn mkdir(path: PathBuf) -> Result<PathBuf, StartError> {
    match fs::DirBuilder::new().mode(0o755).create(&path) {
        Ok(()) => Ok(path),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(path),
        Err(source) => Err(StartError::CreateDir { path, source }),
    }
}

/// A container whose command runs.
#[derive(Debug)]
pub struct Started {
    pub init: InitProcess,
    /// With `-t`: the pty master.
    pub terminal: Option<Terminal>,
}

/// Starts the container `record` describes (see [`crate::lifecycle`], step 3). On error the
/// init (if started) is killed and reaped by `InitProcess`'s drop; the caller runs
/// [`finish`](crate::lifecycle::release::finish), which releases the rest.
pub fn start(
    store: &Store,
    networks: &Networks,
    record: &ContainerRecord,
    options: SpawnOptions,
) -> Result<Started, StartError> {
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
    let owner = network_owner(store, record)?;
    let netns = match &config.network {
        NetworkMode::Host => None,
        // The owner's namespace file, kept under --runroot while it runs; nothing is
        // attached: its interfaces are the owner's.
        NetworkMode::Container(_) => match owner.as_ref().map(|o| (&o.config.network, &o.id)) {
            Some((NetworkMode::Host, _)) | None => None,
            Some((_, owner_id)) => Some(store.netns_path(owner_id)),
        },
        NetworkMode::None | NetworkMode::Cni(_) => {
            let path = store.netns_path(id);
            timing::step("netns", || match &userns {
                None => namespaces::create_netns(&path),
                Some((holder, _)) => namespaces::adopt_netns(&path, &holder.ns_path("net")),
            })
            .map_err(|source| StartError::CreateNetns {
                id: short(),
                source,
            })?;
            Some(path)
        }
    };
    // The name files: its own, or (docker's rule for a shared namespace) the owner's,
    // mounted as they are so that the owner's rewrites show.
    let names_dir = match &owner {
        Some(owner) => store.container_dir(&owner.id),
        None => {
            let dns = match &netns {
                Some(path) => timing::step("cni add", || {
                    attachments::attach_all(store, networks, record, path)
                })?,
                None => None,
            };
            timing::step("name files", || -> Result<(), StartError> {
                if config.network.networks().is_empty() {
                    hosts::write_unattached(store, record, dns.as_ref())?;
                } else {
                    let lock = store.lock()?;
                    hosts::write_all(store, &lock, id, dns.as_ref())?;
                }
                Ok(())
            })?;
            dir.clone()
        }
    };

    let layout = Layout::detect().map_err(StartError::CgroupLayout)?;
    let cgroup = layout.manager(&config.cgroup_parent, id);
    timing::step("cgroup", || cgroup.create(&config.resources)).map_err(|source| {
        StartError::CreateCgroup {
            id: short(),
            source,
        }
    })?;

    // The name files, unless the user mounted something of their own there.
    let mut volumes = config.volumes.clone();
    for (source, destination) in hosts::files(&names_dir) {
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
    // The image's layers (by the id recorded at create: a tag moved since does not change
    // the container), the overlay's lower directories.
    let lowers = match &config.image_id {
        Some(image_id) => images.lower_dirs(image_id),
        None => images
            .resolve(&config.image)
            .and_then(|image| images.lower_dirs(&image.id)),
    }
    .map_err(|source| StartError::Image {
        id: short(),
        source: Box::new(source),
    })?;
    let rootfs = RootfsSpec {
        lowers,
        upper,
        work,
        merged,
        volumes,
        read_only: config.read_only,
        workdir: config.workdir.clone(),
        privileged: config.privileged,
    };

    // The container's root owns its root directory (the upper layer's) and its name files;
    // the init idmaps the image's layers.
    let init_userns = match &userns {
        Some((holder, ns)) => {
            let (uid, gid) = ns.root();
            let owned = [rootfs.upper.clone()]
                .into_iter()
                .chain(hosts::files(&names_dir).map(|(source, _)| source));
            for path in owned {
                std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                    .map_err(|source| StartError::Chown { path, source })?;
            }
            Some(InitUserns {
                holder: holder.process()?,
                root_uid: uid,
                root_gid: gid,
                tty_gid: ns.gid_map.to_host(TTY_GID),
            })
        }
        None => None,
    };

    let start_err = |source| StartError::Start {
        id: short(),
        source,
    };
    let mut init = InitProcess::spawn(options).map_err(start_err)?;
    cgroup
        .add_process(init.pid())
        .map_err(|source| StartError::JoinCgroup {
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
        user: config.user.clone(),
        privileged: config.privileged,
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

/// For `--network container:X`, the container that owns the namespace it joins: X, or
/// what X itself joins (docker allows such chains). Every container on the way must run,
/// as docker requires of X at each start. `None` for the other modes.
fn network_owner(
    store: &Store,
    record: &ContainerRecord,
) -> Result<Option<ContainerRecord>, StartError> {
    let mut owner: Option<ContainerRecord> = None;
    for _ in 0..=MAX_NETWORK_HOPS {
        let current = owner.as_ref().unwrap_or(record);
        let next = match store.network_target(current) {
            None => return Ok(owner),
            Some(next) => next.map_err(|source| StartError::TargetGone {
                id: record.id.short().to_owned(),
                target: current
                    .config
                    .network
                    .container()
                    .unwrap_or_default()
                    .to_owned(),
                source,
            })?,
        };
        if next.live_status() != Status::Running {
            return Err(StartError::TargetNotRunning {
                target: next.name.to_string(),
            });
        }
        owner = Some(next);
    }
    Err(StartError::TargetChain {
        id: record.id.short().to_owned(),
    })
}

/// The group of ptys inside a container (devpts `gid=5`, as docker and runc).
const TTY_GID: u32 = 5;
