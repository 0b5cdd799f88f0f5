//! Unpacking tar archives into a root filesystem: plain rootfs tarballs and image layers
//! (with OCI/AUFS whiteouts), gzip-compressed or not.
//!
//! Safety: every entry path is made relative and refused if it contains `..`; the tar crate's
//! `unpack_in` additionally refuses to write through a symlink that leads outside the
//! destination. Paths the runtime itself touches (whiteouts, type changes) are resolved with
//! [`secure_join_parent`]. Block and character device nodes are skipped: the container's
//! `/dev` is a fresh tmpfs, and a device node elsewhere in an image would be a way around the
//! device cgroup.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use flate2::read::GzDecoder;

use berth_fs::resolve::{ResolveError, secure_join_parent};

/// Errors of the `layer` module.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("open archive {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("archive {path}: zstd-compressed layers are not supported yet")]
    Zstd { path: PathBuf },
    #[error("read archive {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("archive {archive}: entry {entry:?} points outside the root (`..` or unusable path)")]
    UnsafePath { archive: PathBuf, entry: PathBuf },
    #[error("archive {archive}: unpack {entry}")]
    Unpack {
        archive: PathBuf,
        entry: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("archive {archive}: apply whiteout {entry}")]
    Whiteout {
        archive: PathBuf,
        entry: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("archive {archive}")]
    Resolve {
        archive: PathBuf,
        #[source]
        source: ResolveError,
    },
}

/// How to read the entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A plain tarball: every entry is a file of the tree.
    Plain,
    /// An image layer: `.wh.NAME` deletes NAME from the layers below, `.wh..wh..opq` empties
    /// its directory of what the layers below put there.
    Layer,
}

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Opens `path`, transparently decompressing gzip (sniffed from the magic bytes).
fn open(path: &Path) -> Result<Box<dyn Read>, LayerError> {
    let file = File::open(path).map_err(|source| LayerError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let mut reader = BufReader::new(file);
    let magic = reader.fill_buf().map_err(|source| LayerError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if magic.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(GzDecoder::new(reader)))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Err(LayerError::Zstd {
            path: path.to_path_buf(),
        })
    } else {
        Ok(Box::new(reader))
    }
}

/// `entry` as a clean relative path; `None` for the root itself (`./`).
fn relative(archive: &Path, entry: &Path) -> Result<Option<PathBuf>, LayerError> {
    let mut out = PathBuf::new();
    for c in entry.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(LayerError::UnsafePath {
                    archive: archive.to_path_buf(),
                    entry: entry.to_path_buf(),
                });
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// Unpacks `archive` into `dest` (an existing directory).
pub fn unpack(archive: &Path, dest: &Path, mode: Mode) -> Result<(), LayerError> {
    if mode == Mode::Layer {
        apply_whiteouts(archive, dest)?;
    }
    let read_err = |source| LayerError::Read {
        path: archive.to_path_buf(),
        source,
    };
    let mut tar = tar::Archive::new(open(archive)?);
    tar.set_preserve_permissions(true);
    tar.set_preserve_ownerships(true);
    tar.set_preserve_mtime(true);
    tar.set_overwrite(true);
    tar.set_unpack_xattrs(false);
    for entry in tar.entries().map_err(read_err)? {
        let mut entry = entry.map_err(read_err)?;
        let raw = entry.path().map_err(read_err)?.into_owned();
        let Some(rel) = relative(archive, &raw)? else {
            continue;
        };
        let is_whiteout = rel
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(WHITEOUT_PREFIX));
        if mode == Mode::Layer && is_whiteout {
            continue;
        }
        let kind = entry.header().entry_type();
        if kind.is_block_special() || kind.is_character_special() {
            eprintln!(
                "berth: {}: skipping device node {}",
                archive.display(),
                rel.display()
            );
            continue;
        }
        replace_conflicting(archive, dest, &rel, kind.is_dir())?;
        let unpack_err = |source| LayerError::Unpack {
            archive: archive.to_path_buf(),
            entry: rel.clone(),
            source,
        };
        // unpack_in returns false for entries it skips as unsafe; `relative` refused those
        // already, so false here means a path the crate judged unsafe for another reason.
        if !entry.unpack_in(dest).map_err(unpack_err)? {
            return Err(LayerError::UnsafePath {
                archive: archive.to_path_buf(),
                entry: rel,
            });
        }
    }
    Ok(())
}

