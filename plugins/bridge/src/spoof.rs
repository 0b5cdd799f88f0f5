//! `macspoofchk`: the container may only send frames from its own MAC, enforced on its
//! bridge port by berth-firewall's nftables bridge table (see `berth_firewall::MacSpoof`).
//!
//! Like `ipMasq`'s, these functions spawn `nft` in the calling thread's namespace: call
//! them from the plugin's own thread (the host's namespace).

use berth_cni::Attachment;
use berth_firewall::{FirewallError, MacAddr, MacSpoof, MacSpoofGuard, Owner};
use berth_netlink::Mac;

/// Errors of the `spoof` module.
#[derive(Debug, thiserror::Error)]
pub enum SpoofError {
    #[error("macspoofchk: nftables is not usable")]
    Detect(#[source] Box<FirewallError>),
    #[error("macspoofchk: container interface {ifname} has no MAC address")]
    NoMac { ifname: String },
    #[error("macspoofchk: guard bridge port {port} (MAC {mac}) of {owner}")]
    Add {
        port: String,
        mac: MacAddr,
        owner: Owner,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("macspoofchk: remove the guard of {owner}")]
    Del {
        owner: Owner,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("macspoofchk: the guard of bridge port {port} (MAC {mac}) is missing or wrong")]
    Check {
        port: String,
        mac: MacAddr,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("macspoofchk: collect stale guards of network {network}")]
    Gc {
        network: String,
        #[source]
        source: Box<FirewallError>,
    },
}

/// The MAC spoofing guards of this plugin's attachments.
pub struct Spoof {
    table: MacSpoof,
}

impl Spoof {
    pub fn open() -> Result<Spoof, SpoofError> {
        MacSpoof::detect()
            .map(|table| Spoof { table })
            .map_err(|e| SpoofError::Detect(Box::new(e)))
    }

    pub fn guard(
        owner: &Owner,
        port: &str,
        mac: Option<&Mac>,
    ) -> Result<MacSpoofGuard, SpoofError> {
        let mac = mac.ok_or_else(|| SpoofError::NoMac {
            ifname: owner.ifname.clone(),
        })?;
        Ok(MacSpoofGuard {
            owner: owner.clone(),
            port: port.to_owned(),
            mac: MacAddr(*mac),
        })
    }

    pub fn add(&self, g: &MacSpoofGuard) -> Result<(), SpoofError> {
        self.table.add(g).map_err(|source| SpoofError::Add {
            port: g.port.clone(),
            mac: g.mac,
            owner: g.owner.clone(),
            source: Box::new(source),
        })
    }

    /// Idempotent: an attachment without a guard is fine.
    pub fn del(&self, owner: &Owner) -> Result<(), SpoofError> {
        self.table.del(owner).map_err(|source| SpoofError::Del {
            owner: owner.clone(),
            source: Box::new(source),
        })
    }

    pub fn check(&self, g: &MacSpoofGuard) -> Result<(), SpoofError> {
        self.table.check(g).map_err(|source| SpoofError::Check {
            port: g.port.clone(),
            mac: g.mac,
            source: Box::new(source),
        })
    }

    /// Removes the guards of every attachment of `network` not in `valid`.
    pub fn gc(&self, network: &str, valid: &[Attachment]) -> Result<(), SpoofError> {
        self.table
            .gc(network, &crate::owner::valid_owners(network, valid))
            .map(drop)
            .map_err(|source| SpoofError::Gc {
                network: network.to_owned(),
                source: Box::new(source),
            })
    }
}
