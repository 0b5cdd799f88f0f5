//! A topology file, from text to [`Topology`]: environment expansion, YAML with positions,
//! each section read and checked, then inheritance and the checks across the lab.

mod link;
mod node;
mod read;
mod resolve;

use std::io;
use std::path::{Path, PathBuf};

use ipnetwork::{Ipv4Network, Ipv6Network};

use crate::error::{Error, ErrorKind, Errors, Location, Warning, WarningKind};
use crate::expand::expand;
use crate::model::{Mgmt, Topology};
use crate::names::{IfName, LabName, NodeName, Prefix};
use crate::yaml::{self, Node, Pos};
use read::{Cx, get};

pub use node::memory;

const TOP_KEYS: &[&str] = &["name", "prefix", "mgmt", "topology"];
const IGNORED_TOP_KEYS: &[(&str, &str)] = &[(
    "settings",
    "it configures containerlab's certificate authority",
)];
const TOPOLOGY_KEYS: &[&str] = &["nodes", "links", "kinds", "groups", "defaults"];
const MGMT_KEYS: &[&str] = &[
    "network",
    "bridge",
    "ipv4-subnet",
    "ipv6-subnet",
    "ipv4-gw",
    "ipv6-gw",
    "ipv4-range",
    "ipv6-range",
    "mtu",
    "external-access",
];
const IGNORED_MGMT_KEYS: &[(&str, &str)] =
    &[("driver-opts", "they are options of docker's network driver")];

/// A parsed topology and what Berth ignored or filled in.
#[derive(Debug, Clone)]
pub struct Parsed {
    pub topology: Topology,
    pub warnings: Vec<Warning>,
}

/// A topology file that could not be read or is not valid.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("read topology file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Invalid(Errors),
}

/// Reads and parses a topology file, expanding variables from the process environment.
pub fn parse_file(path: &Path) -> Result<Parsed, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_str(&text, Some(path), &|k| std::env::var(k).ok()).map_err(LoadError::Invalid)
}

