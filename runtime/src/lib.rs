//! The Berth container runtime: isolated containers on top of Berth's CNI plugins, run in
//! the foreground or detached under a monitor.
//!
//! The library does the work; the `berth` binary is a thin clap front end. Modules, in the
//! order a `berth run` uses them:
//! - [`config`]: `berth run` flags → validated [`config::RunSpec`] → [`config::ContainerConfig`];
//! - [`names`]: container ids and names (images: `berth_image`);
//! - [`state`]: the state roots, the lock, container records; [`clock`]: timestamps;
//! - [`network`]: network definitions, the default network, CNI attach/detach/GC, `-p`,
//!   the name files (`/etc/hosts`, …);
//! - [`container`]: create, start, finish, release; [`removal`]: `rm`, and the disposal
//!   `--rm` and `system prune` share;
//!   [`listing`]: `ps`, `inspect`;
//! - [`monitor`]: `run -d` and the monitor process; [`logs`]: the container log;
//! - [`exec`], [`stop`], [`start`] (also `restart`), [`attach`], [`prune`]: the other
//!   lifecycle commands; [`timing`]: opt-in step timings;
//! - [`process`]: clone3 of the init, the handshake, signal forwarding, the pty;
//! - [`init`]: the container side (`berth init`, PID 1 until it execs the command, and
//!   `berth exec-init`), both run from a [`sealed`] copy of the binary;
//! - [`namespaces`], [`userns`], [`rootfs`], [`cgroups`], [`caps`], [`seccomp`]:
//!   isolation.

pub mod attach;
pub mod caps;
pub mod cgroups;
pub mod clock;
pub mod config;
pub mod container;
pub mod exec;
pub mod fork;
pub mod init;
pub mod listing;
pub mod logs;
pub mod monitor;
pub mod names;
pub mod namespaces;
pub mod network;
pub mod process;
pub mod prune;
pub mod removal;
pub mod rootfs;
pub mod sealed;
pub mod seccomp;
pub mod start;
pub mod state;
pub mod stop;
pub mod timing;
pub mod userns;
