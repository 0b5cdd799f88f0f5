//! Host mode, ptp's: the pair joins the container to the host, which routes for it.
//!
//! `add`, `del` and `check` mirror each other; the layout itself is in [`crate::routing`].

use std::path::Path;

use berth_cni::{CniResult, HostLinkName, IpConfig};
use berth_firewall::Masquerading;
use berth_netlink::{OwnedName, Rollback};
use ipnetwork::IpNetwork;

use crate::check::{Expect, Problems};
use crate::config::Host;
use crate::error::VethError;
use crate::ns::{self, Role};
use crate::pair::{self, EndSpec, PairError};
use crate::routing::{self, Assigned};
use crate::step::Step;
use crate::{Call, forwarding, ipam, result};

/// The sources to masquerade: the container's addresses with their subnet prefix, so traffic
/// inside the subnet keeps its source address (ptp's `SetupIPMasq(&ipc.Address, …)`).
fn masq_sources(ips: &[Assigned]) -> Vec<IpNetwork> {
    ips.iter().map(|a| a.address).collect()
}

pub fn add(call: &Call<'_>, netns: &Path, mode: &Host) -> Result<CniResult, VethError> {
    let kind = mode.ipam.as_str();
    let att = call.attachment();
    let host_names = att.host_link();
    let ctr = ns::open(netns, Role::Container)?;
    let host = ns::host()?;
    // Checked before anything is created, so a broken backend costs no IPAM round trip.
    let firewall = mode
        .masq
        .map(|m| Masquerading::open(m.backend))
        .transpose()?;

    // Declared after everything its undo steps borrow, so it is dropped (and undoes) first.
    let mut rollback = Rollback::new();

    let mut result = ipam::add(kind, call.args)?;
    rollback.push(
        format!("release the addresses (IPAM {kind} DEL)"),
        move || ipam::del(kind, call.args),
    );
    call.reached(Step::Ipam)?;
    let assigned = ipam::with_gateways(kind, &result.ips)?;

    forwarding::enable(&forwarding::families_of(
        assigned.iter().map(|a| a.address.ip()),
    ))?;
    call.reached(Step::Forwarding)?;

    let (host_link, ctr_link) = pair::create(
        EndSpec {
            nl: &host,
            name: host_names.preferred(),
            mac: None,
        },
        Some(owned(&host_names)),
        EndSpec {
            nl: &ctr.nl,
            name: call.args.ifname.as_str(),
            mac: None,
        },
        &ctr.ns,
        call.config.mtu,
    )?;
    let host_index = host_link.index;
    let host_nl = &host;
    // Deleting one end deletes the pair, and with it every address and route on either end.
    rollback.push(
        format!("delete the veth pair {}", host_link.name),
        move || host_nl.del_link(host_index),
    );
    call.reached(Step::CreatePair)?;

    if assigned.iter().any(|a| a.address.is_ipv6()) {
        pair::disable_dad(Some(&ctr.ns), &ctr_link.name)?;
        pair::disable_dad(None, &host_link.name)?;
    }
    pair::set_up([(&ctr.nl, &ctr_link), (&host, &host_link)])?;
    call.reached(Step::LinksUp)?;

    let ctr_plan = routing::host_mode_container(&assigned, &result.routes, ctr_link.index);
    pair::add_addrs(&ctr.nl, &ctr_link, &ctr_plan)?;
    call.reached(Step::ContainerAddrs)?;
    pair::add_routes(&ctr.nl, &ctr_link, &ctr_plan)?;
    call.reached(Step::ContainerRoutes)?;

    let host_plan = routing::host_mode_host(&assigned, host_link.index);
    pair::add_addrs(&host, &host_link, &host_plan)?;
    call.reached(Step::HostAddrs)?;
    pair::add_routes(&host, &host_link, &host_plan)?;
    call.reached(Step::HostRoutes)?;

    if let Some(fw) = &firewall {
        fw.add(&att.owner(), &masq_sources(&assigned))?;
        rollback.push("delete the masquerade rules", move || fw.del(&att.owner()));
    }
    call.reached(Step::Masquerade)?;

    result.interfaces = vec![
        result::interface(&host_link, None),
        result::interface(&ctr_link, Some(netns)),
    ];
    for ip in &mut result.ips {
        ip.interface = Some(1);
    }
    if let Some(dns) = &call.config.dns {
        result.dns = dns.clone();
    }
    rollback.commit();
    Ok(result)
}

fn owned(names: &HostLinkName) -> OwnedName<'_> {
    OwnedName {
        candidates: &names.candidates,
        alias: &names.alias,
    }
}