/// A layer may replace a directory by a file or the reverse; the tar crate would fail (or
/// write into the old directory), so the old entry goes first. Same kind: left for the crate
/// to overwrite (directories merge).
fn replace_conflicting(
    archive: &Path,
    dest: &Path,
    rel: &Path,
    entry_is_dir: bool,
) -> Result<(), LayerError> {
    let path = secure_join_parent(dest, rel).map_err(|source| LayerError::Resolve {
        archive: archive.to_path_buf(),
        source,
    })?;
    let Ok(meta) = fs::symlink_metadata(&path) else {
        return Ok(());
    };
    let existing_is_dir = meta.is_dir();
    if existing_is_dir == entry_is_dir {
        return Ok(());
    }
    remove_entry(&path, existing_is_dir).map_err(|source| LayerError::Unpack {
        archive: archive.to_path_buf(),
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

/// First pass over a layer: deletions. It runs before the layer's own files are written, so
/// an opaque directory loses exactly what the lower layers had in it.
fn apply_whiteouts(archive: &Path, dest: &Path) -> Result<(), LayerError> {
    let read_err = |source| LayerError::Read {
        path: archive.to_path_buf(),
        source,
    };
    let mut tar = tar::Archive::new(open(archive)?);
    for entry in tar.entries().map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let raw = entry.path().map_err(read_err)?.into_owned();
        let Some(rel) = relative(archive, &raw)? else {
            continue;
        };
        let Some(name) = rel.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        let whiteout_err = |source| LayerError::Whiteout {
            archive: archive.to_path_buf(),
            entry: rel.clone(),
            source,
        };
        let resolve_err = |source| LayerError::Resolve {
            archive: archive.to_path_buf(),
            source,
        };
        if name == OPAQUE {
            let dir = berth_fs::resolve::secure_join(dest, parent).map_err(resolve_err)?;
            let children = match fs::read_dir(&dir) {
                Ok(children) => children,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(whiteout_err(e)),
            };
            for child in children {
                let child = child.map_err(whiteout_err)?;
                let is_dir = child.file_type().map_err(whiteout_err)?.is_dir();
                remove_entry(&child.path(), is_dir).map_err(whiteout_err)?;
            }
        } else if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
            let target = secure_join_parent(dest, &parent.join(hidden)).map_err(resolve_err)?;
            if let Ok(meta) = fs::symlink_metadata(&target) {
                remove_entry(&target, meta.is_dir()).map_err(whiteout_err)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tarball(path: &Path, entries: &[(&str, Option<&[u8]>)]) {
        let mut builder = tar::Builder::new(File::create(path).unwrap());
        for (name, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            match data {
                Some(data) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(data.len() as u64);
                    header.set_mode(0o644);
                    builder.append_data(&mut header, name, *data).unwrap();
                }
                None => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    header.set_mode(0o755);
                    builder.append_data(&mut header, name, &[][..]).unwrap();
                }
            }
        }
        builder.finish().unwrap();
    }

    #[test]
    fn layers_with_whiteouts() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("rootfs");
        fs::create_dir(&root).unwrap();
        let l1 = tmp.path().join("l1.tar");
        let l2 = tmp.path().join("l2.tar");
        tarball(
            &l1,
            &[
                ("etc/", None),
                ("etc/keep", Some(b"1")),
                ("etc/gone", Some(b"1")),
                ("opq/", None),
                ("opq/old", Some(b"1")),
                ("file-then-dir", Some(b"1")),
            ],
        );
        tarball(
            &l2,
            &[
                ("etc/.wh.gone", Some(b"")),
                ("opq/new", Some(b"2")),
                ("opq/.wh..wh..opq", Some(b"")),
                ("file-then-dir/", None),
                ("file-then-dir/x", Some(b"2")),
            ],
        );
        unpack(&l1, &root, Mode::Layer).unwrap();
        unpack(&l2, &root, Mode::Layer).unwrap();
        assert!(root.join("etc/keep").exists());
        assert!(!root.join("etc/gone").exists());
        assert!(!root.join("etc/.wh.gone").exists());
        assert!(!root.join("opq/old").exists());
        assert_eq!(fs::read(root.join("opq/new")).unwrap(), b"2");
        assert!(root.join("file-then-dir/x").exists());
    }

    #[test]
    fn parent_dir_entries_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("rootfs");
        fs::create_dir(&root).unwrap();
        let evil = tmp.path().join("evil.tar");
        // The tar crate's builder refuses `..`, so write the name into the header by hand.
        let mut builder = tar::Builder::new(File::create(&evil).unwrap());
        let mut header = tar::Header::new_old();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        let name = b"../escaped";
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_size(1);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_cksum();
        builder.append(&header, &b"x"[..]).unwrap();
        builder.finish().unwrap();
        let err = unpack(&evil, &root, Mode::Plain).unwrap_err();
        assert!(matches!(err, LayerError::UnsafePath { .. }), "{err}");
        assert!(!tmp.path().join("escaped").exists());
    }
}
