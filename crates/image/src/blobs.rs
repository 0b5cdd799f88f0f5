//! Compressed blobs by digest: `<images>/blobs/<algorithm>/<hex>` (manifests, indexes,
//! configs and layer tarballs as a registry serves them). A blob appears under its name only
//! once verified against it, through a temporary and a rename, so whatever is there is what
//! its name says.
//!
//! Downloads in progress live in `blobs/.partial/<algorithm>-<hex>`, with the offset up to
//! which they were written beside them (`….offset`). They survive a killed `berth`: the
//! next pull of the blob re-hashes the bytes it has and asks the registry for the rest (a
//! `Range` request). Whoever writes a partial blob holds an flock on it, so two pulls of
//! images that share a layer download it once: the second waits, then finds it stored.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use berth_fs::WriteOptions;
use nix::fcntl::{Flock, FlockArg};

use crate::digest::{Algorithm, Digest};

/// Errors of the `blobs` module.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {expected} failed verification: its content has digest {actual}")]
    Digest { expected: Digest, actual: Digest },
    #[error(
        "blob {digest} failed verification: {actual} bytes where its descriptor says {expected}"
    )]
    Size {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("blob {digest} is larger than the {max} bytes allowed for it")]
    TooLarge { digest: Digest, max: u64 },
    #[error("blob {digest} is not in the store")]
    Missing { digest: Digest },
    #[error("{step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BlobError {
    let path = path.to_path_buf();
    move |source| BlobError::Io { step, path, source }
}

/// The blob directory of a store.
#[derive(Debug, Clone)]
pub struct Blobs {
    dir: PathBuf,
}

/// One stored blob, as `system df` and the garbage collector see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    pub digest: Digest,
    pub size: u64,
}

impl Blobs {
    pub fn new(dir: PathBuf) -> Blobs {
        Blobs { dir }
    }

    /// Creates the directories.
    pub fn create_dirs(&self) -> Result<(), BlobError> {
        for dir in [
            self.dir.join("sha256"),
            self.dir.join("sha512"),
            self.partial_dir(),
        ] {
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        }
        Ok(())
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    fn partial_dir(&self) -> PathBuf {
        self.dir.join(".partial")
    }

    pub fn has(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    /// Size of a stored blob.
    pub fn size(&self, digest: &Digest) -> Option<u64> {
        fs::metadata(self.path(digest)).ok().map(|m| m.len())
    }

    /// A small stored blob (a manifest, a config) whole, at most `max` bytes.
    pub fn read(&self, digest: &Digest, max: u64) -> Result<Vec<u8>, BlobError> {
        let path = self.path(digest);
        match berth_fs::read_regular(&path, max) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BlobError::Missing {
                digest: digest.clone(),
            }),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Err(BlobError::TooLarge {
                digest: digest.clone(),
                max,
            }),
            Err(source) => Err(BlobError::Io {
                step: "read",
                path,
                source,
            }),
        }
    }

