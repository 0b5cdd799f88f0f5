//! The key index of a [`crate::DiskStore`]: which addresses a (container id, ifname) holds,
//! without reading every reservation file.
//!
//! Layout, beside (not inside) the network directory:
//!
//! ```text
//! <dataDir>/.berth-keys/<network>/
//!     .summary            symlink; its target is the record "v1 <count> <files> <sum> <seal>"
//!     <ip>                hard link to <dataDir>/<network>/<ip> (the "pin")
//!     @<cid>:<ifname>     symlink; its target lists the holder's addresses, "<ip> <ip>"
//!     @<cid>              the same for old-format reservations (no ifname)
//! ```
//!
//! Why outside the network directory: the reference plugin walks `<dataDir>/<network>`
//! *recursively* (`filepath.Walk`), reads every file it finds, following symlinks, and its DEL
//! removes every file whose content matches, subdirectories included (verified against
//! v1.1.1). An index inside would be read on every reference call and half-deleted by its DEL.
//! A name starting with `.` cannot be a network (CNI network names start with a letter or
//! digit), so `.berth-keys` never collides with one.
//!
//! Why a hard link per address: the pin *is* the reservation's inode, so
//! - ADD writes the content into the pin, fsyncs it, and then `link(2)`s it to `<ip>`: the
//!   reservation appears atomically with its content, and `link` fails with `EEXIST` exactly
//!   as the reference's `O_EXCL` create does;
//! - while the pin exists no other file can get that inode number, so (name, inode)
//!   identifies one reservation file for as long as the index refers to it. That makes the
//!   checksum below sound.
//!
//! Why a symlink per holder: one `readlink` answers "which addresses?", and a symlink costs
//! no data block (directories cost a block and, on ext4, a slow `mkdir`). Whatever it lists is
//! verified by reading the reservation file (content = holder); a listed address whose file
//! is gone or holds someone else is stale and dropped.
//!
//! Completeness, two levels:
//! - the record's checksum: the number of address-named entries of the network directory and
//!   the sum of a 64-bit hash of each (address, inode). One listing (names and inode numbers
//!   from `readdir`, no file opened) that sums to the record proves the index covers every
//!   reservation. Anything created or removed behind Berth's back (the reference plugin, an
//!   older Berth, a person) changes the sum, and the index is rebuilt from a full scan;
//! - the seal: when Berth releases the lock it sets the network directory's mtime to one
//!   second before its current mtime and records that value. Any later change of the
//!   directory's entries stamps the current time, so a directory still carrying the seal
//!   has not changed since, and the listing is skipped: one `stat`.
//!
//! The record is written only by a transaction whose index covers every file, and removed
//! before any pin it may cover is unlinked, so it never describes a file whose inode is not
//! pinned.
//!
//! Assumptions (also in the README): reservation files are never rewritten in place (the
//! reference never does; it creates and removes), nobody but Berth writes under `.berth-keys`
//! or sets the network directory's mtime, and the file system has hard links and readdir
//! inode numbers equal to `stat`'s (checked by every rebuild; otherwise the store runs without
//! the index, as before it existed).

use std::fmt::Write as _;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Directory under `dataDir` holding the key index of every network.
pub const INDEX_ROOT: &str = ".berth-keys";
const SUMMARY: &str = ".summary";
/// Where a symlink is built before it is renamed into place (one writer: the lock holder).
const TMP: &str = ".tmp";
/// Where a rebuild tries a hard link first.
const PROBE: &str = ".probe";
const SUMMARY_VERSION: &str = "v1";
/// A directory entry name may be 255 bytes; longer holder names are hashed.
const MAX_NAME: usize = 255;

/// Why the key index could not be used or kept up to date. Never fails a CNI verb: the store
/// then answers by scanning every reservation, as before the index existed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("create index directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("list index directory {path}")]
    ReadDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read index entry {path}")]
    ReadEntry {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write index entry {path}")]
    WriteEntry {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("hard-link reservation {reservation} and index pin {entry}")]
    Link {
        entry: PathBuf,
        reservation: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("remove index entry {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write index record {path}")]
    WriteRecord {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("stat reservation {path}")]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reservation of {address} in {dir} is not named by the address's canonical text")]
    OddName { address: IpAddr, dir: PathBuf },
    #[error("file system of {path} cannot hold hard links of its reservations")]
    NoHardLinks {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "reservation {path}: the directory lists inode {listed}, stat says {actual} (the index needs stable inode numbers)"
    )]
    InodeMismatch {
        path: PathBuf,
        listed: u64,
        actual: u64,
    },
}

