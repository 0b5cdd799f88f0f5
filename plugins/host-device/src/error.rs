//! The plugin's error and the one table from it to CNI codes.

use berth_cni::{CniError, ErrorCode};
use berth_netlink::{NetnsError, OpenError, error_chain};

use crate::addressing::AddressingError;
use crate::config::ConfigError;
use crate::device::DeviceError;
use crate::select::SelectError;
use crate::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum HostDeviceError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("failed to open netns {path:?}")]
    ContainerNetns {
        path: String,
        #[source]
        source: NetnsError,
    },
    #[error("open the host namespace")]
    HostNetns(#[source] NetnsError),
    /// A device moved "into" the namespace it is in would keep its host addresses and get the
    /// IPAM ones on top, which no DEL could tell apart.
    #[error("CNI_NETNS {path:?} is the host's own network namespace: the device has nowhere to go")]
    NetnsIsHost { path: String },
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("failed to find host device")]
    Select(#[from] SelectError),
    #[error(transparent)]
    Device(#[from] DeviceError),
    #[error(transparent)]
    State(#[from] StateError),
    /// The IPAM plugin failed: its code is passed on.
    #[error("IPAM plugin {kind} {verb}")]
    Ipam {
        kind: String,
        verb: &'static str,
        #[source]
        source: CniError,
    },
    #[error("IPAM plugin {kind} returned missing IP config")]
    NoAddress { kind: String },
    #[error(transparent)]
    Addressing(#[from] AddressingError),
    #[error("CHECK of {ifname}: {}", .findings.join("; "))]
    Check {
        ifname: String,
        findings: Vec<String>,
    },
    /// DEL or GC: every failure of the steps that were all tried.
    #[error("{}", .0.iter().map(|e| error_chain(e)).collect::<Vec<_>>().join("; "))]
    Teardown(Vec<HostDeviceError>),
}

impl HostDeviceError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Config(_) => ErrorCode::InvalidConfig,
            Self::ContainerNetns { .. } | Self::NetnsIsHost { .. } => ErrorCode::InvalidEnv,
            Self::State(_) => ErrorCode::Io,
            Self::Ipam { source, .. } => source.code,
            Self::Teardown(errors) => errors.first().map_or(ErrorCode::Internal, Self::code),
            // As the reference: a device that is missing, busy or cannot move is 999.
            Self::HostNetns(_)
            | Self::Open(_)
            | Self::Select(_)
            | Self::Device(_)
            | Self::NoAddress { .. }
            | Self::Addressing(_)
            | Self::Check { .. } => ErrorCode::Internal,
        }
    }
}

impl From<HostDeviceError> for CniError {
    fn from(e: HostDeviceError) -> CniError {
        match e {
            // The IPAM plugin's own error reaches the runtime unchanged, under our message.
            HostDeviceError::Ipam {
                ref kind,
                verb,
                ref source,
            } => CniError::new(
                source.code,
                format!("IPAM plugin {kind} {verb}: {}", source.msg),
            )
            .with_details(source.details.clone()),
            other => CniError::from_error(other.code(), &other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let ipam = HostDeviceError::Ipam {
            kind: "static".into(),
            verb: "ADD",
            source: CniError::new(ErrorCode::InvalidConfig, "bad address"),
        };
        let cni = CniError::from(ipam);
        assert_eq!(cni.code, ErrorCode::InvalidConfig);
        assert!(cni.msg.contains("bad address"), "{}", cni.msg);
        let teardown = HostDeviceError::Teardown(vec![
            HostDeviceError::NoAddress { kind: "x".into() },
            HostDeviceError::Config(ConfigError::NoSelector),
        ]);
        assert_eq!(teardown.code(), ErrorCode::Internal);
        assert_eq!(
            HostDeviceError::Config(ConfigError::NoSelector).code(),
            ErrorCode::InvalidConfig
        );
    }
}
