//! OCI image layouts on disk (`oci-layout`, `index.json`, `blobs/sha256/<hex>`), written the
//! way skopeo and buildah write them, so that `skopeo copy oci:DIR:TAG …` and Berth's own
//! layout reader both take them.
//!
//! Blobs are written through a [`BlobWriter`] that hashes while it writes and renames the
//! finished file to its digest, so a layer of any size never sits in memory. JSON documents
//! are serialized compactly with their keys in insertion order: the same input gives the same
//! bytes, hence the same digests, on every build.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tempfile::TempDir;

use crate::images::error::ImageError;

/// The media types the catalog writes.
pub mod media {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// What buildkit gives the in-toto statements of an attestation manifest.
    pub const IN_TOTO: &str = "application/vnd.in-toto+json";
}

/// The annotation naming an `index.json` entry (the tag of `oci:DIR:TAG`).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A content descriptor: what manifests and indexes list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    /// `sha256:<64 hex>`.
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    /// The hex part of the digest (the blob's file name).
    pub fn hex(&self) -> &str {
        self.digest.strip_prefix("sha256:").unwrap_or(&self.digest)
    }

    /// `{"mediaType", "digest", "size"}`.
    pub fn to_json(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// `sha256:<hex>` of a finished hasher.
pub(crate) fn digest_string(hasher: Sha256) -> String {
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in hasher.finalize() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_of(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    digest_string(h)
}

/// An OCI image layout directory being written. Blobs are shared by every image written into
/// it (a layer two images share is stored once), and each image or index is listed in
/// `index.json` under its tag.
#[derive(Debug)]
pub struct OciLayout {
    dir: PathBuf,
    refs: Vec<Value>,
    // Last: a temporary layout is removed after everything else let go of it.
    _temp: Option<TempDir>,
}

impl OciLayout {
    /// A layout in `dir` (created if missing). An existing `index.json` is kept and added to,
    /// so several catalog images can go into one directory.
    pub fn create(dir: &Path) -> Result<OciLayout, ImageError> {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(|source| ImageError::Create {
            path: blobs.clone(),
            source,
        })?;
        let marker = dir.join("oci-layout");
        fs::write(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(|source| {
            ImageError::Write {
                path: marker.clone(),
                source,
            }
        })?;
        let index_path = dir.join("index.json");
        let refs = match fs::read(&index_path) {
            Ok(bytes) => {
                let index: Value =
                    serde_json::from_slice(&bytes).map_err(|source| ImageError::Parse {
                        path: index_path.clone(),
                        source,
                    })?;
                index
                    .get("manifests")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(ImageError::Read {
                    path: index_path,
                    source,
                });
            }
        };
        let layout = OciLayout {
            dir: dir.to_path_buf(),
            refs,
            _temp: None,
        };
        layout.write_index()?;
        Ok(layout)
    }

    /// A layout in a new temporary directory (`/tmp/berth-images-…`), removed on drop.
    pub fn temp() -> Result<OciLayout, ImageError> {
        let temp = tempfile::Builder::new()
            .prefix("berth-images-")
            .tempdir()
            .map_err(|source| ImageError::Create {
                path: std::env::temp_dir(),
                source,
            })?;
        let mut layout = OciLayout::create(temp.path())?;
        layout._temp = Some(temp);
        Ok(layout)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `oci:DIR:TAG`, skopeo's name of an image of this layout.
    pub fn transport_ref(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.dir.display())
    }

    /// Where blob `sha256:<hex>` lives.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join("blobs/sha256").join(hex)
    }

    /// A writer for one new blob.
    pub fn blob_writer(&self) -> Result<BlobWriter, ImageError> {
        BlobWriter::new(&self.dir.join("blobs/sha256"))
    }

    /// Stores `bytes` as a blob of `media_type`.
    pub fn put_blob(&self, media_type: &str, bytes: &[u8]) -> Result<Descriptor, ImageError> {
        let mut w = self.blob_writer()?;
        w.write_all(bytes).map_err(|source| ImageError::Write {
            path: w.tmp.clone(),
            source,
        })?;
        let (digest, size) = w.finish()?;
        Ok(Descriptor {
            media_type: media_type.to_owned(),
            digest,
            size,
        })
    }

    /// Stores `bytes` whose digest the caller knows (a blob cached from another layout), unless
    /// the layout has it already.
    pub fn put_known(&self, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
        let path = self.blob_path(digest);
        if path.exists() {
            return Ok(());
        }
        let mut w = self.blob_writer()?;
        w.write_all(bytes).map_err(|source| ImageError::Write {
            path: w.tmp.clone(),
            source,
        })?;
        w.finish_as(digest)
    }

    /// Stores `doc` as compact JSON.
    pub fn put_json(&self, media_type: &str, doc: &Value) -> Result<Descriptor, ImageError> {
        // INVARIANT: a serde_json::Value always serializes.
        let bytes = serde_json::to_vec(doc).unwrap_or_default();
        self.put_blob(media_type, &bytes)
    }

    /// Lists `desc` in `index.json` under `tag`, replacing an entry of the same tag.
    pub fn tag(&mut self, tag: &str, desc: &Descriptor) -> Result<(), ImageError> {
        self.refs.retain(|r| r["annotations"][REF_NAME] != tag);
        let mut entry = desc.to_json();
        entry["annotations"] = json!({ REF_NAME: tag });
        self.refs.push(entry);
        self.write_index()
    }

    /// The descriptor listed under `tag`.
    pub fn tagged(&self, tag: &str) -> Result<Descriptor, ImageError> {
        let no_tag = || ImageError::NoTag {
            layout: self.dir.clone(),
            tag: tag.to_owned(),
        };
        let entry = self
            .refs
            .iter()
            .find(|r| r["annotations"][REF_NAME] == tag)
            .ok_or_else(no_tag)?;
        Ok(Descriptor {
            media_type: entry["mediaType"].as_str().unwrap_or_default().to_owned(),
            digest: entry["digest"].as_str().ok_or_else(no_tag)?.to_owned(),
            size: entry["size"].as_u64().ok_or_else(no_tag)?,
        })
    }

    fn write_index(&self) -> Result<(), ImageError> {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": self.refs,
        });
        let path = self.dir.join("index.json");
        // INVARIANT: a serde_json::Value always serializes.
        let bytes = serde_json::to_vec(&index).unwrap_or_default();
        fs::write(&path, bytes).map_err(|source| ImageError::Write { path, source })
    }
}

