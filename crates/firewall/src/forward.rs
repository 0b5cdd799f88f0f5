//! Accepting containers' forwarded traffic on hosts whose `FORWARD` policy is DROP (the
//! reference firewall plugin's `CNI-FORWARD`): replies to the container's addresses and
//! everything it sends, behind an admin chain where the host's own rules run first.
//!
//! iptables only: with nf_tables every base chain on a hook sees the packet and an accept in
//! one cannot override a drop in another, so an accept in Berth's own `inet berth` table
//! would change nothing; that table itself drops nothing but isolated traffic.

use std::net::IpAddr;

use crate::Owner;
use crate::model::{InputError, Tag, chain_name_problem};

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

/// A chain name of the configuration goes into restore batches (see
/// [`chain_name_problem`]), and must not be one of Berth's own chains.
pub fn check_admin_chain(chain: &str) -> Result<(), InputError> {
    let problem = chain_name_problem(chain).or_else(|| {
        chain
            .starts_with("BERTH-")
            .then_some("BERTH- chains are Berth's own")
    });
    match problem {
        Some(reason) => Err(InputError::Field {
            field: "iptablesAdminChainName",
            value: chain.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
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
