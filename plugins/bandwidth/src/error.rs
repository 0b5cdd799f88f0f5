//! The plugin's error, and the one table from it to CNI error codes.
//!
//! The reference reports every failure of this plugin as a plain Go error, which its skeleton
//! turns into code 999. Berth uses the spec's codes where they say more, as every Berth plugin
//! does: a configuration the plugin refuses (limits, subnets, a burst too small for the link, a
//! `prevResult` that is missing or does not list the host end) is 7; a wrongly typed key is 6
//! (berth-cni decodes before the plugin runs); what the system refuses or lacks (no veth peer,
//! a netns that cannot be opened, a netlink request the kernel rejects) is 999, as in the
//! reference.

use berth_cni::{CniError, ErrorCode};
use berth_netlink::{LinkError, OpenError, TcError, error_chain};

use crate::config::ConfigError;
use crate::host::HostError;
use crate::plan::BucketTooSmall;
use crate::step::Step;

/// Everything a verb can fail with.
#[derive(Debug, thiserror::Error)]
pub enum BandwidthError {
    /// The `CNI_*` environment (checked by berth-cni first; kept for its code).
    #[error(transparent)]
    Env(#[from] CniError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Bucket(#[from] Box<BucketTooSmall>),
    /// The reference's words (ADD; CHECK says "a chained plugin").
    #[error("must be called as chained plugin: prevResult is missing")]
    NoPrevResult,
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("open rtnetlink in the host's namespace")]
    OpenHost(#[source] OpenError),
    #[error("read the packet scheduler's clock")]
    Clock(#[source] TcError),
    #[error("shape traffic into the container on {link}")]
    IngressShaper {
        link: String,
        #[source]
        source: TcError,
    },
    #[error("create ifb device {name}")]
    CreateIfb {
        name: String,
        #[source]
        source: LinkError,
    },
    #[error("set up ifb device {name}")]
    ConfigureIfb {
        name: String,
        #[source]
        source: LinkError,
    },
    #[error("add the ingress qdisc on {link}")]
    IngressHook {
        link: String,
        #[source]
        source: TcError,
    },
    #[error("redirect traffic from the container on {link} to {ifb}")]
    Redirect {
        link: String,
        ifb: String,
        #[source]
        source: Box<TcError>,
    },
    #[error("shape traffic from the container on {ifb}")]
    EgressShaper {
        ifb: String,
        #[source]
        source: TcError,
    },
    #[error("inspect link {link}")]
    InspectLink {
        link: String,
        #[source]
        source: LinkError,
    },
    #[error("inspect the traffic control of {link}")]
    InspectTc {
        link: String,
        #[source]
        source: TcError,
    },
    #[error("remove {what} from {link}")]
    Unshape {
        what: &'static str,
        link: String,
        #[source]
        source: TcError,
    },
    #[error("delete ifb device {name}")]
    DeleteIfb {
        name: String,
        #[source]
        source: LinkError,
    },
    #[error("list the host's links")]
    ListLinks(#[source] LinkError),
    /// CHECK found the kernel's state different from the configuration.
    #[error("CHECK: {} problem{}: {}", .0.len(), if .0.len() == 1 { "" } else { "s" }, .0.join("; "))]
    Check(Vec<String>),
    /// A test asked ADD to fail here (`Bandwidth { failpoint }`).
    #[error("failpoint: ADD stopped after step {0}")]
    Failpoint(Step),
    /// DEL or GC tried every step; these failed.
    #[error("{}", .0.iter().map(|e| error_chain(e)).collect::<Vec<_>>().join("; "))]
    Teardown(Vec<BandwidthError>),
}

impl From<BucketTooSmall> for BandwidthError {
    fn from(e: BucketTooSmall) -> BandwidthError {
        BandwidthError::Bucket(Box::new(e))
    }
}

impl BandwidthError {
    /// The outcome of a best-effort teardown.
    pub fn teardown(mut errors: Vec<BandwidthError>) -> Result<(), BandwidthError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(BandwidthError::Teardown(errors)),
        }
    }

    fn code(&self) -> ErrorCode {
        match self {
            BandwidthError::Env(e) => e.code,
            // What berth-cni's decoder says about a wrongly typed key elsewhere.
            BandwidthError::Config(ConfigError::Capability(_)) => ErrorCode::Decode,
            BandwidthError::Config(_)
            | BandwidthError::Bucket(_)
            | BandwidthError::NoPrevResult
            | BandwidthError::Host(HostError::NoInterfaces | HostError::NotInPrevResult { .. }) => {
                ErrorCode::InvalidConfig
            }
            // The first failure decides; the message lists them all.
            BandwidthError::Teardown(errors) => {
                errors.first().map_or(ErrorCode::Internal, Self::code)
            }
            _ => ErrorCode::Internal,
        }
    }
}

impl From<BandwidthError> for CniError {
    fn from(err: BandwidthError) -> CniError {
        match err {
            BandwidthError::Env(e) => e,
            err => CniError::from_error(err.code(), &err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_configuration_is_7_the_system_999() {
        let cni = CniError::from(BandwidthError::Config(ConfigError::BothSubnetLists));
        assert_eq!(cni.code, ErrorCode::InvalidConfig);
        let cni = CniError::from(BandwidthError::NoPrevResult);
        assert_eq!(
            (cni.code, cni.msg.as_str()),
            (
                ErrorCode::InvalidConfig,
                "must be called as chained plugin: prevResult is missing"
            )
        );
        let cni = CniError::from(BandwidthError::Host(HostError::PeerElsewhere { index: 3 }));
        assert_eq!(cni.code, ErrorCode::Internal);
        let cni = CniError::from(BandwidthError::Config(ConfigError::Capability("x".into())));
        assert_eq!(cni.code, ErrorCode::Decode);
        let err = BandwidthError::teardown(vec![
            BandwidthError::Check(vec!["a".into(), "b".into()]),
            BandwidthError::Failpoint(Step::Ifb),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "CHECK: 2 problems: a; b; failpoint: ADD stopped after step ifb"
        );
        assert!(BandwidthError::teardown(Vec::new()).is_ok());
    }

    #[test]
    fn error_stays_small() {
        // clippy's result_large_err fires at 128 bytes.
        assert!(
            size_of::<BandwidthError>() <= 128,
            "{}",
            size_of::<BandwidthError>()
        );
    }
}
