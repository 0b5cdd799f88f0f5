//! `DiskStore`: the reference host-local's on-disk state, so existing nodes carry over.
//!
//! Layout of `<dataDir>/<network>/` (verified against the reference binary v1.1.1):
//! - one file per reserved address, named by its textual form (`198.18.5.2`, `2001:db8::2`),
//!   mode 0644, content `"<containerid>\r\n<ifname>"` with no trailing newline; very old
//!   versions wrote the bare container id, which we still read;
//! - `last_reserved_ip.<set index>`: the last address reserved in that range set, no newline
//!   (removed again when DEL or GC leaves no reservation at all, see [`crate::ops::release`]);
//! - `lock`: an empty file, locked with `flock(2)` (the reference uses go-filemutex, which is
//!   flock too, so both implementations exclude each other).
//!
//! Differences on purpose: reservations are fsynced (the reference only closes them), and the
//! hint file is replaced by rename (tmp + rename, not fsynced: it is only a hint, and a torn or
//! empty one after a host crash reads as "no hint") instead of truncated in place, and
//! hints are removed once the network holds no reservation (the reference keeps them). The
//! directory itself is not fsynced: after a host crash every container is gone too, and a lost
//! reservation or hint can only make the next allocation pick a different free address.

use std::cell::Cell;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;

use crate::key::{Lease, LeaseKey};
use crate::range::canonical_ip;
use crate::store::{Store, StoreError, StoreGuard, leases_to_release};

/// The reference's default `dataDir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
const LOCK_FILE: &str = "lock";

/// Directory-backed store for one network. One handle per thread (it is `!Sync`); several
/// handles on the same directory exclude each other through [`Store::lock`].
#[derive(Debug)]
pub struct DiskStore {
    dir: PathBuf,
    lock_path: PathBuf,
    lock_file: File,
    locked: Cell<bool>,
}

impl DiskStore {
    /// Open (creating with mode 0755 if needed) `<data_dir>/<network>/` and its lock file.
    pub fn open(data_dir: &Path, network: &str) -> Result<DiskStore, StoreError> {
        let dir = network_dir(data_dir, network)?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(|source| StoreError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        DiskStore::open_dir(dir)
    }

    /// Like [`DiskStore::open`], but `Ok(None)` when the network directory does not exist
    /// (nothing was ever reserved): DEL, CHECK and GC then have nothing to do and must not
    /// create state.
    pub fn open_existing(data_dir: &Path, network: &str) -> Result<Option<DiskStore>, StoreError> {
        let dir = network_dir(data_dir, network)?;
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => DiskStore::open_dir(dir).map(Some),
            Ok(_) => Err(StoreError::CreateDir {
                path: dir,
                source: io::Error::from(io::ErrorKind::NotADirectory),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Read { path: dir, source }),
        }
    }

    fn open_dir(dir: PathBuf) -> Result<DiskStore, StoreError> {
        let lock_path = dir.join(LOCK_FILE);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(&lock_path)
            .map_err(|source| StoreError::OpenLock {
                path: lock_path.clone(),
                source,
            })?;
        Ok(DiskStore {
            dir,
            lock_path,
            lock_file,
            locked: Cell::new(false),
        })
    }

    /// `<data_dir>/<network>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn ip_path(&self, ip: IpAddr) -> PathBuf {
        // Display of Ipv4Addr/Ipv6Addr is RFC 5952 text, the same as Go's net.IP.String() for
        // canonical (non-mapped) addresses, so both implementations name the same file.
        self.dir.join(canonical_ip(ip).to_string())
    }

    fn last_reserved_path(&self, set: usize) -> PathBuf {
        self.dir.join(format!("{LAST_RESERVED_PREFIX}{set}"))
    }

