//! The one table from this plugin's errors to CNI error codes. Messages are the top-level
//! `Display`; `details` carry the chain of causes.

use berth_cni::{CniError, ErrorCode};
use berth_firewall::{FirewallError, IptablesError, NftError};

use crate::config::ConfigError;
use crate::localnet::LocalnetError;

/// Errors of the plugin's verbs.
#[derive(Debug, thiserror::Error)]
pub enum PortmapError {
    #[error("portmap: invalid configuration")]
    Config(#[from] Box<ConfigError>),
    #[error("portmap: no usable firewall backend")]
    Detect(#[source] Box<FirewallError>),
    #[error("portmap: port mappings of {owner} are invalid")]
    Invalid {
        owner: String,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("portmap: publish ports of {owner}")]
    Add {
        owner: String,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("portmap: remove port mappings of {owner}")]
    Del {
        owner: String,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("portmap: port mappings of {owner} are missing or wrong")]
    Check {
        owner: String,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("portmap: remove stale port mappings of network {network}")]
    Gc {
        network: String,
        #[source]
        source: Box<FirewallError>,
    },
    #[error("portmap: the firewall backend is not usable")]
    Status(#[source] Box<FirewallError>),
    #[error("portmap: let localhost reach {owner}'s ports")]
    Localnet {
        owner: String,
        #[source]
        source: Box<LocalnetError>,
    },
}

/// Bad input is the configuration's fault (7), an option Berth's chosen backend cannot
/// express is an unsupported field (2), an unusable backend is "not available" (50).
fn firewall_code(e: &FirewallError) -> ErrorCode {
    if e.is_input() {
        return match e {
            FirewallError::Nftables(NftError::Unsupported { .. }) => ErrorCode::UnsupportedField,
            _ => ErrorCode::InvalidConfig,
        };
    }
    match e {
        FirewallError::NoBackend { .. }
        | FirewallError::Iptables(IptablesError::NotFound { .. } | IptablesError::Version(_))
        | FirewallError::Nftables(NftError::NotFound) => ErrorCode::NotAvailable,
        _ => ErrorCode::Internal,
    }
}

impl From<PortmapError> for CniError {
    fn from(e: PortmapError) -> CniError {
        let code = match &e {
            PortmapError::Config(_) => ErrorCode::InvalidConfig,
            PortmapError::Detect(_) | PortmapError::Status(_) => ErrorCode::NotAvailable,
            PortmapError::Invalid { source, .. }
            | PortmapError::Add { source, .. }
            | PortmapError::Del { source, .. }
            | PortmapError::Gc { source, .. } => firewall_code(source),
            PortmapError::Check { .. } | PortmapError::Localnet { .. } => ErrorCode::Internal,
        };
        CniError::from_error(code, &e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_firewall::{PortError, Protocol};

    #[test]
    fn codes() {
        let e: CniError = PortmapError::Config(Box::new(ConfigError::MarkAndChain)).into();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        let bad = FirewallError::Ports(PortError::Protocol {
            mapping: "80->80/icmp".into(),
            protocol: "icmp".into(),
        });
        let e: CniError = PortmapError::Invalid {
            owner: "n/c/eth0".into(),
            source: Box::new(bad),
        }
        .into();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        assert!(e.details.contains("icmp"), "{e:?}");
        let e: CniError = PortmapError::Invalid {
            owner: "n/c/eth0".into(),
            source: Box::new(FirewallError::Nftables(NftError::Unsupported {
                what: "x".into(),
            })),
        }
        .into();
        assert_eq!(e.code, ErrorCode::UnsupportedField);
        let e: CniError =
            PortmapError::Status(Box::new(FirewallError::Nftables(NftError::NotFound))).into();
        assert_eq!(e.code, ErrorCode::NotAvailable);
        let _ = Protocol::Tcp;
    }
}
