//! The image verbs (`pull`, `push`, `tag`, `rmi`, `images`, `save`, `load`, `login`,
//! `logout`, `image inspect|prune|import`) and `system df`'s images: the image store and the
//! registry client (`berth_image`), with what only the runtime knows: which containers use an
//! image, and where the registries config is ([`registry`]).

pub mod cli;
mod login;
pub mod registry;

use std::collections::BTreeMap;
use std::path::Path;

use berth_image::gc::DiskUsage;
use berth_image::inspect::ImageInspect;
use berth_image::oci::PlatformError;
use berth_image::progress::Progress;
use berth_image::pull::PullOptions;
use berth_image::push::{PushError, PushResult, PushStatus};
use berth_image::registry::{CredentialsError, RegistriesConfig, RegistryError};
use berth_image::save::{SaveError, SaveFormat, SaveItem};
use berth_image::{
    Digest, Image, ImageError, ImageStore, ImageSummary, Loaded, Platform, PullResult, Reference,
    ReferenceError, Removed,
};

use crate::state::{StateError, Store};

pub use login::{LoginError, login, logout};
pub use registry::RegistryFlags;

/// Errors of `berth image`.
#[derive(Debug, thiserror::Error)]
pub enum ImageCommandError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error(transparent)]
    Setup(#[from] registry::SetupError),
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Push(#[from] PushError),
    #[error(transparent)]
    Save(#[from] SaveError),
    #[error(transparent)]
    Login(#[from] LoginError),
    #[error("image {query} not found")]
    NotFound { query: String },
    #[error("{reference}: a push needs a tag, not only a digest")]
    PushDigest { reference: String },
}

/// When `berth run` pulls its image (`--pull`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PullPolicy {
    /// Only when the store does not have it (for the offline busybox image: never).
    #[default]
    Missing,
    /// Every time (what the registry has now).
    Always,
    /// Never: the image must be in the store.
    Never,
}

/// How a command pulls.
#[derive(Debug, Clone, Default)]
pub struct PullSpec {
    pub platform: Option<Platform>,
    /// `--retry`.
    pub retries: Option<u32>,
    pub flags: RegistryFlags,
    pub config: Option<RegistriesConfig>,
}

/// `berth pull NAME`: from its registry into the store.
pub fn pull(
    store: &Store,
    reference: &Reference,
    spec: &PullSpec,
    progress: &dyn Progress,
) -> Result<PullResult, ImageCommandError> {
    let config = match &spec.config {
        Some(c) => c.clone(),
        None => registry::registries_config(None)?,
    };
    let client = spec.flags.client(config, spec.retries)?;
    let mut options = PullOptions {
        platform: spec.platform.clone(),
        ..PullOptions::default()
    };
    if let Some(r) = spec.retries {
        options.retries = r;
    }
    Ok(images(store).pull(&client, reference, &options, progress)?)
}

/// `berth run --pull`: the image `reference` names in the store, pulled first as `policy`
/// says. `Ok(None)` when nothing was pulled. The offline busybox image is built from the
/// host when missing, never pulled (unless `always`).
pub fn ensure(
    store: &Store,
    reference: &Reference,
    policy: PullPolicy,
    spec: &PullSpec,
    progress: &dyn Progress,
) -> Result<Option<PullResult>, ImageCommandError> {
    let images = images(store);
    let wanted = |image: &Image| {
        spec.platform
            .as_ref()
            .is_none_or(|p| p.matches(&image.record.platform))
    };
    match policy {
        PullPolicy::Never => Ok(None),
        PullPolicy::Always => pull(store, reference, spec, progress).map(Some),
        PullPolicy::Missing => match images.local(reference)? {
            Some(image) if wanted(&image) => Ok(None),
            _ => pull(store, reference, spec, progress).map(Some),
        },
    }
}

/// `berth push SOURCE [DESTINATION]`: the stored image `source` names to `destination`'s
/// registry (default: the reference `source` is).
pub fn push(
    store: &Store,
    source: &str,
    destination: &Reference,
    flags: &RegistryFlags,
    config: RegistriesConfig,
    progress: &mut dyn FnMut(&Digest, PushStatus),
) -> Result<PushResult, ImageCommandError> {
    if destination.tag().is_none() {
        return Err(ImageCommandError::PushDigest {
            reference: destination.familiar(),
        });
    }
    let images = images(store);
    let image = find(&images, source)?;
    let client = flags.client(config, None)?;
    Ok(berth_image::push::push(
        &images,
        &image,
        destination,
        &client,
        progress,
    )?)
}

/// `berth tag SOURCE TARGET`.
pub fn tag(store: &Store, source: &str, target: &Reference) -> Result<Image, ImageCommandError> {
    let images = images(store);
    find(&images, source)?;
    Ok(images.tag(source, target)?)
}

/// `berth image inspect NAME…`: every image, or the first that is missing.
pub fn inspect(store: &Store, queries: &[String]) -> Result<Vec<ImageInspect>, ImageCommandError> {
    let images = images(store);
    queries
        .iter()
        .map(|q| find(&images, q).map(|i| berth_image::inspect::inspect(&i)))
        .collect()
}

/// `berth save -o FILE NAME…`: one archive of every image named. An image named by a
/// reference carries that name; one named by its id carries all of its names.
pub fn save(
    store: &Store,
    queries: &[String],
    format: SaveFormat,
    output: &Path,
) -> Result<(), ImageCommandError> {
    let images = images(store);
    let mut items: Vec<SaveItem> = Vec::new();
    for query in queries {
        let image = find(&images, query)?;
        let named = Reference::parse(query)
            .ok()
            .filter(|r| image.references.contains(r));
        let names = match named {
            Some(r) => vec![r],
            None => image.references.clone(),
        };
        match items.iter_mut().find(|i| i.image.id == image.id) {
            Some(item) => {
                for name in names {
                    if !item.names.contains(&name) {
                        item.names.push(name);
                    }
                }
            }
            None => items.push(SaveItem { image, names }),
        }
    }
    berth_image::save::save_to_file(&images, &items, format, output)?;
    Ok(())
}

/// `berth load -i FILE`: every image of a docker-archive or OCI archive.
pub fn load(store: &Store, archive: &Path) -> Result<Vec<Loaded>, ImageCommandError> {
    Ok(images(store).load(archive)?)
}

/// The image `query` names (reference, id, or id prefix), or an error saying so.
fn find(images: &ImageStore, query: &str) -> Result<Image, ImageCommandError> {
    // `local` builds the offline busybox image on first use.
    if let Ok(reference) = Reference::parse(query) {
        if let Some(image) = images.local(&reference)? {
            return Ok(image);
        }
    }
    images
        .lookup(query)?
        .ok_or_else(|| ImageCommandError::NotFound {
            query: query.to_owned(),
        })
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
