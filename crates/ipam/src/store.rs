//! The reservation store behind the allocator, its lock guard and its error type.
//!
//! All methods take `&self`: the store is a directory, and exclusion comes from the lock, not
//! from Rust borrows. Callers take [`Store::lock`] once per transaction (one ADD, DEL, GC) and
//! hold the guard across every range set, so concurrent plugins see each ADD as one step.

use std::io;
use std::net::IpAddr;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;

use rustix::fs::{FlockOperation, flock};

use crate::ErrorKind;
use crate::key::{Lease, LeaseKey};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid network name {name:?}: must be one path component, not . or ..")]
    InvalidNetworkName { name: String },
    #[error("create state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("open lock file {path}")]
    OpenLock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("flock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("lock {path} is already held through this store handle")]
    AlreadyLocked { path: PathBuf },
    #[error("create reservation {path}")]
    CreateReservation {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write reservation {path}")]
    WriteReservation {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("list state directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write {path}")]
    WriteLastReserved {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("remove reservation {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("remove round-robin hint {path}")]
    RemoveLastReserved {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state directory {path} is not writable")]
    NotWritable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl StoreError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::InvalidNetworkName { .. } => ErrorKind::InvalidConfig,
            _ => ErrorKind::Io,
        }
    }
}

/// Work a store does while it still holds its lock, just before the guard releases it.
pub(crate) trait BeforeUnlock: std::fmt::Debug {
    /// Cannot fail: anything it leaves undone must only cost the next holder time.
    fn before_unlock(&self);
}

/// Exclusive lock on a store; released when dropped.
///
/// For [`crate::DiskStore`] this is an `flock(LOCK_EX)` on the `lock` file's open file
/// description: it excludes other processes *and* other `DiskStore` handles in this process
/// (each has its own open file description), unlike fcntl record locks.
#[must_use = "the lock is released when the guard is dropped"]
#[derive(Debug)]
pub struct StoreGuard<'a> {
    fd: Option<BorrowedFd<'a>>,
    on_drop: Option<&'a std::cell::Cell<bool>>,
    before_unlock: Option<&'a dyn BeforeUnlock>,
}

impl<'a> StoreGuard<'a> {
    /// Guard for an fd already locked with `flock(LOCK_EX)`; `held` is reset on drop, after
    /// `before_unlock` ran under the lock.
    pub(crate) fn flocked(
        fd: BorrowedFd<'a>,
        held: &'a std::cell::Cell<bool>,
        before_unlock: &'a dyn BeforeUnlock,
    ) -> Self {
        StoreGuard {
            fd: Some(fd),
            on_drop: Some(held),
            before_unlock: Some(before_unlock),
        }
    }

    /// Guard for stores without a lock of their own (in-memory tests).
    #[cfg(test)]
    pub(crate) fn in_memory() -> StoreGuard<'static> {
        StoreGuard {
            fd: None,
            on_drop: None,
            before_unlock: None,
        }
    }
}

impl Drop for StoreGuard<'_> {
    fn drop(&mut self) {
        if let Some(store) = self.before_unlock {
            store.before_unlock();
        }
        if let Some(fd) = self.fd {
            // LOCK_UN on a valid fd we hold cannot fail in practice; if it somehow did, the
            // lock still goes away when the store (the last fd of that open file description)
            // is closed. Drop has no way to report it.
            let _ = flock(fd, FlockOperation::Unlock);
        }
        if let Some(held) = self.on_drop {
            held.set(false);
        }
    }
}

/// Reservation store. The allocator assumes the caller holds [`Store::lock`].
pub trait Store {
    /// Take the store's exclusive lock, blocking until it is free.
    fn lock(&self) -> Result<StoreGuard<'_>, StoreError>;

    /// Reserve `ip` for `key`. `Ok(false)` if it is already reserved (by anyone).
    fn reserve(&self, key: &LeaseKey, ip: IpAddr) -> Result<bool, StoreError>;

    /// Release `ip`, whoever holds it. `Ok(false)` if it was not reserved.
    fn release_ip(&self, ip: IpAddr) -> Result<bool, StoreError>;

    /// Release every address held by `key`; returns them. Old-format reservations (no
    /// ifname) of the same container are released only when none in the current format
    /// matched, as the reference does.
    fn release_by_key(&self, key: &LeaseKey) -> Result<Vec<IpAddr>, StoreError>;

