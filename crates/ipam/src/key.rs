//! Who holds an address: the key the CNI spec prescribes, and what the disk records.

use std::fmt;
use std::net::IpAddr;

/// The state key the CNI spec prescribes for IPAM: (network name, container id, ifname).
///
/// The plugin builds it from validated `NetworkName`/`ContainerId`/`IfName`; this crate only
/// relies on the network name being a single path component, which [`crate::DiskStore::open`]
/// checks again.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseKey {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

impl LeaseKey {
    pub fn new(
        network: impl Into<String>,
        container_id: impl Into<String>,
        ifname: impl Into<String>,
    ) -> LeaseKey {
        LeaseKey {
            network: network.into(),
            container_id: container_id.into(),
            ifname: ifname.into(),
        }
    }
}

impl fmt::Display for LeaseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.network, self.container_id, self.ifname)
    }
}

/// One reservation as recorded in a store.
///
/// `ifname` is `None` for files written by old reference versions, which stored the bare
/// container id; such a lease belongs to every interface of that container.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Lease {
    pub ip: IpAddr,
    pub container_id: String,
    pub ifname: Option<String>,
}

impl Lease {
    /// Current format: container id and ifname both equal.
    pub fn is_exactly(&self, container_id: &str, ifname: &str) -> bool {
        self.ifname.as_deref() == Some(ifname) && self.container_id == container_id.trim()
    }

    /// Old format (no ifname) with this container id.
    pub fn is_legacy_of(&self, container_id: &str) -> bool {
        self.ifname.is_none() && self.container_id == container_id.trim()
    }

    /// Held by `key`, in either format.
    pub fn is_held_by(&self, key: &LeaseKey) -> bool {
        self.is_exactly(&key.container_id, &key.ifname) || self.is_legacy_of(&key.container_id)
    }

    /// Parse a reservation file's content, as the reference compares it: whitespace-trimmed,
    /// `"<id>\r\n<ifname>"`, or a bare `"<id>"` for the old format.
    pub fn parse_holder(ip: IpAddr, content: &str) -> Lease {
        let content = content.trim();
        match content.split_once("\r\n") {
            Some((id, ifname)) => Lease {
                ip,
                container_id: id.to_owned(),
                ifname: Some(ifname.to_owned()),
            },
            None => Lease {
                ip,
                container_id: content.to_owned(),
                ifname: None,
            },
        }
    }

    /// Byte form written by the reference since it keyed by ifname (no trailing newline).
    pub fn file_content(container_id: &str, ifname: &str) -> String {
        format!("{}\r\n{ifname}", container_id.trim())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let ip: IpAddr = "198.18.5.2".parse().unwrap();
        let content = Lease::file_content("c1", "eth0");
        assert_eq!(content.as_bytes(), b"c1\r\neth0");
        let lease = Lease::parse_holder(ip, &content);
        let key = LeaseKey::new("n", "c1", "eth0");
        assert!(lease.is_exactly("c1", "eth0") && lease.is_held_by(&key));
        assert!(!lease.is_held_by(&LeaseKey::new("n", "c1", "eth1")));

        let old = Lease::parse_holder(ip, "c1\n");
        assert_eq!(old.ifname, None);
        assert!(old.is_held_by(&key) && old.is_held_by(&LeaseKey::new("n", "c1", "eth1")));
        assert!(!old.is_held_by(&LeaseKey::new("n", "c2", "eth0")));
    }
}
