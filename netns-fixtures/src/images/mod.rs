//! Offline test images: OCI layouts built from the host's static busybox, pushed to the
//! [`TestRegistry`](crate::TestRegistry)s with Debian's skopeo, and written as the archives
//! `berth image import` reads.
//!
//! ```no_run
//! use netns_fixtures::images::{self, OciLayout, Remote};
//! use netns_fixtures::{TestNetns, TestRegistry};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut layout = OciLayout::temp()?;
//! let app = images::app(&mut layout)?; // tag "app"
//! let ns = TestNetns::new()?;
//! let registry = TestRegistry::plain(&ns)?;
//! let remote = Remote::of(&ns, &registry);
//! let digest = images::push(layout.dir(), "app", &remote, "ns/app:1")?;
//! assert_eq!(digest, app.manifest.digest);
//! images::write_oci_archive(layout.dir(), "app", "/tmp/app.tar".as_ref())?;
//! # Ok(())
//! # }
//! ```
//!
//! - `layout`: [`OciLayout`] (blobs, `index.json`), [`BlobWriter`], [`Descriptor`], [`media`];
//! - `layers`: [`LayerBuilder`] (files, dirs, symlinks, hardlinks, whiteouts, opaque dirs;
//!   none, gzip or zstd), streaming and hashing as it writes;
//! - `catalog`: the named images ([`app`], [`app2`], [`multi`], [`docker`],
//!   [`docker_list`], [`zstd()`], [`deep`], [`big`], [`five_layer`]) and what they return
//!   ([`Image`], [`IndexImage`]);
//! - `skopeo`: [`push`], [`inspect`], [`inspect_layout`] through a [`Remote`];
//! - `archive`: [`write_oci_archive`], [`write_docker_archive`];
//! - `storage`: [`seed`] writes an image straight into a registry's storage (no push: for
//!   many-layer images, which skopeo pushes at ~0.1 s a layer).

mod archive;
mod catalog;
mod error;
mod layers;
mod layout;
mod skopeo;
mod storage;

pub use archive::{write_docker_archive, write_oci_archive};
pub use catalog::{
    APP_GID, APP_GROUPS, APP_UID, APPLETS, BUSYBOX, CREATED, Image, IndexImage, NOBODY, PATH, app,
    app2, base_layer, big, deep, docker, docker_list, five_layer, host_arch, multi, zstd,
};
pub use error::ImageError;
pub use layers::{Compression, Format, Layer, LayerBuilder};
pub use layout::{BlobWriter, Descriptor, OciLayout, REF_NAME, media, sha256_of};
pub use skopeo::{Remote, SKOPEO_BIN, SkopeoError, inspect, inspect_layout, push};
pub use storage::seed;
