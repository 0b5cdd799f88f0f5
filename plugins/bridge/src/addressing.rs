//! From the IPAM plugin's answer to what the container and the bridge get: the container's
//! addresses (bound to interface 2 of the result), its routes (plus a default route per family
//! with `isDefaultGateway`), and the gateway addresses for the bridge (`isGateway`).
//!
//! Pure: the kernel side lives in `setup.rs`. Mirrors the reference's `calcGateways`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use berth_cni::{CniResult, Dns, IpConfig, Route};
use berth_netlink::IpFamily;
use ipnetwork::IpNetwork;

use crate::config::Config;

/// Index of the container interface in the result: `[bridge, host veth, container]`.
pub const CONTAINER_INTERFACE: usize = 2;

/// Errors of the `addressing` module.
#[derive(Debug, thiserror::Error)]
pub enum AddressingError {
    #[error("IPAM plugin {ipam} returned no IP configuration")]
    NoAddresses { ipam: String },
    #[error("cannot derive a gateway for {address}: its subnet has no next address")]
    NoGateway { address: IpNetwork },
    #[error("gateway {gateway} of {address} is not of the address's family")]
    GatewayFamily { address: IpNetwork, gateway: IpAddr },
}

/// What ADD configures from the IPAM result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addressing {
    /// The container's addresses, `interface` = 2, `gateway` filled in when `isGateway`.
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
    /// Gateway addresses (with the subnet's prefix) for the bridge; empty unless `isGateway`.
    pub gateways: Vec<IpNetwork>,
}

impl Addressing {
    pub fn plan(
        ipam: CniResult,
        ipam_kind: &str,
        cfg: &Config,
    ) -> Result<Addressing, AddressingError> {
        if ipam.ips.is_empty() {
            return Err(AddressingError::NoAddresses {
                ipam: ipam_kind.to_owned(),
            });
        }
        let mut routes = ipam.routes;
        let mut ips = Vec::with_capacity(ipam.ips.len());
        let mut gateways: Vec<IpNetwork> = Vec::new();
        for ip in ipam.ips {
            let mut gateway = ip.gateway;
            if gateway.is_none() && cfg.is_gateway {
                gateway = Some(first_host(ip.address)?);
            }
            if let (true, Some(gw)) = (cfg.is_default_gateway, gateway) {
                let family = IpFamily::of(ip.address.ip());
                // One default route per family: the IPAM's own (with a gateway) wins.
                let any = family.any();
                if !routes.iter().any(|r| r.dst == any && r.gw.is_some()) {
                    routes.push(Route::new(any, Some(gw)));
                }
            }
            if let (true, Some(gw)) = (cfg.is_gateway, gateway) {
                let net = IpNetwork::new(gw, ip.address.prefix()).map_err(|_| {
                    AddressingError::GatewayFamily {
                        address: ip.address,
                        gateway: gw,
                    }
                })?;
                if !gateways.contains(&net) {
                    gateways.push(net);
                }
            }
            ips.push(IpConfig {
                address: ip.address,
                gateway,
                interface: Some(CONTAINER_INTERFACE),
            });
        }
        // IPv4 first, as the reference configures them.
        gateways.sort_by_key(IpNetwork::is_ipv6);
        dedup_in_order(&mut routes);
        Ok(Addressing {
            ips,
            routes,
            dns: cfg.dns.clone().unwrap_or(ipam.dns),
            gateways,
        })
    }

    /// The gateway a route without one goes through: the first address's gateway of the
    /// route's family (the reference's `ConfigureIface`).
    pub fn default_gateway(&self, family: IpFamily) -> Option<IpAddr> {
        self.ips
            .iter()
            .filter(|ip| IpFamily::of(ip.address.ip()) == family)
            .find_map(|ip| ip.gateway)
    }
}

fn dedup_in_order(routes: &mut Vec<Route>) {
    let mut seen: Vec<Route> = Vec::with_capacity(routes.len());
    routes.retain(|r| {
        if seen.contains(r) {
            false
        } else {
            seen.push(r.clone());
            true
        }
    });
}

