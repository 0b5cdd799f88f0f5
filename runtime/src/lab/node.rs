//! Verbs on the nodes and links of a deployed lab: `exec`, `stop`/`start` of a node, and
//! `link NODE:IF down|up`.
//!
//! A veth dies with either end's namespace, so stopping a node removes its links at both
//! ends: its peers lose those interfaces, with their addresses and the routes through them.
//! `stop` therefore first records, in the lab's state, what each running peer has on those
//! interfaces; `start` re-creates the links (names, MTU, MACs, bridge ports), puts the
//! peers' addresses and routes back, and runs the node's own `exec:` commands again (its
//! addresses and routes were set there).

use std::collections::BTreeMap;
use std::time::Duration;

use berth_netlink::{AddrScope, IpFamily, Netlink, Netns, Route};
use berth_topology::{Attach, Kind, NetworkMode, NodeInterface, NodeName, Topology};

use crate::commands::start::{self as start_cmd, RelaunchError};
use crate::commands::stop::{self as stop_cmd, StopError};
use crate::lab::deploy::{self, DeployError};
use crate::lab::exec::{self, ExecOutput, Target};
use crate::lab::netns_names::{self, NetnsNameError};
use crate::lab::source::Loaded;
use crate::lab::state::{LabState, LabStateError, SavedInterface};
use crate::lab::wire::{self, End, Sockets, WireError};
use crate::network::Networks;
use crate::state::{ContainerRecord, StateError, Status, Store};

/// Errors of the node and link verbs.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    State(#[from] LabStateError),
    #[error("lab {lab} has no node {node}")]
    NoNode { lab: String, node: String },
    #[error("node {node} is a {kind} node: only linux nodes are containers")]
    NotLinux { node: String, kind: &'static str },
    #[error("no node of lab {lab} has label {selector}")]
    NoMatch { lab: String, selector: String },
    #[error("{at} is not an interface of a link in lab {lab}")]
    NoEndpoint { lab: String, at: String },
    #[error("container {name}")]
    Find {
        name: String,
        #[source]
        source: StateError,
    },
    #[error("node {node} is not running")]
    NotRunning { node: String },
    #[error("stop node {node}")]
    Stop {
        node: String,
        #[source]
        source: StopError,
    },
    #[error("start node {node}")]
    Start {
        node: String,
        #[source]
        source: RelaunchError,
    },
    #[error("node {node}")]
    NetnsName {
        node: String,
        #[source]
        source: NetnsNameError,
    },
    #[error("{what}")]
    Wire {
        what: String,
        #[source]
        source: WireError,
    },
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error("host namespace")]
    HostNetns(#[source] berth_netlink::NetnsError),
    #[error(
        "node {node} shares its network namespace with {others} (network-mode container:): stop and start of such nodes are not supported yet"
    )]
    SharedNamespace { node: String, others: String },
}

/// `stop` and `start` re-create a node's links with its namespace; a namespace shared
/// through `network-mode: container:` outlives the node that stops (its links with it),
/// so they refuse such nodes rather than leave links half made.
fn refuse_shared(t: &Topology, name: &NodeName) -> Result<(), NodeError> {
    let owner = |n: &NodeName| t.netns_owner(n).cloned().unwrap_or_else(|| n.clone());
    let mine = owner(name);
    let others: Vec<String> = t
        .nodes
        .keys()
        .filter(|n| *n != name && owner(n) == mine)
        .map(|n| n.to_string())
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    Err(NodeError::SharedNamespace {
        node: name.to_string(),
        others: others.join(", "),
    })
}

fn container_of(t: &Topology, node: &str) -> Result<(NodeName, String), NodeError> {
    let no_node = || NodeError::NoNode {
        lab: t.name.to_string(),
        node: node.to_owned(),
    };
    let (name, n) = t.nodes.get_key_value(node).ok_or_else(no_node)?;
    if n.kind != Kind::Linux {
        return Err(NodeError::NotLinux {
            node: node.to_owned(),
            kind: n.kind.as_str(),
        });
    }
    let container = t.container_name(name).map_err(|_| no_node())?.to_string();
    Ok((name.clone(), container))
}

/// The linux nodes named by `nodes` and matching every `labels` selector (`key=value` or
/// `key`); all linux nodes when both are empty.
pub fn select(t: &Topology, nodes: &[String], labels: &[String]) -> Result<Vec<Target>, NodeError> {
    let mut names: Vec<String> = Vec::new();
    for node in nodes {
        container_of(t, node)?;
        names.push(node.clone());
    }
    for selector in labels {
        let matched: Vec<String> = t
            .select(selector)
            .filter(|n| n.kind == Kind::Linux)
            .map(|n| n.name.to_string())
            .collect();
        if matched.is_empty() {
            return Err(NodeError::NoMatch {
                lab: t.name.to_string(),
                selector: selector.clone(),
            });
        }
        names.extend(matched);
    }
    if nodes.is_empty() && labels.is_empty() {
        names = t
            .nodes
            .values()
            .filter(|n| n.kind == Kind::Linux)
            .map(|n| n.name.to_string())
            .collect();
    }
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|n| {
            let (_, container) = container_of(t, &n)?;
            Ok(Target { node: n, container })
        })
        .collect()
}

