//! Container-to-container mode: the pair joins the container (CNI_NETNS, CNI_IFNAME) to
//! another container's namespace (`peer.netns`, `peer.ifname`), as a lab's node-to-node link.
//! Nothing is configured in the host's namespace: no host routes, no forwarding, no NAT.
//!
//! The container end takes its addresses from IPAM (with their real prefix: the peer is
//! on-link) or from the static `addresses`; the peer end only from `peer.addresses`.
//!
//! `add`, `del` and `check` mirror each other.

use std::net::IpAddr;
use std::path::Path;

use berth_cni::{CniResult, IpConfig};
use berth_netlink::Rollback;

use crate::check::{Expect, Problems};
use crate::config::Peer;
use crate::error::VethError;
use crate::ns::{self, NsError, Opened, Role};
use crate::pair::{self, EndSpec};
use crate::routing::{self, EndPlan};
use crate::step::Step;
use crate::{Call, ipam, result};

/// The gateways IPAM handed out: IPAM routes without their own `gw` go via them.
fn gateways(ips: &[IpConfig]) -> Vec<IpAddr> {
    ips.iter().filter_map(|ip| ip.gateway).collect()
}

fn static_ips(addresses: &[ipnetwork::IpNetwork], interface: usize) -> Vec<IpConfig> {
    addresses
        .iter()
        .map(|address| IpConfig {
            address: *address,
            gateway: None,
            interface: Some(interface),
        })
        .collect()
}

fn peer_ifname<'a>(call: &'a Call<'_>, peer: &'a Peer) -> &'a str {
    peer.ifname.as_ref().unwrap_or(&call.args.ifname).as_str()
}

/// Opens the peer's namespace, refusing the container's own.
fn open_peer(peer: &Peer, ctr: &Opened) -> Result<Opened, NsError> {
    let opened = ns::open(&peer.netns, Role::Peer)?;
    if opened.ns == ctr.ns {
        return Err(NsError::PeerIsContainer {
            path: peer.netns.clone(),
        });
    }
    Ok(opened)
}

pub fn add(call: &Call<'_>, netns: &Path, peer: &Peer) -> Result<CniResult, VethError> {
    let att = call.attachment();
    let ifname = call.args.ifname.as_str();
    let peer_name = peer_ifname(call, peer);
    let ctr = ns::open(netns, Role::Container)?;
    let other = open_peer(peer, &ctr)?;

    // Declared after everything its undo steps borrow, so it is dropped (and undoes) first.
    let mut rollback = Rollback::new();

    let mut result = match &peer.ipam {
        Some(kind) => {
            let result = ipam::add(kind, call.args)?;
            rollback.push(
                format!("release the addresses (IPAM {kind} DEL)"),
                move || ipam::del(kind, call.args),
            );
            if result.ips.is_empty() {
                return Err(ipam::IpamError::NoAddress { kind: kind.clone() }.into());
            }
            result
        }
        None => CniResult {
            ips: static_ips(&peer.own_addresses, 1),
            ..CniResult::default()
        },
    };
    call.reached(Step::Ipam)?;
    for ip in &mut result.ips {
        ip.interface = Some(1);
    }

    let (ctr_link, peer_link) = pair::create(
        EndSpec {
            nl: &ctr.nl,
            name: ifname,
            mac: None,
        },
        None,
        EndSpec {
            nl: &other.nl,
            name: peer_name,
            mac: Some(att.peer_mac()),
        },
        &other.ns,
        call.config.mtu,
    )?;
    let ctr_index = ctr_link.index;
    let ctr_nl = &ctr.nl;
    rollback.push(format!("delete the veth pair {ifname}"), move || {
        ctr_nl.del_link(ctr_index)
    });
    call.reached(Step::CreatePair)?;

    if result.ips.iter().any(|ip| ip.address.is_ipv6())
        || peer.addresses.iter().any(|a| a.is_ipv6())
    {
        pair::disable_dad(Some(&ctr.ns), &ctr_link.name)?;
        pair::disable_dad(Some(&other.ns), &peer_link.name)?;
    }
    pair::set_up([(&ctr.nl, &ctr_link), (&other.nl, &peer_link)])?;
    call.reached(Step::LinksUp)?;

    let addrs: Vec<_> = result.ips.iter().map(|ip| ip.address).collect();
    let ctr_plan = routing::peer_mode(
        &addrs,
        &gateways(&result.ips),
        &result.routes,
        ctr_link.index,
    );
    pair::add_addrs(&ctr.nl, &ctr_link, &ctr_plan)?;
    call.reached(Step::ContainerAddrs)?;

    let peer_plan = EndPlan {
        addrs: peer.addresses.clone(),
        ..EndPlan::default()
    };
    pair::add_addrs(&other.nl, &peer_link, &peer_plan)?;
    call.reached(Step::PeerAddrs)?;

    pair::add_routes(&ctr.nl, &ctr_link, &ctr_plan)?;
    call.reached(Step::ContainerRoutes)?;

    // Index 0 is the far end, 1 the container's, as in host mode. `ips` lists only the
    // container's addresses: they are what a runtime takes for "the container's IPs", and
    // what the IPAM plugin's CHECK compares its reservations with. The peer's are static
    // configuration (CHECK takes them from there).
    result.interfaces = vec![
        result::interface(&peer_link, Some(&peer.netns)),
        result::interface(&ctr_link, Some(netns)),
    ];
    if let Some(dns) = &call.config.dns {
        result.dns = dns.clone();
    }
    rollback.commit();
    Ok(result)
}

