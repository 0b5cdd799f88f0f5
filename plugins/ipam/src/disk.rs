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

    fn mtime(&self) -> Result<Stamp, StoreError> {
        fs::metadata(&self.dir)
            .map(|m| Stamp::mtime_of(&m))
            .map_err(|source| StoreError::Read {
                path: self.dir.clone(),
                source,
            })
    }

    // ---- the transaction ----------------------------------------------------------------

    /// Run `f` on the current transaction, starting it if this is the first call since
    /// [`Store::lock`]. `None` when the store is not locked.
    fn with_tx<T>(
        &self,
        f: impl FnOnce(&mut Tx) -> Result<T, StoreError>,
    ) -> Option<Result<T, StoreError>> {
        if !self.locked.get() {
            return None;
        }
        let mut slot = self.tx.borrow_mut();
        if slot.is_none() {
            match self.begin() {
                Ok(tx) => *slot = Some(tx),
                Err(e) => return Some(Err(e)),
            }
        }
        // INVARIANT: filled just above.
        let tx = slot.as_mut().expect("transaction started above");
        Some(f(tx))
    }

    /// Decide whether the index can be trusted: by the seal (one `stat`, one `readlink`), else
    /// by one listing of the directory against the recorded checksum.
    fn begin(&self) -> Result<Tx, StoreError> {
        let on_disk = self.index.read_record();
        if let Some(record) = on_disk.filter(|r| r.sealed.is_some()) {
            if record.sealed == Some(self.mtime()?) {
                return Ok(Tx {
                    listing: None,
                    summary: record.summary,
                    on_disk,
                    mode: IndexMode::Trusted,
                    problem: None,
                    scanned: None,
                });
            }
        }
        let mut tx = Tx {
            listing: None,
            summary: Summary::default(),
            on_disk,
            mode: IndexMode::Unchecked,
            problem: None,
            scanned: None,
        };
        self.relist(&mut tx)?;
        if tx.summary.files == 0 {
            // Nothing reserved, so nothing to find; and no index outlives the last
            // reservation (a crash or a foreign DEL may have left one).
            tx.mode = IndexMode::Trusted;
            if self.index.exists() {
                if let Err(problem) = self.index.remove_all() {
                    tx.give_up(problem);
                }
                tx.on_disk = None;
            }
        } else if on_disk.map(|r| r.summary) == Some(tx.summary) {
            tx.mode = IndexMode::Trusted;
        }
        Ok(tx)
    }

    /// List the directory (again) and take the checksum from what is there.
    fn relist(&self, tx: &mut Tx) -> Result<(), StoreError> {
        let listing = self.list()?;
        tx.summary = Summary::default();
        for l in &listing {
            tx.summary.add(l.ip, l.ino, l.is_dir);
        }
        tx.listing = Some(listing);
        Ok(())
    }

    fn listing<'t>(&self, tx: &'t mut Tx) -> Result<&'t [Listed], StoreError> {
        if tx.listing.is_none() {
            self.relist(tx)?;
        }
        Ok(tx.listing.as_deref().unwrap_or_default())
    }

    /// The entry named `ip`, from the listing if there is one, else by `lstat`.
    fn find(&self, tx: &Tx, ip: IpAddr) -> Result<Option<Listed>, StoreError> {
        if let Some(listing) = &tx.listing {
            return Ok(listing.iter().find(|l| l.ip == ip).copied());
        }
        let path = self.ip_path(ip);
        match fs::symlink_metadata(&path) {
            Ok(m) => Ok(Some(Listed {
                ip,
                ino: m.ino(),
                is_dir: m.is_dir(),
                canonical: true,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Read { path, source }),
        }
    }

    /// Make the index usable for this transaction if it can be: rebuild when unchecked.
    fn ensure_index(&self, tx: &mut Tx) -> Result<bool, StoreError> {
        if tx.mode == IndexMode::Unchecked {
            self.rebuild(tx)?;
        }
        Ok(tx.mode == IndexMode::Trusted)
    }

    /// Withdraw the record before an entry it may cover goes, so that it never describes a
    /// file whose inode is not pinned. `false` (and the index off) if that failed: then
    /// leave the entries alone.
    fn withdraw(&self, tx: &mut Tx) -> bool {
        if tx.on_disk.is_none() {
            return true;
        }
        match self.index.remove_summary() {
            Ok(()) => {
                tx.on_disk = None;
                true
            }
            Err(problem) => {
                tx.give_up(problem);
                false
            }
        }
    }

    /// Full scan: read every reservation, then make the index match it (drop pins of other
    /// or vanished files, pin the unpinned ones, rewrite every holder's list). Returns the
    /// leases (and keeps them for the rest of the transaction). Only reading a reservation can
    /// fail the call; an index that cannot be repaired leaves the transaction
    /// [`IndexMode::Unusable`]. The record is written at unlock.
    fn rebuild(&self, tx: &mut Tx) -> Result<Vec<Lease>, StoreError> {
        use std::collections::{BTreeMap, HashMap};

        // No claim of completeness while the index is being changed: a crash halfway leaves
        // no record. If it cannot be withdrawn, touch nothing it may cover.
        let mut usable = match self.index.remove_summary() {
            Ok(()) => true,
            Err(problem) => {
                tx.give_up(problem);
                false
            }
        };
        tx.on_disk = None;
        let listing = self.listing(tx)?.to_vec();
        if let Some(odd) = listing.iter().find(|l| !l.canonical) {
            // Found by its own name only by a scan; the index goes by the canonical one.
            tx.give_up(IndexError::OddName {
                address: odd.ip,
                dir: self.dir.clone(),
            });
            let leases = self.scan_leases()?;
            tx.scanned = Some(leases.clone());
            return Ok(leases);
        }
        // Whether this file system can hold the index at all, before reading everything.
        if usable && listing.iter().any(|l| !l.is_dir) {
            if let Err(problem) = self.index.probe_links(&self.lock_path) {
                tx.give_up(problem);
                usable = false;
            }
        }
        let mut leases = Vec::with_capacity(listing.len());
        let mut pins: HashMap<IpAddr, u64> = HashMap::with_capacity(listing.len());
        let mut keys: BTreeMap<KeyName, Vec<IpAddr>> = BTreeMap::new();
        for l in listing.iter().filter(|l| !l.is_dir) {
            let path = self.ip_path(l.ip);
            // The index tells files apart by the inode readdir reports, and finds them by the
            // canonical name: both must hold for every file, or the index stays off.
            if usable {
                let problem = match fs::symlink_metadata(&path) {
                    Ok(m) if m.ino() == l.ino => None,
                    Ok(m) => Some(IndexError::InodeMismatch {
                        path: path.clone(),
                        listed: l.ino,
                        actual: m.ino(),
                    }),
                    Err(source) => Some(IndexError::Stat {
                        path: path.clone(),
                        source,
                    }),
                };
                if let Some(problem) = problem {
                    tx.give_up(problem);
                    usable = false;
                }
            }
            let Some(lease) = self.read_lease(l.ip, &path)? else {
                continue;
            };
            pins.insert(l.ip, l.ino);
            keys.entry(KeyName::of(&lease.container_id, lease.ifname.as_deref()))
                .or_default()
                .push(l.ip);
            leases.push(lease);
        }
        if usable {
            match self.reconcile(pins, keys) {
                Ok(()) => tx.mode = IndexMode::Trusted,
                Err(problem) => tx.give_up(problem),
            }
        }
        tx.scanned = Some(leases.clone());
        Ok(leases)
    }

    /// Every lease: from this transaction's rebuild if nothing changed since, else by
    /// reading every file.
    fn all_leases(&self, tx: &mut Tx) -> Result<Vec<Lease>, StoreError> {
        match &tx.scanned {
            Some(leases) => Ok(leases.clone()),
            None => self.scan_leases(),
        }
    }

    /// Make the index hold exactly `pins` (address → inode of its file) and `keys`.
    fn reconcile(
        &self,
        mut pins: std::collections::HashMap<IpAddr, u64>,
        mut keys: std::collections::BTreeMap<KeyName, Vec<IpAddr>>,
    ) -> Result<(), IndexError> {
        let found = self.index.contents()?;
        for (ip, ino) in found.pins {
            if pins.get(&ip) == Some(&ino) {
                pins.remove(&ip);
            } else {
                self.index.remove_pin(ip)?;
            }
        }
        for (key, mut listed) in found.keys {
            let mut wanted = keys.remove(&key).unwrap_or_default();
            listed.sort();
            wanted.sort();
            if listed != wanted {
                self.index.set_key_ips(&key, &wanted)?;
            }
        }
        if pins.is_empty() && keys.is_empty() {
            return Ok(());
        }
        self.index.ensure_dir()?;
        for ip in pins.into_keys() {
            self.index.link_pin(ip, &self.ip_path(ip))?;
        }
        for (key, ips) in keys {
            self.index.set_key_ips(&key, &ips)?;
        }
        Ok(())
    }

    /// Under the lock, last thing: record what the index covers and seal the directory, so the
    /// next transaction can trust the index after one `stat`. With nothing reserved, remove
    /// the network's index instead. Failures only cost the next transaction a listing.
    fn seal(&self) {
        let mut slot = self.tx.borrow_mut();
        let Some(tx) = slot.as_mut() else { return };
        if tx.mode != IndexMode::Trusted {
            return;
        }
        if tx.summary.files == 0 {
            if tx.on_disk.is_some() || self.index.exists() {
                let _ = self.index.remove_all();
            }
            return;
        }
        let Ok(now) = self.mtime() else { return };
        let record = Record {
            summary: tx.summary,
            sealed: Some(now),
        };
        if tx.on_disk == Some(record) {
            // Nothing changed since this transaction found the seal.
            return;
        }
        // Seal first, then record what the file system stored (it may round the time; the
        // stored value is still earlier than any change to come). A crash between the two
        // leaves a record whose seal does not match: the next transaction checks the listing
        // against the record's checksum instead.
        let seal = now.seal();
        let times = Timestamps {
            last_access: Timespec {
                tv_sec: 0,
                tv_nsec: UTIME_OMIT,
            },
            last_modification: Timespec {
                tv_sec: seal.sec,
                tv_nsec: seal.nsec,
            },
        };
        let sealed = utimensat(CWD, &self.dir, &times, AtFlags::empty())
            .ok()
            .and_then(|()| self.mtime().ok())
            .filter(|stored| (stored.sec, stored.nsec) < (now.sec, now.nsec));
        let record = Record { sealed, ..record };
        if self.index.write_record(record).is_err() {
            let _ = self.index.remove_summary();
        }
    }

    /// The addresses the holder's list names whose file still exists and names the holder
    /// (current format, then old format), each with its file's inode. Addresses whose file
    /// is gone (a crash between list and link, a DEL behind our back) or holds someone else
    /// are dropped from the list; the pin of a vanished file goes too.
    fn lookup(&self, tx: &mut Tx, key: &LeaseKey) -> Result<(Vec<Held>, Vec<Held>), StoreError> {
        let cid = key.container_id.trim();
        let mut found = (Vec::new(), Vec::new());
        for exact in [true, false] {
            let name = KeyName::of(cid, exact.then_some(key.ifname.as_str()));
            let listed = match self.index.key_ips(&name) {
                Ok(ips) => ips,
                Err(problem) => {
                    tx.give_up(problem);
                    return Ok(found);
                }
            };
            let mut keep = Vec::with_capacity(listed.len());
            for &ip in &listed {
                let Some((lease, ino)) = self.read_held(ip)? else {
                    // No file: no record covers its pin either (the trusted state has no
                    // file of that name).
                    if let Err(problem) = self.index.remove_pin(ip) {
                        tx.give_up(problem);
                    }
                    continue;
                };
                let held = if exact {
                    lease.is_exactly(cid, &key.ifname)
                } else {
                    lease.is_legacy_of(cid)
                };
                if held {
                    if exact { &mut found.0 } else { &mut found.1 }.push(Held { ip, ino });
                }
                // A hashed name is shared: other holders' addresses stay on its list.
                if held || name.hashed {
                    keep.push(ip);
                }
            }
            if keep.len() != listed.len() {
                if let Err(problem) = self.index.set_key_ips(&name, &keep) {
                    tx.give_up(problem);
                }
            }
        }
        Ok(found)
    }

    /// A reservation file's holder and inode; `None` if there is none (or a directory).
    fn read_held(&self, ip: IpAddr) -> Result<Option<(Lease, u64)>, StoreError> {
        use std::io::Read;

        #[cfg(test)]
        self.reads.set(self.reads.get() + 1);
        let path = self.ip_path(ip);
        let read = || -> io::Result<(Vec<u8>, u64)> {
            let mut file = File::open(&path)?;
            let ino = file.metadata()?.ino();
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            Ok((bytes, ino))
        };
        match read() {
            Ok((bytes, ino)) => Ok(Some((
                Lease::parse_holder(ip, &String::from_utf8_lossy(&bytes)),
                ino,
            ))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::IsADirectory => Ok(None),
            Err(source) => Err(StoreError::Read { path, source }),
        }
    }

    /// Release verified addresses of one holder: each file first, then (after the record no
    /// longer covers it) its pin and its place on the holder's list. Keeps going after a
    /// failure; reports the first one.
    fn release_indexed(
        &self,
        tx: &mut Tx,
        key: &KeyName,
        held: Vec<Held>,
    ) -> Result<Vec<IpAddr>, StoreError> {
        let mut released = Vec::with_capacity(held.len());
        let mut first_err = None;
        for h in held {
            let path = self.ip_path(h.ip);
            match fs::remove_file(&path) {
                Ok(()) => {}
                // Verified just before under the lock; gone anyway is released.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    first_err.get_or_insert(StoreError::Remove { path, source });
                    continue;
                }
            }
            tx.remove(Listed {
                ip: h.ip,
                ino: h.ino,
                is_dir: false,
                canonical: true,
            });
            released.push(h.ip);
        }
        // If the record cannot be withdrawn, pins and list stay (stale, harmless): the pins
        // keep the inodes the record may cover alive.
        if !released.is_empty() && self.withdraw(tx) {
            let unindex = || -> Result<(), IndexError> {
                for ip in &released {
                    self.index.remove_pin(*ip)?;
                }
                let mut left = self.index.key_ips(key)?;
                left.retain(|ip| !released.contains(ip));
                self.index.set_key_ips(key, &left)
            };
            if let Err(problem) = unindex() {
                tx.give_up(problem);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(released),
        }
    }

    fn reserve_indexed(&self, tx: &mut Tx, key: &LeaseKey, ip: IpAddr) -> Result<bool, StoreError> {
        if self.find(tx, ip)?.is_some() {
            return Ok(false);
        }
        let content = Lease::file_content(&key.container_id, &key.ifname);
        // List the address under the holder the content parses to, as a rebuild would.
        let holder = Lease::parse_holder(ip, &content);
        let name = KeyName::of(&holder.container_id, holder.ifname.as_deref());
        // 1. The pin, with the reservation's content, fsynced; 2. the holder's list. A crash
        //    after either leaves index state for an address that is not reserved: stale,
        //    dropped by the next lookup or rebuild.
        let indexed = self
            .index
            .create_pin(ip, content.as_bytes())
            .and_then(|ino| {
                let mut ips = self.index.key_ips(&name)?;
                if !ips.contains(&ip) {
                    ips.push(ip);
                    self.index.set_key_ips(&name, &ips)?;
                }
                Ok((ino, ips))
            });
        let (ino, ips) = match indexed {
            Ok(done) => done,
            Err(problem) => {
                let _ = self.index.remove_pin(ip);
                tx.give_up(problem);
                return self.reserve_unindexed(tx, key, ip);
            }
        };
        // 3. The reservation: link(2) fails with EEXIST like O_EXCL does. A crash after it
        //    leaves a directory whose seal and checksum no longer match the record: the
        //    next transaction rebuilds.
        let path = self.ip_path(ip);
        let pin = self.index.pin_path(ip);
        if let Err(source) = fs::hard_link(&pin, &path) {
            // Not reserved, so no record covers the pin; undo the list too.
            let _ = self.index.remove_pin(ip);
            let others: Vec<IpAddr> = ips.into_iter().filter(|i| *i != ip).collect();
            let _ = self.index.set_key_ips(&name, &others);
            if source.kind() == io::ErrorKind::AlreadyExists {
                return Ok(false);
            }
            if links_unsupported(&source) {
                tx.give_up(IndexError::Link {
                    entry: pin,
                    reservation: path,
                    source,
                });
                return self.reserve_unindexed(tx, key, ip);
            }
            return Err(StoreError::CreateReservation { path, source });
        }
        tx.insert(ip, ino);
        Ok(true)
    }

    fn reserve_unindexed(
        &self,
        tx: &mut Tx,
        key: &LeaseKey,
        ip: IpAddr,
    ) -> Result<bool, StoreError> {
        let reserved = self.reserve_plain(key, ip)?;
        if reserved {
            // Keeps the listing true for the rest of the transaction (the index is off, so
            // the checksum, and with it the inode, is never recorded).
            tx.insert(ip, 0);
        }
        Ok(reserved)
    }

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

    // ---- the key index ----------------------------------------------------------------

    /// One locked transaction, as a plugin process does: lock, work, seal at unlock.
    fn tx<T>(store: &DiskStore, f: impl FnOnce(&DiskStore) -> T) -> T {
        let _guard = store.lock().unwrap();
        f(store)
    }

    fn key(c: &str) -> LeaseKey {
        LeaseKey::new("n", c, "eth0")
    }

    /// `n` reservations c0…c{n-1} → 198.18.0.2…, each in its own transaction.
    fn populate(store: &DiskStore, n: u8) {
        for i in 0..n {
            let ip = IpAddr::from([198, 18, 0, 2 + i]);
            assert!(tx(store, |s| s
                .reserve(&key(&format!("c{i}")), ip)
                .unwrap()));
        }
    }

    fn counters(store: &DiskStore) -> (usize, usize) {
        (store.reads.get(), store.listings.get())
    }

    fn reset(store: &DiskStore) {
        store.reads.set(0);
        store.listings.set(0);
    }

    #[test]
    fn index_hit_reads_only_the_holders_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DiskStore::open(tmp.path(), "n").unwrap();
        populate(&store, 200);
        let idx = store.index_dir().to_owned();
        // The layout: a pin (same inode as the reservation), a holder list, the record.
        let pin = fs::metadata(idx.join("198.18.0.19")).unwrap();
        let file = fs::metadata(store.dir().join("198.18.0.19")).unwrap();
        assert_eq!((pin.ino(), pin.nlink()), (file.ino(), 2));
        assert_eq!(
            fs::read_link(idx.join("@c17:eth0")).unwrap(),
            Path::new("198.18.0.19")
        );
        assert!(
            fs::read_link(idx.join(".summary"))
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("v1 200 200 ")
        );

        reset(&store);
        let (got, mode) = tx(&store, |s| {
            (s.get_by_key(&key("c17")).unwrap(), s.index_mode())
        });
        assert_eq!(got, [ip("198.18.0.19")]);
        assert_eq!(mode, Some(IndexMode::Trusted));
        // The seal matched: no listing; one file read, the holder's.
        assert_eq!(counters(&store), (1, 0));

        reset(&store);
        let released = tx(&store, |s| s.release_by_key(&key("c17")).unwrap());
        assert_eq!(released, [ip("198.18.0.19")]);
        assert_eq!(counters(&store), (1, 0));
        assert!(!idx.join("198.18.0.19").exists() && !idx.join("@c17:eth0").exists());

        // A key that holds nothing costs no read at all.
        reset(&store);
        assert!(tx(&store, |s| s.get_by_key(&key("nobody")).unwrap()).is_empty());
        assert_eq!(counters(&store), (0, 0));
    }

    #[test]
    fn a_touched_directory_costs_a_listing_not_a_rebuild() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DiskStore::open(tmp.path(), "n").unwrap();
        populate(&store, 50);
        // Something changes the mtime but no entry (a hint rewritten in place, `touch`).
        fs::write(store.dir().join("last_reserved_ip.0"), "198.18.0.51").unwrap();
        File::create(store.dir().join("junk")).unwrap();
        fs::remove_file(store.dir().join("junk")).unwrap();
        reset(&store);
        let got = tx(&store, |s| s.get_by_key(&key("c3")).unwrap());
        assert_eq!(got, [ip("198.18.0.5")]);
        // The listing matched the checksum: one listing, one read, no rebuild.
        assert_eq!(counters(&store), (1, 1));
        // ...and the transaction sealed the directory again.
        reset(&store);
        tx(&store, |s| s.get_by_key(&key("c3")).unwrap());
        assert_eq!(counters(&store), (1, 0));
    }

    #[test]
    fn reservations_made_behind_the_index_are_found() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DiskStore::open(tmp.path(), "n").unwrap();
        populate(&store, 20);
        // The reference (or an older Berth) reserves: a plain file, no index.
        fs::write(store.dir().join("198.18.0.99"), "ref1\r\neth0").unwrap();
        fs::write(store.dir().join("198.18.0.98"), "ref2").unwrap();
        reset(&store);
        let got = tx(&store, |s| {
            let got = s.get_by_key(&key("ref1")).unwrap();
            (got, s.index_mode())
        });
        assert_eq!(got, (vec![ip("198.18.0.99")], Some(IndexMode::Trusted)));
        // Seal mismatch, checksum mismatch: one listing, a full rebuild (22 reads), then
        // the lookup (1 read).
        assert_eq!(counters(&store), (23, 1));
        let idx = store.index_dir().to_owned();
        assert_eq!(
            fs::read_link(idx.join("@ref2")).unwrap(),
            Path::new("198.18.0.98")
        );
        // Then indexed like any other: the old-format one goes with any ifname of ref2.
        reset(&store);
        let released = tx(&store, |s| {
            s.release_by_key(&LeaseKey::new("n", "ref2", "eth7"))
                .unwrap()
        });
        assert_eq!(released, [ip("198.18.0.98")]);
        assert_eq!(counters(&store), (1, 0));
    }

    #[test]
    fn stale_entries_after_a_crash_are_ignored_and_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DiskStore::open(tmp.path(), "n").unwrap();
        populate(&store, 3);
        let idx = store.index_dir().to_owned();
        // An ADD of c9 crashed after its pin and its list, before the link: the network
        // directory did not change, so the seal still holds.
        fs::write(idx.join("198.18.0.50"), "c9\r\neth0").unwrap();
        std::os::unix::fs::symlink("198.18.0.50", idx.join("@c9:eth0")).unwrap();
        // c1's list names an address whose file now holds someone else (c2's).
        std::os::unix::fs::symlink("198.18.0.3 198.18.0.4", idx.join("@c1:eth1")).unwrap();
        let (c9, c1, mode) = tx(&store, |s| {
            let c9 = s.get_by_key(&key("c9")).unwrap();
            let c1 = s.get_by_key(&LeaseKey::new("n", "c1", "eth1")).unwrap();
            (c9, c1, s.index_mode())
        });
        assert!(c9.is_empty() && c1.is_empty());
        assert_eq!(mode, Some(IndexMode::Trusted));
        // Dropped: the stale pin, the lists naming nothing of theirs.
        assert!(!idx.join("198.18.0.50").exists());
        assert!(!idx.join("@c9:eth0").exists() && !idx.join("@c1:eth1").exists());
        // The real holders are untouched.
        assert_eq!(
            tx(&store, |s| s.get_by_key(&key("c2")).unwrap()),
            [ip("198.18.0.4")]
        );
        // The stale pin's address can be reserved again (a leftover pin would be replaced).
        fs::write(idx.join("198.18.0.51"), "c8\r\neth0").unwrap();
        assert!(tx(&store, |s| s
            .reserve(&key("c8"), ip("198.18.0.51"))
            .unwrap()));
        assert_eq!(
            fs::read(store.dir().join("198.18.0.51")).unwrap(),
            b"c8\r\neth0"
        );
    }

    #[test]
    fn a_file_replaced_behind_the_index_is_not_its_old_holders() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DiskStore::open(tmp.path(), "n").unwrap();
        populate(&store, 3);
        let idx = store.index_dir().to_owned();
        // The reference DELs c1 (.3) and hands .3 to r1 at once (a requested address). The
        // pin keeps c1's old inode alive, so the new file has another inode.
        let old = fs::metadata(store.dir().join("198.18.0.3")).unwrap().ino();
        fs::remove_file(store.dir().join("198.18.0.3")).unwrap();
        fs::write(store.dir().join("198.18.0.3"), "r1\r\neth0").unwrap();
        assert_ne!(
            fs::metadata(store.dir().join("198.18.0.3")).unwrap().ino(),
            old
        );
        let (c1, r1) = tx(&store, |s| {
            (
                s.get_by_key(&key("c1")).unwrap(),
                s.get_by_key(&key("r1")).unwrap(),
            )
        });
        assert!(c1.is_empty());
        assert_eq!(r1, [ip("198.18.0.3")]);
        assert!(!idx.join("@c1:eth0").exists());
        assert_eq!(
            fs::metadata(idx.join("198.18.0.3")).unwrap().ino(),
            fs::metadata(store.dir().join("198.18.0.3")).unwrap().ino()
        );
    }

    #[test]
    fn the_last_release_removes_the_index() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DiskStore::open(tmp.path(), "n").unwrap();
        populate(&store, 3);
        // (A symlink to a record, not to a file: `exists()` would follow it.)
        assert!(fs::symlink_metadata(tmp.path().join(".berth-keys/n/.summary")).is_ok());
        for i in 0..3 {
            tx(&store, |s| {
                s.release_by_key(&key(&format!("c{i}"))).unwrap()
            });
        }
        assert_eq!(names(store.dir()), ["lock".to_owned()].into());
        assert!(!tmp.path().join(".berth-keys").exists());
        // Leftovers of a crash or a foreign DEL go at the next transaction that finds the
        // network empty.
        fs::create_dir_all(tmp.path().join(".berth-keys/n")).unwrap();
        fs::write(tmp.path().join(".berth-keys/n/198.18.0.2"), "c0\r\neth0").unwrap();
        assert!(tx(&store, |s| s.get_by_key(&key("c0")).unwrap()).is_empty());
        assert!(!tmp.path().join(".berth-keys").exists());
    }

    #[test]
    fn without_a_usable_index_the_store_scans() {
        let tmp = tempfile::tempdir().unwrap();
        // The index root cannot be created: a file is in the way.
        fs::write(tmp.path().join(".berth-keys"), "").unwrap();
        let store = DiskStore::open(tmp.path(), "n").unwrap();
        let (added, mode, problem) = tx(&store, |s| {
            let a = s.reserve(&key("c1"), ip("198.18.0.2")).unwrap();
            (a, s.index_mode(), s.index_problem())
        });
        assert!(added);
        assert_eq!(mode, Some(IndexMode::Unusable));
        let problem = problem.unwrap();
        assert!(problem.contains(".berth-keys/n"), "{problem}");
        assert_eq!(
            fs::read(store.dir().join("198.18.0.2")).unwrap(),
            b"c1\r\neth0"
        );
        // Lookups and releases still work, by scanning.
        populate_more(&store);
        assert_eq!(
            tx(&store, |s| s.get_by_key(&key("c1")).unwrap()),
            [ip("198.18.0.2")]
        );
        assert_eq!(
            tx(&store, |s| s.release_by_key(&key("c1")).unwrap()),
            [ip("198.18.0.2")]
        );
        assert!(tx(&store, |s| s.get_by_key(&key("c1")).unwrap()).is_empty());
    }

    fn populate_more(store: &DiskStore) {
        assert!(tx(store, |s| s
            .reserve(&key("c2"), ip("198.18.0.3"))
            .unwrap()));
    }

    #[test]
    fn networks_share_the_index_root_safely() {
        // Each network has its own lock; only `.berth-keys` itself is shared, created by one
        // network's first reservation and removed by another's last.
        let tmp = tempfile::tempdir().unwrap();
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let data = tmp.path();
                s.spawn(move || {
                    let net = format!("n{t}");
                    let store = DiskStore::open(data, &net).unwrap();
                    for round in 0..50u8 {
                        let k = LeaseKey::new(&net, format!("c{round}"), "eth0");
                        let ip = IpAddr::from([198, 18, t, 2]);
                        {
                            let _g = store.lock().unwrap();
                            assert!(store.reserve(&k, ip).unwrap(), "{net} round {round}");
                            assert_eq!(store.index_mode(), Some(IndexMode::Trusted));
                        }
                        let _g = store.lock().unwrap();
                        assert_eq!(store.release_by_key(&k).unwrap(), [ip]);
                    }
                });
            }
        });
        assert!(!tmp.path().join(".berth-keys").exists());
    }

    #[test]
    fn without_hard_links_to_the_index_each_file_is_read_once() {
        // The index root on another file system (a tmpfs): link(2) fails with EXDEV.
        let tmp = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir_in("/dev/shm").unwrap();
        assert_ne!(
            fs::metadata(tmp.path()).unwrap().dev(),
            fs::metadata(other.path()).unwrap().dev(),
            "the test needs /dev/shm on another file system than the temp dir"
        );
        std::os::unix::fs::symlink(other.path(), tmp.path().join(".berth-keys")).unwrap();
        let store = DiskStore::open(tmp.path(), "n").unwrap();
        let (added, mode) = tx(&store, |s| {
            (
                s.reserve(&key("c1"), ip("198.18.0.2")).unwrap(),
                s.index_mode(),
            )
        });
        assert!(added);
        assert_eq!(mode, Some(IndexMode::Unusable));
        assert_eq!(
            fs::read(store.dir().join("198.18.0.2")).unwrap(),
            b"c1\r\neth0"
        );
        for i in 3..10u8 {
            let ip = IpAddr::from([198, 18, 0, i]);
            assert!(tx(&store, |s| s
                .reserve(&key(&format!("c{i}")), ip)
                .unwrap()));
        }
        reset(&store);
        let (got, problem) = tx(&store, |s| {
            (s.get_by_key(&key("c5")).unwrap(), s.index_problem())
        });
        assert_eq!(got, [ip("198.18.0.5")]);
        assert!(problem.unwrap().contains("hard links"));
        // The rebuild gave up before reading; the scan read each of the 8 files once.
        assert_eq!(counters(&store), (8, 1));
        assert_eq!(
            tx(&store, |s| s.release_by_key(&key("c5")).unwrap()),
            [ip("198.18.0.5")]
        );
    }

    #[test]
    fn an_oddly_spelt_foreign_reservation_is_found_by_a_scan() {
        let tmp = tempfile::tempdir().unwrap();
        let store = DiskStore::open(tmp.path(), "n").unwrap();
        populate(&store, 2);
        fs::write(store.dir().join("2001:db8:0::5"), "odd\r\neth0").unwrap();
        let (got, mode, problem) = tx(&store, |s| {
            let got = s.get_by_key(&key("odd")).unwrap();
            (got, s.index_mode(), s.index_problem())
        });
        assert_eq!(got, [ip("2001:db8::5")]);
        assert_eq!(mode, Some(IndexMode::Unusable));
        assert!(problem.unwrap().contains("canonical"));
        // The others are found too.
        assert_eq!(
            tx(&store, |s| s.get_by_key(&key("c1")).unwrap()),
            [ip("198.18.0.3")]
        );
    }
}
