//! The resolved topology: inheritance applied, names validated, links checked.
//!
//! Everything the deployer needs and nothing it must check again. Where a value came from
//! in the file is kept apart, in [`SourceMap`], so that two topologies compare equal when
//! they describe the same lab (a saved file round-trips) and a later error (an image that
//! does not exist) can still name the node's line.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use ipnetwork::{Ipv4Network, Ipv6Network};

use crate::impair::Impairments;
use crate::names::{ContainerName, IfName, LabName, MacAddr, NameError, NodeName, Prefix};
use crate::yaml::Pos;

/// containerlab's MTU for links that set none (`links.DefaultLinkMTU`).
pub const DEFAULT_MTU: u32 = 9500;

/// The node kinds Berth deploys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A container (containerlab runs it privileged).
    Linux,
    /// A Linux bridge named after the node, in the lab's host namespace.
    Bridge,
}

impl Kind {
    pub const SUPPORTED: &'static [&'static str] = &["linux", "bridge"];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Linux => "linux",
            Kind::Bridge => "bridge",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "linux" => Some(Kind::Linux),
            "bridge" => Some(Kind::Bridge),
            _ => None,
        }
    }
}

/// The whole lab.
#[derive(Clone, Debug, PartialEq)]
pub struct Topology {
    pub name: LabName,
    pub prefix: Prefix,
    /// `None` unless the file asks for a management network (Berth's default is off).
    pub mgmt: Option<Mgmt>,
    pub nodes: BTreeMap<NodeName, Node>,
    pub links: Vec<Link>,
    /// Where things were written; not part of equality's intent, see the module doc.
    pub source: SourceMap,
}

/// Positions in the file, for messages after parsing.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    pub file: Option<PathBuf>,
    pub nodes: BTreeMap<NodeName, Pos>,
    /// One per link, in `Topology::links` order.
    pub links: Vec<Pos>,
}

/// Positions never make two topologies different.
impl PartialEq for SourceMap {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The management network, as containerlab's `mgmt:` block describes it. Values the file
/// leaves out stay `None`: the deployer picks them (Berth's tests use test-only subnets).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mgmt {
    pub network: Option<String>,
    pub bridge: Option<IfName>,
    pub ipv4_subnet: Option<Ipv4Network>,
    pub ipv6_subnet: Option<Ipv6Network>,
    pub ipv4_gw: Option<Ipv4Addr>,
    pub ipv6_gw: Option<Ipv6Addr>,
    pub ipv4_range: Option<Ipv4Network>,
    pub ipv6_range: Option<Ipv6Network>,
    pub mtu: Option<u32>,
    pub external_access: Option<bool>,
    /// True when the file had an `mgmt:` block; false when the network was turned on by a
    /// node's `mgmt-ipv4`/`mgmt-ipv6` or a `mgmt-net` link.
    pub declared: bool,
}

/// A node with `defaults` and `kinds` applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: NodeName,
    pub kind: Kind,
    pub image: Option<String>,
    /// As written; [`crate::command::split`] gives the argv, as containerlab's shlex does.
    pub cmd: Option<String>,
    pub entrypoint: Option<String>,
    /// Run in the node after the links are up, in order: defaults', kind's, then node's.
    pub exec: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub env_files: Vec<String>,
    pub binds: Vec<Bind>,
    pub labels: BTreeMap<String, String>,
    pub sysctls: BTreeMap<String, String>,
    pub mgmt_ipv4: Option<Ipv4Addr>,
    pub mgmt_ipv6: Option<Ipv6Addr>,
    pub ports: Vec<PortSpec>,
    pub user: Option<String>,
    pub network_mode: Option<NetworkMode>,
    /// Seconds to wait before starting the node.
    pub startup_delay: u32,
    pub group: Option<String>,
    /// Memory limit in bytes (docker's `RAMInBytes` units, as containerlab).
    pub memory: Option<u64>,
    /// CPU limit in thousandths of a CPU (`cpu: 1.5` is 1500).
    pub cpu_millis: Option<u32>,
}

