//! `berth save`: stored images into one tar archive, in the two formats `load` (ours,
//! docker's, podman's) reads:
//!
//! - `docker-archive` (`docker save`'s classic layout): `manifest.json` (per image its config
//!   file, `RepoTags` and layer files), `repositories`, `<config hex>.json` and
//!   `<diffID hex>/layer.tar`. Layers are written uncompressed, as docker does, so each
//!   file's digest is its diffID and the config (kept byte for byte) keeps the image id.
//! - `oci-archive` (an OCI image layout in a tar): `oci-layout`, `index.json` (one entry
//!   per name, the full reference in `org.opencontainers.image.ref.name` as podman writes
//!   it) and `blobs/sha256/<hex>`: the stored manifest, config and layer blobs as they are,
//!   so every digest stays the registry's.
//!
//! A blob shared by several images is written once. The archive is written beside its path
//! and renamed into place, so a failed save leaves no half archive under the name.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::{Value, json};

use crate::blobs::BlobError;
use crate::digest::{Algorithm, Digest};
use crate::meta::Image;
use crate::oci::{Compression, media};
use crate::reference::Reference;
use crate::store::{ImageError, ImageStore};
use crate::unpack::{self, HashingReader};

/// The largest config read whole.
const MAX_CONFIG: u64 = 16 << 20;

/// Errors of the `save` module.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("unknown archive format {0:?}: expected docker-archive or oci-archive")]
    Format(String),
    #[error("read blob {digest} of image {id} from the store")]
    Blob {
        id: Digest,
        digest: Digest,
        #[source]
        source: Box<BlobError>,
    },
    #[error("layer {digest} of image {id} decompresses to {actual}, not its diffID {expected}")]
    DiffId {
        id: Digest,
        digest: Digest,
        expected: Box<Digest>,
        actual: Box<Digest>,
    },
    #[error("layer {digest} of image {id} has media type {media_type:?}, which is no layer")]
    LayerType {
        id: Digest,
        digest: Digest,
        media_type: String,
    },
    #[error("{step} {path}")]
    Io {
        step: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("write the archive: {what}")]
    Write {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Store(#[from] ImageError),
}

/// podman's `--format` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SaveFormat {
    #[default]
    DockerArchive,
    OciArchive,
}

impl FromStr for SaveFormat {
    type Err = SaveError;

    fn from_str(s: &str) -> Result<SaveFormat, SaveError> {
        match s {
            "docker-archive" => Ok(SaveFormat::DockerArchive),
            "oci-archive" => Ok(SaveFormat::OciArchive),
            other => Err(SaveError::Format(other.to_owned())),
        }
    }
}

/// One image to save and the names it carries in the archive.
#[derive(Debug, Clone)]
pub struct SaveItem {
    pub image: Image,
    pub names: Vec<Reference>,
}

/// Writes `items` as a `format` archive at `path` (through a temporary beside it).
pub fn save_to_file(
    store: &ImageStore,
    items: &[SaveItem],
    format: SaveFormat,
    path: &Path,
) -> Result<(), SaveError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "archive".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let io_err = |step, path: &Path| {
        let path = path.to_path_buf();
        move |source| SaveError::Io { step, path, source }
    };
    let file = File::create(&tmp).map_err(io_err("create", &tmp))?;
    let written = save(store, items, format, io::BufWriter::new(file)).and_then(|w| {
        let file = w
            .into_inner()
            .map_err(|e| io_err("write", &tmp)(e.into_error()))?;
        file.sync_all().map_err(io_err("sync", &tmp))
    });
    match written.and_then(|()| fs::rename(&tmp, path).map_err(io_err("rename into", path))) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes `items` as a `format` archive to `out`; returns `out` once the archive is complete.
pub fn save<W: Write>(
    store: &ImageStore,
    items: &[SaveItem],
    format: SaveFormat,
    out: W,
) -> Result<W, SaveError> {
    // rmi and prune wait until every blob is read.
    let _held = store.hold()?;
    let mut tar = Writer {
        tar: tar::Builder::new(out),
        dirs: BTreeSet::new(),
        files: BTreeSet::new(),
    };
    match format {
        SaveFormat::DockerArchive => docker_archive(store, items, &mut tar)?,
        SaveFormat::OciArchive => oci_archive(store, items, &mut tar)?,
    }
    tar.tar.into_inner().map_err(|source| SaveError::Write {
        what: "the end of the archive".into(),
        source,
    })
}

