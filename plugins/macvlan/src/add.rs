//! ADD: a macvlan link on the master, created directly inside the container's namespace under
//! CNI_IFNAME, then (with `ipam`) its addresses and routes.
//!
//! Steps, each registering its undo in a `Rollback` so that a failed ADD leaves nothing:
//! 1. master lookup and MTU bound (nothing to undo);
//! 2. IPAM ADD on a helper thread while the link is created (undo: IPAM DEL; delete the link,
//!    which takes its addresses, routes and sysctls with it);
//! 3. sysctls, addresses, up, routes, and the wait for IPv6 duplicate address detection.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use berth_cni::{CniResult, Interface, IpConfig};
use berth_netlink::{
    Errno, IpFamily, Link, MacvlanSpec, Netlink, Netns, Rollback, RouteScope, format_mac,
    ipnetwork::IpNetwork, sysctl,
};

use crate::error::{AddError, MacvlanError};
use crate::ipam::{self, IpamError};
use crate::master::place;
use crate::step::Step;
use crate::{Call, master, ns};

/// How long to wait for IPv6 duplicate address detection (the reference's `SettleAddresses`).
const DAD_TIMEOUT: Duration = Duration::from_secs(10);
const DAD_POLL: Duration = Duration::from_millis(50);

impl Call<'_> {
    /// The failpoint: fail right after `step` if asked to.
    fn reached(&self, step: Step) -> Result<(), AddError> {
        match self.failpoint {
            Some(fail) if fail == step => Err(AddError::Failpoint(step)),
            _ => Ok(()),
        }
    }
}

pub fn add(call: &Call<'_>) -> Result<CniResult, MacvlanError> {
    let config = call.config;
    let ifname = call.args.ifname.as_str();
    let ctr = ns::open(call.netns)?;
    // With `linkInContainer` the master is a link of the container's namespace, and the
    // macvlan is created right beside it: no host handle is needed.
    let host = if config.link_in_container {
        None
    } else {
        Some(ns::host()?)
    };
    let parent_nl = host.as_ref().unwrap_or(&ctr.nl);
    let master = master::resolve(parent_nl, config.master.as_ref(), place(config))?;
    let mtu = master::mtu(config, &master)?;
    let spec = MacvlanSpec {
        name: ifname,
        parent: master.index,
        mode: config.mode,
        netns: host.as_ref().map(|_| &ctr.ns),
        mtu,
        mac: config.mac,
    };

    // A repeated ADD of a live attachment must fail before IPAM runs: the rollback's IPAM DEL
    // releases by (network, container, ifname), which would take the live attachment's
    // addresses with it. (The kernel's EEXIST below still catches a racing ADD.)
    if lookup(&ctr.nl, ifname)?.is_some() {
        return Err(AddError::NameTaken {
            name: ifname.to_owned(),
            netns: ctr.nl.netns().to_owned(),
        }
        .into());
    }

    // Declared after everything its undo steps borrow, so it is dropped (and undoes) first.
    let mut rollback = Rollback::new();

    // The IPAM plugin is another process: let it work while the link is created.
    let (ipam_outcome, created) = std::thread::scope(|s| {
        let ipam = config
            .ipam
            .as_deref()
            .map(|kind| (kind, s.spawn(move || ipam::add(kind, call.args))));
        let created = create(parent_nl, &ctr.nl, &spec, &master.name);
        let ipam = ipam.map(|(kind, thread)| {
            let outcome = thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (kind, outcome)
        });
        (ipam, created)
    });
    // Both undo steps are registered before either failure is returned.
    let ipam_result = match ipam_outcome {
        Some((kind, Ok(result))) => {
            rollback.push(
                format!("release the addresses (IPAM {kind} DEL)"),
                move || ipam::del(kind, call.args),
            );
            Ok(Some((kind, result)))
        }
        Some((_, Err(e))) => Err(e),
        None => Ok(None),
    };
    let link = created?;
    let (ctr_nl, index) = (&ctr.nl, link.index);
    rollback.push(format!("delete macvlan {ifname}"), move || {
        ctr_nl.del_link(index)
    });
    let ipam_result = ipam_result?;
    if ipam_result.is_some() {
        call.reached(Step::Ipam)?;
    }
    call.reached(Step::CreateLink)?;

    let interface = Interface {
        name: link.name.clone(),
        mac: link.mac.as_ref().map(format_mac),
        mtu: Some(link.mtu),
        sandbox: Some(call.netns.display().to_string()),
        ..Interface::default()
    };
    let mut result = CniResult {
        interfaces: vec![interface],
        dns: config.dns.clone(),
        ..CniResult::default()
    };
    match ipam_result {
        Some((kind, ipam)) => {
            if ipam.ips.is_empty() {
                return Err(IpamError::NoAddress {
                    kind: kind.to_owned(),
                }
                .into());
            }
            result.ips = ipam
                .ips
                .into_iter()
                .map(|ip| IpConfig {
                    interface: Some(0),
                    ..ip
                })
                .collect();
            result.routes = ipam.routes;
            configure(call, &ctr.ns, &ctr.nl, &link, &result)?;
        }
        None => {
            set_up(&ctr.nl, &link)?;
            call.reached(Step::LinkUp)?;
        }
    }
    rollback.commit();
    Ok(result)
}

