//! Unpacking one layer (a tar stream, gzip, zstd or uncompressed) into a directory of its own,
//! in the format overlayfs reads as a lower layer:
//!
//! - `.wh.NAME` (a deletion of NAME from the layers below) becomes a character device 0/0
//!   named NAME, overlayfs' whiteout;
//! - `.wh..wh..opq` (the directory hides what the layers below have in it) becomes the
//!   `trusted.overlay.opaque=y` xattr on that directory;
//! - other `.wh..wh.*` names (AUFS bookkeeping) are dropped.
//!
//! Nothing of a layer is applied on another: each is unpacked alone, into an empty directory,
//! so layers can be unpacked in parallel and shared by every image that has them.
//!
//! The stream is read once, front to back, with a few buffers of memory: the layer's diffID
//! (the digest of the uncompressed tar, padding included) is computed on the way, and the
//! bytes after the tar's end are read to the end for it.
//!
//! Safety: entry paths are made relative and refused if they contain `..`; the tar crate's
//! `unpack_in` refuses to write through a symlink that leads outside the layer; whiteouts and
//! opaque markers are placed with [`secure_join`] (symlinks resolved inside the layer). Block
//! and character devices in a layer are skipped: the container's `/dev` is a fresh tmpfs, and
//! a device node elsewhere in an image would be a way around the device cgroup. Of the
//! extended attributes a layer carries, only `security.capability` (file capabilities, e.g.
//! ping's) and `user.*` are applied: `trusted.overlay.*` from an image would steer overlayfs.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use berth_fs::resolve::{ResolveError, secure_join, secure_join_parent};
use rustix::fs::{FileType, Mode, XattrFlags};

use crate::digest::{Algorithm, Digest, Hasher};
use crate::oci::Compression;

/// Errors of the `unpack` module.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("read the layer")]
    Read(#[source] io::Error),
    #[error("layer entry {entry:?} points outside the layer (`..` or an unusable path)")]
    UnsafePath { entry: PathBuf },
    #[error("unpack {entry}")]
    Unpack {
        entry: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("make the whiteout {entry}")]
    Whiteout {
        entry: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "mark {dir} opaque (trusted.overlay.opaque; needs root and a filesystem with trusted xattrs)"
    )]
    Opaque {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("set {name} on {entry}")]
    Xattr {
        entry: PathBuf,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("layer entry {entry}")]
    Resolve {
        entry: PathBuf,
        #[source]
        source: ResolveError,
    },
}

/// What unpacking a layer found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// The digest of the uncompressed stream: the layer's diffID.
    pub diff_id: Digest,
    /// Bytes of regular files (what `berth images` adds up as the size).
    pub size: u64,
    pub entries: u64,
    /// Device nodes in the layer, not created (see the module docs).
    pub skipped_devices: Vec<PathBuf>,
}

const WHITEOUT_PREFIX: &str = ".wh.";
const WHITEOUT_META_PREFIX: &str = ".wh..wh.";
const OPAQUE: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to hide a lower directory's content.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// The compression of a stream, from its first bytes; `hint` (the media type's) when they
/// say nothing. Sniffing wins: registries and tools mislabel layers, never their magic.
pub fn sniff(head: &[u8], hint: Compression) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Compression::None
    } else {
        hint
    }
}

/// `reader` decompressed. Concatenated gzip members and zstd frames are read as one stream
/// (the diffID covers them all).
pub fn decompress<'a, R: Read + 'a>(
    reader: R,
    hint: Compression,
) -> io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(128 * 1024, reader);
    let head = buffered.fill_buf()?;
    Ok(match sniff(head, hint) {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        Compression::None => Box::new(buffered),
    })
}

/// A reader that hashes (and counts) what goes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R, algorithm: Algorithm) -> HashingReader<R> {
        HashingReader {
            inner,
            hasher: Hasher::new(algorithm),
            count: 0,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Reads what is left to the end, then the digest and the byte count of everything.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.hasher.finish(), self.count))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// `entry` as a clean relative path; `None` for the root itself (`./`).
