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
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::layer::{self, LayerError, Mode};
use crate::name::ImageName;
use crate::{mounts, time};

/// Errors of the `image` module.
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
    #[error("no busybox found on the host (looked at {looked}): install busybox-static")]
    NoBusybox { looked: String },
    #[error(
        "{path} is dynamically linked: the busybox image needs a static one (install busybox-static)"
    )]
    DynamicBusybox { path: PathBuf },
    #[error("run {program} --list-full")]
    ListApplets {
        program: PathBuf,
        #[source]
        source: io::Error,
    },
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
    #[error("import {archive}: {problem}")]
    Format { archive: PathBuf, problem: String },
    #[error("read random bytes from /dev/urandom")]
    Random(#[source] io::Error),
}

/// `$PATH` when neither the image nor `-e` sets one (docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The default image, built from the host's busybox.
pub const DEFAULT_IMAGE: &str = "busybox";

/// `image.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    pub name: ImageName,
    pub created: String,
    /// Default command (docker's `Cmd`).
    #[serde(default)]
    pub cmd: Vec<String>,
    /// Prepended to the command (docker's `Entrypoint`).
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    /// Where it came from: `host:/bin/busybox`, `rootfs:<tarball>`, `docker-archive:…`, `oci:…`.
    #[serde(default)]
    pub source: String,
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

    /// Builds the busybox image from the host's static busybox: `/bin/busybox`, one symlink
    /// per applet in `/bin` (and in `/sbin` for the applets busybox installs there), a minimal
    /// `/etc`, and the usual mount points.
    fn build_busybox(&self, name: &ImageName) -> Result<Image, ImageError> {
        const CANDIDATES: [&str; 2] = ["/bin/busybox", "/usr/bin/busybox"];
        let host = CANDIDATES
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .ok_or_else(|| ImageError::NoBusybox {
                looked: CANDIDATES.join(", "),
            })?;
        if is_dynamic_elf(host).map_err(|source| ImageError::Read {
            path: host.to_path_buf(),
            source,
        })? {
            return Err(ImageError::DynamicBusybox {
                path: host.to_path_buf(),
            });
        }
        let list = Command::new(host)
            .arg("--list-full")
            .output()
            .map_err(|source| ImageError::ListApplets {
                program: host.to_path_buf(),
                source,
            })?;
        let applets = String::from_utf8_lossy(&list.stdout).into_owned();

        let staging = self.staging(name)?;
        let rootfs = staging.dir.join("rootfs");
        let step = |step: &'static str, path: &Path| {
            let name = name.clone();
            let path = path.to_path_buf();
            move |source| ImageError::Build {
                name,
                step,
                path,
                source,
            }
        };
        let dirs: [(&str, u32); 14] = [
            ("", 0o755),
            ("bin", 0o755),
            ("sbin", 0o755),
            ("etc", 0o755),
            ("root", 0o700),
            ("home", 0o755),
            ("tmp", 0o1777),
            ("var", 0o755),
            ("mnt", 0o755),
            ("proc", 0o555),
            ("sys", 0o555),
            ("dev", 0o755),
            ("usr", 0o755),
            ("usr/bin", 0o755),
        ];
        for (dir, mode) in dirs {
            let path = rootfs.join(dir);
            fs::create_dir(&path).map_err(step("create", &path))?;
            // Set explicitly: the umask would clear the sticky and write bits of /tmp.
            fs::set_permissions(&path, fs::Permissions::from_mode(mode))
                .map_err(step("chmod", &path))?;
        }
        let target = rootfs.join("bin/busybox");
        fs::copy(host, &target).map_err(step("copy busybox to", &target))?;
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755))
            .map_err(step("chmod", &target))?;

        for line in applets.lines() {
            let Some(applet) = Path::new(line.trim()).file_name() else {
                continue;
            };
            if applet == "busybox" {
                continue;
            }
            let mut links = vec![rootfs.join("bin").join(applet)];
            if line.starts_with("sbin/") || line.starts_with("usr/sbin/") {
                links.push(rootfs.join("sbin").join(applet));
            }
            for link in links {
                match symlink("/bin/busybox", &link) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(step("symlink", &link)(e)),
                }
            }
        }

        let files: [(&str, &str); 6] = [
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/false\n",
            ),
            (
                "etc/group",
                "root:x:0:\ndaemon:x:1:\nbin:x:2:\nsys:x:3:\nadm:x:4:\ntty:x:5:\nwheel:x:10:\nnogroup:x:65534:\n",
            ),
            // Placeholders: the runtime bind-mounts generated ones over them.
            ("etc/hosts", ""),
            ("etc/resolv.conf", ""),
            ("etc/hostname", ""),
            ("etc/shadow", "root:*:::::::\nnobody:*:::::::\n"),
        ];
        for (file, content) in files {
            let path = rootfs.join(file);
            fs::write(&path, content).map_err(step("write", &path))?;
        }
        fs::set_permissions(rootfs.join("etc/shadow"), fs::Permissions::from_mode(0o600))
            .map_err(step("chmod", &rootfs.join("etc/shadow")))?;

        let image = Image {
            name: name.clone(),
            created: time::now_rfc3339(),
            cmd: vec!["sh".into()],
            entrypoint: Vec::new(),
            env: vec![format!("PATH={DEFAULT_PATH}")],
            workdir: None,
            source: format!("host:{}", host.display()),
        };
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

