//! Resolving a path *inside* a root directory, as if the root were `/` (the job of Go's
//! `filepath-securejoin`): symlinks are followed, but absolute targets restart at the root and
//! `..` stops there, so the result never leaves the root.
//!
//! Used where the runtime touches an image's or a container's tree from the host: mount
//! targets (`-v`, `/proc`, masked paths), the working directory, whiteouts during layer
//! application. The rootfs setup runs before any container process exists, so nothing can
//! swap a component between resolution and use.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Errors of the `resolve` module.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("resolve {path} inside {root}: too many levels of symbolic links")]
    Loop { root: PathBuf, path: PathBuf },
    #[error("resolve {path} inside {root}")]
    Io {
        root: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Maximum number of symlinks followed, as the kernel's `MAXSYMLINKS`-ish limit.
const MAX_LINKS: usize = 255;

/// `root` joined with `unsafe_path`, every symlink resolved within `root`. Components that do
/// not exist are appended as they are (they cannot be symlinks), so the result can be created.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> Result<PathBuf, ResolveError> {
    let mut pending: VecDeque<OsString> = components(unsafe_path);
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = rebuild(root, &resolved).join(&part);
        match fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(ResolveError::Loop {
                        root: root.to_path_buf(),
                        path: unsafe_path.to_path_buf(),
                    });
                }
                let target = fs::read_link(&candidate).map_err(|source| ResolveError::Io {
                    root: root.to_path_buf(),
                    path: unsafe_path.to_path_buf(),
                    source,
                })?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for (i, c) in components(&target).into_iter().enumerate() {
                    pending.insert(i, c);
                }
            }
            Ok(_) => resolved.push(part),
            Err(e) if e.kind() == io::ErrorKind::NotFound => resolved.push(part),
            // ENOTDIR: a file used as a directory. Keep going lexically; using the result
            // fails later with a clear error naming it.
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => resolved.push(part),
            Err(source) => {
                return Err(ResolveError::Io {
                    root: root.to_path_buf(),
                    path: unsafe_path.to_path_buf(),
                    source,
                });
            }
        }
    }
    Ok(rebuild(root, &resolved))
}

/// The parent of `unsafe_path` resolved inside `root`, joined with its final component
/// *unresolved*: the path of the entry itself, not of what it may link to (for removing or
/// replacing a symlink).
pub fn secure_join_parent(root: &Path, unsafe_path: &Path) -> Result<PathBuf, ResolveError> {
    let mut parts = components(unsafe_path);
    // Fold "." and ".." first so the final component is a real name.
    let mut clean: Vec<OsString> = Vec::new();
    for part in parts.drain(..) {
        if part == ".." {
            clean.pop();
        } else {
            clean.push(part);
        }
    }
    match clean.pop() {
        None => Ok(root.to_path_buf()),
        Some(last) => {
            let parent: PathBuf = clean.iter().collect();
            Ok(secure_join(root, &parent)?.join(last))
        }
    }
}

fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn rebuild(root: &Path, parts: &[OsString]) -> PathBuf {
    let mut path = root.to_path_buf();
    path.extend(parts);
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_stay_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("/usr/lib", root.join("abs")).unwrap();
        symlink("../../../../etc", root.join("up")).unwrap();
        symlink("usr", root.join("rel")).unwrap();
        symlink("loop", root.join("loop")).unwrap();

        assert_eq!(
            secure_join(root, Path::new("/abs/x")).unwrap(),
            root.join("usr/lib/x")
        );
        assert_eq!(
            secure_join(root, Path::new("up/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            secure_join(root, Path::new("/../../etc")).unwrap(),
            root.join("etc")
        );
        assert_eq!(
            secure_join(root, Path::new("rel/lib/../bin")).unwrap(),
            root.join("usr/bin")
        );
        assert!(matches!(
            secure_join(root, Path::new("loop")),
            Err(ResolveError::Loop { .. })
        ));
        assert_eq!(
            secure_join_parent(root, Path::new("abs")).unwrap(),
            root.join("abs")
        );
        assert_eq!(
            secure_join_parent(root, Path::new("rel/lib")).unwrap(),
            root.join("usr/lib")
        );
        assert_eq!(secure_join_parent(root, Path::new("/")).unwrap(), root);
    }
}
