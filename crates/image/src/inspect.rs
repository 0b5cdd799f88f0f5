//! `berth image inspect`: an image as docker's `image inspect` shows it (`Id`, `RepoTags`,
//! `RepoDigests`, `Created`, `Architecture`, `Os`, `Variant`, `Size`, `Config`, `RootFS`),
//! so scripts written for docker read it.

use serde::Serialize;

use crate::digest::Digest;
use crate::meta::Image;
use crate::oci::RunConfig;
use crate::reference::Reference;

/// One image, in docker's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageInspect {
    /// The config's digest, `sha256:…`.
    pub id: Digest,
    /// `busybox:latest`, `127.0.0.1:5000/ns/app:1` (docker's familiar names).
    pub repo_tags: Vec<String>,
    /// `name@sha256:…` of the manifests registries know it by (familiar names).
    pub repo_digests: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// Bytes of the layers' files.
    pub size: u64,
    /// What a container takes from the image: `User`, `Env`, `Entrypoint`, `Cmd`,
    /// `WorkingDir`, `ExposedPorts`, `StopSignal`, `Labels`, …
    pub config: RunConfig,
    #[serde(rename = "RootFS")]
    pub root_fs: InspectRootFs,
    /// The manifest the image was stored from (not docker's: Berth's store keeps it).
    pub manifest: Digest,
    /// Where the image came from (`registry`, `docker-archive:…`, `host:/bin/busybox`).
    pub source: String,
}

/// `RootFS`: the layers' diffIDs, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectRootFs {
    #[serde(rename = "Type")]
    pub kind: String,
    pub layers: Vec<Digest>,
}

/// `image` as `image inspect` prints it.
pub fn inspect(image: &Image) -> ImageInspect {
    let record = &image.record;
    let config = &image.config;
    let repo_digests = record
        .repo_digests
        .iter()
        .map(|d| match d.split_once('@') {
            // `docker.io/library/busybox@sha256:…` → `busybox@sha256:…`
            Some((name, digest)) => match Reference::parse(name) {
                Ok(r) => {
                    let familiar = r.familiar();
                    let base = familiar.strip_suffix(":latest").unwrap_or(&familiar);
                    format!("{base}@{digest}")
                }
                Err(_) => d.clone(),
            },
            None => d.clone(),
        })
        .collect();
    ImageInspect {
        id: image.id.clone(),
        repo_tags: image
            .references
            .iter()
            .filter(|r| r.tag().is_some())
            .map(Reference::familiar)
            .collect(),
        repo_digests,
        created: config.created.clone(),
        author: config.author.clone(),
        architecture: config.architecture.clone(),
        os: config.os.clone(),
        variant: config.variant.clone(),
        size: record.size,
        config: config.config.clone(),
        root_fs: InspectRootFs {
            kind: config.rootfs.kind.clone(),
            layers: config.rootfs.diff_ids.clone(),
        },
        manifest: record.manifest.digest.clone(),
        source: record.source.clone(),
    }
}
