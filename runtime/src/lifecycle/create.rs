//! Creating a container: every check that can refuse bad input, then its record (see
//! [`crate::lifecycle`], step 2).

use std::path::PathBuf;

use berth_image::{DEFAULT_PATH, Image, ImageError, ImageStore};

use crate::lifecycle::request::{RequestError, RunRequest, RunSpec, is_clean_absolute, set_env};
use crate::lifecycle::signal;
use crate::names::{ContainerId, ContainerName, NameError};
use crate::network::ports::{self, PortError, PortMapping, PublishAllError};
use crate::network::{NetworkError, Networks};
use crate::sandbox::cgroups::{self, CgroupError, Layout};
use crate::sandbox::pid::ProcessRef;
use crate::sandbox::user::UserSpec;
use crate::sandbox::userns::{self, UserNamespace, UsernsError, UsernsRequest};
use crate::state::clock;
use crate::state::{
    ContainerConfig, ContainerRecord, ContainerState, NetworkMode, StateError, Status, Store,
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
    PublishAll(#[from] PublishAllError),
    #[error(transparent)]
    Userns(#[from] UsernsError),
    #[error("detect the cgroup layout")]
    CgroupLayout(#[source] CgroupError),
    #[error(transparent)]
    Controller(CgroupError),
    /// docker's words (`getNetworkedContainer`).
    #[error("cannot join network of a non running container: {target}")]
    TargetNotRunning { target: String },
}

/// Validation, then the record (supervised by the calling process).
pub fn create(
    store: &Store,
    networks: &Networks,
    request: RunRequest,
) -> Result<ContainerRecord, CreateError> {
    let mut created = create_all(store, networks, vec![request]).map_err(|(_, e)| e)?;
    created.pop().ok_or_else(|| {
        CreateError::State(StateError::NotFound {
            query: "the container just created".into(),
        })
    })
}

/// Several containers at once (the nodes of a lab): each request validated, then all
/// records made under one hold of the store lock and one read of the records, each checked
/// against the ones before it (names, user namespace ranges, ports), and written with one
/// round of fsyncs. The store lock is what every container start waits for; created one by
/// one, N containers read the records N times and wait for 3·N fsyncs under it. All or
/// nothing: on an error (with the index of the request it concerns) none is left.
pub fn create_all(
    store: &Store,
    networks: &Networks,
    requests: Vec<RunRequest>,
) -> Result<Vec<ContainerRecord>, (usize, CreateError)> {
    let checked = requests
        .into_iter()
        .enumerate()
        .map(|(i, r)| check(store, networks, r).map_err(|e| (i, e)))
        .collect::<Result<Vec<_>, _>>()?;
    let lock = store.lock().map_err(|e| (0, e.into()))?;
    let mut records = store.records().map_err(|e| (0, e.into()))?;
    let mut created = Vec::with_capacity(checked.len());
    for (i, c) in checked.into_iter().enumerate() {
        let record = record_of(store, &records, c).map_err(|e| (i, e))?;
        records.push(record.clone());
        created.push(record);
    }
    // What killed `berth` processes left: best effort here, `system prune` reports failures.
    let _ = store.sweep(&lock);
    store
        .create_all(&lock, &created)
        .map_err(|(i, e)| (i, e.into()))?;
    Ok(created)
}

/// A request validated against everything but the other containers.
struct Checked {
    spec: RunSpec,
    image: Image,
    id: ContainerId,
}

/// The checks that need no lock: the request itself, its image, cgroup controllers and
/// networks.
fn check(store: &Store, networks: &Networks, request: RunRequest) -> Result<Checked, CreateError> {
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
    let publishes = !spec.ports.is_empty()
        || (spec.publish_all && !image.run_config().exposed_ports.is_empty());
    networks.check_capabilities(&loaded, publishes, spec.mac.is_some(), spec.ip)?;
    Ok(Checked { spec, image, id })
}

/// The record of a checked request, checked against `records` (every container, read
/// under the store lock the caller holds): its name, user namespace range, network owner and
/// ports.
fn record_of(
    store: &Store,
    records: &[ContainerRecord],
    checked: Checked,
) -> Result<ContainerRecord, CreateError> {
    let Checked { spec, image, id } = checked;
    let name = match spec.name.clone() {
        Some(name) => {
            name_free(records, &name)?;
            name
        }
        None => generate_name(records)?,
    };
    // Every record's range counts, running or not: a stopped container keeps its range.
    let userns = match &spec.userns {
        UsernsRequest::Host => None,
        UsernsRequest::Maps(maps) => Some(maps.clone()),
        UsernsRequest::Auto => Some(userns::allocate(
            userns::base_from_env(std::env::var("BERTH_USERNS_BASE").ok())?,
            records.iter().filter_map(|r| r.config.userns.as_ref()),
        )?),
    };
    let mut spec = spec;
    if let NetworkMode::Container(target) = &spec.network {
        // As docker: the target must exist and run; the record keeps its full id (a name
        // can be given to another container later), and the hostname is the target's, as
        // are the name files it will share (crate::lifecycle::start).
        let target = store.find(target)?;
        if target.live_status() != Status::Running {
            return Err(CreateError::TargetNotRunning {
                target: target.name.to_string(),
            });
        }
        spec.hostname = Some(target.config.hostname.clone());
        spec.network = NetworkMode::Container(target.id.to_string());
    }
    let mut config = container_config(spec, &image, &id, userns)?;
    if config.publish_all {
        let taken: Vec<PortMapping> = records
            .iter()
            .filter(|r| r.is_active())
            .flat_map(|r| r.config.ports.iter().copied())
            .collect();
        ports::publish_exposed(&mut config.ports, &config.exposed_ports, &taken)?;
    }
    if !config.ports.is_empty() {
        ports::check_free(
            &config.ports,
            records
                .iter()
                .filter(|r| r.is_active())
                .map(|r| (r.name.as_str(), r.config.ports.as_slice())),
        )?;
    }
    Ok(ContainerRecord {
        id,
        name,
        created: clock::now_rfc3339(),
        config,
        state: ContainerState {
            status: Some(Status::Created),
            supervisor: ProcessRef::current(),
            ..ContainerState::default()
        },
    })
}

fn name_free(records: &[ContainerRecord], name: &ContainerName) -> Result<(), StateError> {
    match records.iter().find(|r| &r.name == name) {
        Some(r) => Err(StateError::NameInUse {
            name: name.clone(),
            id: r.id.clone(),
        }),
        None => Ok(()),
    }
}

fn generate_name(records: &[ContainerRecord]) -> Result<ContainerName, CreateError> {
    let mut last = None;
    for _ in 0..16 {
        let name = ContainerName::generate()?;
        match name_free(records, &name) {
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
/// image's, `-e`, TERM with `-t`; later wins), the working directory, the short id as
/// hostname, the user, exposed ports, stop signal and labels (`-u`, `--stop-signal` and
/// `--label` win over the image's). `userns` is what the request resolved to (`--userns=auto` is allocated under
/// the store lock).
fn container_config(
    spec: RunSpec,
    image: &Image,
    id: &ContainerId,
    userns: Option<UserNamespace>,
) -> Result<ContainerConfig, CreateError> {
    // Docker's rule: `--entrypoint` replaces the image's entrypoint (`""` clears it) and
    // then the image's `Cmd` is not used either, only a command given to `run`.
    let (entrypoint, default_cmd) = match spec.entrypoint.as_deref() {
        Some("") => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.to_owned()], Vec::new()),
        None => (image.entrypoint().to_vec(), image.cmd().to_vec()),
    };
    let mut args = entrypoint;
    if spec.command.is_empty() {
        args.extend(default_cmd);
    } else {
        args.extend(spec.command);
    }
    if args.is_empty() {
        return Err(RequestError::NoCommand { image: spec.image }.into());
    }
    let run_config = image.run_config();
    let user = match spec.user {
        Some(user) => Some(user),
        None => match run_config.user.as_deref().filter(|u| !u.is_empty()) {
            Some(user) => {
                UserSpec::parse(user).map_err(|source| RequestError::ImageUser {
                    user: user.to_owned(),
                    source,
                })?;
                Some(user.to_owned())
            }
            None => None,
        },
    };
    let stop_signal = match spec.stop_signal {
        Some(signal) => Some(signal),
        None => match run_config.stop_signal.as_deref().filter(|s| !s.is_empty()) {
            Some(input) => Some(
                signal::parse_signal(input)
                    .and_then(signal::signal_name)
                    .map(str::to_owned)
                    .ok_or_else(|| RequestError::ImageStopSignal {
                        input: input.to_owned(),
                    })?,
            ),
            None => None,
        },
    };
    // Exposure alone is documentation: a key Berth cannot publish (sctp) is only an error
    // when `-P` asks to publish it.
    let mut exposed_ports = Vec::new();
    for key in run_config.exposed_ports.keys() {
        match ports::parse_exposed(key) {
            Ok(list) => exposed_ports.extend(list),
            Err(problem) if spec.publish_all => {
                return Err(PublishAllError::Exposed {
                    key: key.clone(),
                    problem,
                }
                .into());
            }
            Err(_) => {}
        }
    }
    let mut labels = run_config.labels.clone().unwrap_or_default();
    labels.extend(spec.labels);
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
    // HOME, unless set here, comes from the user's passwd entry when the container starts
    // (crate::sandbox::user), as docker does.
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
        user,
        exposed_ports,
        publish_all: spec.publish_all,
        stop_signal,
        labels,
        privileged: spec.privileged,
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
                "TERM=xterm"
            ]
        );
        assert_eq!(config.cgroup_parent, DEFAULT_CGROUP_PARENT);
        // Without a user, ports, stop signal or labels, none of their keys is written: a
        // record written before they existed reads the same.
        let json = serde_json::to_value(&config).unwrap();
        for key in ["user", "exposedPorts", "publishAll", "stopSignal", "labels"] {
            assert!(json.get(key).is_none(), "{key}");
        }
        assert_eq!(
            serde_json::from_value::<ContainerConfig>(json).unwrap(),
            config
        );
    }

    #[test]
    fn config_takes_user_ports_signal_and_labels_from_the_image() {
        let image = Image::of_config(ImageConfig {
            config: RunConfig {
                user: Some("app".into()),
                entrypoint: Some(vec!["/bin/sh".into(), "-c".into()]),
                cmd: Some(vec!["echo hi".into()]),
                exposed_ports: [
                    ("8080/tcp".to_owned(), serde_json::json!({})),
                    ("9/sctp".to_owned(), serde_json::json!({})),
                ]
                .into(),
                stop_signal: Some("quit".into()),
                labels: Some(
                    [
                        ("a".to_owned(), "1".to_owned()),
                        ("b".to_owned(), "2".to_owned()),
                    ]
                    .into(),
                ),
                ..RunConfig::default()
            },
            ..ImageConfig::default()
        });
        let id = ContainerId::try_from("34".repeat(32).as_str()).unwrap();
        let config = |args: &[&str]| {
            let mut words = vec!["run"];
            words.extend_from_slice(args);
            let request = <RunArgsForTest as clap::Parser>::try_parse_from(words)
                .unwrap()
                .request;
            container_config(request.validate(|_| None, 2).unwrap(), &image, &id, None)
        };
        let c = config(&["busybox"]).unwrap();
        assert_eq!(c.args, ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(c.user.as_deref(), Some("app"));
        assert_eq!(c.stop_signal.as_deref(), Some("SIGQUIT"));
        // sctp cannot be published, which only matters with -P.
        assert_eq!(c.exposed_ports.len(), 1);
        assert_eq!(c.labels["a"], "1");
        let c = config(&[
            "-u",
            "0",
            "--stop-signal",
            "9",
            "-l",
            "b=3",
            "--entrypoint",
            "env",
            "busybox",
        ])
        .unwrap();
        assert_eq!(c.args, ["env"]);
        assert_eq!(c.user.as_deref(), Some("0"));
        assert_eq!(c.stop_signal.as_deref(), Some("SIGKILL"));
        assert_eq!((c.labels["a"].as_str(), c.labels["b"].as_str()), ("1", "3"));
        assert!(matches!(
            config(&["-P", "busybox"]),
            Err(CreateError::PublishAll(PublishAllError::Exposed { .. }))
        ));
    }

    /// `berth run`'s flags as the binary parses them.
    #[derive(clap::Parser)]
    #[command(disable_help_flag = true)]
    struct RunArgsForTest {
        #[command(flatten)]
        request: RunRequest,
    }

    /// Nodes of a lab: created under one lock, checked against each other; a clash leaves
    /// none of them. Needs the host's busybox (the default image is built from it).
    #[test]
    fn create_all_checks_the_batch_against_itself_and_is_all_or_nothing() {
        if berth_image::busybox::HostBusybox::probe().is_err() {
            eprintln!("skipped: no busybox-static on this host (the default image needs it)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(&tmp.path().join("root"), &tmp.path().join("run")).unwrap();
        let defaults = crate::network::DefaultNetwork::from_env(|_| None).unwrap();
        let networks = Networks::new(&store, Vec::new(), defaults);
        let node = |name: &str| RunRequest {
            name: Some(name.into()),
            networks: vec!["none".into()],
            image_and_command: vec!["busybox".into(), "true".into()],
            ..RunRequest::default()
        };

        let made = create_all(&store, &networks, vec![node("a"), node("b")]).unwrap();
        let names: Vec<&str> = made.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_ne!(made[0].id, made[1].id);
        // Records are listed by creation time, then id: compare by name.
        let stored = || {
            let mut records = store.records().unwrap();
            records.sort_by(|x, y| x.name.as_str().cmp(y.name.as_str()));
            records
        };
        assert_eq!(stored(), made);

        // "d" clashes with the one before it in the batch, "a" with the store.
        for (batch, clash) in [(vec!["c", "d", "d"], 2), (vec!["c", "a"], 1)] {
            let requests = batch.iter().map(|n| node(n)).collect();
            let (index, error) = create_all(&store, &networks, requests).unwrap_err();
            assert_eq!(index, clash);
            assert!(
                matches!(error, CreateError::State(StateError::NameInUse { .. })),
                "{error:?}"
            );
            assert_eq!(stored(), made, "nothing of the batch is left");
        }
        let left: Vec<_> = std::fs::read_dir(store.containers_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 2, "no staging directory left: {left:?}");
    }
}
