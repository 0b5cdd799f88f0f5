//! Which addresses and routes go on each end of the pair. Pure functions of the IPAM result,
//! so ADD and CHECK compute the same layout and the layout can be unit-tested.
//!
//! Host mode reproduces the reference ptp plugin exactly. A veth is an Ethernet link, not a
//! point-to-point one, so ptp makes it behave like one through routing:
//! - the container end gets the IPAM address *with its prefix* (e.g. `198.18.0.5/24`), but the
//!   prefix route the kernel adds for it (`198.18.0.0/24 dev eth0`) is replaced by
//!   `198.18.0.1 dev eth0 scope link` (the gateway, on-link) and
//!   `198.18.0.0/24 via 198.18.0.1`: nothing is on-link except the gateway, so even traffic to
//!   neighbours in the subnet goes through the host, which routes it to their own veth;
//! - the IPAM routes (typically the default route) go via that gateway;
//! - the host end holds the gateway as `/32` (`/128`), and the host reaches the container
//!   through `198.18.0.5/32 dev veth… scope host`.
//!
//! Every container on the network has the same gateway address on its own host veth; that is
//! fine because addresses belong to the host, not to a link, and ARP for the gateway is
//! answered on whichever link it arrives.

use std::net::IpAddr;

use berth_cni::Route as CniRoute;
use berth_netlink::{IpFamily, Route, RouteScope};
use ipnetwork::IpNetwork;

/// An IPAM address together with its gateway (host mode requires one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Assigned {
    pub address: IpNetwork,
    pub gateway: IpAddr,
}

/// What goes on one end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndPlan {
    pub addrs: Vec<IpNetwork>,
    /// Prefix routes the kernel adds along with `addrs`, which the layout replaces.
    pub kernel_routes: Vec<Route>,
    pub routes: Vec<Route>,
}

/// `ip/32` or `ip/128`.
pub fn host_prefix(ip: IpAddr) -> IpNetwork {
    let bits = match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    // INVARIANT: 32 and 128 are the full lengths of their families.
    IpNetwork::new(ip, bits).expect("full-length prefix is valid")
}

/// The network an address belongs to, host bits cleared (`198.18.0.5/24` → `198.18.0.0/24`).
pub fn subnet_of(net: IpNetwork) -> IpNetwork {
    // INVARIANT: the prefix comes from a valid network of the same family.
    IpNetwork::new(net.network(), net.prefix()).expect("prefix of a valid network")
}

fn is_full_length(net: IpNetwork) -> bool {
    net.prefix() == host_prefix(net.ip()).prefix()
}

/// Host mode, container end: ptp's layout (see the module documentation).
pub fn host_mode_container(ips: &[Assigned], ipam_routes: &[CniRoute], oif: u32) -> EndPlan {
    let mut plan = EndPlan::default();
    for a in ips {
        plan.addrs.push(a.address);
        let src = Some(a.address.ip());
        plan.routes.push(Route {
            oif: Some(oif),
            scope: RouteScope::Link,
            src,
            ..Route::new(host_prefix(a.gateway))
        });
        // A /32 (/128) address has no subnet to reroute: the kernel adds no prefix route for
        // a /32, and a "route to itself via the gateway" would be meaningless.
        if !is_full_length(a.address) {
            let subnet = subnet_of(a.address);
            plan.kernel_routes.push(Route {
                oif: Some(oif),
                ..Route::new(subnet)
            });
            plan.routes.push(Route {
                gateway: Some(a.gateway),
                oif: Some(oif),
                src,
                ..Route::new(subnet)
            });
        }
    }
    let gateways: Vec<IpAddr> = ips.iter().map(|a| a.gateway).collect();
    plan.routes
        .extend(ipam_routes.iter().map(|r| ipam_route(r, &gateways, oif)));
    dedup(&mut plan.routes);
    plan
}

/// Host mode, host end: the gateways, and a route to each container address.
pub fn host_mode_host(ips: &[Assigned], oif: u32) -> EndPlan {
    let mut plan = EndPlan::default();
    for a in ips {
        let gw = host_prefix(a.gateway);
        if !plan.addrs.contains(&gw) {
            plan.addrs.push(gw);
        }
        plan.routes.push(Route {
            oif: Some(oif),
            // As ptp for IPv4 (`ip.AddHostRoute`). IPv6 routes have no scope; universe is what
            // the kernel reports for them.
            scope: match a.address {
                IpNetwork::V4(_) => RouteScope::Host,
                IpNetwork::V6(_) => RouteScope::Universe,
            },
            ..Route::new(host_prefix(a.address.ip()))
        });
    }
    dedup(&mut plan.routes);
    plan
}

/// Container-to-container mode: the addresses with their real prefix (the kernel's prefix
/// route stays: the peer is on-link), and the IPAM routes.
pub fn peer_mode(
    addrs: &[IpNetwork],
    gateways: &[IpAddr],
    ipam_routes: &[CniRoute],
    oif: u32,
) -> EndPlan {
    let mut routes: Vec<Route> = ipam_routes
        .iter()
        .map(|r| ipam_route(r, gateways, oif))
        .collect();
    dedup(&mut routes);
    EndPlan {
        addrs: addrs.to_vec(),
        kernel_routes: Vec::new(),
        routes,
    }
}

