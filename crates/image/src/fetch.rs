//! Where a pull gets an image's documents and blobs: the [`Fetch`] trait, which the registry
//! client ([`RegistryClient`]) implements, and the local sources that implement it too: an OCI image layout
//! directory ([`OciLayout`]) and documents and files Berth makes itself ([`LocalSource`], for
//! `image import` and the offline busybox image). Everything a source returns is input: the
//! pull verifies each byte against its digest.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::digest::Digest;
use crate::reference::Reference;
use crate::registry::{RegistryClient, RegistryError};

/// A failure of a source. `transient` ones (a dropped connection, a 5xx, a timeout) are
/// worth retrying; the rest (not found, unauthorized, malformed) are not.
#[derive(Debug)]
pub struct FetchError {
    pub transient: bool,
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl FetchError {
    pub fn transient(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> FetchError {
        FetchError {
            transient: true,
            source: source.into(),
        }
    }

    pub fn permanent(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> FetchError {
        FetchError {
            transient: false,
            source: source.into(),
        }
    }
}

// The source's own message and chain, once: this type only carries it.
impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.source.fmt(f)
    }
}

impl std::error::Error for FetchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.source()
    }
}

/// A manifest or index document as fetched.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    /// The `Content-Type` it came with, if any.
    pub media_type: Option<String>,
}

/// A blob's bytes from some offset on.
pub struct BlobStream {
    pub reader: Box<dyn Read + Send>,
    /// Where the bytes start: the offset asked for, or 0 if the source ignored it (a registry
    /// that answers a `Range` request with the whole blob).
    pub start: u64,
}

/// A source of images (see the module docs). Shared by the download threads of a pull.
pub trait Fetch: Sync {
    /// The manifest or index `reference` names: by its digest when it has one, else by tag.
    fn manifest(&self, reference: &Reference) -> Result<Fetched, FetchError>;

    /// Blob `digest` of `reference`'s repository, from byte `offset` on.
    fn blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobStream, FetchError>;
}

fn from_registry(e: RegistryError) -> FetchError {
    FetchError {
        transient: e.is_transient(),
        source: Box::new(e),
    }
}

/// A registry: manifests by tag or digest (the client checks a digest reference), blobs as
/// streams from an offset (`Range` requests; the client reopens a broken connection itself,
/// the pull resumes from its partial blob when that is not enough).
impl Fetch for RegistryClient {
    fn manifest(&self, reference: &Reference) -> Result<Fetched, FetchError> {
        let fetched = RegistryClient::manifest(self, reference).map_err(from_registry)?;
        Ok(Fetched {
            bytes: fetched.bytes,
            media_type: fetched.media_type,
        })
    }

