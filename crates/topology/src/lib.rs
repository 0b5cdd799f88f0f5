//! Network lab topologies in containerlab's format, for `berth lab`.
//!
//! A pure library: it reads a topology file ([`parse_file`], [`parse_str`]), checks it and
//! resolves containerlab's inheritance into a [`Topology`], and renders one back
//! ([`render::save`], [`render::dot`], [`render::mermaid`], [`render::json`]). It creates
//! nothing; the runtime's `lab` commands deploy what it describes.
//!
//! Every error names its file, line and column and says what was expected; everything
//! Berth ignores is reported as a [`Warning`] with its place.
//!
//! What Berth reads (containerlab's docs/manual/topo-def-file.md, nodes.md):
//! `name`, `prefix`, `mgmt`, `topology.defaults`, `topology.kinds`, `topology.nodes` of kind
//! `linux` and `bridge`, and `topology.links` in the brief and the extended forms (`veth`,
//! `host`, `mgmt-net`). Berth's own extension is the `impairments` block on a link or an
//! endpoint (see [`impair`]).

pub mod command;
pub mod error;
pub mod expand;
pub mod impair;
pub mod model;
pub mod names;
mod parse;
pub mod render;
pub mod yaml;

pub use error::{Error, ErrorKind, Errors, Location, Warning, WarningKind};
pub use impair::{Delay, Impairments, Percent, Rate};
pub use model::{
    Attach, Bind, DEFAULT_MTU, Endpoint, Interface, Kind, Link, LinkKind, Mgmt, NetworkMode, Node,
    PortSpec, Protocol, SourceMap, Topology,
};
pub use names::{
    ContainerName, IfName, LabName, MacAddr, NameError, NodeInterface, NodeName, Prefix,
};
pub use parse::{LoadError, Parsed, memory, parse_file, parse_str};
