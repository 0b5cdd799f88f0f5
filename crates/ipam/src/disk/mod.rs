//! `DiskStore`: the reference host-local's on-disk state, so existing nodes carry over, plus a
//! key index beside it so that finding an attachment's addresses does not read every file.
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
//! The reservation files are the source of truth. `<dataDir>/.berth-keys/<network>/` (see
//! [`crate::index`]) maps each holder to its addresses. It is a cache: each transaction
//! trusts it after one `stat` (the seal Berth leaves on the directory's mtime), or else after
//! one `readdir` that matches the recorded checksum, or else rebuilds it from a full scan (anyone
//! else changed the reservations). The record and seal are written when the lock is released
//! (when the guard drops). Without a usable index (a file system without hard links, say) every
//! lookup scans, as the reference does.
//!
//! Differences on purpose: reservations are fsynced before they appear (written into the
//! index's pin, then linked; the reference only closes them), and the hint file is replaced by rename (tmp + rename, not fsynced: it is only
//! a hint, and a torn or empty one after a host crash reads as "no hint") instead of truncated
//! in place, and hints are removed once the network holds no reservation (the reference keeps
//! them). The directory itself is not fsynced: after a host crash every container is gone too,
//! and a lost reservation or hint can only make the next allocation pick a different free
//! address (a lost or stale index is rebuilt, see [`crate::index`]).

use std::cell::{Cell, RefCell};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{
    AtFlags, CWD, FlockOperation, Timespec, Timestamps, UTIME_OMIT, flock, utimensat,
};
use rustix::io::Errno;

use crate::index::{IndexError, KeyIndex, KeyName, Record, Stamp, Summary};
use crate::key::{Lease, LeaseKey};
use crate::range::canonical_ip;
use crate::store::{BeforeUnlock, Store, StoreError, StoreGuard, leases_to_release};

mod indexed;
#[cfg(test)]
mod tests;

/// The reference's default `dataDir`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
/// The one temporary of the hint files: only the lock holder writes them, one at a time. Its
/// name is not an IP, so a leftover is never taken for a reservation.
const LAST_RESERVED_TMP: &str = ".last_reserved_ip.tmp";
const LOCK_FILE: &str = "lock";

/// Directory-backed store for one network. One handle per thread (it is `!Sync`); several
/// handles on the same directory exclude each other through [`Store::lock`].
#[derive(Debug)]
pub struct DiskStore {
    dir: PathBuf,
    lock_path: PathBuf,
    lock_file: File,
    locked: Cell<bool>,
    index: KeyIndex,
    /// What this lock holder knows about the directory; reset by every [`Store::lock`], used
    /// only while locked (unlocked calls read the disk and bypass the index).
    tx: RefCell<Option<Tx>>,
    /// Reservation files read and directory listings taken, for tests that check lookups
    /// stay O(key).
    #[cfg(test)]
    reads: Cell<usize>,
    #[cfg(test)]
    listings: Cell<usize>,
}

/// Whether the key index answers lookups in the current transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexMode {
    /// The index covers every reservation: the directory still carries the seal of the last
    /// Berth transaction, or its listing matches the recorded checksum, or it was rebuilt.
    Trusted,
    /// Someone else changed the reservations; the first lookup rebuilds the index.
    Unchecked,
    /// The index cannot be used or kept (see [`DiskStore::index_problem`]): lookups scan.
    Unusable,
}

/// One directory entry named like an address (a reservation, or something in its way).
#[derive(Debug, Clone, Copy)]
struct Listed {
    ip: IpAddr,
    ino: u64,
    is_dir: bool,
    /// Named by the address's canonical text (the name Berth and the reference write, and
    /// look up).
    canonical: bool,
}

#[derive(Debug)]
struct Tx {
    /// Every address-named entry, if this transaction listed the directory (it does not when
    /// the seal shows nothing changed), kept current by the transaction's own changes (nobody
    /// else changes the directory under the lock).
    listing: Option<Vec<Listed>>,
    /// Checksum of the address-named entries, listed or not, kept current.
    summary: Summary,
    /// What `.summary` says now.
    on_disk: Option<Record>,
    mode: IndexMode,
    problem: Option<IndexError>,
    /// Every lease, from a full scan (a rebuild) since the last change, so that a transaction
    /// without a usable index reads each file once.
    scanned: Option<Vec<Lease>>,
}

