//! DEL: the mirror of `setup.rs`, lenient and idempotent. Every step runs whatever happened
//! before it; "already gone" (vanished namespace, missing link, no reservation, no rules) is
//! success; the failures are reported together at the end.
//!
//! The bridge is left alone (the reference does the same): other attachments may use it.

use std::path::PathBuf;

use berth_cni::delegate::{delegate_del, delegate_gc};
use berth_cni::{Attachment, CmdArgs, CniError, NetworkArgs};
use berth_netlink::{Errno, LinkError, Netlink, Netns, NetnsError, OpenError};

use crate::config::TeardownConfig;
use crate::masq::{Masq, MasqError, owner};
use crate::names::host_veth_name;
use crate::spoof::{Spoof, SpoofError};

/// One failed step of DEL or GC.
#[derive(Debug, thiserror::Error)]
pub enum TeardownError {
    #[error("open the container's network namespace {path}")]
    OpenNetns {
        path: PathBuf,
        #[source]
        source: NetnsError,
    },
    #[error("open rtnetlink")]
    OpenNetlink(#[source] OpenError),
    #[error("delete {name}")]
    DeleteLink {
        name: String,
        #[source]
        source: LinkError,
    },
    #[error("look up host veth {name}")]
    LookupLink {
        name: String,
        #[source]
        source: LinkError,
    },
    #[error("IPAM plugin {ipam}: {verb} failed")]
    Ipam {
        ipam: String,
        verb: &'static str,
        #[source]
        source: CniError,
    },
    #[error(transparent)]
    Masq(#[from] MasqError),
    #[error(transparent)]
    Spoof(#[from] SpoofError),
}

/// Every failure of one DEL or GC.
#[derive(Debug)]
pub struct TeardownErrors(pub Vec<TeardownError>);

fn finish(errors: Vec<TeardownError>) -> Result<(), TeardownErrors> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(TeardownErrors(errors))
    }
}

/// DEL of one attachment.
pub fn del(cfg: &TeardownConfig, args: &CmdArgs) -> Result<(), TeardownErrors> {
    let mut errors = Vec::new();

    // 1. The container end: deleting it removes the pair. A vanished namespace took the pair
    //    with it (unless something still holds it open: step 2 covers that).
    if let Some(path) = args.netns_opt() {
        match Netns::open(path) {
            Ok(ns) => match Netlink::open_in(&ns) {
                Ok(ctr) => {
                    if let Err(source) = ctr.del_link_by_name_if_exists(args.ifname.as_str()) {
                        errors.push(TeardownError::DeleteLink {
                            name: format!("{} in {}", args.ifname, path.display()),
                            source,
                        });
                    }
                }
                Err(e) => errors.push(TeardownError::OpenNetlink(e)),
            },
            Err(NetnsError::NotFound { .. }) => {}
            Err(source) => errors.push(TeardownError::OpenNetns {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    // 2. The host end, found by its deterministic name: still there if the container end was
    //    unreachable (no CNI_NETNS, or a namespace that is gone but still pinned).
    if let Err(e) = del_host_veth(cfg, args) {
        errors.push(e);
    }

    // 3. The addresses, always: a runtime retries DEL until it succeeds, and a leaked
    //    reservation is the worst leak (the range runs dry).
    if let Some(ipam) = &cfg.ipam {
        if let Err(source) = delegate_del(ipam, args) {
            errors.push(TeardownError::Ipam {
                ipam: ipam.clone(),
                verb: "DEL",
                source,
            });
        }
    }

    // 4. The masquerade rules, by owner: no need for the (maybe gone) addresses.
    if let (Some(backend), Some(_)) = (cfg.masquerade, &cfg.ipam) {
        let owner = owner(cfg.network.as_str(), args);
        if let Err(e) = Masq::open(backend).and_then(|m| m.del(&owner)) {
            errors.push(e.into());
        }
    }

    // 5. The MAC spoofing guard, by owner (the MAC may be gone with the container).
    if cfg.mac_spoof_check {
        let owner = owner(cfg.network.as_str(), args);
        if let Err(e) = Spoof::open().and_then(|s| s.del(&owner)) {
            errors.push(e.into());
        }
    }
    finish(errors)
}

fn del_host_veth(cfg: &TeardownConfig, args: &CmdArgs) -> Result<(), TeardownError> {
    let name = host_veth_name(
        cfg.network.as_str(),
        args.container_id.as_str(),
        args.ifname.as_str(),
    );
    let host = Netlink::open_current().map_err(TeardownError::OpenNetlink)?;
    let link = host
        .link_by_name(&name)
        .map_err(|source| TeardownError::LookupLink {
            name: name.clone(),
            source,
        })?;
    match link {
        Some(link) if link.kind.as_deref() == Some("veth") => match host.del_link(link.index) {
            Err(e) if !e.is_not_found() => Err(TeardownError::DeleteLink { name, source: e }),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// GC: the IPAM plugin releases the reservations, and the masquerade rules and MAC spoofing
/// guards go, of every
/// attachment of this network not in `valid`. The veth of a crashed ADD died with its
/// container's namespace.
pub fn gc(
    cfg: &TeardownConfig,
    args: &NetworkArgs,
    valid: &[Attachment],
) -> Result<(), TeardownErrors> {
    let mut errors = Vec::new();
    if let Some(ipam) = &cfg.ipam {
        if let Err(source) = delegate_gc(ipam, args) {
            errors.push(TeardownError::Ipam {
                ipam: ipam.clone(),
                verb: "GC",
                source,
            });
        }
    }
    if let Some(backend) = cfg.masquerade {
        if let Err(e) = Masq::open(backend).and_then(|m| m.gc(cfg.network.as_str(), valid)) {
            errors.push(e.into());
        }
    }
    if cfg.mac_spoof_check {
        if let Err(e) = Spoof::open().and_then(|s| s.gc(cfg.network.as_str(), valid)) {
            errors.push(e.into());
        }
    }
    finish(errors)
}
