//! `berth image import|ls|rm|prune` and `system df`'s images: the image store
//! (`berth_image`), with what only the runtime knows: which containers use an image.

use std::collections::BTreeMap;
use std::path::Path;

use berth_image::gc::DiskUsage;
use berth_image::{
    Digest, Image, ImageError, ImageStore, ImageSummary, Reference, ReferenceError, Removed,
};

use crate::state::{StateError, Store};

/// Errors of `berth image`.
#[derive(Debug, thiserror::Error)]
pub enum ImageCommandError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    State(#[from] StateError),
}

fn images(store: &Store) -> ImageStore {
    ImageStore::new(store.images_dir())
}

/// `berth image import TARBALL NAME`.
pub fn import(store: &Store, tarball: &Path, name: &Reference) -> Result<Image, ImageCommandError> {
    Ok(images(store).import(tarball, name)?)
}

/// `berth image ls`.
pub fn list(store: &Store) -> Result<Vec<ImageSummary>, ImageCommandError> {
    Ok(images(store).list()?)
}

/// The image id of every container (running or not: a stopped container's layers are its
/// root's lower layers when it restarts) and the name of one container using it. Call with
/// the store lock held, so no container appears meanwhile.
fn users(
    store: &Store,
    images: &ImageStore,
) -> Result<BTreeMap<Digest, String>, ImageCommandError> {
    let mut out = BTreeMap::new();
    for record in store.records()? {
        // Records from before image ids were recorded name their image by reference.
        let id = match &record.config.image_id {
            Some(id) => Some(id.clone()),
            None => images.get(&record.config.image)?.map(|i| i.id),
        };
        if let Some(id) = id {
            out.entry(id).or_insert_with(|| record.name.to_string());
        }
    }
    Ok(out)
}

/// `berth image rm`: refuses while a container (running or not) uses the image, since its
/// layers are that container's lower layers; then deletes the layers and blobs no image
/// needs.
pub fn remove(store: &Store, query: &str, force: bool) -> Result<Removed, ImageCommandError> {
    let images = images(store);
    let _lock = store.lock()?;
    let users = users(store, &images)?;
    Ok(images.remove(query, force, &|id| users.get(id).cloned())?)
}

/// `berth image prune [-a]`.
pub fn prune(store: &Store, all: bool) -> Result<Removed, ImageCommandError> {
    let images = images(store);
    let _lock = store.lock()?;
    let users = users(store, &images)?;
    Ok(images.prune(all, &|id| users.contains_key(id))?)
}

/// The images' part of `berth system df`.
pub fn disk_usage(store: &Store) -> Result<DiskUsage, ImageCommandError> {
    let images = images(store);
    let users = users(store, &images)?;
    Ok(images.df(&|id| users.contains_key(id))?)
}
