//! The `loopback` plugin: brings `lo` up in the container's namespace.
//!
//! Like the reference plugin, it always configures `lo` whatever `CNI_IFNAME` says, reports
//! `lo`'s addresses, passes a `prevResult` through unchanged, and treats a vanished namespace
//! on DEL as success.

use std::path::Path;

use berth_cni::{
    Attachment, CmdArgs, CniError, CniResult, ErrorCode, Interface, IpConfig, NetConf, NetworkArgs,
    Plugin,
};
use berth_netlink::{Netlink, Netns};
use serde::Deserialize;

const LO: &str = "lo";

/// `loopback` has no keys of its own; unknown keys are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct LoopbackConf {}

pub struct Loopback;

#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    #[error("open network namespace {0}")]
    Netns(String, #[source] berth_netlink::NetnsError),
    #[error("open netlink in {0}")]
    Netlink(String, #[source] berth_netlink::OpenError),
    #[error("look up lo in {0}")]
    Lookup(String, #[source] berth_netlink::LinkError),
    #[error("no lo interface in {0}")]
    Missing(String),
    #[error("set lo {1} in {0}")]
    SetState(String, &'static str, #[source] berth_netlink::LinkError),
    #[error("list addresses of lo in {0}")]
    Addrs(String, #[source] berth_netlink::AddrError),
    #[error("lo in {0} has a non-loopback address {1}")]
    NotLoopback(String, std::net::IpAddr),
    #[error("lo in {0} is down")]
    Down(String),
}

impl LoopbackError {
    fn into_cni(self) -> CniError {
        let code = match &self {
            LoopbackError::Netns(..) => ErrorCode::InvalidEnv,
            LoopbackError::Down(_) | LoopbackError::Missing(_) => ErrorCode::Internal,
            _ => ErrorCode::Io,
        };
        CniError::from_error(code, &self)
    }
}

/// Opens a netlink socket inside the namespace at `path`.
fn netlink_in(path: &Path) -> Result<Netlink, LoopbackError> {
    let name = path.display().to_string();
    let ns = Netns::open(path).map_err(|e| LoopbackError::Netns(name.clone(), e))?;
    Netlink::open_in(&ns).map_err(|e| LoopbackError::Netlink(name, e))
}

fn lo_link(nl: &Netlink, ns: &str) -> Result<berth_netlink::Link, LoopbackError> {
    nl.link_by_name(LO)
        .map_err(|e| LoopbackError::Lookup(ns.to_owned(), e))?
        .ok_or_else(|| LoopbackError::Missing(ns.to_owned()))
}

fn add(netns: &Path) -> Result<CniResult, LoopbackError> {
    let name = netns.display().to_string();
    let nl = netlink_in(netns)?;
    let lo = lo_link(&nl, &name)?;
    nl.set_up(lo.index)
        .map_err(|e| LoopbackError::SetState(name.clone(), "up", e))?;
    let addrs = nl
        .addrs(Some(lo.index))
        .map_err(|e| LoopbackError::Addrs(name.clone(), e))?;
    if let Some(bad) = addrs.iter().find(|a| !a.net.ip().is_loopback()) {
        return Err(LoopbackError::NotLoopback(name, bad.net.ip()));
    }
    // The first address of each family, as the reference reports them.
    let first_v4 = addrs.iter().find(|a| a.net.is_ipv4());
    let first_v6 = addrs.iter().find(|a| a.net.is_ipv6());
    Ok(CniResult {
        interfaces: vec![Interface {
            name: LO.into(),
            mac: Some("00:00:00:00:00:00".into()),
            sandbox: Some(name),
            ..Interface::default()
        }],
        ips: first_v4
            .into_iter()
            .chain(first_v6)
            .map(|a| IpConfig {
                address: a.net,
                gateway: None,
                interface: Some(0),
            })
            .collect(),
        ..CniResult::default()
    })
}

impl Plugin for Loopback {
    type Conf = LoopbackConf;

    fn add(&self, args: &CmdArgs, conf: &NetConf<LoopbackConf>) -> Result<CniResult, CniError> {
        let result = add(args.netns()?).map_err(LoopbackError::into_cni)?;
        // Chained after another plugin, pass its result through unchanged.
        Ok(conf.prev_result.clone().unwrap_or(result))
    }

    fn del(&self, args: &CmdArgs, _: &NetConf<LoopbackConf>) -> Result<(), CniError> {
        let Some(netns) = args.netns_opt() else {
            return Ok(());
        };
        let name = netns.display().to_string();
        let nl = match Netns::open(netns) {
            Ok(ns) => Netlink::open_in(&ns).map_err(|e| LoopbackError::Netlink(name.clone(), e)),
            // A namespace that is gone has no lo to bring down: DEL is done.
            Err(berth_netlink::NetnsError::NotFound { .. }) => return Ok(()),
            Err(e) => Err(LoopbackError::Netns(name.clone(), e)),
        }
        .map_err(LoopbackError::into_cni)?;
        let lo = match lo_link(&nl, &name) {
            Ok(lo) => lo,
            Err(LoopbackError::Missing(_)) => return Ok(()),
            Err(e) => return Err(e.into_cni()),
        };
        nl.set_down(lo.index)
            .map_err(|e| LoopbackError::SetState(name, "down", e).into_cni())
    }

    fn check(&self, args: &CmdArgs, _: &NetConf<LoopbackConf>) -> Result<(), CniError> {
        let netns = args.netns()?;
        let name = netns.display().to_string();
        let nl = netlink_in(netns).map_err(LoopbackError::into_cni)?;
        let lo = lo_link(&nl, &name).map_err(LoopbackError::into_cni)?;
        if lo.up {
            Ok(())
        } else {
            Err(LoopbackError::Down(name).into_cni())
        }
    }

    /// Nothing to be unavailable: the plugin needs no state and no daemon.
    fn status(&self, _: &NetworkArgs, _: &NetConf<LoopbackConf>) -> Result<(), CniError> {
        Ok(())
    }

    /// Nothing to collect: loopback creates no resource outside the container's namespace.
    fn gc(
        &self,
        _: &NetworkArgs,
        _: &NetConf<LoopbackConf>,
        _: &[Attachment],
    ) -> Result<(), CniError> {
        Ok(())
    }
}
