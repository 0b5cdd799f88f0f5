//! Tarballs of catalog images, as `berth image import`/`load` reads them:
//!
//! - [`write_oci_archive`]: an OCI layout of one tag (`oci-layout`, an `index.json` listing
//!   only that tag, and the blobs it reaches), what skopeo's `oci-archive:` and
//!   `docker buildx --output type=oci` write;
//! - [`write_docker_archive`]: `docker save`'s format (`manifest.json`, the config as
//!   `<hex>.json`, each layer uncompressed as `<diffID hex>/layer.tar`).
//!
//! Entries are deterministic (sorted, mtime 0, root-owned), and blobs are streamed from disk.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

use serde_json::{Value, json};

use crate::images::catalog::Image;
use crate::images::error::ImageError;
use crate::images::layers::Compression;
use crate::images::layout::REF_NAME;

fn header(size: u64, mode: u32) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mode(mode);
    h.set_size(size);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn dir_header() -> tar::Header {
    let mut h = header(0, 0o755);
    h.set_entry_type(tar::EntryType::Directory);
    h
}

struct Out {
    tar: tar::Builder<BufWriter<File>>,
    path: std::path::PathBuf,
}

impl Out {
    fn create(path: &Path) -> Result<Out, ImageError> {
        let file = File::create(path).map_err(|source| ImageError::Create {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Out {
            tar: tar::Builder::new(BufWriter::new(file)),
            path: path.to_path_buf(),
        })
    }

    fn dir(&mut self, name: &str) -> Result<(), ImageError> {
        self.tar
            .append_data(&mut dir_header(), format!("{name}/"), io::empty())
            .map_err(|source| tar_err(&self.path, name, source))
    }

    fn bytes(&mut self, name: &str, data: &[u8]) -> Result<(), ImageError> {
        self.tar
            .append_data(&mut header(data.len() as u64, 0o644), name, data)
            .map_err(|source| tar_err(&self.path, name, source))
    }

    fn reader(&mut self, name: &str, size: u64, data: impl Read) -> Result<(), ImageError> {
        self.tar
            .append_data(&mut header(size, 0o644), name, data)
            .map_err(|source| tar_err(&self.path, name, source))
    }

    fn finish(self) -> Result<(), ImageError> {
        let mut w = self
            .tar
            .into_inner()
            .map_err(|source| tar_err(&self.path, "the end", source))?;
        w.flush().map_err(|source| ImageError::Write {
            path: self.path,
            source,
        })
    }
}

fn tar_err(archive: &Path, entry: &str, source: io::Error) -> ImageError {
    ImageError::Tar {
        entry: format!("{entry} of {}", archive.display()),
        source,
    }
}

fn read_json(path: &Path) -> Result<Value, ImageError> {
    let bytes = fs::read(path).map_err(|source| ImageError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| ImageError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

fn blob_path(layout: &Path, digest: &str) -> std::path::PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap_or(digest))
}

/// Every blob `digest` reaches: itself and, for a manifest, its config and layers; for an
/// index, its manifests and theirs.
fn closure(layout: &Path, digest: &str, out: &mut BTreeSet<String>) -> Result<(), ImageError> {
    if !out.insert(digest.to_owned()) {
        return Ok(());
    }
    let doc = read_json(&blob_path(layout, digest))?;
    if let Some(list) = doc.get("manifests").and_then(Value::as_array) {
        for d in list {
            if let Some(d) = d.get("digest").and_then(Value::as_str) {
                closure(layout, d, out)?;
            }
        }
    } else {
        let config = doc.get("config").into_iter();
        let layers = doc
            .get("layers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for d in config.chain(layers) {
            if let Some(d) = d.get("digest").and_then(Value::as_str) {
                out.insert(d.to_owned());
            }
        }
    }
    Ok(())
}

/// Writes the image or index tagged `tag` in the layout at `layout` as an OCI archive at
/// `out`: `index.json` lists only that tag, and only the blobs it reaches go in.
pub fn write_oci_archive(layout: &Path, tag: &str, out: &Path) -> Result<(), ImageError> {
    let index = read_json(&layout.join("index.json"))?;
    let entry = index
        .get("manifests")
        .and_then(Value::as_array)
        .and_then(|m| m.iter().find(|e| e["annotations"][REF_NAME] == tag))
        .ok_or_else(|| ImageError::NoTag {
            layout: layout.to_path_buf(),
            tag: tag.to_owned(),
        })?;
    let digest = entry["digest"].as_str().ok_or_else(|| ImageError::NoTag {
        layout: layout.to_path_buf(),
        tag: tag.to_owned(),
    })?;
    let mut blobs = BTreeSet::new();
    closure(layout, digest, &mut blobs)?;

    let mut tar = Out::create(out)?;
    tar.bytes("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let one = json!({"schemaVersion": 2, "manifests": [entry]});
    // INVARIANT: a serde_json::Value always serializes.
    tar.bytes("index.json", &serde_json::to_vec(&one).unwrap_or_default())?;
    tar.dir("blobs")?;
    tar.dir("blobs/sha256")?;
    for digest in &blobs {
        let path = blob_path(layout, digest);
        let file = File::open(&path).map_err(|source| ImageError::Read {
            path: path.clone(),
            source,
        })?;
        let size = file
            .metadata()
            .map_err(|source| ImageError::Read {
                path: path.clone(),
                source,
            })?
            .len();
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        tar.reader(&format!("blobs/sha256/{hex}"), size, file)?;
    }
    tar.finish()
}

/// Writes `image` as a `docker save` archive at `out`, tagged `repo_tag` (e.g.
/// `berth.test/app:1`) in `manifest.json`. Layers are decompressed into `<diffID>/layer.tar`
/// as docker writes them; the config goes in byte for byte, so the image id is its digest.
pub fn write_docker_archive(image: &Image, repo_tag: &str, out: &Path) -> Result<(), ImageError> {
    let config_hex = image.config.hex().to_owned();
    let config_path = blob_path(&image.layout, &image.config.digest);
    let config = fs::read(&config_path).map_err(|source| ImageError::Read {
        path: config_path.clone(),
        source,
    })?;
    let layer_names: Vec<String> = image
        .layers
        .iter()
        .map(|l| {
            let hex = l.diff_id.strip_prefix("sha256:").unwrap_or(&l.diff_id);
            format!("{hex}/layer.tar")
        })
        .collect();
    let manifest = json!([{
        "Config": format!("{config_hex}.json"),
        "RepoTags": [repo_tag],
        "Layers": layer_names,
    }]);

    let mut tar = Out::create(out)?;
    tar.bytes(&format!("{config_hex}.json"), &config)?;
    for (layer, name) in image.layers.iter().zip(&layer_names) {
        let path = blob_path(&image.layout, &layer.digest);
        // The tar's size is needed before its bytes: one pass to count, one to copy.
        let size = io::copy(
            &mut decompressed(&path, layer.compression)?,
            &mut io::sink(),
        )
        .map_err(|source| ImageError::Read {
            path: path.clone(),
            source,
        })?;
        if let Some((dir, _)) = name.split_once('/') {
            tar.dir(dir)?;
        }
        tar.reader(name, size, decompressed(&path, layer.compression)?)?;
    }
    // INVARIANT: a serde_json::Value always serializes.
    tar.bytes(
        "manifest.json",
        &serde_json::to_vec(&manifest).unwrap_or_default(),
    )?;
    tar.finish()
}

fn decompressed(path: &Path, how: Compression) -> Result<Box<dyn Read>, ImageError> {
    let err = |source| ImageError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(err)?;
    Ok(match how {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::GzDecoder::new(file)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(file).map_err(err)?),
    })
}