/// Creates the macvlan and looks it up in the container's namespace, where it now lives.
fn create(
    parent_nl: &Netlink,
    ctr_nl: &Netlink,
    spec: &MacvlanSpec<'_>,
    master: &str,
) -> Result<Link, AddError> {
    if let Err(source) = parent_nl.add_macvlan(spec) {
        // The link is created directly in the container's namespace under its final name,
        // so EEXIST can only mean that name is taken there.
        if source.is_exists() {
            return Err(AddError::NameTaken {
                name: spec.name.to_owned(),
                netns: ctr_nl.netns().to_owned(),
            });
        }
        let hint = match source.errno() {
            Some(libc::EINVAL) => {
                " (a master carries either one passthru macvlan and nothing else, or any number in the other modes)"
            }
            Some(libc::EADDRINUSE) => " (another link on this master already has that MAC)",
            Some(libc::EADDRNOTAVAIL) => " (the MAC is not a unicast address)",
            _ => "",
        };
        return Err(AddError::Create {
            name: spec.name.to_owned(),
            master: master.to_owned(),
            netns: ctr_nl.netns().to_owned(),
            hint,
            source: Box::new(source),
        });
    }
    lookup(ctr_nl, spec.name)?.ok_or_else(|| AddError::Vanished {
        name: spec.name.to_owned(),
        netns: ctr_nl.netns().to_owned(),
    })
}

fn lookup(nl: &Netlink, name: &str) -> Result<Option<Link>, AddError> {
    nl.link_by_name(name).map_err(|source| AddError::Lookup {
        name: name.to_owned(),
        source: Box::new(source),
    })
}

fn set_up(nl: &Netlink, link: &Link) -> Result<(), AddError> {
    nl.set_up(link.index).map_err(|source| AddError::Up {
        ifname: link.name.clone(),
        source: Box::new(source),
    })
}

/// Layer 3: sysctls, addresses, up, routes, then the wait for IPv6 DAD.
///
/// The addresses go on while the link is still down (the reference adds them after). With
/// `arp_notify` set, bringing a link up makes the kernel send a gratuitous ARP for each IPv4
/// address it has (`inetdev_event`, NETDEV_UP), so the announcement that tells the neighbours
/// the address now lives at this MAC (it may have been another container's a minute ago) is
/// made by the up itself, with the addresses in it. IPv6 announces itself with an unsolicited
/// neighbour advertisement when DAD completes, thanks to `ndisc_notify`.
fn configure(
    call: &Call<'_>,
    ns: &Netns,
    nl: &Netlink,
    link: &Link,
    result: &CniResult,
) -> Result<(), AddError> {
    let ifname = link.name.as_str();
    let v6: Vec<IpNetwork> = result
        .ips
        .iter()
        .map(|ip| ip.address)
        .filter(IpNetwork::is_ipv6)
        .collect();
    sysctls(ns, ifname, !v6.is_empty())?;
    call.reached(Step::Sysctls)?;
    for ip in &result.ips {
        nl.add_addr(link.index, ip.address)
            .map_err(|source| AddError::Addr {
                address: ip.address,
                ifname: ifname.to_owned(),
                source: Box::new(source),
            })?;
    }
    call.reached(Step::Addresses)?;
    set_up(nl, link)?;
    call.reached(Step::LinkUp)?;
    let gateways = Gateways::of(&result.ips);
    for route in &result.routes {
        let kernel = kernel_route(route, link.index, &gateways);
        nl.add_route(&kernel).map_err(|source| AddError::Route {
            route: kernel.to_string(),
            ifname: ifname.to_owned(),
            source: Box::new(source),
        })?;
    }
    call.reached(Step::Routes)?;
    if !v6.is_empty() {
        settle_dad(nl, link, &v6)?;
    }
    call.reached(Step::Dad)?;
    Ok(())
}

