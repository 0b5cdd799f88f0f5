//! Container images for the `berth` runtime: the names, the on-disk store under
//! `<root>/images`, and the ways images get there.
//!
//! - [`name`]: [`ImageName`], validated at the edge;
//! - [`store`]: [`ImageStore`] (`<root>/images/<name>/{rootfs,image.json}`, built in a staging
//!   directory and renamed into place under the image lock), [`Image`] (what a container
//!   takes from its image: command, entrypoint, environment, working directory);
//! - [`layer`]: unpacking a tar archive or an image layer (whiteouts) into a tree;
//! - [`resolve`]: paths resolved inside a tree as if it were `/` (symlinks cannot leave it),
//!   for layers here and for the runtime's mounts into a container's root;
//! - [`mounts`]: deleting a tree only once nothing is mounted in it.
//!
//! It knows nothing of containers: the runtime decides which image a container uses and
//! refuses to remove one in use.

pub mod layer;
pub mod mounts;
pub mod name;
pub mod resolve;
pub mod store;
mod time;

pub use name::{ImageName, NameError};
pub use store::{DEFAULT_IMAGE, DEFAULT_PATH, Image, ImageError, ImageStore, ImageSummary};