/// A blob being written: bytes go to a temporary file in `blobs/sha256` and through sha256;
/// [`finish`](Self::finish) renames the file to its digest. Dropped unfinished, the
/// temporary is removed.
pub struct BlobWriter {
    file: Option<BufWriter<File>>,
    tmp: PathBuf,
    blobs: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl BlobWriter {
    fn new(blobs: &Path) -> Result<BlobWriter, ImageError> {
        // Unique within the process (the counter) and across processes (the pid).
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = blobs.join(format!(".tmp-{}-{n}", std::process::id()));
        let file = File::create(&tmp).map_err(|source| ImageError::Create {
            path: tmp.clone(),
            source,
        })?;
        Ok(BlobWriter {
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            tmp,
            blobs: blobs.to_path_buf(),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Flushes, names the blob after its digest and returns `(digest, size)`.
    pub fn finish(mut self) -> Result<(String, u64), ImageError> {
        let digest = digest_string(std::mem::take(&mut self.hasher));
        let size = self.size;
        self.finish_as(&digest)?;
        Ok((digest, size))
    }

    /// Flushes and names the blob `digest` (known to the caller: no hashing).
    fn finish_as(mut self, digest: &str) -> Result<(), ImageError> {
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ImageError::Write { path, source }
        };
        if let Some(file) = self.file.take() {
            file.into_inner()
                .map_err(|e| e.into_error())
                .map_err(write_err(&self.tmp))?;
        }
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let path = self.blobs.join(hex);
        fs::rename(&self.tmp, &path).map_err(write_err(&path))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("blob already finished"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}
