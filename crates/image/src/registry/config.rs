//! How Berth reaches registries: its one small file (`registries.toml`: per-registry mirrors,
//! insecure registries, CA directories) and the per-command options (`--tls-verify`,
//! `--cert-dir`, `--retry`).
//!
//! ```toml
//! # Roots of docker/podman style certs.d trees: <root>/<host[:port]>/*.crt are CAs for that
//! # registry. These three are the default.
//! certs_d = ["/etc/berth/certs.d", "/etc/containers/certs.d", "/etc/docker/certs.d"]
//!
//! [[registry]]
//! name = "docker.io"
//! # Tried in order for pulls; the registry itself comes last. A mirror may carry a path
//! # prefix under which it keeps the repositories (`mirror.example/hub`).
//! mirrors = ["mirror.example:5000", "10.0.0.5:5000/hub"]
//!
//! [[registry]]
//! name = "10.0.0.5:5000"
//! insecure = true          # plain http allowed and TLS not verified
//! ca_dirs = ["/srv/ca"]    # *.crt in these directories are CAs for this registry
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::reference::Reference;

/// Where the `berth` CLI looks for the file unless told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/registries.toml";

/// The certs.d roots searched when the file names none: Berth's own, then podman's and
/// docker's, so a CA installed for either is trusted by Berth too.
pub const DEFAULT_CERTS_D: [&str; 3] = [
    "/etc/berth/certs.d",
    "/etc/containers/certs.d",
    "/etc/docker/certs.d",
];

/// Errors of the `config` module.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read registries config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("parse registries config {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("registries config {path}: registry {name:?} is listed twice")]
    Duplicate { path: PathBuf, name: String },
    #[error(
        "registries config {path}: {what} {value:?} is not a registry host[:port]{}",
        if *.what == "mirror" { "[/path]" } else { "" }
    )]
    BadName {
        path: PathBuf,
        what: &'static str,
        value: String,
    },
}

/// The contents of `registries.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistriesConfig {
    /// Roots of `certs.d` trees (`<root>/<host[:port]>/*.crt`).
    #[serde(default = "default_certs_d")]
    pub certs_d: Vec<PathBuf>,
    /// Per-registry settings; registries not listed get none.
    #[serde(default, rename = "registry")]
    pub registries: Vec<RegistryEntry>,
}

/// One `[[registry]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryEntry {
    /// The registry as references name it: `docker.io`, `quay.io`, `10.0.0.5:5000`.
    pub name: String,
    /// Pull mirrors, tried in order before the registry itself: `host[:port][/path]`.
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// Plain http allowed, TLS certificates not verified (docker's `insecure-registries`).
    #[serde(default)]
    pub insecure: bool,
    /// Directories whose `*.crt` are CAs for this registry, besides its certs.d directory.
    #[serde(default)]
    pub ca_dirs: Vec<PathBuf>,
}

fn default_certs_d() -> Vec<PathBuf> {
    DEFAULT_CERTS_D.iter().map(PathBuf::from).collect()
}

impl Default for RegistriesConfig {
    fn default() -> RegistriesConfig {
        RegistriesConfig {
            certs_d: default_certs_d(),
            registries: Vec::new(),
        }
    }
}

impl RegistriesConfig {
    /// A config that reads nothing from the host: no certs.d roots, no registry settings.
    /// What tests start from.
    pub fn empty() -> RegistriesConfig {
        RegistriesConfig {
            certs_d: Vec::new(),
            registries: Vec::new(),
        }
    }

