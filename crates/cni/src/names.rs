//! Validated identifiers: a value of these types has passed the checks libcni and the
//! reference plugins apply, so deeper code never sees a path trick or an over-long name.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use berth_netlink::{IfNameError, MAX_IFNAME_LEN};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("container id is empty")]
    EmptyContainerId,
    #[error(
        "container id {0:?} has invalid characters (allowed: letters, digits, '_', '.', '-', not first)"
    )]
    BadContainerId(String),
    /// The kernel's rule, from berth-netlink: the one place it is written down.
    #[error(transparent)]
    IfName(#[from] IfNameError),
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

/// A Linux interface name as the kernel takes it literally: at most 15 bytes, no `/`, `:`,
/// whitespace or NUL, no `%` (a template the kernel would expand), not `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IfName(String);

impl TryFrom<&str> for IfName {
    type Error = NameError;
    fn try_from(s: &str) -> Result<Self, NameError> {
        berth_netlink::check_ifname(s)?;
        Ok(IfName(s.to_owned()))
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

/// How many names an attachment's host-side link may take: the first is what every attachment
/// uses; the others only resolve a collision of the first with another attachment's.
pub const HOST_LINK_CANDIDATES: usize = 4;

/// The host-side link of an attachment (the host end of a veth pair, for `bridge` and
/// `veth`): the names it may take, in order, and the alias (`IFLA_IFALIAS`) that marks a link
/// as this attachment's. Derived from the attachment's key alone, so DEL and CHECK find the
/// link again without any state of their own.
///
/// `veth` + 11 hex digits = 15 bytes, the longest Linux interface name: with 10 000
/// attachments on a host the first names of two collide with a chance of about 3·10⁻⁶ (the
/// reference's 8 random hex digits: about 1 %). A collision is not an error either: ADD takes
/// the next candidate whose link does not carry another attachment's alias, and DEL and CHECK
/// look for this alias among the candidates, never at a name alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLinkName {
    pub candidates: [String; HOST_LINK_CANDIDATES],
    pub alias: String,
}

impl HostLinkName {
    /// The host link of the attachment (network, container id, ifname), the key the spec
    /// identifies an attachment by.
    pub fn of(network: &str, container_id: &str, ifname: &str) -> HostLinkName {
        let key = [network, container_id, ifname];
        let candidates = std::array::from_fn(|i| {
            let hash = match i {
                // Unsalted, so the first name is what Berth has always used for the bridge.
                0 => stable_hash(&key),
                _ => stable_hash(&[network, container_id, ifname, &format!("#{i}")]),
            };
            format!("veth{:011x}", hash >> (64 - 44))
        });
        let owner = [network, container_id, ifname, "host-link-owner"];
        let alias = format!(
            "berth:{:016x}{:016x}",
            stable_hash(&owner),
            stable_hash(&[container_id, ifname, network, "host-link-owner"])
        );
        HostLinkName { candidates, alias }
    }

    /// The first candidate: the name of the link unless it collided.
    pub fn preferred(&self) -> &str {
        &self.candidates[0]
    }
}

/// FNV-1a over the parts (each followed by a NUL, so `("ab", "c")` ≠ `("a", "bc")`), then the
/// splitmix64 finalizer so the leading hex digits depend on every input byte. Stable across
/// Rust versions and platforms, unlike `std`'s `DefaultHasher`: names derived from it outlive
/// a plugin upgrade.
pub fn stable_hash(parts: &[&str]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    for part in parts {
        for &b in part.as_bytes().iter().chain(&[0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

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
            Err(NameError::IfName(IfNameError::TooLong(
                "a234567890123456".into()
            )))
        );
        // Issue 11, finding 2: '%d' reached the kernel, which expanded it into a new name.
        for bad in [
            "", ".", "..", "a/b", "a:b", "a b", "a\tb", "%d", "veth%d", "a\0b",
        ] {
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
    fn host_link_names_are_stable_distinct_and_fit_ifnamsiz() {
        let a = HostLinkName::of("net1", "ctr-1", "eth0");
        assert_eq!(a, HostLinkName::of("net1", "ctr-1", "eth0"));
        // Pinned: a change here renames every host veth and breaks DEL across upgrades.
        assert_eq!(a.preferred(), "vethe69d6012a6e");
        for name in &a.candidates {
            assert_eq!(name.len(), MAX_IFNAME_LEN, "{name}");
            assert!(name.starts_with("veth") && name[4..].bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(IfName::try_from(name.as_str()).is_ok());
        }
        let mut all = a.candidates.to_vec();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), HOST_LINK_CANDIDATES);
        assert!(a.alias.starts_with("berth:") && a.alias.len() == 6 + 32);
        for other in [
            HostLinkName::of("net2", "ctr-1", "eth0"),
            HostLinkName::of("net1", "ctr-2", "eth0"),
            HostLinkName::of("net1", "ctr-1", "eth1"),
        ] {
            assert_ne!(other.preferred(), a.preferred());
            assert_ne!(other.alias, a.alias);
        }
        assert_ne!(
            HostLinkName::of("ab", "c", "eth0").alias,
            HostLinkName::of("a", "bc", "eth0").alias
        );
    }

    #[test]
    fn serde_validates() {
        let r: Result<IfName, _> = serde_json::from_str("\"a/b\"");
        assert!(r.is_err());
        let ok: IfName = serde_json::from_str("\"eth0\"").unwrap();
        assert_eq!(ok.as_str(), "eth0");
    }
}
