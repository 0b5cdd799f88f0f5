//! The image store under `<root>/images`, content-addressed and layered:
//!
//! ```text
//! blobs/sha256/<hex>          compressed blobs: indexes, manifests, configs, layer tarballs
//! blobs/.partial/…            downloads in progress or interrupted (resumed by the next pull)
//! layers/<chain hex>/diff     each layer unpacked once, in overlay format, shared by images
//! records/<id hex>.json       each image: manifest, layers, platform, size, source
//! references.json             name:tag (or name@digest) → image id
//! .lock, .gc.lock             the metadata lock; the collection lock (shared by pulls)
//! .build.lock                 held while the offline busybox image is built
//! ```
//!
//! Every way in is a pull through [`crate::pull`] from a [`Fetch`] source: a registry, an
//! `image import` archive, or the offline busybox image (built on first use from the host's
//! static busybox, one layer). Nothing is written that was not verified, and a pull's blobs
//! and layers exist before its record, so a pull holds the collection lock shared and
//! `rmi`/`prune` (which delete what no record needs) hold it exclusively. A container's root
//! is an overlay of its image's layers ([`ImageStore::lower_dirs`], [`crate::overlay`]).
//!
//! The store knows nothing of containers: the runtime says which images they use when it
//! asks to remove or prune.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;

use crate::archive::{self, ArchiveError, Kind};
use crate::blobs::{BlobError, Blobs};
use crate::busybox::{BusyboxError, DEFAULT_IMAGE, HostBusybox};
use crate::digest::Digest;
use crate::fetch::{Fetch, LocalBlob, LocalSource, OciLayout};
use crate::gc::{self, Collected, DiskUsage, GcError};
use crate::images::{ImageRecord, RecordError, Records};
use crate::layers::{LayerError, Layers};
use crate::meta::{DEFAULT_PATH, Image};
use crate::oci::{ImageConfig, Platform, RootFs, RunConfig, media};
use crate::progress::{Event, Progress, Quiet};
use crate::pull::{Pipeline, PullError, PullOptions};
use crate::reference::Reference;
use crate::unpack::{self, UnpackError};

/// Largest image config read back from the store.
const MAX_CONFIG: u64 = 16 << 20;

/// Errors of the `store` module.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "image {query} not found (pull it, or import one with `berth image import TARBALL NAME`)"
    )]
    NotFound { query: String },
    #[error("image {reference} already exists")]
    Exists { reference: String },
    #[error("image {image} is in use by container {container}")]
    InUse { image: String, container: String },
    #[error(
        "image {image} has several references ({references}): remove them one by one, or force"
    )]
    Referenced { image: String, references: String },
    #[error("{query} matches {count} image ids: give more of the id")]
    Ambiguous { query: String, count: usize },
    #[error("lock the image store {path}")]
    Lock {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parse the config of image {id}")]
    Config {
        id: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error("import {archive}")]
    Import {
        archive: PathBuf,
        #[source]
        source: Box<PullError>,
    },
    #[error("import {archive}: unpack it")]
    Unpack {
        archive: PathBuf,
        #[source]
        source: UnpackError,
    },
    #[error("{step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Busybox(#[from] BusyboxError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Pull(Box<PullError>),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Gc(#[from] GcError),
}

impl From<PullError> for ImageError {
    fn from(e: PullError) -> ImageError {
        ImageError::Pull(Box::new(e))
    }
}

/// One line of `berth images`: one per reference, `<none>` for an image without any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageSummary {
    /// `busybox`, `127.0.0.1:5000/ns/app` (docker's short form), or `<none>`.
    pub repository: String,
    /// The tag, or `<none>`.
    pub tag: String,
    /// The full reference, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<Reference>,
    pub id: Digest,
    /// When the image was built.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// When it entered the store.
    pub stored: String,
    /// Bytes of its layers' files.
    pub size: u64,
    pub source: String,
    /// The digest this repository's registry knows the image by (`images --digests`), if
    /// it was pulled from or pushed to it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullResult {
    pub reference: Reference,
    pub id: Digest,
    /// What the reference resolved to (the index's digest, or the manifest's): what
    /// `pull -q` prints.
    pub digest: Digest,
    /// The reference already named this image.
    pub up_to_date: bool,
    pub fetched_layers: usize,
    pub fetched_bytes: u64,
}