impl Node {
    /// A node of `kind` with nothing else set.
    pub fn new(name: NodeName, kind: Kind) -> Node {
        Node {
            name,
            kind,
            image: None,
            cmd: None,
            entrypoint: None,
            exec: Vec::new(),
            env: BTreeMap::new(),
            env_files: Vec::new(),
            binds: Vec::new(),
            labels: BTreeMap::new(),
            sysctls: BTreeMap::new(),
            mgmt_ipv4: None,
            mgmt_ipv6: None,
            ports: Vec::new(),
            user: None,
            network_mode: None,
            startup_delay: 0,
            group: None,
            memory: None,
            cpu_millis: None,
        }
    }
}

/// `network-mode:` of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// The host's (for Berth: the lab host's) network namespace.
    Host,
    /// No management interface.
    None,
    /// The network namespace of another container (`container:NAME`): a node of this lab
    /// or an existing container.
    Container(String),
}

impl NetworkMode {
    pub fn as_written(&self) -> String {
        match self {
            NetworkMode::Host => "host".to_owned(),
            NetworkMode::None => "none".to_owned(),
            NetworkMode::Container(c) => format!("container:{c}"),
        }
    }
}

/// A bind mount `source:target[:options]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    /// As written; relative to the topology file's directory when not absolute.
    pub source: String,
    pub target: String,
    pub options: Option<String>,
}

impl Bind {
    /// The host path, relative ones taken from the directory of the topology file, as
    /// containerlab resolves them.
    pub fn source_path(&self, topology_dir: &Path) -> PathBuf {
        let source = Path::new(&self.source);
        if source.is_absolute() {
            source.to_owned()
        } else {
            topology_dir.join(source)
        }
    }

    pub fn as_written(&self) -> String {
        match &self.options {
            Some(o) => format!("{}:{}:{o}", self.source, self.target),
            None => format!("{}:{}", self.source, self.target),
        }
    }
}

/// A published port, `[host-ip:]host-port:container-port[/proto]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl PortSpec {
    pub fn as_written(&self) -> String {
        let proto = match self.protocol {
            Protocol::Tcp => String::new(),
            p => format!("/{}", p.as_str()),
        };
        match self.host_ip {
            Some(IpAddr::V6(ip)) => {
                format!("[{ip}]:{}:{}{proto}", self.host_port, self.container_port)
            }
            Some(ip) => format!("{ip}:{}:{}{proto}", self.host_port, self.container_port),
            None => format!("{}:{}{proto}", self.host_port, self.container_port),
        }
    }
}

/// The kind of a link (`type:` of the extended form).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// A veth pair between two nodes (bridges included).
    Veth,
    /// A veth pair between a node and the lab's host namespace.
    Host,
    /// A veth pair between a node and the management network's bridge.
    MgmtNet,
}

impl LinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkKind::Veth => "veth",
            LinkKind::Host => "host",
            LinkKind::MgmtNet => "mgmt-net",
        }
    }
}

/// What an endpoint is attached to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Attach {
    Node(NodeName),
    /// The host side of a `host` link.
    Host,
    /// The management bridge side of a `mgmt-net` link.
    MgmtNet,
}

impl Attach {
    /// The name used in a brief endpoint and in pictures.
    pub fn as_str(&self) -> &str {
        match self {
            Attach::Node(n) => n.as_str(),
            Attach::Host => "host",
            Attach::MgmtNet => "mgmt-net",
        }
    }
}

/// One end of a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub attach: Attach,
    pub ifname: IfName,
    pub mac: Option<MacAddr>,
    /// Impairments written on this endpoint; see [`Link::impairments_of`] for the effective
    /// ones.
    pub impairments: Impairments,
}

/// A link; `endpoints[0]` is the first endpoint written (containerlab's "a" side).
#[derive(Clone, Debug, PartialEq)]
pub struct Link {
    pub kind: LinkKind,
    pub endpoints: [Endpoint; 2],
    pub mtu: u32,
    /// True when the file named the MTU (a saved file then names it too).
    pub mtu_written: bool,
    pub labels: BTreeMap<String, String>,
    /// containerlab's free-form `vars`, scalars typed as YAML 1.2's core schema would.
    pub vars: serde_json::Map<String, serde_json::Value>,
    /// Impairments written on the link: both ends get them.
    pub impairments: Impairments,
}

impl Link {
    /// The effective impairments of endpoint `side` (0 or 1): the link's, with the
    /// endpoint's own keys overriding.
    pub fn impairments_of(&self, side: usize) -> Impairments {
        self.impairments
            .overridden_by(&self.endpoints[side % 2].impairments)
    }
}

