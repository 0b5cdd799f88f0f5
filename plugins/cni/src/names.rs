//! Validated identifiers: a value of these types has passed the checks libcni and the
//! reference plugins apply, so deeper code never sees a path trick or an over-long name.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Linux `IFNAMSIZ` is 16 including the terminating NUL.
pub const MAX_IFNAME_LEN: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("container id is empty")]
    EmptyContainerId,
    #[error(
        "container id {0:?} has invalid characters (allowed: letters, digits, '_', '.', '-', not first)"
    )]
    BadContainerId(String),
    #[error("interface name is empty")]
    EmptyIfName,
    #[error("interface name {0:?} is longer than {MAX_IFNAME_LEN} bytes")]
    IfNameTooLong(String),
    #[error("interface name {0:?} is '.' or '..'")]
    IfNameDots(String),
    #[error("interface name {0:?} contains '/', ':' or whitespace")]
    IfNameBadChar(String),
    #[error("network name is empty")]
    EmptyNetworkName,
    #[error(
        "network name {0:?} has invalid characters (allowed: letters, digits, '_', '.', '-', not first)"
    )]
    BadNetworkName(String),
}

/// `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$`, the pattern libcni uses for container ids and network names.
fn is_cni_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(s: String) -> Result<Self, NameError> {
                $name::try_from(s.as_str())
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
    };
}

/// A container id as CNI allows it: no `/`, so it is safe in file names such as cache keys.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerId(String);

impl TryFrom<&str> for ContainerId {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            Err(NameError::EmptyContainerId)
        } else if !is_cni_identifier(s) {
            Err(NameError::BadContainerId(s.to_owned()))
        } else {
            Ok(ContainerId(s.to_owned()))
        }
    }
}
string_newtype!(ContainerId);

/// A Linux interface name: at most 15 bytes, no `/`, `:` or whitespace, not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IfName(String);

impl TryFrom<&str> for IfName {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            Err(NameError::EmptyIfName)
        } else if s.len() > MAX_IFNAME_LEN {
            Err(NameError::IfNameTooLong(s.to_owned()))
        } else if s == "." || s == ".." {
            Err(NameError::IfNameDots(s.to_owned()))
        } else if s.chars().any(|c| c == '/' || c == ':' || c.is_whitespace()) {
            Err(NameError::IfNameBadChar(s.to_owned()))
        } else {
            Ok(IfName(s.to_owned()))
        }
    }
}
string_newtype!(IfName);

/// A network name: the same alphabet as container ids, since it names directories and files.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NetworkName(String);

impl TryFrom<&str> for NetworkName {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Self, NameError> {
        if s.is_empty() {
            Err(NameError::EmptyNetworkName)
        } else if !is_cni_identifier(s) {
            Err(NameError::BadNetworkName(s.to_owned()))
        } else {
            Ok(NetworkName(s.to_owned()))
        }
    }
}
string_newtype!(NetworkName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids() {
        assert!(ContainerId::try_from("abc-123_x.y").is_ok());
        for bad in ["", "../etc", "a/b", "-x", ".x", "a b", "a\nb", "é"] {
            assert!(ContainerId::try_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn interface_names() {
        assert!(IfName::try_from("eth0").is_ok());
        assert!(IfName::try_from("a23456789012345").is_ok());
        assert_eq!(
            IfName::try_from("a234567890123456"),
            Err(NameError::IfNameTooLong("a234567890123456".into()))
        );
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "a\tb"] {
            assert!(IfName::try_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn network_names() {
        assert!(NetworkName::try_from("my-net.1").is_ok());
        for bad in ["", "../x", "a/b", "_x"] {
            assert!(NetworkName::try_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn serde_validates() {
        let r: Result<IfName, _> = serde_json::from_str("\"a/b\"");
        assert!(r.is_err());
        let ok: IfName = serde_json::from_str("\"eth0\"").unwrap();
        assert_eq!(ok.as_str(), "eth0");
    }
}
