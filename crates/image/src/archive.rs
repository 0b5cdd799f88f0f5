//! What `berth image import` takes, turned into a [`Fetch`] source for the same pull as a
//! registry's: a plain rootfs tarball (one layer), a `docker save` archive (`manifest.json`)
//! or an OCI image layout (`index.json` + `oci-layout`), gzip-compressed or not. The archives
//! are unpacked into a staging directory first; every path and digest they name is input.
//!
//! A rootfs tarball becomes an image of one layer whose blob is the tarball itself, with a
//! config of docker's defaults (`sh`, `PATH`). A docker-archive config that lacks its diffIDs
//! (hand-made archives) gets them computed from its layers, which changes the image id; a
//! complete one is kept byte for byte, so the id is docker's.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::digest::{Algorithm, Digest};
use crate::fetch::{LocalBlob, LocalSource};
use crate::oci::{Compression, Platform, RunConfig, media};
use crate::unpack::{self, HashingReader};

/// Errors of the `archive` module.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("import {archive}: {problem}")]
    Format { archive: PathBuf, problem: String },
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

/// What kind of tarball an import got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rootfs,
    DockerArchive,
    OciLayout,
}

impl Kind {
    /// The prefix of the image's recorded source.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Rootfs => "rootfs",
            Kind::DockerArchive => "docker-archive",
            Kind::OciLayout => "oci",
        }
    }
}

fn read_err(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError {
    let path = path.to_path_buf();
    move |source| ArchiveError::Read { path, source }
}

fn open_decompressed(path: &Path) -> Result<Box<dyn Read>, ArchiveError> {
    let file = File::open(path).map_err(read_err(path))?;
    unpack::decompress(file, Compression::None).map_err(read_err(path))
}

/// Looks at the tarball's top-level names: `manifest.json` (docker save; preferred, also
/// written by docker ≥ 25 alongside an OCI layout), else `index.json` with `oci-layout`,
/// else a rootfs.
pub fn detect(tarball: &Path) -> Result<Kind, ArchiveError> {
    let mut tar = tar::Archive::new(open_decompressed(tarball)?);
    let (mut manifest, mut index, mut layout) = (false, false, false);
    for entry in tar.entries().map_err(read_err(tarball))? {
        let entry = entry.map_err(read_err(tarball))?;
        let path = entry.path().map_err(read_err(tarball))?;
        let name: Vec<Component<'_>> = path
            .components()
            .filter(|c| !matches!(c, Component::CurDir))
            .collect();
        match name.as_slice() {
            [Component::Normal(n)] if *n == "manifest.json" => manifest = true,
            [Component::Normal(n)] if *n == "index.json" => index = true,
            [Component::Normal(n)] if *n == "oci-layout" => layout = true,
            _ => {}
        }
    }
    Ok(if manifest {
        Kind::DockerArchive
    } else if index && layout {
        Kind::OciLayout
    } else {
        Kind::Rootfs
    })
}

/// The sha256 digest and size of a file, and of its decompressed content.
fn digests(path: &Path) -> Result<(Digest, u64, Digest, Compression), ArchiveError> {
    let mut head = [0u8; 512];
    let n = read_head(path, &mut head)?;
    let compression = unpack::sniff(&head[..n], Compression::None);
    let file = File::open(path).map_err(read_err(path))?;
    let mut compressed = HashingReader::new(file, Algorithm::Sha256);
    let diff_id = {
        let tar = unpack::decompress(&mut compressed, Compression::None).map_err(read_err(path))?;
        let (diff_id, _) = HashingReader::new(tar, Algorithm::Sha256)
            .finish()
            .map_err(read_err(path))?;
        diff_id
    };
    let (digest, size) = compressed.finish().map_err(read_err(path))?;
    Ok((digest, size, diff_id, compression))
}

/// The first bytes of a file (up to `buf`'s length).
fn read_head(path: &Path, buf: &mut [u8]) -> Result<usize, ArchiveError> {
    let mut file = File::open(path).map_err(read_err(path))?;
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]).map_err(read_err(path))? {
            0 => break,
            m => n += m,
        }
    }
    Ok(n)
}

fn layer_media_type(compression: Compression) -> &'static str {
    match compression {
        Compression::None => media::OCI_LAYER,
        Compression::Gzip => media::OCI_LAYER_GZIP,
        Compression::Zstd => media::OCI_LAYER_ZSTD,
    }
}

fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Value {
    serde_json::json!({"mediaType": media_type, "digest": digest.to_string(), "size": size})
}

/// A source of one image whose layers are `files` and whose config is `config` (completed
/// with the diffIDs and platform it lacks).
fn source_of(
    name: String,
    mut config: Value,
    config_bytes: Option<Vec<u8>>,
    files: &[PathBuf],
) -> Result<LocalSource, ArchiveError> {
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    let mut blobs = std::collections::BTreeMap::new();
    for file in files {
        let (digest, size, diff_id, compression) = digests(file)?;
        layers.push(descriptor(layer_media_type(compression), &digest, size));
        diff_ids.push(Value::String(diff_id.to_string()));
        blobs.insert(digest, LocalBlob::File(file.clone()));
    }
    let complete = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .is_some_and(|ids| ids.len() == files.len());
    let config_bytes = match (complete, config_bytes) {
        (true, Some(bytes)) => bytes,
        _ => {
            if let Some(obj) = config.as_object_mut() {
                let host = Platform::host();
                obj.entry("os").or_insert_with(|| host.os.clone().into());
                obj.entry("architecture")
                    .or_insert_with(|| host.architecture.clone().into());
                obj.insert(
                    "rootfs".into(),
                    serde_json::json!({"type": "layers", "diff_ids": diff_ids}),
                );
            }
            serde_json::to_vec(&config).map_err(|source| ArchiveError::Parse {
                path: PathBuf::from(&name),
                source,
            })?
        }
    };
    let config_digest = Digest::sha256_of(&config_bytes);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": descriptor(media::OCI_CONFIG, &config_digest, config_bytes.len() as u64),
        "layers": layers,
    });
    blobs.insert(config_digest, LocalBlob::Bytes(Arc::from(config_bytes)));
    Ok(LocalSource {
        name,
        manifest: manifest.to_string().into_bytes(),
        media_type: Some(media::OCI_MANIFEST.into()),
        blobs,
    })
}

