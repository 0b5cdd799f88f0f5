//! From definitions to the resolved model: containerlab's inheritance (node > group >
//! kind > defaults), then the checks that need the whole lab (endpoints, interfaces,
//! addresses).
//!
//! Inheritance follows containerlab's `types/topology.go` (the `GetNode*` functions and
//! their helpers `getField`, `mergeStringSliceFields`, `mergeStringMapFields`):
//! - `kind`: the node's, else its `group`'s (the group named on the node), else the group
//!   named in `defaults`, else `defaults.kind`;
//! - `group`: the node's, else its kind's, else `defaults.group`;
//! - scalars (`image`, `cmd`, `entrypoint`, `user`, `network-mode`, `startup-delay`,
//!   `memory`, `cpu`) and `ports`: the first one set of node, group, kind, defaults;
//! - `env`, `labels`, `sysctls`: maps merged key by key, node over group over kind over
//!   defaults;
//! - `exec` and `env-files`: defaults', then the kind's, the group's and the node's, each
//!   string once (containerlab's `MergeStringSlices`);
//! - `binds`: the same order, a more specific level's bind to a container path replacing
//!   the inherited one (docs/manual/nodes.md, "binds");
//! - `mgmt-ipv4`/`mgmt-ipv6`: the node's only.

use std::collections::{BTreeMap, HashMap};

use crate::error::{ErrorKind, WarningKind};
use crate::model::{
    Attach, Bind, DEFAULT_MTU, Endpoint, Kind, Link, LinkKind, Mgmt, NetworkMode, Node, SourceMap,
    Topology,
};
use crate::names::{IfName, LabName, NodeName, Prefix};
use crate::parse::link::{RawAttach, RawEndpoint, RawLink};
use crate::parse::node::RawNode;
use crate::parse::read::Cx;
use crate::yaml::Pos;

/// The file's parts, each read and checked on its own.
pub struct Input {
    pub name: LabName,
    pub prefix: Prefix,
    pub mgmt: Option<Mgmt>,
    pub defaults: RawNode,
    pub kinds: Vec<(String, Pos, RawNode)>,
    pub groups: Vec<(String, Pos, RawNode)>,
    pub nodes: Vec<(NodeName, Pos, RawNode)>,
    pub links: Vec<RawLink>,
}

/// Keys a bridge node uses; others set on one get a warning.
const BRIDGE_KEYS: &[&str] = &["kind", "labels", "group"];

/// The levels of one node, most specific first: node, group, kind, defaults.
type Levels<'a> = [&'a RawNode; 4];

fn first<T: Clone>(levels: Levels<'_>, field: impl Fn(&RawNode) -> &Option<T>) -> Option<T> {
    levels.into_iter().find_map(|l| field(l).clone())
}

fn merged_map(
    levels: Levels<'_>,
    field: impl Fn(&RawNode) -> &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    // defaults first: more specific levels overwrite.
    for level in levels.into_iter().rev() {
        out.extend(field(level).iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    out
}

fn merged_binds(levels: Levels<'_>) -> Vec<Bind> {
    let mut out: Vec<Bind> = Vec::new();
    for level in levels.into_iter().rev() {
        for bind in &level.binds {
            if let Some(old) = out.iter_mut().find(|b| b.target == bind.target) {
                *old = bind.clone();
            } else {
                out.push(bind.clone());
            }
        }
    }
    out
}

fn merged_unique(levels: Levels<'_>, field: impl Fn(&RawNode) -> &Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for level in levels.into_iter().rev() {
        for item in field(level) {
            if !out.contains(item) {
                out.push(item.clone());
            }
        }
    }
    out
}

/// Which network namespace an interface lands in: a node's own, or the lab host's (where
/// bridges, `host` and `mgmt-net` ends live).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Ns {
    Host,
    Node(NodeName),
}

impl Ns {
    fn describe(&self) -> String {
        match self {
            Ns::Host => "the lab's host namespace".to_owned(),
            Ns::Node(n) => format!("node {n}"),
        }
    }
}

