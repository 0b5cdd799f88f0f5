//! What a container takes from its image: the record (id, layers), the references that name
//! it, and the image config (command, entrypoint, environment, working directory, user…).

use serde::Serialize;

use crate::digest::Digest;
use crate::images::ImageRecord;
use crate::oci::{Descriptor, ImageConfig, Platform, RunConfig, media};
use crate::reference::Reference;

/// `$PATH` when neither the image nor `-e` sets one (docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An image of the store, with its config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    pub id: Digest,
    /// Every reference that names it.
    pub references: Vec<Reference>,
    pub record: ImageRecord,
    pub config: ImageConfig,
}

impl Image {
    /// An image of `config` alone, in no store (no layer, no reference): for code that only
    /// reads what a container takes from its image, and its tests.
    pub fn of_config(config: ImageConfig) -> Image {
        let bytes = serde_json::to_vec(&config).unwrap_or_default();
        let id = Digest::sha256_of(&bytes);
        let record = ImageRecord {
            id: id.clone(),
            manifest: Descriptor {
                media_type: media::OCI_MANIFEST.into(),
                digest: id.clone(),
                size: 0,
                platform: None,
                annotations: Default::default(),
                urls: Vec::new(),
            },
            index: None,
            layers: Vec::new(),
            platform: Platform {
                os: config.os.clone(),
                architecture: config.architecture.clone(),
                variant: config.variant.clone(),
                os_version: None,
            },
            created: config.created.clone(),
            size: 0,
            source: String::new(),
            stored: String::new(),
            repo_digests: Vec::new(),
        };
        Image {
            id,
            references: Vec::new(),
            record,
            config,
        }
    }

    /// The config's `config`: what a container runs.
    pub fn run_config(&self) -> &RunConfig {
        &self.config.config
    }

    /// Default command (docker's `Cmd`).
    pub fn cmd(&self) -> &[String] {
        self.run_config().cmd.as_deref().unwrap_or_default()
    }

    /// Prepended to the command (docker's `Entrypoint`).
    pub fn entrypoint(&self) -> &[String] {
        self.run_config().entrypoint.as_deref().unwrap_or_default()
    }

    pub fn env(&self) -> &[String] {
        self.run_config().env.as_deref().unwrap_or_default()
    }

    /// The working directory, if the image sets one.
    pub fn workdir(&self) -> Option<&str> {
        self.run_config()
            .working_dir
            .as_deref()
            .filter(|w| !w.is_empty())
    }
}
