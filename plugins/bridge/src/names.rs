//! Deterministic names of the host-side devices, so that CHECK, DEL and GC find them again
//! without any state of their own.

/// `veth` + 11 hex digits = 15 bytes, the longest Linux interface name. The reference uses 8
/// random hex digits; 44 bits of hash keep collisions negligible on a busy host (about one in
/// 3·10⁵ with 10 000 attachments) while staying deterministic.
const HASH_DIGITS: usize = 11;

/// The host end of an attachment's veth pair, from (network, container id, ifname): the key the
/// CNI spec identifies an attachment by.
pub fn host_veth_name(network: &str, container_id: &str, ifname: &str) -> String {
    hashed_name("veth", &[network, container_id, ifname])
}

/// The bridge-side end of the veth pair carrying a VLAN's gateway address (`isGateway` with
/// `vlan`); the other end is named `<bridge>.<vid>` as in the reference.
pub fn vlan_gateway_peer_name(bridge: &str, vid: u16) -> String {
    hashed_name("vgw", &[bridge, &vid.to_string()])
}

fn hashed_name(prefix: &str, parts: &[&str]) -> String {
    let hash = stable_hash(parts);
    let digits = HASH_DIGITS + 4 - prefix.len();
    let hex = format!("{hash:016x}");
    format!("{prefix}{}", &hex[..digits])
}

/// FNV-1a over the parts (each followed by a NUL, so `("ab", "c")` ≠ `("a", "bc")`), then the
/// splitmix64 finalizer so the leading hex digits depend on every input byte. Stable across
/// Rust versions and platforms, unlike `std`'s `DefaultHasher`: these names outlive a plugin
/// upgrade.
fn stable_hash(parts: &[&str]) -> u64 {
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
    fn names_are_stable_and_fit_ifnamsiz() {
        let a = host_veth_name("net1", "ctr-1", "eth0");
        assert_eq!(a, host_veth_name("net1", "ctr-1", "eth0"));
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("veth"));
        assert!(a[4..].bytes().all(|b| b.is_ascii_hexdigit()));
        // Pinned: a change here renames every host veth and breaks DEL across upgrades.
        assert_eq!(a, "vethe69d6012a6e");
        let v = vlan_gateway_peer_name("cni0", 100);
        assert_eq!(v.len(), 15);
        assert!(v.starts_with("vgw"));
    }

    #[test]
    fn every_part_matters_and_parts_do_not_run_together() {
        let base = host_veth_name("net1", "ctr-1", "eth0");
        assert_ne!(base, host_veth_name("net2", "ctr-1", "eth0"));
        assert_ne!(base, host_veth_name("net1", "ctr-2", "eth0"));
        assert_ne!(base, host_veth_name("net1", "ctr-1", "eth1"));
        assert_ne!(
            host_veth_name("ab", "c", "eth0"),
            host_veth_name("a", "bc", "eth0")
        );
    }
}
