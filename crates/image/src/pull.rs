//! The pull: from a reference to an image whose blobs and layers are in the store, against
//! any [`Fetch`] source (a registry, an OCI layout, what `image import` made).
//!
//! 1. The manifest: an index is narrowed to the platform's manifest (the host's, or
//!    `--platform`; attestations skipped; on no match the error lists what exists). A
//!    reference with a digest checks the document against it.
//! 2. The config (from the store when it is there): verified, and its diffIDs must be as
//!    many as the manifest's layers. Chain ids follow.
//! 3. The layers whose chain is not in the store, in parallel ([`PullOptions::parallel`],
//!    3 by default), each on its own two threads: one downloads into the partial blob (see
//!    [`crate::blobs`]), the other follows the file as it grows, hashing the compressed bytes,
//!    decompressing and unpacking into a staging directory while hashing the tar (the
//!    diffID). Memory holds a few buffers per layer, never a layer. A dropped connection
//!    resumes where the file ends, with a `Range` request (`--retry` times, with a growing
//!    pause); a killed `berth` leaves the partial blob, which the next pull re-hashes as it
//!    unpacks it, and downloads only the rest of.
//! 4. Only a blob whose digest and size match, and a layer whose diffID matches, are renamed
//!    into the store; on a mismatch the partial blob and the staging directory are deleted and
//!    the error names the digest. The manifest and config blobs go in last, then the record
//!    (by [`crate::store`], under its lock).

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::Duration;

use crate::blobs::{self, BlobError, Blobs, Partial};
use crate::digest::Digest;
use crate::fetch::{Fetch, FetchError};
use crate::images::{ImageRecord, LayerRef};
use crate::layers::{LayerError, LayerRecord, Layers, StagedLayer};
use crate::oci::{
    self, Compression, Descriptor, DocError, ImageConfig, Manifest, ManifestDoc, Platform,
    SelectError, media,
};
use crate::progress::{Event, LayerStatus, Progress};
use crate::reference::Reference;
use crate::unpack::{self, HashingReader, UnpackError};

/// Largest manifest or index accepted (distribution's own limit is 4 MiB).
const MAX_MANIFEST: u64 = 4 << 20;
/// Largest image config accepted.
const MAX_CONFIG: u64 = 16 << 20;
/// Bytes per read of a download.
const CHUNK: usize = 256 * 1024;

/// Errors of the `pull` module.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("fetch the manifest of {reference}")]
    Manifest {
        reference: String,
        #[source]
        source: FetchError,
    },
    #[error("manifest {digest} is larger than {MAX_MANIFEST} bytes")]
    ManifestTooLarge { digest: String },
    #[error("read the manifest of {reference}")]
    Document {
        reference: String,
        #[source]
        source: DocError,
    },
    #[error("{reference}")]
    Platform {
        reference: String,
        #[source]
        source: SelectError,
    },
    #[error(
        "{reference} is for {actual}, not {wanted} (it has no index of platforms to choose from)"
    )]
    PlatformMismatch {
        reference: String,
        wanted: String,
        actual: String,
    },
    #[error("manifest {digest} is an index inside an index: not an image")]
    NestedIndex { digest: Digest },
    #[error("fetch blob {digest}")]
    Blob {
        digest: Digest,
        #[source]
        source: FetchError,
    },
    #[error(transparent)]
    Verify(#[from] BlobError),
    #[error("parse the image config {digest}")]
    Config {
        digest: Digest,
        #[source]
        source: serde_json::Error,
    },
    #[error("image config {config} lists {diff_ids} layers, its manifest {layers}")]
    LayerCount {
        config: Digest,
        diff_ids: usize,
        layers: usize,
    },
    #[error("layer {digest} has media type {media_type:?}, not a layer Berth can unpack")]
    LayerType { digest: Digest, media_type: String },
    #[error(
        "layer {digest} failed verification: its content has diffID {actual}, the image config says {expected}"
    )]
    DiffId {
        digest: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("unpack layer {digest}")]
    Unpack {
        digest: Digest,
        #[source]
        source: UnpackError,
    },
    #[error("store blob {digest}")]
    Store {
        digest: Digest,
        #[source]
        source: BlobError,
    },
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error("pull stopped: another layer failed")]
    Cancelled,
}

