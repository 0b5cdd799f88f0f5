//! DEL: the mirror of `setup.rs`, lenient and idempotent. Every step runs whatever happened
//! before it; "already gone" (vanished namespace, missing link, no reservation, no rules) is
//! success; the failures are reported together at the end.
//!
//! The bridge is left alone (the reference does the same): other attachments may use it.

use std::path::PathBuf;

use berth_cni::delegate::{delegate_del, delegate_gc};
use berth_cni::{Attachment, CmdArgs, CniError, HostLinkName, NetworkArgs};
use berth_netlink::{Errno, LinkError, Netlink, Netns, NetnsError, OpenError, OwnedName};

use crate::config::TeardownConfig;
use berth_firewall::{MasqError, Masquerading};

use crate::owner::{owner, valid_owners};
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
    #[error("a teardown thread panicked")]
    Panicked,
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

/// DEL of one attachment. The four parts are independent and each mostly waits (the kernel
/// destroying the veth, the IPAM process, the firewall commits), so they run at once; the
/// call costs the slowest of them, not their sum.
pub fn del(cfg: &TeardownConfig, args: &CmdArgs) -> Result<(), TeardownErrors> {
    // Threads start in the namespace of the thread that spawns them: the host's.
    let errors = std::thread::scope(|scope| {
        let links = scope.spawn(|| del_links(cfg, args));
        // The addresses, always: a runtime retries DEL until it succeeds, and a leaked
        // reservation is the worst leak (the range runs dry).
        let ipam = cfg.ipam.as_deref().map(|ipam| {
            scope.spawn(move || {
                delegate_del(ipam, args).map_err(|source| TeardownError::Ipam {
                    ipam: ipam.to_owned(),
                    verb: "DEL",
                    source,
                })
            })
        });
        // The masquerade rules, by owner: no need for the (maybe gone) addresses.
        let masq = match (cfg.masquerade, &cfg.ipam) {
            (Some(backend), Some(_)) => Some(scope.spawn(move || {
                let owner = owner(cfg.network.as_str(), args);
                Masquerading::open(backend)
                    .and_then(|m| m.del(&owner))
                    .map_err(TeardownError::from)
            })),
            _ => None,
        };
        // The MAC spoofing guard, by owner (the MAC may be gone with the container).
        let spoof = cfg.mac_spoof_check.then(|| {
            scope.spawn(move || {
                let owner = owner(cfg.network.as_str(), args);
                Spoof::open()
                    .and_then(|s| s.del(&owner))
                    .map_err(TeardownError::from)
            })
        });
        let mut errors = links
            .join()
            .unwrap_or_else(|_| vec![TeardownError::Panicked]);
        for handle in [ipam, masq, spoof].into_iter().flatten() {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(e),
                Err(_) => errors.push(TeardownError::Panicked),
            }
        }
        errors
    });
    finish(errors)
}

/// The veth pair: through the container end (a vanished namespace took the pair with it,
/// unless something still holds it open), then the host end by its deterministic name
/// (still there if the container end was unreachable).
fn del_links(cfg: &TeardownConfig, args: &CmdArgs) -> Vec<TeardownError> {
    let mut errors = Vec::new();
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
    if let Err(e) = del_host_veth(cfg, args) {
        errors.push(e);
    }
    errors
}

/// The host end, found among the attachment's candidate names by its alias: a link that only
/// has the expected name belongs to another attachment and stays.
fn del_host_veth(cfg: &TeardownConfig, args: &CmdArgs) -> Result<(), TeardownError> {
    let names = HostLinkName::of(
        cfg.network.as_str(),
        args.container_id.as_str(),
        args.ifname.as_str(),
    );
    let host = Netlink::open_current().map_err(TeardownError::OpenNetlink)?;
    let owned = OwnedName {
        candidates: &names.candidates,
        alias: &names.alias,
    };
    let link = host
        .owned_link(owned)
        .map_err(|source| TeardownError::LookupLink {
            name: names.preferred().to_owned(),
            source,
        })?;
    match link {
        Some(link) if link.kind.as_deref() == Some("veth") => match host.del_link(link.index) {
            Err(e) if !e.is_not_found() => Err(TeardownError::DeleteLink {
                name: link.name,
                source: e,
            }),
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
        if let Err(e) = Masquerading::open(backend).and_then(|m| {
            m.gc(
                cfg.network.as_str(),
                &valid_owners(cfg.network.as_str(), valid),
            )
        }) {
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
