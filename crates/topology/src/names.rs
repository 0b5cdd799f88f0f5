//! Validated names: labs, nodes, interfaces, MAC addresses and the containers made of them.
//!
//! Parse, don't validate: once a topology is resolved, every name in it is one of these, so
//! the deployer can build `clab-<lab>-<node>` container and netns names, bridge names and
//! veth names without checking again.

use std::fmt;

/// Longest container name Berth accepts (`runtime/src/names.rs` `MAX_NAME`, kept equal).
pub const MAX_CONTAINER_NAME: usize = 128;
/// The kernel's `IFNAMSIZ` less the terminating NUL.
pub const MAX_IFNAME: usize = 15;

/// A name that is not valid where it was used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "invalid node name {name:?}: use [A-Za-z0-9][A-Za-z0-9_.-]*, at most {MAX_CONTAINER_NAME} characters"
    )]
    Node { name: String },
    #[error("node name {name:?} is reserved: in a link endpoint it means {meaning}")]
    ReservedNode { name: String, meaning: &'static str },
    #[error(
        "invalid lab name {name:?}: use [A-Za-z0-9][A-Za-z0-9_.-]*, at most {MAX_CONTAINER_NAME} characters"
    )]
    Lab { name: String },
    #[error(
        "invalid prefix {prefix:?}: use [A-Za-z0-9][A-Za-z0-9_.-]*, \"\" (no prefix) or \"__lab-name\""
    )]
    Prefix { prefix: String },
    #[error(
        "invalid interface name {name:?}: {why} (the kernel takes 1 to {MAX_IFNAME} bytes, no '/', ':', '%', whitespace, not '.' or '..')"
    )]
    Interface { name: String, why: &'static str },
    #[error("invalid MAC address {mac:?}: expected six hex pairs such as 02:42:ac:11:00:02")]
    Mac { mac: String },
    #[error("container name {name:?} is longer than {MAX_CONTAINER_NAME} characters")]
    ContainerTooLong { name: String },
    #[error("{text:?} is not NODE:INTERFACE (such as r1:eth1)")]
    NodeInterface { text: String },
}

/// Docker's and Berth's container-name alphabet: `[A-Za-z0-9][A-Za-z0-9_.-]*`.
fn container_alphabet(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
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
                Self::try_from(s.as_str())
            }
        }
    };
}

/// The name of a lab (`name:`), part of every container name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabName(String);
string_newtype!(LabName);

impl TryFrom<&str> for LabName {
    type Error = NameError;
    fn try_from(name: &str) -> Result<Self, NameError> {
        if container_alphabet(name) && name.len() <= MAX_CONTAINER_NAME {
            Ok(LabName(name.to_owned()))
        } else {
            Err(NameError::Lab {
                name: name.to_owned(),
            })
        }
    }
}

/// The name of a node (a key of `topology.nodes`).
///
/// `host` and `mgmt-net` are refused: in a brief endpoint (`host:veth0`) they name the host
/// namespace and the management network, so a node of that name could never be linked.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeName(String);
string_newtype!(NodeName);

/// Maps keyed by node name can be searched with a `&str` (`network-mode: container:X`);
/// the derived order, equality and hash are the string's, as `Borrow` requires.
impl std::borrow::Borrow<str> for NodeName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for NodeName {
    type Error = NameError;
    fn try_from(name: &str) -> Result<Self, NameError> {
        let meaning = match name {
            "host" => Some("the host's network namespace"),
            "mgmt-net" => Some("the management network"),
            "macvlan" => Some("a macvlan link"),
            _ => None,
        };
        if let Some(meaning) = meaning {
            return Err(NameError::ReservedNode {
                name: name.to_owned(),
                meaning,
            });
        }
        if container_alphabet(name) && name.len() <= MAX_CONTAINER_NAME {
            Ok(NodeName(name.to_owned()))
        } else {
            Err(NameError::Node {
                name: name.to_owned(),
            })
        }
    }
}

/// A network interface name, checked with the kernel's rule (`dev_valid_name`), plus `%`,
/// which the kernel would expand as a template (`eth%d`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfName(String);
string_newtype!(IfName);

impl TryFrom<&str> for IfName {
    type Error = NameError;
    fn try_from(name: &str) -> Result<Self, NameError> {
        let why = if name.is_empty() {
            Some("empty")
        } else if name.len() > MAX_IFNAME {
            Some("longer than 15 bytes")
        } else if name == "." || name == ".." {
            Some("'.' and '..' are not names")
        } else if name.contains(['/', ':', '%']) {
            Some("contains '/', ':' or '%'")
        } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("contains whitespace or a control character")
        } else {
            None
        };
        match why {
            Some(why) => Err(NameError::Interface {
                name: name.to_owned(),
                why,
            }),
            None => Ok(IfName(name.to_owned())),
        }
    }
}

/// A MAC address as written in a topology (`02:42:ac:11:00:02`, `-` also accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl TryFrom<&str> for MacAddr {
    type Error = NameError;
    fn try_from(mac: &str) -> Result<Self, NameError> {
        let bad = || NameError::Mac {
            mac: mac.to_owned(),
        };
        let mut bytes = [0u8; 6];
        let mut parts = mac.split([':', '-']);
        for byte in &mut bytes {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(bytes))
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// `NODE:INTERFACE`, as the `lab impair`, `lab link` and `lab capture` commands take it
/// (and as a brief endpoint is written).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeInterface {
    pub node: NodeName,
    pub ifname: IfName,
}

impl TryFrom<&str> for NodeInterface {
    type Error = NameError;
    fn try_from(text: &str) -> Result<Self, NameError> {
        let (node, ifname) = text
            .split_once(':')
            .ok_or_else(|| NameError::NodeInterface {
                text: text.to_owned(),
            })?;
        Ok(NodeInterface {
            node: NodeName::try_from(node)?,
            ifname: IfName::try_from(ifname)?,
        })
    }
}