    fn blob(
        &self,
        reference: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobStream, FetchError> {
        let stream =
            RegistryClient::blob(self, reference, digest, offset).map_err(from_registry)?;
        Ok(BlobStream {
            start: stream.start(),
            reader: Box::new(stream),
        })
    }
}

/// Errors of the local sources.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{what} {digest} is not in {source_name}")]
    NotFound {
        what: &'static str,
        digest: String,
        source_name: String,
    },
    #[error("{source_name} has no image tagged {tag:?} (it has: {available})")]
    NoTag {
        source_name: String,
        tag: String,
        available: String,
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
}

/// Opens `path` and seeks to `offset`.
fn open_at(path: &Path, offset: u64) -> Result<BlobStream, FetchError> {
    let read_err = |source| {
        FetchError::permanent(SourceError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut file = File::open(path).map_err(read_err)?;
    file.seek(SeekFrom::Start(offset)).map_err(read_err)?;
    Ok(BlobStream {
        reader: Box::new(file),
        start: offset,
    })
}

/// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/<alg>/<hex>`).
/// `index.json` entries are found by their `org.opencontainers.image.ref.name` annotation
/// (the tag, or the whole reference, as skopeo and buildah write them); a layout with one
/// entry gives it for any reference.
#[derive(Debug, Clone)]
pub struct OciLayout {
    dir: PathBuf,
}

#[derive(Deserialize)]
struct LayoutIndex {
    #[serde(default)]
    manifests: Vec<crate::oci::Descriptor>,
}

const REF_NAME: &str = "org.opencontainers.image.ref.name";

impl OciLayout {
    pub fn new(dir: impl Into<PathBuf>) -> OciLayout {
        OciLayout { dir: dir.into() }
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    fn name(&self) -> String {
        self.dir.display().to_string()
    }

    fn read_blob(&self, what: &'static str, digest: &Digest) -> Result<Vec<u8>, FetchError> {
        let path = self.blob_path(digest);
        std::fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                FetchError::permanent(SourceError::NotFound {
                    what,
                    digest: digest.to_string(),
                    source_name: self.name(),
                })
            } else {
                FetchError::permanent(SourceError::Read { path, source: e })
            }
        })
    }

    /// The entry of `index.json` for `reference`.
    fn entry(&self, reference: &Reference) -> Result<crate::oci::Descriptor, FetchError> {
        let path = self.dir.join("index.json");
        let bytes = std::fs::read(&path).map_err(|source| {
            FetchError::permanent(SourceError::Read {
                path: path.clone(),
                source,
            })
        })?;
        let index: LayoutIndex = serde_json::from_slice(&bytes)
            .map_err(|source| FetchError::permanent(SourceError::Parse { path, source }))?;
        let tag = reference.tag().unwrap_or(crate::reference::DEFAULT_TAG);
        let full = reference.to_string();
        let named = |d: &&crate::oci::Descriptor| {
            d.annotations
                .get(REF_NAME)
                .is_some_and(|n| n == tag || *n == full || n.ends_with(&format!(":{tag}")))
        };
        if let Some(d) = index.manifests.iter().find(named) {
            return Ok(d.clone());
        }
        match index.manifests.as_slice() {
            [only] => Ok(only.clone()),
            many => Err(FetchError::permanent(SourceError::NoTag {
                source_name: self.name(),
                tag: tag.to_owned(),
                available: many
                    .iter()
                    .filter_map(|d| d.annotations.get(REF_NAME).cloned())
                    .collect::<Vec<_>>()
                    .join(", "),
            })),
        }
    }
}

impl Fetch for OciLayout {
    fn manifest(&self, reference: &Reference) -> Result<Fetched, FetchError> {
        let (digest, media_type) = match reference.digest() {
            Some(d) => (d.clone(), None),
            None => {
                let entry = self.entry(reference)?;
                (entry.digest, Some(entry.media_type))
            }
        };
        Ok(Fetched {
            bytes: self.read_blob("manifest", &digest)?,
            media_type: media_type.filter(|m| !m.is_empty()),
        })
    }

    fn blob(
        &self,
        _reference: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobStream, FetchError> {
        let path = self.blob_path(digest);
        if !path.is_file() {
            return Err(FetchError::permanent(SourceError::NotFound {
                what: "blob",
                digest: digest.to_string(),
                source_name: self.name(),
            }));
        }
        open_at(&path, offset)
    }
}

/// Documents and files Berth made or found itself: one manifest, and blobs held in memory or
/// in files.
#[derive(Debug, Clone, Default)]
pub struct LocalSource {
    pub name: String,
    pub manifest: Vec<u8>,
    pub media_type: Option<String>,
    pub blobs: BTreeMap<Digest, LocalBlob>,
}

#[derive(Debug, Clone)]
pub enum LocalBlob {
    Bytes(Arc<[u8]>),
    File(PathBuf),
}

impl Fetch for LocalSource {
    fn manifest(&self, _reference: &Reference) -> Result<Fetched, FetchError> {
        Ok(Fetched {
            bytes: self.manifest.clone(),
            media_type: self.media_type.clone(),
        })
    }

    fn blob(
        &self,
        _reference: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<BlobStream, FetchError> {
        match self.blobs.get(digest) {
            Some(LocalBlob::Bytes(bytes)) => {
                let mut cursor = io::Cursor::new(Arc::clone(bytes));
                cursor.set_position(offset);
                Ok(BlobStream {
                    reader: Box::new(cursor),
                    start: offset,
                })
            }
            Some(LocalBlob::File(path)) => open_at(path, offset),
            None => Err(FetchError::permanent(SourceError::NotFound {
                what: "blob",
                digest: digest.to_string(),
                source_name: self.name.clone(),
            })),
        }
    }
}
