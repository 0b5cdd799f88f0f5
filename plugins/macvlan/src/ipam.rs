//! Delegation to the IPAM plugin named by `ipam.type`, with the same stdin and environment.

use berth_cni::delegate::{
    delegate_add, delegate_check, delegate_del, delegate_gc, delegate_status,
};
use berth_cni::{CmdArgs, CniError, CniResult, NetworkArgs};

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
    /// The reference's "IPAM plugin returned missing IP config".
    #[error("IPAM plugin {kind} returned missing IP config")]
    NoAddress { kind: String },
}

fn call(kind: &str, verb: &'static str) -> impl FnOnce(CniError) -> IpamError {
    let kind = kind.to_owned();
    move |source| IpamError::Call { kind, verb, source }
}

pub fn add(kind: &str, args: &CmdArgs) -> Result<CniResult, IpamError> {
    delegate_add(kind, args).map_err(call(kind, "ADD"))
}

pub fn del(kind: &str, args: &CmdArgs) -> Result<(), IpamError> {
    delegate_del(kind, args).map_err(call(kind, "DEL"))
}

pub fn check(kind: &str, args: &CmdArgs) -> Result<(), IpamError> {
    delegate_check(kind, args).map_err(call(kind, "CHECK"))
}

pub fn status(kind: &str, args: &NetworkArgs) -> Result<(), IpamError> {
    delegate_status(kind, args).map_err(call(kind, "STATUS"))
}

pub fn gc(kind: &str, args: &NetworkArgs) -> Result<(), IpamError> {
    delegate_gc(kind, args).map_err(call(kind, "GC"))
}
