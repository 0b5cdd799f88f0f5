//! IP address management behind Berth's `host-local` plugin.
//!
//! The crate is a drop-in for the reference containernetworking `host-local` plugin: the same
//! configuration keys, the same allocation order and the same on-disk state, so a node can
//! switch between the two implementations without losing reservations.
//!
//! Layers, bottom up:
//! - [`range`] / [`range_set`]: wire `RangeConf` → validated [`Range`], grouped in a [`RangeSet`].
//! - [`config`]: the whole `ipam` section ([`HostLocalConf`] → [`IpamConfig`]); [`dns`] parses
//!   the optional `resolvConf` file.
//! - [`store`]: the [`Store`] trait, its lock guard and error; [`disk`]: [`DiskStore`], the
//!   reference's directory layout under `flock(2)`; [`index`]: its key index, which finds an
//!   attachment's addresses without reading every reservation.
//! - [`allocator`]: picks one address from a range set, round-robin after a hint.
//! - [`ops`]: what the plugin calls (ADD/DEL/CHECK/GC/STATUS), each under one lock.
//!
//! Every error type has a `kind()` returning [`ErrorKind`], so the plugin maps errors to CNI
//! codes in one table.

pub mod allocator;
pub mod config;
pub mod disk;
pub mod dns;
pub mod index;
pub mod key;
pub mod ops;
pub mod range;
pub mod range_set;
pub mod store;

#[cfg(test)]
mod compat_tests;

pub use allocator::{AllocError, Allocation, Allocator};
pub use config::{ConfigError, HostLocalConf, IpamConfig, Route, RouteConf};
pub use disk::{DiskStore, IndexMode};
pub use dns::{Dns, DnsError};
pub use key::{Lease, LeaseKey};
pub use ops::{IpamError, StatusError, allocate_all, check, gc, release, status};
pub use range::{Range, RangeConf, RangeError};
pub use range_set::{RangeSet, RangeSetError};
pub use store::{Store, StoreError, StoreGuard};

/// Coarse classification of every error in this crate, for the plugin's CNI error-code table.
///
/// Suggested mapping: `InvalidConfig` → 7, `Exhausted` → 50 (or 11 if the runtime should
/// retry), `Unavailable` → 50, `Io` → 5, `CheckFailed` → 999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The configuration or the request (requested IPs, network name) is invalid.
    InvalidConfig,
    /// A range set has no free address left.
    Exhausted,
    /// The requested address is taken, or the key already holds an address in the set.
    Unavailable,
    /// The on-disk store failed (create, read, write, lock).
    Io,
    /// CHECK found a different set of addresses than expected.
    CheckFailed,
}
