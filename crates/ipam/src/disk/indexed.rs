//! The transactions of [`DiskStore`] that go through the key index: trusting it (seal,
//! checksum) or rebuilding it, and reserving, looking up and releasing through it.

use super::*;

impl DiskStore {
    pub(super) fn mtime(&self) -> Result<Stamp, StoreError> {
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
    pub(super) fn with_tx<T>(
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
    pub(super) fn begin(&self) -> Result<Tx, StoreError> {
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
    pub(super) fn relist(&self, tx: &mut Tx) -> Result<(), StoreError> {
        let listing = self.list()?;
        tx.summary = Summary::default();
        for l in &listing {
            tx.summary.add(l.ip, l.ino, l.is_dir);
        }
        tx.listing = Some(listing);
        Ok(())
    }

    pub(super) fn listing<'t>(&self, tx: &'t mut Tx) -> Result<&'t [Listed], StoreError> {
        if tx.listing.is_none() {
            self.relist(tx)?;
        }
        Ok(tx.listing.as_deref().unwrap_or_default())
    }

    /// The entry named `ip`, from the listing if there is one, else by `lstat`.
    pub(super) fn find(&self, tx: &Tx, ip: IpAddr) -> Result<Option<Listed>, StoreError> {
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
    pub(super) fn ensure_index(&self, tx: &mut Tx) -> Result<bool, StoreError> {
        if tx.mode == IndexMode::Unchecked {
            self.rebuild(tx)?;
        }
        Ok(tx.mode == IndexMode::Trusted)
    }

    /// Withdraw the record before an entry it may cover goes, so that it never describes a
    /// file whose inode is not pinned. `false` (and the index off) if that failed: then
    /// leave the entries alone.
    pub(super) fn withdraw(&self, tx: &mut Tx) -> bool {
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
    pub(super) fn rebuild(&self, tx: &mut Tx) -> Result<Vec<Lease>, StoreError> {
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
    pub(super) fn all_leases(&self, tx: &mut Tx) -> Result<Vec<Lease>, StoreError> {
        match &tx.scanned {
            Some(leases) => Ok(leases.clone()),
            None => self.scan_leases(),
        }
    }

    /// Make the index hold exactly `pins` (address → inode of its file) and `keys`.
    pub(super) fn reconcile(
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
    pub(super) fn seal(&self) {
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
    pub(super) fn lookup(
        &self,
        tx: &mut Tx,
        key: &LeaseKey,
    ) -> Result<(Vec<Held>, Vec<Held>), StoreError> {
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
    pub(super) fn read_held(&self, ip: IpAddr) -> Result<Option<(Lease, u64)>, StoreError> {
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
    pub(super) fn release_indexed(
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

    pub(super) fn reserve_indexed(
        &self,
        tx: &mut Tx,
        key: &LeaseKey,
        ip: IpAddr,
    ) -> Result<bool, StoreError> {
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

    pub(super) fn reserve_unindexed(
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
}
