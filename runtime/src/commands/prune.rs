//! `berth system prune`: removes every container that is neither running nor supervised
//! (stopped ones, and what a killed `berth` left: orphaned records, interrupted removals,
//! remnants, staging and doomed directories), then garbage-collects the CNI side.
//!
//! Order matters: containers first (their release DELs their attachments), then CNI GC of
//! every network with the attachments of the containers that remain active as the valid
//! list (DEL of stale cache entries, then the GC verb: host-local frees reservations and
//! bridge masquerade rules nobody owns), then netns files under `<runroot>/netns` that no
//! active container owns.

use std::collections::BTreeMap;
use std::fs;

use berth_cni::{Attachment, ContainerId as CniContainerId, IfName};

use crate::commands::rm;
use crate::lifecycle::release::{self, ReleaseError, Teardown};
use crate::names::ContainerId;
use crate::network::{NetworkError, Networks};
use crate::sandbox::namespaces;
use crate::state::{StateError, Store};

/// What went wrong in `berth system prune` (it goes on after each).
#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    Remnant(#[from] Teardown),
    #[error(transparent)]
    Network(#[from] NetworkError),
}

/// What `system prune` did.
#[derive(Debug, Default)]
pub struct Pruned {
    /// Names of the removed containers.
    pub removed: Vec<String>,
    /// Netns files removed without a container.
    pub netns: Vec<String>,
    pub errors: Vec<PruneError>,
}

pub fn prune(store: &Store, networks: &Networks) -> Pruned {
    let mut pruned = Pruned::default();
    // What killed `berth` processes left in the store: staging and doomed directories, record
    // temporaries.
    match store.lock() {
        Ok(lock) => pruned
            .errors
            .extend(store.sweep(&lock).into_iter().map(PruneError::from)),
        Err(e) => pruned.errors.push(e.into()),
    }
    let scan = match store.scan() {
        Ok(scan) => scan,
        Err(e) => {
            pruned.errors.push(e.into());
            return pruned;
        }
    };
    for record in scan.records.iter().filter(|r| !r.is_active()) {
        let errors = release::dispose(store, networks, &record.id);
        if errors.is_empty() {
            pruned.removed.push(record.name.to_string());
        }
        pruned
            .errors
            .extend(errors.into_iter().map(PruneError::from));
    }
    for id in &scan.remnants {
        match rm::remove_remnant(store, networks, id) {
            Ok(()) => pruned.removed.push(id.to_string()),
            Err(e) => pruned.errors.push(e.into()),
        }
    }

    let active = match store.records() {
        Ok(r) => r.into_iter().filter(|r| r.is_active()).collect::<Vec<_>>(),
        Err(e) => {
            pruned.errors.push(e.into());
            return pruned;
        }
    };
    let mut valid: BTreeMap<String, Vec<Attachment>> = BTreeMap::new();
    for record in &active {
        for a in &record.state.attachments {
            let (Ok(container_id), Ok(ifname)) = (
                CniContainerId::try_from(record.id.as_str()),
                IfName::try_from(a.ifname.as_str()),
            ) else {
                continue;
            };
            valid
                .entry(a.network.clone())
                .or_default()
                .push(Attachment {
                    container_id,
                    ifname,
                });
        }
    }
    pruned
        .errors
        .extend(networks.gc(store, &valid).into_iter().map(PruneError::from));

    let netns_dir = store.runroot().join("netns");
    if let Ok(entries) = fs::read_dir(&netns_dir) {
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let owned = ContainerId::try_from(name.as_str())
                .is_ok_and(|id| active.iter().any(|r| r.id == id));
            if owned {
                continue;
            }
            match namespaces::remove_netns(&entry.path()) {
                Ok(()) => pruned.netns.push(name),
                Err(source) => pruned
                    .errors
                    .push(ReleaseError::RemoveNetns { id: name, source }.into()),
            }
        }
    }
    pruned
}
