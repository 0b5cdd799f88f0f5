//! Images recorded by id and by reference: `<images>/records/<id hex>.json` is an
//! [`ImageRecord`] (the image's manifest, its layers with their chain ids, what `berth images`
//! shows), `<images>/references.json` maps each reference (`docker.io/library/busybox:latest`)
//! to an image id (its config's digest). Both are written whole through a temporary and a
//! rename, under the store's metadata lock (held by [`crate::store`]).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use berth_fs::WriteOptions;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::oci::{Descriptor, Platform};
use crate::reference::Reference;

/// Errors of the `images` module.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{step} {path}")]
    Io {
        step: &'static str,
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

fn io_err(step: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RecordError {
    let path = path.to_path_buf();
    move |source| RecordError::Io { step, path, source }
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerRef {
    /// The compressed blob, as the manifest lists it.
    pub blob: Descriptor,
    pub diff_id: Digest,
    pub chain_id: Digest,
}

/// What the store knows of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// The image id: its config's digest.
    pub id: Digest,
    /// The image manifest (for this platform).
    pub manifest: Descriptor,
    /// The index the manifest was chosen from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<Digest>,
    /// Bottom first.
    pub layers: Vec<LayerRef>,
    pub platform: Platform,
    /// When the image was built (its config's `created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Bytes of the layers' files.
    pub size: u64,
    /// Where it came from: `registry`, `host:/bin/busybox`, `rootfs:<tarball>`,
    /// `docker-archive:…`, `oci:…`.
    pub source: String,
    /// When it entered the store.
    pub stored: String,
    /// `name@digest` of what each pull of it resolved (docker's RepoDigests).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repo_digests: Vec<String>,
}

impl ImageRecord {
    /// Chain ids, bottom first.
    pub fn chain_ids(&self) -> impl Iterator<Item = &Digest> {
        self.layers.iter().map(|l| &l.chain_id)
    }

    /// Every blob the image needs kept: index, manifest, config, layers.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        self.index
            .iter()
            .chain([&self.manifest.digest, &self.id])
            .chain(self.layers.iter().map(|l| &l.blob.digest))
    }
}

/// The record files of a store.
#[derive(Debug, Clone)]
pub struct Records {
    dir: PathBuf,
    references: PathBuf,
}

impl Records {
    /// `images` is the store's directory.
    pub fn new(images: &Path) -> Records {
        Records {
            dir: images.join("records"),
            references: images.join("references.json"),
        }
    }

    pub fn create_dirs(&self) -> Result<(), RecordError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_err("create", &self.dir))
    }

    fn path(&self, id: &Digest) -> PathBuf {
        self.dir.join(format!("{}.json", id.hex()))
    }

    pub fn get(&self, id: &Digest) -> Result<Option<ImageRecord>, RecordError> {
        read_json(&self.path(id))
    }

    pub fn put(&self, record: &ImageRecord) -> Result<(), RecordError> {
        write_json(&self.path(&record.id), record)
    }

    pub fn remove(&self, id: &Digest) -> Result<(), RecordError> {
        let path = self.path(id);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Every image record.
    pub fn list(&self) -> Result<Vec<ImageRecord>, RecordError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(io_err("list", &self.dir)(source)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_err("list", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_suffix(".json") else {
                continue;
            };
            let Ok(id) = Digest::try_from(format!("sha256:{hex}")) else {
                continue; // temporaries
            };
            if let Some(record) = self.get(&id)? {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Every reference and the image it names.
    pub fn references(&self) -> Result<BTreeMap<Reference, Digest>, RecordError> {
        let raw: BTreeMap<String, Digest> = read_json(&self.references)?.unwrap_or_default();
        // A reference this version cannot read is dropped rather than failing every command.
        Ok(raw
            .into_iter()
            .filter_map(|(r, id)| Reference::parse(&r).ok().map(|r| (r, id)))
            .collect())
    }

    pub fn set_references(&self, refs: &BTreeMap<Reference, Digest>) -> Result<(), RecordError> {
        let raw: BTreeMap<String, &Digest> = refs.iter().map(|(r, d)| (r.to_string(), d)).collect();
        write_json(&self.references, &raw)
    }

    /// Removes what killed writers left.
    pub fn sweep(&self) {
        let _ = berth_fs::sweep_temporaries(&self.dir);
        if let Some(parent) = self.references.parent() {
            let _ = berth_fs::sweep_temporaries(parent);
        }
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, RecordError> {
    match berth_fs::read_regular(path, 64 << 20) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| RecordError::Parse {
                    path: path.to_path_buf(),
                    source,
                })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RecordError::Io {
            step: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RecordError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|source| RecordError::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    berth_fs::write_atomic(
        path,
        &bytes,
        WriteOptions {
            mode: 0o600,
            durable: true,
        },
    )
    .map_err(io_err("write", path))
}
