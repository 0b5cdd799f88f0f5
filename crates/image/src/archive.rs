//! The image archives `berth image import` takes besides a plain rootfs tarball, read from
//! the unpacked tarball: a `docker save` archive (`manifest.json`) and an OCI image layout
//! (`index.json` + `oci-layout`, indexes followed down to this platform's manifest). What
//! they yield is the layers to apply, bottom first, and the run configuration. Every path
//! and digest they name is input: none may lead outside the archive.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

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

/// The image config fields Berth uses (`config` of the OCI/docker image config).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub env: Option<Vec<String>>,
    pub working_dir: Option<String>,
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
pub struct ImageArchive {
    /// `docker-archive` or `oci`.
    pub kind: &'static str,
    /// The layer tarballs, bottom first.
    pub layers: Vec<PathBuf>,
    pub config: Option<RunConfig>,
}

impl ImageArchive {
    /// `manifest.json` (docker save; preferred, also written by docker ≥ 25 alongside an OCI
    /// layout) or `index.json` + `oci-layout`; `None` for a plain rootfs.
    pub fn detect(dir: &Path, tarball: &Path) -> Result<Option<ImageArchive>, ArchiveError> {
        let format_err = |problem: String| ArchiveError::Format {
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

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, ArchiveError> {
    let bytes = fs::read(path).map_err(|source| ArchiveError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| ArchiveError::Parse {
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
}