/// A tar being written: directories before their files, each file once.
struct Writer<W: Write> {
    tar: tar::Builder<W>,
    dirs: BTreeSet<String>,
    files: BTreeSet<String>,
}

impl<W: Write> Writer<W> {
    fn write_err(name: &str) -> impl FnOnce(io::Error) -> SaveError + '_ {
        move |source| SaveError::Write {
            what: name.to_owned(),
            source,
        }
    }

    fn dir(&mut self, name: &str) -> Result<(), SaveError> {
        if !self.dirs.insert(name.to_owned()) {
            return Ok(());
        }
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        header.set_mtime(0);
        self.tar
            .append_data(&mut header, format!("{name}/"), io::empty())
            .map_err(Self::write_err(name))
    }

    /// Whether `name` is written already (then nothing more is).
    fn has(&self, name: &str) -> bool {
        self.files.contains(name)
    }

    fn file(&mut self, name: &str, size: u64, data: impl Read) -> Result<(), SaveError> {
        if let Some((parent, _)) = name.rsplit_once('/') {
            let mut path = String::new();
            for part in parent.split('/') {
                if !path.is_empty() {
                    path.push('/');
                }
                path.push_str(part);
                self.dir(&path.clone())?;
            }
        }
        self.files.insert(name.to_owned());
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(size);
        header.set_mtime(0);
        self.tar
            .append_data(&mut header, name, data)
            .map_err(Self::write_err(name))
    }

    fn bytes(&mut self, name: &str, bytes: &[u8]) -> Result<(), SaveError> {
        self.file(name, bytes.len() as u64, bytes)
    }
}

fn blob_err(image: &Image, digest: &Digest) -> impl FnOnce(BlobError) -> SaveError {
    let (id, digest) = (image.id.clone(), digest.clone());
    move |source| SaveError::Blob {
        id,
        digest,
        source: Box::new(source),
    }
}

/// docker's `RepoTags` form: `busybox:latest`, `127.0.0.1:5000/ns/app:1`.
fn repo_tag(reference: &Reference) -> Option<String> {
    reference.tag().map(|_| reference.familiar())
}

fn docker_archive<W: Write>(
    store: &ImageStore,
    items: &[SaveItem],
    tar: &mut Writer<W>,
) -> Result<(), SaveError> {
    let mut manifest = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for item in items {
        let image = &item.image;
        let config_name = format!("{}.json", image.id.hex());
        if !tar.has(&config_name) {
            let bytes = store
                .blobs()
                .read(&image.id, MAX_CONFIG)
                .map_err(blob_err(image, &image.id))?;
            tar.bytes(&config_name, &bytes)?;
        }
        let mut layers = Vec::new();
        for layer in &image.record.layers {
            let name = format!("{}/layer.tar", layer.diff_id.hex());
            if !tar.has(&name) {
                write_uncompressed_layer(store, image, layer, &name, tar)?;
            }
            layers.push(name);
        }
        let tags: Vec<String> = item.names.iter().filter_map(repo_tag).collect();
        if let Some(top) = image.record.layers.last() {
            for r in item.names.iter().filter(|r| r.tag().is_some()) {
                let familiar = r.familiar();
                let repo = familiar
                    .rsplit_once(':')
                    .map_or(familiar.as_str(), |(n, _)| n)
                    .to_owned();
                repositories.entry(repo).or_default().insert(
                    r.tag().unwrap_or_default().to_owned(),
                    top.diff_id.hex().to_owned(),
                );
            }
        }
        manifest.push(json!({
            "Config": config_name,
            "RepoTags": if tags.is_empty() { Value::Null } else { json!(tags) },
            "Layers": layers,
        }));
    }
    let manifest = serde_json::to_vec(&manifest).map_err(|e| SaveError::Write {
        what: "manifest.json".into(),
        source: e.into(),
    })?;
    tar.bytes("manifest.json", &manifest)?;
    if !repositories.is_empty() {
        let repositories = serde_json::to_vec(&repositories).map_err(|e| SaveError::Write {
            what: "repositories".into(),
            source: e.into(),
        })?;
        tar.bytes("repositories", &repositories)?;
    }
    Ok(())
}

