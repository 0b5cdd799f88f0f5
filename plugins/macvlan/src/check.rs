//! CHECK: the reference's checks (prevResult's interface in this sandbox, the master, a
//! macvlan of the configured mode with the reported MAC, every address and route), plus the
//! link's parent, MTU and state; every difference is reported, not just the first.

use berth_cni::{CniResult, Interface};
use berth_netlink::{IpFamily, Link, Netlink, error_chain, format_mac};

use crate::config::mode_name;
use crate::error::{CheckError, MacvlanError};
use crate::master::place;
use crate::{Call, ipam, master, ns};

pub fn check(call: &Call<'_>) -> Result<(), MacvlanError> {
    let config = call.config;
    let ifname = call.args.ifname.as_str();
    let ctr = ns::open(call.netns)?;
    if let Some(kind) = &config.ipam {
        ipam::check(kind, call.args)?;
    }
    let prev = call
        .conf
        .prev_result
        .as_ref()
        .ok_or(MacvlanError::NoPrevResult)?;
    let host = if config.link_in_container {
        None
    } else {
        Some(ns::host()?)
    };
    let master = master::resolve(
        host.as_ref().unwrap_or(&ctr.nl),
        config.master.as_ref(),
        place(config),
    )?;
    master::mtu(config, &master)?;

    let mut problems = Vec::new();
    let sandbox = call.netns.display().to_string();
    let iface = prev
        .interfaces
        .iter()
        .find(|i| i.name == ifname && i.sandbox.as_deref() == Some(sandbox.as_str()));
    if iface.is_none() {
        problems.push(format!(
            "prevResult has no interface {ifname} in sandbox {sandbox}"
        ));
    }
    match ctr.nl.link_by_name(ifname) {
        Ok(Some(link)) => {
            check_link(call, &ctr.nl, &link, &master, iface, &mut problems);
            check_addresses(&ctr.nl, &link, prev, &mut problems);
        }
        Ok(None) => problems.push(format!("interface {ifname} not found in {sandbox}")),
        Err(e) => problems.push(error_chain(&e)),
    }
    check_routes(&ctr.nl, prev, &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CheckError { problems }.into())
    }
}

fn check_link(
    call: &Call<'_>,
    nl: &Netlink,
    link: &Link,
    master: &Link,
    iface: Option<&Interface>,
    problems: &mut Vec<String>,
) {
    let name = &link.name;
    match nl.macvlan_state(link.index) {
        Ok(Some(state)) if state.link.kind.as_deref() == Some("macvlan") => {
            let expected = call.config.mode;
            match state.mode {
                Some(mode) if mode == expected => {}
                Some(mode) => problems.push(format!(
                    "container macvlan mode {} does not match expected value: {}",
                    mode_name(mode),
                    mode_name(expected)
                )),
                None => problems.push(format!(
                    "container macvlan {name} is in a mode other than {}",
                    mode_name(expected)
                )),
            }
        }
        Ok(Some(_)) => problems.push(format!("container interface {name} not of type macvlan")),
        Ok(None) => problems.push(format!("interface {name} vanished during CHECK")),
        Err(e) => problems.push(error_chain(&e)),
    }
    // IFLA_LINK is the parent's index in the parent's namespace: the master's.
    if link.link_index != Some(master.index) {
        problems.push(format!("{name} is not a macvlan of master {}", master.name));
    }
    if !link.up {
        problems.push(format!("{name} is down"));
    }
    let Some(iface) = iface else { return };
    let actual = link.mac.as_ref().map(format_mac).unwrap_or_default();
    if let Some(mac) = iface.mac.as_deref().filter(|m| !m.is_empty()) {
        if !mac.eq_ignore_ascii_case(&actual) {
            problems.push(format!(
                "interface {name} Mac {mac} doesn't match container Mac: {actual}"
            ));
        }
    }
    if let Some(mtu) = iface.mtu.filter(|m| *m != 0) {
        if mtu != link.mtu {
            problems.push(format!(
                "interface {name} MTU {mtu} doesn't match container MTU {}",
                link.mtu
            ));
        }
    }
}

/// Every address of prevResult must be on the link (as the reference, whatever interface the
/// address names: there is only one).
fn check_addresses(nl: &Netlink, link: &Link, prev: &CniResult, problems: &mut Vec<String>) {
    let present = match nl.addrs(Some(link.index)) {
        Ok(addrs) => addrs,
        Err(e) => return problems.push(error_chain(&e)),
    };
    for ip in &prev.ips {
        if !present.iter().any(|a| a.net == ip.address) {
            problems.push(format!("address {} not found on {}", ip.address, link.name));
        }
    }
}

/// Every route of prevResult must be in the container's table, with its gateway when it
/// names one.
fn check_routes(nl: &Netlink, prev: &CniResult, problems: &mut Vec<String>) {
    for route in &prev.routes {
        let family = IpFamily::of(route.dst.ip());
        let found = match nl.routes(family, route.table) {
            Ok(routes) => routes
                .iter()
                .any(|r| r.dst == route.dst && route.gw.is_none_or(|gw| r.gateway == Some(gw))),
            Err(e) => return problems.push(error_chain(&e)),
        };
        if !found {
            let via = route.gw.map(|g| format!(" via {g}")).unwrap_or_default();
            problems.push(format!(
                "expected route {}{via} not found in the routing table",
                route.dst
            ));
        }
    }
}