fn relative(entry: &Path) -> Result<Option<PathBuf>, UnpackError> {
    let mut out = PathBuf::new();
    for c in entry.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(UnpackError::UnsafePath {
                    entry: entry.to_path_buf(),
                });
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Unpacks the uncompressed tar stream `tar` into `dest`, an existing empty directory, in
/// overlay format (see the module docs). Reads the stream to its end.
pub fn unpack_layer<R: Read>(tar: R, dest: &Path) -> Result<Unpacked, UnpackError> {
    let mut hashed = HashingReader::new(tar, Algorithm::Sha256);
    // The archive borrows `hashed` only until its entries are read: the rest is drained
    // below, for the diffID.
    let mut archive = tar::Archive::new(&mut hashed);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    let mut out = Unpacked {
        diff_id: Digest::sha256_of(b""),
        size: 0,
        entries: 0,
        skipped_devices: Vec::new(),
    };
    // Directory mtimes change as their children are written: set them once all are.
    let mut dir_times: Vec<(PathBuf, u64)> = Vec::new();
    for entry in archive.entries().map_err(UnpackError::Read)? {
        let mut entry = entry.map_err(UnpackError::Read)?;
        out.entries += 1;
        let raw = entry.path().map_err(UnpackError::Read)?.into_owned();
        let header = entry.header().clone();
        let header = &header;
        let kind = header.entry_type();
        let Some(rel) = relative(&raw)? else {
            // The layer's root: its attributes are the root directory's.
            if kind.is_dir() {
                apply_root_attributes(dest, header).map_err(|source| UnpackError::Unpack {
                    entry: raw.clone(),
                    source,
                })?;
                if let Ok(mtime) = header.mtime() {
                    dir_times.push((dest.to_path_buf(), mtime));
                }
            }
            continue;
        };
        let name = rel.file_name().unwrap_or_default();
        if let Some(hidden) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            let parent = rel.parent().unwrap_or(Path::new(""));
            if name == OsStr::new(OPAQUE) {
                mark_opaque(dest, parent)?;
            } else if !name.as_bytes().starts_with(WHITEOUT_META_PREFIX.as_bytes()) {
                let uid = header.uid().unwrap_or(0);
                let gid = header.gid().unwrap_or(0);
                whiteout(dest, &parent.join(OsStr::from_bytes(hidden)), uid, gid)?;
            }
            continue;
        }
        if kind.is_block_special() || kind.is_character_special() {
            out.skipped_devices.push(rel);
            continue;
        }
        if kind.is_fifo() {
            // The tar crate would make a regular file of it.
            fifo(dest, &rel, header)?;
            continue;
        }
        if kind.is_file() || kind == tar::EntryType::Continuous {
            out.size += entry.size();
        }
        let xattrs = wanted_xattrs(&mut entry).map_err(UnpackError::Read)?;
        let mtime = kind.is_dir().then(|| header.mtime().ok()).flatten();
        replace_conflicting(dest, &rel, kind.is_dir())?;
        // unpack_in returns false for entries it skips as unsafe; `relative` refused those
        // already, so false here means a path the crate judged unsafe for another reason
        // (through a symlink that leads out of the layer).
        let unpacked = entry
            .unpack_in(dest)
            .map_err(|source| UnpackError::Unpack {
                entry: rel.clone(),
                source,
            })?;
        if !unpacked {
            return Err(UnpackError::UnsafePath { entry: rel });
        }
        let path = dest.join(&rel);
        for (name, value) in xattrs {
            rustix::fs::lsetxattr(&path, name.as_str(), &value, XattrFlags::empty()).map_err(
                |e| UnpackError::Xattr {
                    entry: rel.clone(),
                    name: name.clone(),
                    source: e.into(),
                },
            )?;
        }
        if let Some(mtime) = mtime {
            dir_times.push((path, mtime));
        }
    }
    for (dir, mtime) in dir_times.iter().rev() {
        set_mtime(dir, *mtime);
    }
    let (diff_id, _) = hashed.finish().map_err(UnpackError::Read)?;
    out.diff_id = diff_id;
    Ok(out)
}