/// Whether the ELF file at `path` names a program interpreter (`PT_INTERP`): dynamically
/// linked. Static and static-pie binaries have none.
fn is_dynamic_elf(path: &Path) -> io::Result<bool> {
    const PT_INTERP: u32 = 3;
    let mut bytes = Vec::new();
    File::open(path)?.take(64 * 1024).read_to_end(&mut bytes)?;
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    // Only 64-bit little-endian ELF is inspected; anything else is assumed static.
    if bytes.get(..4) != Some(b"\x7fELF") || bytes.get(4) != Some(&2) || bytes.get(5) != Some(&1) {
        return Ok(false);
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return Ok(false);
    };
    let phoff = usize::try_from(phoff).unwrap_or(usize::MAX);
    Ok((0..usize::from(phnum)).any(|i| {
        phoff
            .checked_add(i * usize::from(phentsize))
            .and_then(u32_at)
            == Some(PT_INTERP)
    }))
}

/// The image config fields Berth uses (`config` of the OCI/docker image config).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    cmd: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    env: Option<Vec<String>>,
    working_dir: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ConfigFile {
    #[serde(default)]
    config: Option<RunConfig>,
}

/// `manifest.json` of `docker save`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    layers: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    platform: Option<OciPlatform>,
}

#[derive(Debug, Deserialize)]
struct OciPlatform {
    architecture: String,
    os: String,
}

/// An OCI image index or image manifest (told apart by which list is present).
#[derive(Debug, Deserialize)]
struct OciDocument {
    #[serde(default)]
    manifests: Option<Vec<OciDescriptor>>,
    #[serde(default)]
    config: Option<OciDescriptor>,
    #[serde(default)]
    layers: Option<Vec<OciDescriptor>>,
}

/// A multi-layer image archive found inside an unpacked tarball.
struct ImageArchive {
    kind: &'static str,
    layers: Vec<PathBuf>,
    config: Option<RunConfig>,
}

