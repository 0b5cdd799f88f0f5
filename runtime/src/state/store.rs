//! The store: the state roots, the lock, and the records on disk (created, rewritten,
//! found, swept, removed) with the guarantees the layer's doc (`crate::state`) states.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::names::{ContainerId, ContainerName, NameError};
use crate::state::schema::{ContainerRecord, ContainerState};
use berth_fs::mounts::{self, MountsError};

/// Errors of the `state` module.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "{flag} {path:?} must be an absolute path without ',', ':' or '\\' (overlayfs option syntax)"
    )]
    BadRoot { flag: &'static str, path: PathBuf },
    #[error("create state directory {path}")]
    CreateDir {
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
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parse {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("remove {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    DeleteTree(#[from] MountsError),
    #[error("no such container: {query}")]
    NotFound { query: String },
    #[error("{query} matches more than one container id: be more specific")]
    Ambiguous { query: String },
    #[error("the container name {name} is already in use by container {id}")]
    NameInUse {
        name: ContainerName,
        id: ContainerId,
    },
    #[error(transparent)]
    Name(#[from] NameError),
}

/// Proof that the store lock is held: functions that change records take a `&StoreLock`.
#[derive(Debug)]
pub struct StoreLock {
    _flock: Flock<File>,
}

/// The state roots.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    runroot: PathBuf,
}

fn mkdir(path: &Path, mode: u32) -> Result<(), StateError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(|source| StateError::CreateDir {
            path: path.to_path_buf(),
            source,
        })
}

/// The record's file name in its container directory.
const RECORD: &str = "container.json";
/// What a killed record writer of berth before `berth_fs` left: swept like the others.
const LEGACY_TEMPORARY: &str = "container.json.tmp";
/// Prefix of the directory a new container's record is written in before it is renamed into
/// place.
const STAGING_PREFIX: &str = ".new-";
/// Prefix a removed container's directory is renamed to before it is deleted.
const DOOMED_PREFIX: &str = ".rm-";

/// Removes the temporaries a killed record writer left in a container directory: the ones
/// `berth_fs::write_atomic` names `.container.json.<pid>.tmp`, and the fixed name of berth
/// before it. Every record write holds the store lock, and so does the caller: none of them
/// can belong to a live writer, whatever its pid says (a killed writer's pid may linger as a
/// zombie, or be reused).
fn sweep_record_temporaries(dir: &Path) -> Result<(), StateError> {
    let err = |source| StateError::Remove {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(err(e)),
    };
    for entry in entries {
        let entry = entry.map_err(err)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let ours = name == LEGACY_TEMPORARY
            || (name.starts_with(&format!(".{RECORD}.")) && name.ends_with(".tmp"));
        if ours {
            match fs::remove_file(entry.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(err(e)),
            }
        }
    }
    Ok(())
}

/// fsync of a directory: a rename or creation in it survives a crash of the machine.
fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| StateError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

/// How many `--network container:` hops are followed: a chain never loops (each target
/// existed first), but records are input.
pub const MAX_NETWORK_HOPS: usize = 16;

/// A staging or doomed directory (see [`crate::state`]).
fn is_left_behind(name: &OsStr) -> bool {
    name.to_str().is_some_and(|n| {
        [STAGING_PREFIX, DOOMED_PREFIX].iter().any(|p| {
            n.strip_prefix(p)
                .is_some_and(|id| ContainerId::try_from(id).is_ok())
        })
    })
}

/// Every container directory, read: the records, and the remnants (directories named like a
/// container id whose record is missing or unreadable).
#[derive(Debug, Default)]
pub struct Scan {
    pub records: Vec<ContainerRecord>,
    pub remnants: Vec<ContainerId>,
}

impl Store {
    /// Opens (creating if needed) the state under `root` and `runroot`.
    pub fn open(root: &Path, runroot: &Path) -> Result<Store, StateError> {
        for (flag, path) in [("--root", root), ("--runroot", runroot)] {
            let bad = path
                .as_os_str()
                .as_encoded_bytes()
                .iter()
                .any(|b| matches!(b, b',' | b':' | b'\\'));
            if !path.is_absolute() || bad {
                return Err(StateError::BadRoot {
                    flag,
                    path: path.to_path_buf(),
                });
            }
        }
        let store = Store {
            root: root.to_path_buf(),
            runroot: runroot.to_path_buf(),
        };
        mkdir(&store.root, 0o700)?;
        mkdir(&store.containers_dir(), 0o700)?;
        mkdir(&store.images_dir(), 0o700)?;
        mkdir(&store.runroot, 0o700)?;
        mkdir(&store.runroot.join("netns"), 0o755)?;
        Ok(store)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn runroot(&self) -> &Path {
        &self.runroot
    }

    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    pub fn container_dir(&self, id: &ContainerId) -> PathBuf {
        self.containers_dir().join(id.as_str())
    }

    pub fn netns_path(&self, id: &ContainerId) -> PathBuf {
        self.runroot.join("netns").join(id.as_str())
    }

    /// The namespace file `record`'s processes are in: its own, or with `--network
    /// container:X` the one of the container owning the namespace (X, or what X joins).
    /// Records are read as they are (a target gone or stopped ends the chain where it is).
    pub fn netns_of(&self, record: &ContainerRecord) -> PathBuf {
        let mut owner: Option<ContainerRecord> = None;
        for _ in 0..MAX_NETWORK_HOPS {
            match self.network_target(owner.as_ref().unwrap_or(record)) {
                Some(Ok(next)) => owner = Some(next),
                _ => break,
            }
        }
        self.netns_path(&owner.as_ref().unwrap_or(record).id)
    }

    /// The next hop of `record`'s `--network container:` chain: the container whose network
    /// namespace it joins, read by the full id its record holds (one file, not every record).
    /// `None` for the other network modes.
    pub fn network_target(
        &self,
        record: &ContainerRecord,
    ) -> Option<Result<ContainerRecord, StateError>> {
        let target = record.config.network.container()?;
        let not_found = || StateError::NotFound {
            query: target.to_owned(),
        };
        Some(match ContainerId::try_from(target) {
            Ok(id) => self
                .load_if_exists(&id)
                .and_then(|r| r.ok_or_else(not_found)),
            Err(_) => Err(not_found()),
        })
    }

    /// The container's output log (CRI format, [`crate::state::log`]).
    pub fn log_path(&self, id: &ContainerId) -> PathBuf {
        self.container_dir(id).join("ctr.log")
    }

    /// The FIFO a `-i` container under a monitor reads its stdin from.
    pub fn stdin_path(&self, id: &ContainerId) -> PathBuf {
        self.container_dir(id).join("stdin")
    }

    fn record_path(&self, id: &ContainerId) -> PathBuf {
        self.container_dir(id).join(RECORD)
    }

    fn staging_dir(&self, id: &ContainerId) -> PathBuf {
        self.containers_dir()
            .join(format!("{STAGING_PREFIX}{}", id.as_str()))
    }

    fn doomed_dir(&self, id: &ContainerId) -> PathBuf {
        self.containers_dir()
            .join(format!("{DOOMED_PREFIX}{}", id.as_str()))
    }

    /// Takes the store lock (blocking). Held briefly: never across a container's lifetime.
    pub fn lock(&self) -> Result<StoreLock, StateError> {
        let path = self.root.join("berth.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| StateError::Lock {
                path: path.clone(),
                source,
            })?;
        let flock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| StateError::Lock {
                path,
                source: errno.into(),
            })?;
        Ok(StoreLock { _flock: flock })
    }

    pub fn load(&self, id: &ContainerId) -> Result<ContainerRecord, StateError> {
        let path = self.record_path(id);
        let text = fs::read(&path).map_err(|source| StateError::Read {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|source| StateError::Parse { path, source })
    }

    /// Every container with a record, oldest first. Directories without a readable record
    /// are [`Store::remnants`].
    pub fn records(&self) -> Result<Vec<ContainerRecord>, StateError> {
        Ok(self.scan()?.records)
    }

    /// [`Store::records`] by container name, for callers that look many of them up (a lab's
    /// nodes): one read of the store rather than one per lookup.
    pub fn records_by_name(
        &self,
    ) -> Result<std::collections::BTreeMap<String, ContainerRecord>, StateError> {
        Ok(self
            .records()?
            .into_iter()
            .map(|r| (r.name.to_string(), r))
            .collect())
    }

    /// Container directories without a readable record (see [`crate::state`]).
    pub fn remnants(&self) -> Result<Vec<ContainerId>, StateError> {
        Ok(self.scan()?.remnants)
    }

    /// Reads every container directory: records oldest first, remnants by id.
    pub fn scan(&self) -> Result<Scan, StateError> {
        let dir = self.containers_dir();
        let entries = fs::read_dir(&dir).map_err(|source| StateError::Read {
            path: dir.clone(),
            source,
        })?;
        let mut scan = Scan::default();
        for entry in entries {
            let entry = entry.map_err(|source| StateError::Read {
                path: dir.clone(),
                source,
            })?;
            // Staging and doomed directories start with a dot: not containers.
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| ContainerId::try_from(n).ok())
            else {
                continue;
            };
            match self.load(&id) {
                Ok(record) => scan.records.push(record),
                // Gone since the listing: removed meanwhile.
                Err(StateError::Read { source, .. })
                    if source.kind() == io::ErrorKind::NotFound
                        && !self.container_dir(&id).exists() => {}
                Err(_) => scan.remnants.push(id),
            }
        }
        scan.records
            .sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        scan.remnants.sort();
        Ok(scan)
    }

    /// Writes the records of new containers, each directory appearing with its record in it
    /// in one rename (see [`crate::state`]); durable. All are written before the first fsync,
    /// so that a few journal commits carry them rather than three per record (the lock is
    /// held meanwhile, and every container start waits for it). All or nothing: on a
    /// failure, returned with the index of the record it concerns, none of them is left.
    pub fn create_all(
        &self,
        lock: &StoreLock,
        records: &[ContainerRecord],
    ) -> Result<(), (usize, StateError)> {
        let mut staged: Vec<(PathBuf, File)> = Vec::with_capacity(records.len());
        let mut renamed = 0;
        let result = (|| {
            for (i, record) in records.iter().enumerate() {
                let staging = self.staging_dir(&record.id);
                // Left by a killed create of the same id (ids are random: never in practice).
                if staging.symlink_metadata().is_ok() {
                    self.delete_tree(lock, &staging).map_err(|e| (i, e))?;
                }
                mkdir(&staging, 0o700).map_err(|e| (i, e))?;
                let path = staging.join(RECORD);
                let json = serde_json::to_vec_pretty(record).map_err(|source| {
                    (
                        i,
                        StateError::Parse {
                            path: path.clone(),
                            source,
                        },
                    )
                })?;
                let file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .and_then(|mut f| f.write_all(&json).map(|()| f))
                    .map_err(|source| (i, StateError::Write { path, source }))?;
                // Writeback of every record starts now, not one fsync after the other.
                // SAFETY: a hint on our own descriptor; its failure only loses the overlap.
                unsafe {
                    libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE)
                };
                staged.push((staging, file));
            }
            for (i, (staging, file)) in staged.iter().enumerate() {
                file.sync_all()
                    .and_then(|()| File::open(staging)?.sync_all())
                    .map_err(|source| {
                        (
                            i,
                            StateError::Write {
                                path: staging.join(RECORD),
                                source,
                            },
                        )
                    })?;
            }
            for (i, ((staging, _), record)) in staged.iter().zip(records).enumerate() {
                fs::rename(staging, self.container_dir(&record.id)).map_err(|source| {
                    (
                        i,
                        StateError::Write {
                            path: staging.join(RECORD),
                            source,
                        },
                    )
                })?;
                renamed += 1;
            }
            sync_dir(&self.containers_dir()).map_err(|e| (records.len().saturating_sub(1), e))
        })();
        if result.is_err() {
            for record in &records[..renamed] {
                let _ = self.remove(lock, &record.id);
            }
            for record in &records[renamed..] {
                let _ = self.delete_tree(lock, &self.staging_dir(&record.id));
            }
        }
        result
    }

    /// Rewrites an existing record through a temporary and a rename, after sweeping what a
    /// killed writer left in its directory.
    fn write_record(
        &self,
        _lock: &StoreLock,
        record: &ContainerRecord,
        durable: bool,
    ) -> Result<(), StateError> {
        let path = self.record_path(&record.id);
        sweep_record_temporaries(&self.container_dir(&record.id))?;
        let json = serde_json::to_vec_pretty(record).map_err(|source| StateError::Parse {
            path: path.clone(),
            source,
        })?;
        let opts = berth_fs::WriteOptions {
            mode: 0o600,
            durable,
        };
        berth_fs::write_atomic(&path, &json, opts)
            .map_err(|source| StateError::Write { path, source })
    }

    /// Updates a record's state under the lock and returns the new record. A record removed
    /// meanwhile (`rm -f` racing a run) stays removed (`None`).
    pub fn update_state(
        &self,
        id: &ContainerId,
        change: impl FnOnce(&mut ContainerState),
    ) -> Result<Option<ContainerRecord>, StateError> {
        let lock = self.lock()?;
        self.update_state_locked(&lock, id, change)
    }

    /// [`Store::update_state`] with the lock already held.
    pub fn update_state_locked(
        &self,
        lock: &StoreLock,
        id: &ContainerId,
        change: impl FnOnce(&mut ContainerState),
    ) -> Result<Option<ContainerRecord>, StateError> {
        let Some(mut record) = self.load_if_exists(id)? else {
            return Ok(None);
        };
        change(&mut record.state);
        // Not fsynced: a crash of berth keeps the page cache, and a crash of the machine
        // takes the netns and the veths with it (GC releases the rest).
        self.write_record(lock, &record, false)?;
        Ok(Some(record))
    }

    /// The record, or `None` if it was removed.
    pub fn load_if_exists(&self, id: &ContainerId) -> Result<Option<ContainerRecord>, StateError> {
        match self.load(id) {
            Ok(r) => Ok(Some(r)),
            Err(StateError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Removes a container's directory (record, overlay layers, name files, log): renamed
    /// away in one step, then deleted (see [`crate::state`]). Call it once the container holds
    /// nothing else on the host. Works for a remnant too. Already gone is success.
    pub fn remove(&self, lock: &StoreLock, id: &ContainerId) -> Result<(), StateError> {
        let doomed = self.doomed_dir(id);
        // Left by an interrupted removal of the same id (ids are random: never in practice).
        self.delete_tree(lock, &doomed)?;
        match fs::rename(self.container_dir(id), &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(StateError::Remove {
                    path: self.container_dir(id),
                    source,
                });
            }
        }
        sync_dir(&self.containers_dir())?;
        self.delete_tree(lock, &doomed)
    }

    fn delete_tree(&self, _lock: &StoreLock, dir: &Path) -> Result<(), StateError> {
        Ok(mounts::delete_tree(dir)?)
    }

    /// Deletes what killed `berth` processes left: staging directories of containers never
    /// created, directories of containers removed but not yet deleted, and record
    /// temporaries in every container directory. Keeps going; returns every failure.
    pub fn sweep(&self, lock: &StoreLock) -> Vec<StateError> {
        let dir = self.containers_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(source) => return vec![StateError::Read { path: dir, source }],
        };
        let mut errors = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            let path = entry.path();
            if is_left_behind(&name) {
                if let Err(e) = self.delete_tree(lock, &path) {
                    errors.push(e);
                }
            } else if entry.file_type().is_ok_and(|t| t.is_dir()) {
                if let Err(e) = sweep_record_temporaries(&path) {
                    errors.push(e);
                }
            }
        }
        errors
    }

    /// Finds a container by full id, name, or unique id prefix (in that order).
    pub fn find(&self, query: &str) -> Result<ContainerRecord, StateError> {
        let records = self.records()?;
        if let Some(r) = records.iter().find(|r| r.id.as_str() == query) {
            return Ok(r.clone());
        }
        if let Some(r) = records.iter().find(|r| r.name.as_str() == query) {
            return Ok(r.clone());
        }
        let not_found = || StateError::NotFound {
            query: query.to_owned(),
        };
        if query.is_empty() {
            return Err(not_found());
        }
        let mut matches = records.iter().filter(|r| r.id.as_str().starts_with(query));
        match (matches.next(), matches.next()) {
            (Some(r), None) => Ok(r.clone()),
            (Some(_), Some(_)) => Err(StateError::Ambiguous {
                query: query.to_owned(),
            }),
            (None, _) => Err(not_found()),
        }
    }

    /// Fails if `name` is taken. Call with the lock held, right before saving the new record.
    pub fn check_name_free(
        &self,
        _lock: &StoreLock,
        name: &ContainerName,
    ) -> Result<(), StateError> {
        match self.records()?.into_iter().find(|r| &r.name == name) {
            Some(r) => Err(StateError::NameInUse {
                name: name.clone(),
                id: r.id,
            }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_must_be_safe_for_overlay_options() {
        let tmp = tempfile::tempdir().unwrap();
        let ok = Store::open(&tmp.path().join("root"), &tmp.path().join("run"));
        assert!(ok.is_ok());
        for bad in ["relative", "/tmp/a,b", "/tmp/a:b"] {
            assert!(Store::open(Path::new(bad), &tmp.path().join("run")).is_err());
        }
    }
}
