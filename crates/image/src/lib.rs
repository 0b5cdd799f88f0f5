//! Container images for the `berth` runtime: their names, the on-disk store under
//! `<root>/images`, and the ways images get there. It knows nothing of containers: the
//! runtime decides which image a container uses and refuses to remove one in use.
//!
//! - [`name`]: [`ImageName`], validated at the edge;
//! - [`meta`]: [`Image`], what the store knows of an image and a container takes from it
//!   (command, entrypoint, environment, working directory);
//! - [`store`]: [`ImageStore`], `<root>/images/<name>/{rootfs,image.json}`: images are built
//!   in a staging directory and renamed into place under the image lock, never written
//!   afterwards, and what a killed build or removal left is swept;
//! - where images come from: [`busybox`] (the offline default, from the host's static
//!   busybox), [`archive`] (`docker save` archives and OCI layouts, for `berth image
//!   import`) and plain rootfs tarballs, whose layers [`layer`] unpacks (whiteouts
//!   included);
//! - tree helpers (paths resolved inside a tree, deleting a tree with mounts in it) come from
//!   `berth-fs`, shared with the runtime.
//!
//! Registry images (issue 13) belong here too: references (`docker.io/library/busybox:latest`)
//! beside [`name`], a registry client beside [`archive`] as another source, and a
//! content-addressed blob and layer store under [`store`], which the import paths then
//! write into as well.

pub mod archive;
pub mod busybox;
pub mod digest;
pub mod layer;
pub mod meta;
pub mod name;
pub mod oci;
pub mod reference;
pub mod registry;
pub mod store;
mod time;

pub use busybox::DEFAULT_IMAGE;
pub use digest::{Digest, DigestError};
pub use meta::{DEFAULT_PATH, Image};
pub use name::{ImageName, NameError};
pub use oci::{ImageConfig, Platform};
pub use reference::{Reference, ReferenceError};
pub use store::{ImageError, ImageStore, ImageSummary};
