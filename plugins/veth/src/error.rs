//! The plugin's error, and the one table from it to CNI error codes.

use berth_cni::{CniError, ErrorCode};
use berth_netlink::error_chain;

use crate::check::CheckError;
use crate::config::ConfigError;
use crate::forwarding::ForwardingError;
use crate::ipam::IpamError;
use crate::ns::{NsError, Role};
use crate::pair::PairError;
use crate::step::Step;
use berth_firewall::MasqError;

/// Everything a verb can fail with: each module's error, plus the verbs' own cases.
#[derive(Debug, thiserror::Error)]
pub enum VethError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Ns(#[from] NsError),
    #[error(transparent)]
    Pair(#[from] PairError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Forwarding(#[from] ForwardingError),
    #[error(transparent)]
    Masq(#[from] MasqError),
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error("CHECK needs prevResult: the result of the ADD to check")]
    NoPrevResult,
    /// A test asked ADD to fail here (`Veth { failpoint }`).
    #[error("failpoint: ADD stopped after step {0}")]
    Failpoint(Step),
    #[error("a DEL thread panicked while {0}")]
    Panicked(&'static str),
    /// DEL tried every step; these failed.
    #[error("DEL failed: {}", .0.iter().map(|e| error_chain(e)).collect::<Vec<_>>().join("; "))]
    Teardown(Vec<VethError>),
}

impl VethError {
    /// The outcome of a best-effort teardown.
    pub fn teardown(mut errors: Vec<VethError>) -> Result<(), VethError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(VethError::Teardown(errors)),
        }
    }

    fn code(&self) -> ErrorCode {
        match self {
            VethError::Config(_) | VethError::NoPrevResult => ErrorCode::InvalidConfig,
            // CNI_NETNS is the runtime's input; peer.netns the configuration's.
            VethError::Ns(NsError::Open {
                role: Role::Container,
                ..
            }) => ErrorCode::InvalidEnv,
            VethError::Ns(NsError::Open {
                role: Role::Peer, ..
            })
            | VethError::Ns(NsError::PeerIsContainer { .. }) => ErrorCode::InvalidConfig,
            VethError::Ns(_) | VethError::Pair(_) | VethError::Forwarding(_) => ErrorCode::Io,
            VethError::Ipam(IpamError::Call { source, .. }) => source.code,
            VethError::Ipam(IpamError::NoGateway { .. } | IpamError::BadGateway { .. }) => {
                ErrorCode::InvalidConfig
            }
            VethError::Ipam(IpamError::NoAddress { .. }) => ErrorCode::Internal,
            VethError::Masq(e) if e.is_unavailable() => ErrorCode::NotAvailable,
            VethError::Masq(_)
            | VethError::Check(_)
            | VethError::Failpoint(_)
            | VethError::Panicked(_) => ErrorCode::Internal,
            // The first failure decides; the message lists them all.
            VethError::Teardown(errors) => errors.first().map_or(ErrorCode::Internal, Self::code),
        }
    }
}

impl From<VethError> for CniError {
    fn from(err: VethError) -> CniError {
        let code = err.code();
        match &err {
            // The IPAM plugin's own error, prefixed with what we asked it.
            VethError::Ipam(IpamError::Call { source, .. }) => CniError {
                code,
                msg: format!("{err}: {}", source.msg),
                details: source.details.clone(),
            },
            _ => CniError::from_error(code, &err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipam_errors_keep_their_code() {
        let err = VethError::Ipam(IpamError::Call {
            kind: "host-local".into(),
            verb: "ADD",
            source: CniError::new(ErrorCode::TryAgainLater, "range is full")
                .with_details("198.18.0.0/30"),
        });
        let cni = CniError::from(err);
        assert_eq!(cni.code, ErrorCode::TryAgainLater);
        assert_eq!(cni.msg, "IPAM plugin host-local ADD: range is full");
        assert_eq!(cni.details, "198.18.0.0/30");
    }

    #[test]
    fn config_errors_are_code_7_and_teardown_lists_all() {
        let cni = CniError::from(VethError::Config(ConfigError::HostModeNeedsIpam));
        assert_eq!(cni.code, ErrorCode::InvalidConfig);
        let err = VethError::teardown(vec![
            VethError::NoPrevResult,
            VethError::Failpoint(Step::Ipam),
        ])
        .unwrap_err();
        let cni = CniError::from(err);
        assert_eq!(cni.code, ErrorCode::InvalidConfig);
        assert!(
            cni.msg.contains("prevResult") && cni.msg.contains("after step ipam"),
            "{}",
            cni.msg
        );
        assert!(VethError::teardown(Vec::new()).is_ok());
    }
}