impl Tx {
    fn insert(&mut self, ip: IpAddr, ino: u64) {
        self.scanned = None;
        if let Some(listing) = &mut self.listing {
            listing.push(Listed {
                ip,
                ino,
                is_dir: false,
                canonical: true,
            });
        }
        self.summary.add(ip, ino, false);
    }

    fn remove(&mut self, gone: Listed) {
        self.scanned = None;
        if let Some(listing) = &mut self.listing {
            if let Some(i) = listing.iter().position(|l| l.ip == gone.ip) {
                listing.swap_remove(i);
            }
        }
        self.summary.remove(gone.ip, gone.ino, gone.is_dir);
    }

    fn give_up(&mut self, problem: IndexError) {
        self.mode = IndexMode::Unusable;
        self.problem.get_or_insert(problem);
    }
}

/// An address a holder holds, verified: its file exists and names the holder.
#[derive(Debug, Clone, Copy)]
struct Held {
    ip: IpAddr,
    /// Of the reservation file.
    ino: u64,
}

/// `link(2)` errors that mean "this file system cannot hold the index", not "the address is
/// taken" or "the store is failing".
fn links_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(Errno::from_raw_os_error),
        Some(Errno::XDEV | Errno::PERM | Errno::MLINK | Errno::OPNOTSUPP)
    )
}

