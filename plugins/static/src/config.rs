//! The `ipam` section of `static` and the addresses requested by the runtime, from wire JSON
//! to validated types.
//!
//! Sources of addresses, as in the reference v1.1.1:
//! 1. `ipam.addresses`, then `CNI_ARGS IP=` appended (`GATEWAY=` applies to those);
//! 2. `args.cni.ips`, when not empty, *replaces* all of (1), without gateways;
//! 3. `runtimeConfig.ips`, when not empty, *replaces* all of the above, without gateways.
//!
//! Unlike the reference, every source is validated even when a later one replaces it: a
//! malformed configuration fails the same way whatever the runtime sends.

use std::net::IpAddr;

use berth_cni::{CmdArgs, Dns, NetConf, Route};
use ipnetwork::IpNetwork;
use serde::Deserialize;

/// Errors of the `config` module. Each names the key and the value that failed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("IPAM config missing 'ipam' key")]
    NoIpam,
    #[error("decode the ipam section")]
    Decode(#[source] serde_json::Error),
    #[error(
        "ipam.addresses[{index}]: address {value:?} is not in CIDR notation (e.g. 198.18.0.5/24)"
    )]
    Address { index: usize, value: String },
    #[error("ipam.addresses[{index}]: gateway {value:?} is not an IP address")]
    Gateway { index: usize, value: String },
    #[error("ipam.routes[{index}]: dst {value:?} is not in CIDR notation")]
    RouteDst { index: usize, value: String },
    #[error("ipam.routes[{index}]: gw {value:?} is not an IP address")]
    RouteGw { index: usize, value: String },
    #[error("CNI_ARGS IP: {value:?} is not in CIDR notation (e.g. IP=198.18.0.5/24)")]
    ArgsIp { value: String },
    #[error("CNI_ARGS GATEWAY: {value:?} is not an IP address")]
    ArgsGateway { value: String },
    #[error("{source_key}: entry {value:?} is not in CIDR notation (e.g. 198.18.0.5/24)")]
    RequestedIp {
        source_key: &'static str,
        value: String,
    },
}

/// An address to hand out: the IP with its prefix length (host bits kept), and its gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub net: IpNetwork,
    pub gateway: Option<IpAddr>,
}

/// What ADD returns and CHECK expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub addresses: Vec<Address>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

