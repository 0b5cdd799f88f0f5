//! The Berth container runtime: isolated containers on top of Berth's CNI plugins, run in
//! the foreground or detached under a monitor. The library does the work; the `berth` binary
//! is a thin clap front end that parses into the library's requests.
//!
//! Layers, top down (a module only imports from its own layer's leaves or from below; no
//! module imports another in a circle):
//! - [`lab`]: network labs from containerlab topology files, built from the commands;
//! - [`commands`]: one module and one error type per `berth` command;
//! - [`lifecycle`]: what a container goes through, the steps commands share (request,
//!   create, start, release, signal);
//! - [`network`]: CNI networks, a container's attachments, name files, ports, firewall
//!   reload; it reads and writes records through [`state`];
//! - [`state`]: the state roots, the lock, the stored schema, records and logs;
//! - [`sandbox`]: isolation (namespaces, user namespaces, root filesystem, the init, clone3
//!   and supervision, pids, cgroups, capabilities, seccomp), which knows nothing of records
//!   or networks;
//! - [`names`], [`timing`]: leaves every layer uses.
//!
//! Images are the `berth_image` crate's.

pub mod commands;
pub mod lab;
pub mod lifecycle;
pub mod names;
pub mod network;
pub mod sandbox;
pub mod state;
pub mod timing;