/// Parses topology text. `file` only names the place in messages; `env` looks variables
/// up (the process environment for a file, a map in tests).
pub fn parse_str(
    text: &str,
    file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Parsed, Errors> {
    let mut cx = Cx::new(file.map(Path::to_owned));
    let one = |cx: &Cx, pos: Pos, kind: ErrorKind| {
        Errors(vec![Error {
            at: Location {
                file: cx.file.clone(),
                pos,
            },
            kind,
        }])
    };
    let expanded = expand(text, env).map_err(|(pos, e)| one(&cx, pos, ErrorKind::Expand(e)))?;
    for (pos, name) in expanded.unset {
        cx.warn(pos, WarningKind::UnsetVariable { name });
    }
    let root = match yaml::load(&expanded.text) {
        Ok(Some(root)) => root,
        Ok(None) => return Err(one(&cx, Pos { line: 1, column: 1 }, ErrorKind::Empty)),
        Err(e) => return Err(one(&cx, e.pos, ErrorKind::Yaml(e.error))),
    };
    let topology = read_file(&mut cx, &root);
    if cx.errors.is_empty() {
        if let Some(topology) = topology {
            let mut warnings = cx.warnings;
            warnings.sort_by_key(|w| w.at.pos);
            return Ok(Parsed { topology, warnings });
        }
    }
    let mut errors = cx.errors;
    errors.sort_by_key(|e| e.at.pos);
    Err(Errors(errors))
}

fn read_file(cx: &mut Cx, root: &Node) -> Option<Topology> {
    let entries = cx.map(root, "the file")?;
    cx.check_keys(entries, "the file", TOP_KEYS, IGNORED_TOP_KEYS);

    let name = match get(entries, "name") {
        Some(n) => match cx.required(n, "name", "a lab name") {
            Some(text) => match LabName::try_from(text.as_str()) {
                Ok(name) => Some(name),
                Err(error) => {
                    cx.error(
                        n.pos,
                        ErrorKind::Name {
                            what: "name".to_owned(),
                            error,
                        },
                    );
                    None
                }
            },
            None => None,
        },
        None => {
            cx.error(
                root.pos,
                ErrorKind::MissingKey {
                    key: "name",
                    section: "the file".to_owned(),
                },
            );
            None
        }
    };
    let prefix = match get(entries, "prefix") {
        // `prefix: ""` and an empty `prefix:` both mean no prefix.
        Some(p) => match cx.string(p, "prefix") {
            None => Some(Prefix::Empty),
            Some(text) => match Prefix::try_from(text.as_str()) {
                Ok(prefix) => Some(prefix),
                Err(error) => {
                    cx.error(
                        p.pos,
                        ErrorKind::Name {
                            what: "prefix".to_owned(),
                            error,
                        },
                    );
                    None
                }
            },
        },
        None => Some(Prefix::Default),
    };
    let mgmt = get(entries, "mgmt").and_then(|m| mgmt(cx, m));

    let Some(topo) = get(entries, "topology") else {
        cx.error(
            root.pos,
            ErrorKind::MissingKey {
                key: "topology",
                section: "the file".to_owned(),
            },
        );
        return None;
    };
    let topo_entries = cx.map(topo, "topology")?;
    cx.check_keys(topo_entries, "topology", TOPOLOGY_KEYS, &[]);
    let defaults = get(topo_entries, "defaults")
        .map(|d| node::read(cx, d, "topology.defaults"))
        .unwrap_or_default();
    let kinds = get(topo_entries, "kinds")
        .map(|k| node::named(cx, k, "topology.kinds"))
        .unwrap_or_default();
    let groups = get(topo_entries, "groups")
        .map(|g| node::named(cx, g, "topology.groups"))
        .unwrap_or_default();
    let mut nodes = Vec::new();
    if let Some(list) = get(topo_entries, "nodes") {
        if let Some(node_entries) = cx.map(list, "topology.nodes") {
            for (key, value) in node_entries {
                let Some(text) = key.key_text() else { continue };
                let raw = node::read(cx, value, &format!("node {text}"));
                match NodeName::try_from(text) {
                    Ok(name) => nodes.push((name, key.pos, raw)),
                    Err(error) => cx.error(
                        key.pos,
                        ErrorKind::Name {
                            what: "topology.nodes".to_owned(),
                            error,
                        },
                    ),
                }
            }
        }
    }
    let links = get(topo_entries, "links")
        .map(|l| link::read_all(cx, l))
        .unwrap_or_default();

    let input = resolve::Input {
        name: name?,
        prefix: prefix?,
        mgmt,
        defaults,
        kinds,
        groups,
        nodes,
        links,
    };
    Some(resolve::resolve(cx, input))
}

fn mgmt(cx: &mut Cx, node: &Node) -> Option<Mgmt> {
    let entries = cx.map(node, "mgmt")?;
    cx.check_keys(entries, "mgmt", MGMT_KEYS, IGNORED_MGMT_KEYS);
    let mut m = Mgmt {
        declared: true,
        ..Mgmt::default()
    };
    for (key, value) in entries {
        let Some(k) = key.key_text() else { continue };
        let what = format!("mgmt: {k}");
        match k {
            "network" => m.network = cx.string(value, &what),
            "bridge" => {
                m.bridge = cx.typed(
                    value,
                    &what,
                    |s: &str| IfName::try_from(s),
                    |what, error| ErrorKind::Name { what, error },
                )
            }
            "ipv4-subnet" => {
                m.ipv4_subnet =
                    cx.number::<Ipv4Network>(value, &what, "an IPv4 prefix such as 198.18.100.0/24")
            }
            "ipv6-subnet" => {
                m.ipv6_subnet =
                    cx.number::<Ipv6Network>(value, &what, "an IPv6 prefix such as fd00:b:e:1::/64")
            }
            "ipv4-gw" => m.ipv4_gw = cx.number(value, &what, "an IPv4 address"),
            "ipv6-gw" => m.ipv6_gw = cx.number(value, &what, "an IPv6 address"),
            "ipv4-range" => m.ipv4_range = cx.number::<Ipv4Network>(value, &what, "an IPv4 prefix"),
            "ipv6-range" => m.ipv6_range = cx.number::<Ipv6Network>(value, &what, "an IPv6 prefix"),
            "mtu" => {
                m.mtu = cx.number::<u32>(value, &what, "an MTU from 68 to 65535");
                if let Some(mtu) = m.mtu.filter(|v| !(68..=65535).contains(v)) {
                    cx.error(
                        value.pos,
                        ErrorKind::BadValue {
                            what,
                            value: mtu.to_string(),
                            expected: "an MTU from 68 to 65535",
                        },
                    );
                }
            }
            "external-access" => m.external_access = cx.boolean(value, &what),
            _ => {}
        }
    }
    Some(m)
}