/// A layer decompressed into the archive. Its size must be known before its bytes (a tar
/// header comes first), so a compressed layer is read twice: once to count and check its
/// diffID, once to write; nothing is held in memory or in a temporary file.
fn write_uncompressed_layer<W: Write>(
    store: &ImageStore,
    image: &Image,
    layer: &crate::images::LayerRef,
    name: &str,
    tar: &mut Writer<W>,
) -> Result<(), SaveError> {
    let digest = &layer.blob.digest;
    let hint =
        Compression::of_layer(&layer.blob.media_type).ok_or_else(|| SaveError::LayerType {
            id: image.id.clone(),
            digest: digest.clone(),
            media_type: layer.blob.media_type.clone(),
        })?;
    let path = store.blobs().path(digest);
    let read_err = |source| SaveError::Io {
        step: "read",
        path: path.clone(),
        source,
    };
    let open = || -> Result<Box<dyn Read>, SaveError> {
        let file = store
            .blobs()
            .open(digest)
            .map_err(blob_err(image, digest))?;
        unpack::decompress(file, hint).map_err(read_err)
    };
    let (actual, size) = HashingReader::new(open()?, Algorithm::Sha256)
        .finish()
        .map_err(read_err)?;
    if actual != layer.diff_id {
        return Err(SaveError::DiffId {
            id: image.id.clone(),
            digest: digest.clone(),
            expected: Box::new(layer.diff_id.clone()),
            actual: Box::new(actual),
        });
    }
    tar.file(name, size, open()?.take(size))
}

fn oci_archive<W: Write>(
    store: &ImageStore,
    items: &[SaveItem],
    tar: &mut Writer<W>,
) -> Result<(), SaveError> {
    tar.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut entries = Vec::new();
    for item in items {
        let image = &item.image;
        let record = &image.record;
        let blobs = [&record.manifest.digest, &image.id]
            .into_iter()
            .chain(record.layers.iter().map(|l| &l.blob.digest));
        for digest in blobs {
            let name = format!("blobs/{}/{}", digest.algorithm().as_str(), digest.hex());
            if tar.has(&name) {
                continue;
            }
            let missing = || {
                blob_err(image, digest)(BlobError::Missing {
                    digest: digest.clone(),
                })
            };
            let size = store.blobs().size(digest).ok_or_else(missing)?;
            let file = store
                .blobs()
                .open(digest)
                .map_err(blob_err(image, digest))?;
            tar.file(&name, size, file.take(size))?;
        }
        let mut entry = json!({
            "mediaType": if record.manifest.media_type.is_empty() {
                media::OCI_MANIFEST
            } else {
                record.manifest.media_type.as_str()
            },
            "digest": record.manifest.digest.to_string(),
            "size": record.manifest.size,
            "platform": {
                "os": record.platform.os,
                "architecture": record.platform.architecture,
            },
        });
        if let Some(variant) = &record.platform.variant {
            entry["platform"]["variant"] = json!(variant);
        }
        if item.names.is_empty() {
            entries.push(entry.clone());
        }
        for name in &item.names {
            let mut named = entry.clone();
            named["annotations"] = json!({
                "org.opencontainers.image.ref.name": name.to_string(),
                "io.containerd.image.name": name.to_string(),
            });
            entries.push(named);
        }
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": entries,
    });
    let index = serde_json::to_vec(&index).map_err(|e| SaveError::Write {
        what: "index.json".into(),
        source: e.into(),
    })?;
    tar.bytes("index.json", &index)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn formats_are_podmans_names() {
        assert_eq!(
            "docker-archive".parse::<SaveFormat>().unwrap(),
            SaveFormat::DockerArchive
        );
        assert_eq!(
            "oci-archive".parse::<SaveFormat>().unwrap(),
            SaveFormat::OciArchive
        );
        assert!("oci-dir".parse::<SaveFormat>().is_err());
    }

    #[test]
    fn repo_tags_are_familiar() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(repo_tag(&r).as_deref(), Some("busybox:latest"));
        let r = Reference::parse("127.0.0.1:5000/ns/app:1").unwrap();
        assert_eq!(repo_tag(&r).as_deref(), Some("127.0.0.1:5000/ns/app:1"));
    }
}
