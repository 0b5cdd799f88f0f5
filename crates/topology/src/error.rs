//! What is wrong with a topology file, and where: every error and warning carries the
//! file, line and column it is about.

use std::fmt;
use std::path::PathBuf;

use crate::command::SplitError;
use crate::expand::ExpandError;
use crate::impair::ImpairError;
use crate::model::Kind;
use crate::names::NameError;
use crate::yaml::{Pos, YamlError};

/// Why a topology file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("{0}")]
    Yaml(YamlError),
    #[error("{0}")]
    Expand(ExpandError),
    #[error("the file has no content: expected a mapping with `name` and `topology`")]
    Empty,
    #[error("{what}: expected {expected}, found {found}")]
    Type {
        what: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("unknown key {key:?} in {section}: {}expected one of {}", did_you_mean(.suggestion), .expected.join(", "))]
    UnknownKey {
        key: String,
        section: String,
        expected: &'static [&'static str],
        /// The known key closest to the typo, if one is close.
        suggestion: Option<&'static str>,
    },
    #[error("{section}: `{key}` is required")]
    MissingKey { key: &'static str, section: String },
    #[error("{what}: {value:?} is not {expected}")]
    BadValue {
        what: String,
        value: String,
        expected: &'static str,
    },
    #[error("{what}: {error}")]
    Name { what: String, error: NameError },
    #[error("{what}: {error}")]
    Impairment { what: String, error: ImpairError },
    #[error("{what}: {error}")]
    Command { what: String, error: SplitError },
    #[error("node {node}: unsupported kind {kind:?}: Berth deploys {}", Kind::SUPPORTED.join(" and "))]
    UnsupportedKind { node: String, kind: String },
    #[error(
        "node {node} has no kind: set `kind` on the node or in topology.defaults (one of {})",
        Kind::SUPPORTED.join(", ")
    )]
    NoKind { node: String },
    #[error(
        "node {node} (kind linux) has no image: set `image` on the node, in topology.kinds.linux or in topology.defaults"
    )]
    NoImage { node: String },
    #[error(
        "`{key}` can only be set on a node: in {section} it would give every node the same value"
    )]
    NodeOnly { key: &'static str, section: String },
    #[error("a link has exactly 2 endpoints, found {found}")]
    EndpointCount { found: usize },
    #[error("endpoint {text:?}: expected \"node:interface\"")]
    BadEndpoint { text: String },
    #[error(
        "endpoint {text:?}: {what} endpoints are not supported (Berth links nodes, `host` and `mgmt-net`)"
    )]
    UnsupportedEndpoint { text: String, what: String },
    #[error(
        "unsupported link type {kind:?}: Berth supports veth, host and mgmt-net (macvlan, macvtap, vxlan, vxlan-stitch and dummy are containerlab's alone)"
    )]
    UnsupportedLinkType { kind: String },
    #[error("link type {kind} takes {expected}")]
    LinkShape {
        kind: &'static str,
        expected: &'static str,
    },
    #[error("endpoint {endpoint}: there is no node {node:?} in topology.nodes")]
    UnknownNode { node: String, endpoint: String },
    #[error(
        "interface {ifname} of {owner} is used twice (first on line {first_line}): each interface belongs to one link"
    )]
    InterfaceUsedTwice {
        owner: String,
        ifname: String,
        first_line: usize,
    },
    #[error("endpoint {endpoint}: {why}")]
    ReservedInterface { endpoint: String, why: &'static str },
    #[error("{what}: {addr} is not inside mgmt {subnet_key} {subnet}")]
    MgmtOutsideSubnet {
        what: String,
        addr: String,
        subnet_key: &'static str,
        subnet: String,
    },
    #[error("{what}: address {addr} is already node {other}'s")]
    MgmtAddressTwice {
        what: String,
        addr: String,
        other: String,
    },
    #[error("node {node}: network-mode container: makes a loop ({chain})")]
    NetnsLoop { node: String, chain: String },
    #[error("a link cannot join {a} and {b}: one end must be a node")]
    NoNodeEnd { a: &'static str, b: &'static str },
}

fn did_you_mean(suggestion: &Option<&'static str>) -> String {
    suggestion
        .map(|s| format!("did you mean {s:?}? "))
        .unwrap_or_default()
}

/// Something Berth ignores or fills in, said so the user is not surprised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WarningKind {
    #[error("key {key:?} in {section} is ignored: {why}")]
    IgnoredKey {
        key: String,
        section: String,
        why: &'static str,
    },
    #[error("${{{name}}} is not set and has no default: left as written")]
    UnsetVariable { name: String },
    #[error("bridge {node} has no links")]
    BridgeWithoutLinks { node: String },
    #[error(
        "kind {kind:?} in topology.kinds is not one Berth deploys and no node uses it: ignored"
    )]
    UnusedKind { kind: String },
    #[error("node {node}: `{key}` has no effect on a bridge node")]
    NotForBridge { node: String, key: String },
}

/// Where a diagnostic points.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    pub file: Option<PathBuf>,
    pub pos: Pos,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.file {
            Some(file) => write!(f, "{}:{}", file.display(), self.pos),
            None => write!(f, "line {}, column {}", self.pos.line, self.pos.column),
        }
    }
}

/// One error, with its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {kind}")]
pub struct Error {
    pub at: Location,
    pub kind: ErrorKind,
}

/// One warning, with its place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: warning: {kind}")]
pub struct Warning {
    pub at: Location,
    pub kind: WarningKind,
}

/// Every error found in a file, in the order of the file (parsing goes on after the first
/// error wherever the rest can still be checked, so one run shows them all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Errors(pub Vec<Error>);

impl Errors {
    pub fn iter(&self) -> impl Iterator<Item = &Error> {
        self.0.iter()
    }

    pub fn first(&self) -> Option<&Error> {
        self.0.first()
    }
}

/// All errors on one line, separated by "; ", so a CLI prints `berth: …` once.
impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Errors {}
