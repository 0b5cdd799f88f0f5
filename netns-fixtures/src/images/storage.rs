//! Seeding a [`TestRegistry`] without a push: the image's blobs and links are written straight
//! into the registry's filesystem storage, the layout distribution 2.8 keeps
//! (`docker/registry/v2/blobs/sha256/<2>/<hex>/data`, and per repository `_layers` links for
//! blobs, `_manifests/revisions` links for manifests, `_manifests/tags/<tag>/{current,index}`).
//! The fixture's registry has no blob descriptor cache, so it serves what is on disk at once.
//!
//! [`TestRegistry`]: crate::TestRegistry
//!
//! skopeo pushes a layer in ~0.1 s (a 210-layer image takes ~20 s); seeding takes
//! milliseconds. Use [`push`](crate::images::push) where the push itself is under test or the
//! image is small, and [`seed`] for many-layer images.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::Path;

use serde_json::Value;

use crate::images::error::ImageError;
use crate::images::layout::REF_NAME;
use crate::registry::TestRegistry;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ImageError + use<> {
    let path = path.to_path_buf();
    move |source| ImageError::Write { path, source }
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
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

/// Writes a `link` file holding `digest` in `dir`.
fn link(dir: &Path, digest: &str) -> Result<(), ImageError> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join("link");
    fs::write(&path, digest).map_err(io_err(&path))
}

/// Stores the image or index tagged `tag` in the layout at `layout` in `registry` as
/// `reference` (`repo:tag`, e.g. `ns/deep:1`; a reference without a tag is stored by digest
/// only) and returns the top manifest's digest.
pub fn seed(
    layout: &Path,
    tag: &str,
    registry: &TestRegistry,
    reference: &str,
) -> Result<String, ImageError> {
    let no_tag = || ImageError::NoTag {
        layout: layout.to_path_buf(),
        tag: tag.to_owned(),
    };
    let index = read_json(&layout.join("index.json"))?;
    let top = index["manifests"]
        .as_array()
        .and_then(|m| m.iter().find(|e| e["annotations"][REF_NAME] == tag))
        .and_then(|e| e["digest"].as_str())
        .ok_or_else(no_tag)?
        .to_owned();
    let (repo, repo_tag) = split_reference(reference);
    let root = registry.storage().join("docker/registry/v2");
    let repo_dir = root.join("repositories").join(repo);
    let blob_of = |digest: &str| layout.join("blobs/sha256").join(hex(digest));

    // Manifests (the index and what it lists) and the blobs they name.
    let mut manifests = vec![top.clone()];
    let mut blobs = BTreeSet::new();
    let mut i = 0;
    while let Some(m) = manifests.get(i).cloned() {
        i += 1;
        let doc = read_json(&blob_of(&m))?;
        if let Some(list) = doc["manifests"].as_array() {
            manifests.extend(
                list.iter()
                    .filter_map(|e| e["digest"].as_str().map(String::from)),
            );
            continue;
        }
        let layers = doc["layers"].as_array().cloned().unwrap_or_default();
        for d in std::iter::once(&doc["config"])
            .chain(layers.iter())
            .filter_map(|d| d["digest"].as_str())
        {
            blobs.insert(d.to_owned());
        }
    }

    for digest in manifests.iter().chain(&blobs) {
        let h = hex(digest);
        let dir = root
            .join("blobs/sha256")
            .join(h.get(..2).unwrap_or(h))
            .join(h);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        place(&blob_of(digest), &dir.join("data"))?;
    }
    for digest in &blobs {
        link(&repo_dir.join("_layers/sha256").join(hex(digest)), digest)?;
    }
    for digest in &manifests {
        link(
            &repo_dir
                .join("_manifests/revisions/sha256")
                .join(hex(digest)),
            digest,
        )?;
    }
    if let Some(t) = repo_tag {
        let tag_dir = repo_dir.join("_manifests/tags").join(t);
        link(&tag_dir.join("current"), &top)?;
        link(&tag_dir.join("index/sha256").join(hex(&top)), &top)?;
    }
    Ok(top)
}

/// `ns/app:1` → (`ns/app`, Some(`1`)); `ns/app@sha256:…` → (`ns/app`, None).
fn split_reference(reference: &str) -> (&str, Option<&str>) {
    let name = reference.split('@').next().unwrap_or(reference);
    match name.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag)),
        _ => (name, None),
    }
}

/// A copy, not a hardlink: tests corrupt registry blobs in place
/// ([`TestRegistry::blob_data`]), which must not reach the layout.
fn place(from: &Path, to: &Path) -> Result<(), ImageError> {
    fs::copy(from, to).map(drop).map_err(io_err(to))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repository_and_tag() {
        assert_eq!(split_reference("ns/app:1"), ("ns/app", Some("1")));
        assert_eq!(split_reference("app"), ("app", None));
        assert_eq!(split_reference("ns/app@sha256:abcd"), ("ns/app", None));
    }
}
