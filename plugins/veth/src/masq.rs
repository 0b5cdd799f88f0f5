//! `ipMasq`: source NAT for traffic from the container's addresses leaving the host, through
//! `berth-firewall` (the rules live in the host's namespace: the calling thread's).

use berth_firewall::{BackendKind, Firewall, FirewallError, Masquerade, Owner};
use ipnetwork::IpNetwork;

use crate::attachment::Attachment;
use crate::config::Masq;

/// Errors of the `masq` module.
#[derive(Debug, thiserror::Error)]
pub enum MasqError {
    #[error("ipMasq: no usable firewall backend (ipMasqBackend {})", requested(*.backend))]
    Detect {
        backend: Option<BackendKind>,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("ipMasq: add masquerade rules for {owner} ({})", list(.sources))]
    Add {
        owner: String,
        sources: Vec<IpNetwork>,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("ipMasq: delete the masquerade rules of {owner}")]
    Del {
        owner: String,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("ipMasq: masquerade rules for {owner} ({})", list(.sources))]
    Check {
        owner: String,
        sources: Vec<IpNetwork>,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("ipMasq: collect stale masquerade rules of network {network}")]
    Gc {
        network: String,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("ipMasq: firewall backend status")]
    Status {
        #[source]
        source: Box<FirewallError>,
    },
}

impl MasqError {
    /// The backend is missing or unusable (rather than a rule operation failing).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, MasqError::Detect { .. } | MasqError::Status { .. })
    }
}

fn requested(backend: Option<BackendKind>) -> &'static str {
    match backend {
        None => "unset: iptables, else nftables",
        Some(BackendKind::Iptables) => "iptables",
        Some(BackendKind::Nftables) => "nftables",
    }
}

fn list(nets: &[IpNetwork]) -> String {
    nets.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn owner(att: &Attachment<'_>) -> Owner {
    Owner::new(att.network, att.container_id, att.ifname)
}

/// The firewall, with the backend `ipMasqBackend` asks for (or the host's).
pub fn firewall(masq: Masq) -> Result<Firewall, MasqError> {
    Firewall::detect(masq.backend).map_err(|source| MasqError::Detect {
        backend: masq.backend,
        source: Box::new(source),
    })
}

/// Masquerades traffic from `sources` (the container's addresses with their subnet prefix:
/// traffic within the subnet is left alone). Idempotent.
pub fn add(fw: &Firewall, att: &Attachment<'_>, sources: Vec<IpNetwork>) -> Result<(), MasqError> {
    let m = Masquerade {
        owner: owner(att),
        sources,
    };
    fw.add_masquerade(&m).map_err(|source| MasqError::Add {
        owner: m.owner.to_string(),
        sources: m.sources.clone(),
        source: Box::new(source),
    })
}

/// Deletes the attachment's rules. Idempotent.
pub fn del(fw: &Firewall, att: &Attachment<'_>) -> Result<(), MasqError> {
    let owner = owner(att);
    fw.del_masquerade(&owner).map_err(|source| MasqError::Del {
        owner: owner.to_string(),
        source: Box::new(source),
    })
}

pub fn check(
    fw: &Firewall,
    att: &Attachment<'_>,
    sources: Vec<IpNetwork>,
) -> Result<(), MasqError> {
    let m = Masquerade {
        owner: owner(att),
        sources,
    };
    fw.check_masquerade(&m).map_err(|source| MasqError::Check {
        owner: m.owner.to_string(),
        sources: m.sources.clone(),
        source: Box::new(source),
    })
}

/// Deletes the rules of `network`'s attachments that are not in `keep` (GC's valid list).
pub fn gc(fw: &Firewall, network: &str, keep: &[(String, String)]) -> Result<(), MasqError> {
    let keep = Owner::of_network(
        network,
        keep.iter()
            .map(|(id, ifname)| (id.as_str(), ifname.as_str())),
    );
    fw.gc_masquerade(network, &keep)
        .map(drop)
        .map_err(|source| MasqError::Gc {
            network: network.to_owned(),
            source: Box::new(source),
        })
}

pub fn status(fw: &Firewall) -> Result<(), MasqError> {
    fw.status().map_err(|source| MasqError::Status {
        source: Box::new(source),
    })
}
