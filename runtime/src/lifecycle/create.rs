//! Creating a container: every check that can refuse bad input, then its record (see
//! [`crate::lifecycle`], step 2).

use std::path::PathBuf;

use berth_image::{DEFAULT_PATH, Image, ImageError, ImageStore};

use crate::lifecycle::request::{RequestError, RunRequest, RunSpec, is_clean_absolute, set_env};
use crate::names::{ContainerId, ContainerName, NameError};
use crate::network::ports::{self, PortError};
use crate::network::{NetworkError, Networks};
use crate::sandbox::cgroups::{self, CgroupError, Layout};
use crate::sandbox::pid::ProcessRef;
use crate::sandbox::userns::{self, UserNamespace, UsernsError, UsernsRequest};
use crate::state::clock;
use crate::state::{
    ContainerConfig, ContainerRecord, ContainerState, StateError, Status, Store, StoreLock,
};

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
    let config = container_config(spec, &image, &id, userns)?;
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

/// The stored configuration: the validated request with the image's defaults applied:
/// argv = entrypoint + (command or the image's cmd), the environment (PATH, HOSTNAME, the
/// image's, `-e`, HOME, TERM with `-t`; later wins), the working directory, and the short id
/// as hostname. `userns` is what the request resolved to (`--userns=auto` is allocated under
/// the store lock).
fn container_config(
    spec: RunSpec,
    image: &Image,
    id: &ContainerId,
    userns: Option<UserNamespace>,
) -> Result<ContainerConfig, RequestError> {
    let mut args = image.entrypoint().to_vec();
    if spec.command.is_empty() {
        args.extend(image.cmd().iter().cloned());
    } else {
        args.extend(spec.command);
    }
    if args.is_empty() {
        return Err(RequestError::NoCommand { image: spec.image });
    }
    let hostname = spec.hostname.unwrap_or_else(|| id.short().to_owned());

    let mut env: Vec<(String, String)> = vec![
        ("PATH".into(), DEFAULT_PATH.into()),
        ("HOSTNAME".into(), hostname.clone()),
    ];
    let image_env = image
        .env()
        .iter()
        .filter_map(|e| e.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())));
    for (key, value) in image_env.chain(spec.env) {
        set_env(&mut env, key, value);
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), "/root".into()));
    }
    if spec.tty && !env.iter().any(|(k, _)| k == "TERM") {
        env.push(("TERM".into(), "xterm".into()));
    }

    let workdir = spec
        .workdir
        .or_else(|| {
            image
                .workdir()
                .map(PathBuf::from)
                .filter(|w| is_clean_absolute(w))
        })
        .unwrap_or_else(|| PathBuf::from("/"));

    Ok(ContainerConfig {
        image: spec.image,
        image_id: Some(image.id.clone()),
        args,
        env: env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
        workdir,
        hostname,
        volumes: spec.volumes,
        network: spec.network,
        ports: spec.ports,
        ip: spec.ip,
        mac: spec.mac,
        resources: spec.resources,
        read_only: spec.read_only,
        capabilities: spec.capabilities,
        cgroup_parent: spec.cgroup_parent,
        interactive: spec.interactive,
        tty: spec.tty,
        auto_remove: spec.auto_remove,
        detach: spec.detach,
        userns,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use berth_image::oci::RunConfig;
    use berth_image::{Image, ImageConfig};

    use super::*;
    use crate::lifecycle::request::DEFAULT_CGROUP_PARENT;

    #[test]
    fn config_merges_image_defaults() {
        let image = Image::of_config(ImageConfig {
            config: RunConfig {
                cmd: Some(vec!["sh".into()]),
                env: Some(vec!["PATH=/bin".into(), "IMG=1".into()]),
                working_dir: Some("/srv".into()),
                ..RunConfig::default()
            },
            ..ImageConfig::default()
        });
        let id = ContainerId::try_from("12".repeat(32).as_str()).unwrap();
        let spec = RunRequest {
            image_and_command: vec!["busybox".into()],
            env: vec!["IMG=2".into(), "X=y".into()],
            tty: true,
            ..RunRequest::default()
        }
        .validate(|_| None, 2)
        .unwrap();
        let config = container_config(spec, &image, &id, None).unwrap();
        assert_eq!(config.args, vec!["sh"]);
        assert_eq!(config.hostname, "121212121212");
        assert_eq!(config.workdir, Path::new("/srv"));
        assert_eq!(
            config.env,
            vec![
                "PATH=/bin",
                "HOSTNAME=121212121212",
                "IMG=2",
                "X=y",
                "HOME=/root",
                "TERM=xterm"
            ]
        );
        assert_eq!(config.cgroup_parent, DEFAULT_CGROUP_PARENT);
    }
}
