//! The image store: `<root>/images/<name>/{rootfs, image.json}`.
//!
//! Images are immutable once created: containers use `rootfs` as the read-only lower layer of
//! their overlay. Creation is atomic: everything is built in `images/.tmp-<name>-<rand>` and
//! renamed into place under the image lock, so concurrent first uses of `busybox` build it
//! once and nobody sees a half-built image; removal renames to `images/.tmp-rm-<name>-<rand>`
//! first. What a killed `berth` leaves of either is deleted by the next command that takes the
//! image lock.
//!
//! Sources:
//! - `busybox` (the default image) is built offline on first use from the host's static
//!   busybox (Debian: busybox-static);
//! - `berth image import TARBALL NAME` takes a rootfs tarball, a `docker save` archive
//!   (`manifest.json`) or an OCI image layout (`index.json`), gzip-compressed or not.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use crate::archive::{ArchiveError, ImageArchive};
use crate::busybox::{BusyboxError, DEFAULT_IMAGE, HostBusybox};
use crate::layer::{self, LayerError, Mode};
use crate::meta::{DEFAULT_PATH, Image};
use crate::name::ImageName;
use crate::time;
use berth_fs::mounts;

/// Errors of the `store` module.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {name} not found (import one with `berth image import TARBALL {name}`)")]
    NotFound { name: ImageName },
    #[error("image {name} already exists")]
    Exists { name: ImageName },
    #[error("image {name} is in use by container {container}")]
    InUse { name: ImageName, container: String },
    #[error("lock the image store {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Busybox(#[from] BusyboxError),
    #[error("build image {name}: {step} {path}")]
    Build {
        name: ImageName,
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parse {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("import {archive}")]
    Unpack {
        archive: PathBuf,
        #[source]
        source: LayerError,
    },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("read random bytes from /dev/urandom")]
    Random(#[source] io::Error),
}

/// A listed image with its size on disk.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageSummary {
    #[serde(flatten)]
    pub image: Image,
    pub size: u64,
}

#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
}

/// A directory being built; removed on drop unless committed.
struct Staging {
    dir: PathBuf,
    committed: bool,
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = fs::remove_dir_all(&self.dir) {
                if e.kind() != io::ErrorKind::NotFound {
                    eprintln!("berth: remove {}: {e}", self.dir.display());
                }
            }
        }
    }
}

impl ImageStore {
    /// The store in `dir` (`<root>/images`, which the runtime creates with its state).
    pub fn new(dir: PathBuf) -> ImageStore {
        ImageStore { dir }
    }

    fn image_dir(&self, name: &ImageName) -> PathBuf {
        self.dir.join(name.as_str())
    }

    /// The image's root filesystem (the overlay's lower layer).
    pub fn rootfs(&self, name: &ImageName) -> PathBuf {
        self.image_dir(name).join("rootfs")
    }

