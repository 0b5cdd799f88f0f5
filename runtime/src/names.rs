//! Validated names: container ids and container names (image names are berth-image's).
//!
//! Parse, don't validate: everything past the CLI edge holds one of these newtypes, so deeper
//! code (paths under the state root, cgroup directories, overlay options) can rely on them
//! containing no `/`, `..`, `,` or `:`.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};

use serde::{Deserialize, Serialize};

/// Errors of the `names` module.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    #[error("invalid container id {id:?}: expected 64 lowercase hex digits")]
    ContainerId { id: String },
    #[error(
        "invalid container name {name:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most {MAX_NAME} characters"
    )]
    ContainerName { name: String },
    #[error("read random bytes from /dev/urandom")]
    Random(#[source] io::Error),
}

/// Longest container name accepted.
pub const MAX_NAME: usize = 128;
/// Length of the short form of a container id (as docker and podman print it).
pub const SHORT_ID: usize = 12;

/// `n` random bytes from the kernel.
fn random_bytes<const N: usize>() -> Result<[u8; N], NameError> {
    let mut buf = [0u8; N];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(NameError::Random)?;
    Ok(buf)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A container id: 64 lowercase hex digits (256 random bits), like docker's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerId(String);

impl ContainerId {
    pub fn random() -> Result<ContainerId, NameError> {
        Ok(ContainerId(hex(&random_bytes::<32>()?)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first 12 digits, used as the default hostname and in listings.
    pub fn short(&self) -> &str {
        &self.0[..SHORT_ID]
    }
}

impl TryFrom<&str> for ContainerId {
    type Error = NameError;
    fn try_from(id: &str) -> Result<Self, NameError> {
        if id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(ContainerId(id.to_owned()))
        } else {
            Err(NameError::ContainerId { id: id.to_owned() })
        }
    }
}

impl TryFrom<String> for ContainerId {
    type Error = NameError;
    fn try_from(id: String) -> Result<Self, NameError> {
        ContainerId::try_from(id.as_str())
    }
}

impl From<ContainerId> for String {
    fn from(id: ContainerId) -> String {
        id.0
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A container name, docker's rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerName(String);

impl ContainerName {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A generated name, `<adjective>_<noun>` (harbour words, as docker's are scientists).
    /// The caller retries on a collision.
    pub fn generate() -> Result<ContainerName, NameError> {
        const ADJECTIVES: [&str; 16] = [
            "calm", "brave", "eager", "gentle", "hardy", "jolly", "keen", "lively", "mellow",
            "nimble", "proud", "quiet", "steady", "swift", "tidy", "witty",
        ];
        const NOUNS: [&str; 16] = [
            "anchor", "beacon", "bollard", "buoy", "cutter", "dinghy", "ferry", "galley", "harbor",
            "jetty", "keel", "mooring", "pier", "quay", "tug", "wharf",
        ];
        let [a, n, s1, s2] = random_bytes::<4>()?;
        let adjective = ADJECTIVES[usize::from(a) % ADJECTIVES.len()];
        let noun = NOUNS[usize::from(n) % NOUNS.len()];
        // 16 x 16 names alone collide quickly; a short random suffix keeps retries rare.
        Ok(ContainerName(format!(
            "{adjective}_{noun}_{}",
            hex(&[s1, s2])
        )))
    }
}

impl TryFrom<&str> for ContainerName {
    type Error = NameError;
    fn try_from(name: &str) -> Result<Self, NameError> {
        let mut bytes = name.bytes();
        let valid = name.len() <= MAX_NAME
            && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
            && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if valid {
            Ok(ContainerName(name.to_owned()))
        } else {
            Err(NameError::ContainerName {
                name: name.to_owned(),
            })
        }
    }
}

impl TryFrom<String> for ContainerName {
    type Error = NameError;
    fn try_from(name: String) -> Result<Self, NameError> {
        ContainerName::try_from(name.as_str())
    }
}

impl From<ContainerName> for String {
    fn from(name: ContainerName) -> String {
        name.0
    }
}

impl fmt::Display for ContainerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_are_valid_and_distinct() {
        let a = ContainerId::random().unwrap();
        let b = ContainerId::random().unwrap();
        assert_ne!(a, b);
        assert!(ContainerId::try_from(a.as_str()).is_ok());
        assert_eq!(a.short().len(), SHORT_ID);
    }

    #[test]
    fn ids_must_be_full_lowercase_hex() {
        assert!(ContainerId::try_from("abc").is_err());
        assert!(ContainerId::try_from("A".repeat(64).as_str()).is_err());
        assert!(ContainerId::try_from("../".repeat(21).as_str()).is_err());
        assert!(ContainerId::try_from("0".repeat(64).as_str()).is_ok());
    }

    #[test]
    fn container_names_follow_docker() {
        for ok in ["web", "a", "my_app.v2-1", "X9"] {
            assert!(ContainerName::try_from(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "_x", "a/b", "..", "a b", "a:b", &"x".repeat(129)] {
            assert!(ContainerName::try_from(bad).is_err(), "{bad}");
        }
        let generated = ContainerName::generate().unwrap();
        assert!(ContainerName::try_from(generated.as_str()).is_ok());
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<ContainerName>("\"a/b\"").is_err());
        let name: ContainerName = serde_json::from_str("\"web\"").unwrap();
        assert_eq!(serde_json::to_string(&name).unwrap(), "\"web\"");
    }
}
