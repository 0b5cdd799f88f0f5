//! A synchronous client for the Docker Registry HTTP API v2 / OCI distribution API, the
//! registries Docker Hub, ghcr.io, quay.io and `docker-registry` run.
//!
//! ```no_run
//! use berth_image::Reference;
//! use berth_image::registry::{ClientOptions, Credentials, RegistriesConfig, RegistryClient};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = RegistriesConfig::load("/etc/berth/registries.toml".as_ref())?;
//! let creds = Credentials::from_env(|k| std::env::var_os(k));
//! let client = RegistryClient::new(config, creds, ClientOptions::default());
//! let r = Reference::parse("127.0.0.1:5000/ns/app:1")?;
//! let manifest = client.manifest(&r)?; // bytes, media type, verified digest
//! # Ok(()) }
//! ```
//!
//! - [`RegistryClient`]: ping, manifests by tag or digest (`Accept` of every manifest type
//!   Berth reads, digest verified), blob `HEAD`, blob streams from an offset
//!   ([`BlobStream`], `Range` requests, reopened where a connection broke), blob and
//!   manifest push (existing blobs skipped, cross-repository mounts), tags.
//! - Auth: anonymous, Basic, and the bearer-token flow (challenge → token per
//!   `repository:<name>:pull[,push]` scope, cached until it expires, renewed on a 401).
//!   Credentials from [`Credentials`]: `--creds`, auth files, docker's `config.json` and its
//!   credential helpers; [`AuthFile`] for `login`/`logout`.
//! - Where and how: [`RegistriesConfig`] (`registries.toml`: mirrors, insecure registries,
//!   CA directories) and [`ClientOptions`] (`--tls-verify`, `--cert-dir`, `--retry`).
//!   Registries on the loopback may answer over plain http (docker's rule).
//! - Integrity: manifests are checked here; blobs by the caller through a
//!   [`VerifyingReader`], which fails at the end of a stream whose digest is wrong.
//! - Errors ([`RegistryError`]) name the registry, the repository and the operation; a
//!   throttled registry's says when to retry.

mod auth;
mod blob;
mod challenge;
mod client;
mod config;
mod credentials;
mod error;
mod retry;
mod tokens;
mod transport;
mod verify;

pub use blob::BlobStream;
pub use challenge::{Challenge, Scope};
pub use client::{Fetched, MANIFEST_LIMIT, Pushed, RegistryClient};
pub use config::{
    ClientOptions, ConfigError, DEFAULT_CERTS_D, DEFAULT_CONFIG_PATH, RegistriesConfig,
    RegistryEntry,
};
pub use credentials::{AuthEntry, AuthFile, Credentials, CredentialsError};
pub use error::{Op, RegistryError};
pub use retry::parse_retry_after;
pub use verify::{VerifyError, VerifyingReader};