impl ImageArchive {
    /// `manifest.json` (docker save; preferred, also written by docker ≥ 25 alongside an OCI
    /// layout) or `index.json` + `oci-layout`; `None` for a plain rootfs.
    fn detect(dir: &Path, tarball: &Path) -> Result<Option<ImageArchive>, ImageError> {
        let format_err = |problem: String| ImageError::Format {
            archive: tarball.to_path_buf(),
            problem,
        };
        let manifest = dir.join("manifest.json");
        if manifest.is_file() {
            let manifests: Vec<DockerManifest> = read_json(&manifest)?;
            let [first, ..] = manifests.as_slice() else {
                return Err(format_err("manifest.json lists no image".into()));
            };
            let layers = first
                .layers
                .iter()
                .map(|l| inside(dir, l).ok_or_else(|| format_err(format!("bad layer path {l:?}"))))
                .collect::<Result<Vec<_>, _>>()?;
            let config_path = inside(dir, &first.config)
                .ok_or_else(|| format_err(format!("bad config path {:?}", first.config)))?;
            let config: ConfigFile = read_json(&config_path)?;
            return Ok(Some(ImageArchive {
                kind: "docker-archive",
                layers,
                config: config.config,
            }));
        }
        let index = dir.join("index.json");
        if index.is_file() && dir.join("oci-layout").is_file() {
            let mut doc: OciDocument = read_json(&index)?;
            // Follow indexes down to one image manifest (linux on this architecture first).
            for _ in 0..4 {
                let Some(manifests) = doc.manifests.take() else {
                    break;
                };
                let chosen = pick_manifest(&manifests)
                    .ok_or_else(|| format_err("index.json lists no manifest".into()))?;
                doc = read_json(
                    &blob(dir, &chosen.digest)
                        .ok_or_else(|| format_err(format!("bad digest {:?}", chosen.digest)))?,
                )?;
            }
            let (Some(config), Some(layers)) = (doc.config, doc.layers) else {
                return Err(format_err(
                    "no image manifest found in the OCI layout".into(),
                ));
            };
            let layers = layers
                .iter()
                .map(|l| {
                    if l.media_type.ends_with("+zstd") {
                        return Err(format_err(format!(
                            "layer {} is zstd-compressed: not supported yet",
                            l.digest
                        )));
                    }
                    blob(dir, &l.digest)
                        .ok_or_else(|| format_err(format!("bad digest {:?}", l.digest)))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let config_path = blob(dir, &config.digest)
                .ok_or_else(|| format_err(format!("bad digest {:?}", config.digest)))?;
            let config: ConfigFile = read_json(&config_path)?;
            return Ok(Some(ImageArchive {
                kind: "oci",
                layers,
                config: config.config,
            }));
        }
        Ok(None)
    }
}

fn pick_manifest(manifests: &[OciDescriptor]) -> Option<&OciDescriptor> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    manifests
        .iter()
        .find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == arch)
        })
        .or_else(|| manifests.first())
}

/// `blobs/<algorithm>/<hex>` for a digest such as `sha256:ab12…`; `None` if malformed.
fn blob(dir: &Path, digest: &str) -> Option<PathBuf> {
    let (algorithm, hex) = digest.split_once(':')?;
    let safe = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric());
    (safe(algorithm) && safe(hex)).then(|| dir.join("blobs").join(algorithm).join(hex))
}

/// `rel` under `dir` if it is a clean relative path (archive manifests are input too).
fn inside(dir: &Path, rel: &str) -> Option<PathBuf> {
    let path = Path::new(rel);
    path.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        .then(|| dir.join(path))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ImageError> {
    let bytes = fs::read(path).map_err(|source| ImageError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| ImageError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_manifest_paths_cannot_escape() {
        let dir = Path::new("/x");
        assert_eq!(
            blob(dir, "sha256:abc123").unwrap(),
            Path::new("/x/blobs/sha256/abc123")
        );
        assert!(blob(dir, "sha256:../../etc").is_none());
        assert!(blob(dir, "abc").is_none());
        assert!(inside(dir, "abc/layer.tar").is_some());
        assert!(inside(dir, "../layer.tar").is_none());
        assert!(inside(dir, "/etc/passwd").is_none());
    }

    #[test]
    fn static_busybox_is_static() {
        // The host tools this suite relies on: busybox-static, and a dynamic /bin/ls.
        assert!(!is_dynamic_elf(Path::new("/bin/busybox")).unwrap());
        assert!(is_dynamic_elf(Path::new("/bin/ls")).unwrap());
    }
}
