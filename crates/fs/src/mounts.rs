//! Mount points under a directory, and deleting a directory tree only once nothing is mounted
//! in it.
//!
//! A container's mounts live in its own mount namespace and vanish with it; the host's mount
//! table holds only the netns files. Still, `remove_dir_all` on a tree with something mounted
//! in it would descend into the mounted filesystem and delete *its* files (a volume's, the
//! image's), so every tree the runtime deletes is first cleared of mount points (detached,
//! deepest first, as `umount -l` would).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, umount2};

/// Errors of the `mounts` module.
#[derive(Debug, thiserror::Error)]
pub enum MountsError {
    #[error("read /proc/self/mountinfo")]
    Mountinfo(#[source] io::Error),
    #[error("detach the mount on {path}")]
    Unmount {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("delete {path}")]
    Delete {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Mount points at or below `dir` in this process's mount table, deepest first.
pub fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>, MountsError> {
    let table = fs::read_to_string("/proc/self/mountinfo").map_err(MountsError::Mountinfo)?;
    let mut found: Vec<PathBuf> = table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|point| point.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    Ok(found)
}

/// Detaches every mount at or below `dir`. A mount that went away meanwhile is fine.
pub fn unmount_under(dir: &Path) -> Result<(), MountsError> {
    for point in mounts_under(dir)? {
        match umount2(&point, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
            Err(source) => {
                return Err(MountsError::Unmount {
                    path: point,
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Deletes the tree at `dir` after detaching whatever is mounted in it. A missing tree is
/// success.
pub fn delete_tree(dir: &Path) -> Result<(), MountsError> {
    unmount_under(dir)?;
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(MountsError::Delete {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// Mountinfo escapes space, tab, newline and backslash as `\ooo`.
pub fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = std::str::from_utf8(&bytes[i + 1..i + 4]).unwrap_or("");
            if let Ok(b) = u8::from_str_radix(digits, 8) {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_with_a_mount_in_it_is_deleted_without_touching_the_mounted_files() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("volume");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("precious"), b"keep").unwrap();
        let tree = tmp.path().join("tree");
        let point = tree.join("a/b");
        fs::create_dir_all(&point).unwrap();
        nix::mount::mount(
            Some(&outside),
            &point,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        // The host's mount table is shared with the rest of the test binary: never leave the
        // bind mount behind, even on a failed assertion.
        struct Detach(PathBuf);
        impl Drop for Detach {
            fn drop(&mut self) {
                let _ = umount2(&self.0, MntFlags::MNT_DETACH);
            }
        }
        let _guard = Detach(point.clone());
        assert_eq!(mounts_under(&tree).unwrap(), vec![point.clone()]);
        delete_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert_eq!(fs::read(outside.join("precious")).unwrap(), b"keep");
        delete_tree(&tree).unwrap();
    }
}
