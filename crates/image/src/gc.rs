//! What the store holds that no image needs, and taking it back: layers whose chain no image
//! record lists, blobs no record names (index, manifest, config, layers). Runs with the store
//! held exclusively (no pull in progress: a pull's blobs and layers exist before its record),
//! after `rmi` and `image prune`; `system df` reports the same figures without deleting.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::blobs::{BlobError, Blobs};
use crate::digest::Digest;
use crate::images::ImageRecord;
use crate::layers::{LayerError, Layers};

/// Errors of the `gc` module.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error(transparent)]
    Layer(#[from] LayerError),
}

/// What a collection deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Collected {
    /// Chain ids of the layers deleted.
    pub layers: Vec<Digest>,
    pub blobs: Vec<Digest>,
    /// Bytes freed: layer files and blobs.
    pub freed: u64,
}

/// Disk use of the store (`berth system df`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiskUsage {
    pub images: usize,
    /// Images a container uses.
    pub active_images: usize,
    pub layers: usize,
    /// Bytes of every layer's files (each shared layer once).
    pub layers_size: u64,
    pub blobs: usize,
    pub blobs_size: u64,
    /// Layers and blobs no image needs (what a collection would free).
    pub unreferenced_layers: usize,
    pub unreferenced_layers_size: u64,
    pub unreferenced_blobs: usize,
    pub unreferenced_blobs_size: u64,
    /// Bytes of the layers and blobs only unused images need (what `image prune -a` frees,
    /// on top of the unreferenced ones).
    pub reclaimable: u64,
    /// Partial downloads kept for a resume.
    pub partial_downloads: usize,
    pub partial_size: u64,
}

/// What the records `keep` need.
fn needed<'a>(keep: impl Iterator<Item = &'a ImageRecord>) -> (BTreeSet<Digest>, BTreeSet<Digest>) {
    let mut layers = BTreeSet::new();
    let mut blobs = BTreeSet::new();
    for record in keep {
        layers.extend(record.chain_ids().cloned());
        blobs.extend(record.blobs().cloned());
    }
    (layers, blobs)
}

/// Deletes the layers and blobs that none of `records` needs.
pub fn collect(
    blobs: &Blobs,
    layers: &Layers,
    records: &[ImageRecord],
) -> Result<Collected, GcError> {
    let (keep_layers, keep_blobs) = needed(records.iter());
    let mut out = Collected::default();
    for layer in layers.list()? {
        if !keep_layers.contains(&layer.chain_id) {
            layers.remove(&layer.chain_id)?;
            out.freed += layer.size;
            out.layers.push(layer.chain_id);
        }
    }
    for blob in blobs.list()? {
        if !keep_blobs.contains(&blob.digest) {
            blobs.remove(&blob.digest)?;
            out.freed += blob.size;
            out.blobs.push(blob.digest);
        }
    }
    // What killed pulls and removals left.
    layers.sweep(true);
    blobs.sweep();
    Ok(out)
}

/// The figures of [`DiskUsage`]; `in_use` says which images containers use.
pub fn usage(
    blobs: &Blobs,
    layers: &Layers,
    records: &[ImageRecord],
    in_use: &dyn Fn(&Digest) -> bool,
) -> Result<DiskUsage, GcError> {
    let (all_layers, all_blobs) = needed(records.iter());
    let (used_layers, used_blobs) = needed(records.iter().filter(|r| in_use(&r.id)));
    let mut out = DiskUsage {
        images: records.len(),
        active_images: records.iter().filter(|r| in_use(&r.id)).count(),
        ..DiskUsage::default()
    };
    for layer in layers.list()? {
        out.layers += 1;
        out.layers_size += layer.size;
        if !all_layers.contains(&layer.chain_id) {
            out.unreferenced_layers += 1;
            out.unreferenced_layers_size += layer.size;
        } else if !used_layers.contains(&layer.chain_id) {
            out.reclaimable += layer.size;
        }
    }
    for blob in blobs.list()? {
        out.blobs += 1;
        out.blobs_size += blob.size;
        if !all_blobs.contains(&blob.digest) {
            out.unreferenced_blobs += 1;
            out.unreferenced_blobs_size += blob.size;
        } else if !used_blobs.contains(&blob.digest) {
            out.reclaimable += blob.size;
        }
    }
    for (_, size) in blobs.partials() {
        out.partial_downloads += 1;
        out.partial_size += size;
    }
    Ok(out)
}