/// The subnet's first host address (`calcGatewayIP`: network address + 1).
fn first_host(address: IpNetwork) -> Result<IpAddr, AddressingError> {
    let none = || AddressingError::NoGateway { address };
    match address.network() {
        IpAddr::V4(net) => u32::from(net)
            .checked_add(1)
            .map(|n| IpAddr::V4(Ipv4Addr::from(n)))
            .ok_or_else(none),
        IpAddr::V6(net) => u128::from(net)
            .checked_add(1)
            .map(|n| IpAddr::V6(Ipv6Addr::from(n)))
            .ok_or_else(none),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_cni::{CniArgs, NetConf};
    use serde_json::json;

    fn cfg(extra: serde_json::Value) -> Config {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "bridge",
            "ipam": {"type": "host-local"}});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let conf: NetConf<crate::config::BridgeConf> =
            berth_cni::plugin::parse_conf(conf.to_string().as_bytes()).unwrap();
        Config::validate(&conf, &CniArgs::default()).unwrap()
    }

    fn ipam(ips: &[(&str, Option<&str>)], routes: &[(&str, Option<&str>)]) -> CniResult {
        CniResult {
            ips: ips
                .iter()
                .map(|(a, g)| IpConfig {
                    address: a.parse().unwrap(),
                    gateway: g.map(|g| g.parse().unwrap()),
                    interface: None,
                })
                .collect(),
            routes: routes
                .iter()
                .map(|(d, g)| Route::new(d.parse().unwrap(), g.map(|g| g.parse().unwrap())))
                .collect(),
            ..CniResult::default()
        }
    }

    #[test]
    fn no_addresses_is_an_error() {
        let e = Addressing::plan(CniResult::default(), "host-local", &cfg(json!({})));
        assert!(matches!(e, Err(AddressingError::NoAddresses { .. })));
    }

    #[test]
    fn plain_attachment_keeps_ipam_gateway_and_binds_to_interface_2() {
        let a = Addressing::plan(
            ipam(&[("198.18.0.2/24", Some("198.18.0.1"))], &[]),
            "host-local",
            &cfg(json!({})),
        )
        .unwrap();
        assert_eq!(a.ips[0].interface, Some(2));
        assert_eq!(a.ips[0].gateway, Some("198.18.0.1".parse().unwrap()));
        assert!(a.gateways.is_empty() && a.routes.is_empty());
    }

    #[test]
    fn default_gateway_dual_stack() {
        let a = Addressing::plan(
            ipam(&[("fd42::5/64", None), ("198.18.0.2/24", None)], &[]),
            "host-local",
            &cfg(json!({"isDefaultGateway": true})),
        )
        .unwrap();
        assert_eq!(
            a.gateways,
            vec![
                "198.18.0.1/24".parse::<IpNetwork>().unwrap(),
                "fd42::1/64".parse().unwrap()
            ]
        );
        let dsts: Vec<String> = a.routes.iter().map(|r| r.dst.to_string()).collect();
        assert_eq!(dsts, ["::/0", "0.0.0.0/0"]);
        assert_eq!(a.routes[1].gw, Some("198.18.0.1".parse().unwrap()));
        assert_eq!(
            a.default_gateway(IpFamily::V6),
            Some("fd42::1".parse().unwrap())
        );
    }

    #[test]
    fn ipam_default_route_with_gateway_wins_and_duplicates_go() {
        let a = Addressing::plan(
            ipam(
                &[("198.18.0.2/24", Some("198.18.0.1"))],
                &[
                    ("0.0.0.0/0", Some("198.18.0.254")),
                    ("0.0.0.0/0", Some("198.18.0.254")),
                ],
            ),
            "host-local",
            &cfg(json!({"isDefaultGateway": true})),
        )
        .unwrap();
        assert_eq!(a.routes.len(), 1);
        assert_eq!(a.routes[0].gw, Some("198.18.0.254".parse().unwrap()));
    }

    #[test]
    fn conf_dns_wins() {
        let mut r = ipam(&[("198.18.0.2/24", None)], &[]);
        r.dns.nameservers = vec!["9.9.9.9".into()];
        let a = Addressing::plan(r.clone(), "x", &cfg(json!({}))).unwrap();
        assert_eq!(a.dns.nameservers, ["9.9.9.9"]);
        let a =
            Addressing::plan(r, "x", &cfg(json!({"dns": {"nameservers": ["1.1.1.1"]}}))).unwrap();
        assert_eq!(a.dns.nameservers, ["1.1.1.1"]);
    }
}
