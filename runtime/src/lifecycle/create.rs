//! Creating a container: every check that can refuse bad input, then its record (see
//! [`crate::lifecycle`], step 2).

use berth_image::{ImageError, ImageStore};

use crate::lifecycle::request::{RequestError, RunRequest};
use crate::names::{ContainerId, ContainerName, NameError};
use crate::network::ports::{self, PortError};
use crate::network::{NetworkError, Networks};
use crate::sandbox::cgroups::{self, CgroupError, Layout};
use crate::sandbox::pid::ProcessRef;
use crate::sandbox::userns::{self, UsernsError, UsernsRequest};
use crate::state::clock;
use crate::state::{ContainerRecord, ContainerState, StateError, Status, Store, StoreLock};

/// Errors of the `create` module.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Ports(#[from] PortError),
    #[error(transparent)]
    Userns(#[from] UsernsError),
    #[error("detect the cgroup layout")]
    CgroupLayout(#[source] CgroupError),
    #[error(transparent)]
    Controller(CgroupError),
}

/// Validation, then the record (supervised by the calling process).
pub fn create(
    store: &Store,
    networks: &Networks,
    request: RunRequest,
) -> Result<ContainerRecord, CreateError> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let spec = request.validate(|key| std::env::var(key).ok(), cpus)?;

    let images = ImageStore::new(store.images_dir());
    let image = images.resolve(&spec.image)?;
    let layout = Layout::detect().map_err(CreateError::CgroupLayout)?;
    let id = ContainerId::random()?;
    let cgroup = layout.manager(&spec.cgroup_parent, &id);
    cgroups::check_controllers(cgroup.as_ref(), &spec.resources)
        .map_err(CreateError::Controller)?;
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

fn generate_name(store: &Store, lock: &StoreLock) -> Result<ContainerName, CreateError> {
    let mut last = None;
    for _ in 0..16 {
        let name = ContainerName::generate()?;
        match store.check_name_free(lock, &name) {
            Ok(()) => return Ok(name),
            Err(e) => last = Some(e),
        }
    }
    // 16 collisions in a 65536-wide space: the store is crowded; report the last one.
    Err(CreateError::State(last.unwrap_or_else(|| {
        StateError::NotFound {
            query: "a free container name".into(),
        }
    })))
}
