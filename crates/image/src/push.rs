//! `berth push`: a stored image to a registry, as docker pushes it. The layer blobs go first
//! (each asked for with `HEAD` first, so what the repository has is not sent again; a blob
//! another repository of the registry has is mounted instead of uploaded), then the config,
//! then the manifest under the target's tag. The blobs are the store's, byte for byte, so the
//! manifest the registry gets is the one stored and the image keeps its digests.

use crate::blobs::BlobError;
use crate::digest::Digest;
use crate::meta::Image;
use crate::reference::Reference;
use crate::registry::{MANIFEST_LIMIT, Pushed, RegistryClient, RegistryError};
use crate::store::{ImageError, ImageStore};

/// Errors of the `push` module.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("push layer {digest} to {target}")]
    Layer {
        digest: Digest,
        target: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("push config {digest} to {target}")]
    Config {
        digest: Digest,
        target: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("push the manifest {digest} to {target}")]
    Manifest {
        digest: Digest,
        target: String,
        #[source]
        source: Box<RegistryError>,
    },
    #[error("read blob {digest} of image {id} from the store")]
    Blob {
        id: Digest,
        digest: Digest,
        #[source]
        source: Box<BlobError>,
    },
    #[error(transparent)]
    Store(#[from] ImageError),
}

/// Where one blob of a push is (docker's words, [`PushStatus::text`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushStatus {
    /// Being sent (`size` bytes).
    Pushing { size: u64 },
    /// The repository had it: nothing sent.
    AlreadyExists,
    /// Mounted from another repository of the registry: nothing sent.
    Mounted { from: String },
    /// Sent.
    Pushed,
}

impl PushStatus {
    /// What docker prints after the layer's short digest.
    pub fn text(&self) -> String {
        match self {
            PushStatus::Pushing { size } => {
                format!("Pushing {}", crate::progress::human(*size))
            }
            PushStatus::AlreadyExists => "Layer already exists".into(),
            PushStatus::Mounted { from } => format!("Mounted from {from}"),
            PushStatus::Pushed => "Pushed".into(),
        }
    }
}

/// What a push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushResult {
    pub target: Reference,
    /// The manifest's digest (what `push -q` prints, and the target's repo digest).
    pub digest: Digest,
    /// The manifest's size.
    pub size: u64,
    /// Blobs sent (layers and config).
    pub uploaded: usize,
    /// Blobs the registry had or mounted.
    pub skipped: usize,
}

/// Pushes `image` (from `store`) to `target` through `client`; `progress` hears about each
/// layer. On success the target's `name@digest` joins the image's repo digests.
pub fn push(
    store: &ImageStore,
    image: &Image,
    target: &Reference,
    client: &RegistryClient,
    progress: &mut dyn FnMut(&Digest, PushStatus),
) -> Result<PushResult, PushError> {
    // Shared with pulls, exclusive with rmi/prune: the blobs stay while they are read.
    let _held = store.hold()?;
    let record = &image.record;
    let blob_err = |digest: &Digest, source| PushError::Blob {
        id: image.id.clone(),
        digest: digest.clone(),
        source: Box::new(source),
    };
    // Another repository of the same registry that holds this image: the registry can mount
    // its blobs instead of receiving them.
    let mount_from = image
        .references
        .iter()
        .cloned()
        .chain(
            record
                .repo_digests
                .iter()
                .filter_map(|r| Reference::parse(r).ok()),
        )
        .find(|r| r.registry() == target.registry() && r.repository() != target.repository());
    let mut result = PushResult {
        target: target.clone(),
        digest: record.manifest.digest.clone(),
        size: record.manifest.size,
        uploaded: 0,
        skipped: 0,
    };
    let target_text = target.familiar();
    for layer in &record.layers {
        let digest = &layer.blob.digest;
        let layer_err = |source| PushError::Layer {
            digest: digest.clone(),
            target: target_text.clone(),
            source: Box::new(source),
        };
        if client
            .blob_exists(target, digest)
            .map_err(layer_err)?
            .is_some()
        {
            progress(digest, PushStatus::AlreadyExists);
            result.skipped += 1;
            continue;
        }
        let mut file = store
            .blobs()
            .open(digest)
            .map_err(|e| blob_err(digest, e))?;
        progress(
            digest,
            PushStatus::Pushing {
                size: layer.blob.size,
            },
        );
        let pushed = client
            .push_blob(
                target,
                digest,
                layer.blob.size,
                &mut file,
                mount_from.as_ref(),
            )
            .map_err(layer_err)?;
        match pushed {
            Pushed::Uploaded => {
                progress(digest, PushStatus::Pushed);
                result.uploaded += 1;
            }
            Pushed::Existed => {
                progress(digest, PushStatus::AlreadyExists);
                result.skipped += 1;
            }
            Pushed::Mounted => {
                let from = mount_from
                    .as_ref()
                    .map(|r| r.repository().to_owned())
                    .unwrap_or_default();
                progress(digest, PushStatus::Mounted { from });
                result.skipped += 1;
            }
        }
    }

    let config = &record.id;
    let config_size = store.blobs().size(config).ok_or_else(|| {
        blob_err(
            config,
            BlobError::Missing {
                digest: config.clone(),
            },
        )
    })?;
    let mut file = store
        .blobs()
        .open(config)
        .map_err(|e| blob_err(config, e))?;
    let pushed = client
        .push_blob(target, config, config_size, &mut file, mount_from.as_ref())
        .map_err(|source| PushError::Config {
            digest: config.clone(),
            target: target_text.clone(),
            source: Box::new(source),
        })?;
    if pushed == Pushed::Uploaded {
        result.uploaded += 1;
    } else {
        result.skipped += 1;
    }

    let manifest = &record.manifest;
    let bytes = store
        .blobs()
        .read(&manifest.digest, MANIFEST_LIMIT)
        .map_err(|e| blob_err(&manifest.digest, e))?;
    let digest = client
        .put_manifest(target, &bytes, &manifest.media_type)
        .map_err(|source| PushError::Manifest {
            digest: manifest.digest.clone(),
            target: target_text.clone(),
            source: Box::new(source),
        })?;
    result.digest = digest.clone();
    result.size = bytes.len() as u64;
    store.add_repo_digest(&image.id, &format!("{}@{digest}", target.name()))?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_dockers() {
        assert_eq!(PushStatus::AlreadyExists.text(), "Layer already exists");
        assert_eq!(PushStatus::Pushed.text(), "Pushed");
        assert_eq!(
            PushStatus::Pushing { size: 2_500_000 }.text(),
            "Pushing 2.5MB"
        );
        assert_eq!(
            PushStatus::Mounted {
                from: "ns/a".into()
            }
            .text(),
            "Mounted from ns/a"
        );
    }
}