/// An IPAM route on the container end. Without its own `gw` it goes via the first gateway of
/// its family, as the reference's `ConfigureIface` does; without any, it is on-link.
fn ipam_route(r: &CniRoute, gateways: &[IpAddr], oif: u32) -> Route {
    let family = IpFamily::of(r.dst.ip());
    let gateway = r.gw.or_else(|| {
        gateways
            .iter()
            .copied()
            .find(|g| IpFamily::of(*g) == family)
    });
    let scope = match r.scope {
        Some(253) => RouteScope::Link,
        Some(254) => RouteScope::Host,
        Some(_) => RouteScope::Universe,
        None if gateway.is_none() => RouteScope::Link,
        None => RouteScope::Universe,
    };
    Route {
        gateway,
        oif: Some(oif),
        table: r.table,
        metric: r.priority,
        scope,
        mtu: r.mtu,
        advmss: r.advmss,
        ..Route::new(subnet_of(r.dst))
    }
}

/// Keeps the first of routes the kernel would consider the same (destination, table, metric):
/// adding the second would fail with EEXIST.
fn dedup(routes: &mut Vec<Route>) {
    let mut seen: Vec<(IpNetwork, Option<u32>, Option<u32>)> = Vec::new();
    routes.retain(|r| {
        let key = (r.dst, r.table, r.metric);
        if seen.contains(&key) {
            false
        } else {
            seen.push(key);
            true
        }
    });
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn net(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn default_routes() -> Vec<CniRoute> {
        vec![
            CniRoute::new(net("0.0.0.0/0"), None),
            CniRoute::new(net("::/0"), None),
        ]
    }

    fn dual_stack() -> Vec<Assigned> {
        vec![
            Assigned {
                address: net("198.18.250.2/24"),
                gateway: ip("198.18.250.1"),
            },
            Assigned {
                address: net("fd42:b347:0:fa::2/64"),
                gateway: ip("fd42:b347:0:fa::1"),
            },
        ]
    }

    fn shown(routes: &[Route]) -> Vec<String> {
        routes.iter().map(ToString::to_string).collect()
    }

    /// What `ip route` shows after the reference ptp v1.1.1 (checked on this kernel).
    #[test]
    fn container_end_matches_ptp() {
        let plan = host_mode_container(&dual_stack(), &default_routes(), 2);
        assert_eq!(
            plan.addrs,
            [net("198.18.250.2/24"), net("fd42:b347:0:fa::2/64")]
        );
        assert_eq!(
            shown(&plan.kernel_routes),
            ["198.18.250.0/24 dev 2", "fd42:b347:0:fa::/64 dev 2"]
        );
        assert_eq!(
            shown(&plan.routes),
            [
                "198.18.250.1/32 dev 2 src 198.18.250.2 scope link",
                "198.18.250.0/24 via 198.18.250.1 dev 2 src 198.18.250.2",
                "fd42:b347:0:fa::1/128 dev 2 src fd42:b347:0:fa::2 scope link",
                "fd42:b347:0:fa::/64 via fd42:b347:0:fa::1 dev 2 src fd42:b347:0:fa::2",
                "0.0.0.0/0 via 198.18.250.1 dev 2",
                "::/0 via fd42:b347:0:fa::1 dev 2",
            ]
        );
        assert_eq!(plan.routes[0].scope, RouteScope::Link);
        assert_eq!(plan.routes[1].scope, RouteScope::Universe);
    }

    #[test]
    fn host_end_matches_ptp() {
        let plan = host_mode_host(&dual_stack(), 7);
        assert_eq!(
            plan.addrs,
            [net("198.18.250.1/32"), net("fd42:b347:0:fa::1/128")]
        );
        assert_eq!(
            shown(&plan.routes),
            [
                "198.18.250.2/32 dev 7 scope host",
                "fd42:b347:0:fa::2/128 dev 7"
            ]
        );
    }

    #[test]
    fn full_length_address_keeps_only_the_gateway_route() {
        let ips = [Assigned {
            address: net("198.18.0.9/32"),
            gateway: ip("198.18.0.1"),
        }];
        let plan = host_mode_container(&ips, &[], 3);
        assert!(plan.kernel_routes.is_empty());
        assert_eq!(
            shown(&plan.routes),
            ["198.18.0.1/32 dev 3 src 198.18.0.9 scope link"]
        );
    }

    #[test]
    fn ipam_route_fields_and_duplicates() {
        let routes = vec![
            CniRoute {
                table: Some(100),
                priority: Some(5),
                mtu: Some(1300),
                ..CniRoute::new(net("198.19.0.7/16"), Some(ip("198.18.250.254")))
            },
            CniRoute::new(net("0.0.0.0/0"), None),
            CniRoute::new(net("0.0.0.0/0"), Some(ip("198.18.250.9"))),
            CniRoute::new(net("fd00::/8"), None),
        ];
        let plan = peer_mode(&[net("198.18.250.2/24")], &[ip("198.18.250.1")], &routes, 4);
        assert_eq!(
            shown(&plan.routes),
            [
                "198.19.0.0/16 via 198.18.250.254 dev 4 table 100 metric 5 mtu 1300",
                "0.0.0.0/0 via 198.18.250.1 dev 4",
                "fd00::/8 dev 4 scope link",
            ]
        );
        assert_eq!(plan.routes[2].scope, RouteScope::Link);
        assert!(plan.kernel_routes.is_empty());
    }

    #[test]
    fn shared_gateway_is_added_once_on_the_host() {
        let ips = [
            Assigned {
                address: net("198.18.0.5/24"),
                gateway: ip("198.18.0.1"),
            },
            Assigned {
                address: net("198.18.0.6/24"),
                gateway: ip("198.18.0.1"),
            },
        ];
        assert_eq!(host_mode_host(&ips, 1).addrs, [net("198.18.0.1/32")]);
    }
}