/// `lab exec`: `command` in each selected node (nodes at once, output in node order).
pub fn exec(store: &Store, selected: &[Target], command: &[String]) -> Vec<ExecOutput> {
    exec::run(store, selected, |_| vec![command.to_vec()])
}

/// The namespace of a running linux node (`None`: no such container, or not running).
fn node_netns(
    store: &Store,
    record: Option<&ContainerRecord>,
    node: &str,
) -> Result<Option<Netns>, NodeError> {
    let Some(record) = record.filter(|r| r.live_status() == Status::Running) else {
        return Ok(None);
    };
    wire::open_netns(&store.netns_of(record))
        .map(Some)
        .map_err(|source| NodeError::Wire {
            what: format!("namespace of node {node}"),
            source,
        })
}

/// Namespaces of the running linux nodes of `t`, by node name. The store's records are read
/// once, not once per node.
fn running(store: &Store, t: &Topology) -> Result<BTreeMap<String, Netns>, NodeError> {
    let records = store.records_by_name().map_err(|source| NodeError::Find {
        name: "the store's containers".into(),
        source,
    })?;
    let mut out = BTreeMap::new();
    for node in t.nodes.values().filter(|n| n.kind == Kind::Linux) {
        let (_, container) = container_of(t, node.name.as_str())?;
        if let Some(ns) = node_netns(store, records.get(&container), node.name.as_str())? {
            out.insert(node.name.to_string(), ns);
        }
    }
    Ok(out)
}

/// `lab stop NODE`: the peers' side of its links recorded, then the container stopped
/// (SIGKILL at once: lab nodes are cattle, and a shell as PID 1 ignores SIGTERM).
pub fn stop(
    store: &Store,
    networks: &Networks,
    loaded: &Loaded,
    node: &str,
) -> Result<(), NodeError> {
    let t = &loaded.topology;
    let (name, container) = container_of(t, node)?;
    refuse_shared(t, &name)?;
    let mut state = LabState::load(store.root(), t.name.as_str())?;
    let nets = running(store, t)?;
    if !nets.contains_key(node) {
        return Err(NodeError::NotRunning {
            node: node.to_owned(),
        });
    }
    state.saved_peers.retain(|s| s.stopped != node);
    for iface in t.interfaces(&name) {
        let Attach::Node(peer) = &iface.peer.attach else {
            continue;
        };
        let Some(ns) = nets.get(peer.as_str()).filter(|_| peer.as_str() != node) else {
            continue;
        };
        if let Some(saved) = save_interface(ns, node, peer.as_str(), iface.peer.ifname.as_str()) {
            state.saved_peers.push(saved);
        }
    }
    state.save(store.root())?;
    // Delay lines hold the namespaces they work in: off first, back at `start`.
    crate::lab::impair::clear_node(store, t, node).map_err(DeployError::from)?;
    // Its links go now, at both ends (a veth dies with either end). Left to the namespace's
    // end, they would go only when the kernel tears it down in the background, after
    // `lab stop` returned.
    if let Some(ns) = nets.get(node) {
        let wire_err = |source| NodeError::Wire {
            what: format!("links of node {node}"),
            source,
        };
        let netlink = Netlink::open_in(ns).map_err(|source| {
            wire_err(WireError::Open {
                netns: node.to_owned(),
                source: Box::new(source),
            })
        })?;
        for iface in t.interfaces(&name) {
            wire::delete(&netlink, node, iface.name.as_str()).map_err(wire_err)?;
        }
    }
    stop_cmd::stop(store, networks, &container, Duration::ZERO).map_err(|source| {
        NodeError::Stop {
            node: node.to_owned(),
            source,
        }
    })?;
    Ok(())
}

/// What a peer has on `ifname`: global addresses and the routes through it.
fn save_interface(ns: &Netns, stopped: &str, node: &str, ifname: &str) -> Option<SavedInterface> {
    let netlink = Netlink::open_in(ns).ok()?;
    let link = netlink.link_by_name(ifname).ok()??;
    let addrs = netlink
        .addrs(Some(link.index))
        .ok()?
        .into_iter()
        .filter(|a| a.scope == AddrScope::Universe)
        .map(|a| a.net)
        .collect();
    let mut routes = Vec::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        if let Ok(list) = netlink.routes(family, None) {
            routes.extend(
                list.into_iter()
                    .filter(|r| r.oif == Some(link.index) && r.gateway.is_some())
                    .map(|r| (r.dst, r.gateway)),
            );
        }
    }
    Some(SavedInterface {
        stopped: stopped.to_owned(),
        node: node.to_owned(),
        ifname: ifname.to_owned(),
        addrs,
        routes,
    })
}