/// Why the layers still downloading stop: another layer failed. When it failed on its
/// content (a digest, a diffID, an archive that does not unpack) the pull fails for good and
/// their partial blobs go too; when it was interrupted they stay for a resume. (SeqCst: a
/// layer that sees `set` must also see `discard`.)
#[derive(Debug, Default)]
struct Cancel {
    set: AtomicBool,
    discard: AtomicBool,
}

impl Cancel {
    fn set(&self, cause: &PullError) {
        if matches!(
            cause,
            PullError::Verify(_) | PullError::DiffId { .. } | PullError::Unpack { .. }
        ) {
            self.discard.store(true, Ordering::SeqCst);
        }
        self.set.store(true, Ordering::SeqCst);
    }

    fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    fn discards(&self) -> bool {
        self.discard.load(Ordering::SeqCst)
    }
}

/// How to pull.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// `--platform` (default: the host's).
    pub platform: Option<Platform>,
    /// Layers downloaded at once.
    pub parallel: usize,
    /// `--retry`: retries of a failed download (per blob) or manifest fetch.
    pub retries: u32,
    /// Pause before the first retry; doubled for each next one.
    pub retry_delay: Duration,
    /// What the record says the image came from.
    pub source: String,
}

impl Default for PullOptions {
    fn default() -> PullOptions {
        PullOptions {
            platform: None,
            parallel: 3,
            retries: 3,
            retry_delay: Duration::from_secs(1),
            source: "registry".into(),
        }
    }
}

/// What a pull stored (the record is written by the store).
#[derive(Debug, Clone)]
pub struct Pulled {
    pub record: ImageRecord,
    /// What the reference resolved to: the index's digest, or the manifest's.
    pub digest: Digest,
    /// Layers downloaded (not already in the store), and their compressed bytes.
    pub fetched_layers: usize,
    pub fetched_bytes: u64,
    /// The documents to store with the record: (digest, bytes).
    pub(crate) documents: Vec<(Digest, Vec<u8>)>,
}

impl Pulled {
    pub(crate) fn documents(&self) -> &[(Digest, Vec<u8>)] {
        &self.documents
    }
}

/// The pieces of the store a pull writes, and where it reads from.
pub struct Pipeline<'a> {
    pub blobs: &'a Blobs,
    pub layers: &'a Layers,
    pub source: &'a dyn Fetch,
    pub progress: &'a dyn Progress,
    pub options: &'a PullOptions,
}

/// One layer to fetch.
#[derive(Debug, Clone)]
struct LayerJob {
    blob: Descriptor,
    compression: Compression,
    diff_id: Digest,
    chain_id: Digest,
    parent: Option<Digest>,
}

/// A manifest resolved for the platform, with its config.
struct Resolved {
    digest: Digest,
    index: Option<(Digest, Vec<u8>)>,
    manifest: Manifest,
    manifest_desc: Descriptor,
    manifest_bytes: Vec<u8>,
    config: ImageConfig,
    config_bytes: Vec<u8>,
}