impl DiskStore {
    /// Removes what a holder killed between writing a temporary and renaming it left: under
    /// the lock no other writer can be mid-write, so any temporary is stale. Two unlinks that
    /// usually find nothing, never a listing. Best effort: a failure costs a stray file.
    fn sweep_temporaries(&self) {
        for tmp in [self.dir.join(LAST_RESERVED_TMP), self.index.temporary()] {
            match fs::remove_file(&tmp) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    eprintln!("host-local: remove stale {}: {e}", tmp.display());
                }
                _ => {}
            }
        }
    }

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
        DiskStore::open_dir(data_dir, network, dir)
    }

    /// Like [`DiskStore::open`], but `Ok(None)` when the network directory does not exist
    /// (nothing was ever reserved): DEL, CHECK and GC then have nothing to do and must not
    /// create state.
    pub fn open_existing(data_dir: &Path, network: &str) -> Result<Option<DiskStore>, StoreError> {
        let dir = network_dir(data_dir, network)?;
        match fs::metadata(&dir) {
            Ok(m) if m.is_dir() => DiskStore::open_dir(data_dir, network, dir).map(Some),
            Ok(_) => Err(StoreError::CreateDir {
                path: dir,
                source: io::Error::from(io::ErrorKind::NotADirectory),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Read { path: dir, source }),
        }
    }

    fn open_dir(data_dir: &Path, network: &str, dir: PathBuf) -> Result<DiskStore, StoreError> {
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
            index: KeyIndex::new(data_dir, network),
            tx: RefCell::new(None),
            #[cfg(test)]
            reads: Cell::new(0),
            #[cfg(test)]
            listings: Cell::new(0),
        })
    }

    /// `<data_dir>/<network>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<data_dir>/.berth-keys/<network>`, the key index (absent while nothing is reserved).
    pub fn index_dir(&self) -> &Path {
        self.index.dir()
    }

    /// How the current transaction answers lookups; `None` outside the lock or before the
    /// first call that looks at the directory.
    pub fn index_mode(&self) -> Option<IndexMode> {
        if !self.locked.get() {
            return None;
        }
        self.tx.borrow().as_ref().map(|tx| tx.mode)
    }

    /// Why the index is [`IndexMode::Unusable`] in the current transaction, if it is.
    pub fn index_problem(&self) -> Option<String> {
        let tx = self.tx.borrow();
        let problem = tx.as_ref()?.problem.as_ref()?;
        let mut text = problem.to_string();
        let mut source = std::error::Error::source(problem);
        while let Some(e) = source {
            text.push_str(": ");
            text.push_str(&e.to_string());
            source = e.source();
        }
        Some(text)
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

    /// Directory entries whose name is an IP address, i.e. reservations, with the inode number
    /// readdir reports (no file is opened). `lock`, `last_reserved_ip.*` and anything else is
    /// ignored.
    fn list(&self) -> Result<Vec<Listed>, StoreError> {
        #[cfg(test)]
        self.listings.set(self.listings.get() + 1);
        let read_dir_err = |source| StoreError::ReadDir {
            path: self.dir.clone(),
            source,
        };
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(read_dir_err)? {
            let entry = entry.map_err(read_dir_err)?;
            let name = entry.file_name();
            let Some(text) = name.to_str() else { continue };
            let Ok(ip) = text.parse::<IpAddr>() else {
                continue;
            };
            let ip = canonical_ip(ip);
            out.push(Listed {
                ip,
                ino: entry.ino(),
                // d_type: no stat unless the file system leaves it unknown.
                is_dir: entry.file_type().map_err(read_dir_err)?.is_dir(),
                canonical: ip.to_string() == text,
            });
        }
        Ok(out)
    }

    /// Read one reservation's holder; `None` if it vanished or is a directory.
    fn read_lease(&self, ip: IpAddr, path: &Path) -> Result<Option<Lease>, StoreError> {
        #[cfg(test)]
        self.reads.set(self.reads.get() + 1);
        match fs::read(path) {
            Ok(bytes) => Ok(Some(Lease::parse_holder(
                ip,
                &String::from_utf8_lossy(&bytes),
            ))),
            // Removed between readdir and read (only possible without the lock).
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            // A directory named like an IP is not a reservation.
            Err(e) if e.kind() == io::ErrorKind::IsADirectory => Ok(None),
            Err(source) => Err(StoreError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Every reservation with its holder, by reading every file (the reference's way).
    fn scan_leases(&self) -> Result<Vec<Lease>, StoreError> {
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
            if let Some(lease) = self.read_lease(canonical_ip(ip), &entry.path())? {
                out.push(lease);
            }
        }
        Ok(out)
    }
}

impl DiskStore {
    /// Reserve without the index (unlocked, or the index is unusable): `O_CREAT|O_EXCL`.
    fn reserve_plain(&self, key: &LeaseKey, ip: IpAddr) -> Result<bool, StoreError> {
        let path = self.ip_path(ip);
        // The existence of the file *is* the reservation.
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

    fn release_ip_plain(&self, ip: IpAddr) -> Result<bool, StoreError> {
        let path = self.ip_path(ip);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(StoreError::Remove { path, source }),
        }
    }

    /// Release by scanning (unlocked, or the index is unusable); `leases` is every lease.
    fn release_by_key_plain(
        &self,
        key: &LeaseKey,
        leases: &[Lease],
    ) -> Result<Vec<IpAddr>, StoreError> {
        let ips = leases_to_release(leases, key);
        // Keep going after a failure (lenient DEL); report the first failure at the end.
        let mut released = Vec::with_capacity(ips.len());
        let mut first_err = None;
        for ip in ips {
            match self.release_ip_plain(ip) {
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
}

impl BeforeUnlock for DiskStore {
    fn before_unlock(&self) {
        self.seal();
    }
}

fn network_dir(data_dir: &Path, network: &str) -> Result<PathBuf, StoreError> {
    // A leading '.' is no CNI network name, and keeps `.berth-keys` apart from networks.
    if network.is_empty()
        || network.starts_with('.')
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
        // Whatever the last holder knew is stale now: others may have run in between.
        self.tx.replace(None);
        self.locked.set(true);
        self.sweep_temporaries();
        Ok(StoreGuard::flocked(
            self.lock_file.as_fd(),
            &self.locked,
            self,
        ))
    }

    fn reserve(&self, key: &LeaseKey, ip: IpAddr) -> Result<bool, StoreError> {
        let ip = canonical_ip(ip);
        self.with_tx(|tx| {
            if self.ensure_index(tx)? {
                self.reserve_indexed(tx, key, ip)
            } else {
                self.reserve_unindexed(tx, key, ip)
            }
        })
        .unwrap_or_else(|| self.reserve_plain(key, ip))
    }

    fn release_ip(&self, ip: IpAddr) -> Result<bool, StoreError> {
        let ip = canonical_ip(ip);
        self.with_tx(|tx| {
            let listed = self.find(tx, ip)?;
            let indexed = match listed {
                Some(l) if !l.is_dir => self.ensure_index(tx)?,
                // Nothing there, or a directory in the way (whose removal fails as before).
                _ => false,
            };
            let held = if indexed { self.read_held(ip)? } else { None };
            let Some((lease, ino)) = held else {
                let released = self.release_ip_plain(ip)?;
                if let Some(listed) = listed.filter(|_| released) {
                    tx.remove(listed);
                }
                return Ok(released);
            };
            let name = KeyName::of(&lease.container_id, lease.ifname.as_deref());
            let released = self.release_indexed(tx, &name, vec![Held { ip, ino }])?;
            Ok(!released.is_empty())
        })
        .unwrap_or_else(|| self.release_ip_plain(ip))
    }

    fn release_by_key(&self, key: &LeaseKey) -> Result<Vec<IpAddr>, StoreError> {
        self.with_tx(|tx| {
            if self.ensure_index(tx)? {
                let (exact, legacy) = self.lookup(tx, key)?;
                if tx.mode == IndexMode::Trusted {
                    // Current-format matches first, old format only as a fallback.
                    let cid = key.container_id.trim();
                    let (name, chosen) = if exact.is_empty() {
                        (KeyName::of(cid, None), legacy)
                    } else {
                        (KeyName::of(cid, Some(&key.ifname)), exact)
                    };
                    return self.release_indexed(tx, &name, chosen);
                }
            }
            let leases = self.all_leases(tx)?;
            let released = self.release_by_key_plain(key, &leases)?;
            // The index is off for the rest of the transaction; keep what it knows true.
            tx.listing = None;
            tx.scanned = None;
            Ok(released)
        })
        .unwrap_or_else(|| self.release_by_key_plain(key, &self.scan_leases()?))
    }

    fn get_by_key(&self, key: &LeaseKey) -> Result<Vec<IpAddr>, StoreError> {
        let held_by = |leases: Vec<Lease>| -> Vec<IpAddr> {
            leases
                .into_iter()
                .filter(|l| l.is_held_by(key))
                .map(|l| l.ip)
                .collect()
        };
        self.with_tx(|tx| {
            if self.ensure_index(tx)? {
                let (exact, legacy) = self.lookup(tx, key)?;
                if tx.mode == IndexMode::Trusted {
                    return Ok(exact.into_iter().chain(legacy).map(|h| h.ip).collect());
                }
            }
            Ok(held_by(self.all_leases(tx)?))
        })
        .unwrap_or_else(|| Ok(held_by(self.scan_leases()?)))
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
        self.with_tx(|tx| Ok(self.listing(tx)?.iter().map(|l| l.ip).collect()))
            .unwrap_or_else(|| Ok(self.list()?.into_iter().map(|l| l.ip).collect()))
    }

    fn is_empty(&self) -> Result<bool, StoreError> {
        self.with_tx(|tx| {
            if tx.mode == IndexMode::Trusted {
                Ok(tx.summary.count == 0)
            } else {
                Ok(self.listing(tx)?.is_empty())
            }
        })
        .unwrap_or_else(|| Ok(self.list()?.is_empty()))
    }

    /// Under the lock this is GC's full scan, and it rebuilds the index on the way.
    fn leases(&self) -> Result<Vec<Lease>, StoreError> {
        self.with_tx(|tx| self.rebuild(tx))
            .unwrap_or_else(|| self.scan_leases())
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
        let tmp = self.dir.join(LAST_RESERVED_TMP);
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