fn ns_of(nodes: &BTreeMap<NodeName, Node>, attach: &Attach) -> Ns {
    let Attach::Node(name) = attach else {
        return Ns::Host;
    };
    // Follow `network-mode: container:X` through the lab's nodes (loops were refused).
    let mut name = name;
    for _ in 0..=nodes.len() {
        let Some(node) = nodes.get(name) else {
            break;
        };
        match (&node.kind, &node.network_mode) {
            (Kind::Bridge, _) | (_, Some(NetworkMode::Host)) => return Ns::Host,
            (_, Some(NetworkMode::Container(other))) => match nodes.get_key_value(other.as_str()) {
                Some((next, _)) => name = next,
                None => break,
            },
            _ => break,
        }
    }
    Ns::Node(name.clone())
}

/// `network-mode: container:X` chains among the lab's nodes must end: a node cannot join
/// its own namespace, directly or through others.
fn check_netns_loops(cx: &mut Cx, nodes: &BTreeMap<NodeName, Node>, source: &SourceMap) {
    for start in nodes.keys() {
        let mut chain = vec![start];
        let mut current = start;
        while let Some(Node {
            network_mode: Some(NetworkMode::Container(other)),
            ..
        }) = nodes.get(current)
        {
            let Some((next, _)) = nodes.get_key_value(other.as_str()) else {
                break;
            };
            if next == start {
                chain.push(next);
                let chain: Vec<String> = chain.iter().map(|n| n.to_string()).collect();
                cx.error(
                    source.nodes.get(start).copied().unwrap_or_default(),
                    ErrorKind::NetnsLoop {
                        node: start.to_string(),
                        chain: chain.join(" -> "),
                    },
                );
                break;
            }
            if chain.contains(&next) {
                // A loop further down the chain: reported from its own nodes.
                break;
            }
            chain.push(next);
            current = next;
        }
    }
}