    pub fn open(&self, digest: &Digest) -> Result<File, BlobError> {
        let path = self.path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => BlobError::Missing {
                digest: digest.clone(),
            },
            _ => BlobError::Io {
                step: "open",
                path,
                source: e,
            },
        })
    }

    /// Stores `bytes` as blob `digest` after checking that they are.
    pub fn put(&self, digest: &Digest, bytes: &[u8]) -> Result<(), BlobError> {
        verify(digest, bytes)?;
        if self.has(digest) {
            return Ok(());
        }
        let path = self.path(digest);
        berth_fs::write_atomic(
            &path,
            bytes,
            WriteOptions {
                mode: 0o644,
                durable: true,
            },
        )
        .map_err(io_err("write", &path))
    }

    /// Stores `bytes` under their sha256 digest, which it returns.
    pub fn put_new(&self, bytes: &[u8]) -> Result<Digest, BlobError> {
        let digest = Digest::sha256_of(bytes);
        self.put(&digest, bytes)?;
        Ok(digest)
    }

    /// Every stored blob.
    pub fn list(&self) -> Result<Vec<BlobEntry>, BlobError> {
        let mut out = Vec::new();
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let dir = self.dir.join(algorithm.as_str());
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(io_err("list", &dir)(source)),
            };
            for entry in entries {
                let entry = entry.map_err(io_err("list", &dir))?;
                let name = format!(
                    "{}:{}",
                    algorithm.as_str(),
                    entry.file_name().to_string_lossy()
                );
                // Temporaries of a write in progress (`.<hex>.<pid>.tmp`) are not blobs.
                let Ok(digest) = Digest::try_from(name.as_str()) else {
                    continue;
                };
                let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                out.push(BlobEntry { digest, size });
            }
        }
        Ok(out)
    }

    /// Deletes a blob (gone already is fine).
    pub fn remove(&self, digest: &Digest) -> Result<(), BlobError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Removes what killed writers left: `write_atomic`'s temporaries.
    pub fn sweep(&self) {
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let _ = berth_fs::sweep_temporaries(&self.dir.join(algorithm.as_str()));
        }
        let _ = berth_fs::sweep_temporaries(&self.partial_dir());
    }

    /// The partial download of `digest` (created empty if there is none), locked for this
    /// writer: blocks while another process writes it. Its offset is what the last writer
    /// recorded, at most the file's length; anything past it is cut.
    pub fn partial(&self, digest: &Digest) -> Result<Partial, BlobError> {
        let name = format!("{}-{}", digest.algorithm().as_str(), digest.hex());
        let path = self.partial_dir().join(&name);
        let offset_path = self.partial_dir().join(format!("{name}.offset"));
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(io_err("open", &path))?;
            let file = Flock::lock(file, FlockArg::LockExclusive)
                .map_err(|(_, errno)| io_err("lock", &path)(errno.into()))?;
            // The previous holder may have committed or discarded it (renamed or unlinked
            // it) while we waited: then this lock is on a file nobody else will see.
            let same = match (file.metadata(), fs::symlink_metadata(&path)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            };
            if !same {
                continue;
            }
            let len = file.metadata().map_err(io_err("stat", &path))?.len();
            let recorded = fs::read_to_string(&offset_path)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .unwrap_or(0);
            let offset = recorded.min(len);
            if offset < len {
                file.set_len(offset).map_err(io_err("truncate", &path))?;
            }
            // Appends go after what is kept.
            (&*file)
                .seek(io::SeekFrom::Start(offset))
                .map_err(io_err("seek", &path))?;
            return Ok(Partial {
                digest: digest.clone(),
                file,
                path,
                offset_path,
                offset,
                recorded: offset,
            });
        }
    }

    /// The partial downloads on disk and their sizes.
    pub fn partials(&self) -> Vec<(PathBuf, u64)> {
        let Ok(entries) = fs::read_dir(self.partial_dir()) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().ends_with(".offset"))
            .map(|e| (e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)))
            .collect()
    }

    /// Deletes the partial downloads nobody is writing; returns how many bytes that freed.
    pub fn remove_partials(&self) -> u64 {
        let mut freed = 0;
        for (path, size) in self.partials() {
            let Ok(file) = OpenOptions::new().read(true).open(&path) else {
                continue;
            };
            // Held by a running pull: not ours to delete.
            let Ok(_lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
                continue;
            };
            if fs::remove_file(&path).is_ok() {
                freed += size;
            }
            let mut offset = path.into_os_string();
            offset.push(".offset");
            let _ = fs::remove_file(offset);
        }
        freed
    }

    /// Moves a complete partial blob into the store. The caller verified it.
    pub fn commit(&self, partial: Partial) -> Result<(), BlobError> {
        let target = self.path(&partial.digest);
        partial
            .file
            .sync_all()
            .map_err(io_err("sync", &partial.path))?;
        fs::rename(&partial.path, &target).map_err(io_err("store", &target))?;
        let _ = fs::remove_file(&partial.offset_path);
        Ok(())
    }
}

/// Checks that `bytes` are blob `digest`.
pub fn verify(digest: &Digest, bytes: &[u8]) -> Result<(), BlobError> {
    let mut h = digest.verifier();
    h.update(bytes);
    let actual = h.finish();
    if &actual != digest {
        return Err(BlobError::Digest {
            expected: digest.clone(),
            actual,
        });
    }
    Ok(())
}