/// `lab start NODE`: the container started again, its links re-created to the peers that
/// run, the peers' addresses and routes put back, and its `exec:` commands run again.
pub fn start(
    store: &Store,
    networks: &Networks,
    loaded: &Loaded,
    node: &str,
) -> Result<Vec<ExecOutput>, NodeError> {
    let t = &loaded.topology;
    let (name, container) = container_of(t, node)?;
    refuse_shared(t, &name)?;
    let mut state = LabState::load(store.root(), t.name.as_str())?;
    let started =
        start_cmd::start(store, networks, &container).map_err(|source| NodeError::Start {
            node: node.to_owned(),
            source,
        })?;
    netns_names::link(&container, &store.netns_path(&started.id)).map_err(|source| {
        NodeError::NetnsName {
            node: node.to_owned(),
            source,
        }
    })?;
    let nets = running(store, t)?;
    let host_ns = Netns::current().map_err(NodeError::HostNetns)?;
    let mut sockets = Sockets::default();
    let host = Netlink::open_current().map_err(|source| NodeError::Wire {
        what: "the host namespace".into(),
        source: WireError::Open {
            netns: "host".into(),
            source: Box::new(source),
        },
    })?;
    let mgmt_bridge = deploy::mgmt_bridge(store, networks, t, &host)?;
    let links: Vec<usize> = t.interfaces(&name).iter().map(|i| i.link).collect();
    for index in links {
        deploy::connect_link(
            mgmt_bridge.as_deref(),
            t,
            index,
            &nets,
            &host_ns,
            &mut sockets,
            Some(node),
        )?;
    }
    let (restore, keep): (Vec<SavedInterface>, Vec<SavedInterface>) =
        std::mem::take(&mut state.saved_peers)
            .into_iter()
            .partition(|s| s.stopped == node);
    state.saved_peers = keep;
    for saved in &restore {
        if let Some(ns) = nets.get(&saved.node) {
            restore_interface(&mut sockets, ns, saved)?;
        }
    }
    state.save(store.root())?;
    crate::lab::impair::reapply_node(store, t, node).map_err(DeployError::from)?;
    let selected = [Target {
        node: node.to_owned(),
        container,
    }];
    let commands = t
        .nodes
        .get(&name)
        .map(exec::commands_of)
        .unwrap_or_default();
    Ok(exec::run(store, &selected, |_| commands.clone()))
}

fn restore_interface(
    sockets: &mut Sockets,
    ns: &Netns,
    saved: &SavedInterface,
) -> Result<(), NodeError> {
    let what = || format!("restore {}:{}", saved.node, saved.ifname);
    let netlink = sockets
        .of(ns, &saved.node)
        .map_err(|source| NodeError::Wire {
            what: what(),
            source,
        })?;
    let Ok(Some(link)) = netlink.link_by_name(&saved.ifname) else {
        return Ok(());
    };
    for addr in &saved.addrs {
        // An address that is back already (added by hand meanwhile) is fine.
        let _ = netlink.add_addr(link.index, *addr);
    }
    for (dst, gateway) in &saved.routes {
        let mut route = Route::new(*dst);
        route.gateway = *gateway;
        route.oif = Some(link.index);
        let _ = netlink.replace_route(&route);
    }
    Ok(())
}

/// `lab link NODE:IF up|down`: both ends of the link.
pub fn set_link(
    store: &Store,
    loaded: &Loaded,
    at: &NodeInterface,
    up: bool,
) -> Result<(), NodeError> {
    let t = &loaded.topology;
    let Some((index, _)) = t.find(at) else {
        return Err(NodeError::NoEndpoint {
            lab: t.name.to_string(),
            at: at.to_string(),
        });
    };
    let link = &t.links[index];
    let nets = running(store, t)?;
    let host_ns = Netns::current().map_err(NodeError::HostNetns)?;
    let mut sockets = Sockets::default();
    for end in &link.endpoints {
        let (ns, label) = match &end.attach {
            Attach::Node(n) => match t.nodes.get(n) {
                Some(node)
                    if node.kind == Kind::Linux && node.network_mode != Some(NetworkMode::Host) =>
                {
                    match nets.get(n.as_str()) {
                        Some(ns) => (ns, n.to_string()),
                        None => {
                            return Err(NodeError::NotRunning {
                                node: n.to_string(),
                            });
                        }
                    }
                }
                _ => (&host_ns, "host".to_owned()),
            },
            _ => (&host_ns, "host".to_owned()),
        };
        let end = End {
            netns: ns,
            label: &label,
            ifname: end.ifname.as_str(),
            mac: None,
            master: None,
        };
        wire::set_state(&mut sockets, &end, up).map_err(|source| NodeError::Wire {
            what: format!(
                "set {} {}",
                deploy::link_name(t, index),
                if up { "up" } else { "down" }
            ),
            source,
        })?;
    }
    Ok(())
}