/// In the container's namespace (`/proc/sys/net` resolves against the namespace of the thread
/// that opens the file): `arp_notify` and `ndisc_notify`, so the link announces its addresses
/// (best effort, as in the reference); and IPv6 enabled on `lo` and the link when IPv6
/// addresses are coming, since the kernel refuses them where it is disabled.
fn sysctls(ns: &Netns, ifname: &str, has_v6: bool) -> Result<(), AddError> {
    ns.run(|| {
        let _ = sysctl::write(&format!("net/ipv4/conf/{ifname}/arp_notify"), "1");
        let _ = sysctl::write(&format!("net/ipv6/conf/{ifname}/ndisc_notify"), "1");
        if !has_v6 {
            return Ok(());
        }
        for dev in ["lo", ifname] {
            let key = format!("net/ipv6/conf/{dev}/disable_ipv6");
            // Unreadable (a kernel without IPv6): the address request will say so.
            match sysctl::read(&key) {
                Ok(v) if v != "0" => {}
                _ => continue,
            }
            sysctl::write(&key, "0").map_err(|source| AddError::EnableIpv6 {
                dev: dev.to_owned(),
                key: key.clone(),
                source: Box::new(source),
            })?;
        }
        Ok(())
    })
    .map_err(|source| AddError::EnterNetns {
        netns: ns.to_string(),
        ifname: ifname.to_owned(),
        source: Box::new(source),
    })?
}

/// The first gateway of each family among the addresses: routes without their own `gw` go
/// via it (the reference's `ConfigureIface`).
struct Gateways {
    v4: Option<IpAddr>,
    v6: Option<IpAddr>,
}

impl Gateways {
    fn of(ips: &[IpConfig]) -> Gateways {
        let first = |v4: bool| {
            ips.iter()
                .filter_map(|ip| ip.gateway)
                .find(|gw| gw.is_ipv4() == v4)
        };
        Gateways {
            v4: first(true),
            v6: first(false),
        }
    }

    fn for_family(&self, family: IpFamily) -> Option<IpAddr> {
        match family {
            IpFamily::V4 => self.v4,
            IpFamily::V6 => self.v6,
        }
    }
}

/// The kernel route for a result route: through the macvlan, via its gateway or the family's
/// first gateway; the 1.1.0 fields (table, priority, scope, mtu, advmss) as given.
fn kernel_route(route: &berth_cni::Route, oif: u32, gateways: &Gateways) -> berth_netlink::Route {
    berth_netlink::Route {
        gateway: route
            .gw
            .or_else(|| gateways.for_family(IpFamily::of(route.dst.ip()))),
        oif: Some(oif),
        table: route.table,
        metric: route.priority,
        scope: match route.scope {
            Some(253) => RouteScope::Link,
            Some(254) => RouteScope::Host,
            _ => RouteScope::Universe,
        },
        mtu: route.mtu,
        advmss: route.advmss,
        ..berth_netlink::Route::new(route.dst)
    }
}