    /// Reads `path`; a missing file is the default config (most hosts have none).
    pub fn load(path: &Path) -> Result<RegistriesConfig, ConfigError> {
        match fs::read_to_string(path) {
            Ok(text) => RegistriesConfig::parse(&text, path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(RegistriesConfig::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses and checks the text of a file (`path` only names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<RegistriesConfig, ConfigError> {
        let config: RegistriesConfig =
            toml::from_str(text).map_err(|source| ConfigError::Parse {
                path: path.to_owned(),
                source,
            })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |what, value: &str| ConfigError::BadName {
            path: path.to_owned(),
            what,
            value: value.to_owned(),
        };
        for (i, entry) in self.registries.iter().enumerate() {
            if split_location(&entry.name).is_none_or(|(_, prefix)| prefix.is_some()) {
                return Err(bad("registry", &entry.name));
            }
            if self.registries[..i].iter().any(|e| e.name == entry.name) {
                return Err(ConfigError::Duplicate {
                    path: path.to_owned(),
                    name: entry.name.clone(),
                });
            }
            for mirror in &entry.mirrors {
                if split_location(mirror).is_none() {
                    return Err(bad("mirror", mirror));
                }
            }
        }
        Ok(())
    }

    /// The settings of `registry` (a reference's registry or a mirror's host), if any.
    pub fn entry(&self, registry: &str) -> Option<&RegistryEntry> {
        self.registries.iter().find(|e| e.name == registry)
    }
}

/// `host[:port][/path]` → (`host[:port]`, `path`), checked with the reference grammar.
pub(crate) fn split_location(location: &str) -> Option<(String, Option<String>)> {
    let (host, prefix) = match location.split_once('/') {
        Some((h, p)) => (h, Some(p)),
        None => (location, None),
    };
    // Parse as a reference under this host: that checks the host and the path alike.
    let probe = match prefix {
        Some(p) => format!("{host}/{p}/x"),
        None => format!("{host}/x"),
    };
    let parsed = Reference::parse(&probe).ok()?;
    (parsed.registry() == host).then(|| (host.to_owned(), prefix.map(str::to_owned)))
}

/// Per-command options: podman's `--tls-verify`, `--cert-dir` and `--retry`/`--retry-delay`.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `--tls-verify=false`: certificates are not verified and plain http is allowed, for every
    /// registry this client talks to.
    pub tls_verify: bool,
    /// `--cert-dir DIR`: the `*.crt` CAs (and a `*.cert`/`*.key` client certificate) in DIR,
    /// used for every registry instead of the certs.d directories.
    pub cert_dir: Option<PathBuf>,
    /// `--retry N`: how often a transient failure (connection error, 5xx, 429) is retried.
    pub retries: u32,
    /// The first retry's delay when the registry names none; it doubles each time.
    pub retry_delay: Duration,
    /// The longest `Retry-After` the client waits out by itself; a registry asking for longer
    /// gets an error that says when to retry.
    pub max_retry_after: Duration,
    /// Connecting (TCP and TLS) may take this long.
    pub connect_timeout: Duration,
    /// A registry silent for this long in the middle of an answer is given up on.
    pub read_timeout: Duration,
    pub user_agent: String,
}

impl Default for ClientOptions {
    /// podman's defaults: verify TLS, 3 retries starting at 1 s.
    fn default() -> ClientOptions {
        ClientOptions {
            tls_verify: true,
            cert_dir: None,
            retries: 3,
            retry_delay: Duration::from_secs(1),
            max_retry_after: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            user_agent: concat!("berth/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn reads_the_documented_example() {
        let text = r#"
            certs_d = ["/x/certs.d"]
            [[registry]]
            name = "docker.io"
            mirrors = ["mirror.example:5000", "10.0.0.5:5000/hub"]
            [[registry]]
            name = "10.0.0.5:5000"
            insecure = true
            ca_dirs = ["/srv/ca"]
        "#;
        let c = RegistriesConfig::parse(text, Path::new("r.toml")).unwrap();
        assert_eq!(c.certs_d, [PathBuf::from("/x/certs.d")]);
        let hub = c.entry("docker.io").unwrap();
        assert_eq!(hub.mirrors.len(), 2);
        assert!(!hub.insecure);
        assert!(c.entry("10.0.0.5:5000").unwrap().insecure);
        assert!(c.entry("quay.io").is_none());
        assert_eq!(
            split_location("10.0.0.5:5000/hub"),
            Some(("10.0.0.5:5000".into(), Some("hub".into())))
        );
        let empty = RegistriesConfig::parse("", Path::new("r.toml")).unwrap();
        assert_eq!(empty, RegistriesConfig::default());
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        for (text, want) in [
            ("[[registry]]\nname = \"a\"\nmirorrs = []", "mirorrs"),
            ("[[registry]]\nname = \"Bad Host\"", "registry \"Bad Host\""),
            ("[[registry]]\nname = \"h:1/path\"", "registry \"h:1/path\""),
            (
                "[[registry]]\nname = \"h.io\"\nmirrors = [\"m:x\"]",
                "mirror \"m:x\"",
            ),
            (
                "[[registry]]\nname = \"h.io\"\n[[registry]]\nname = \"h.io\"",
                "listed twice",
            ),
        ] {
            let err = RegistriesConfig::parse(text, Path::new("r.toml")).unwrap_err();
            let chain = format!(
                "{err}: {}",
                std::error::Error::source(&err).map_or(String::new(), |s| s.to_string())
            );
            assert!(chain.contains(want), "{text}: {chain}");
        }
    }

    #[test]
    fn a_missing_file_is_the_default() {
        let dir = tempfile::tempdir().unwrap();
        let c = RegistriesConfig::load(&dir.path().join("none.toml")).unwrap();
        assert_eq!(c, RegistriesConfig::default());
    }
}