/// Best effort: every step is tried, every failure reported. A vanished namespace or link is
/// already the goal.
pub fn del(call: &Call<'_>, mode: &Host) -> Result<(), VethError> {
    let att = call.attachment();
    // The links, the masquerade rules and the IPAM release are independent and mostly wait
    // (the kernel deleting the veth, firewall commits, the IPAM process): run them at once.
    // Threads start in the namespace of the thread that spawns them: the host's.
    let errors = std::thread::scope(|scope| {
        let links = scope.spawn(|| {
            let mut errors: Vec<VethError> = Vec::new();
            if let Some(netns) = call.args.netns_opt() {
                match ns::open(netns, Role::Container) {
                    Ok(ctr) => {
                        if let Err(e) =
                            pair::delete_if(&ctr.nl, call.args.ifname.as_str(), |_| true)
                        {
                            errors.push(e.into());
                        }
                    }
                    Err(e) if e.is_gone() => {}
                    Err(e) => errors.push(e.into()),
                }
            }
            // The host end is still there if the namespace outlived its file (or the
            // container side failed above): found by our alias, never by a name alone.
            let names = att.host_link();
            let host_end = ns::host().map_err(VethError::from).and_then(|host| {
                let found = host
                    .owned_link(owned(&names))
                    .map_err(|source| PairError::Lookup {
                        name: names.preferred().to_owned(),
                        source,
                    })?;
                match found {
                    Some(link) => pair::delete_if(&host, &link.name, |_| true).map_err(Into::into),
                    None => Ok(false),
                }
            });
            if let Err(e) = host_end {
                errors.push(e);
            }
            errors
        });
        let masq = mode.masq.map(|m| {
            let att = &att;
            scope.spawn(move || {
                Masquerading::open(m.backend)
                    .and_then(|fw| fw.del(&att.owner()))
                    .map_err(VethError::from)
            })
        });
        let ipam = scope.spawn(|| ipam::del(&mode.ipam, call.args).map_err(VethError::from));
        let mut errors = links
            .join()
            .unwrap_or_else(|_| vec![VethError::Panicked("deleting the veth pair")]);
        for (what, handle) in [
            ("removing masquerade rules", masq),
            ("releasing addresses", Some(ipam)),
        ] {
            match handle.map(|h| h.join()) {
                None | Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => errors.push(e),
                Some(Err(_)) => errors.push(VethError::Panicked(what)),
            }
        }
        errors
    });
    VethError::teardown(errors)
}

/// Everything ADD set up for `prevResult`, on both ends and in the host's tables.
pub fn check(call: &Call<'_>, netns: &Path, mode: &Host) -> Result<(), VethError> {
    let kind = mode.ipam.as_str();
    let prev = call.prev_result()?;
    ipam::check(kind, call.args)?;
    let att = call.attachment();
    let ctr = ns::open(netns, Role::Container)?;
    let host = ns::host()?;
    let names = att.host_link();
    // Our link's name, found by our alias (or the usual name, reported missing below).
    let host_name = match host.owned_link(owned(&names)) {
        Ok(Some(link)) => link.name,
        _ => names.preferred().to_owned(),
    };
    let mut problems = Problems::default();

    let (ctr_index, ctr_iface) =
        result::find(prev, call.args.ifname.as_str(), Some(netns), &mut problems);
    let (_, host_iface) = result::find(prev, &host_name, None, &mut problems);
    let ips: Vec<IpConfig> = ctr_index
        .map(|i| prev.ips_of(i).cloned().collect())
        .unwrap_or_default();
    let assigned = match ipam::with_gateways(kind, &ips) {
        Ok(assigned) => assigned,
        Err(e) => {
            problems.push(format!("prevResult: {e}"));
            Vec::new()
        }
    };

    let ctr_link = problems.link(
        &ctr.nl,
        call.args.ifname.as_str(),
        Expect {
            mtu: call.config.mtu,
            mac: ctr_iface.and_then(|i| i.mac.as_deref()),
        },
    );
    let host_link = problems.link(
        &host,
        &host_name,
        Expect {
            mtu: call.config.mtu,
            mac: host_iface.and_then(|i| i.mac.as_deref()),
        },
    );
    if let (Some(c), Some(h)) = (&ctr_link, &host_link) {
        problems.pair(c, h);
    }
    if let Some(link) = &ctr_link {
        let plan = routing::host_mode_container(&assigned, &prev.routes, link.index);
        problems.addrs(&ctr.nl, link, &plan);
        problems.routes(&ctr.nl, link, &plan);
    }
    if let Some(link) = &host_link {
        let plan = routing::host_mode_host(&assigned, link.index);
        problems.addrs(&host, link, &plan);
        problems.routes(&host, link, &plan);
    }
    problems.extend(forwarding::disabled(&forwarding::families_of(
        assigned.iter().map(|a| a.address.ip()),
    )));
    if let Some(m) = mode.masq {
        if let Err(e) = Masquerading::open(m.backend)
            .and_then(|fw| fw.check(&att.owner(), &masq_sources(&assigned)))
        {
            problems.push(berth_netlink::error_chain(&e));
        }
    }
    problems.finish().map_err(VethError::from)
}