    /// Every address held by `key` (current format, or old format with its container id).
    fn get_by_key(&self, key: &LeaseKey) -> Result<Vec<IpAddr>, StoreError> {
        Ok(self
            .leases()?
            .into_iter()
            .filter(|l| l.is_held_by(key))
            .map(|l| l.ip)
            .collect())
    }

    fn reserved(&self, ip: IpAddr) -> Result<bool, StoreError>;

    /// All reserved addresses (without reading who holds them).
    fn reserved_ips(&self) -> Result<Vec<IpAddr>, StoreError>;

    /// Nothing at all is reserved (not even by something in the way of an address, such as a
    /// directory named like one).
    fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.reserved_ips()?.is_empty())
    }

    /// All reservations with their holders.
    fn leases(&self) -> Result<Vec<Lease>, StoreError>;

    /// Round-robin hint for range set `set`. `None` when absent or unreadable as an IP.
    fn last_reserved(&self, set: usize) -> Result<Option<IpAddr>, StoreError>;

    fn set_last_reserved(&self, set: usize, ip: IpAddr) -> Result<(), StoreError>;

    /// Remove the round-robin hints of every range set (also of sets a previous configuration
    /// had). Absent hints are not an error.
    fn forget_last_reserved(&self) -> Result<(), StoreError>;
}

/// Shared by stores: current-format matches first, old format only as a fallback.
pub(crate) fn leases_to_release(leases: &[Lease], key: &LeaseKey) -> Vec<IpAddr> {
    let exact: Vec<IpAddr> = leases
        .iter()
        .filter(|l| l.is_exactly(&key.container_id, &key.ifname))
        .map(|l| l.ip)
        .collect();
    if !exact.is_empty() {
        return exact;
    }
    leases
        .iter()
        .filter(|l| l.is_legacy_of(&key.container_id))
        .map(|l| l.ip)
        .collect()
}

#[cfg(test)]
pub(crate) mod mem {
    //! In-memory store for allocator unit tests (no lock, no failure).

    use std::cell::RefCell;
    use std::collections::{BTreeMap, HashMap};

    use super::*;

    #[derive(Debug, Default)]
    pub(crate) struct MemStore {
        pub leases: RefCell<BTreeMap<IpAddr, Lease>>,
        pub last: RefCell<HashMap<usize, IpAddr>>,
    }

    impl Store for MemStore {
        fn lock(&self) -> Result<StoreGuard<'_>, StoreError> {
            Ok(StoreGuard::in_memory())
        }

        fn reserve(&self, key: &LeaseKey, ip: IpAddr) -> Result<bool, StoreError> {
            let mut leases = self.leases.borrow_mut();
            if leases.contains_key(&ip) {
                return Ok(false);
            }
            let content = Lease::file_content(&key.container_id, &key.ifname);
            leases.insert(ip, Lease::parse_holder(ip, &content));
            Ok(true)
        }

        fn release_ip(&self, ip: IpAddr) -> Result<bool, StoreError> {
            Ok(self.leases.borrow_mut().remove(&ip).is_some())
        }

        fn release_by_key(&self, key: &LeaseKey) -> Result<Vec<IpAddr>, StoreError> {
            let ips = leases_to_release(&self.leases()?, key);
            for ip in &ips {
                self.leases.borrow_mut().remove(ip);
            }
            Ok(ips)
        }

        fn reserved(&self, ip: IpAddr) -> Result<bool, StoreError> {
            Ok(self.leases.borrow().contains_key(&ip))
        }

        fn reserved_ips(&self) -> Result<Vec<IpAddr>, StoreError> {
            Ok(self.leases.borrow().keys().copied().collect())
        }

        fn leases(&self) -> Result<Vec<Lease>, StoreError> {
            Ok(self.leases.borrow().values().cloned().collect())
        }

        fn last_reserved(&self, set: usize) -> Result<Option<IpAddr>, StoreError> {
            Ok(self.last.borrow().get(&set).copied())
        }

        fn set_last_reserved(&self, set: usize, ip: IpAddr) -> Result<(), StoreError> {
            self.last.borrow_mut().insert(set, ip);
            Ok(())
        }

        fn forget_last_reserved(&self) -> Result<(), StoreError> {
            self.last.borrow_mut().clear();
            Ok(())
        }
    }
}