/// Applies inheritance and checks the whole lab. Errors go to `cx`; the topology is
/// returned even then, for the caller to drop.
pub fn resolve(cx: &mut Cx, input: Input) -> Topology {
    let Input {
        name,
        prefix,
        mut mgmt,
        defaults,
        kinds,
        groups,
        nodes: raw_nodes,
        links: raw_links,
    } = input;

    for (section, raw) in std::iter::once(("topology.defaults".to_owned(), &defaults))
        .chain(
            kinds
                .iter()
                .map(|(k, _, raw)| (format!("topology.kinds.{k}"), raw)),
        )
        .chain(
            groups
                .iter()
                .map(|(g, _, raw)| (format!("topology.groups.{g}"), raw)),
        )
    {
        for (key, pos) in &raw.keys {
            let key: &'static str = match key.as_str() {
                "mgmt-ipv4" => "mgmt-ipv4",
                "mgmt-ipv6" => "mgmt-ipv6",
                _ => continue,
            };
            cx.error(
                *pos,
                ErrorKind::NodeOnly {
                    key,
                    section: section.clone(),
                },
            );
        }
    }
    for (group, _, raw) in &groups {
        if let Some((_, pos)) = &raw.group {
            cx.warn(
                *pos,
                WarningKind::IgnoredKey {
                    key: "group".to_owned(),
                    section: format!("topology.groups.{group}"),
                    why: "groups do not nest",
                },
            );
        }
    }
    for (kind, _, raw) in &kinds {
        if let Some((_, pos)) = &raw.kind {
            cx.warn(
                *pos,
                WarningKind::IgnoredKey {
                    key: "kind".to_owned(),
                    section: format!("topology.kinds.{kind}"),
                    why: "a kind's settings cannot change its kind",
                },
            );
        }
    }

    let empty = RawNode::default();
    let mut nodes = BTreeMap::new();
    let mut source = SourceMap {
        file: cx.file.clone(),
        ..SourceMap::default()
    };
    let mut used_kinds = Vec::new();
    for (node_name, pos, raw) in &raw_nodes {
        let group_of = |name: Option<&(String, Pos)>| {
            name.and_then(|(g, _)| groups.iter().find(|(n, _, _)| n == g))
                .map(|(_, _, raw)| raw)
        };
        let kind_text = raw
            .kind
            .clone()
            .or_else(|| group_of(raw.group.as_ref()).and_then(|g| g.kind.clone()))
            .or_else(|| group_of(defaults.group.as_ref()).and_then(|g| g.kind.clone()))
            .or_else(|| defaults.kind.clone());
        let Some((kind_text, kind_pos)) = kind_text else {
            cx.error(
                *pos,
                ErrorKind::NoKind {
                    node: node_name.to_string(),
                },
            );
            continue;
        };
        used_kinds.push(kind_text.clone());
        let Some(kind) = Kind::parse(&kind_text) else {
            cx.error(
                kind_pos,
                ErrorKind::UnsupportedKind {
                    node: node_name.to_string(),
                    kind: kind_text,
                },
            );
            continue;
        };
        let k = kinds
            .iter()
            .find(|(name, _, _)| *name == kind_text)
            .map(|(_, _, raw)| raw)
            .unwrap_or(&empty);
        let group = raw
            .group
            .clone()
            .or_else(|| k.group.clone())
            .or_else(|| defaults.group.clone());
        let g = group_of(group.as_ref()).unwrap_or(&empty);
        let levels: Levels<'_> = [raw, g, k, &defaults];
        let mut node = Node::new(node_name.clone(), kind);
        node.image = first(levels, |l| &l.image);
        node.cmd = first(levels, |l| &l.cmd);
        node.entrypoint = first(levels, |l| &l.entrypoint);
        node.exec = merged_unique(levels, |l| &l.exec);
        node.env = merged_map(levels, |l| &l.env);
        node.env_files = merged_unique(levels, |l| &l.env_files);
        node.binds = merged_binds(levels);
        node.labels = merged_map(levels, |l| &l.labels);
        node.sysctls = merged_map(levels, |l| &l.sysctls);
        node.mgmt_ipv4 = raw.mgmt_ipv4.map(|(a, _)| a);
        node.mgmt_ipv6 = raw.mgmt_ipv6.map(|(a, _)| a);
        node.ports = levels
            .into_iter()
            .map(|l| &l.ports)
            .find(|p| !p.is_empty())
            .cloned()
            .unwrap_or_default();
        node.user = first(levels, |l| &l.user);
        node.network_mode = first(levels, |l| &l.network_mode);
        node.startup_delay = first(levels, |l| &l.startup_delay).unwrap_or(0);
        node.group = group.map(|(g, _)| g);
        node.memory = first(levels, |l| &l.memory);
        node.cpu_millis = first(levels, |l| &l.cpu_millis);

        match kind {
            Kind::Bridge => {
                // A bridge is no container: it keeps only what describes it, not the
                // image or commands `defaults` give every container.
                let mut bridge = Node::new(node_name.clone(), kind);
                bridge.labels = std::mem::take(&mut node.labels);
                bridge.group = node.group.take();
                node = bridge;
                // The bridge is a link in the host namespace named after the node.
                if let Err(error) = IfName::try_from(node_name.as_str()) {
                    cx.error(
                        *pos,
                        ErrorKind::Name {
                            what: format!("bridge {node_name}"),
                            error,
                        },
                    );
                }
                for (key, key_pos) in &raw.keys {
                    if !BRIDGE_KEYS.contains(&key.as_str()) {
                        cx.warn(
                            *key_pos,
                            WarningKind::NotForBridge {
                                node: node_name.to_string(),
                                key: key.clone(),
                            },
                        );
                    }
                }
            }
            Kind::Linux => {
                if node.image.is_none() {
                    cx.error(
                        *pos,
                        ErrorKind::NoImage {
                            node: node_name.to_string(),
                        },
                    );
                }
            }
        }
        if let Err(error) = crate::names::ContainerName::new(&prefix, &name, node_name) {
            cx.error(
                *pos,
                ErrorKind::Name {
                    what: format!("node {node_name}"),
                    error,
                },
            );
        }
        source.nodes.insert(node_name.clone(), *pos);
        nodes.insert(node_name.clone(), node);
    }
    for (kind, pos, _) in &kinds {
        if Kind::parse(kind).is_none() && !used_kinds.contains(kind) {
            cx.warn(*pos, WarningKind::UnusedKind { kind: kind.clone() });
        }
    }

    check_netns_loops(cx, &nodes, &source);
    let mgmt_bridge = mgmt.as_ref().and_then(|m| m.bridge.clone());
    let links = links(cx, &nodes, raw_links, mgmt_bridge, &mut source);

    // The management network: on when the file declares it or something needs it.
    let needs_mgmt = nodes
        .values()
        .any(|n| n.mgmt_ipv4.is_some() || n.mgmt_ipv6.is_some())
        || links.iter().any(|l| l.kind == LinkKind::MgmtNet);
    if mgmt.is_none() && needs_mgmt {
        mgmt = Some(Mgmt::default());
    }
    if let Some(m) = &mgmt {
        check_mgmt_addresses(cx, m, &raw_nodes);
        check_eth0(cx, &nodes, &links, &source);
    }
    for node in nodes.values().filter(|n| n.kind == Kind::Bridge) {
        let linked = links.iter().any(|l| {
            l.endpoints
                .iter()
                .any(|e| e.attach == Attach::Node(node.name.clone()))
        });
        if !linked {
            let pos = source.nodes.get(&node.name).copied().unwrap_or_default();
            cx.warn(
                pos,
                WarningKind::BridgeWithoutLinks {
                    node: node.name.to_string(),
                },
            );
        }
    }

    Topology {
        name,
        prefix,
        mgmt,
        nodes,
        links,
        source,
    }
}

