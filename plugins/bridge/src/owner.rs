//! The attachment's identity in the firewall: the spec's (network, container id, ifname).

use berth_cni::{Attachment, CmdArgs};
use berth_firewall::Owner;

pub fn owner(network: &str, args: &CmdArgs) -> Owner {
    Owner::new(network, args.container_id.as_str(), args.ifname.as_str())
}

/// The owners of `network`'s attachments in a GC's valid list.
pub fn valid_owners(network: &str, valid: &[Attachment]) -> Vec<Owner> {
    Owner::of_network(
        network,
        valid
            .iter()
            .map(|a| (a.container_id.as_str(), a.ifname.as_str())),
    )
}
