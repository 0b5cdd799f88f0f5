//! Removing containers: `berth rm`, the disposal that `rm`, `--rm` and `system prune` share,
//! and remnants.
//!
//! **Disposal** ([`release::dispose`], shared with `--rm` and `system prune`) is ordered so
//! that a `berth` killed at any instruction leaves something `rm -f` and `system prune` can
//! see and finish (see also [`crate::state`]):
//! 1. under the store lock the record is marked [`Status::Removing`], supervised by this
//!    process: while it lives nobody else releases the container; once it is dead the record
//!    is an orphan that `rm -f` and `system prune` take over;
//! 2. [`release::release`]: the cgroup (killing what is left in it), CNI DEL of the
//!    recorded attachments and of any other the CNI cache holds for this id, the peers'
//!    hosts files, the netns file;
//! 3. only when all of that succeeded, the directory goes ([`Store::remove`]: renamed away,
//!    then deleted). A failure in step 2 keeps the record, marked removing, and is reported:
//!    the next `rm -f` or `system prune` tries again, rather than forget what is still held.
//!
//! **Remnants** are container directories without a readable record, left by an older
//! `berth` (which wrote the record after creating the directory and deleted it in no
//! particular order) or damaged. Nothing says what they held, so [`remove_remnant`] looks
//! for it by the container id: cgroups named after it under any parent, CNI cache entries,
//! the netns file, mounts under the directory.

use crate::lifecycle::release::{self, ReleaseError, SettleError, Teardown};
use crate::lifecycle::signal::{self, SignalError};
use crate::names::{ContainerId, ContainerName};
use crate::network::Networks;
use crate::network::attachments;
use crate::network::hosts;
use crate::sandbox::cgroups::Layout;
use crate::sandbox::namespaces;
use crate::state::{ContainerRecord, StateError, Status, Store};

/// Errors of `berth rm`.
#[derive(Debug, thiserror::Error)]
pub enum RmError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("container {name} is running: stop it first or use rm -f")]
    Running { name: ContainerName },
    #[error(transparent)]
    Signal(#[from] SignalError),
    #[error(transparent)]
    Settle(#[from] SettleError),
    #[error(transparent)]
    Teardown(#[from] Teardown),
}

/// `berth rm [-f]`: removes a container; `force` kills a running (or starting) one first. A
/// remnant (full id or unique prefix) is removed too.
pub fn remove(
    store: &Store,
    networks: &Networks,
    query: &str,
    force: bool,
) -> Result<ContainerId, RmError> {
    let record = match store.find(query) {
        Ok(record) => record,
        Err(StateError::NotFound { query: q }) => {
            let Some(id) = find_remnant(store, query)? else {
                return Err(StateError::NotFound { query: q }.into());
            };
            remove_remnant(store, networks, &id)?;
            return Ok(id);
        }
        Err(e) => return Err(e.into()),
    };
    remove_record(store, networks, record, force, Sweep::Here)
}

/// Whether [`remove_record`] sweeps what killed `berth` processes left in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    Here,
    /// The caller sweeps once after removing many (a lab's nodes): a sweep reads every
    /// container's directory under the store lock.
    ByCaller,
}

/// [`remove`] of a container whose record the caller has just read (a lab's nodes, all found
/// in one read of the store rather than one read per node).
pub fn remove_record(
    store: &Store,
    networks: &Networks,
    record: ContainerRecord,
    force: bool,
    sweep: Sweep,
) -> Result<ContainerId, RmError> {
    let status = record.live_status();
    let supervised = record.is_supervised();
    if force {
        if record.is_active() {
            signal::terminate(store, &record)?;
        }
    } else if status == Status::Running || (status == Status::Created && supervised) {
        // Running, or being started.
        return Err(RmError::Running { name: record.name });
    } else if supervised {
        // Exited (or being removed), and its supervisor is recording that and releasing
        // it: let it finish.
        release::settle(store, networks, &record.id)?;
    }
    let mut errors = release::dispose(store, networks, &record.id);
    // Whoever removes a container also deletes what killed `berth` processes left beside it.
    if sweep == Sweep::Here {
        match store.lock() {
            Ok(lock) => errors.extend(store.sweep(&lock).into_iter().map(ReleaseError::from)),
            Err(e) => errors.push(e.into()),
        }
    }
    if errors.is_empty() {
        Ok(record.id)
    } else {
        Err(Teardown {
            id: record.id.short().to_owned(),
            errors,
        }
        .into())
    }
}

/// A remnant whose id is `query` or starts with it (uniquely).
fn find_remnant(store: &Store, query: &str) -> Result<Option<ContainerId>, StateError> {
    if query.is_empty() {
        return Ok(None);
    }
    let remnants = store.remnants()?;
    if let Some(id) = remnants.iter().find(|id| id.as_str() == query) {
        return Ok(Some(id.clone()));
    }
    let mut matches = remnants.iter().filter(|id| id.as_str().starts_with(query));
    match (matches.next(), matches.next()) {
        (Some(id), None) => Ok(Some(id.clone())),
        (Some(_), Some(_)) => Err(StateError::Ambiguous {
            query: query.to_owned(),
        }),
        (None, _) => Ok(None),
    }
}

/// Releases what can be found of remnant `id` by its id (see the module doc), then deletes
/// its directory. Keeps going; fails with every failure (the directory then stays, for the
/// next try).
pub fn remove_remnant(
    store: &Store,
    networks: &Networks,
    id: &ContainerId,
) -> Result<(), Teardown> {
    let short = || id.short().to_owned();
    let mut errors = Vec::new();
    match Layout::detect() {
        Ok(layout) => {
            for parent in layout.parents_of(id) {
                if let Err(source) = layout.manager(&parent, id).destroy() {
                    errors.push(ReleaseError::RemoveCgroup {
                        id: short(),
                        source,
                    });
                }
            }
        }
        Err(e) => errors.push(ReleaseError::CgroupLayout(e)),
    }
    let (touched, cni_errors) = attachments::release_cached(store, networks, id);
    errors.extend(cni_errors.into_iter().map(ReleaseError::from));
    if let Err(source) = namespaces::remove_netns(&store.netns_path(id)) {
        errors.push(ReleaseError::RemoveNetns {
            id: short(),
            source,
        });
    }
    let removed = store.lock().map_err(ReleaseError::from).and_then(|lock| {
        // The peers' hosts files no longer list it (it has no record to be listed from).
        if !touched.is_empty() {
            let names: Vec<String> = touched.into_iter().collect();
            hosts::refresh(store, &lock, &names)?;
        }
        if errors.is_empty() {
            store.remove(&lock, id)?;
        }
        Ok(())
    });
    if let Err(e) = removed {
        errors.push(e);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Teardown {
            id: short(),
            errors,
        })
    }
}