/// Order-independent checksum of the address-named entries of a network directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Summary {
    /// Entries, including directories named like an address (they hold the address too).
    pub count: u64,
    /// Entries that are reservation files (what the index has entries for).
    pub files: u64,
    sum: u64,
}

impl Summary {
    pub(crate) fn add(&mut self, ip: IpAddr, ino: u64, is_dir: bool) {
        self.count = self.count.wrapping_add(1);
        self.files = self.files.wrapping_add(u64::from(!is_dir));
        self.sum = self.sum.wrapping_add(entry_hash(ip, ino));
    }

    pub(crate) fn remove(&mut self, ip: IpAddr, ino: u64, is_dir: bool) {
        self.count = self.count.wrapping_sub(1);
        self.files = self.files.wrapping_sub(u64::from(!is_dir));
        self.sum = self.sum.wrapping_sub(entry_hash(ip, ino));
    }
}

/// A directory modification time, as `stat` reports it and `utimensat` sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub sec: i64,
    pub nsec: i64,
}

impl Stamp {
    pub fn mtime_of(meta: &fs::Metadata) -> Stamp {
        Stamp {
            sec: meta.mtime(),
            nsec: meta.mtime_nsec(),
        }
    }

    /// The seal for a directory whose mtime is `self`: one second earlier. Any later change
    /// of the directory's entries stamps it with the current time, which is at least `self`,
    /// so the directory never carries the seal again unless someone sets it on purpose
    /// (only Berth does, under the lock). A file system that rounds the stored time to a
    /// second or less still stores something earlier than `self`.
    pub fn seal(self) -> Stamp {
        Stamp {
            sec: self.sec - 1,
            nsec: self.nsec,
        }
    }
}

/// What `.summary` records: the checksum the index covers, and, once the transaction that
/// wrote it sealed the directory, the seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Record {
    pub summary: Summary,
    pub sealed: Option<Stamp>,
}

impl Record {
    fn to_text(self) -> String {
        let s = self.summary;
        let sealed = match self.sealed {
            Some(t) => format!("{}.{:09}", t.sec, t.nsec),
            None => "-".to_owned(),
        };
        format!(
            "{SUMMARY_VERSION} {} {} {:016x} {sealed}",
            s.count, s.files, s.sum
        )
    }

    fn parse(text: &str) -> Option<Record> {
        let mut parts = text.split(' ');
        if parts.next()? != SUMMARY_VERSION {
            return None;
        }
        let count = parts.next()?.parse().ok()?;
        let files = parts.next()?.parse().ok()?;
        let sum = u64::from_str_radix(parts.next()?, 16).ok()?;
        let sealed = match parts.next()? {
            "-" => None,
            t => {
                let (sec, nsec) = t.split_once('.')?;
                Some(Stamp {
                    sec: sec.parse().ok()?,
                    nsec: nsec.parse().ok()?,
                })
            }
        };
        parts.next().is_none().then_some(Record {
            summary: Summary { count, files, sum },
            sealed,
        })
    }
}

/// splitmix64's finaliser: a bijective mix, so distinct inputs stay distinct.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Stable across builds and versions (it is stored on disk), unlike std's `DefaultHasher`.
fn entry_hash(ip: IpAddr, ino: u64) -> u64 {
    let (family, bits) = match ip {
        IpAddr::V4(v4) => (4u64, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (6u64, u128::from(v6)),
    };
    // The two halves of the address (the casts truncate on purpose).
    let (hi, lo) = ((bits >> 64) as u64, bits as u64);
    [hi, lo, ino]
        .into_iter()
        .fold(mix(0x6265_7274_6800_0000 ^ family), |h, w| mix(h ^ w))
}

fn bytes_hash(seed: u64, bytes: &[u8]) -> u64 {
    // FNV-1a, then the mix for avalanche.
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325 ^ seed, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    mix(h)
}

/// The index name of one holder: `@` and the escaped key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct KeyName {
    pub name: String,
    /// Too long to spell out: several holders may share the name, so the addresses it lists
    /// are told apart by the content of their reservation files.
    pub hashed: bool,
}

