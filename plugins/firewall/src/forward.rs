//! Accepting containers' forwarded traffic on hosts whose `FORWARD` policy is DROP (the
//! reference firewall plugin's `CNI-FORWARD`): replies to the container's addresses and
//! everything it sends, behind an admin chain where the host's own rules run first.
//!
//! iptables only: with nf_tables every base chain on a hook sees the packet and an accept in
//! one cannot override a drop in another, so an accept in Berth's own `inet berth` table
//! would change nothing; that table itself drops nothing but isolated traffic.

use std::net::IpAddr;

use crate::Owner;
use crate::model::{InputError, Tag};

/// The reference's admin chain name.
pub const DEFAULT_ADMIN_CHAIN: &str = "CNI-ADMIN";

/// One attachment's forwarded traffic to accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardAccept {
    pub owner: Owner,
    /// The container's addresses (without prefix).
    pub addresses: Vec<IpAddr>,
    /// Jumped to before any accept (`iptablesAdminChainName`): the host's rules go there.
    pub admin_chain: String,
}

/// A validated [`ForwardAccept`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ForwardPlan {
    pub tag: Tag,
    pub addresses: Vec<IpAddr>,
    pub admin_chain: String,
}

impl ForwardPlan {
    pub fn new(f: &ForwardAccept) -> Result<ForwardPlan, InputError> {
        check_admin_chain(&f.admin_chain)?;
        let mut addresses = f.addresses.clone();
        addresses.sort();
        addresses.dedup();
        Ok(ForwardPlan {
            tag: Tag::new(&f.owner)?,
            addresses,
            admin_chain: f.admin_chain.clone(),
        })
    }
}

/// An iptables chain name of our choosing goes into restore batches: 1–28 printable
/// characters, no quotes, not an option, not one of Berth's own chains.
pub fn check_admin_chain(chain: &str) -> Result<(), InputError> {
    let err = |reason| InputError::Field {
        field: "iptablesAdminChainName",
        value: chain.to_owned(),
        reason,
    };
    if chain.is_empty() || chain.len() > 28 {
        return Err(err("must have 1 to 28 characters"));
    }
    if chain.starts_with('-') || chain.starts_with('!') {
        return Err(err("must not start with - or !"));
    }
    if !chain.chars().all(|c| c.is_ascii_graphic()) || chain.contains(['"', '\'', '\\']) {
        return Err(err("must be printable ASCII without quotes"));
    }
    if chain.starts_with("BERTH-") {
        return Err(err("BERTH- chains are Berth's own"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_chain_names() {
        for ok in ["CNI-ADMIN", "MY_ADMIN", "a"] {
            assert!(check_admin_chain(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "-j ACCEPT",
            "has space",
            "quote\"",
            "BERTH-FORWARD",
            "a-name-that-is-far-too-long-for-iptables",
        ] {
            assert!(check_admin_chain(bad).is_err(), "{bad:?}");
        }
    }
}