impl Pipeline<'_> {
    /// Pulls `reference` into the blob and layer stores (see the module docs).
    pub fn pull(&self, reference: &Reference) -> Result<Pulled, PullError> {
        let resolved = self.resolve(reference)?;
        let config = &resolved.config;
        let manifest = &resolved.manifest;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(PullError::LayerCount {
                config: manifest.config.digest.clone(),
                diff_ids: config.rootfs.diff_ids.len(),
                layers: manifest.layers.len(),
            });
        }
        let chains = oci::chain_ids(&config.rootfs.diff_ids);
        let mut jobs = Vec::with_capacity(manifest.layers.len());
        for (i, blob) in manifest.layers.iter().enumerate() {
            let compression =
                Compression::of_layer(&blob.media_type).ok_or_else(|| PullError::LayerType {
                    digest: blob.digest.clone(),
                    media_type: blob.media_type.clone(),
                })?;
            jobs.push(LayerJob {
                blob: blob.clone(),
                compression,
                diff_id: config.rootfs.diff_ids[i].clone(),
                chain_id: chains[i].clone(),
                parent: i.checked_sub(1).map(|p| chains[p].clone()),
            });
        }
        self.progress.event(Event::Resolved {
            reference: reference.clone(),
            platform: platform_of(config),
            layers: jobs.len(),
        });
        let (fetched_layers, fetched_bytes) = self.fetch_layers(reference, &jobs)?;

        let mut size = 0;
        for job in &jobs {
            size += self.layers.size(&job.chain_id);
        }
        let mut documents = vec![
            (
                manifest.config.digest.clone(),
                resolved.config_bytes.clone(),
            ),
            (
                resolved.manifest_desc.digest.clone(),
                resolved.manifest_bytes,
            ),
        ];
        if let Some((digest, bytes)) = &resolved.index {
            documents.push((digest.clone(), bytes.clone()));
        }
        let record = ImageRecord {
            id: manifest.config.digest.clone(),
            manifest: resolved.manifest_desc,
            index: resolved.index.map(|(d, _)| d),
            layers: jobs
                .iter()
                .map(|j| LayerRef {
                    blob: j.blob.clone(),
                    diff_id: j.diff_id.clone(),
                    chain_id: j.chain_id.clone(),
                })
                .collect(),
            platform: platform_of(config),
            created: config.created.clone(),
            size,
            source: self.options.source.clone(),
            stored: crate::time::now_rfc3339(),
            repo_digests: vec![format!("{}@{}", reference.name(), resolved.digest)],
        };
        Ok(Pulled {
            record,
            digest: resolved.digest,
            fetched_layers,
            fetched_bytes,
            documents,
        })
    }

    /// Retries `f` on transient failures.
    fn with_retries<T>(
        &self,
        mut f: impl FnMut() -> Result<T, FetchError>,
    ) -> Result<T, FetchError> {
        let mut failures = 0;
        loop {
            match f() {
                Err(e) if e.transient && failures < self.options.retries => {
                    failures += 1;
                    thread::sleep(self.delay(failures));
                }
                other => return other,
            }
        }
    }

    fn delay(&self, failures: u32) -> Duration {
        self.options
            .retry_delay
            .saturating_mul(1 << failures.saturating_sub(1).min(6))
    }

    fn fetch_manifest(
        &self,
        reference: &Reference,
        expected: Option<&Descriptor>,
    ) -> Result<(Digest, Vec<u8>, ManifestDoc), PullError> {
        let fetched = self
            .with_retries(|| self.source.manifest(reference))
            .map_err(|source| PullError::Manifest {
                reference: reference.to_string(),
                source,
            })?;
        let wanted = expected.map(|d| &d.digest).or(reference.digest());
        if fetched.bytes.len() as u64 > MAX_MANIFEST {
            return Err(PullError::ManifestTooLarge {
                digest: wanted.map_or_else(|| reference.to_string(), ToString::to_string),
            });
        }
        let digest = match wanted {
            Some(d) => {
                blobs::verify(d, &fetched.bytes)?;
                d.clone()
            }
            None => Digest::sha256_of(&fetched.bytes),
        };
        if let Some(desc) = expected {
            if desc.size != fetched.bytes.len() as u64 {
                return Err(BlobError::Size {
                    digest: digest.clone(),
                    expected: desc.size,
                    actual: fetched.bytes.len() as u64,
                }
                .into());
            }
        }
        let doc = ManifestDoc::parse(&fetched.bytes, fetched.media_type.as_deref()).map_err(
            |source| PullError::Document {
                reference: reference.to_string(),
                source,
            },
        )?;
        Ok((digest, fetched.bytes, doc))
    }

    fn resolve(&self, reference: &Reference) -> Result<Resolved, PullError> {
        let platform = self.options.platform.clone().unwrap_or_else(Platform::host);
        let (digest, bytes, doc) = self.fetch_manifest(reference, None)?;
        let (index, manifest, manifest_desc, manifest_bytes) = match doc {
            ManifestDoc::Manifest(m) => {
                let desc = Descriptor {
                    media_type: m
                        .media_type
                        .clone()
                        .unwrap_or_else(|| media::OCI_MANIFEST.to_owned()),
                    digest: digest.clone(),
                    size: bytes.len() as u64,
                    platform: None,
                    annotations: Default::default(),
                    urls: Vec::new(),
                };
                (None, *m, desc, bytes)
            }
            ManifestDoc::Index(index) => {
                let chosen = index
                    .select(&platform)
                    .map_err(|source| PullError::Platform {
                        reference: reference.to_string(),
                        source,
                    })?
                    .clone();
                let child = reference.with_digest(chosen.digest.clone());
                let (_, child_bytes, child_doc) = self.fetch_manifest(&child, Some(&chosen))?;
                let ManifestDoc::Manifest(m) = child_doc else {
                    return Err(PullError::NestedIndex {
                        digest: chosen.digest,
                    });
                };
                (Some((digest.clone(), bytes)), *m, chosen, child_bytes)
            }
        };
        let (config, config_bytes) = self.config(reference, &manifest.config)?;
        if index.is_none() {
            if let Some(wanted) = &self.options.platform {
                let actual = platform_of(&config);
                if !actual.os.is_empty() && !wanted.matches(&actual) {
                    return Err(PullError::PlatformMismatch {
                        reference: reference.to_string(),
                        wanted: wanted.to_string(),
                        actual: actual.to_string(),
                    });
                }
            }
        }
        Ok(Resolved {
            digest,
            index,
            manifest,
            manifest_desc,
            manifest_bytes,
            config,
            config_bytes,
        })
    }

    /// The config blob: from the store if there, else fetched and verified.
    fn config(
        &self,
        reference: &Reference,
        desc: &Descriptor,
    ) -> Result<(ImageConfig, Vec<u8>), PullError> {
        let digest = &desc.digest;
        let bytes = if self.blobs.has(digest) {
            self.blobs.read(digest, MAX_CONFIG)?
        } else {
            let blob_err = |source| PullError::Blob {
                digest: digest.clone(),
                source,
            };
            let bytes = self
                .with_retries(|| {
                    let stream = self.source.blob(reference, digest, 0)?;
                    blobs::read_limited(stream.reader, digest, MAX_CONFIG)
                        .map_err(FetchError::transient)
                })
                .map_err(blob_err)?;
            if bytes.len() as u64 != desc.size {
                return Err(BlobError::Size {
                    digest: digest.clone(),
                    expected: desc.size,
                    actual: bytes.len() as u64,
                }
                .into());
            }
            blobs::verify(digest, &bytes)?;
            bytes
        };
        let config = serde_json::from_slice(&bytes).map_err(|source| PullError::Config {
            digest: digest.clone(),
            source,
        })?;
        Ok((config, bytes))
    }

    /// Fetches the layers that are not in the store, `parallel` at a time, in manifest
    /// order. Returns how many were fetched and their bytes.
    fn fetch_layers(
        &self,
        reference: &Reference,
        jobs: &[LayerJob],
    ) -> Result<(usize, u64), PullError> {
        let mut todo = Vec::new();
        for job in jobs {
            // A blob listed twice (an image that adds the same layer twice) is one download.
            if todo
                .iter()
                .any(|t: &&LayerJob| t.blob.digest == job.blob.digest && t.chain_id == job.chain_id)
            {
                continue;
            }
            let status = if self.layers.exists(&job.chain_id) {
                LayerStatus::AlreadyExists
            } else {
                todo.push(job);
                LayerStatus::Waiting
            };
            self.progress.event(Event::Layer {
                digest: job.blob.digest.clone(),
                status,
            });
        }
        let next = AtomicUsize::new(0);
        let cancel = Cancel::default();
        let results: Mutex<Vec<(usize, Result<u64, PullError>)>> = Mutex::new(Vec::new());
        let workers = self.options.parallel.clamp(1, 16).min(todo.len());
        thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| {
                    loop {
                        if cancel.is_set() {
                            break;
                        }
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = todo.get(i) else {
                            break;
                        };
                        let result = self.layer(reference, job, &cancel);
                        if let Err(e) = &result {
                            cancel.set(e);
                        }
                        if let Ok(mut r) = results.lock() {
                            r.push((i, result));
                        }
                    }
                });
            }
        });
        let mut results = results.into_inner().unwrap_or_default();
        results.sort_by_key(|(i, _)| *i);
        let (mut layers, mut bytes) = (0, 0);
        let mut first_err = None;
        for (_, result) in results {
            match result {
                Ok(fetched) => {
                    layers += usize::from(fetched > 0);
                    bytes += fetched;
                }
                // The layer that failed first in manifest order, not one stopped because of it.
                Err(PullError::Cancelled) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None if cancel.is_set() => Err(PullError::Cancelled),
            None => Ok((layers, bytes)),
        }
    }

    fn status(&self, job: &LayerJob, status: LayerStatus) {
        self.progress.event(Event::Layer {
            digest: job.blob.digest.clone(),
            status,
        });
    }

    /// One layer: from the store's blob if there, else downloaded and unpacked at once.
    /// Returns the bytes downloaded.
    fn layer(
        &self,
        reference: &Reference,
        job: &LayerJob,
        cancel: &Cancel,
    ) -> Result<u64, PullError> {
        if self.layers.exists(&job.chain_id) {
            self.status(job, LayerStatus::AlreadyExists);
            return Ok(0);
        }
        let staged = self.layers.stage(&job.chain_id)?;
        let digest = &job.blob.digest;
        let store_err = |source| PullError::Store {
            digest: digest.clone(),
            source,
        };
        let mut fetched = 0;
        let unpacked = if self.blobs.has(digest) {
            self.unpack_stored(job, &staged)?
        } else {
            // Blocks while another pull downloads this blob; then it may be stored.
            let partial = self.blobs.partial(digest).map_err(store_err)?;
            if self.blobs.has(digest) {
                partial.discard();
                self.unpack_stored(job, &staged)?
            } else {
                let before = partial.offset();
                let unpacked = self.download(reference, job, partial, &staged, cancel)?;
                fetched = job.blob.size.saturating_sub(before);
                unpacked
            }
        };
        self.status(job, LayerStatus::Verifying);
        if unpacked.diff_id != job.diff_id {
            return Err(PullError::DiffId {
                digest: digest.clone(),
                expected: job.diff_id.clone(),
                actual: unpacked.diff_id,
            });
        }
        self.layers.commit(
            staged,
            &LayerRecord {
                chain_id: job.chain_id.clone(),
                diff_id: job.diff_id.clone(),
                parent: job.parent.clone(),
                blob: digest.clone(),
                size: unpacked.size,
                created: crate::time::now_rfc3339(),
            },
        )?;
        self.status(job, LayerStatus::Complete);
        Ok(fetched)
    }

    /// Unpacks a stored blob (verified again as it is read: a store damaged on disk is
    /// caught here, not in a container).
    fn unpack_stored(
        &self,
        job: &LayerJob,
        staged: &StagedLayer,
    ) -> Result<unpack::Unpacked, PullError> {
        let file = self.blobs.open(&job.blob.digest)?;
        self.status(
            job,
            LayerStatus::Extracting {
                done: 0,
                total: job.blob.size,
            },
        );
        let feed = Feed::new(0);
        feed.finish(job.blob.size);
        let unpacked = self.extract(job, file, &feed, staged)?;
        Ok(unpacked)
    }

    /// Downloads into `partial` on one thread while this one unpacks what arrives; commits
    /// the blob once verified.
    fn download(
        &self,
        reference: &Reference,
        job: &LayerJob,
        mut partial: Partial,
        staged: &StagedLayer,
        cancel: &Cancel,
    ) -> Result<unpack::Unpacked, PullError> {
        let digest = &job.blob.digest;
        let store_err = |source| PullError::Store {
            digest: digest.clone(),
            source,
        };
        if partial.offset() > job.blob.size {
            partial.restart().map_err(store_err)?;
        }
        let reader = partial.reader().map_err(store_err)?;
        let feed = Feed::new(partial.offset());
        let (downloaded, extracted) = thread::scope(|s| {
            let downloader = s.spawn(|| {
                let result = self.fetch_blob(reference, job, &mut partial, &feed, cancel);
                match &result {
                    Ok(()) => feed.finish(partial.offset()),
                    Err(_) => feed.fail(),
                }
                result
            });
            let extracted = self.extract(job, reader, &feed, staged);
            if extracted.is_err() {
                // Stop the download: its bytes would go nowhere.
                feed.fail();
            }
            let downloaded = downloader.join().unwrap_or(Err(PullError::Cancelled));
            (downloaded, extracted)
        });
        match (downloaded, extracted) {
            (Ok(()), Ok(unpacked)) => {
                self.blobs.commit(partial).map_err(store_err)?;
                Ok(unpacked)
            }
            (Ok(()), Err(e)) => {
                // The whole blob came and is bad (digest, size or content): nothing of it
                // may be resumed or stored.
                partial.discard();
                Err(e)
            }
            (Err(PullError::Cancelled), Err(e)) if !cancel.is_set() => {
                // The unpacking found the bytes bad before they were all there, and stopped
                // the download: as above, what was written must not be resumed (a partial
                // blob damaged near its start would otherwise fail every later pull).
                partial.discard();
                Err(e)
            }
            (Err(PullError::Cancelled), _) if cancel.discards() => {
                // Stopped because another layer of this image is bad: the pull fails for
                // good, and leaves nothing half-stored.
                partial.discard();
                Err(PullError::Cancelled)
            }
            // Interrupted: the partial blob stays for the next pull to resume.
            (Err(e), _) => Err(e),
        }
    }

    /// The download loop: from the partial blob's end to the blob's size, resuming after
    /// each transient failure.
    fn fetch_blob(
        &self,
        reference: &Reference,
        job: &LayerJob,
        partial: &mut Partial,
        feed: &Feed,
        cancel: &Cancel,
    ) -> Result<(), PullError> {
        let digest = &job.blob.digest;
        let size = job.blob.size;
        let mut failures = 0;
        loop {
            if partial.offset() >= size {
                partial.record();
                return Ok(());
            }
            if cancel.is_set() || feed.failed() {
                return Err(PullError::Cancelled);
            }
            self.status(
                job,
                LayerStatus::Downloading {
                    done: partial.offset(),
                    total: size,
                },
            );
            let error = match self.source.blob(reference, digest, partial.offset()) {
                Ok(stream) => match self.copy(job, stream, partial, feed, cancel) {
                    Ok(()) if partial.offset() >= size => continue,
                    Ok(()) => FetchError::transient(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the blob ended after {} of {size} bytes", partial.offset()),
                    )),
                    Err(Copy::Source(e)) => FetchError::transient(e),
                    Err(Copy::Fatal(e)) => return Err(e),
                },
                Err(e) => e,
            };
            partial.record();
            if !error.transient || failures >= self.options.retries {
                return Err(PullError::Blob {
                    digest: digest.clone(),
                    source: error,
                });
            }
            failures += 1;
            let after = self.delay(failures);
            self.status(
                job,
                LayerStatus::Retrying {
                    attempt: failures,
                    of: self.options.retries,
                    after,
                    error: crate::error_chain(&error),
                },
            );
            // Sleep in small steps, to stop soon when another layer failed.
            let mut slept = Duration::ZERO;
            while slept < after && !cancel.is_set() && !feed.failed() {
                let step = Duration::from_millis(50).min(after - slept);
                thread::sleep(step);
                slept += step;
            }
        }
    }

    /// Copies one response into the partial blob.
    fn copy(
        &self,
        job: &LayerJob,
        stream: crate::fetch::BlobStream,
        partial: &mut Partial,
        feed: &Feed,
        cancel: &Cancel,
    ) -> Result<(), Copy> {
        let size = job.blob.size;
        let digest = &job.blob.digest;
        let mut reader = stream.reader;
        // A source that ignored the offset sends the blob from its start.
        if stream.start < partial.offset() {
            let skip = partial.offset() - stream.start;
            let skipped =
                io::copy(&mut (&mut reader).take(skip), &mut io::sink()).map_err(Copy::Source)?;
            if skipped < skip {
                return Ok(()); // ended early: the caller retries
            }
        }
        let mut buf = vec![0u8; CHUNK];
        let mut last_report = partial.offset();
        loop {
            if cancel.is_set() || feed.failed() {
                return Err(Copy::Fatal(PullError::Cancelled));
            }
            let n = match reader.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Copy::Source(e)),
            };
            if partial.offset() + n as u64 > size {
                return Err(Copy::Fatal(PullError::Verify(BlobError::Size {
                    digest: digest.clone(),
                    expected: size,
                    actual: partial.offset() + n as u64,
                })));
            }
            partial.append(&buf[..n]).map_err(|source| {
                Copy::Fatal(PullError::Store {
                    digest: digest.clone(),
                    source,
                })
            })?;
            feed.advance(partial.offset());
            if partial.offset() - last_report >= 1 << 20 || partial.offset() == size {
                last_report = partial.offset();
                self.status(
                    job,
                    LayerStatus::Downloading {
                        done: partial.offset(),
                        total: size,
                    },
                );
            }
        }
    }

    /// Reads the blob from `file` as `feed` says it grows: hashes it, decompresses it,
    /// unpacks it into `staged`; checks the blob's digest and size at its end.
    fn extract(
        &self,
        job: &LayerJob,
        file: File,
        feed: &Feed,
        staged: &StagedLayer,
    ) -> Result<unpack::Unpacked, PullError> {
        let digest = &job.blob.digest;
        let unpack_err = |source| PullError::Unpack {
            digest: digest.clone(),
            source,
        };
        let growing = Growing {
            file,
            pos: 0,
            feed,
            report: &|done| {
                self.status(
                    job,
                    LayerStatus::Extracting {
                        done,
                        total: job.blob.size,
                    },
                )
            },
            reported: 0,
        };
        let mut compressed = HashingReader::new(growing, digest.algorithm());
        let unpacked = {
            let tar = unpack::decompress(&mut compressed, job.compression)
                .map_err(|e| unpack_err(UnpackError::Read(e)))?;
            unpack::unpack_layer(tar, &staged.diff()).map_err(unpack_err)?
        };
        let (actual, size) = compressed
            .finish()
            .map_err(|e| unpack_err(UnpackError::Read(e)))?;
        if size != job.blob.size {
            return Err(BlobError::Size {
                digest: digest.clone(),
                expected: job.blob.size,
                actual: size,
            }
            .into());
        }
        if &actual != digest {
            return Err(BlobError::Digest {
                expected: digest.clone(),
                actual,
            }
            .into());
        }
        Ok(unpacked)
    }
}

