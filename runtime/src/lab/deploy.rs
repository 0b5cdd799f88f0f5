//! `berth lab deploy` and its mirror `destroy`.
//!
//! Deploy, top down: check the whole lab against what exists (names of containers,
//! `/run/netns` entries and host links must be free), make sure every image is in the store
//! (pulled with the default policy), write the plan ([`LabState`]: everything the deploy may
//! create), then create bridges, start the nodes (privileged containers, several at once),
//! name their namespaces, wire the links, and finally run each node's `exec:` commands.
//! Any failure after the plan is written runs `destroy` on the plan and reports the cause
//! (and what destroy could not remove). Destroy removes whatever of the plan exists and
//! keeps going past failures, reporting them all.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_image::Reference;
use berth_netlink::{Netlink, Netns, error_chain};
use berth_topology::{Attach, Kind, LinkKind, NetworkMode, Node, NodeName, Topology};

use crate::commands::image::{self, ImageCommandError, PullPolicy, PullSpec};
use crate::commands::network as network_cmd;
use crate::commands::rm::{self, RmError, Sweep};
use crate::commands::run::{self, RunError};
use crate::lab::exec::{self, ExecOutput, Target};
use crate::lab::netns_names::{self, NetnsNameError};
use crate::lab::source::Loaded;
use crate::lab::state::{self, LabState, LabStateError};
use crate::lab::wire::{self, End, Sockets, WireError};
use crate::lifecycle::create;
use crate::lifecycle::request::RunRequest;
use crate::network::definition::NetworkRequest;
use crate::network::{NetworkError, Networks};
use crate::state::{ContainerRecord, StateError, Store};
use crate::timing;

