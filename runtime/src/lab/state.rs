//! What a lab owns, on disk: `<root>/labs/<lab>/state.json` and a copy of its topology
//! (`topology.clab.yml`, as `berth lab save` renders it, so `--name LAB` works without the
//! original file).
//!
//! The state is the deploy's *plan*, written before anything is created: every container,
//! host link, bridge, `/run/netns` name and network the deploy may create is listed first.
//! A deploy killed at any instruction therefore leaves a file that names everything it may
//! have made, and `destroy` removes what of it exists ("already gone" is success). Names
//! that already existed when the deploy began are refused before the plan is written, so
//! `destroy` never removes what the lab did not make.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors of the `state` module.
#[derive(Debug, thiserror::Error)]
pub enum LabStateError {
    #[error("create lab directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write lab state {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read lab state {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("lab state {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("no lab {name} is deployed (no {path})")]
    NotDeployed { name: String, path: PathBuf },
    #[error("remove lab directory {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("lock {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("list labs in {path}")]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The lab's plan and progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabState {
    pub name: String,
    /// The topology file deployed (absolute), for messages and `inspect --all`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Container names, one per linux node.
    pub containers: Vec<String>,
    /// Entries of `/run/netns` (symlinks to the containers' netns files).
    pub netns_names: Vec<String>,
    /// Links in the lab's host namespace: bridge ports and `host:IF` ends.
    pub host_links: Vec<String>,
    /// Bridges of `kind: bridge` nodes that the deploy created (not ones that existed).
    pub bridges: Vec<String>,
    /// The management network, when the deploy created it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// The cgroup parent of the lab's containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_parent: Option<String>,
    /// Set once everything is up: `false` marks a deploy that failed or was killed.
    pub complete: bool,
    /// Per stopped node: what its peers had on the interfaces that went away with it
    /// (restored by `start`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub saved_peers: Vec<SavedInterface>,
}

/// Addresses and routes of one interface in a peer, kept while the node it faces is stopped
/// (a veth dies with either end's namespace; the peer's addresses and routes go with it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavedInterface {
    /// The stopped node whose start restores this.
    pub stopped: String,
    /// The peer node and its interface.
    pub node: String,
    pub ifname: String,
    pub addrs: Vec<ipnetwork::IpNetwork>,
    /// Routes through the interface: destination and gateway.
    pub routes: Vec<(ipnetwork::IpNetwork, Option<std::net::IpAddr>)>,
}

/// `<root>/labs`.
pub fn labs_dir(root: &Path) -> PathBuf {
    root.join("labs")
}

/// `<root>/labs/<lab>`.
pub fn lab_dir(root: &Path, lab: &str) -> PathBuf {
    labs_dir(root).join(lab)
}

fn state_path(root: &Path, lab: &str) -> PathBuf {
    lab_dir(root, lab).join("state.json")
}

/// The copy of the topology kept with the lab.
pub fn topology_path(root: &Path, lab: &str) -> PathBuf {
    lab_dir(root, lab).join("topology.clab.yml")
}

impl LabState {
    /// Writes the state atomically (a killed writer leaves the previous state).
    pub fn save(&self, root: &Path) -> Result<(), LabStateError> {
        let dir = lab_dir(root, &self.name);
        fs::create_dir_all(&dir).map_err(|source| LabStateError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let path = state_path(root, &self.name);
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| LabStateError::Write {
            path: path.clone(),
            source: e.into(),
        })?;
        berth_fs::write_atomic(&path, &bytes, berth_fs::WriteOptions::default())
            .map_err(|source| LabStateError::Write { path, source })
    }

    /// The state of lab `name`.
    pub fn load(root: &Path, name: &str) -> Result<LabState, LabStateError> {
        let path = state_path(root, name);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(LabStateError::NotDeployed {
                    name: name.to_owned(),
                    path,
                });
            }
            Err(source) => return Err(LabStateError::Read { path, source }),
        };
        serde_json::from_slice(&bytes).map_err(|source| LabStateError::Parse { path, source })
    }

    /// The state of lab `name`, or `None` when it is not deployed.
    pub fn load_if_exists(root: &Path, name: &str) -> Result<Option<LabState>, LabStateError> {
        match LabState::load(root, name) {
            Ok(state) => Ok(Some(state)),
            Err(LabStateError::NotDeployed { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the topology copy beside the state.
    pub fn save_topology(&self, root: &Path, text: &str) -> Result<(), LabStateError> {
        let path = topology_path(root, &self.name);
        berth_fs::write_atomic(&path, text.as_bytes(), berth_fs::WriteOptions::default())
            .map_err(|source| LabStateError::Write { path, source })
    }

    /// Removes the lab's directory (state and topology copy).
    pub fn remove(root: &Path, name: &str) -> Result<(), LabStateError> {
        let dir = lab_dir(root, name);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(LabStateError::Remove {
                path: dir,
                source: e,
            }),
            _ => Ok(()),
        }
    }
}

/// Proof that the labs lock is held: one `berth lab` changing labs at a time.
#[derive(Debug)]
pub struct LabsLock {
    _flock: nix::fcntl::Flock<fs::File>,
}

/// Takes `<root>/labs/.lock` (blocking) for a verb that changes a lab: two deploys of one
/// lab at once would otherwise both pass the "not deployed" check, and the loser's rollback
/// would remove the winner's containers. The file is opened close-on-exec, so the monitors
/// and delay lines a deploy starts never inherit the lock.
pub fn lock(root: &Path) -> Result<LabsLock, LabStateError> {
    let dir = labs_dir(root);
    fs::create_dir_all(&dir).map_err(|source| LabStateError::CreateDir {
        path: dir.clone(),
        source,
    })?;
    let path = dir.join(".lock");
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| LabStateError::Lock {
            path: path.clone(),
            source,
        })?;
    let flock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(
        |(_, errno)| LabStateError::Lock {
            path,
            source: errno.into(),
        },
    )?;
    Ok(LabsLock { _flock: flock })
}

/// The names of the deployed labs (those with a state file), sorted.
pub fn list(root: &Path) -> Result<Vec<String>, LabStateError> {
    let dir = labs_dir(root);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(LabStateError::List { path: dir, source }),
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("state.json").exists())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Test code: a panic is the failure report.
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_lists() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(list(tmp.path()).unwrap().is_empty());
        let state = LabState {
            name: "tri".into(),
            containers: vec!["clab-tri-r1".into()],
            netns_names: vec!["clab-tri-r1".into()],
            host_links: vec!["br-h1".into()],
            bridges: vec!["br".into()],
            ..LabState::default()
        };
        state.save(tmp.path()).unwrap();
        assert_eq!(LabState::load(tmp.path(), "tri").unwrap(), state);
        assert_eq!(list(tmp.path()).unwrap(), ["tri"]);
        assert!(matches!(
            LabState::load(tmp.path(), "other"),
            Err(LabStateError::NotDeployed { .. })
        ));
        LabState::remove(tmp.path(), "tri").unwrap();
        assert!(
            LabState::load_if_exists(tmp.path(), "tri")
                .unwrap()
                .is_none()
        );
    }
}