enum Copy {
    /// The source failed mid-stream: worth a resume.
    Source(io::Error),
    Fatal(PullError),
}

fn platform_of(config: &ImageConfig) -> Platform {
    Platform {
        os: config.os.clone(),
        architecture: config.architecture.clone(),
        variant: config.variant.clone(),
        os_version: None,
    }
}

/// How far a blob file has been written, shared by its downloader and its reader.
struct Feed {
    state: Mutex<FeedState>,
    changed: Condvar,
}

#[derive(Clone, Copy)]
struct FeedState {
    written: u64,
    /// No more bytes will come: the download ended (`Some(true)`) or failed (`Some(false)`).
    end: Option<bool>,
}

impl Feed {
    fn new(written: u64) -> Feed {
        Feed {
            state: Mutex::new(FeedState { written, end: None }),
            changed: Condvar::new(),
        }
    }

    fn update(&self, f: impl FnOnce(&mut FeedState)) {
        if let Ok(mut s) = self.state.lock() {
            f(&mut s);
        }
        self.changed.notify_all();
    }

    fn advance(&self, written: u64) {
        self.update(|s| s.written = written);
    }

    fn finish(&self, written: u64) {
        self.update(|s| {
            s.written = written;
            s.end.get_or_insert(true);
        });
    }