impl fmt::Display for NodeInterface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.node, self.ifname)
    }
}

/// `prefix:` of a topology, with containerlab's meanings.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Prefix {
    /// No `prefix:` key: containers are `clab-<lab>-<node>`.
    #[default]
    Default,
    /// `prefix: ""`: containers are named after their node alone.
    Empty,
    /// `prefix: __lab-name`: containers are `<lab>-<node>`.
    LabName,
    /// Any other value: containers are `<prefix>-<lab>-<node>`.
    Custom(String),
}

impl Prefix {
    /// The `prefix:` value as written in a file; `None` for [`Prefix::Default`].
    pub fn as_written(&self) -> Option<&str> {
        match self {
            Prefix::Default => None,
            Prefix::Empty => Some(""),
            Prefix::LabName => Some("__lab-name"),
            Prefix::Custom(p) => Some(p),
        }
    }
}

impl TryFrom<&str> for Prefix {
    type Error = NameError;
    fn try_from(prefix: &str) -> Result<Self, NameError> {
        match prefix {
            "" => Ok(Prefix::Empty),
            "__lab-name" => Ok(Prefix::LabName),
            p if container_alphabet(p) && p.len() <= MAX_CONTAINER_NAME => {
                Ok(Prefix::Custom(p.to_owned()))
            }
            p => Err(NameError::Prefix {
                prefix: p.to_owned(),
            }),
        }
    }
}

/// The container (and network namespace) name of a node: `clab-<lab>-<node>` by default.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerName(String);
string_newtype!(ContainerName);

impl ContainerName {
    /// Builds the name with containerlab's prefix rules (its `clab` prefix by default).
    pub fn new(prefix: &Prefix, lab: &LabName, node: &NodeName) -> Result<Self, NameError> {
        let name = match prefix {
            Prefix::Default => format!("clab-{lab}-{node}"),
            Prefix::Empty => node.to_string(),
            Prefix::LabName => format!("{lab}-{node}"),
            Prefix::Custom(p) => format!("{p}-{lab}-{node}"),
        };
        // The parts are each in the container alphabet and joined by '-', so only the
        // length can be wrong.
        if name.len() > MAX_CONTAINER_NAME {
            return Err(NameError::ContainerTooLong { name });
        }
        Ok(ContainerName(name))
    }
}

impl TryFrom<&str> for ContainerName {
    type Error = NameError;
    fn try_from(name: &str) -> Result<Self, NameError> {
        if container_alphabet(name) && name.len() <= MAX_CONTAINER_NAME {
            Ok(ContainerName(name.to_owned()))
        } else {
            Err(NameError::ContainerTooLong {
                name: name.to_owned(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernel() {
        for ok in ["eth1", "e1-1", "a234567890abcde", "lo.10", "veth_a"] {
            IfName::try_from(ok).unwrap();
        }
        for bad in [
            "",
            ".",
            "..",
            "a2345678901234567",
            "eth/1",
            "eth:1",
            "eth%d",
            "eth 1",
            "eth\t1",
        ] {
            assert!(IfName::try_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn node_names() {
        NodeName::try_from("leaf1").unwrap();
        NodeName::try_from("r1.core_a-b").unwrap();
        for bad in ["", "-r1", "r1:eth1", "r 1", "r/1", "ü"] {
            assert!(
                matches!(NodeName::try_from(bad), Err(NameError::Node { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            NodeName::try_from("host"),
            Err(NameError::ReservedNode { .. })
        ));
    }

    #[test]
    fn container_names_follow_containerlab_prefixes() {
        let lab = LabName::try_from("srl01").unwrap();
        let node = NodeName::try_from("r1").unwrap();
        let name = |p: &str| {
            ContainerName::new(&Prefix::try_from(p).unwrap(), &lab, &node)
                .unwrap()
                .to_string()
        };
        assert_eq!(
            ContainerName::new(&Prefix::Default, &lab, &node)
                .unwrap()
                .as_str(),
            "clab-srl01-r1"
        );
        assert_eq!(name(""), "r1");
        assert_eq!(name("__lab-name"), "srl01-r1");
        assert_eq!(name("lab"), "lab-srl01-r1");
        let long = LabName::try_from("l".repeat(125).as_str()).unwrap();
        assert!(matches!(
            ContainerName::new(&Prefix::Default, &long, &node),
            Err(NameError::ContainerTooLong { .. })
        ));
    }

    #[test]
    fn node_interfaces() {
        let ni = NodeInterface::try_from("r1:eth1").unwrap();
        assert_eq!((ni.node.as_str(), ni.ifname.as_str()), ("r1", "eth1"));
        assert_eq!(ni.to_string(), "r1:eth1");
        assert!(matches!(
            NodeInterface::try_from("r1"),
            Err(NameError::NodeInterface { .. })
        ));
        assert!(matches!(
            NodeInterface::try_from("r1:eth1:x"),
            Err(NameError::Interface { .. })
        ));
        assert!(matches!(
            NodeInterface::try_from("r 1:eth1"),
            Err(NameError::Node { .. })
        ));
    }

    #[test]
    fn mac_addresses() {
        let mac = MacAddr::try_from("02:42:AC:11:00:02").unwrap();
        assert_eq!(mac.to_string(), "02:42:ac:11:00:02");
        for bad in [
            "02:42:ac:11:00",
            "02:42:ac:11:00:02:03",
            "0g:42:ac:11:00:02",
            "2:42:ac:11:00:02",
        ] {
            assert!(MacAddr::try_from(bad).is_err(), "{bad:?}");
        }
    }
}
