//! `berth-cni`: the CNI 1.1 specification for Berth's plugins and runtime.
//!
//! - Plugin side: [`plugin::run`] reads `CNI_*` and stdin, negotiates the version, dispatches
//!   to a [`plugin::Plugin`] and prints one result or error JSON.
//! - Delegation to IPAM plugins: [`delegate`].
//! - Runtime side, equivalent to libcni: [`invoke`].

pub mod args;
pub mod conf;
pub mod delegate;
pub mod error;
pub mod exec;
pub mod gojson;
pub mod invoke;
pub mod names;
pub mod plugin;
pub mod result;
pub mod version;

pub use args::{CmdArgs, CniArgs, Command, NetworkArgs};
pub use conf::{Attachment, IpamConf, NetConf, NetConfList};
pub use error::{CniError, ErrorCode};
pub use names::{ContainerId, HostLinkName, IfName, NetworkName};
pub use plugin::{Plugin, run};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use version::CniVersion;