/// An interface of a node, seen from that node.
#[derive(Clone, Debug, PartialEq)]
pub struct Interface<'a> {
    pub name: &'a IfName,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    pub impairments: Impairments,
    /// The far end.
    pub peer: &'a Endpoint,
    /// Index into `Topology::links`.
    pub link: usize,
    pub kind: LinkKind,
}

impl Topology {
    /// The container (and netns) name of a node, with containerlab's prefix rules.
    pub fn container_name(&self, node: &NodeName) -> Result<ContainerName, NameError> {
        ContainerName::new(&self.prefix, &self.name, node)
    }

    /// The interfaces a node gets from the links, in link order.
    pub fn interfaces(&self, node: &NodeName) -> Vec<Interface<'_>> {
        let mut out = Vec::new();
        for (index, link) in self.links.iter().enumerate() {
            for side in 0..2 {
                let end = &link.endpoints[side];
                if end.attach == Attach::Node(node.clone()) {
                    out.push(Interface {
                        name: &end.ifname,
                        mac: end.mac,
                        mtu: link.mtu,
                        impairments: link.impairments_of(side),
                        peer: &link.endpoints[1 - side],
                        link: index,
                        kind: link.kind,
                    });
                }
            }
        }
        out
    }

    /// The lab node whose network namespace `node` joins (`network-mode: container:X` with
    /// X a node of this lab, followed to the end of the chain); `None` when it has its own
    /// or shares one outside the lab. Chains are checked for loops when parsing.
    pub fn netns_owner(&self, node: &NodeName) -> Option<&NodeName> {
        let mut current = self.nodes.get(node)?;
        let mut owner = None;
        // A chain visits each node at most once; the bound keeps a hand-built loop finite.
        for _ in 0..self.nodes.len() {
            let Some(NetworkMode::Container(other)) = &current.network_mode else {
                break;
            };
            let Some((name, next)) = self.nodes.get_key_value(other.as_str()) else {
                break;
            };
            owner = Some(name);
            current = next;
        }
        owner
    }

    /// The nodes in the order to start them: a node after the node whose namespace it
    /// joins, otherwise by name.
    pub fn start_order(&self) -> Vec<&NodeName> {
        let depth = |name: &NodeName| {
            let mut depth = 0;
            let mut current = name;
            while let Some(Node {
                network_mode: Some(NetworkMode::Container(other)),
                ..
            }) = self.nodes.get(current)
            {
                match self.nodes.get_key_value(other.as_str()) {
                    Some((next, _)) if depth < self.nodes.len() => {
                        depth += 1;
                        current = next;
                    }
                    _ => break,
                }
            }
            depth
        };
        let mut order: Vec<&NodeName> = self.nodes.keys().collect();
        order.sort_by_key(|n| (depth(n), (*n).clone()));
        order
    }

    /// The link and side of `node:ifname`, for `impair`, `link … down` and `capture`.
    pub fn endpoint(&self, node: &NodeName, ifname: &IfName) -> Option<(usize, usize)> {
        self.links.iter().enumerate().find_map(|(index, link)| {
            link.endpoints
                .iter()
                .position(|e| e.attach == Attach::Node(node.clone()) && &e.ifname == ifname)
                .map(|side| (index, side))
        })
    }

    /// The link and side of a `NODE:INTERFACE` given on a command line.
    pub fn find(&self, at: &crate::names::NodeInterface) -> Option<(usize, usize)> {
        self.endpoint(&at.node, &at.ifname)
    }

    /// Nodes whose `labels` have `key` = `value`, for `exec --label`.
    pub fn nodes_with_label<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
    ) -> impl Iterator<Item = &'a Node> + 'a {
        self.nodes
            .values()
            .filter(move |n| n.labels.get(key).map(String::as_str) == Some(value))
    }

    /// Nodes matching a `--label` selector: `key=value`, or `key` alone for any value.
    pub fn select<'a>(&'a self, selector: &'a str) -> impl Iterator<Item = &'a Node> + 'a {
        let (key, value) = match selector.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (selector, None),
        };
        self.nodes
            .values()
            .filter(move |n| match (n.labels.get(key), value) {
                (Some(have), Some(want)) => have == want,
                (Some(_), None) => true,
                (None, _) => false,
            })
    }
}
