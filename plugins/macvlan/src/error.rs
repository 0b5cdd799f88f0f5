//! The plugin's error, and the one table from it to CNI error codes.
//!
//! The reference reports every failure of its own with code 999 (its errors are plain Go
//! errors), bad configuration included. Ours uses the spec's codes where they say more, as
//! every Berth plugin does: a configuration it refuses (bad mode, MAC or MTU, a master that is
//! not there, no master and no default route to find one, CHECK without prevResult) is 7; an
//! IPAM plugin's code is passed on; a CNI_NETNS that is not a network namespace is the
//! runtime's input (4); what the kernel refuses stays 999. berth-cni's own decoding and
//! version errors (6, 1, 7) come before any of this.

use berth_cni::{CniError, ErrorCode};
use berth_netlink::ipnetwork::IpNetwork;
use berth_netlink::{AddrError, LinkError, NetnsError, RouteError, SysctlError, error_chain};

use crate::config::ConfigError;
use crate::ipam::IpamError;
use crate::master::MasterError;
use crate::ns::NsError;
use crate::step::Step;

/// Everything a verb can fail with.
#[derive(Debug, thiserror::Error)]
pub enum MacvlanError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Ns(#[from] NsError),
    #[error(transparent)]
    Master(#[from] MasterError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Add(#[from] AddError),
    #[error(transparent)]
    Check(#[from] CheckError),
    #[error(transparent)]
    Del(#[from] DelError),
    #[error("required prevResult missing: CHECK compares the system with the result of ADD")]
    NoPrevResult,
    /// DEL tried every step; these failed.
    #[error("DEL failed: {}", .0.iter().map(|e| error_chain(e)).collect::<Vec<_>>().join("; "))]
    Teardown(Vec<MacvlanError>),
}

impl MacvlanError {
    /// The outcome of a best-effort teardown.
    pub fn teardown(mut errors: Vec<MacvlanError>) -> Result<(), MacvlanError> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(MacvlanError::Teardown(errors)),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            MacvlanError::Ns(NsError::Open { .. }) => ErrorCode::InvalidEnv,
            MacvlanError::Config(_)
            | MacvlanError::NoPrevResult
            | MacvlanError::Master(
                MasterError::NoDefaultRoute { .. }
                | MasterError::NotFound { .. }
                | MasterError::Mtu { .. },
            ) => ErrorCode::InvalidConfig,
            MacvlanError::Ipam(IpamError::Call { source, .. }) => source.code,
            // The first failure decides; the message lists them all.
            MacvlanError::Teardown(errors) => {
                errors.first().map_or(ErrorCode::Internal, Self::code)
            }
            _ => ErrorCode::Internal,
        }
    }
}

impl From<MacvlanError> for CniError {
    fn from(err: MacvlanError) -> CniError {
        let code = err.code();
        match &err {
            // The IPAM plugin's own error, prefixed with what we asked it.
            MacvlanError::Ipam(IpamError::Call { source, .. }) => CniError {
                code,
                msg: format!("{err}: {}", source.msg),
                details: source.details.clone(),
            },
            _ => CniError::from_error(code, &err),
        }
    }
}

// The verbs' own errors live here, beside the code table, so that the verbs depend on this
// module and never the other way round.

/// Errors of the `add` module (code 999, as every failure of the reference's ADD).
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("failed to create macvlan {name} on master {master} in {netns}{hint}")]
    Create {
        name: String,
        master: String,
        netns: String,
        /// What the kernel's errno usually means here.
        hint: &'static str,
        #[source]
        source: Box<LinkError>,
    },
    #[error("an interface named {name} already exists in {netns}")]
    NameTaken { name: String, netns: String },
    #[error("macvlan {name} vanished from {netns} right after being created")]
    Vanished { name: String, netns: String },
    #[error("look up {name}")]
    Lookup {
        name: String,
        #[source]
        source: Box<LinkError>,
    },
    #[error("enter {netns} to write the sysctls of {ifname}")]
    EnterNetns {
        netns: String,
        ifname: String,
        #[source]
        source: Box<NetnsError>,
    },
    #[error("failed to enable IPv6 for interface {dev} ({key})")]
    EnableIpv6 {
        dev: String,
        key: String,
        #[source]
        source: Box<SysctlError>,
    },
    #[error("failed to add IP addr {address} to {ifname}")]
    Addr {
        address: IpNetwork,
        ifname: String,
        #[source]
        source: Box<AddrError>,
    },
    #[error("failed to set {ifname} up")]
    Up {
        ifname: String,
        #[source]
        source: Box<LinkError>,
    },
    #[error("failed to add route {route} on {ifname}")]
    Route {
        route: String,
        ifname: String,
        #[source]
        source: Box<RouteError>,
    },
    #[error("list the addresses of {ifname}")]
    ListAddrs {
        ifname: String,
        #[source]
        source: Box<AddrError>,
    },
    #[error(
        "IPv6 duplicate address detection: {address} on {ifname} is already in use on the network"
    )]
    Duplicate { address: IpNetwork, ifname: String },
    /// A test asked ADD to fail here (`Macvlan { failpoint }`).
    #[error("failpoint: ADD stopped after step {0}")]
    Failpoint(Step),
}

/// What CHECK found wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CHECK found {}: {}", plural(.problems.len()), .problems.join("; "))]
pub struct CheckError {
    pub problems: Vec<String>,
}

fn plural(n: usize) -> String {
    if n == 1 {
        "1 problem".to_owned()
    } else {
        format!("{n} problems")
    }
}

/// Errors of the `del` module.
#[derive(Debug, thiserror::Error)]
pub enum DelError {
    #[error("delete macvlan {ifname} in {netns}")]
    Link {
        ifname: String,
        netns: String,
        #[source]
        source: Box<LinkError>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_name_the_configuration_or_the_system() {
        let unknown = MacvlanError::Config(ConfigError::UnknownMode { mode: "x".into() });
        assert_eq!(CniError::from(unknown).code, ErrorCode::InvalidConfig);
        let ipam = MacvlanError::Ipam(IpamError::Call {
            kind: "host-local".into(),
            verb: "ADD",
            source: CniError::new(ErrorCode::TryAgainLater, "range is full").with_details("d"),
        });
        let cni = CniError::from(ipam);
        assert_eq!(cni.code, ErrorCode::TryAgainLater);
        assert_eq!(cni.msg, "IPAM plugin host-local ADD: range is full");
        assert_eq!(cni.details, "d");
        let both = MacvlanError::teardown(vec![
            MacvlanError::NoPrevResult,
            MacvlanError::Config(ConfigError::UnknownMode { mode: "y".into() }),
        ])
        .unwrap_err();
        let cni = CniError::from(both);
        assert_eq!(cni.code, ErrorCode::InvalidConfig);
        assert!(
            cni.msg.contains("prevResult") && cni.msg.contains("\"y\""),
            "{}",
            cni.msg
        );
        assert!(MacvlanError::teardown(Vec::new()).is_ok());
    }
}