fn links(
    cx: &mut Cx,
    nodes: &BTreeMap<NodeName, Node>,
    raw_links: Vec<RawLink>,
    mgmt_bridge: Option<IfName>,
    source: &mut SourceMap,
) -> Vec<Link> {
    let mut out = Vec::new();
    // Interfaces per namespace, with the line that first used each. The host namespace
    // already holds the bridges, named after their nodes.
    let mut seen: HashMap<(Ns, IfName), usize> = HashMap::new();
    for node in nodes.values().filter(|n| n.kind == Kind::Bridge) {
        if let Ok(ifname) = IfName::try_from(node.name.as_str()) {
            let line = source.nodes.get(&node.name).map_or(0, |p| p.line);
            seen.insert((Ns::Host, ifname), line);
        }
    }
    for raw in raw_links {
        let mut ends = Vec::new();
        for end in &raw.endpoints {
            if let Some(e) = endpoint(cx, nodes, end) {
                ends.push(e);
            }
        }
        let Ok([a, b]) = <[Endpoint; 2]>::try_from(ends) else {
            continue;
        };
        let mut clash = false;
        for (end, raw_end) in [(&a, &raw.endpoints[0]), (&b, &raw.endpoints[1])] {
            let ns = ns_of(nodes, &end.attach);
            if end.ifname.as_str() == "lo" {
                cx.error(
                    raw_end.pos,
                    ErrorKind::ReservedInterface {
                        endpoint: raw_end.text(),
                        why: "lo is the loopback interface every namespace has",
                    },
                );
                clash = true;
                continue;
            }
            if ns == Ns::Host && mgmt_bridge.as_ref() == Some(&end.ifname) {
                cx.error(
                    raw_end.pos,
                    ErrorKind::ReservedInterface {
                        endpoint: raw_end.text(),
                        why: "that is the name of the management bridge (mgmt: bridge)",
                    },
                );
                clash = true;
                continue;
            }
            let key = (ns.clone(), end.ifname.clone());
            if let Some(first_line) = seen.get(&key) {
                cx.error(
                    raw_end.pos,
                    ErrorKind::InterfaceUsedTwice {
                        owner: ns.describe(),
                        ifname: end.ifname.to_string(),
                        first_line: *first_line,
                    },
                );
                clash = true;
            } else {
                seen.insert(key, raw_end.pos.line);
            }
        }
        let link = Link {
            kind: raw.kind,
            endpoints: [a, b],
            mtu: raw.mtu.unwrap_or(DEFAULT_MTU),
            mtu_written: raw.mtu.is_some(),
            labels: raw.labels,
            vars: raw.vars,
            impairments: raw.impairments,
        };
        for side in 0..2 {
            if let Err(error) = link.impairments_of(side).check() {
                cx.error(
                    raw.endpoints[side].pos,
                    ErrorKind::Impairment {
                        what: format!("endpoint {}", raw.endpoints[side].text()),
                        error,
                    },
                );
                clash = true;
            }
        }
        if !clash {
            source.links.push(raw.pos);
            out.push(link);
        }
    }
    out
}

