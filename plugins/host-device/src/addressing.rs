//! The IPAM plugin's answer applied to the device in the container, as the reference's
//! `ipam.ConfigureIface` does: IPv6 enabled when needed, every address, then every route (a
//! route without `gw` goes via the first gateway of its family, if there is one).

use std::net::IpAddr;

use berth_cni::CniResult;
use berth_netlink::{
    AddrError, IpFamily, Netlink, Netns, NetnsError, Route, RouteError, RouteScope, SysctlError,
    sysctl,
};
use ipnetwork::IpNetwork;

/// Errors of the `addressing` module.
#[derive(Debug, thiserror::Error)]
pub enum AddressingError {
    #[error("enable IPv6 on {ifname} in {netns}")]
    EnableIpv6 {
        ifname: String,
        netns: String,
        #[source]
        source: Box<SysctlError>,
    },
    #[error("enter {netns}")]
    Enter {
        netns: String,
        #[source]
        source: NetnsError,
    },
    #[error("add address {address} to {ifname}")]
    Address {
        address: IpNetwork,
        ifname: String,
        #[source]
        source: Box<AddrError>,
    },
    #[error("add route {route} to {ifname}")]
    Route {
        route: String,
        ifname: String,
        #[source]
        source: Box<RouteError>,
    },
}

/// The first gateway of each family among the result's addresses.
fn gateways(result: &CniResult) -> (Option<IpAddr>, Option<IpAddr>) {
    let mut v4 = None;
    let mut v6 = None;
    for gw in result.ips.iter().filter_map(|ip| ip.gateway) {
        match gw {
            IpAddr::V4(_) if v4.is_none() => v4 = Some(gw),
            IpAddr::V6(_) if v6.is_none() => v6 = Some(gw),
            _ => {}
        }
    }
    (v4, v6)
}

fn scope_of(scope: Option<u8>) -> RouteScope {
    match scope {
        Some(253) => RouteScope::Link,
        Some(254) => RouteScope::Host,
        _ => RouteScope::Universe,
    }
}

/// The kernel routes a result's routes become, on link `index`.
pub fn routes(result: &CniResult, index: u32) -> Vec<Route> {
    let (v4gw, v6gw) = gateways(result);
    result
        .routes
        .iter()
        .map(|r| {
            let family_gw = match r.dst {
                IpNetwork::V4(_) => v4gw,
                IpNetwork::V6(_) => v6gw,
            };
            let mut route = Route::new(r.dst);
            route.gateway = r.gw.or(family_gw);
            route.oif = Some(index);
            route.table = r.table;
            route.metric = r.priority;
            route.scope = scope_of(r.scope);
            route.mtu = r.mtu;
            route.advmss = r.advmss;
            route
        })
        .collect()
}

/// IPv6 may be disabled in a fresh namespace (`disable_ipv6` follows `default`); addresses
/// cannot be added then. Read errors are ignored, as in the reference.
fn enable_ipv6(ctr_ns: &Netns, ifname: &str) -> Result<(), AddressingError> {
    let netns = ctr_ns.to_string();
    ctr_ns
        .run(|| {
            for dev in ["lo", ifname] {
                let key = format!("net/ipv6/conf/{dev}/disable_ipv6");
                if sysctl::read(&key).is_ok_and(|v| v != "0") {
                    sysctl::write(&key, "0").map_err(|source| AddressingError::EnableIpv6 {
                        ifname: dev.to_owned(),
                        netns: netns.clone(),
                        source: Box::new(source),
                    })?;
                }
            }
            Ok(())
        })
        .map_err(|source| AddressingError::Enter {
            netns: netns.clone(),
            source,
        })?
}

/// Adds the result's addresses and routes to link `index` (`ifname`) of the container.
pub fn configure(
    ctr_ns: &Netns,
    ctr: &Netlink,
    index: u32,
    ifname: &str,
    result: &CniResult,
) -> Result<(), AddressingError> {
    if result.ips.iter().any(|ip| ip.address.is_ipv6()) {
        enable_ipv6(ctr_ns, ifname)?;
    }
    for ip in &result.ips {
        ctr.add_addr(index, ip.address)
            .map_err(|source| AddressingError::Address {
                address: ip.address,
                ifname: ifname.to_owned(),
                source: Box::new(source),
            })?;
    }
    for route in routes(result, index) {
        ctr.add_route(&route)
            .map_err(|source| AddressingError::Route {
                route: route.to_string(),
                ifname: ifname.to_owned(),
                source: Box::new(source),
            })?;
    }
    Ok(())
}

/// CHECK: what of `result` is missing on link `index`, one line per finding.
pub fn missing(ctr: &Netlink, index: u32, ifname: &str, result: &CniResult) -> Vec<String> {
    let mut findings = Vec::new();
    match ctr.addrs(Some(index)) {
        Ok(have) => {
            for ip in &result.ips {
                if !have.iter().any(|a| a.net == ip.address) {
                    findings.push(format!("address {} is not on {ifname}", ip.address));
                }
            }
        }
        Err(e) => findings.push(berth_netlink::error_chain(&e)),
    }
    for want in routes(result, index) {
        let family = IpFamily::of(want.dst.ip());
        match ctr.routes(family, want.table) {
            Ok(have) => {
                let found = have.iter().any(|r| {
                    r.dst == want.dst && r.gateway == want.gateway && r.oif == Some(index)
                });
                if !found {
                    findings.push(format!("route {want} is missing"));
                }
            }
            Err(e) => findings.push(berth_netlink::error_chain(&e)),
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use berth_cni::{IpConfig, Route as CniRoute};

    #[test]
    fn routes_without_gw_take_the_first_gateway_of_their_family() {
        let result = CniResult {
            ips: vec![
                IpConfig {
                    address: "198.18.0.2/24".parse().unwrap(),
                    gateway: Some("198.18.0.1".parse().unwrap()),
                    interface: Some(0),
                },
                IpConfig {
                    address: "fd42:b347::2/64".parse().unwrap(),
                    gateway: Some("fd42:b347::1".parse().unwrap()),
                    interface: Some(0),
                },
            ],
            routes: vec![
                CniRoute::new("0.0.0.0/0".parse().unwrap(), None),
                CniRoute::new("::/0".parse().unwrap(), None),
                CniRoute::new(
                    "198.19.0.0/16".parse().unwrap(),
                    Some("198.18.0.9".parse().unwrap()),
                ),
            ],
            ..CniResult::default()
        };
        let gws: Vec<String> = routes(&result, 7)
            .iter()
            .map(|r| r.gateway.unwrap().to_string())
            .collect();
        assert_eq!(gws, ["198.18.0.1", "fd42:b347::1", "198.18.0.9"]);
    }
}