    fn lock(&self) -> Result<Flock<File>, ImageError> {
        let path = self.dir.join(".lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| ImageError::Lock {
                path: path.clone(),
                source,
            })?;
        let lock =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, errno)| ImageError::Lock {
                path,
                source: errno.into(),
            })?;
        self.sweep_staging();
        Ok(lock)
    }

    /// Deletes the staging directories (`.tmp-<name>-<rand>`, `.tmp-rm-<name>-<rand>`) that a
    /// `berth` killed while building or removing an image left. Called with the image lock
    /// held, under which every staging directory is made and renamed: none is anyone's any
    /// more. Best effort, like [`Staging`]'s own clean-up: a failure costs disk space, never
    /// the command.
    fn sweep_staging(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                if let Err(e) = mounts::delete_tree(&entry.path()) {
                    eprintln!("berth: {}", error_chain(&e));
                }
            }
        }
    }

    /// The image's metadata, `None` if it does not exist.
    pub fn get(&self, name: &ImageName) -> Result<Option<Image>, ImageError> {
        let path = self.image_dir(name).join("image.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| ImageError::Parse { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ImageError::Read { path, source }),
        }
    }

    /// The image `name`; `busybox` is built on first use.
    pub fn resolve(&self, name: &ImageName) -> Result<Image, ImageError> {
        if let Some(image) = self.get(name)? {
            return Ok(image);
        }
        if name.as_str() != DEFAULT_IMAGE {
            return Err(ImageError::NotFound { name: name.clone() });
        }
        let _lock = self.lock()?;
        // Someone else may have built it while we waited for the lock.
        if let Some(image) = self.get(name)? {
            return Ok(image);
        }
        self.build_busybox(name)
    }

    fn staging(&self, name: &ImageName) -> Result<Staging, ImageError> {
        let dir = self.dir.join(format!(".tmp-{name}-{}", random_suffix()?));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|source| ImageError::Build {
                name: name.clone(),
                step: "create staging directory",
                path: dir.clone(),
                source,
            })?;
        Ok(Staging {
            dir,
            committed: false,
        })
    }

    /// Writes `image.json` into the staging directory and renames it into place.
    fn commit(&self, mut staging: Staging, image: Image) -> Result<Image, ImageError> {
        let name = image.name.clone();
        let meta = staging.dir.join("image.json");
        let json = serde_json::to_vec_pretty(&image).map_err(|source| ImageError::Parse {
            path: meta.clone(),
            source,
        })?;
        fs::write(&meta, json).map_err(|source| ImageError::Build {
            name: name.clone(),
            step: "write",
            path: meta,
            source,
        })?;
        let target = self.image_dir(&name);
        if target.exists() {
            return Err(ImageError::Exists { name });
        }
        fs::rename(&staging.dir, &target).map_err(|source| ImageError::Build {
            name,
            step: "rename into place",
            path: target,
            source,
        })?;
        staging.committed = true;
        Ok(image)
    }

    /// Builds the busybox image (see [`crate::busybox`]) in a staging directory.
    fn build_busybox(&self, name: &ImageName) -> Result<Image, ImageError> {
        let host = HostBusybox::probe()?;
        let staging = self.staging(name)?;
        let image = host.install(name, &staging.dir.join("rootfs"))?;
        self.commit(staging, image)
    }

    /// Imports `tarball` as image `name`: a rootfs tarball, a `docker save` archive or an
    /// OCI image layout.
    pub fn import(&self, tarball: &Path, name: &ImageName) -> Result<Image, ImageError> {
        let _lock = self.lock()?;
        if self.get(name)?.is_some() {
            return Err(ImageError::Exists { name: name.clone() });
        }
        let staging = self.staging(name)?;
        let unpacked = staging.dir.join("unpacked");
        let rootfs = staging.dir.join("rootfs");
        for dir in [&unpacked, &rootfs] {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(dir)
                .map_err(|source| ImageError::Build {
                    name: name.clone(),
                    step: "create",
                    path: dir.clone(),
                    source,
                })?;
        }
        let unpack_err = |source| ImageError::Unpack {
            archive: tarball.to_path_buf(),
            source,
        };
        layer::unpack(tarball, &unpacked, Mode::Plain).map_err(unpack_err)?;

        let mut image = Image {
            name: name.clone(),
            created: time::now_rfc3339(),
            cmd: Vec::new(),
            entrypoint: Vec::new(),
            env: vec![format!("PATH={DEFAULT_PATH}")],
            workdir: None,
            source: format!("rootfs:{}", tarball.display()),
        };
        let archive = ImageArchive::detect(&unpacked, tarball)?;
        match archive {
            None => {
                // A plain rootfs: what was unpacked is the tree itself.
                fs::remove_dir(&rootfs).map_err(|source| ImageError::Build {
                    name: name.clone(),
                    step: "replace",
                    path: rootfs.clone(),
                    source,
                })?;
                fs::rename(&unpacked, &rootfs).map_err(|source| ImageError::Build {
                    name: name.clone(),
                    step: "rename",
                    path: unpacked.clone(),
                    source,
                })?;
                image.cmd = vec!["sh".into()];
            }
            Some(archive) => {
                for layer in &archive.layers {
                    layer::unpack(layer, &rootfs, Mode::Layer).map_err(unpack_err)?;
                }
                image.source = format!("{}:{}", archive.kind, tarball.display());
                if let Some(config) = archive.config {
                    image.cmd = config.cmd.unwrap_or_default();
                    image.entrypoint = config.entrypoint.unwrap_or_default();
                    if let Some(env) = config.env {
                        image.env = env;
                    }
                    image.workdir = config.working_dir.filter(|w| !w.is_empty());
                }
                fs::remove_dir_all(&unpacked).map_err(|source| ImageError::Build {
                    name: name.clone(),
                    step: "remove",
                    path: unpacked.clone(),
                    source,
                })?;
            }
        }
        self.commit(staging, image)
    }

    /// Every image, by name.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| ImageError::Read {
            path: self.dir.clone(),
            source,
        })?;
        let mut images = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ImageError::Read {
                path: self.dir.clone(),
                source,
            })?;
            let Some(name) = entry
                .file_name()
                .to_str()
                .and_then(|n| ImageName::try_from(n).ok())
            else {
                continue; // .lock, .tmp-*
            };
            if let Some(image) = self.get(&name)? {
                let size = tree_size(&self.rootfs(&name));
                images.push(ImageSummary { image, size });
            }
        }
        images.sort_by(|a, b| a.image.name.cmp(&b.image.name));
        Ok(images)
    }

    /// Removes image `name`. The caller checks that no container uses it.
    pub fn remove(&self, name: &ImageName) -> Result<(), ImageError> {
        let _lock = self.lock()?;
        if self.get(name)?.is_none() {
            return Err(ImageError::NotFound { name: name.clone() });
        }
        // Rename first: the image disappears atomically even if the deletion is interrupted.
        let doomed = Staging {
            dir: self
                .dir
                .join(format!(".tmp-rm-{name}-{}", random_suffix()?)),
            committed: false,
        };
        fs::rename(self.image_dir(name), &doomed.dir).map_err(|source| ImageError::Build {
            name: name.clone(),
            step: "remove",
            path: self.image_dir(name),
            source,
        })?;
        drop(doomed);
        Ok(())
    }
}

/// 12 random hex digits: staging directories of concurrent builds never collide.
fn random_suffix() -> Result<String, ImageError> {
    let mut buf = [0u8; 6];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(ImageError::Random)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// `err: cause: cause`, on one line.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Total size of the regular files under `dir` (symlinks not followed).
fn tree_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}