/// A download in progress (see [`Blobs::partial`]): appended to, then committed or
/// discarded. Dropping it keeps it on disk for the next pull to resume.
#[derive(Debug)]
pub struct Partial {
    digest: Digest,
    file: Flock<File>,
    path: PathBuf,
    offset_path: PathBuf,
    offset: u64,
    recorded: u64,
}

/// How often the offset is recorded: what a killed download may have to fetch again.
const RECORD_EVERY: u64 = 4 << 20;

impl Partial {
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Bytes written so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `bytes`.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        (&*self.file)
            .write_all(bytes)
            .map_err(io_err("write", &self.path))?;
        self.offset += bytes.len() as u64;
        if self.offset - self.recorded >= RECORD_EVERY {
            self.record();
        }
        Ok(())
    }

    /// Records the offset reached (not durable: a crash of the machine loses at most what
    /// the page cache loses, and the digest check catches the rest).
    pub fn record(&mut self) {
        let written = berth_fs::write_atomic(
            &self.offset_path,
            self.offset.to_string().as_bytes(),
            WriteOptions {
                mode: 0o600,
                durable: false,
            },
        );
        if written.is_ok() {
            self.recorded = self.offset;
        }
    }

    /// Starts over: the bytes on disk were not the blob.
    pub fn restart(&mut self) -> Result<(), BlobError> {
        self.file
            .set_len(0)
            .map_err(io_err("truncate", &self.path))?;
        (&*self.file)
            .seek(io::SeekFrom::Start(0))
            .map_err(io_err("seek", &self.path))?;
        self.offset = 0;
        self.record();
        Ok(())
    }

    /// Deletes it: what it holds is not the blob and no resume may use it.
    pub fn discard(self) {
        let _ = fs::remove_file(&self.path);
        let _ = fs::remove_file(&self.offset_path);
    }

    /// A second descriptor of the file, for reading while it is written.
    pub fn reader(&self) -> Result<File, BlobError> {
        File::open(&self.path).map_err(io_err("open", &self.path))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        // Kept for a resume: record how far it got. (After commit or discard the paths are
        // gone and this fails quietly, or writes an offset file the next sweep removes.)
        if self.offset != self.recorded && self.path.exists() {
            self.record();
        }
    }
}

/// Reads `reader` to the end into memory, refusing more than `max` bytes.
pub fn read_limited(reader: impl Read, digest: &Digest, max: u64) -> Result<Vec<u8>, io::Error> {
    let mut bytes = Vec::new();
    reader.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("blob {digest} is larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn put_verifies_and_partials_resume_at_the_recorded_offset() {
        let tmp = tempfile::tempdir().unwrap();
        let blobs = Blobs::new(tmp.path().join("blobs"));
        blobs.create_dirs().unwrap();
        let d = Digest::sha256_of(b"hello");
        let err = blobs.put(&d, b"hellO").unwrap_err();
        assert!(err.to_string().contains(&d.to_string()), "{err}");
        assert!(!blobs.has(&d));
        blobs.put(&d, b"hello").unwrap();
        assert_eq!(blobs.read(&d, 10).unwrap(), b"hello");
        assert_eq!(blobs.list().unwrap().len(), 1);

        let big = Digest::sha256_of(b"partial");
        let mut p = blobs.partial(&big).unwrap();
        p.append(b"part").unwrap();
        p.record();
        drop(p);
        // What a writer killed after two more bytes, before it recorded them, leaves.
        let file = tmp
            .path()
            .join(format!("blobs/.partial/sha256-{}", big.hex()));
        OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap()
            .write_all(b"ia")
            .unwrap();
        let p = blobs.partial(&big).unwrap();
        assert_eq!(p.offset(), 4);
        assert_eq!(fs::read(p.path()).unwrap(), b"part");
        drop(p);
        assert_eq!(blobs.partials().len(), 1);
        assert_eq!(blobs.remove_partials(), 4);
        assert!(blobs.partials().is_empty());
    }
}
