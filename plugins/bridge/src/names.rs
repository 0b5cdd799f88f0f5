//! Deterministic names of the bridge's own host-side devices, so that CHECK, DEL and GC find
//! them again without any state of their own. The host end of an attachment's veth is named
//! by `berth_cni::HostLinkName`, shared with the `veth` plugin.

use berth_cni::names::stable_hash;

/// `IFNAMSIZ` less the terminating NUL.
const MAX_NAME: usize = 15;

/// The bridge-side end of the veth pair carrying a VLAN's gateway address (`isGateway` with
/// `vlan`); the other end is named `<bridge>.<vid>` as in the reference.
pub fn vlan_gateway_peer_name(bridge: &str, vid: u16) -> String {
    let hex = format!("{:016x}", stable_hash(&[bridge, &vid.to_string()]));
    format!("vgw{}", &hex[..MAX_NAME - 3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_gateway_names_are_stable_and_fit_ifnamsiz() {
        let v = vlan_gateway_peer_name("cni0", 100);
        assert_eq!(v, vlan_gateway_peer_name("cni0", 100));
        assert_eq!(v.len(), 15);
        assert!(v.starts_with("vgw"));
        assert_ne!(v, vlan_gateway_peer_name("cni0", 101));
        assert_ne!(v, vlan_gateway_peer_name("cni1", 100));
    }
}