/// The extended attributes of `entry` (PAX `SCHILY.xattr.*` records) that are applied.
fn wanted_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    let Some(extensions) = entry.pax_extensions()? else {
        return Ok(out);
    };
    for ext in extensions {
        let ext = ext?;
        let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) else {
            continue;
        };
        if name == "security.capability" || name.starts_with("user.") {
            out.push((name.to_owned(), ext.value_bytes().to_vec()));
        }
    }
    Ok(out)
}

fn apply_root_attributes(dest: &Path, header: &tar::Header) -> io::Result<()> {
    if let Ok(mode) = header.mode() {
        fs::set_permissions(
            dest,
            std::os::unix::fs::PermissionsExt::from_mode(mode & 0o7777),
        )?;
    }
    if let (Ok(uid), Ok(gid)) = (header.uid(), header.gid()) {
        let id = |n: u64| u32::try_from(n).ok();
        std::os::unix::fs::lchown(dest, id(uid), id(gid))?;
    }
    Ok(())
}

/// Best effort: a directory's mtime is cosmetic, and never worth failing a pull.
fn set_mtime(path: &Path, mtime: u64) {
    let secs = i64::try_from(mtime).unwrap_or(i64::MAX);
    let time = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        },
    };
    let _ = rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &time,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    );
}

/// The directory `parent` of the layer (created if the layer did not list it first) gets the
/// opaque xattr.
fn mark_opaque(dest: &Path, parent: &Path) -> Result<(), UnpackError> {
    let dir = secure_join(dest, parent).map_err(|source| UnpackError::Resolve {
        entry: parent.join(OPAQUE),
        source,
    })?;
    let opaque_err = |source| UnpackError::Opaque {
        dir: parent.to_path_buf(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&dir)
        .map_err(opaque_err)?;
    rustix::fs::lsetxattr(&dir, OPAQUE_XATTR, b"y", XattrFlags::empty())
        .map_err(|e| opaque_err(e.into()))
}

/// `rel` becomes overlayfs' whiteout: a character device 0/0.
fn whiteout(dest: &Path, rel: &Path, uid: u64, gid: u64) -> Result<(), UnpackError> {
    let path = secure_join_parent(dest, rel).map_err(|source| UnpackError::Resolve {
        entry: rel.to_path_buf(),
        source,
    })?;
    let err = |source| UnpackError::Whiteout {
        entry: rel.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(err)?;
    }
    if let Ok(meta) = fs::symlink_metadata(&path) {
        remove_entry(&path, meta.is_dir()).map_err(err)?;
    }
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &path,
        FileType::CharacterDevice,
        Mode::empty(),
        0,
    )
    .map_err(|e| err(e.into()))?;
    let id = |n: u64| u32::try_from(n).ok();
    std::os::unix::fs::lchown(&path, id(uid), id(gid)).map_err(err)
}

/// A named pipe, with the entry's owner, mode and mtime.
fn fifo(dest: &Path, rel: &Path, header: &tar::Header) -> Result<(), UnpackError> {
    let path = secure_join_parent(dest, rel).map_err(|source| UnpackError::Resolve {
        entry: rel.to_path_buf(),
        source,
    })?;
    let err = |source| UnpackError::Unpack {
        entry: rel.to_path_buf(),
        source,
    };
    if let Ok(meta) = fs::symlink_metadata(&path) {
        remove_entry(&path, meta.is_dir()).map_err(err)?;
    }
    let mode = header.mode().unwrap_or(0o644) & 0o7777;
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &path,
        FileType::Fifo,
        Mode::from_raw_mode(mode),
        0,
    )
    .map_err(|e| err(e.into()))?;
    let id = |n: io::Result<u64>| n.ok().and_then(|n| u32::try_from(n).ok());
    std::os::unix::fs::lchown(&path, id(header.uid()), id(header.gid())).map_err(err)?;
    // Set after the owner: chown clears the set-id bits, and the umask filtered mknod's.
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode)).map_err(err)?;
    if let Ok(mtime) = header.mtime() {
        set_mtime(&path, mtime);
    }
    Ok(())
}