/// Errors of `lab deploy` and `lab destroy`.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    State(#[from] LabStateError),
    #[error("lab {name} is deployed already: destroy it first, or deploy with --reconfigure")]
    Deployed { name: String },
    #[error("{at}node {node}: {what} is not supported by berth lab yet")]
    Unsupported {
        at: String,
        node: String,
        what: String,
    },
    #[error("node {node}: a container named {name} exists already")]
    NameTaken { node: String, name: String },
    #[error("node {node}")]
    NetnsName {
        node: String,
        #[source]
        source: NetnsNameError,
    },
    #[error("{what} {name} exists already in the host namespace")]
    HostLinkTaken { what: &'static str, name: String },
    #[error("{at}node {node}: image {image:?}")]
    Reference {
        at: String,
        node: String,
        image: String,
        #[source]
        source: berth_image::ReferenceError,
    },
    #[error("{at}node {node}: image {image}")]
    Image {
        at: String,
        node: String,
        image: String,
        #[source]
        source: Box<ImageCommandError>,
    },
    #[error("management network {name}")]
    Network {
        name: String,
        #[source]
        source: Box<NetworkError>,
    },
    #[error("{at}node {node}: start container {name}")]
    Node {
        at: String,
        node: String,
        name: String,
        #[source]
        source: Box<RunError>,
    },
    #[error("{at}node {node}: env-file {path}")]
    EnvFile {
        at: String,
        node: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("find container {name}")]
    Find {
        name: String,
        #[source]
        source: StateError,
    },
    #[error("sweep what a killed berth left in the store")]
    Sweep(#[source] StateError),
    #[error("host namespace")]
    HostNetns(#[source] berth_netlink::NetnsError),
    #[error("{at}link {link}")]
    Wire {
        at: String,
        link: String,
        #[source]
        source: WireError,
    },
    #[error("bridge node {node}")]
    Bridge {
        node: String,
        #[source]
        source: WireError,
    },
    #[error("node {node}: sysctl {key}={value}")]
    Sysctl {
        node: String,
        key: String,
        value: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `--reconfigure` could not remove the lab deployed before (every failure named).
    #[error("--reconfigure: destroy the deployed lab {lab}: {}", join(errors))]
    Reconfigure {
        lab: String,
        errors: Vec<DeployError>,
    },
    /// The deploy failed, and destroying what it had made failed too.
    #[error("{}; destroying the partial lab also failed: {}", error_chain(error.as_ref()), join(teardown))]
    Rollback {
        error: Box<DeployError>,
        teardown: Vec<DeployError>,
    },
    #[error("remove container {name}")]
    Remove {
        name: String,
        #[source]
        source: Box<RmError>,
    },
    #[error("remove the network namespace name {name}")]
    Unlink {
        name: String,
        #[source]
        source: NetnsNameError,
    },
    #[error("remove {what} {name}")]
    Unwire {
        what: &'static str,
        name: String,
        #[source]
        source: WireError,
    },
    #[error("remove management network {name}")]
    RemoveNetwork {
        name: String,
        #[source]
        source: Box<NetworkError>,
    },
    #[error(transparent)]
    Impair(#[from] crate::lab::impair::LabImpairError),
}

/// Errors on one line, each with its causes.
pub fn join(errors: &[DeployError]) -> String {
    errors
        .iter()
        .map(|e| error_chain(e))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Flags of `lab deploy` beyond the topology.
#[derive(Debug, Clone, Default)]
pub struct DeployOptions {
    /// Destroy a deployed lab of the same name first.
    pub reconfigure: bool,
    /// Cgroup parent of the nodes (the runtime's default when `None`).
    pub cgroup_parent: Option<String>,
    /// `--registries-config`, for pulling node images.
    pub registries_config: Option<PathBuf>,
    /// Nodes started at once.
    pub parallel: usize,
    /// When node images are pulled (as `run --pull`).
    pub pull: PullPolicy,
}

/// What a deploy made, for the caller to print.
#[derive(Debug)]
pub struct Deployed {
    pub state: LabState,
    /// Per node (in order), the output of each `exec:` command.
    pub exec: Vec<ExecOutput>,
}

/// One linux node as deployed.
#[derive(Clone)]
struct Planned<'a> {
    node: &'a Node,
    container: String,
}

/// `line:column: ` of a node in the file, for messages.
fn node_at(t: &Topology, node: &NodeName) -> String {
    let file = t.source.file.as_deref().map(Path::display);
    match (t.source.nodes.get(node), file) {
        (Some(pos), Some(file)) => format!("{file}:{}:{}: ", pos.line, pos.column),
        (Some(pos), None) => format!("line {}: ", pos.line),
        _ => String::new(),
    }
}

fn link_at(t: &Topology, index: usize) -> String {
    let file = t.source.file.as_deref().map(Path::display);
    match (t.source.links.get(index), file) {
        (Some(pos), Some(file)) => format!("{file}:{}:{}: ", pos.line, pos.column),
        (Some(pos), None) => format!("line {}: ", pos.line),
        _ => String::new(),
    }
}

/// The name of a link for messages: `r1:eth1 <-> r2:eth1`.
pub fn link_name(t: &Topology, index: usize) -> String {
    t.links.get(index).map_or_else(String::new, |l| {
        format!(
            "{}:{} <-> {}:{}",
            l.endpoints[0].attach.as_str(),
            l.endpoints[0].ifname,
            l.endpoints[1].attach.as_str(),
            l.endpoints[1].ifname
        )
    })
}

/// The management network's name when the lab has one (containerlab's default `clab`).
fn mgmt_network(t: &Topology) -> Option<String> {
    t.mgmt
        .as_ref()
        .map(|m| m.network.clone().unwrap_or_else(|| "clab".to_owned()))
}

/// `berth lab deploy`.
pub fn deploy(
    store: &Store,
    networks: &Networks,
    loaded: &Loaded,
    options: &DeployOptions,
) -> Result<Deployed, DeployError> {
    let t = &loaded.topology;
    let lab = t.name.to_string();
    if let Some(existing) = LabState::load_if_exists(store.root(), &lab)? {
        if !options.reconfigure {
            return Err(DeployError::Deployed { name: lab });
        }
        destroy(store, networks, &existing).map_err(|errors| DeployError::Reconfigure {
            lab: lab.clone(),
            errors,
        })?;
    }

    // 1. Checks against what exists; nothing is created before they all pass.
    let planned = timing::step("lab plan", || plan_nodes(store, t))?;
    let host = Netlink::open_current().map_err(|source| DeployError::Wire {
        at: String::new(),
        link: "host namespace".into(),
        source: WireError::Open {
            netns: "host".into(),
            source: Box::new(source),
        },
    })?;
    let mut host_links = Vec::new();
    let mut bridges = Vec::new();
    for node in t.nodes.values().filter(|n| n.kind == Kind::Bridge) {
        let exists =
            wire::exists(&host, node.name.as_str()).map_err(|source| DeployError::Bridge {
                node: node.name.to_string(),
                source,
            })?;
        if !exists {
            bridges.push(node.name.to_string());
        }
    }
    for link in &t.links {
        for end in &link.endpoints {
            if in_host(t, &end.attach) {
                let name = end.ifname.to_string();
                let taken = wire::exists(&host, &name).map_err(|source| DeployError::Bridge {
                    node: end.attach.as_str().to_owned(),
                    source,
                })?;
                if taken {
                    return Err(DeployError::HostLinkTaken { what: "link", name });
                }
                host_links.push(name);
            }
        }
    }
    // Impaired ends that cannot be impaired (host side) are refused before anything exists.
    crate::lab::impair::planned(t)?;

    // 2. Images, before anything is created: a missing one is a clean error.
    timing::step("lab images", || ensure_images(store, t, &planned, options))?;

    // 3. The plan, written before the first object exists.
    let mut state = LabState {
        name: lab.clone(),
        file: loaded.file.clone(),
        containers: planned.iter().map(|p| p.container.clone()).collect(),
        netns_names: planned
            .iter()
            .filter(|p| {
                p.node.network_mode.is_none() || p.node.network_mode == Some(NetworkMode::None)
            })
            .map(|p| p.container.clone())
            .collect(),
        host_links,
        bridges,
        network: None,
        cgroup_parent: options.cgroup_parent.clone(),
        complete: false,
        saved_peers: Vec::new(),
    };
    if let Some(net) = mgmt_network(t) {
        if !networks
            .config_dir()
            .join(format!("{net}.conflist"))
            .exists()
        {
            state.network = Some(net);
        }
    }
    state.save(store.root())?;
    state.save_topology(
        store.root(),
        &berth_topology::render::save(t, &Default::default()),
    )?;

    // 4. Everything else; on failure, destroy what the plan names.
    match build(store, networks, loaded, &planned, &state, &host, options) {
        Ok(()) => {}
        Err(error) => {
            return Err(match destroy(store, networks, &state) {
                Ok(()) => error,
                Err(teardown) => DeployError::Rollback {
                    error: Box::new(error),
                    teardown,
                },
            });
        }
    }
    state.complete = true;
    state.save(store.root())?;

    // 5. `exec:` commands, once every link exists.
    let targets: Vec<Target> = planned
        .iter()
        .map(|p| Target {
            node: p.node.name.to_string(),
            container: p.container.clone(),
        })
        .collect();
    let exec = timing::step("lab exec", || {
        exec::run(store, &targets, |target| {
            t.nodes
                .get(target.node.as_str())
                .map(exec::commands_of)
                .unwrap_or_default()
        })
    });
    Ok(Deployed { state, exec })
}

/// Whether an endpoint lives in the lab's host namespace (a bridge port or `host:IF`).
fn in_host(t: &Topology, attach: &Attach) -> bool {
    match attach {
        Attach::Host | Attach::MgmtNet => true,
        Attach::Node(n) => t
            .nodes
            .get(n)
            .is_some_and(|n| n.kind == Kind::Bridge || n.network_mode == Some(NetworkMode::Host)),
    }
}

/// Every container record of the store, by name.
fn containers_by_name(store: &Store) -> Result<BTreeMap<String, ContainerRecord>, DeployError> {
    store.records_by_name().map_err(|source| DeployError::Find {
        name: "the store's containers".into(),
        source,
    })
}

/// The linux nodes with their container names, checked to be free.
fn plan_nodes<'a>(store: &Store, t: &'a Topology) -> Result<Vec<Planned<'a>>, DeployError> {
    let mut planned = Vec::new();
    // The records are read once, not once per node (a 50-node lab read 2,500 of them).
    let taken = containers_by_name(store)?;
    for node in t.nodes.values().filter(|n| n.kind == Kind::Linux) {
        let at = node_at(t, &node.name);
        let unsupported = |what: String| DeployError::Unsupported {
            at: at.clone(),
            node: node.name.to_string(),
            what,
        };
        if let Some(NetworkMode::Container(other)) = &node.network_mode {
            // The namespace of another node of the lab, whose links then land in it;
            // berth-topology refused loops and checked interface names per namespace.
            let owner = t.netns_owner(&node.name).and_then(|o| t.nodes.get(o));
            match owner {
                Some(o) if o.kind == Kind::Linux && o.network_mode != Some(NetworkMode::Host) => {}
                _ => {
                    return Err(unsupported(format!(
                        "network-mode container:{other} (only the namespace of a linux node of the lab with one of its own)"
                    )));
                }
            }
        }
        let container = t
            .container_name(&node.name)
            .map_err(|e| unsupported(e.to_string()))?
            .to_string();
        if taken.contains_key(&container) {
            return Err(DeployError::NameTaken {
                node: node.name.to_string(),
                name: container,
            });
        }
        netns_names::check_free(&container, None).map_err(|source| DeployError::NetnsName {
            node: node.name.to_string(),
            source,
        })?;
        planned.push(Planned { node, container });
    }
    Ok(planned)
}

fn node_image(node: &Node) -> &str {
    node.image.as_deref().unwrap_or("busybox")
}

/// Each image the nodes name, in the store (pulled when missing, as `run` does).
fn ensure_images(
    store: &Store,
    t: &Topology,
    planned: &[Planned<'_>],
    options: &DeployOptions,
) -> Result<(), DeployError> {
    let mut seen = std::collections::BTreeSet::new();
    for p in planned {
        let name = node_image(p.node);
        if !seen.insert(name.to_owned()) {
            continue;
        }
        let at = node_at(t, &p.node.name);
        let reference = Reference::parse(name).map_err(|source| DeployError::Reference {
            at: at.clone(),
            node: p.node.name.to_string(),
            image: name.to_owned(),
            source,
        })?;
        let image_err = |source| DeployError::Image {
            at: at.clone(),
            node: p.node.name.to_string(),
            image: name.to_owned(),
            source: Box::new(source),
        };
        let config = image::registry::registries_config(options.registries_config.as_deref())
            .map_err(|e| image_err(e.into()))?;
        let spec = PullSpec {
            config: Some(config),
            ..PullSpec::default()
        };
        let progress = image::cli::progress_sink(false);
        image::ensure(store, &reference, options.pull, &spec, progress.as_ref())
            .map_err(image_err)?;
    }
    Ok(())
}

/// The `berth run` request of a linux node.
fn run_request(
    t: &Topology,
    loaded: &Loaded,
    p: &Planned<'_>,
    options: &DeployOptions,
) -> Result<RunRequest, DeployError> {
    let node = p.node;
    let at = node_at(t, &node.name);
    let unsupported = |what: String| DeployError::Unsupported {
        at: at.clone(),
        node: node.name.to_string(),
        what,
    };
    let mut words = vec![node_image(node).to_owned()];
    if let Some(cmd) = &node.cmd {
        words.extend(berth_topology::command::split(cmd).map_err(|e| unsupported(e.to_string()))?);
    }
    let networks = match (&node.network_mode, mgmt_network(t)) {
        (Some(NetworkMode::Host), _) => vec!["host".to_owned()],
        (Some(NetworkMode::None), _) | (None, None) => vec!["none".to_owned()],
        (None, Some(net)) => vec![net],
        (Some(NetworkMode::Container(c)), _) => {
            let target = NodeName::try_from(c.as_str())
                .ok()
                .and_then(|n| t.container_name(&n).ok())
                .ok_or_else(|| unsupported(format!("network-mode container:{c}")))?;
            vec![format!("container:{target}")]
        }
    };
    // docker's rule: a shared namespace comes with its owner's hostname.
    let own_hostname = !matches!(
        node.network_mode,
        Some(NetworkMode::Host | NetworkMode::Container(_))
    );
    let dir = loaded.dir();
    let volumes = node
        .binds
        .iter()
        .map(|b| {
            let source = b.source_path(&dir).display().to_string();
            match b.options.as_deref() {
                Some(o @ ("ro" | "rw")) => Ok(format!("{source}:{}:{o}", b.target)),
                None => Ok(format!("{source}:{}", b.target)),
                Some(o) => Err(unsupported(format!("bind option {o:?} (ro and rw are)"))),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    // containerlab's own labels, so `ps --filter label=containerlab=LAB` finds a lab.
    let mut labels: BTreeMap<String, String> = node.labels.clone();
    labels.insert("containerlab".into(), t.name.to_string());
    labels.insert("clab-node-name".into(), node.name.to_string());
    labels.insert("clab-node-kind".into(), node.kind.as_str().into());
    if let Some(file) = &loaded.file {
        labels.insert("clab-topo-file".into(), file.display().to_string());
    }
    Ok(RunRequest {
        detach: true,
        // As containerlab's nodes: stdin held open, so a shell as PID 1 keeps waiting.
        interactive: true,
        name: Some(p.container.clone()),
        hostname: own_hostname.then(|| node.name.to_string()),
        env: node_env(t, loaded, node)?,
        volumes,
        networks,
        publish: node.ports.iter().map(|p| p.as_written()).collect(),
        ip: node
            .mgmt_ipv4
            .map(IpAddr::V4)
            .or(node.mgmt_ipv6.map(IpAddr::V6))
            .map(|ip| ip.to_string()),
        memory: node.memory.map(|m| m.to_string()),
        cpus: node
            .cpu_millis
            .map(|m| format!("{}.{:03}", m / 1000, m % 1000)),
        cgroup_parent: options.cgroup_parent.clone(),
        user: node.user.clone(),
        entrypoint: node.entrypoint.clone(),
        labels: labels
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect(),
        privileged: true,
        image_and_command: words,
        ..RunRequest::default()
    })
}

/// A node's environment: its `env-files` in order (docker's env-file format: `KEY=VALUE`
/// lines, `#` comments, a bare `KEY` passes the caller's value), then its `env`, which wins.
fn node_env(t: &Topology, loaded: &Loaded, node: &Node) -> Result<Vec<String>, DeployError> {
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let dir = loaded.dir();
    for file in &node.env_files {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).map_err(|source| DeployError::EnvFile {
            at: node_at(t, &node.name),
            node: node.name.to_string(),
            path: path.clone(),
            source,
        })?;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once('=') {
                Some((k, v)) => {
                    env.insert(k.trim().to_owned(), v.to_owned());
                }
                None => {
                    if let Ok(v) = std::env::var(line) {
                        env.insert(line.to_owned(), v);
                    }
                }
            }
        }
    }
    env.extend(node.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(env.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

/// Steps after the plan: bridges, management network, nodes, names, links, sysctls.
fn build(
    store: &Store,
    networks: &Networks,
    loaded: &Loaded,
    planned: &[Planned<'_>],
    state: &LabState,
    host: &Netlink,
    options: &DeployOptions,
) -> Result<(), DeployError> {
    let t = &loaded.topology;
    for name in &state.bridges {
        wire::ensure_bridge(host, name).map_err(|source| DeployError::Bridge {
            node: name.clone(),
            source,
        })?;
    }
    if let Some(net) = &state.network {
        let m = t.mgmt.clone().unwrap_or_default();
        let request = NetworkRequest {
            name: net.clone(),
            subnets: m
                .ipv4_subnet
                .map(|s| s.to_string())
                .into_iter()
                .chain(m.ipv6_subnet.map(|s| s.to_string()))
                .collect(),
            bridge: m.bridge.map(|b| b.to_string()),
            mtu: m.mtu,
            ..NetworkRequest::default()
        };
        network_cmd::create(store, networks, request).map_err(|source| DeployError::Network {
            name: net.clone(),
            source: Box::new(source),
        })?;
    }
    let mut requests = planned
        .iter()
        .map(|p| run_request(t, loaded, p, options).map(Some))
        .collect::<Result<Vec<_>, _>>()?;
    // In waves by the length of their `network-mode: container:` chain: `berth run
    // --network container:X` needs X running.
    let depth = |p: &Planned<'_>| {
        std::iter::successors(Some(&p.node.name), |n| {
            match &t.nodes.get(*n)?.network_mode {
                Some(NetworkMode::Container(other)) => {
                    t.nodes.get_key_value(other.as_str()).map(|(k, _)| k)
                }
                _ => None,
            }
        })
        .take(t.nodes.len() + 1)
        .count()
    };
    let deepest = planned.iter().map(depth).max().unwrap_or(0);
    for wave in 1..=deepest {
        let (nodes, requests): (Vec<Planned<'_>>, Vec<RunRequest>) = planned
            .iter()
            .zip(requests.iter_mut())
            .filter(|(p, _)| depth(p) == wave)
            .filter_map(|(p, r)| Some((p.clone(), r.take()?)))
            .unzip();
        timing::step("lab nodes", || {
            start_nodes(
                store,
                networks,
                t,
                &nodes,
                requests,
                options.parallel.max(1),
            )
        })?;
    }

    // Namespaces: by name under /run/netns, and opened for the links.
    let mut netns: BTreeMap<String, Netns> = BTreeMap::new();
    let records = containers_by_name(store)?;
    for p in planned {
        if p.node.network_mode == Some(NetworkMode::Host) {
            continue;
        }
        let owner = t.netns_owner(&p.node.name);
        let container = match owner {
            Some(o) => t
                .container_name(o)
                .map(|c| c.to_string())
                .unwrap_or_else(|_| p.container.clone()),
            None => p.container.clone(),
        };
        let record = records.get(&container).ok_or_else(|| DeployError::Find {
            name: container.clone(),
            source: StateError::NotFound {
                query: container.clone(),
            },
        })?;
        let path = store.netns_path(&record.id);
        if owner.is_none() {
            netns_names::link(&p.container, &path).map_err(|source| DeployError::NetnsName {
                node: p.node.name.to_string(),
                source,
            })?;
        }
        let ns = wire::open_netns(&path).map_err(|source| DeployError::Wire {
            at: node_at(t, &p.node.name),
            link: format!("namespace of {}", p.node.name),
            source,
        })?;
        netns.insert(p.node.name.to_string(), ns);
    }
    let host_ns = Netns::current().map_err(DeployError::HostNetns)?;
    let mut sockets = Sockets::default();
    let mgmt_bridge = mgmt_bridge(store, networks, t, host)?;
    timing::step("lab links", || {
        (0..t.links.len()).try_for_each(|index| {
            connect_link(
                mgmt_bridge.as_deref(),
                t,
                index,
                &netns,
                &host_ns,
                &mut sockets,
                None,
            )
            .map(drop)
        })
    })?;
    for p in planned {
        apply_sysctls(p, netns.get(p.node.name.as_str()))?;
    }
    crate::lab::impair::apply_topology(store, t)?;
    Ok(())
}

/// Creates link `index`. With `only_if_up`, a link whose other node is not running (no
/// namespace in `netns`) is skipped rather than an error (`lab start` of one node).
pub(crate) fn connect_link(
    mgmt_bridge: Option<&str>,
    t: &Topology,
    index: usize,
    netns: &BTreeMap<String, Netns>,
    host_ns: &Netns,
    sockets: &mut Sockets,
    only_if_up: Option<&str>,
) -> Result<bool, DeployError> {
    let link = &t.links[index];
    let mut ends = Vec::with_capacity(2);
    let labels: Vec<String> = link
        .endpoints
        .iter()
        .map(|e| match &e.attach {
            Attach::Node(n) => t
                .container_name(n)
                .map_or_else(|_| n.to_string(), |c| c.to_string()),
            other => other.as_str().to_owned(),
        })
        .collect();
    for (end, label) in link.endpoints.iter().zip(&labels) {
        let (ns, master) = match &end.attach {
            Attach::Host => (host_ns, None),
            Attach::MgmtNet => (host_ns, mgmt_bridge),
            Attach::Node(n) => match t.nodes.get(n) {
                Some(node) if node.kind == Kind::Bridge => (host_ns, Some(n.as_str())),
                Some(node) if node.network_mode == Some(NetworkMode::Host) => (host_ns, None),
                _ => match netns.get(n.as_str()) {
                    Some(ns) => (ns, None),
                    None if only_if_up.is_some() => return Ok(false),
                    None => {
                        return Err(DeployError::Wire {
                            at: link_at(t, index),
                            link: link_name(t, index),
                            source: WireError::Missing {
                                name: end.ifname.to_string(),
                                netns: label.clone(),
                            },
                        });
                    }
                },
            },
        };
        ends.push(End {
            netns: ns,
            label,
            ifname: end.ifname.as_str(),
            mac: end.mac.map(|m| m.0),
            master,
        });
    }
    wire::connect(sockets, &ends[0], &ends[1], link.mtu).map_err(|source| DeployError::Wire {
        at: link_at(t, index),
        link: link_name(t, index),
        source,
    })?;
    Ok(true)
}

/// The bridge of the management network, for `mgmt-net` links (none without such links);
/// made if no node has joined the network yet (the bridge plugin makes it at the first
/// attachment, and removing the network removes it).
pub(crate) fn mgmt_bridge(
    store: &Store,
    networks: &Networks,
    t: &Topology,
    host: &Netlink,
) -> Result<Option<String>, DeployError> {
    if !t.links.iter().any(|l| l.kind == LinkKind::MgmtNet) {
        return Ok(None);
    }
    let Some(net) = mgmt_network(t) else {
        return Ok(None);
    };
    let network_err = |source| DeployError::Network {
        name: net.clone(),
        source: Box::new(source),
    };
    let summary = network_cmd::list(store, networks)
        .map_err(network_err)?
        .into_iter()
        .find(|n| n.name == net);
    let Some(bridge) = summary.and_then(|s| s.bridge) else {
        return Err(DeployError::Unsupported {
            at: String::new(),
            node: "mgmt-net".into(),
            what: format!("a mgmt-net link to network {net}, which has no bridge,"),
        });
    };
    wire::ensure_bridge(host, &bridge).map_err(|source| DeployError::Bridge {
        node: "mgmt-net".into(),
        source,
    })?;
    Ok(Some(bridge))
}

/// `sysctls:` of a node: the `net.*` keys, written inside its namespace (the others are
/// the host kernel's, which a lab does not change).
fn apply_sysctls(p: &Planned<'_>, ns: Option<&Netns>) -> Result<(), DeployError> {
    for (key, value) in &p.node.sysctls {
        let err = |source: Box<dyn std::error::Error + Send + Sync>| DeployError::Sysctl {
            node: p.node.name.to_string(),
            key: key.clone(),
            value: value.clone(),
            source,
        };
        let Some(ns) = ns.filter(|_| key.starts_with("net.")) else {
            return Err(err(
                "only net.* keys of a node with its own namespace are applied".into(),
            ));
        };
        ns.run(|| berth_netlink::sysctl::write(key, value))
            .map_err(|e| err(Box::new(e)))?
            .map_err(|e| err(Box::new(e)))?;
    }
    Ok(())
}

/// Starts the nodes: their containers created together (crate::lifecycle::create::create_all),
/// then started `parallel` at a time, each after its `startup-delay`.
fn start_nodes(
    store: &Store,
    networks: &Networks,
    t: &Topology,
    planned: &[Planned<'_>],
    requests: Vec<RunRequest>,
    parallel: usize,
) -> Result<(), DeployError> {
    let node_error = |i: usize, source: RunError| {
        let p = &planned[i];
        DeployError::Node {
            at: node_at(t, &p.node.name),
            node: p.node.name.to_string(),
            name: p.container.clone(),
            source: Box::new(source),
        }
    };
    let records = timing::step("create", || create::create_all(store, networks, requests))
        .map_err(|(i, e)| node_error(i, e.into()))?;
    let next = AtomicUsize::new(0);
    let failures: Mutex<Vec<(usize, RunError)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..parallel.min(planned.len()) {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let (Some(p), Some(record)) = (planned.get(i), records.get(i)) else {
                        break;
                    };
                    // Stop starting nodes once one failed: the lab is being rolled back.
                    if failures.lock().is_ok_and(|f| !f.is_empty()) {
                        break;
                    }
                    if p.node.startup_delay > 0 {
                        std::thread::sleep(Duration::from_secs(u64::from(p.node.startup_delay)));
                    }
                    if let Err(e) = run::launch_detached(store, networks, record) {
                        if let Ok(mut f) = failures.lock() {
                            f.push((i, e));
                        }
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_default();
    failures.sort_by_key(|(i, _)| *i);
    match failures.into_iter().next() {
        None => Ok(()),
        Some((i, source)) => Err(node_error(i, source)),
    }
}

/// `berth lab destroy`: removes whatever of the plan exists (containers with their links,
/// `/run/netns` names, host links, bridges the lab made, its management network), then the
/// lab's directory. Keeps going past failures and returns them all; the state stays when
/// something could not be removed, so a second destroy can finish.
pub fn destroy(
    store: &Store,
    networks: &Networks,
    state: &LabState,
) -> Result<(), Vec<DeployError>> {
    let errors: Mutex<Vec<DeployError>> = Mutex::new(Vec::new());
    let push = |e: DeployError| {
        if let Ok(mut list) = errors.lock() {
            list.push(e);
        }
    };
    // Impairments first: their delay lines are stopped (and waited for) while their
    // namespaces still exist.
    for e in crate::lab::impair::clear_lab(store.root(), &state.name) {
        push(e.into());
    }
    // Containers, several at once: each `rm -f` waits for its monitor to release it. Their
    // records are read once for all (then swept once, below), not once per container.
    let records = containers_by_name(store).unwrap_or_default();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..state.containers.len().min(8) {
            scope.spawn(|| {
                while let Some(name) = state.containers.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let removed = match records.get(name) {
                        Some(record) => rm::remove_record(
                            store,
                            networks,
                            record.clone(),
                            true,
                            Sweep::ByCaller,
                        ),
                        // Not read above: a remnant, or gone.
                        None => rm::remove(store, networks, name, true),
                    };
                    match removed {
                        Ok(_) | Err(RmError::State(StateError::NotFound { .. })) => {}
                        Err(e) => push(DeployError::Remove {
                            name: name.clone(),
                            source: Box::new(e),
                        }),
                    }
                }
            });
        }
    });
    // A deploy killed while creating a container leaves its staging directory: swept as
    // `system prune` does (only what dead writers left).
    match store.lock() {
        Ok(lock) => {
            for e in store.sweep(&lock) {
                push(DeployError::Sweep(e));
            }
        }
        Err(e) => push(DeployError::Sweep(e)),
    }
    for name in &state.netns_names {
        if let Err(source) = netns_names::unlink(name) {
            push(DeployError::Unlink {
                name: name.clone(),
                source,
            });
        }
    }
    match Netlink::open_current() {
        Ok(host) => {
            for (what, names) in [("link", &state.host_links), ("bridge", &state.bridges)] {
                for name in names {
                    if let Err(source) = wire::delete(&host, "host", name) {
                        push(DeployError::Unwire {
                            what,
                            name: name.clone(),
                            source,
                        });
                    }
                }
            }
        }
        Err(source) => push(DeployError::Unwire {
            what: "links of",
            name: "the host namespace".into(),
            source: WireError::Open {
                netns: "host".into(),
                source: Box::new(source),
            },
        }),
    }
    if let Some(net) = &state.network {
        match networks.remove(store, net) {
            Ok(()) => {}
            Err(NetworkError::NotFound { .. }) => {}
            Err(e) => push(DeployError::RemoveNetwork {
                name: net.clone(),
                source: Box::new(e),
            }),
        }
    }
    let mut errors = errors.into_inner().unwrap_or_default();
    if errors.is_empty() {
        if let Err(e) = LabState::remove(store.root(), &state.name) {
            errors.push(e.into());
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// The lab's directory, for messages.
pub fn lab_dir(store: &Store, lab: &str) -> PathBuf {
    state::lab_dir(store.root(), lab)
}
