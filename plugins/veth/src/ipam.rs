//! Delegation to the IPAM plugin (`ipam.type`), and what host mode needs from its answer.

use std::net::IpAddr;

use berth_cni::delegate::{
    delegate_add, delegate_check, delegate_del, delegate_gc, delegate_status,
};
use berth_cni::{CmdArgs, CniError, CniResult, IpConfig, NetworkArgs};
use ipnetwork::IpNetwork;

use crate::routing::Assigned;

/// Errors of the `ipam` module.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// The IPAM plugin failed; its error (and code) is passed on.
    #[error("IPAM plugin {kind} {verb}")]
    Call {
        kind: String,
        verb: &'static str,
        #[source]
        source: CniError,
    },
    #[error("IPAM plugin {kind} returned no address")]
    NoAddress { kind: String },
    #[error(
        "IPAM plugin {kind} returned {address} without a gateway: host mode routes the container through it (set the gateway in ipam)"
    )]
    NoGateway { kind: String, address: IpNetwork },
    #[error(
        "IPAM plugin {kind} returned gateway {gateway} for {address}: it must be another address of the same family"
    )]
    BadGateway {
        kind: String,
        address: IpNetwork,
        gateway: IpAddr,
    },
}

impl IpamError {
    fn call(kind: &str, verb: &'static str) -> impl FnOnce(CniError) -> IpamError {
        let kind = kind.to_owned();
        move |source| IpamError::Call { kind, verb, source }
    }
}

pub fn add(kind: &str, args: &CmdArgs) -> Result<CniResult, IpamError> {
    delegate_add(kind, args).map_err(IpamError::call(kind, "ADD"))
}

pub fn del(kind: &str, args: &CmdArgs) -> Result<(), IpamError> {
    delegate_del(kind, args).map_err(IpamError::call(kind, "DEL"))
}

pub fn check(kind: &str, args: &CmdArgs) -> Result<(), IpamError> {
    delegate_check(kind, args).map_err(IpamError::call(kind, "CHECK"))
}

pub fn status(kind: &str, args: &NetworkArgs) -> Result<(), IpamError> {
    delegate_status(kind, args).map_err(IpamError::call(kind, "STATUS"))
}

pub fn gc(kind: &str, args: &NetworkArgs) -> Result<(), IpamError> {
    delegate_gc(kind, args).map_err(IpamError::call(kind, "GC"))
}

/// Host mode: every address needs a gateway of its family, distinct from the address (it goes
/// on the host end).
pub fn with_gateways(kind: &str, ips: &[IpConfig]) -> Result<Vec<Assigned>, IpamError> {
    if ips.is_empty() {
        return Err(IpamError::NoAddress {
            kind: kind.to_owned(),
        });
    }
    ips.iter()
        .map(|ip| {
            let gateway = ip.gateway.ok_or_else(|| IpamError::NoGateway {
                kind: kind.to_owned(),
                address: ip.address,
            })?;
            if gateway.is_ipv4() != ip.address.is_ipv4() || gateway == ip.address.ip() {
                return Err(IpamError::BadGateway {
                    kind: kind.to_owned(),
                    address: ip.address,
                    gateway,
                });
            }
            Ok(Assigned {
                address: ip.address,
                gateway,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ipc(address: &str, gateway: Option<&str>) -> IpConfig {
        IpConfig {
            address: address.parse().unwrap(),
            gateway: gateway.map(|g| g.parse().unwrap()),
            interface: None,
        }
    }

    #[test]
    fn host_mode_needs_a_usable_gateway() {
        assert!(matches!(
            with_gateways("h", &[]),
            Err(IpamError::NoAddress { .. })
        ));
        assert!(matches!(
            with_gateways("h", &[ipc("198.18.0.2/24", None)]),
            Err(IpamError::NoGateway { .. })
        ));
        for gw in ["198.18.0.2", "fd42:b347::1"] {
            assert!(matches!(
                with_gateways("h", &[ipc("198.18.0.2/24", Some(gw))]),
                Err(IpamError::BadGateway { .. })
            ));
        }
        let ok = with_gateways("h", &[ipc("198.18.0.2/24", Some("198.18.0.1"))]).unwrap();
        assert_eq!(ok[0].gateway.to_string(), "198.18.0.1");
    }
}
