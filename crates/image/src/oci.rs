//! The documents of an image as registries and archives carry them: OCI image indexes and
//! manifests, Docker manifest lists and schema-2 manifests (the same shapes under other media
//! types), descriptors, platforms, and the image configuration with what a container takes
//! from it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// The media types Berth reads and writes.
pub mod media {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker's foreign (Windows) layers: never pulled.
    pub const DOCKER_FOREIGN_LAYER: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

    /// What a registry is asked for, best first, in an `Accept` header.
    pub const MANIFEST_ACCEPT: [&str; 4] = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];
}

/// How a layer blob is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// `None` for a media type that is not a layer Berth can unpack.
    pub fn of_layer(media_type: &str) -> Option<Compression> {
        match media_type {
            media::OCI_LAYER | "application/vnd.docker.image.rootfs.diff.tar" => {
                Some(Compression::None)
            }
            media::OCI_LAYER_GZIP | media::DOCKER_LAYER_GZIP => Some(Compression::Gzip),
            media::OCI_LAYER_ZSTD => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// A platform: `linux/amd64`, `linux/arm64/v8`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        default,
        rename = "os.version",
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
}

/// Errors of the `oci` module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    #[error("invalid platform {0:?}: expected os/arch or os/arch/variant, e.g. linux/arm64")]
    Invalid(String),
}

impl Platform {
    /// The platform this process runs on, in OCI's names (`x86_64` is `amd64`).
    pub fn host() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: variant.map(Into::into),
            os_version: None,
        }
    }

    /// `os/arch[/variant]`.
    pub fn parse(text: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = text.split('/').collect();
        let ok =
            |s: &&str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        match parts.as_slice() {
            [os, arch] if ok(os) && ok(arch) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
                os_version: None,
            }),
            [os, arch, variant] if ok(os) && ok(arch) && ok(variant) => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(variant.to_string()),
                os_version: None,
            }),
            _ => Err(PlatformError::Invalid(text.to_owned())),
        }
    }

    /// Whether an index entry for `candidate` runs here. OS and architecture must be equal;
    /// a wanted variant must be equal too, except that `arm64` without a variant is `v8`.
    pub fn matches(&self, candidate: &Platform) -> bool {
        if self.os != candidate.os || self.architecture != candidate.architecture {
            return false;
        }
        let norm = |p: &Platform| match (p.architecture.as_str(), p.variant.as_deref()) {
            ("arm64", None) => Some("v8".to_owned()),
            (_, v) => v.map(str::to_owned),
        };
        match norm(self) {
            None => true,
            Some(wanted) => norm(candidate).is_none_or(|v| v == wanted),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A reference to a blob (OCI descriptor; Docker's manifests use the same fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

impl Descriptor {
    /// An index entry that is not an image to run: a buildkit attestation manifest
    /// (`vnd.docker.reference.type: attestation-manifest`, platform `unknown/unknown`).
    pub fn is_attestation(&self) -> bool {
        self.annotations
            .get("vnd.docker.reference.type")
            .is_some_and(|t| t == "attestation-manifest")
            || self
                .platform
                .as_ref()
                .is_some_and(|p| p.os == "unknown" && p.architecture == "unknown")
    }
}

/// An OCI image index or a Docker manifest list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Errors of choosing a platform in an index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectError {
    #[error("no image for {wanted} in the index; it has: {}", if .available.is_empty() { "nothing runnable".to_owned() } else { .available.join(", ") })]
    NoMatch {
        wanted: String,
        available: Vec<String>,
    },
}

impl Index {
    /// The manifest for `platform`, skipping attestations. When none matches, the error lists
    /// the platforms the index has.
    pub fn select(&self, platform: &Platform) -> Result<&Descriptor, SelectError> {
        let runnable = self.manifests.iter().filter(|d| !d.is_attestation());
        let mut available = Vec::new();
        for d in runnable {
            match &d.platform {
                Some(p) if platform.matches(p) => return Ok(d),
                Some(p) => available.push(p.to_string()),
                None => available.push("(no platform)".to_owned()),
            }
        }
        Err(SelectError::NoMatch {
            wanted: platform.to_string(),
            available,
        })
    }
}

/// An OCI image manifest or a Docker schema-2 manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// What a manifest document turned out to be, by its media type (the `Content-Type` a
/// registry sent, else the document's own `mediaType`, else its shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestDoc {
    Index(Index),
    Manifest(Box<Manifest>),
}

/// Errors of reading a manifest document.
#[derive(Debug, thiserror::Error)]
pub enum DocError {
    #[error(
        "manifest of media type {0:?} is not supported (schema 1 and artifacts are not images Berth runs)"
    )]
    Unsupported(String),
    #[error("malformed {what}")]
    Malformed {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

impl ManifestDoc {
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<ManifestDoc, DocError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Peek {
            #[serde(default)]
            media_type: Option<String>,
            #[serde(default)]
            manifests: Option<serde_json::Value>,
        }
        let peek: Peek = serde_json::from_slice(bytes).map_err(|source| DocError::Malformed {
            what: "manifest",
            source,
        })?;
        let kind = content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim().to_owned())
            .filter(|c| !c.is_empty() && c != "application/json")
            .or(peek.media_type)
            .unwrap_or_else(|| {
                if peek.manifests.is_some() {
                    media::OCI_INDEX.to_owned()
                } else {
                    media::OCI_MANIFEST.to_owned()
                }
            });
        match kind.as_str() {
            media::OCI_INDEX | media::DOCKER_LIST => serde_json::from_slice(bytes)
                .map(ManifestDoc::Index)
                .map_err(|source| DocError::Malformed {
                    what: "image index",
                    source,
                }),
            media::OCI_MANIFEST | media::DOCKER_MANIFEST => serde_json::from_slice(bytes)
                .map(|m| ManifestDoc::Manifest(Box::new(m)))
                .map_err(|source| DocError::Malformed {
                    what: "image manifest",
                    source,
                }),
            other => Err(DocError::Unsupported(other.to_owned())),
        }
    }
}

