//! `berth image import|ls|rm`: the image store (`berth_image`), with what only the runtime
//! knows: which containers use an image.

use std::path::Path;

use berth_image::{Image, ImageError, ImageName, ImageStore, ImageSummary, NameError};

use crate::state::{StateError, Store};

/// Errors of `berth image`.
#[derive(Debug, thiserror::Error)]
pub enum ImageCommandError {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// `berth image import TARBALL NAME`.
pub fn import(store: &Store, tarball: &Path, name: &ImageName) -> Result<Image, ImageCommandError> {
    Ok(ImageStore::new(store.images_dir()).import(tarball, name)?)
}

/// `berth image ls`.
pub fn list(store: &Store) -> Result<Vec<ImageSummary>, ImageCommandError> {
    Ok(ImageStore::new(store.images_dir()).list()?)
}

/// `berth image rm`: refuses while a container (running or not) uses the image, since its
/// rootfs is that container's lower layer.
pub fn remove(store: &Store, name: &str) -> Result<ImageName, ImageCommandError> {
    let name = ImageName::try_from(name)?;
    let _lock = store.lock()?;
    if let Some(user) = store.records()?.iter().find(|r| r.config.image == name) {
        return Err(ImageError::InUse {
            name,
            container: user.name.to_string(),
        }
        .into());
    }
    ImageStore::new(store.images_dir()).remove(&name)?;
    Ok(name)
}
