//! One attachment — (network, container id, ifname), the key the spec gives every ADD — and
//! the names derived from it.
//!
//! The host end's name is derived rather than random (ptp uses `veth` + random hex), so DEL
//! can find the host end by name when the container's namespace file is already gone but the
//! namespace (and with it the pair) is still alive. For the same reason the peer end of a
//! container-to-container link carries a MAC derived from the attachment: DEL deletes a link
//! in the peer's namespace only when it carries this mark, never another link that merely has
//! the same name.

use berth_cni::{CmdArgs, HostLinkName, NetworkName};
use berth_netlink::Mac;

/// The identity of one attachment.
#[derive(Debug, Clone, Copy)]
pub struct Attachment<'a> {
    pub network: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
}

impl<'a> Attachment<'a> {
    pub fn new(network: &'a NetworkName, args: &'a CmdArgs) -> Attachment<'a> {
        Attachment {
            network: network.as_str(),
            container_id: args.container_id.as_str(),
            ifname: args.ifname.as_str(),
        }
    }

    /// The attachment's identity in the firewall (its masquerade rules).
    pub fn owner(&self) -> berth_firewall::Owner {
        berth_firewall::Owner::new(self.network, self.container_id, self.ifname)
    }

    /// The host end's names and owner alias, shared with the bridge plugin.
    pub fn host_link(&self) -> HostLinkName {
        HostLinkName::of(self.network, self.container_id, self.ifname)
    }

    /// A locally administered unicast MAC marking the peer end of this attachment.
    pub fn peer_mac(&self) -> Mac {
        let h = self.hash(b"peer-mac").to_be_bytes();
        // Bit 1 of the first octet: locally administered; bit 0 clear: unicast.
        [(h[0] & 0xfc) | 0x02, h[1], h[2], h[3], h[4], h[5]]
    }

    /// FNV-1a (64 bit) over `domain`, then the three names, NUL-separated. NUL cannot occur in
    /// any of them, so distinct attachments never hash the same input. Stable across releases:
    /// a later version must find the links an earlier one created.
    fn hash(&self, domain: &[u8]) -> u64 {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut h = OFFSET;
        let parts: [&[u8]; 4] = [
            domain,
            self.network.as_bytes(),
            self.container_id.as_bytes(),
            self.ifname.as_bytes(),
        ];
        for part in parts {
            for &b in part.iter().chain(&[0u8]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(PRIME);
            }
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att<'a>(network: &'a str, container_id: &'a str, ifname: &'a str) -> Attachment<'a> {
        Attachment {
            network,
            container_id,
            ifname,
        }
    }

    #[test]
    fn every_part_matters_and_boundaries_count() {
        let base = att("net", "ctr-1", "eth0").peer_mac();
        for other in [
            att("net2", "ctr-1", "eth0"),
            att("net", "ctr-2", "eth0"),
            att("net", "ctr-1", "eth1"),
            att("ne", "tctr-1", "eth0"),
        ] {
            assert_ne!(other.peer_mac(), base, "{other:?}");
        }
    }

    #[test]
    fn peer_mac_is_local_unicast() {
        let mac = att("net", "ctr-1", "eth0").peer_mac();
        assert_eq!(mac[0] & 0x03, 0x02);
        assert_ne!(mac, att("net", "ctr-1", "eth1").peer_mac());
    }
}