    /// Writable check for STATUS: `access(W_OK)` also reports a read-only mount (EROFS).
    pub fn check_writable(&self) -> Result<(), StoreError> {
        rustix::fs::access(&self.dir, rustix::fs::Access::WRITE_OK).map_err(|e| {
            StoreError::NotWritable {
                path: self.dir.clone(),
                source: e.into(),
            }
        })
    }

    /// Directory entries whose name is an IP address, i.e. reservations. `lock`,
    /// `last_reserved_ip.*` and anything else is ignored.
    fn reservation_names(&self) -> Result<Vec<(IpAddr, PathBuf)>, StoreError> {
        let read_dir_err = |source| StoreError::ReadDir {
            path: self.dir.clone(),
            source,
        };
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(read_dir_err)? {
            let entry = entry.map_err(read_dir_err)?;
            let name = entry.file_name();
            let Some(ip) = name.to_str().and_then(|n| n.parse::<IpAddr>().ok()) else {
                continue;
            };
            out.push((canonical_ip(ip), entry.path()));
        }
        Ok(out)
    }
}

fn network_dir(data_dir: &Path, network: &str) -> Result<PathBuf, StoreError> {
    if network.is_empty()
        || network == "."
        || network == ".."
        || network.contains('/')
        || network.contains('\0')
    {
        return Err(StoreError::InvalidNetworkName {
            name: network.to_owned(),
        });
    }
    Ok(data_dir.join(network))
}

