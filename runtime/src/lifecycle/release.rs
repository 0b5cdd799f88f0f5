//! The end of a run: the exit recorded, then what the container holds on the host released
//! (its cgroup, CNI attachments, the peers' hosts files, its netns file), or with `--rm` the
//! container removed altogether; and `settle`, which does it for a supervisor that died.

use berth_netlink::error_chain;

use crate::lifecycle::signal::{SUPERVISOR_GRACE, wait_process};
use crate::names::ContainerId;
use crate::network::Networks;
use crate::network::attachments::{self, AttachmentError};
use crate::network::hosts::HostsError;
use crate::sandbox::cgroups::{CgroupError, CgroupErrors, Layout};
use crate::sandbox::namespaces::{self, NamespaceError};
use crate::sandbox::pid::ProcessRef;
use crate::state::clock;
use crate::state::{ContainerRecord, StateError, Status, Store};
use crate::timing;

/// Errors of the `release` module: each a step of releasing a container that failed (the
/// others went on).
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Hosts(#[from] HostsError),
    #[error("detect the cgroup layout")]
    CgroupLayout(#[source] CgroupError),
    #[error("remove the cgroup of container {id}")]
    RemoveCgroup {
        id: String,
        #[source]
        source: CgroupErrors,
    },
    #[error(transparent)]
    Attachment(#[from] AttachmentError),
    #[error("remove the network namespace of container {id}")]
    RemoveNetns {
        id: String,
        #[source]
        source: NamespaceError,
    },
}

/// Every step of releasing container `id` that failed: the record stays, for the next
/// `rm -f` or `system prune` to try again.
#[derive(Debug, thiserror::Error)]
#[error("release container {id}: {}", join(errors))]
pub struct Teardown {
    pub id: String,
    pub errors: Vec<ReleaseError>,
}

/// `a: cause; b: cause`, each error with its chain.
pub fn join<E: std::error::Error + 'static>(errors: &[E]) -> String {
    errors
        .iter()
        .map(|e| error_chain(e))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Errors of [`settle`].
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Teardown(Teardown),
}

/// Records the exit (so `ps` shows it at once), releases what the container holds,
/// then removes it (`--rm`) or marks it settled. Returns the teardown failures.
pub fn finish(
    store: &Store,
    networks: &Networks,
    record: &ContainerRecord,
    exit_code: i32,
) -> Vec<ReleaseError> {
    let mut teardown = Vec::new();
    if let Err(e) = store.update_state(&record.id, |s| {
        s.status = Some(Status::Exited);
        s.exit_code = Some(exit_code);
        s.finished_at = Some(clock::now_rfc3339());
    }) {
        teardown.push(e.into());
    }
    if record.config.auto_remove {
        teardown.extend(dispose(store, networks, &record.id));
        return teardown;
    }
    teardown.extend(release(store, networks, &record.id));
    if let Err(e) = store.update_state(&record.id, |s| s.supervisor = None) {
        teardown.push(e.into());
    }
    teardown
}

/// Releases what a container holds on the host besides its directory: the cgroup (killing
/// leftovers), its CNI attachments (DEL in reverse order; the peers' hosts files follow),
/// the netns file. Idempotent; keeps going and returns every failure.
pub fn release(store: &Store, networks: &Networks, id: &ContainerId) -> Vec<ReleaseError> {
    let record = match store.load_if_exists(id) {
        Ok(Some(r)) => r,
        Ok(None) => return Vec::new(),
        Err(e) => return vec![e.into()],
    };
    let short = id.short().to_owned();
    let mut errors = Vec::new();
    match Layout::detect() {
        Ok(layout) => {
            let manager = layout.manager(&record.config.cgroup_parent, id);
            if let Err(source) = timing::step("cgroup destroy", || manager.destroy()) {
                errors.push(ReleaseError::RemoveCgroup {
                    id: short.clone(),
                    source,
                });
            }
        }
        Err(e) => errors.push(ReleaseError::CgroupLayout(e)),
    }
    errors.extend(
        attachments::detach_all(store, networks, &record)
            .into_iter()
            .map(ReleaseError::from),
    );
    // Attachments the record does not name (none, unless the record was damaged): the CNI
    // cache knows what ADD ran for this id.
    if errors.is_empty() {
        errors.extend(
            attachments::release_cached(store, networks, id)
                .1
                .into_iter()
                .map(ReleaseError::from),
        );
    }
    let netns = store.netns_path(id);
    if let Err(source) = timing::step("netns remove", || namespaces::remove_netns(&netns)) {
        errors.push(ReleaseError::RemoveNetns { id: short, source });
    }
    errors
}

/// Removes a container that runs no more: marks it removing, releases it, deletes it, in the
/// order [`crate::commands::rm`] explains. A record gone meanwhile is success. Returns every
/// failure; the record then stays, marked removing, for the next `rm -f` or `system prune`.
pub fn dispose(store: &Store, networks: &Networks, id: &ContainerId) -> Vec<ReleaseError> {
    let marked = store.update_state(id, |s| {
        s.status = Some(Status::Removing);
        s.supervisor = ProcessRef::current();
    });
    match marked {
        Ok(Some(_)) => {}
        Ok(None) => return Vec::new(),
        Err(e) => return vec![e.into()],
    }
    let mut errors = release(store, networks, id);
    if errors.is_empty() {
        if let Err(e) = store.lock().and_then(|lock| store.remove(&lock, id)) {
            errors.push(e.into());
        }
    }
    errors
}

/// After the container's PID 1 is gone: waits for its supervisor to record the exit and
/// release it; if the supervisor died without doing so (`berth` was killed), does it here
/// (`--rm` containers are then removed, as their supervisor would have).
pub fn settle(store: &Store, networks: &Networks, id: &ContainerId) -> Result<(), SettleError> {
    let Some(record) = store.load_if_exists(id)? else {
        return Ok(());
    };
    if let Some(supervisor) = record.state.supervisor {
        if ProcessRef::current() != Some(supervisor) {
            wait_process(supervisor, SUPERVISOR_GRACE);
        }
    }
    let Some(record) = store.load_if_exists(id)? else {
        return Ok(());
    };
    let orphaned = !record.is_supervised()
        && record.live_status() != Status::Running
        && (record.state.supervisor.is_some() || !record.state.attachments.is_empty());
    if !orphaned {
        return Ok(());
    }
    // A `--rm` container goes, and so does one whose removal was interrupted.
    let errors = if record.config.auto_remove || record.live_status() == Status::Removing {
        dispose(store, networks, id)
    } else {
        let mut errors = release(store, networks, id);
        let updated = store.update_state(id, |s| {
            s.status = Some(Status::Exited);
            s.supervisor = None;
            s.finished_at.get_or_insert_with(clock::now_rfc3339);
        });
        if let Err(e) = updated {
            errors.push(e.into());
        }
        errors
    };
    if errors.is_empty() {
        Ok(())
    } else {
        Err(SettleError::Teardown(Teardown {
            id: id.short().to_owned(),
            errors,
        }))
    }
}
