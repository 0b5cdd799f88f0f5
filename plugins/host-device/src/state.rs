//! What ADD records about the host link before moving it, so DEL can give it back as it was.
//!
//! The link itself carries its host name in its alias (`IFLA_IFALIAS`), as the reference does,
//! so a link moved by either implementation can be returned by the other. What the alias
//! cannot hold — whether the link was up, its MTU, the alias it had before, its MAC — is kept
//! in one small JSON file per attachment:
//!
//! ```text
//! <dataDir>/<network>/<container id>:<ifname>
//! ```
//!
//! (`:` occurs in neither a container id nor an interface name). Files are written to a
//! temporary name and renamed, so a reader never sees half a record. The default `dataDir`
//! is on tmpfs (`/run`): after a reboot no namespace survives, and neither should the state.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The host link as it was before ADD moved it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Saved {
    pub container_id: String,
    pub ifname: String,
    /// Its name in the host namespace.
    pub device: String,
    /// Its alias before ADD replaced it with `device` (`""`: none).
    #[serde(default)]
    pub alias: String,
    pub mtu: u32,
    pub up: bool,
    /// `aa:bb:cc:dd:ee:ff`, to recognise the link if it comes back by itself.
    #[serde(default)]
    pub mac: Option<String>,
}

/// Errors of the `state` module (code 5).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("create state directory {path:?}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write state file {path:?}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read state file {path:?}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("state file {path:?} is not a host-device record")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("remove state file {path:?}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("list state directory {path:?}")]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The records of one network.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn new(data_dir: &Path, network: &str) -> Store {
        Store {
            dir: data_dir.join(network),
        }
    }

    fn path(&self, container_id: &str, ifname: &str) -> PathBuf {
        self.dir.join(format!("{container_id}:{ifname}"))
    }

    pub fn save(&self, saved: &Saved) -> Result<(), StateError> {
        fs::create_dir_all(&self.dir).map_err(|source| StateError::CreateDir {
            path: self.dir.clone(),
            source,
        })?;
        let path = self.path(&saved.container_id, &saved.ifname);
        // INVARIANT: `Saved` holds only strings, numbers and booleans.
        let bytes = serde_json::to_vec(saved).map_err(|e| StateError::Write {
            path: path.clone(),
            source: io::Error::other(e),
        })?;
        berth_fs::write_atomic(&path, &bytes, berth_fs::WriteOptions::default())
            .map_err(|source| StateError::Write { path, source })
    }

    /// The record of an attachment; `Ok(None)` if there is none.
    pub fn load(&self, container_id: &str, ifname: &str) -> Result<Option<Saved>, StateError> {
        Self::read(&self.path(container_id, ifname))
    }

    /// Removes what a killed ADD left between writing its record and renaming it. Best
    /// effort: a failure costs a stray file, never the verb.
    fn sweep(&self) {
        if let Err(e) = berth_fs::sweep_temporaries(&self.dir) {
            eprintln!("host-device: sweep {}: {e}", self.dir.display());
        }
    }

    fn read(path: &Path) -> Result<Option<Saved>, StateError> {
        match fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StateError::Parse {
                        path: path.to_path_buf(),
                        source,
                    })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Removes an attachment's record; a missing one is fine.
    pub fn remove(&self, container_id: &str, ifname: &str) -> Result<(), StateError> {
        let path = self.path(container_id, ifname);
        self.sweep();
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                Err(StateError::Remove { path, source: e })
            }
            _ => {
                // The last record takes the network's directory with it (fails while others
                // remain, which is the point).
                let _ = fs::remove_dir(&self.dir);
                Ok(())
            }
        }
    }

    /// Every record of the network (GC). Left-over temporaries of a killed ADD are removed;
    /// files that are not records, or not readable ones, are skipped (said on stderr).
    pub fn list(&self) -> Result<Vec<Saved>, StateError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StateError::List {
                    path: self.dir.clone(),
                    source,
                });
            }
        };
        self.sweep();
        let mut out = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            // Records are named `<container id>:<ifname>`; anything else is not ours.
            if name.starts_with('.') || !name.contains(':') {
                continue;
            }
            // One unreadable record must not keep GC from settling the others.
            match Self::read(&path) {
                Ok(Some(saved)) => out.push(saved),
                Ok(None) => {}
                Err(e) => eprintln!("host-device: skipped: {}", berth_netlink::error_chain(&e)),
            }
        }
        out.sort_by(|a, b| (&a.container_id, &a.ifname).cmp(&(&b.container_id, &b.ifname)));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn saved(id: &str) -> Saved {
        Saved {
            container_id: id.into(),
            ifname: "net1".into(),
            device: "eth9".into(),
            alias: String::new(),
            mtu: 1400,
            up: true,
            mac: Some("02:00:00:00:00:01".into()),
        }
    }

    #[test]
    fn save_load_list_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path(), "net");
        assert_eq!(store.load("c1", "net1").unwrap(), None);
        store.save(&saved("c1")).unwrap();
        store.save(&saved("c2")).unwrap();
        fs::write(tmp.path().join("net").join(".c3:net1.99999999.tmp"), b"{").unwrap();
        assert_eq!(store.load("c1", "net1").unwrap(), Some(saved("c1")));
        assert_eq!(store.list().unwrap(), [saved("c1"), saved("c2")]);
        store.remove("c1", "net1").unwrap();
        store.remove("c1", "net1").unwrap();
        store.remove("c2", "net1").unwrap();
        assert!(
            !tmp.path().join("net").exists(),
            "the empty network directory goes"
        );
    }

    /// A killed ADD's temporary goes with the next DEL in the directory, which then takes the
    /// emptied network directory with it.
    #[test]
    fn del_sweeps_a_killed_writers_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path(), "net");
        store.save(&saved("c1")).unwrap();
        let stale = tmp.path().join("net").join(".c2:net1.99999999.tmp");
        fs::write(&stale, b"{").unwrap();
        store.remove("c1", "net1").unwrap();
        assert!(!tmp.path().join("net").exists());
    }

    /// Found by berth-fuzz (a dataDir shared with host-local): a file that is not a record
    /// made GC fail for the whole network. It is skipped; the records are still listed.
    #[test]
    fn list_skips_what_is_not_a_readable_record() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path(), "net");
        store.save(&saved("c1")).unwrap();
        fs::write(tmp.path().join("net").join("lock"), b"").unwrap();
        fs::write(tmp.path().join("net").join("198.18.0.2"), b"c9\r\neth0").unwrap();
        fs::write(tmp.path().join("net").join("c2:net1"), b"nope").unwrap();
        assert_eq!(store.list().unwrap(), [saved("c1")]);
    }

    #[test]
    fn garbage_is_an_error_not_a_missing_record() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::new(tmp.path(), "net");
        fs::create_dir_all(tmp.path().join("net")).unwrap();
        fs::write(tmp.path().join("net").join("c1:net1"), b"nope").unwrap();
        assert!(matches!(
            store.load("c1", "net1"),
            Err(StateError::Parse { .. })
        ));
    }
}
