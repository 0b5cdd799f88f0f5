//! The veth pair: creating it across two namespaces, configuring an end, deleting it.

use berth_netlink::{
    AddrError, AddrOptions, Errno, Link, LinkError, Mac, Netlink, Netns, NetnsError, OwnedName,
    Route, RouteError, SysctlError, VethPair, sysctl,
};

use crate::routing::EndPlan;

/// Errors of the `pair` module. Each names the end it concerns; the source names the
/// namespace, the index and the kernel's answer.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    #[error("interface {name} already exists in {netns}")]
    NameTaken { name: String, netns: String },
    /// The source names both ends and their namespaces.
    #[error("create the veth pair of {name}")]
    Create {
        name: String,
        #[source]
        source: LinkError,
    },
    #[error("look up {name}")]
    Lookup {
        name: String,
        #[source]
        source: LinkError,
    },
    #[error("{name} vanished from {netns} right after it was created")]
    Vanished { name: String, netns: String },
    #[error("turn IPv6 duplicate address detection off on {name}")]
    NoDad {
        name: String,
        #[source]
        source: SysctlError,
    },
    #[error("turn IPv6 duplicate address detection off on {name}")]
    NoDadEnter {
        name: String,
        #[source]
        source: NetnsError,
    },
    #[error("bring {name} up")]
    Up {
        name: String,
        #[source]
        source: LinkError,
    },
    #[error("configure the addresses of {name}")]
    Addr {
        name: String,
        #[source]
        source: AddrError,
    },
    #[error("replace the kernel's prefix route of {name}")]
    KernelRoute {
        name: String,
        #[source]
        source: RouteError,
    },
    #[error("configure the routes via {name}")]
    Route {
        name: String,
        #[source]
        source: RouteError,
    },
    #[error("delete {name}")]
    Delete {
        name: String,
        #[source]
        source: LinkError,
    },
}

/// One end of the pair to create.
#[derive(Debug, Clone, Copy)]
pub struct EndSpec<'a> {
    pub nl: &'a Netlink,
    pub name: &'a str,
    pub mac: Option<Mac>,
}

/// Creates the pair in one request: `here` in its handle's namespace, `there` directly inside
/// `there_ns`, so the far end never appears in `here`'s namespace (no move, no rename, no
/// window in which a half-made link is visible under a temporary name). With `owner`, `here`
/// is an attachment's host end: its name is the first of the owner's candidates not held by
/// another attachment, and it carries the owner's alias (`here.name` is then unused). Returns
/// both ends, still down.
pub fn create(
    here: EndSpec<'_>,
    owner: Option<OwnedName<'_>>,
    there: EndSpec<'_>,
    there_ns: &Netns,
    mtu: Option<u32>,
) -> Result<(Link, Link), PairError> {
    let pair = VethPair {
        mtu,
        mac: here.mac,
        peer_mac: there.mac,
        peer_netns: Some(there_ns),
        ..VethPair::new(here.name, there.name)
    };
    let made = match owner {
        Some(owner) => here.nl.add_owned_veth_pair(owner, &pair),
        None => here.nl.add_veth_pair(&pair),
    };
    let here_link = match made {
        Ok(link) => link,
        Err(source) => {
            if source.is_exists() {
                // EEXIST does not say which of the two names is taken: find out, so the
                // message names the interface and its namespace.
                let here_name = match owner {
                    Some(owner) => here.nl.owned_link(owner).ok().flatten().map(|l| l.name),
                    None => Some(here.name.to_owned()),
                };
                let ends = [(there, Some(there.name.to_owned())), (here, here_name)];
                for (end, name) in ends {
                    let Some(name) = name else { continue };
                    if matches!(end.nl.link_by_name(&name), Ok(Some(_))) {
                        return Err(PairError::NameTaken {
                            name,
                            netns: end.nl.netns().to_owned(),
                        });
                    }
                }
            }
            return Err(PairError::Create {
                name: there.name.to_owned(),
                source,
            });
        }
    };
    Ok((here_link, created(there)?))
}

fn created(end: EndSpec<'_>) -> Result<Link, PairError> {
    lookup(end.nl, end.name)?.ok_or_else(|| PairError::Vanished {
        name: end.name.to_owned(),
        netns: end.nl.netns().to_owned(),
    })
}

pub fn lookup(nl: &Netlink, name: &str) -> Result<Option<Link>, PairError> {
    nl.link_by_name(name).map_err(|source| PairError::Lookup {
        name: name.to_owned(),
        source,
    })
}

