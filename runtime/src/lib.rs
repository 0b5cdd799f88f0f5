//! The Berth container runtime: isolated containers on top of Berth's CNI plugins, run in
//! the foreground or detached under a monitor.
//!
//! The library does the work; the `berth` binary is a thin clap front end. Layers, top down:
//! - [`commands`]: one module per `berth` command;
//! - [`lifecycle`]: what a container goes through (request, create, start, release);
//! - [`sandbox`]: isolation (namespaces, root filesystem, init, cgroups, capabilities,
//!   seccomp, user namespaces); [`state`]: the state roots, the lock, container records and
//!   logs; [`network`]: CNI networks and attachments, name files, ports, firewall reload;
//! - [`names`], [`timing`]: leaves every layer uses.

pub mod commands;
pub mod lifecycle;
pub mod names;
pub mod network;
pub mod sandbox;
pub mod state;
pub mod timing;