/// The image configuration blob (OCI image config; Docker's has the same fields).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default)]
    pub config: RunConfig,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<serde_json::Value>,
}

/// What a container takes from its image (`config` of the image configuration). The keys are
/// Go's field names, as docker writes them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RunConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exposed_ports: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
}

/// The layers' uncompressed digests, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> RootFs {
        RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

/// The chain id of each layer: the identity of the filesystem after it is applied on its
/// parents (OCI image spec: `ChainID(L₀) = DiffID(L₀)`, `ChainID(Lᵢ) =
/// sha256(ChainID(Lᵢ₋₁) + " " + DiffID(Lᵢ))`). Layers are unpacked once per chain id, so
/// images that share a base share its layers.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff in diff_ids {
        let next = match out.last() {
            None => diff.clone(),
            Some(parent) => Digest::sha256_of(format!("{parent} {diff}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn d(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    #[test]
    fn index_selection_skips_attestations_and_names_what_exists() {
        let index: Index = serde_json::from_value(json!({
            "schemaVersion": 2,
            "manifests": [
                {"mediaType": media::OCI_MANIFEST, "digest": d(1), "size": 1,
                 "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
                {"mediaType": media::OCI_MANIFEST, "digest": d(2), "size": 1,
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {"mediaType": media::OCI_MANIFEST, "digest": d(3), "size": 1,
                 "platform": {"os": "unknown", "architecture": "unknown"},
                 "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}
            ]
        }))
        .unwrap();
        let amd = Platform::parse("linux/amd64").unwrap();
        assert_eq!(index.select(&amd).unwrap().digest.to_string(), d(2));
        let arm = Platform::parse("linux/arm64").unwrap();
        assert_eq!(index.select(&arm).unwrap().digest.to_string(), d(1));
        let err = index
            .select(&Platform::parse("linux/s390x").unwrap())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "no image for linux/s390x in the index; it has: linux/arm64/v8, linux/amd64"
        );
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux/../x").is_err());
    }

    #[test]
    fn documents_are_told_apart_by_type() {
        let manifest = json!({"schemaVersion": 2, "mediaType": media::DOCKER_MANIFEST,
            "config": {"mediaType": media::DOCKER_CONFIG, "digest": d(1), "size": 10},
            "layers": [{"mediaType": media::DOCKER_LAYER_GZIP, "digest": d(2), "size": 20}]});
        let bytes = serde_json::to_vec(&manifest).unwrap();
        let ManifestDoc::Manifest(m) = ManifestDoc::parse(&bytes, None).unwrap() else {
            panic!("not a manifest")
        };
        assert_eq!(
            Compression::of_layer(&m.layers[0].media_type),
            Some(Compression::Gzip)
        );
        let list = json!({"schemaVersion": 2, "manifests": []});
        let bytes = serde_json::to_vec(&list).unwrap();
        assert!(matches!(
            ManifestDoc::parse(&bytes, Some(media::DOCKER_LIST)).unwrap(),
            ManifestDoc::Index(_)
        ));
        assert!(matches!(
            ManifestDoc::parse(
                b"{\"schemaVersion\":1}",
                Some("application/vnd.docker.distribution.manifest.v1+prettyjws")
            ),
            Err(DocError::Unsupported(_))
        ));
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let a: Digest = d(1).parse().unwrap();
        let b: Digest = d(2).parse().unwrap();
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        assert_eq!(ids[1], Digest::sha256_of(format!("{a} {b}").as_bytes()));
    }

    #[test]
    fn the_config_reads_docker_field_names() {
        let cfg: ImageConfig = serde_json::from_value(json!({
            "architecture": "amd64", "os": "linux",
            "config": {"User": "65534", "Env": ["PATH=/bin"], "Entrypoint": ["/bin/sh"],
                       "Cmd": ["-c", "id"], "WorkingDir": "/srv",
                       "ExposedPorts": {"80/tcp": {}}, "StopSignal": "SIGQUIT",
                       "Labels": {"a": "b"}},
            "rootfs": {"type": "layers", "diff_ids": [d(5)]}
        }))
        .unwrap();
        assert_eq!(cfg.config.user.as_deref(), Some("65534"));
        assert_eq!(cfg.config.working_dir.as_deref(), Some("/srv"));
        assert!(cfg.config.exposed_ports.contains_key("80/tcp"));
        assert_eq!(cfg.rootfs.diff_ids.len(), 1);
    }
}