/// What `rmi` or `image prune` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    pub untagged: Vec<Reference>,
    /// Image ids whose record is gone.
    pub deleted: Vec<Digest>,
    /// Layers and blobs no image needed any more, deleted.
    pub collected: Collected,
}

/// The image store of a root.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
    blobs: Blobs,
    layers: Layers,
    records: Records,
}

/// The lock files' guards.
type Guard = Flock<File>;

impl ImageStore {
    /// The store in `dir` (`<root>/images`, which the runtime creates with its state).
    pub fn new(dir: PathBuf) -> ImageStore {
        ImageStore {
            blobs: Blobs::new(dir.join("blobs")),
            layers: Layers::new(dir.join("layers")),
            records: Records::new(&dir),
            dir,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The blobs (for `save` and `push`: an image's record names its manifest, config and
    /// layer blobs).
    pub fn blobs(&self) -> &Blobs {
        &self.blobs
    }

    /// The unpacked layers.
    pub fn layers(&self) -> &Layers {
        &self.layers
    }

    /// Keeps what the store holds from being collected while the guard lives (`save` and
    /// `push` read blobs; `rmi` and `prune` wait for them).
    pub fn hold(&self) -> Result<Guard, ImageError> {
        self.gc_lock(false)
    }

    fn lock(&self, name: &str, arg: FlockArg) -> Result<Guard, ImageError> {
        let path = self.dir.join(name);
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
        Flock::lock(file, arg).map_err(|(_, errno)| ImageError::Lock {
            path,
            source: errno.into(),
        })
    }

    /// The metadata lock: records and references change under it.
    fn meta_lock(&self) -> Result<Guard, ImageError> {
        self.lock(".lock", FlockArg::LockExclusive)
    }

    /// Held shared by whatever adds blobs and layers before their record exists, and
    /// exclusively by what deletes those no record needs.
    fn gc_lock(&self, exclusive: bool) -> Result<Guard, ImageError> {
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        let guard = self.lock(".gc.lock", arg)?;
        self.create_dirs()?;
        Ok(guard)
    }

    fn create_dirs(&self) -> Result<(), ImageError> {
        self.blobs.create_dirs()?;
        self.layers.create_dirs()?;
        self.records.create_dirs()?;
        Ok(())
    }

    // ----- Reading

    /// The image `reference` names, if it is in the store.
    pub fn get(&self, reference: &Reference) -> Result<Option<Image>, ImageError> {
        let refs = self.records.references()?;
        match refs.get(reference) {
            Some(id) => self.image_by_id(id),
            None => Ok(None),
        }
    }

    /// The image with this id, if any.
    pub fn image_by_id(&self, id: &Digest) -> Result<Option<Image>, ImageError> {
        let Some(record) = self.records.get(id)? else {
            return Ok(None);
        };
        let refs = self.records.references()?;
        self.image(record, &refs).map(Some)
    }

    fn image(
        &self,
        record: ImageRecord,
        refs: &BTreeMap<Reference, Digest>,
    ) -> Result<Image, ImageError> {
        let bytes = self.blobs.read(&record.id, MAX_CONFIG)?;
        let config: ImageConfig =
            serde_json::from_slice(&bytes).map_err(|source| ImageError::Config {
                id: record.id.clone(),
                source,
            })?;
        Ok(Image {
            id: record.id.clone(),
            references: refs
                .iter()
                .filter(|(_, id)| **id == record.id)
                .map(|(r, _)| r.clone())
                .collect(),
            record,
            config,
        })
    }

    /// The image `query` names: a reference, an id (`sha256:…`), or a unique prefix of an
    /// id's hex digits, as docker reads them.
    pub fn lookup(&self, query: &str) -> Result<Option<Image>, ImageError> {
        let refs = self.records.references()?;
        if let Ok(reference) = Reference::parse(query) {
            if let Some(id) = refs.get(&reference) {
                let id = id.clone();
                return self.image_by_id(&id);
            }
        }
        if let Ok(id) = Digest::try_from(query) {
            return self.image_by_id(&id);
        }
        let hex = query.strip_prefix("sha256:").unwrap_or(query);
        if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hex = hex.to_ascii_lowercase();
            let matches: Vec<ImageRecord> = self
                .records
                .list()?
                .into_iter()
                .filter(|r| r.id.hex().starts_with(&hex))
                .collect();
            return match matches.len() {
                0 => Ok(None),
                1 => {
                    let record = matches.into_iter().next();
                    record.map(|r| self.image(r, &refs)).transpose()
                }
                count => Err(ImageError::Ambiguous {
                    query: query.to_owned(),
                    count,
                }),
            };
        }
        Ok(None)
    }

    /// The image `reference` names, without the network: from the store, or for the default
    /// busybox image built from the host's busybox on first use. `None` if neither.
    pub fn local(&self, reference: &Reference) -> Result<Option<Image>, ImageError> {
        if let Some(image) = self.get(reference)? {
            return Ok(Some(image));
        }
        if reference.to_string() != DEFAULT_IMAGE {
            return Ok(None);
        }
        // Concurrent first uses build it once: the others wait, then find it.
        let _build = self.lock(".build.lock", FlockArg::LockExclusive)?;
        if let Some(image) = self.get(reference)? {
            return Ok(Some(image));
        }
        self.build_busybox(reference).map(Some)
    }

    /// [`ImageStore::local`], or an error saying the image is not there.
    pub fn resolve(&self, reference: &Reference) -> Result<Image, ImageError> {
        self.local(reference)?.ok_or_else(|| ImageError::NotFound {
            query: reference.familiar(),
        })
    }

    /// The overlay's lower directories of image `id`, **top layer first** (overlayfs'
    /// order). Fails if a layer is missing.
    pub fn lower_dirs(&self, id: &Digest) -> Result<Vec<PathBuf>, ImageError> {
        let record = self.records.get(id)?.ok_or_else(|| ImageError::NotFound {
            query: id.to_string(),
        })?;
        let mut dirs = Vec::with_capacity(record.layers.len());
        for layer in record.layers.iter().rev() {
            if !self.layers.exists(&layer.chain_id) {
                return Err(LayerError::Missing {
                    chain_id: layer.chain_id.clone(),
                }
                .into());
            }
            dirs.push(self.layers.diff_dir(&layer.chain_id));
        }
        if dirs.is_empty() {
            // An image of no layer (`FROM scratch` and a config): an empty lower.
            let empty = self.dir.join("empty");
            fs::create_dir_all(&empty).map_err(|source| ImageError::Io {
                step: "create",
                path: empty.clone(),
                source,
            })?;
            dirs.push(empty);
        }
        Ok(dirs)
    }

    /// Every image, one line per reference (`berth images`), newest first.
    pub fn list(&self) -> Result<Vec<ImageSummary>, ImageError> {
        let refs = self.records.references()?;
        let mut out = Vec::new();
        for record in self.records.list()? {
            let mut named = false;
            for (reference, _) in refs.iter().filter(|(_, id)| **id == record.id) {
                named = true;
                let familiar = reference.familiar();
                let repository = familiar
                    .split('@')
                    .next()
                    .map(|n| match reference.tag() {
                        Some(t) => n.strip_suffix(&format!(":{t}")).unwrap_or(n),
                        None => n,
                    })
                    .unwrap_or_default()
                    .to_owned();
                out.push(summary(
                    &record,
                    repository,
                    reference.tag().unwrap_or("<none>").to_owned(),
                    Some(reference.clone()),
                ));
            }
            if !named {
                out.push(summary(&record, "<none>".into(), "<none>".into(), None));
            }
        }
        out.sort_by(|a, b| {
            b.stored
                .cmp(&a.stored)
                .then_with(|| a.repository.cmp(&b.repository))
                .then_with(|| a.tag.cmp(&b.tag))
        });
        Ok(out)
    }

    // ----- Writing

    /// Pulls `reference` from `source` (see [`crate::pull`]) and records it under
    /// `reference`.
    pub fn pull(
        &self,
        source: &dyn Fetch,
        reference: &Reference,
        options: &PullOptions,
        progress: &dyn Progress,
    ) -> Result<PullResult, ImageError> {
        self.pull_named(
            source,
            reference,
            std::slice::from_ref(reference),
            options,
            progress,
            true,
        )
    }

    /// Pulls `reference` from `source` and records it under each of `names` (none: an image
    /// known by its id only), replacing what they named before. A source that is not a
    /// registry (`load`) gives the image no repo digest.
    fn pull_named(
        &self,
        source: &dyn Fetch,
        reference: &Reference,
        names: &[Reference],
        options: &PullOptions,
        progress: &dyn Progress,
        registry: bool,
    ) -> Result<PullResult, ImageError> {
        let _gc = self.gc_lock(false)?;
        self.layers.sweep(false);
        let pulled = Pipeline {
            blobs: &self.blobs,
            layers: &self.layers,
            source,
            progress,
            options,
        }
        .pull(reference)?;
        for (digest, bytes) in pulled.documents() {
            self.blobs.put(digest, bytes)?;
        }
        let _meta = self.meta_lock()?;
        let mut refs = self.records.references()?;
        let mut record = pulled.record.clone();
        if !registry {
            record.repo_digests.clear();
        }
        if let Some(old) = self.records.get(&record.id)? {
            for d in old.repo_digests {
                if !record.repo_digests.contains(&d) {
                    record.repo_digests.push(d);
                }
            }
            record.stored = old.stored;
        }
        self.records.put(&record)?;
        let mut previous = None;
        for (i, name) in names.iter().enumerate() {
            let before = refs.insert(name.clone(), record.id.clone());
            if i == 0 {
                previous = before;
            }
        }
        self.records.set_references(&refs)?;
        let result = PullResult {
            reference: reference.clone(),
            id: record.id.clone(),
            digest: pulled.digest.clone(),
            up_to_date: previous.as_ref() == Some(&record.id) && pulled.fetched_layers == 0,
            fetched_layers: pulled.fetched_layers,
            fetched_bytes: pulled.fetched_bytes,
        };
        progress.event(Event::Done {
            reference: reference.clone(),
            digest: result.digest.clone(),
            id: result.id.clone(),
            up_to_date: result.up_to_date,
        });
        Ok(result)
    }

    /// Builds the busybox image from the host's busybox (one layer) under `reference`.
    fn build_busybox(&self, reference: &Reference) -> Result<Image, ImageError> {
        let host = HostBusybox::probe()?;
        let layer = host.layer()?;
        let diff_id = Digest::sha256_of(&layer);
        let host_platform = Platform::host();
        let config = ImageConfig {
            created: Some(crate::time::now_rfc3339()),
            architecture: host_platform.architecture,
            os: host_platform.os,
            variant: host_platform.variant,
            config: host.run_config(),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![diff_id.clone()],
            },
            ..ImageConfig::default()
        };
        let source = single_layer(
            format!("host:{}", host.path().display()),
            &config,
            layer,
            diff_id,
        )?;
        let options = PullOptions {
            source: format!("host:{}", host.path().display()),
            ..PullOptions::default()
        };
        self.pull(&source, reference, &options, &Quiet)?;
        self.get(reference)?.ok_or_else(|| ImageError::NotFound {
            query: reference.familiar(),
        })
    }

    /// Imports `tarball` as image `reference`: a rootfs tarball, a `docker save` archive or
    /// an OCI image layout. An existing reference is refused.
    pub fn import(&self, tarball: &Path, reference: &Reference) -> Result<Image, ImageError> {
        if self.get(reference)?.is_some() {
            return Err(ImageError::Exists {
                reference: reference.familiar(),
            });
        }
        let kind = archive::detect(tarball)?;
        let options = PullOptions {
            source: format!("{}:{}", kind.name(), tarball.display()),
            ..PullOptions::default()
        };
        let import_err = |source| ImageError::Import {
            archive: tarball.to_path_buf(),
            source,
        };
        match kind {
            Kind::Rootfs => {
                let run = RunConfig {
                    cmd: Some(vec!["sh".into()]),
                    env: Some(vec![format!("PATH={DEFAULT_PATH}")]),
                    ..RunConfig::default()
                };
                let source = archive::rootfs_source(tarball, run)?;
                self.import_from(&source, reference, &options)
                    .map_err(|e| lift(e, import_err))?;
            }
            Kind::DockerArchive | Kind::OciLayout => {
                let _gc = self.gc_lock(false)?;
                let staging = Staging::new(&self.dir)?;
                let file = File::open(tarball).map_err(|source| ImageError::Io {
                    step: "open",
                    path: tarball.to_path_buf(),
                    source,
                })?;
                let unpack_err = |source| ImageError::Unpack {
                    archive: tarball.to_path_buf(),
                    source,
                };
                let tar = unpack::decompress(file, crate::oci::Compression::None)
                    .map_err(|e| unpack_err(UnpackError::Read(e)))?;
                unpack::unpack_layer(tar, &staging.dir).map_err(unpack_err)?;
                if kind == Kind::DockerArchive {
                    let source = archive::docker_archive_source(&staging.dir, tarball)?;
                    self.import_from(&source, reference, &options)
                        .map_err(|e| lift(e, import_err))?;
                } else {
                    let source = OciLayout::new(&staging.dir);
                    self.import_from(&source, reference, &options)
                        .map_err(|e| lift(e, import_err))?;
                }
            }
        }
        self.get(reference)?.ok_or_else(|| ImageError::NotFound {
            query: reference.familiar(),
        })
    }

    /// `berth load`: every image of a `docker save` archive or an OCI layout archive, under
    /// the names the archive gives them (`RepoTags`; the `io.containerd.image.name` or a
    /// full `org.opencontainers.image.ref.name` annotation), replacing what those names
    /// named before, as docker does. An image without a name is known by its id.
    pub fn load(&self, tarball: &Path) -> Result<Vec<Loaded>, ImageError> {
        let kind = archive::detect(tarball)?;
        if kind == Kind::Rootfs {
            return Err(ArchiveError::Format {
                archive: tarball.to_path_buf(),
                problem: "neither a docker-archive (manifest.json) nor an OCI layout \
                          (index.json, oci-layout): import a rootfs with `berth import`"
                    .into(),
            }
            .into());
        }
        let _gc = self.gc_lock(false)?;
        let staging = Staging::new(&self.dir)?;
        let unpack_err = |source| ImageError::Unpack {
            archive: tarball.to_path_buf(),
            source,
        };
        let file = File::open(tarball).map_err(|source| ImageError::Io {
            step: "open",
            path: tarball.to_path_buf(),
            source,
        })?;
        let tar = unpack::decompress(file, crate::oci::Compression::None)
            .map_err(|e| unpack_err(UnpackError::Read(e)))?;
        unpack::unpack_layer(tar, &staging.dir).map_err(unpack_err)?;
        let options = PullOptions {
            source: format!("{}:{}", kind.name(), tarball.display()),
            ..PullOptions::default()
        };
        let import_err = |source| ImageError::Import {
            archive: tarball.to_path_buf(),
            source,
        };
        // What the sources are asked for when an image has no name of its own.
        let unnamed =
            Reference::parse("localhost/berth-load").map_err(|_| ArchiveError::Format {
                archive: tarball.to_path_buf(),
                problem: "internal reference".into(),
            })?;
        let mut out = Vec::new();
        if kind == Kind::DockerArchive {
            for (source, tags) in archive::docker_archive_sources(&staging.dir, tarball)? {
                let names = parse_names(tarball, &tags)?;
                let fetch = names.first().cloned().unwrap_or_else(|| unnamed.clone());
                let pulled = self
                    .pull_named(&source, &fetch, &names, &options, &Quiet, false)
                    .map_err(|e| lift(e, import_err))?;
                out.push(Loaded {
                    id: pulled.id,
                    references: names,
                });
            }
        } else {
            let layout = OciLayout::new(&staging.dir);
            for (digest, names) in archive::oci_layout_entries(&staging.dir, tarball)? {
                let names = parse_names(tarball, &names)?;
                let fetch = names.first().unwrap_or(&unnamed).with_digest(digest);
                let pulled = self
                    .pull_named(&layout, &fetch, &names, &options, &Quiet, false)
                    .map_err(|e| lift(e, import_err))?;
                out.push(Loaded {
                    id: pulled.id,
                    references: names,
                });
            }
        }
        Ok(out)
    }

    /// Adds `repo_digest` (`name@digest`, what a push made) to image `id`'s record.
    pub fn add_repo_digest(&self, id: &Digest, repo_digest: &str) -> Result<(), ImageError> {
        let _meta = self.meta_lock()?;
        if let Some(mut record) = self.records.get(id)? {
            // One per repository: the newest push wins.
            let name = repo_digest.split('@').next().unwrap_or_default();
            record
                .repo_digests
                .retain(|d| d.split('@').next() != Some(name));
            record.repo_digests.push(repo_digest.to_owned());
            self.records.put(&record)?;
        }
        Ok(())
    }

    fn import_from(
        &self,
        source: &dyn Fetch,
        reference: &Reference,
        options: &PullOptions,
    ) -> Result<PullResult, ImageError> {
        let result = self.pull(source, reference, options, &Quiet)?;
        Ok(result)
    }

    /// Gives image `query` the reference `target` as well (`berth tag`).
    pub fn tag(&self, query: &str, target: &Reference) -> Result<Image, ImageError> {
        let image = self.lookup(query)?.ok_or_else(|| ImageError::NotFound {
            query: query.to_owned(),
        })?;
        let _meta = self.meta_lock()?;
        let mut refs = self.records.references()?;
        refs.insert(target.clone(), image.id.clone());
        self.records.set_references(&refs)?;
        drop(_meta);
        self.image_by_id(&image.id)?
            .ok_or_else(|| ImageError::NotFound {
                query: query.to_owned(),
            })
    }

    /// `berth rmi QUERY`: a reference among several of its image is only untagged; the last
    /// reference, or an id, removes the image unless a container uses it (`in_use` gives
    /// that container's name); then the layers and blobs no image needs are deleted. With
    /// `force`, an id removes all its references.
    pub fn remove(
        &self,
        query: &str,
        force: bool,
        in_use: &dyn Fn(&Digest) -> Option<String>,
    ) -> Result<Removed, ImageError> {
        let _gc = self.gc_lock(true)?;
        let meta = self.meta_lock()?;
        let mut refs = self.records.references()?;
        let by_reference = Reference::parse(query)
            .ok()
            .filter(|r| refs.contains_key(r));
        let image = self.lookup(query)?.ok_or_else(|| ImageError::NotFound {
            query: query.to_owned(),
        })?;
        let id = image.id.clone();
        let mut out = Removed::default();
        let names: Vec<Reference> = image.references.clone();
        match by_reference {
            Some(reference) if names.len() > 1 => {
                refs.remove(&reference);
                self.records.set_references(&refs)?;
                out.untagged.push(reference);
                return Ok(out);
            }
            None if names.len() > 1 && !force => {
                return Err(ImageError::Referenced {
                    image: id.short().to_owned(),
                    references: names
                        .iter()
                        .map(Reference::familiar)
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            _ => {}
        }
        if let Some(container) = in_use(&id) {
            return Err(ImageError::InUse {
                image: query.to_owned(),
                container,
            });
        }
        for name in names {
            refs.remove(&name);
            out.untagged.push(name);
        }
        self.records.set_references(&refs)?;
        self.records.remove(&id)?;
        out.deleted.push(id);
        drop(meta);
        out.collected = gc::collect(&self.blobs, &self.layers, &self.records.list()?)?;
        Ok(out)
    }

    /// `berth image prune`: removes the images without a reference (with `all`, every image)
    /// that no container uses, the layers and blobs no image needs, and the interrupted
    /// downloads.
    pub fn prune(
        &self,
        all: bool,
        in_use: &dyn Fn(&Digest) -> bool,
    ) -> Result<Removed, ImageError> {
        let _gc = self.gc_lock(true)?;
        let meta = self.meta_lock()?;
        let mut refs = self.records.references()?;
        let mut out = Removed::default();
        for record in self.records.list()? {
            let names: Vec<Reference> = refs
                .iter()
                .filter(|(_, id)| **id == record.id)
                .map(|(r, _)| r.clone())
                .collect();
            if in_use(&record.id) || (!all && !names.is_empty()) {
                continue;
            }
            for name in names {
                refs.remove(&name);
                out.untagged.push(name);
            }
            self.records.remove(&record.id)?;
            out.deleted.push(record.id);
        }
        self.records.set_references(&refs)?;
        drop(meta);
        out.collected = gc::collect(&self.blobs, &self.layers, &self.records.list()?)?;
        out.collected.freed += self.blobs.remove_partials();
        Ok(out)
    }

    /// `berth system df`: what the store holds and what a prune would free.
    pub fn df(&self, in_use: &dyn Fn(&Digest) -> bool) -> Result<DiskUsage, ImageError> {
        Ok(gc::usage(
            &self.blobs,
            &self.layers,
            &self.records.list()?,
            in_use,
        )?)
    }
}

/// One image `load` stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub id: Digest,
    /// The names the archive gave it (none: known by its id).
    pub references: Vec<Reference>,
}

/// The names an archive gives an image, parsed (a bad one fails the load, naming it).
fn parse_names(tarball: &Path, names: &[String]) -> Result<Vec<Reference>, ImageError> {
    names
        .iter()
        .map(|n| {
            Reference::parse(n).map_err(|e| {
                ArchiveError::Format {
                    archive: tarball.to_path_buf(),
                    problem: format!("bad image name {n:?}: {e}"),
                }
                .into()
            })
        })
        .collect()
}

/// A pull error of an import reads as the import's.
fn lift(e: ImageError, import_err: impl FnOnce(Box<PullError>) -> ImageError) -> ImageError {
    match e {
        ImageError::Pull(p) => import_err(p),
        other => other,
    }
}

fn summary(
    record: &ImageRecord,
    repository: String,
    tag: String,
    reference: Option<Reference>,
) -> ImageSummary {
    ImageSummary {
        repository,
        tag,
        id: record.id.clone(),
        created: record.created.clone(),
        stored: record.stored.clone(),
        size: record.size,
        source: record.source.clone(),
        digest: reference.as_ref().and_then(|r| {
            let name = r.name();
            record.repo_digests.iter().find_map(|d| {
                let (n, digest) = d.split_once('@')?;
                (n == name).then(|| Digest::try_from(digest).ok()).flatten()
            })
        }),
        reference,
    }
}

/// A source of an image of one layer held in memory, with `config` (whose diffIDs must
/// already name it).
fn single_layer(
    name: String,
    config: &ImageConfig,
    layer: Vec<u8>,
    layer_digest: Digest,
) -> Result<LocalSource, ImageError> {
    let config_bytes = serde_json::to_vec(config).map_err(|source| ImageError::Config {
        id: layer_digest.clone(),
        source,
    })?;
    let config_digest = Digest::sha256_of(&config_bytes);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config_digest.to_string(),
                   "size": config_bytes.len()},
        "layers": [{"mediaType": media::OCI_LAYER, "digest": layer_digest.to_string(),
                    "size": layer.len()}],
    });
    let mut blobs = BTreeMap::new();
    blobs.insert(config_digest, LocalBlob::Bytes(config_bytes.into()));
    blobs.insert(layer_digest, LocalBlob::Bytes(layer.into()));
    Ok(LocalSource {
        name,
        manifest: manifest.to_string().into_bytes(),
        media_type: Some(media::OCI_MANIFEST.into()),
        blobs,
    })
}

/// An import's scratch directory, `<images>/.tmp-import-<pid>-<rand>`, removed on drop.
struct Staging {
    dir: PathBuf,
}

impl Staging {
    fn new(images: &Path) -> Result<Staging, ImageError> {
        // Those of killed imports first.
        if let Ok(entries) = fs::read_dir(images) {
            for entry in entries.filter_map(Result::ok) {
                let name = entry.file_name().to_string_lossy().into_owned();
                let pid = name
                    .strip_prefix(".tmp-import-")
                    .and_then(|r| r.split('-').next())
                    .and_then(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists()) {
                    let _ = berth_fs::mounts::delete_tree(&entry.path());
                }
            }
        }
        let suffix = crate::layers::random_suffix()?;
        let dir = images.join(format!(".tmp-import-{}-{suffix}", std::process::id()));
        fs::create_dir(&dir).map_err(|source| ImageError::Io {
            step: "create",
            path: dir.clone(),
            source,
        })?;
        Ok(Staging { dir })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = berth_fs::mounts::delete_tree(&self.dir) {
            eprintln!("berth: {}", crate::error_chain(&e));
        }
    }
}
