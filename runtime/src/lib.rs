//! The Berth container runtime: isolated containers, run in the foreground (phase 1), on top
//! of Berth's CNI plugins (phase 2).
//!
//! The library does the work; the `berth` binary is a thin clap front end. Modules, in the
//! order a `berth run` uses them:
//! - [`config`]: `berth run` flags → validated [`config::RunSpec`] → [`config::ContainerConfig`];
//! - [`names`]: container ids and names, image names;
//! - [`image`], [`layer`]: the image store, the offline busybox image, tarball / docker-save /
//!   OCI import;
//! - [`state`]: the state roots, the lock, container records; [`clock`]: timestamps;
//! - [`container`]: the lifecycle (`run`, `ps`, `inspect`, `rm`);
//! - [`process`]: clone3 of the init, the handshake, signal forwarding, the pty;
//! - [`init`]: the container side (`berth init`, PID 1 until it execs the command);
//! - [`namespaces`], [`rootfs`], [`resolve`], [`cgroups`], [`caps`], [`seccomp`]: isolation.

pub mod caps;
pub mod cgroups;
pub mod clock;
pub mod config;
pub mod container;
pub mod image;
pub mod init;
pub mod layer;
pub mod names;
pub mod namespaces;
pub mod process;
pub mod resolve;
pub mod rootfs;
pub mod seccomp;
pub mod state;
