//! Container images for the `berth` runtime: references, the content-addressed store under
//! `<root>/images`, the ways images get there, and the overlay a container's root is. It knows
//! nothing of containers: the runtime says which images they use.
//!
//! - names: [`reference`] ([`Reference`], docker's grammar and normalization), [`digest`];
//! - documents: [`oci`] (indexes, manifests, platforms, the image config, chain ids);
//! - the store ([`store`]: [`ImageStore`]): [`blobs`] (compressed blobs by digest, partial
//!   downloads), [`layers`] (unpacked once per chain id, in overlay format by [`unpack`]),
//!   [`images`] (records and references), [`gc`] (what no image needs; `system df`);
//! - getting images: [`pull`] (the pipeline: parallel, streamed, verified, resumable)
//!   against a [`fetch::Fetch`] source — the registry client ([`registry`]), an OCI layout, what
//!   [`archive`] makes of `image import`'s tarballs, the offline [`busybox`] image — with
//!   [`progress`] for the person waiting;
//! - giving them away: [`push`] (to a registry), [`save`] (docker-archive and OCI archives,
//!   which [`ImageStore::load`] reads back), [`inspect`] (docker's `image inspect`);
//! - running them: [`overlay`] (the container's root: an overlay of the layers, through
//!   the new mount API for deep images, idmapped for user namespaces); [`meta`] ([`Image`],
//!   what a container takes from its image).

pub mod archive;
pub mod blobs;
pub mod busybox;
pub mod digest;
pub mod fetch;
pub mod gc;
pub mod images;
pub mod inspect;
pub mod layers;
pub mod meta;
pub mod oci;
pub mod overlay;
pub mod progress;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod save;
pub mod store;
mod time;
pub mod unpack;

pub use busybox::DEFAULT_IMAGE;
pub use digest::{Digest, DigestError};
pub use meta::{DEFAULT_PATH, Image};
pub use oci::{ImageConfig, Platform};
pub use reference::{Reference, ReferenceError};
pub use store::{ImageError, ImageStore, ImageSummary, Loaded, PullResult, Removed};

/// `err: cause: cause`, on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