/// An image of one layer made of `tarball` (a plain rootfs), with docker's defaults.
pub fn rootfs_source(tarball: &Path, run: RunConfig) -> Result<LocalSource, ArchiveError> {
    let config = serde_json::json!({
        "created": crate::time::now_rfc3339(),
        "config": run,
    });
    source_of(
        tarball.display().to_string(),
        config,
        None,
        &[tarball.to_path_buf()],
    )
}

/// `manifest.json` of `docker save`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The first image of a `docker save` archive unpacked in `dir`.
pub fn docker_archive_source(dir: &Path, tarball: &Path) -> Result<LocalSource, ArchiveError> {
    docker_archive_sources(dir, tarball)?
        .into_iter()
        .next()
        .map(|(source, _)| source)
        .ok_or_else(|| ArchiveError::Format {
            archive: tarball.to_path_buf(),
            problem: "manifest.json lists no image".into(),
        })
}

/// Every image of a `docker save` archive unpacked in `dir`, with its `RepoTags` (`load`).
pub fn docker_archive_sources(
    dir: &Path,
    tarball: &Path,
) -> Result<Vec<(LocalSource, Vec<String>)>, ArchiveError> {
    let manifest_path = dir.join("manifest.json");
    let manifests: Vec<DockerManifest> = read_json(&manifest_path)?;
    if manifests.is_empty() {
        return Err(ArchiveError::Format {
            archive: tarball.to_path_buf(),
            problem: "manifest.json lists no image".into(),
        });
    }
    manifests
        .iter()
        .map(|m| {
            let source = docker_image_source(dir, tarball, m)?;
            Ok((source, m.repo_tags.clone().unwrap_or_default()))
        })
        .collect()
}

/// One entry of a `docker save` archive's `manifest.json`.
fn docker_image_source(
    dir: &Path,
    tarball: &Path,
    first: &DockerManifest,
) -> Result<LocalSource, ArchiveError> {
    let format_err = |problem: String| ArchiveError::Format {
        archive: tarball.to_path_buf(),
        problem,
    };
    let files = first
        .layers
        .iter()
        .map(|l| inside(dir, l).ok_or_else(|| format_err(format!("bad layer path {l:?}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let config_path = inside(dir, &first.config)
        .ok_or_else(|| format_err(format!("bad config path {:?}", first.config)))?;
    let bytes = std::fs::read(&config_path).map_err(read_err(&config_path))?;
    let config: Value = serde_json::from_slice(&bytes).map_err(|source| ArchiveError::Parse {
        path: config_path.clone(),
        source,
    })?;
    source_of(tarball.display().to_string(), config, Some(bytes), &files)
}

/// The annotation containerd and docker ≥ 25 give an OCI layout's entries: the full name.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation: a full reference (podman, Berth) or only a tag (skopeo).
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The entries of the OCI layout unpacked in `dir`: each manifest (or index) digest once,
/// with the names its entries give it, in the order `index.json` lists them. A tag alone
/// (`latest`) names nothing: it has no repository.
pub fn oci_layout_entries(
    dir: &Path,
    tarball: &Path,
) -> Result<Vec<(Digest, Vec<String>)>, ArchiveError> {
    #[derive(Deserialize)]
    struct LayoutIndex {
        #[serde(default)]
        manifests: Vec<crate::oci::Descriptor>,
    }
    let index: LayoutIndex = read_json(&dir.join("index.json"))?;
    if index.manifests.is_empty() {
        return Err(ArchiveError::Format {
            archive: tarball.to_path_buf(),
            problem: "index.json lists no image".into(),
        });
    }
    let mut out: Vec<(Digest, Vec<String>)> = Vec::new();
    for entry in index.manifests {
        let name = entry
            .annotations
            .get(CONTAINERD_NAME)
            .or_else(|| entry.annotations.get(REF_NAME))
            .filter(|n| n.contains('/') || n.contains(':'))
            .cloned();
        match out.iter_mut().find(|(d, _)| *d == entry.digest) {
            Some((_, names)) => names.extend(name.filter(|n| !names.contains(n))),
            None => out.push((entry.digest, name.into_iter().collect())),
        }
    }
    Ok(out)
}

/// `rel` under `dir` if it is a clean relative path (archive manifests are input too).
fn inside(dir: &Path, rel: &str) -> Option<PathBuf> {
    let path = Path::new(rel);
    path.components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        .then(|| dir.join(path))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ArchiveError> {
    let bytes = std::fs::read(path).map_err(read_err(path))?;
    serde_json::from_slice(&bytes).map_err(|source| ArchiveError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn manifest_paths_cannot_escape() {
        let dir = Path::new("/x");
        assert!(inside(dir, "abc/layer.tar").is_some());
        assert!(inside(dir, "../layer.tar").is_none());
        assert!(inside(dir, "/etc/passwd").is_none());
    }
}