impl KeyName {
    /// `@<container id>:<ifname>` for the current format, `@<container id>` for old-format
    /// reservations (no ifname), each part escaped: bytes other than ASCII letters, digits,
    /// `_` and `-` become `%XX`, so the parts cannot blend, and `@` keeps holders apart from
    /// pins (addresses) and the index's own `.` files. `@#` marks the hashed form.
    pub fn of(container_id: &str, ifname: Option<&str>) -> KeyName {
        let mut name = String::from("@");
        escape(container_id, &mut name);
        if let Some(ifname) = ifname {
            name.push(':');
            escape(ifname, &mut name);
        }
        if name.len() <= MAX_NAME {
            return KeyName {
                name,
                hashed: false,
            };
        }
        KeyName {
            name: format!(
                "@#{:016x}{:016x}",
                bytes_hash(1, name.as_bytes()),
                bytes_hash(2, name.as_bytes())
            ),
            hashed: true,
        }
    }
}

fn escape(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// What a rebuild finds in a network's index.
#[derive(Debug, Default)]
pub(crate) struct Contents {
    /// Pins: address and inode.
    pub pins: Vec<(IpAddr, u64)>,
    /// Holders and the addresses each lists.
    pub keys: Vec<(KeyName, Vec<IpAddr>)>,
}

/// Paths and primitive operations of one network's index. Callers hold the network's lock;
/// only the shared `INDEX_ROOT` is touched by other networks' transactions too (see
/// [`KeyIndex::ensure_dir`] and [`KeyIndex::remove_all`]).
#[derive(Debug)]
pub(crate) struct KeyIndex {
    root: PathBuf,
    dir: PathBuf,
}

fn not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

fn remove_file(path: &Path) -> Result<(), IndexError> {
    match fs::remove_file(path) {
        Err(e) if !not_found(&e) => Err(IndexError::Remove {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Replace the symlink at `path` with one to `target`, atomically (symlink + rename).
fn replace_symlink(dir: &Path, path: &Path, target: &str) -> io::Result<()> {
    let tmp = dir.join(TMP);
    match std::os::unix::fs::symlink(target, &tmp) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Left by a crash between symlink and rename.
            fs::remove_file(&tmp)?;
            std::os::unix::fs::symlink(target, &tmp)?;
        }
        other => other?,
    }
    fs::rename(&tmp, path)
}

impl KeyIndex {
    pub fn new(data_dir: &Path, network: &str) -> KeyIndex {
        let root = data_dir.join(INDEX_ROOT);
        let dir = root.join(network);
        KeyIndex { root, dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The temporary of the index's symlink replacements (see `replace_symlink`).
    pub fn temporary(&self) -> PathBuf {
        self.dir.join(TMP)
    }

    fn summary_path(&self) -> PathBuf {
        self.dir.join(SUMMARY)
    }

    /// The record; `None` when absent or unreadable (both mean "not trusted").
    pub fn read_record(&self) -> Option<Record> {
        let target = fs::read_link(self.summary_path()).ok()?;
        Record::parse(target.to_str()?)
    }

    /// Replace the record atomically (one `readlink` reads it back).
    pub fn write_record(&self, record: Record) -> Result<(), IndexError> {
        let path = self.summary_path();
        replace_symlink(&self.dir, &path, &record.to_text())
            .map_err(|source| IndexError::WriteRecord { path, source })
    }

    /// Withdraw the claim that the index is complete. Absent is fine.
    pub fn remove_summary(&self) -> Result<(), IndexError> {
        remove_file(&self.summary_path())
    }

    pub fn pin_path(&self, ip: IpAddr) -> PathBuf {
        self.dir.join(ip.to_string())
    }

    fn key_path(&self, key: &KeyName) -> PathBuf {
        self.dir.join(&key.name)
    }

    /// Create `<root>/<network>/`. Another network's transaction may remove the shared, empty
    /// `<root>` between our `mkdir`s (it holds another lock), so a vanished root is created
    /// again, a bounded number of times.
    pub fn ensure_dir(&self) -> Result<(), IndexError> {
        let mut builder = DirBuilder::new();
        builder.mode(0o755);
        let mkdir = |p: &Path| match builder.create(p) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other,
        };
        let mut last = None;
        for _ in 0..8 {
            match mkdir(&self.dir) {
                Ok(()) => return Ok(()),
                Err(e) if not_found(&e) => last = Some(e),
                Err(source) => {
                    return Err(IndexError::CreateDir {
                        path: self.dir.clone(),
                        source,
                    });
                }
            }
            if let Err(source) = mkdir(&self.root) {
                return Err(IndexError::CreateDir {
                    path: self.root.clone(),
                    source,
                });
            }
        }
        Err(IndexError::CreateDir {
            path: self.dir.clone(),
            source: last.unwrap_or_else(|| io::Error::from(io::ErrorKind::NotFound)),
        })
    }

    /// Write a reservation's content into a new pin, fsynced; returns its inode. A pin left
    /// at that address by a crashed ADD is replaced (the caller checked that the address is
    /// not reserved, so no record covers it).
    pub fn create_pin(&self, ip: IpAddr, content: &[u8]) -> Result<u64, IndexError> {
        let path = self.pin_path(ip);
        let open = || {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)
        };
        let opened = match open() {
            // The first reservation of the network: its index does not exist yet.
            Err(e) if not_found(&e) => {
                self.ensure_dir()?;
                open()
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                fs::remove_file(&path).and_then(|()| open())
            }
            other => other,
        };
        let write = |mut file: File| -> io::Result<u64> {
            file.write_all(content)?;
            file.sync_all()?;
            Ok(file.metadata()?.ino())
        };
        opened.and_then(write).map_err(|source| {
            let _ = fs::remove_file(&path);
            IndexError::WriteEntry { path, source }
        })
    }

    /// Pin a reservation file that exists already (rebuild), replacing a stale pin.
    pub fn link_pin(&self, ip: IpAddr, reservation: &Path) -> Result<(), IndexError> {
        let pin = self.pin_path(ip);
        let link = || fs::hard_link(reservation, &pin);
        let linked = match link() {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                remove_file(&pin)?;
                link()
            }
            other => other,
        };
        linked.map_err(|source| IndexError::Link {
            entry: pin,
            reservation: reservation.to_owned(),
            source,
        })
    }

    /// Can this index hold hard links of files in the network directory (same file system,
    /// links supported)? Tried with `file` (the lock), linked and unlinked again.
    pub fn probe_links(&self, file: &Path) -> Result<(), IndexError> {
        self.ensure_dir()?;
        let probe = self.dir.join(PROBE);
        let _ = fs::remove_file(&probe);
        fs::hard_link(file, &probe).map_err(|source| IndexError::NoHardLinks {
            path: self.dir.clone(),
            source,
        })?;
        remove_file(&probe)
    }

    pub fn remove_pin(&self, ip: IpAddr) -> Result<(), IndexError> {
        remove_file(&self.pin_path(ip))
    }

    /// The addresses a holder's symlink lists (none when absent). Unparsable words are
    /// skipped: the next write of the list drops them.
    pub fn key_ips(&self, key: &KeyName) -> Result<Vec<IpAddr>, IndexError> {
        let path = self.key_path(key);
        match fs::read_link(&path) {
            Ok(target) => Ok(target
                .to_string_lossy()
                .split(' ')
                .filter_map(|w| w.parse().ok())
                .collect()),
            // Absent, or not a symlink (EINVAL): lists nothing.
            Err(e) if not_found(&e) || e.kind() == io::ErrorKind::InvalidInput => Ok(Vec::new()),
            Err(source) => Err(IndexError::ReadEntry { path, source }),
        }
    }

    /// Make a holder's symlink list exactly `ips` (removed when empty).
    pub fn set_key_ips(&self, key: &KeyName, ips: &[IpAddr]) -> Result<(), IndexError> {
        let path = self.key_path(key);
        if ips.is_empty() {
            return remove_file(&path);
        }
        let target = ips
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ");
        // A new holder's list is created in place; an existing one is replaced atomically.
        let written = match std::os::unix::fs::symlink(&target, &path) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                replace_symlink(&self.dir, &path, &target)
            }
            other => other,
        };
        written.map_err(|source| IndexError::WriteEntry { path, source })
    }

    /// Everything in the network's index, for a rebuild. Names that are neither pins nor
    /// holders nor the record (including a leftover temporary) are not ours: removed.
    pub fn contents(&self) -> Result<Contents, IndexError> {
        let read_err = |source| IndexError::ReadDir {
            path: self.dir.clone(),
            source,
        };
        let mut out = Contents::default();
        let iter = match fs::read_dir(&self.dir) {
            Ok(iter) => iter,
            Err(e) if not_found(&e) => return Ok(out),
            Err(e) => return Err(read_err(e)),
        };
        for entry in iter {
            let entry = entry.map_err(read_err)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let is_dir = entry.file_type().map_err(read_err)?.is_dir();
            if name == SUMMARY {
                continue;
            }
            if !is_dir {
                if let Ok(ip) = name.parse::<IpAddr>() {
                    out.pins
                        .push((ip, std::os::unix::fs::DirEntryExt::ino(&entry)));
                    continue;
                }
                if name.starts_with('@') {
                    let key = KeyName {
                        hashed: name.starts_with("@#"),
                        name: name.into_owned(),
                    };
                    let ips = self.key_ips(&key)?;
                    out.keys.push((key, ips));
                    continue;
                }
            }
            let path = entry.path();
            let removed = if is_dir {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(|source| IndexError::Remove { path, source })?;
        }
        Ok(out)
    }

    /// Remove this network's whole index (record first), then the shared root if no other
    /// network has one. Used when the network holds no reservation any more.
    pub fn remove_all(&self) -> Result<(), IndexError> {
        self.remove_summary()?;
        match fs::remove_dir_all(&self.dir) {
            Err(e) if !not_found(&e) => {
                return Err(IndexError::Remove {
                    path: self.dir.clone(),
                    source: e,
                });
            }
            _ => {}
        }
        // ENOTEMPTY (another network's index) or ENOENT (already gone): both fine.
        let _ = fs::remove_dir(&self.root);
        Ok(())
    }

    /// Does this network have any index state on disk?
    pub fn exists(&self) -> bool {
        fs::symlink_metadata(&self.dir).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names() {
        assert_eq!(KeyName::of("c1", Some("eth0")).name, "@c1:eth0");
        assert_eq!(KeyName::of("c1", None).name, "@c1");
        assert_eq!(KeyName::of("a.b", Some("e:@%")).name, "@a%2Eb:e%3A%40%25");
        assert_eq!(KeyName::of(".x", Some(".")).name, "@%2Ex:%2E");
        // The ifname never blends into the container id.
        assert_ne!(
            KeyName::of("a:b", Some("c")).name,
            KeyName::of("a", Some("b:c")).name
        );
        // A holder's name is never an address (a pin's name).
        assert!(
            KeyName::of("fd00", Some("1"))
                .name
                .parse::<IpAddr>()
                .is_err()
        );
        let long = "x".repeat(300);
        let k = KeyName::of(&long, Some("eth0"));
        assert!(k.hashed && k.name.starts_with("@#") && k.name.len() == 34);
        assert_eq!(k, KeyName::of(&long, Some("eth0")));
        assert_ne!(k, KeyName::of(&long, Some("eth1")));
    }

    #[test]
    fn summary_is_order_independent_and_round_trips() {
        let a: IpAddr = "198.18.0.2".parse().unwrap();
        let b: IpAddr = "fd42::2".parse().unwrap();
        let (mut s1, mut s2) = (Summary::default(), Summary::default());
        s1.add(a, 10, false);
        s1.add(b, 11, true);
        s2.add(b, 11, true);
        s2.add(a, 10, false);
        assert_eq!(s1, s2);
        assert_eq!((s1.count, s1.files), (2, 1));
        let mut s3 = s1;
        s3.remove(b, 11, true);
        s3.add(b, 12, true);
        assert_ne!(s1, s3, "same name, other inode");
        s3.remove(a, 10, false);
        s3.remove(b, 12, true);
        assert_eq!(s3, Summary::default());
        for sealed in [
            None,
            Some(Stamp {
                sec: 1_700_000_000,
                nsec: 5,
            }),
        ] {
            let r = Record {
                summary: s1,
                sealed,
            };
            assert_eq!(Record::parse(&r.to_text()), Some(r));
        }
        assert_eq!(Record::parse("v0 1 1 00 -"), None);
        assert_eq!(Record::parse("v1 1 1 00"), None);
        assert_eq!(Record::parse("v1 1 1 00 - x"), None);
        // Stored on disk: pinned, so that changing it is a deliberate format change.
        assert_eq!(entry_hash(a, 10), 0xbb08_735d_da4e_3580);
    }
}