pub fn is_veth(link: &Link) -> bool {
    link.kind.as_deref() == Some("veth")
}

/// Turns IPv6 duplicate address detection off on a new end; call it before the end goes up.
///
/// Our own addresses are added `nodad`, but the link-local address the kernel generates when
/// the link comes up would stay tentative for about a second. Until it is usable the kernel
/// cannot send neighbour solicitations for packets it *forwards* (they need a link-local
/// source; only locally sourced packets can use their own global address), so the first
/// packets between two containers of a network would be lost. The link is ours and
/// point-to-point: there is nothing to detect.
///
/// `ns`: the end's namespace, or `None` for the calling thread's (the host's). `/proc/sys/net`
/// resolves against the namespace of the thread that opens the file.
pub fn disable_dad(ns: Option<&Netns>, name: &str) -> Result<(), PairError> {
    let key = format!("net/ipv6/conf/{name}/accept_dad");
    let write = || sysctl::write(&key, "0");
    let written = match ns {
        None => write(),
        Some(ns) => ns.run(write).map_err(|source| PairError::NoDadEnter {
            name: name.to_owned(),
            source,
        })?,
    };
    written.map_err(|source| PairError::NoDad {
        name: name.to_owned(),
        source,
    })
}

/// Brings both ends up, and returns once the kernel has finished doing so.
///
/// Carrier comes on when the second end goes up, but the device only becomes operational
/// (operstate up, its qdisc attached) when the kernel's link-watch work runs, a little later
/// and asynchronously. Until then what is sent on the end is dropped, e.g. the container's
/// first ARP request, which is then retried only a second later. An RTM_GETLINK for a single
/// device runs its pending link-watch event synchronously (a dump does not; checked on 6.18),
/// so each end is looked up once more after both are up.
pub fn set_up(ends: [(&Netlink, &Link); 2]) -> Result<(), PairError> {
    for (nl, link) in ends {
        nl.set_up(link.index).map_err(|source| PairError::Up {
            name: link.name.clone(),
            source,
        })?;
    }
    for (nl, link) in ends {
        nl.link_by_index(link.index)
            .map_err(|source| PairError::Lookup {
                name: link.name.clone(),
                source,
            })?;
    }
    Ok(())
}

/// Adds the plan's addresses. DAD is skipped for IPv6 (`nodad`): the link is new and
/// point-to-point, so there is nothing to collide with, and a tentative address could not be
/// used for about a second after ADD returns.
pub fn add_addrs(nl: &Netlink, link: &Link, plan: &EndPlan) -> Result<(), PairError> {
    for addr in &plan.addrs {
        nl.add_addr_with(link.index, *addr, AddrOptions { nodad: true })
            .map_err(|source| PairError::Addr {
                name: link.name.clone(),
                source,
            })?;
    }
    Ok(())
}

/// Replaces the kernel's prefix routes with the plan's routes.
pub fn add_routes(nl: &Netlink, link: &Link, plan: &EndPlan) -> Result<(), PairError> {
    for route in &plan.kernel_routes {
        match nl.del_route(route) {
            Ok(()) => {}
            // Not there (e.g. a kernel that did not add one): the goal is reached.
            Err(e) if e.is_not_found() => {}
            Err(source) => {
                return Err(PairError::KernelRoute {
                    name: link.name.clone(),
                    source,
                });
            }
        }
    }
    for route in &plan.routes {
        add_route(nl, link, route)?;
    }
    Ok(())
}

fn add_route(nl: &Netlink, link: &Link, route: &Route) -> Result<(), PairError> {
    nl.add_route(route).map_err(|source| PairError::Route {
        name: link.name.clone(),
        source,
    })
}

/// Deletes `name` if it is a veth that `owned` accepts; `Ok(false)` if there was nothing of
/// ours to delete. Deleting either end of a pair deletes both.
pub fn delete_if(
    nl: &Netlink,
    name: &str,
    owned: impl Fn(&Link) -> bool,
) -> Result<bool, PairError> {
    let Some(link) = lookup(nl, name)? else {
        return Ok(false);
    };
    if !is_veth(&link) || !owned(&link) {
        return Ok(false);
    }
    match nl.del_link(link.index) {
        Ok(()) => Ok(true),
        // Gone in between (e.g. its peer's namespace was just destroyed).
        Err(e) if e.is_not_found() => Ok(false),
        Err(source) => Err(PairError::Delete {
            name: name.to_owned(),
            source,
        }),
    }
}