impl Store for DiskStore {
    fn lock(&self) -> Result<StoreGuard<'_>, StoreError> {
        // flock on an open file description we already locked would succeed silently and the
        // first guard's drop would unlock both; refuse instead.
        if self.locked.get() {
            return Err(StoreError::AlreadyLocked {
                path: self.lock_path.clone(),
            });
        }
        loop {
            match flock(self.lock_file.as_fd(), FlockOperation::LockExclusive) {
                Ok(()) => break,
                Err(Errno::INTR) => continue,
                Err(e) => {
                    return Err(StoreError::Lock {
                        path: self.lock_path.clone(),
                        source: e.into(),
                    });
                }
            }
        }
        self.locked.set(true);
        Ok(StoreGuard::flocked(self.lock_file.as_fd(), &self.locked))
    }

    fn reserve(&self, key: &LeaseKey, ip: IpAddr) -> Result<bool, StoreError> {
        let path = self.ip_path(ip);
        // O_CREAT|O_EXCL: the existence of the file *is* the reservation.
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(source) => return Err(StoreError::CreateReservation { path, source }),
        };
        let content = Lease::file_content(&key.container_id, &key.ifname);
        let written = file
            .write_all(content.as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(source) = written {
            drop(file);
            // A half-written reservation would hold the address for nobody; the write error
            // is the one worth reporting.
            let _ = fs::remove_file(&path);
            return Err(StoreError::WriteReservation { path, source });
        }
        Ok(true)
    }

    fn release_ip(&self, ip: IpAddr) -> Result<bool, StoreError> {
        let path = self.ip_path(ip);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StoreError::Remove { path, source }),
        }
    }

    fn release_by_key(&self, key: &LeaseKey) -> Result<Vec<IpAddr>, StoreError> {
        let ips = leases_to_release(&self.leases()?, key);
        // Keep going after a failure (lenient DEL); report the first failure at the end.
        let mut released = Vec::with_capacity(ips.len());
        let mut first_err = None;
        for ip in ips {
            match self.release_ip(ip) {
                Ok(_) => released.push(ip),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(released),
        }
    }

    fn reserved(&self, ip: IpAddr) -> Result<bool, StoreError> {
        let path = self.ip_path(ip);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StoreError::Read { path, source }),
        }
    }

    fn reserved_ips(&self) -> Result<Vec<IpAddr>, StoreError> {
        Ok(self
            .reservation_names()?
            .into_iter()
            .map(|(ip, _)| ip)
            .collect())
    }

    fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        let mut out = Vec::new();
        for (ip, path) in self.reservation_names()? {
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                // Removed between readdir and read (only possible without the lock).
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                // A directory named like an IP is not a reservation.
                Err(e) if e.kind() == io::ErrorKind::IsADirectory => continue,
                Err(source) => return Err(StoreError::Read { path, source }),
            };
            out.push(Lease::parse_holder(ip, &String::from_utf8_lossy(&bytes)));
        }
        Ok(out)
    }

    fn last_reserved(&self, set: usize) -> Result<Option<IpAddr>, StoreError> {
        let path = self.last_reserved_path(set);
        match fs::read_to_string(&path) {
            // Only a hint: garbage means "no hint", like the reference's ParseIP → nil.
            Ok(text) => Ok(text.trim().parse().ok().map(canonical_ip)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(None),
            Err(source) => Err(StoreError::Read { path, source }),
        }
    }

    fn set_last_reserved(&self, set: usize, ip: IpAddr) -> Result<(), StoreError> {
        let path = self.last_reserved_path(set);
        // The name is not an IP, so a leftover after a crash is never taken for a
        // reservation; under the lock nobody else writes it.
        let tmp = self.dir.join(format!(".{LAST_RESERVED_PREFIX}{set}.tmp"));
        let write = || -> io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o644)
                .open(&tmp)?;
            f.write_all(canonical_ip(ip).to_string().as_bytes())?;
            // No fsync: an ADD already syncs its reservation, and a lost hint only moves where
            // the next search starts.
            fs::rename(&tmp, &path)
        };
        write().map_err(|source| {
            let _ = fs::remove_file(&tmp);
            StoreError::WriteLastReserved { path, source }
        })
    }

    fn forget_last_reserved(&self) -> Result<(), StoreError> {
        let read_dir_err = |source| StoreError::ReadDir {
            path: self.dir.clone(),
            source,
        };
        // Every `last_reserved_ip.<n>` (the number of sets may have changed since it was
        // written) and any `.last_reserved_ip.<n>.tmp` a crash left behind.
        for entry in fs::read_dir(&self.dir).map_err(read_dir_err)? {
            let entry = entry.map_err(read_dir_err)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name
                .strip_prefix('.')
                .unwrap_or(name)
                .starts_with(LAST_RESERVED_PREFIX)
            {
                continue;
            }
            let path = entry.path();
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(StoreError::RemoveLastReserved { path, source }),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn names(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    #[test]
    fn open_rejects_bad_network_names() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["", ".", "..", "a/b", "/abs"] {
            let err = DiskStore::open(tmp.path(), name).unwrap_err();
            assert!(
                matches!(err, StoreError::InvalidNetworkName { .. }),
                "{name}: {err}"
            );
        }
        assert!(DiskStore::open_existing(tmp.path(), "n").unwrap().is_none());
        assert!(!tmp.path().join("n").exists());
    }

    #[test]
    fn layout_and_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("a/b");
        let store = DiskStore::open(&data, "net").unwrap();
        let dir = data.join("net");
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o7777 & !0o022,
            0o755 & !0o022
        );
        let key = LeaseKey::new("net", "c1", "eth0");
        let _g = store.lock().unwrap();
        assert!(store.reserve(&key, ip("198.18.5.2")).unwrap());
        assert!(!store.reserve(&key, ip("198.18.5.2")).unwrap());
        assert!(store.reserve(&key, ip("2001:db8::2")).unwrap());
        store.set_last_reserved(0, ip("198.18.5.2")).unwrap();
        assert_eq!(
            fs::read(dir.join("198.18.5.2")).unwrap(),
            b"c1\r\neth0".to_vec()
        );
        assert_eq!(
            fs::read(dir.join("last_reserved_ip.0")).unwrap(),
            b"198.18.5.2".to_vec()
        );
        assert_eq!(
            names(&dir),
            ["198.18.5.2", "2001:db8::2", "last_reserved_ip.0", "lock"]
                .map(String::from)
                .into()
        );
        assert_eq!(store.last_reserved(0).unwrap(), Some(ip("198.18.5.2")));
        assert_eq!(store.last_reserved(1).unwrap(), None);
        assert!(store.reserved(ip("2001:db8::2")).unwrap());
        let mut held = store.get_by_key(&key).unwrap();
        held.sort();
        assert_eq!(held, [ip("198.18.5.2"), ip("2001:db8::2")]);
        assert_eq!(store.release_by_key(&key).unwrap().len(), 2);
        assert_eq!(store.release_by_key(&key).unwrap().len(), 0);
        assert!(!store.release_ip(ip("198.18.5.2")).unwrap());
    }

    #[test]
    fn old_format_is_fallback_for_release() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DiskStore::open(tmp.path(), "n").unwrap();
        let dir = store.dir().to_owned();
        fs::write(dir.join("198.18.5.3"), "c1").unwrap();
        fs::write(dir.join("198.18.5.4"), "c1\r\neth1").unwrap();
        let eth0 = LeaseKey::new("n", "c1", "eth0");
        let eth1 = LeaseKey::new("n", "c1", "eth1");
        let mut held = store.get_by_key(&eth1).unwrap();
        held.sort();
        assert_eq!(held, [ip("198.18.5.3"), ip("198.18.5.4")]);
        // eth1 has a current-format match, so the legacy file stays...
        assert_eq!(store.release_by_key(&eth1).unwrap(), [ip("198.18.5.4")]);
        // ...and goes with the next key of that container that has no current-format file.
        assert_eq!(store.release_by_key(&eth0).unwrap(), [ip("198.18.5.3")]);
        assert_eq!(names(&dir), ["lock".to_owned()].into());
    }

    #[test]
    fn garbage_hint_is_no_hint() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DiskStore::open(tmp.path(), "n").unwrap();
        fs::write(store.dir().join("last_reserved_ip.0"), "garbage").unwrap();
        assert_eq!(store.last_reserved(0).unwrap(), None);
    }

    #[test]
    fn lock_twice_on_one_handle_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DiskStore::open(tmp.path(), "n").unwrap();
        let g = store.lock().unwrap();
        assert!(matches!(
            store.lock(),
            Err(StoreError::AlreadyLocked { .. })
        ));
        drop(g);
        let _g = store.lock().unwrap();
    }

    #[test]
    fn flock_excludes_other_handles_in_this_process() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Barrier};
        use std::time::Duration;

        let tmp = tempfile::tempdir().unwrap();
        let a = DiskStore::open(tmp.path(), "n").unwrap();
        let guard = a.lock().unwrap();
        let acquired = Arc::new(AtomicBool::new(false));
        let barrier = Arc::new(Barrier::new(2));
        let t = {
            let (path, acquired, barrier) =
                (tmp.path().to_owned(), acquired.clone(), barrier.clone());
            std::thread::spawn(move || {
                let b = DiskStore::open(&path, "n").unwrap();
                barrier.wait();
                let _g = b.lock().unwrap();
                acquired.store(true, Ordering::SeqCst);
            })
        };
        barrier.wait();
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !acquired.load(Ordering::SeqCst),
            "second handle got the lock"
        );
        drop(guard);
        t.join().unwrap();
        assert!(acquired.load(Ordering::SeqCst));
    }

    #[test]
    fn directory_named_like_an_ip_is_taken_but_not_a_lease() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DiskStore::open(tmp.path(), "n").unwrap();
        let key = LeaseKey::new("n", "c1", "eth0");
        // O_EXCL fails with EEXIST on any entry of that name: "taken", not an error.
        fs::create_dir(store.dir().join("198.18.5.9")).unwrap();
        assert!(!store.reserve(&key, ip("198.18.5.9")).unwrap());
        assert!(store.leases().unwrap().is_empty());
        assert_eq!(store.reserved_ips().unwrap(), [ip("198.18.5.9")]);
    }
}