    fn fail(&self) {
        self.update(|s| {
            s.end.get_or_insert(false);
        });
    }

    fn failed(&self) -> bool {
        self.state.lock().map_or(true, |s| s.end == Some(false))
    }

    /// Waits until more than `pos` bytes are written or the download ended.
    fn wait_past(&self, pos: u64) -> FeedState {
        let Ok(mut s) = self.state.lock() else {
            return FeedState {
                written: pos,
                end: Some(false),
            };
        };
        while s.written <= pos && s.end.is_none() {
            s = match self.changed.wait(s) {
                Ok(s) => s,
                Err(_) => {
                    return FeedState {
                        written: pos,
                        end: Some(false),
                    };
                }
            };
        }
        *s
    }
}

/// A reader of a file that another thread is appending to.
struct Growing<'a> {
    file: File,
    pos: u64,
    feed: &'a Feed,
    /// Called with the bytes read so far, once the download is over (the extraction's own
    /// progress, shown after `Downloading`).
    report: &'a dyn Fn(u64),
    reported: u64,
}

impl Read for Growing<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let state = self.feed.wait_past(self.pos);
        if state.written <= self.pos {
            return match state.end {
                Some(true) => Ok(0),
                _ => Err(io::Error::other("the download stopped")),
            };
        }
        let want = usize::try_from(state.written - self.pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the partial blob is shorter than written",
            ));
        }
        self.pos += n as u64;
        if state.end == Some(true) && self.pos - self.reported >= 1 << 20 {
            self.reported = self.pos;
            (self.report)(self.pos);
        }
        Ok(n)
    }
}
