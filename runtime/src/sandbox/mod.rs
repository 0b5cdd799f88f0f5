//! Isolation: what makes a process a container. Nothing here knows of records, networks or
//! commands: the layers above hand the sandbox what it needs (paths, ids, limits, maps).

pub mod caps;
pub mod cgroups;
pub mod fork;
pub mod init;
pub mod namespaces;
pub mod pid;
pub mod process;
pub mod rootfs;
pub mod sealed;
pub mod seccomp;
pub mod user;
pub mod userns;
