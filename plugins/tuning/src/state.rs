//! The original interface values, saved by ADD and put back by DEL.
//!
//! The layout is the reference's, so that a host can switch implementations while containers
//! run: one file `<dataDir>/<containerID>_<ifname>.json` per attachment, a JSON object with
//! `mac`, `promisc`, `mtu`, `allmulti` and (newer reference versions) `txQLen`, each present
//! only when ADD changed that attribute. Both implementations read the other's files: Go
//! ignores the keys it does not know, and the keys Berth adds (`network`, `containerID`,
//! `ifname`, which GC needs because the file name does not say which network a file belongs
//! to) are optional here.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The saved values. Field order is the reference's, and so is the file's.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promisc: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allmulti: Option<bool>,
    #[serde(default, rename = "txQLen", skip_serializing_if = "Option::is_none")]
    pub tx_q_len: Option<u32>,
    /// Berth: the network the attachment belongs to (GC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Berth: the attachment (GC); the file name alone is ambiguous, ids may contain `_`.
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
}

impl Saved {
    /// `self` plus the values of `older` that `self` lacks: when an attachment is ADDed again
    /// without a DEL in between, the values saved first are the originals, the current ones
    /// may be our own.
    pub fn keep_older(mut self, older: &Saved) -> Saved {
        self.mac = older.mac.clone().or(self.mac);
        self.promisc = older.promisc.or(self.promisc);
        self.mtu = older.mtu.or(self.mtu);
        self.allmulti = older.allmulti.or(self.allmulti);
        self.tx_q_len = older.tx_q_len.or(self.tx_q_len);
        self
    }

