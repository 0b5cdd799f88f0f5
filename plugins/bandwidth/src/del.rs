//! DEL and GC: remove an attachment's shaping — the root shaper and the redirect on the host
//! end, then the ifb device — best effort, and idempotent.
//!
//! The reference's DEL only deletes the ifb. Its qdiscs on the host end die with the veth when
//! the main plugin's DEL runs next; until then the redirect would point at a deleted device,
//! which makes the kernel drop everything the container sends. Berth removes the redirect
//! first, then the ifb.
//!
//! The host end is found the way ADD found it (the veth peer of `CNI_IFNAME`); when the
//! container's namespace is gone, among `prevResult`'s host-side veths. What is removed there
//! is only what has this plugin's shape: a `tbf` or `htb` root qdisc with handle `1:`, and an
//! ingress qdisc whose filter redirects to this attachment's ifb (or, beside that ifb, one with
//! no filter: an ADD killed before its redirect).

use std::collections::HashSet;

use berth_cni::Attachment;
use berth_netlink::{Errno, Handle, Link, Netlink};

use crate::Call;
use crate::error::BandwidthError;
use crate::host::{self, Container};
use crate::shape::ROOT_HANDLE;

pub(crate) fn del(call: &Call<'_>) -> Result<(), BandwidthError> {
    let host = crate::host_netlink()?;
    let name = call.ifb_name();
    let mut errors = Vec::new();
    let ifb = match host.link_by_name(&name) {
        Ok(ifb) => ifb,
        Err(source) => {
            errors.push(BandwidthError::InspectLink {
                link: name.clone(),
                source,
            });
            None
        }
    };
    for link in host_ends(call, &host) {
        unshape(&host, &link, ifb.as_ref().map(|l| l.index), &mut errors);
    }
    if let Some(ifb) = ifb {
        delete_ifb(&host, &ifb, &mut errors);
    }
    BandwidthError::teardown(errors)
}

/// The attachment's host end: the container end's peer if the namespace is still there, else
/// the veths `prevResult` lists on the host side. Lookup failures just mean "nothing found":
/// DEL must get through a half-torn-down attachment.
fn host_ends(call: &Call<'_>, host: &Netlink) -> Vec<Link> {
    let ifname = call.args.ifname.as_str();
    if let Some(path) = call.args.netns_opt() {
        if let Ok(peer) = Container::open(path).and_then(|ctr| host::peer_of(host, &ctr, ifname)) {
            return vec![peer];
        }
    }
    let Some(prev) = call.conf.prev_result.as_ref() else {
        return Vec::new();
    };
    host::host_interfaces(prev)
        .filter_map(|name| host.link_by_name(name).ok().flatten())
        .filter(|link| link.kind.as_deref() == Some("veth"))
        .collect()
}

/// Removes this plugin's root shaper and, if it redirects to `ifb`, the ingress qdisc of
/// `link`. A link or qdisc that vanishes meanwhile is fine.
fn unshape(host: &Netlink, link: &Link, ifb: Option<u32>, errors: &mut Vec<BandwidthError>) {
    let inspect = |source| BandwidthError::InspectTc {
        link: link.name.clone(),
        source,
    };
    let qdiscs = match host.qdiscs(link.index) {
        Ok(qdiscs) => qdiscs,
        Err(e) if e.is_not_found() => return,
        Err(e) => return errors.push(inspect(e)),
    };
    if let Some(ifb) = ifb {
        if qdiscs.iter().any(|q| q.parent == Handle::INGRESS) {
            match host.filters(link.index, Handle::INGRESS_QDISC) {
                // Ours if it redirects to this attachment's ifb, or if it holds nothing at all:
                // ADD adds it right after the ifb, so a bare one beside our ifb is an ADD
                // killed before its redirect (an empty ingress qdisc does nothing anyway).
                Ok(filters)
                    if filters.is_empty()
                        || filters.iter().any(|f| f.rule.redirect_to == Some(ifb)) =>
                {
                    if let Err(source) =
                        host.del_qdisc(link.index, Handle::INGRESS, Handle::INGRESS_QDISC)
                    {
                        errors.push(BandwidthError::Unshape {
                            what: "the ingress qdisc",
                            link: link.name.clone(),
                            source,
                        });
                    }
                }
                Ok(_) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => errors.push(inspect(e)),
            }
        }
    }
    let ours = qdiscs.iter().any(|q| {
        q.parent == Handle::ROOT
            && q.handle == ROOT_HANDLE
            && matches!(q.kind.as_str(), "tbf" | "htb")
    });
    if ours {
        if let Err(source) = host.del_qdisc(link.index, Handle::ROOT, ROOT_HANDLE) {
            errors.push(BandwidthError::Unshape {
                what: "the root qdisc",
                link: link.name.clone(),
                source,
            });
        }
    }
}

fn delete_ifb(host: &Netlink, ifb: &Link, errors: &mut Vec<BandwidthError>) {
    match host.del_link(ifb.index) {
        Err(e) if !e.is_not_found() => errors.push(BandwidthError::DeleteIfb {
            name: ifb.name.clone(),
            source: e,
        }),
        _ => {}
    }
}

/// GC: this network's ifb devices (marked with its alias) whose container is not in `valid`
/// go, with the shaping of the host end that redirects to them.
pub(crate) fn gc(network: &str, valid: &[Attachment]) -> Result<(), BandwidthError> {
    let host = crate::host_netlink()?;
    let keep: HashSet<String> = valid
        .iter()
        .map(|a| crate::ifb::name(network, a.container_id.as_str()))
        .collect();
    let alias = crate::ifb::owner_alias(network);
    let links = host.links().map_err(BandwidthError::ListLinks)?;
    let stale: Vec<&Link> = links
        .iter()
        .filter(|l| {
            l.kind.as_deref() == Some("ifb")
                && l.alias.as_deref() == Some(alias.as_str())
                && !keep.contains(&l.name)
        })
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    let mut errors = Vec::new();
    let veths = links.iter().filter(|l| l.kind.as_deref() == Some("veth"));
    for veth in veths {
        let targets = match host.filters(veth.index, Handle::INGRESS_QDISC) {
            Ok(filters) => filters,
            Err(e) if e.is_not_found() => continue,
            Err(source) => {
                errors.push(BandwidthError::InspectTc {
                    link: veth.name.clone(),
                    source,
                });
                continue;
            }
        };
        let redirected = stale.iter().find(|ifb| {
            targets
                .iter()
                .any(|f| f.rule.redirect_to == Some(ifb.index))
        });
        if let Some(ifb) = redirected {
            unshape(&host, veth, Some(ifb.index), &mut errors);
        }
    }
    for ifb in stale {
        delete_ifb(&host, ifb, &mut errors);
    }
    BandwidthError::teardown(errors)
}
