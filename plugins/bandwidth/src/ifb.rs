//! The ifb device that egress traffic is redirected to: its name and its owner mark.

use sha2::{Digest, Sha512};

/// The reference's prefix; with 12 hex digits the name fills IFNAMSIZ (15 bytes).
const PREFIX: &str = "bwp";
const NAME_LEN: usize = 15;
/// `IFALIASZ` less the terminating NUL.
const MAX_ALIAS: usize = 255;
const ALIAS_PREFIX: &str = "berth-bandwidth:";

/// The reference's name: `bwp` + the first hex digits of SHA-512(network name + container
/// id). Kept identical so that DEL finds an ifb the reference created and results match. Like
/// the reference's, it does not depend on the interface name: two attachments of one container
/// to one network cannot both shape egress.
pub fn name(network: &str, container_id: &str) -> String {
    let digest = Sha512::new()
        .chain_update(network.as_bytes())
        .chain_update(container_id.as_bytes())
        .finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{PREFIX}{}", &hex[..NAME_LEN - PREFIX.len()])
}

/// The alias (`IFLA_IFALIAS`) marking an ifb as created by Berth for `network`. GC needs it:
/// the name is a hash, so without the mark a stale ifb of this network cannot be told from
/// another network's. Long network names are hashed to fit the kernel's 255 bytes.
pub fn owner_alias(network: &str) -> String {
    let plain = format!("{ALIAS_PREFIX}{network}");
    if plain.len() <= MAX_ALIAS {
        return plain;
    }
    let digest = Sha512::digest(network.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{ALIAS_PREFIX}#{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_reference() {
        // Created by /usr/lib/cni/bandwidth (v1.1.1) for network "bwnet", container "ctr1";
        // and the newer reference's test fixture (network "cni-plugin-bandwidth-test",
        // container "dummy").
        assert_eq!(name("bwnet", "ctr1"), "bwpea62040b30ca");
        assert_eq!(
            name("cni-plugin-bandwidth-test", "dummy"),
            "bwpa8eda89404b7"
        );
    }

    #[test]
    fn alias_fits_ifaliasz() {
        assert_eq!(owner_alias("net"), "berth-bandwidth:net");
        let long = "n".repeat(300);
        let alias = owner_alias(&long);
        assert!(alias.len() <= MAX_ALIAS && alias.starts_with("berth-bandwidth:#"));
        assert_eq!(alias, owner_alias(&long));
    }
}