/// Waits until the link's IPv6 addresses leave the "tentative" state, so the container can use
/// them when ADD returns. A macvlan shares a real segment with other hosts, so DAD stays on (unlike
/// the bridge plugin's default): a duplicate fails the ADD, where the reference goes on with
/// an address the kernel will never use. Without a carrier DAD cannot run until one appears:
/// no wait then, as after the timeout (the addresses become usable once DAD completes).
fn settle_dad(nl: &Netlink, link: &Link, v6: &[IpNetwork]) -> Result<(), AddError> {
    let ifname = link.name.as_str();
    // A GETLINK for a single device also runs its pending link-watch event, so the link is
    // operational (and DAD starts) now rather than whenever that work would have run.
    let state = nl
        .macvlan_state(link.index)
        .map_err(|source| AddError::Lookup {
            name: ifname.to_owned(),
            source: Box::new(source),
        })?;
    if !state.is_some_and(|s| s.carrier) {
        return Ok(());
    }
    let deadline = Instant::now() + DAD_TIMEOUT;
    loop {
        let addrs = nl
            .addrs(Some(link.index))
            .map_err(|source| AddError::ListAddrs {
                ifname: ifname.to_owned(),
                source: Box::new(source),
            })?;
        // Every IPv6 address of the link, its link-local one included (as the reference's
        // `SettleAddresses`): neighbour discovery for forwarded packets needs it.
        let mut pending = false;
        for addr in addrs.iter().filter(|a| a.net.is_ipv6()) {
            if addr.dad_failed && v6.contains(&addr.net) {
                return Err(AddError::Duplicate {
                    address: addr.net,
                    ifname: ifname.to_owned(),
                });
            }
            pending |= addr.tentative && !addr.dad_failed;
        }
        if !pending {
            return Ok(());
        }
        if Instant::now() >= deadline {
            eprintln!(
                "macvlan: IPv6 addresses of {ifname} still tentative after {DAD_TIMEOUT:?}; going on"
            );
            return Ok(());
        }
        std::thread::sleep(DAD_POLL);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ip(address: &str, gateway: Option<&str>) -> IpConfig {
        IpConfig {
            address: address.parse().unwrap(),
            gateway: gateway.map(|g| g.parse().unwrap()),
            interface: Some(0),
        }
    }

    #[test]
    fn routes_without_gw_take_the_first_gateway_of_their_family() {
        let ips = [
            ip("198.18.0.2/24", None),
            ip("fd42:b347::2/64", Some("fd42:b347::1")),
            ip("198.18.1.2/24", Some("198.18.1.1")),
            ip("198.18.2.2/24", Some("198.18.2.1")),
        ];
        let gws = Gateways::of(&ips);
        let route = |dst: &str, gw: Option<&str>| {
            berth_cni::Route::new(dst.parse().unwrap(), gw.map(|g| g.parse().unwrap()))
        };
        let k = kernel_route(&route("0.0.0.0/0", None), 7, &gws);
        assert_eq!(k.gateway, Some("198.18.1.1".parse().unwrap()));
        assert_eq!(k.oif, Some(7));
        let k = kernel_route(&route("::/0", None), 7, &gws);
        assert_eq!(k.gateway, Some("fd42:b347::1".parse().unwrap()));
        let k = kernel_route(&route("198.19.0.0/16", Some("198.18.0.9")), 7, &gws);
        assert_eq!(k.gateway, Some("198.18.0.9".parse().unwrap()));
        // No gateway of that family: an on-link route.
        let none = Gateways::of(&[ip("198.18.0.2/24", None)]);
        assert_eq!(kernel_route(&route("::/0", None), 7, &none).gateway, None);
    }

    #[test]
    fn route_scope_and_1_1_fields_are_kept() {
        let mut r = berth_cni::Route::new("198.19.0.0/16".parse().unwrap(), None);
        r.scope = Some(253);
        r.table = Some(100);
        r.priority = Some(5);
        r.mtu = Some(1300);
        let k = kernel_route(&r, 3, &Gateways { v4: None, v6: None });
        assert_eq!(k.scope, RouteScope::Link);
        assert_eq!((k.table, k.metric, k.mtu), (Some(100), Some(5), Some(1300)));
    }

    #[test]
    fn steps_are_named() {
        let names: Vec<_> = Step::LAYER3.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            names,
            [
                "ipam",
                "create-link",
                "sysctls",
                "addresses",
                "link-up",
                "routes",
                "dad"
            ]
        );
    }
}
