//! `berth lab inspect`: each node's container, state, pid and the addresses of its
//! interfaces, read from the kernel (what `exec:` commands or a person set), not from the
//! file; `--all`: the deployed labs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_netlink::{AddrScope, Netlink};
use berth_topology::Kind;
use serde::Serialize;

use crate::lab::impair;
use crate::lab::source::Loaded;
use crate::lab::state::{self, LabState, LabStateError};
use crate::lab::wire;
use crate::state::{StateError, Status, Store};

/// Errors of `lab inspect`.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    State(#[from] LabStateError),
    #[error("container {name}")]
    Find {
        name: String,
        #[source]
        source: StateError,
    },
    #[error("host namespace")]
    Host(#[source] berth_netlink::OpenError),
}

/// One node.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeView {
    pub node: String,
    /// The container (linux) or bridge (bridge) name.
    pub name: String,
    pub kind: String,
    pub image: Option<String>,
    /// `running`, `exited`, `created`, `removing`; `missing` when it does not exist; a
    /// bridge is `up` or `down`.
    pub state: String,
    pub pid: Option<i32>,
    pub labels: BTreeMap<String, String>,
    /// Interface name → addresses (`198.18.12.1/30`), loopback and link-local left out.
    pub interfaces: BTreeMap<String, Vec<String>>,
    pub ipv4: Vec<String>,
    pub ipv6: Vec<String>,
    /// Interface → the impairment in force on its egress (`delay 20ms loss 5%`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub impairments: BTreeMap<String, String>,
}

/// One lab.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LabView {
    pub name: String,
    pub file: Option<PathBuf>,
    pub nodes: Vec<NodeView>,
}

/// A line of `inspect --all`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LabSummary {
    pub name: String,
    pub file: Option<PathBuf>,
    pub nodes: usize,
    /// `false`: a deploy failed or was killed; `destroy` removes what it left.
    pub complete: bool,
}

/// The nodes of a lab as they are now.
pub fn inspect(store: &Store, loaded: &Loaded) -> Result<LabView, InspectError> {
    let t = &loaded.topology;
    let host = Netlink::open_current().map_err(InspectError::Host)?;
    let ends = impair::load(store.root(), t.name.as_str()).unwrap_or_default();
    // The store's records are read once, not once per node.
    let records = store
        .records_by_name()
        .map_err(|source| InspectError::Find {
            name: "the store's containers".into(),
            source,
        })?;
    let mut nodes = Vec::new();
    for node in t.nodes.values() {
        let mut view = NodeView {
            node: node.name.to_string(),
            name: node.name.to_string(),
            kind: node.kind.as_str().to_owned(),
            image: None,
            state: "missing".into(),
            pid: None,
            labels: node.labels.clone(),
            interfaces: BTreeMap::new(),
            ipv4: Vec::new(),
            ipv6: Vec::new(),
            impairments: ends
                .iter()
                .filter(|e| e.node == node.name.as_str())
                .map(|e| (e.ifname.clone(), e.impairments().to_string()))
                .collect(),
        };
        match node.kind {
            Kind::Bridge => {
                if let Ok(Some(link)) = host.link_by_name(node.name.as_str()) {
                    view.state = if link.up { "up" } else { "down" }.into();
                }
            }
            Kind::Linux => {
                let name = t
                    .container_name(&node.name)
                    .map_or_else(|_| node.name.to_string(), |c| c.to_string());
                view.name = name.clone();
                view.image = node.image.clone();
                if let Some(record) = records.get(&name) {
                    // The container's image, not the file's: a file naming it through
                    // a variable may read differently in this environment.
                    view.image = Some(record.config.image.familiar());
                    let status = record.live_status();
                    view.state = status_name(status).into();
                    if status == Status::Running {
                        view.pid = record.state.pid;
                        let path = store.netns_of(record);
                        if let Ok(ns) = wire::open_netns(&path) {
                            if let Ok(netlink) = Netlink::open_in(&ns) {
                                view.interfaces = addresses(&netlink);
                            }
                        }
                    }
                }
            }
        }
        for addr in view.interfaces.values().flatten() {
            if addr.contains(':') {
                view.ipv6.push(addr.clone());
            } else {
                view.ipv4.push(addr.clone());
            }
        }
        nodes.push(view);
    }
    Ok(LabView {
        name: t.name.to_string(),
        file: loaded.file.clone(),
        nodes,
    })
}

fn status_name(status: Status) -> &'static str {
    match status {
        Status::Created => "created",
        Status::Running => "running",
        Status::Exited => "exited",
        Status::Removing => "removing",
    }
}

/// Interface name → global addresses, `lo` left out.
fn addresses(netlink: &Netlink) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let Ok(links) = netlink.links() else {
        return out;
    };
    let Ok(addrs) = netlink.addrs(None) else {
        return out;
    };
    for link in links.iter().filter(|l| l.name != "lo") {
        let list: Vec<String> = addrs
            .iter()
            .filter(|a| a.index == link.index && a.scope == AddrScope::Universe)
            .map(|a| a.net.to_string())
            .collect();
        out.insert(link.name.clone(), list);
    }
    out
}

/// The deployed labs.
pub fn list(store: &Store) -> Result<Vec<LabSummary>, InspectError> {
    let mut out = Vec::new();
    for name in state::list(store.root())? {
        let s = LabState::load(store.root(), &name)?;
        out.push(LabSummary {
            name,
            file: s.file,
            nodes: s.containers.len() + s.bridges.len(),
            complete: s.complete,
        });
    }
    Ok(out)
}