fn endpoint(cx: &mut Cx, nodes: &BTreeMap<NodeName, Node>, raw: &RawEndpoint) -> Option<Endpoint> {
    let attach = match &raw.attach {
        RawAttach::Host => Attach::Host,
        RawAttach::MgmtNet => Attach::MgmtNet,
        RawAttach::Node(name) => {
            let found = NodeName::try_from(name.as_str())
                .ok()
                .filter(|n| nodes.contains_key(n));
            match found {
                Some(n) => Attach::Node(n),
                None => {
                    cx.error(
                        raw.pos,
                        ErrorKind::UnknownNode {
                            node: name.clone(),
                            endpoint: raw.text(),
                        },
                    );
                    return None;
                }
            }
        }
    };
    Some(Endpoint {
        attach,
        ifname: raw.ifname.clone(),
        mac: raw.mac,
        impairments: raw.impairments.clone(),
    })
}

fn check_mgmt_addresses(cx: &mut Cx, mgmt: &Mgmt, raw_nodes: &[(NodeName, Pos, RawNode)]) {
    let mut v4: HashMap<std::net::Ipv4Addr, &NodeName> = HashMap::new();
    let mut v6: HashMap<std::net::Ipv6Addr, &NodeName> = HashMap::new();
    for (name, _, raw) in raw_nodes {
        if let Some((addr, pos)) = raw.mgmt_ipv4 {
            if let Some(subnet) = mgmt.ipv4_subnet.filter(|s| !s.contains(addr)) {
                cx.error(
                    pos,
                    ErrorKind::MgmtOutsideSubnet {
                        what: format!("node {name}: mgmt-ipv4"),
                        addr: addr.to_string(),
                        subnet_key: "ipv4-subnet",
                        subnet: subnet.to_string(),
                    },
                );
            }
            if let Some(other) = v4.insert(addr, name) {
                cx.error(
                    pos,
                    ErrorKind::MgmtAddressTwice {
                        what: format!("node {name}: mgmt-ipv4"),
                        addr: addr.to_string(),
                        other: other.to_string(),
                    },
                );
            }
        }
        if let Some((addr, pos)) = raw.mgmt_ipv6 {
            if let Some(subnet) = mgmt.ipv6_subnet.filter(|s| !s.contains(addr)) {
                cx.error(
                    pos,
                    ErrorKind::MgmtOutsideSubnet {
                        what: format!("node {name}: mgmt-ipv6"),
                        addr: addr.to_string(),
                        subnet_key: "ipv6-subnet",
                        subnet: subnet.to_string(),
                    },
                );
            }
            if let Some(other) = v6.insert(addr, name) {
                cx.error(
                    pos,
                    ErrorKind::MgmtAddressTwice {
                        what: format!("node {name}: mgmt-ipv6"),
                        addr: addr.to_string(),
                        other: other.to_string(),
                    },
                );
            }
        }
    }
}

/// With a management network, a linux node's eth0 is its management interface (as in
/// containerlab), so a link cannot use that name.
fn check_eth0(cx: &mut Cx, nodes: &BTreeMap<NodeName, Node>, links: &[Link], source: &SourceMap) {
    for (index, link) in links.iter().enumerate() {
        for end in &link.endpoints {
            let Attach::Node(name) = &end.attach else {
                continue;
            };
            let Some(node) = nodes.get(name) else {
                continue;
            };
            let has_mgmt = node.kind == Kind::Linux
                && !matches!(
                    node.network_mode,
                    Some(NetworkMode::None | NetworkMode::Host | NetworkMode::Container(_))
                );
            if has_mgmt && end.ifname.as_str() == "eth0" {
                cx.error(
                    source.links.get(index).copied().unwrap_or_default(),
                    ErrorKind::ReservedInterface {
                        endpoint: format!("{name}:eth0"),
                        why: "eth0 is the node's management interface while the lab has a management network",
                    },
                );
            }
        }
    }
}