/// Best effort, like host mode. Deleting either end removes the pair, so the peer end is only
/// looked at when the container's end was not there to delete, and only deleted when it
/// carries this attachment's mark (its MAC): a link that merely has the same name is left
/// alone.
pub fn del(call: &Call<'_>, peer: &Peer) -> Result<(), VethError> {
    let att = call.attachment();
    let mut errors: Vec<VethError> = Vec::new();
    let mut deleted = false;

    if let Some(netns) = call.args.netns_opt() {
        match ns::open(netns, Role::Container) {
            Ok(ctr) => match pair::delete_if(&ctr.nl, call.args.ifname.as_str(), |_| true) {
                Ok(d) => deleted = d,
                Err(e) => errors.push(e.into()),
            },
            Err(e) if e.is_gone() => {}
            Err(e) => errors.push(e.into()),
        }
    }
    if !deleted {
        let mark = att.peer_mac();
        match ns::open(&peer.netns, Role::Peer) {
            Ok(other) => {
                if let Err(e) =
                    pair::delete_if(&other.nl, peer_ifname(call, peer), |l| l.mac == Some(mark))
                {
                    errors.push(e.into());
                }
            }
            Err(e) if e.is_gone() => {}
            Err(e) => errors.push(e.into()),
        }
    }
    if let Some(kind) = &peer.ipam {
        if let Err(e) = ipam::del(kind, call.args) {
            errors.push(e.into());
        }
    }
    VethError::teardown(errors)
}

pub fn check(call: &Call<'_>, netns: &Path, peer: &Peer) -> Result<(), VethError> {
    let prev = call.prev_result()?;
    if let Some(kind) = &peer.ipam {
        ipam::check(kind, call.args)?;
    }
    let att = call.attachment();
    let ifname = call.args.ifname.as_str();
    let peer_name = peer_ifname(call, peer);
    let ctr = ns::open(netns, Role::Container)?;
    let other = open_peer(peer, &ctr)?;
    let mut problems = Problems::default();

    let (ctr_index, ctr_iface) = result::find(prev, ifname, Some(netns), &mut problems);
    result::find(prev, peer_name, Some(&peer.netns), &mut problems);
    let ctr_ips: Vec<IpConfig> = ctr_index
        .map(|i| prev.ips_of(i).cloned().collect())
        .unwrap_or_default();

    let ctr_link = problems.link(
        &ctr.nl,
        ifname,
        Expect {
            mtu: call.config.mtu,
            mac: ctr_iface.and_then(|i| i.mac.as_deref()),
        },
    );
    let mark = berth_netlink::format_mac(&att.peer_mac());
    let peer_link = problems.link(
        &other.nl,
        peer_name,
        Expect {
            mtu: call.config.mtu,
            mac: Some(&mark),
        },
    );
    if let (Some(c), Some(p)) = (&ctr_link, &peer_link) {
        problems.pair(c, p);
    }
    if let Some(link) = &ctr_link {
        let addrs: Vec<_> = ctr_ips.iter().map(|ip| ip.address).collect();
        let plan = routing::peer_mode(&addrs, &gateways(&ctr_ips), &prev.routes, link.index);
        problems.addrs(&ctr.nl, link, &plan);
        problems.routes(&ctr.nl, link, &plan);
    }
    if let Some(link) = &peer_link {
        let plan = EndPlan {
            addrs: peer.addresses.clone(),
            ..EndPlan::default()
        };
        problems.addrs(&other.nl, link, &plan);
    }
    problems.finish().map_err(VethError::from)
}
