//! `ipMasq` as `bridge` and `veth` (host mode) do it: the firewall `ipMasqBackend` asks for,
//! and one attachment's masquerade rules, with errors that say `ipMasq`. One helper for both
//! plugins.
//!
//! The firewall acts on the calling thread's namespace (see the crate docs): call these from
//! the plugin's own thread, the host's namespace.

use ipnetwork::IpNetwork;

use crate::{BackendKind, Desired, Firewall, FirewallError, Masquerade, Owner, Removal, RuleKind};

/// Errors of the `masquerading` module.
#[derive(Debug, thiserror::Error)]
pub enum MasqError {
    #[error("ipMasq: no usable firewall backend (ipMasqBackend {})", requested_text(*.requested))]
    Detect {
        requested: Option<BackendKind>,
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
    #[error("ipMasq: delete the masquerade rules of {owner}")]
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

impl MasqError {
    /// The backend is missing or unusable (CNI code 50), rather than a rule operation failing.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, MasqError::Detect { .. } | MasqError::Status(_))
    }

    /// The request itself was refused (a bad owner or address): nothing was applied.
    pub fn is_input(&self) -> bool {
        match self {
            MasqError::Add { source, .. } | MasqError::Check { source, .. } => source.is_input(),
            _ => false,
        }
    }
}

fn requested_text(backend: Option<BackendKind>) -> &'static str {
    match backend {
        None => "unset: iptables, else nftables",
        Some(BackendKind::Iptables) => "iptables",
        Some(BackendKind::Nftables) => "nftables",
    }
}

fn list(sources: &[IpNetwork]) -> String {
    sources
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The masquerade rules of a plugin's attachments, on the backend it asked for.
#[derive(Debug)]
pub struct Masquerading {
    firewall: Firewall,
}

impl Masquerading {
    /// Detects the backend, or takes the requested one. Done before anything is created, so
    /// a host without a usable backend fails with nothing to undo.
    pub fn open(requested: Option<BackendKind>) -> Result<Masquerading, MasqError> {
        Firewall::detect(requested)
            .map(|firewall| Masquerading { firewall })
            .map_err(|source| MasqError::Detect {
                requested,
                source: Box::new(source),
            })
    }

    /// Masquerades traffic from `sources` (the container's addresses with their subnet
    /// prefix: traffic within the subnet keeps its source). Idempotent.
    pub fn add(&self, owner: &Owner, sources: &[IpNetwork]) -> Result<(), MasqError> {
        self.firewall
            .apply(&Desired::Masquerade(Masquerade {
                owner: owner.clone(),
                sources: sources.to_vec(),
            }))
            .map_err(|source| MasqError::Add {
                owner: owner.to_string(),
                sources: list(sources),
                source: Box::new(source),
            })
    }

    /// Idempotent: an attachment without rules is fine.
    pub fn del(&self, owner: &Owner) -> Result<(), MasqError> {
        self.firewall
            .remove(Removal::Masquerade(owner))
            .map_err(|source| MasqError::Del {
                owner: owner.to_string(),
                source: Box::new(source),
            })
    }

    pub fn check(&self, owner: &Owner, sources: &[IpNetwork]) -> Result<(), MasqError> {
        self.firewall
            .check(&Desired::Masquerade(Masquerade {
                owner: owner.clone(),
                sources: sources.to_vec(),
            }))
            .map_err(|source| MasqError::Check {
                owner: owner.to_string(),
                sources: list(sources),
                source: Box::new(source),
            })
    }

    /// Removes the rules of every attachment of `network` not in `keep` (GC's valid list).
    pub fn gc(&self, network: &str, keep: &[Owner]) -> Result<(), MasqError> {
        self.firewall
            .gc(RuleKind::Masquerade, network, keep)
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
