//! What the store knows of an image (`image.json`): its name, when and from what it was
//! made, and what a container takes from it (command, entrypoint, environment, working
//! directory).

use serde::{Deserialize, Serialize};

use crate::name::ImageName;

/// `$PATH` when neither the image nor `-e` sets one (docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `image.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    pub name: ImageName,
    pub created: String,
    /// Default command (docker's `Cmd`).
    #[serde(default)]
    pub cmd: Vec<String>,
    /// Prepended to the command (docker's `Entrypoint`).
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub workdir: Option<String>,
    /// Where it came from: `host:/bin/busybox`, `rootfs:<tarball>`, `docker-archive:…`, `oci:…`.
    #[serde(default)]
    pub source: String,
}