// Wire types, read with Go's rules (`berth_cni::gojson`): any key casing, `null` = default.

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IpamWire {
    #[serde(default)]
    addresses: Vec<AddressWire>,
    #[serde(default)]
    routes: Vec<RouteWire>,
    #[serde(default)]
    dns: DnsWire,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddressWire {
    #[serde(default)]
    address: String,
    #[serde(default)]
    gateway: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RouteWire {
    #[serde(default)]
    dst: String,
    #[serde(default)]
    gw: Option<String>,
    // CNI 1.1 route attributes: passed through (written in 1.1.0 results only).
    #[serde(default)]
    mtu: Option<u32>,
    #[serde(default)]
    advmss: Option<u32>,
    #[serde(default)]
    priority: Option<u32>,
    #[serde(default)]
    table: Option<u32>,
    #[serde(default)]
    scope: Option<u8>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DnsWire {
    #[serde(default)]
    nameservers: Vec<String>,
    #[serde(default)]
    domain: String,
    #[serde(default)]
    search: Vec<String>,
    #[serde(default)]
    options: Vec<String>,
}

/// An IPv4-mapped IPv6 address (`::ffff:198.18.0.1`) written as IPv4, as Go prints it.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// `addr/prefix`, strictly: a prefix is required (unlike `IpNetwork::from_str`) and host bits
/// are kept. An IPv4-mapped address becomes IPv4 with the prefix shortened by 96, as Go does.
pub fn parse_cidr(s: &str) -> Option<IpNetwork> {
    let (addr, prefix) = s.split_once('/')?;
    let ip: IpAddr = addr.parse().ok()?;
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let prefix: u8 = prefix.parse().ok()?;
    let net = IpNetwork::new(ip, prefix).ok()?;
    Some(match (ip, canonical_ip(ip)) {
        (IpAddr::V6(_), IpAddr::V4(v4)) => {
            IpNetwork::new(IpAddr::V4(v4), prefix.saturating_sub(96)).ok()?
        }
        _ => net,
    })
}

/// An optional IP: absent or `""` is none (Go's `net.IP` reads `""` as nil).
fn parse_opt_ip(s: Option<&str>) -> Result<Option<IpAddr>, String> {
    match s {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse::<IpAddr>()
            .map(|ip| Some(canonical_ip(ip)))
            .map_err(|_| s.to_owned()),
    }
}

/// Validates the `ipam` section.
fn ipam_section<P>(conf: &NetConf<P>) -> Result<Plan, ConfigError> {
    let ipam = conf.ipam.as_ref().ok_or(ConfigError::NoIpam)?;
    // Keys as Go matches them, at every depth (`"Addresses"`, `"GW"`).
    let wire: IpamWire = ipam.typed().map_err(ConfigError::Decode)?;

    let mut addresses = Vec::new();
    for (index, a) in wire.addresses.into_iter().enumerate() {
        let net = parse_cidr(&a.address).ok_or_else(|| ConfigError::Address {
            index,
            value: a.address.clone(),
        })?;
        let gateway = parse_opt_ip(a.gateway.as_deref())
            .map_err(|value| ConfigError::Gateway { index, value })?;
        addresses.push(Address { net, gateway });
    }

    let mut routes = Vec::new();
    for (index, r) in wire.routes.into_iter().enumerate() {
        let dst = parse_cidr(&r.dst).ok_or_else(|| ConfigError::RouteDst {
            index,
            value: r.dst.clone(),
        })?;
        let gw =
            parse_opt_ip(r.gw.as_deref()).map_err(|value| ConfigError::RouteGw { index, value })?;
        routes.push(Route {
            mtu: r.mtu,
            advmss: r.advmss,
            priority: r.priority,
            table: r.table,
            scope: r.scope,
            ..Route::new(dst, gw)
        });
    }

    let dns = Dns {
        nameservers: wire.dns.nameservers,
        domain: Some(wire.dns.domain).filter(|d| !d.is_empty()),
        search: wire.dns.search,
        options: wire.dns.options,
    };
    Ok(Plan {
        addresses,
        routes,
        dns,
    })
}

/// `CNI_ARGS IP=a/24,b/64;GATEWAY=g1,g2`: the addresses, each with the last listed gateway
/// that lies in its subnet.
fn cni_args_addresses(args: &CmdArgs) -> Result<Vec<Address>, ConfigError> {
    let mut out = Vec::new();
    let ips = args.args.get("IP").unwrap_or_default();
    if !ips.is_empty() {
        for item in ips.split(',').map(str::trim) {
            let net = parse_cidr(item).ok_or_else(|| ConfigError::ArgsIp {
                value: item.to_owned(),
            })?;
            out.push(Address { net, gateway: None });
        }
    }
    let gateways = args.args.get("GATEWAY").unwrap_or_default();
    if !gateways.is_empty() {
        for item in gateways.split(',') {
            let gw = item
                .trim()
                .parse::<IpAddr>()
                .map(canonical_ip)
                .map_err(|_| ConfigError::ArgsGateway {
                    value: item.to_owned(),
                })?;
            for addr in out.iter_mut().filter(|a| a.net.contains(gw)) {
                addr.gateway = Some(gw);
            }
        }
    }
    Ok(out)
}

/// `args.cni.ips` or `runtimeConfig.ips`: CIDRs without gateways.
fn requested(
    list: Option<Vec<String>>,
    source_key: &'static str,
) -> Result<Vec<Address>, ConfigError> {
    list.unwrap_or_default()
        .iter()
        .map(|s| {
            parse_cidr(s)
                .map(|net| Address { net, gateway: None })
                .ok_or_else(|| ConfigError::RequestedIp {
                    source_key,
                    value: s.clone(),
                })
        })
        .collect()
}

/// The runtime's lists, already decoded by berth-cni (a list of the wrong JSON type is its
/// decode error, code 6).
pub struct Requested {
    pub args_cni_ips: Option<Vec<String>>,
    pub runtime_ips: Option<Vec<String>>,
}

/// Everything ADD returns: the `ipam` section merged with the runtime's requests.
pub fn plan<P>(conf: &NetConf<P>, args: &CmdArgs, req: Requested) -> Result<Plan, ConfigError> {
    let mut plan = ipam_section(conf)?;
    plan.addresses.extend(cni_args_addresses(args)?);
    let from_args = requested(req.args_cni_ips, "args.cni.ips")?;
    let from_runtime = requested(req.runtime_ips, "runtimeConfig.ips")?;
    if !from_args.is_empty() {
        plan.addresses = from_args;
    }
    if !from_runtime.is_empty() {
        plan.addresses = from_runtime;
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use berth_cni::args::CniArgs;
    use berth_cni::{Command, ContainerId, IfName};
    use serde_json::{Map, Value, json};

    fn conf(raw: Value) -> NetConf<Map<String, Value>> {
        serde_json::from_value(raw).unwrap()
    }

    fn args(cni_args: &str) -> CmdArgs {
        let mut a = CmdArgs::new(
            Command::Add,
            ContainerId::try_from("c1").unwrap(),
            Some("/run/netns/x".into()),
            IfName::try_from("eth0").unwrap(),
            vec![],
        );
        a.args = CniArgs::parse(cni_args).unwrap();
        a
    }

    fn none() -> Requested {
        Requested {
            args_cni_ips: None,
            runtime_ips: None,
        }
    }

    fn nets(plan: &Plan) -> Vec<String> {
        plan.addresses
            .iter()
            .map(|a| match a.gateway {
                Some(g) => format!("{} via {g}", a.net),
                None => a.net.to_string(),
            })
            .collect()
    }

    fn base() -> NetConf<Map<String, Value>> {
        conf(
            json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "static",
            "addresses": [{"address": "198.18.3.1/24", "gateway": "198.18.3.254"}]}}),
        )
    }

    #[test]
    fn cidr_parsing_is_strict_and_keeps_host_bits() {
        assert_eq!(
            parse_cidr("198.18.3.1/24").unwrap().to_string(),
            "198.18.3.1/24"
        );
        assert_eq!(
            parse_cidr("::ffff:198.18.3.2/120").unwrap().to_string(),
            "198.18.3.2/24"
        );
        for bad in [
            "198.18.3.1",
            "198.18.3.1/",
            "198.18.3.1/33",
            "198.18.3.1/+4",
            "198.18.300.1/24",
            " 198.18.3.1/24",
            "fe80::1%eth0/64",
            "",
        ] {
            assert!(parse_cidr(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn cni_args_append_and_gateway_applies_to_them_only() {
        let p = plan(
            &base(),
            &args("IP=198.18.4.1/24, 198.18.5.7/16;GATEWAY=198.18.4.254,198.18.3.1"),
            none(),
        )
        .unwrap();
        assert_eq!(
            nets(&p),
            [
                "198.18.3.1/24 via 198.18.3.254",
                "198.18.4.1/24 via 198.18.4.254",
                // Both gateways lie in 198.18.0.0/16: the last one wins, as in Go.
                "198.18.5.7/16 via 198.18.3.1",
            ]
        );
    }

    #[test]
    fn args_then_runtime_replace_everything() {
        let with = |a: Option<&[&str]>, r: Option<&[&str]>| {
            let list = |l: Option<&[&str]>| l.map(|l| l.iter().map(|s| s.to_string()).collect());
            nets(
                &plan(
                    &base(),
                    &args("IP=198.18.4.1/24"),
                    Requested {
                        args_cni_ips: list(a),
                        runtime_ips: list(r),
                    },
                )
                .unwrap(),
            )
        };
        assert_eq!(with(Some(&["198.18.6.5/24"]), None), ["198.18.6.5/24"]);
        assert_eq!(
            with(Some(&["198.18.6.5/24"]), Some(&["198.18.7.5/24"])),
            ["198.18.7.5/24"]
        );
        // Empty lists replace nothing.
        assert_eq!(with(Some(&[]), Some(&[])).len(), 2);
    }

    #[test]
    fn every_source_is_validated() {
        let bad_conf = conf(json!({"cniVersion": "1.0.0", "name": "n",
            "ipam": {"addresses": [{"address": "198.18.3.1"}]}}));
        let e = plan(
            &bad_conf,
            &args(""),
            Requested {
                args_cni_ips: None,
                runtime_ips: Some(vec!["198.18.7.5/24".into()]),
            },
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::Address { index: 0, .. }), "{e}");
        assert!(matches!(
            plan(&base(), &args("IP=198.18.4.1"), none()).unwrap_err(),
            ConfigError::ArgsIp { .. }
        ));
        assert!(matches!(
            plan(&base(), &args("GATEWAY=zz"), none()).unwrap_err(),
            ConfigError::ArgsGateway { .. }
        ));
        assert!(matches!(
            plan(
                &base(),
                &args(""),
                Requested {
                    args_cni_ips: Some(vec!["198.18.6.5".into()]),
                    runtime_ips: None
                }
            )
            .unwrap_err(),
            ConfigError::RequestedIp {
                source_key: "args.cni.ips",
                ..
            }
        ));
    }

    #[test]
    fn keys_match_case_insensitively_like_go() {
        let c = conf(
            json!({"cniVersion": "1.0.0", "name": "n", "ipam": {"type": "static",
            "Addresses": [{"ADDRESS": "198.18.3.1/24", "Gateway": "198.18.3.254"}],
            "Routes": [{"Dst": "0.0.0.0/0", "GW": "198.18.3.2"}],
            "DNS": {"Nameservers": ["198.18.3.53"], "Search": ["x"]}}}),
        );
        let p = plan(&c, &args(""), none()).unwrap();
        assert_eq!(nets(&p), ["198.18.3.1/24 via 198.18.3.254"]);
        assert_eq!(p.routes[0].gw.unwrap().to_string(), "198.18.3.2");
        assert_eq!(p.dns.nameservers, ["198.18.3.53"]);
        assert_eq!(p.dns.search, ["x"]);
    }

    #[test]
    fn null_lists_and_empty_gateway_are_none() {
        let c = conf(json!({"cniVersion": "1.0.0", "name": "n", "ipam": {
            "addresses": [{"address": "198.18.3.1/24", "gateway": ""}],
            "routes": null, "dns": {"nameservers": null}}}));
        let p = plan(&c, &args(""), none()).unwrap();
        assert_eq!(nets(&p), ["198.18.3.1/24"]);
        assert!(p.routes.is_empty() && p.dns.is_empty());
    }
}