/// A layer may list a path twice, as a file and then a directory or the reverse; the tar
/// crate would fail (or write into the old directory), so the old entry goes first. Same
/// kind: left for the crate to overwrite (directories merge).
fn replace_conflicting(dest: &Path, rel: &Path, entry_is_dir: bool) -> Result<(), UnpackError> {
    let path = secure_join_parent(dest, rel).map_err(|source| UnpackError::Resolve {
        entry: rel.to_path_buf(),
        source,
    })?;
    let Ok(meta) = fs::symlink_metadata(&path) else {
        return Ok(());
    };
    let existing_is_dir = meta.is_dir();
    if existing_is_dir == entry_is_dir {
        return Ok(());
    }
    remove_entry(&path, existing_is_dir).map_err(|source| UnpackError::Unpack {
        entry: rel.to_path_buf(),
        source,
    })
}

fn remove_entry(path: &Path, is_dir: bool) -> io::Result<()> {
    let result = if is_dir {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

// The tar writer of the tests, shared with the integration tests (which cannot reach a
// `cfg(test)` module of the library).
#[cfg(test)]
#[path = "../tests/common/layer_tar.rs"]
mod layer_tar;

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use std::io::Write;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    use super::*;

    pub use super::layer_tar::{E, tar as layer_tar};

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    fn unpack_bytes(bytes: &[u8], dest: &Path) -> Result<Unpacked, UnpackError> {
        let reader = decompress(bytes, Compression::None).unwrap();
        unpack_layer(reader, dest)
    }

    #[test]
    fn whiteouts_become_devices_and_opaque_dirs_an_xattr() {
        let tmp = tempfile::tempdir().unwrap();
        let tar = layer_tar(&[
            E::Dir("etc/"),
            E::File("etc/.wh.gone", b""),
            E::Dir("cache/"),
            E::File("cache/.wh..wh..opq", b""),
            E::File("cache/new", b"2"),
            E::File("new-dir/.wh..wh..opq", b""),
            E::File(".wh..wh.plnk", b""),
        ]);
        let out = unpack_bytes(&tar, tmp.path()).unwrap();
        assert_eq!(out.diff_id, Digest::sha256_of(&tar));
        let gone = fs::symlink_metadata(tmp.path().join("etc/gone")).unwrap();
        assert!(gone.file_type().is_char_device());
        assert_eq!(gone.rdev(), 0);
        assert!(!tmp.path().join("etc/.wh.gone").exists());
        for dir in ["cache", "new-dir"] {
            let value =
                rustix::fs::lgetxattr(tmp.path().join(dir), OPAQUE_XATTR, &mut [0u8; 4]).unwrap();
            assert_eq!(value, 1, "{dir}");
        }
        assert!(!tmp.path().join("cache/.wh..wh..opq").exists());
        assert_eq!(fs::read(tmp.path().join("cache/new")).unwrap(), b"2");
        assert!(!tmp.path().join(".wh..wh.plnk").exists());
        assert!(fs::symlink_metadata(tmp.path().join("plnk")).is_err());
    }

    #[test]
    fn links_fifos_and_devices() {
        let tmp = tempfile::tempdir().unwrap();
        let tar = layer_tar(&[
            E::Dir("bin/"),
            E::File("bin/busybox", b"elf"),
            E::Link("bin/sh", "/bin/busybox"),
            E::Hard("bin/ash", "bin/busybox"),
            E::Fifo("fifo"),
            E::Char("dev-null"),
        ]);
        let out = unpack_bytes(&gzip(&tar), tmp.path()).unwrap();
        // The diffID is of the uncompressed stream.
        assert_eq!(out.diff_id, Digest::sha256_of(&tar));
        assert_eq!(out.size, 3);
        let root = tmp.path();
        assert_eq!(
            fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("/bin/busybox")
        );
        let a = fs::metadata(root.join("bin/ash")).unwrap();
        let b = fs::metadata(root.join("bin/busybox")).unwrap();
        assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
        assert!(
            fs::symlink_metadata(root.join("fifo"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        assert_eq!(out.skipped_devices, [PathBuf::from("dev-null")]);
        assert!(fs::symlink_metadata(root.join("dev-null")).is_err());
        assert_eq!(
            fs::metadata(root.join("bin/busybox"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o644
        );
    }

    #[test]
    fn zstd_layers_unpack() {
        let tmp = tempfile::tempdir().unwrap();
        let tar = layer_tar(&[E::File("z", b"zstd")]);
        let compressed = zstd::encode_all(&tar[..], 3).unwrap();
        let out = unpack_bytes(&compressed, tmp.path()).unwrap();
        assert_eq!(out.diff_id, Digest::sha256_of(&tar));
        assert_eq!(fs::read(tmp.path().join("z")).unwrap(), b"zstd");
    }

    #[test]
    fn paths_out_of_the_layer_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("layer");
        fs::create_dir(&dest).unwrap();
        // The tar crate's builder refuses `..`, so the name goes into the header by hand.
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_old();
        let name = b"../escaped";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_size(1);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let err = unpack_bytes(&b.into_inner().unwrap(), &dest).unwrap_err();
        assert!(matches!(err, UnpackError::UnsafePath { .. }), "{err}");
        assert!(!tmp.path().join("escaped").exists());

        // Through a symlink of the layer that leads out of it.
        let dest = tmp.path().join("layer2");
        fs::create_dir(&dest).unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let tar = layer_tar(&[
            E::Link("evil", outside.to_str().unwrap()),
            E::File("evil/planted", b"x"),
        ]);
        assert!(unpack_bytes(&tar, &dest).is_err());
        assert!(!outside.join("planted").exists());
        // A whiteout through it lands inside the layer (symlinks resolve in the layer).
        let dest = tmp.path().join("layer3");
        fs::create_dir(&dest).unwrap();
        let tar = layer_tar(&[
            E::Link("evil", outside.to_str().unwrap()),
            E::File("evil/.wh.victim", b""),
        ]);
        fs::write(outside.join("victim"), b"x").unwrap();
        let _ = unpack_bytes(&tar, &dest);
        assert_eq!(fs::read(outside.join("victim")).unwrap(), b"x");
    }

    #[test]
    fn trusted_xattrs_of_the_image_are_not_applied() {
        let tmp = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([
            ("SCHILY.xattr.trusted.overlay.opaque", &b"y"[..]),
            ("SCHILY.xattr.user.note", &b"kept"[..]),
        ])
        .unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        b.append_data(&mut h, "d/", &[][..]).unwrap();
        unpack_bytes(&b.into_inner().unwrap(), tmp.path()).unwrap();
        let d = tmp.path().join("d");
        assert!(rustix::fs::lgetxattr(&d, OPAQUE_XATTR, &mut [0u8; 4]).is_err());
        let mut buf = [0u8; 8];
        let n = rustix::fs::lgetxattr(&d, "user.note", &mut buf).unwrap();
        assert_eq!(&buf[..n], b"kept");
    }

    #[test]
    fn trailing_bytes_count_in_the_diff_id() {
        let tmp = tempfile::tempdir().unwrap();
        let mut tar = layer_tar(&[E::File("a", b"1")]);
        tar.extend_from_slice(&[0u8; 4096]);
        let out = unpack_bytes(&tar, tmp.path()).unwrap();
        assert_eq!(out.diff_id, Digest::sha256_of(&tar));
    }
}
