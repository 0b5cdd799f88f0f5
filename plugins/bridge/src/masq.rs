//! `ipMasq`: source NAT of the container's traffic leaving the host, through berth-firewall.
//!
//! The firewall acts on the calling thread's namespace and spawns `iptables`/`nft` from it, so
//! these functions must run on the plugin's own thread (the host's namespace), never inside
//! `Netns::run`.

use berth_cni::{Attachment, CmdArgs};
use ipnetwork::IpNetwork;

use crate::config::MasqBackend;
use berth_firewall::{BackendKind, Firewall, FirewallError, Masquerade, Owner};

/// Errors of the `masq` module.
#[derive(Debug, thiserror::Error)]
pub enum MasqError {
    #[error("ipMasq: no usable firewall backend{}", requested_text(*.requested))]
    Detect {
        requested: Option<MasqBackend>,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("ipMasq: add masquerade rules for {sources} of {owner}")]
    Add {
        owner: String,
        sources: String,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("ipMasq: delete masquerade rules of {owner}")]
    Del {
        owner: String,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("ipMasq: masquerade rules for {sources} of {owner} are missing or wrong")]
    Check {
        owner: String,
        sources: String,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("ipMasq: collect stale masquerade rules of network {network}")]
    Gc {
        network: String,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("ipMasq: the firewall backend is not usable")]
    Status(#[source] Box<FirewallError>),
}

fn requested_text(requested: Option<MasqBackend>) -> &'static str {
    match requested {
        Some(MasqBackend::Iptables) => " (ipMasqBackend iptables requested)",
        Some(MasqBackend::Nftables) => " (ipMasqBackend nftables requested)",
        None => "",
    }
}

fn list(sources: &[IpNetwork]) -> String {
    sources
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe(owner: &Owner) -> String {
    format!("{}/{}/{}", owner.network, owner.container_id, owner.ifname)
}

/// The attachment's identity in the firewall: the spec's (network, container id, ifname).
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

/// The masquerade rules of one attachment.
pub struct Masq {
    firewall: Firewall,
}

impl Masq {
    /// Detects the backend (or takes the requested one).
    pub fn open(requested: Option<MasqBackend>) -> Result<Masq, MasqError> {
        let kind = requested.map(|b| match b {
            MasqBackend::Iptables => BackendKind::Iptables,
            MasqBackend::Nftables => BackendKind::Nftables,
        });
        Firewall::detect(kind)
            .map(|firewall| Masq { firewall })
            .map_err(|source| MasqError::Detect {
                requested,
                source: Box::new(source),
            })
    }

    pub fn add(&self, owner: &Owner, sources: &[IpNetwork]) -> Result<(), MasqError> {
        self.firewall
            .add_masquerade(&Masquerade {
                owner: owner.clone(),
                sources: sources.to_vec(),
            })
            .map_err(|source| MasqError::Add {
                owner: describe(owner),
                sources: list(sources),
                source: Box::new(source),
            })
    }

    /// Idempotent: an attachment without rules is fine.
    pub fn del(&self, owner: &Owner) -> Result<(), MasqError> {
        self.firewall
            .del_masquerade(owner)
            .map_err(|source| MasqError::Del {
                owner: describe(owner),
                source: Box::new(source),
            })
    }

    pub fn check(&self, owner: &Owner, sources: &[IpNetwork]) -> Result<(), MasqError> {
        self.firewall
            .check_masquerade(&Masquerade {
                owner: owner.clone(),
                sources: sources.to_vec(),
            })
            .map_err(|source| MasqError::Check {
                owner: describe(owner),
                sources: list(sources),
                source: Box::new(source),
            })
    }

    /// Removes the rules of every attachment of `network` not in `valid`.
    pub fn gc(&self, network: &str, valid: &[Attachment]) -> Result<(), MasqError> {
        self.firewall
            .gc_masquerade(network, &valid_owners(network, valid))
            .map(drop)
            .map_err(|source| MasqError::Gc {
                network: network.to_owned(),
                source: Box::new(source),
            })
    }

    pub fn status(&self) -> Result<(), MasqError> {
        self.firewall
            .status()
            .map_err(|e| MasqError::Status(Box::new(e)))
    }
}