    /// The file's bytes: indented with one space, as the reference's `MarshalIndent` writes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let formatter = serde_json::ser::PrettyFormatter::with_indent(b" ");
        let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
        // INVARIANT: strings, numbers and booleans into a Vec cannot fail to serialize.
        if self.serialize(&mut ser).is_err() {
            unreachable!("Saved always serializes");
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Saved, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Errors of the `state` module.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("create the tuning data directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read saved interface values {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("saved interface values {path} are not valid")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("write saved interface values {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("remove saved interface values {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("list the tuning data directory {path}")]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The saved-values file of one attachment.
#[derive(Debug, Clone)]
pub struct StateFile {
    dir: PathBuf,
    path: PathBuf,
}

impl StateFile {
    /// `container_id` and `ifname` are validated names (no `/`), so the file stays in `dir`.
    pub fn new(dir: &Path, container_id: &str, ifname: &str) -> StateFile {
        let name = format!("{container_id}_{ifname}.json");
        StateFile {
            dir: dir.to_path_buf(),
            path: dir.join(&name),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's bytes, or `None` when there is none.
    pub fn read(&self) -> Result<Option<Vec<u8>>, StateError> {
        match fs::read(&self.path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if absent(&e) => Ok(None),
            Err(source) => Err(StateError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<Saved, StateError> {
        Saved::decode(bytes).map_err(|source| StateError::Decode {
            path: self.path.clone(),
            source,
        })
    }

    /// Replaces the file atomically (temporary + rename), creating the directory.
    ///
    /// No fsync: the values describe interfaces of live namespaces, which a crash or reboot
    /// destroys along with any need to restore them (the default directory is on tmpfs). The
    /// rename alone keeps a killed process from leaving half a file; an fsync cost ~10 ms per
    /// ADD on ext4 for nothing.
    pub fn write(&self, bytes: &[u8]) -> Result<(), StateError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| StateError::CreateDir {
                path: self.dir.clone(),
                source,
            })?;
        // Written through a temporary and renamed (berth-fs), so a reader never sees half a
        // file; what a killed ADD leaves is swept by the next writer or DEL in the directory.
        self.sweep();
        berth_fs::write_atomic(
            &self.path,
            bytes,
            berth_fs::WriteOptions {
                mode: 0o600,
                durable: false,
            },
        )
        .map_err(|source| StateError::Write {
            path: self.path.clone(),
            source,
        })
    }

    fn sweep(&self) {
        if let Err(e) = berth_fs::sweep_temporaries(&self.dir) {
            eprintln!("tuning: sweep {}: {e}", self.dir.display());
        }
    }

    /// Removes the file and stale temporaries beside it; a missing file is not an error.
    pub fn remove(&self) -> Result<(), StateError> {
        self.sweep();
        match fs::remove_file(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if absent(&e) => Ok(()),
            Err(source) => Err(StateError::Remove {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Puts back what [`StateFile::read`] returned before a change: the old bytes, or no file.
    pub fn put_back(&self, previous: Option<&[u8]>) -> Result<(), StateError> {
        match previous {
            Some(bytes) => self.write(bytes),
            None => self.remove(),
        }
    }
}

/// Every saved-values file in `dir` (not the temporaries), for GC. A missing directory has
/// none.
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, StateError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StateError::List {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| StateError::List {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".json") && !name.starts_with('.') {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// The file is not there: missing, or its name is longer than any file's can be (a
/// container id of 255 bytes makes `<id>_<ifname>.json` one: ADD then saved nothing, and DEL
/// must not fail looking for it).
fn absent(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENAMETOOLONG)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_what_the_reference_writes() {
        // Byte for byte what reference 1.1.1 left in its dataDir.
        let theirs = b"{\n \"mac\": \"2e:f6:18:15:5b:52\",\n \"promisc\": false,\n \"mtu\": 1500,\n \"allmulti\": false\n}";
        let saved = Saved::decode(theirs).unwrap();
        assert_eq!(saved.mac.as_deref(), Some("2e:f6:18:15:5b:52"));
        assert_eq!(saved.promisc, Some(false));
        assert_eq!(saved.mtu, Some(1500));
        assert_eq!(saved.allmulti, Some(false));
        assert_eq!(saved.tx_q_len, None);
        // And writes the same bytes for the same values.
        assert_eq!(saved.encode(), theirs);
    }

    #[test]
    fn berth_keys_follow_the_reference_ones() {
        let saved = Saved {
            mtu: Some(1500),
            tx_q_len: Some(1000),
            network: Some("n".into()),
            container_id: Some("c_1".into()),
            ifname: Some("eth0".into()),
            ..Saved::default()
        };
        let text = String::from_utf8(saved.encode()).unwrap();
        assert_eq!(
            text,
            "{\n \"mtu\": 1500,\n \"txQLen\": 1000,\n \"network\": \"n\",\n \"containerID\": \"c_1\",\n \"ifname\": \"eth0\"\n}"
        );
        assert_eq!(Saved::decode(text.as_bytes()).unwrap(), saved);
    }

    #[test]
    fn older_values_win() {
        let older = Saved {
            mtu: Some(1500),
            ..Saved::default()
        };
        let now = Saved {
            mtu: Some(1400),
            promisc: Some(false),
            ..Saved::default()
        };
        let merged = now.keep_older(&older);
        assert_eq!(merged.mtu, Some(1500));
        assert_eq!(merged.promisc, Some(false));
    }

    /// A killed ADD's temporary goes with the next write or DEL in the directory.
    #[test]
    fn remove_sweeps_a_killed_writers_temporary() {
        let tmp = tempfile::tempdir().unwrap();
        let file = StateFile::new(tmp.path(), "c1", "eth0");
        let stale = tmp.path().join(".c2_eth0.json.99999999.tmp");
        fs::write(&stale, b"{").unwrap();
        file.remove().unwrap();
        assert!(!stale.exists());
    }

    #[test]
    fn write_read_put_back_remove() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("sub/dir");
        let file = StateFile::new(&dir, "c1", "eth0");
        assert_eq!(file.read().unwrap(), None);
        file.write(b"{}").unwrap();
        assert_eq!(file.path(), dir.join("c1_eth0.json"));
        assert_eq!(file.read().unwrap().as_deref(), Some(&b"{}"[..]));
        file.write(b"{\"mtu\": 1}").unwrap();
        file.put_back(Some(b"{}")).unwrap();
        assert_eq!(file.read().unwrap().as_deref(), Some(&b"{}"[..]));
        assert_eq!(list(&dir).unwrap(), [dir.join("c1_eth0.json")]);
        file.put_back(None).unwrap();
        assert_eq!(file.read().unwrap(), None);
        file.remove().unwrap();
        assert!(list(&dir).unwrap().is_empty());
        assert!(list(&tmp.path().join("missing")).unwrap().is_empty());
    }
}
