//! CHECK: every resource ADD made is still there as `prevResult` describes it. Rather than
//! stopping at the first difference, every finding is collected and reported together, each
//! naming the missing or wrong thing.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use berth_cni::delegate::delegate_check;
use berth_cni::{CmdArgs, CniError, CniResult, HostLinkName, Interface};
use berth_netlink::{
    AddrError, IpFamily, Link, LinkError, Netlink, Netns, NetnsError, OpenError, OwnedName,
    RouteError, format_mac,
};
use ipnetwork::IpNetwork;

use crate::config::Config;
use berth_firewall::{MasqError, Masquerading};

use crate::owner::owner;
use crate::setup::kernel_route;
use crate::spoof::{Spoof, SpoofError};

/// Errors of the `check` module: failures to look (the first group), or what was found.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("open the container's network namespace {path}")]
    OpenNetns {
        path: PathBuf,
        #[source]
        source: NetnsError,
    },
    #[error("open rtnetlink")]
    OpenNetlink(#[source] OpenError),
    #[error("look up {name}")]
    Lookup {
        name: String,
        #[source]
        source: LinkError,
    },
    #[error("list addresses of {name}")]
    Addrs {
        name: String,
        #[source]
        source: AddrError,
    },
    #[error("list {family} routes in the container")]
    Routes {
        family: IpFamily,
        #[source]
        source: RouteError,
    },
    #[error("CHECK: {}", Findings(.0))]
    Findings(Vec<Finding>),
}

/// One difference between `prevResult` (or the configuration) and the system.
#[derive(Debug)]
pub enum Finding {
    NoContainerInPrevResult {
        ifname: String,
        sandbox: PathBuf,
    },
    BridgeMissing {
        bridge: String,
    },
    NotABridge {
        bridge: String,
        kind: String,
    },
    ContainerIfaceMissing {
        ifname: String,
        netns: String,
    },
    NotAVeth {
        ifname: String,
        kind: String,
    },
    Mac {
        ifname: String,
        found: String,
        expected: String,
    },
    Mtu {
        ifname: String,
        found: u32,
        expected: u32,
    },
    Down {
        ifname: String,
    },
    HostVethMissing {
        veth: String,
    },
    NotPaired {
        veth: String,
        ifname: String,
    },
    NotEnslaved {
        veth: String,
        bridge: String,
    },
    PortOption {
        veth: String,
        option: &'static str,
    },
    AddressMissing {
        address: IpNetwork,
        ifname: String,
    },
    RouteMissing {
        route: String,
    },
    GatewayMissing {
        gateway: IpNetwork,
        bridge: String,
    },
    Masquerade(MasqError),
    SpoofCheck(SpoofError),
    Ipam {
        ipam: String,
        error: CniError,
    },
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoContainerInPrevResult { ifname, sandbox } => write!(
                f,
                "prevResult has no interface {ifname} in sandbox {}",
                sandbox.display()
            ),
            Self::BridgeMissing { bridge } => write!(f, "bridge {bridge} does not exist"),
            Self::NotABridge { bridge, kind } => write!(f, "{bridge} is a {kind}, not a bridge"),
            Self::ContainerIfaceMissing { ifname, netns } => {
                write!(f, "container interface {ifname} is missing from {netns}")
            }
            Self::NotAVeth { ifname, kind } => write!(f, "{ifname} is a {kind}, not a veth"),
            Self::Mac {
                ifname,
                found,
                expected,
            } => write!(f, "{ifname} has MAC {found}, expected {expected}"),
            Self::Mtu {
                ifname,
                found,
                expected,
            } => write!(f, "{ifname} has MTU {found}, expected {expected}"),
            Self::Down { ifname } => write!(f, "container interface {ifname} is down"),
            Self::HostVethMissing { veth } => write!(f, "host veth {veth} does not exist"),
            Self::NotPaired { veth, ifname } => {
                write!(f, "host veth {veth} is not the peer of {ifname}")
            }
            Self::NotEnslaved { veth, bridge } => {
                write!(f, "host veth {veth} is not attached to bridge {bridge}")
            }
            Self::PortOption { veth, option } => {
                write!(f, "bridge port {veth} does not have {option} on")
            }
            Self::AddressMissing { address, ifname } => {
                write!(f, "address {address} is missing from {ifname}")
            }
            Self::RouteMissing { route } => write!(f, "route {route} is missing"),
            Self::GatewayMissing { gateway, bridge } => {
                write!(f, "gateway address {gateway} is missing from {bridge}")
            }
            Self::Masquerade(e) => write!(f, "{}", berth_netlink::error_chain(e)),
            Self::SpoofCheck(e) => write!(f, "{}", berth_netlink::error_chain(e)),
            Self::Ipam { ipam, error } => write!(f, "IPAM plugin {ipam}: {error}"),
        }
    }
}

struct Findings<'a>(&'a [Finding]);

impl fmt::Display for Findings<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, finding) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{finding}")?;
        }
        Ok(())
    }
}

fn lookup(nl: &Netlink, name: &str) -> Result<Option<Link>, CheckError> {
    nl.link_by_name(name).map_err(|source| CheckError::Lookup {
        name: name.to_owned(),
        source,
    })
}

/// CHECK of one attachment against `prev`.
pub fn check(
    cfg: &Config,
    args: &CmdArgs,
    netns_path: &Path,
    prev: &CniResult,
) -> Result<(), CheckError> {
    let mut findings = Vec::new();
    if let Some(ipam) = &cfg.ipam {
        if let Err(error) = delegate_check(ipam, args) {
            findings.push(Finding::Ipam {
                ipam: ipam.clone(),
                error,
            });
        }
    }

    let ifname = args.ifname.as_str();
    let sandbox = netns_path.display().to_string();
    let Some(ctr_index) = prev
        .interfaces
        .iter()
        .position(|i| i.name == ifname && i.sandbox.as_deref() == Some(sandbox.as_str()))
    else {
        findings.push(Finding::NoContainerInPrevResult {
            ifname: ifname.to_owned(),
            sandbox: netns_path.to_path_buf(),
        });
        return Err(CheckError::Findings(findings));
    };
    let expected = &prev.interfaces[ctr_index];

    let ctr_ns = Netns::open(netns_path).map_err(|source| CheckError::OpenNetns {
        path: netns_path.to_path_buf(),
        source,
    })?;
    let host = Netlink::open_current().map_err(CheckError::OpenNetlink)?;
    let ctr = Netlink::open_in(&ctr_ns).map_err(CheckError::OpenNetlink)?;

    let bridge_name = cfg.bridge.as_str();
    let bridge = match lookup(&host, bridge_name)? {
        None => {
            findings.push(Finding::BridgeMissing {
                bridge: bridge_name.to_owned(),
            });
            None
        }
        Some(b) if b.kind.as_deref() != Some("bridge") => {
            findings.push(Finding::NotABridge {
                bridge: bridge_name.to_owned(),
                kind: b.kind.unwrap_or_default(),
            });
            None
        }
        Some(b) => Some(b),
    };

    let Some(ctr_link) = lookup(&ctr, ifname)? else {
        findings.push(Finding::ContainerIfaceMissing {
            ifname: ifname.to_owned(),
            netns: sandbox,
        });
        return Err(CheckError::Findings(findings));
    };
    check_container_link(cfg, &ctr_link, expected, &mut findings);

    let names = HostLinkName::of(cfg.network.as_str(), args.container_id.as_str(), ifname);
    let owned = OwnedName {
        candidates: &names.candidates,
        alias: &names.alias,
    };
    let found = host
        .owned_link(owned)
        .map_err(|source| CheckError::Lookup {
            name: names.preferred().to_owned(),
            source,
        })?;
    // The port's name for the spoofing guard: the link's when found, else the usual one.
    let veth = match found {
        None => {
            findings.push(Finding::HostVethMissing {
                veth: names.preferred().to_owned(),
            });
            names.preferred().to_owned()
        }
        Some(host_link) => {
            if ctr_link.link_index != Some(host_link.index) {
                findings.push(Finding::NotPaired {
                    veth: host_link.name.clone(),
                    ifname: ifname.to_owned(),
                });
            }
            check_port(cfg, bridge.as_ref(), &host_link, &mut findings);
            host_link.name
        }
    };

    check_addresses(&ctr, &ctr_link, prev, ctr_index, &mut findings)?;
    check_routes(&ctr, &ctr_link, prev, &mut findings)?;
    if cfg.is_gateway {
        check_gateways(cfg, &host, bridge.as_ref(), prev, ctr_index, &mut findings)?;
    }
    if let (Some(backend), Some(_)) = (cfg.masquerade, &cfg.ipam) {
        let sources: Vec<IpNetwork> = prev.ips.iter().map(|ip| ip.address).collect();
        let owner = owner(cfg.network.as_str(), args);
        if let Err(e) = Masquerading::open(backend).and_then(|m| m.check(&owner, &sources)) {
            findings.push(Finding::Masquerade(e));
        }
    }
    if cfg.mac_spoof_check {
        let owner = owner(cfg.network.as_str(), args);
        let guarded = Spoof::guard(&owner, &veth, ctr_link.mac.as_ref())
            .and_then(|g| Spoof::open().and_then(|s| s.check(&g)));
        if let Err(e) = guarded {
            findings.push(Finding::SpoofCheck(e));
        }
    }

    if findings.is_empty() {
        Ok(())
    } else {
        Err(CheckError::Findings(findings))
    }
}

fn check_container_link(cfg: &Config, link: &Link, expected: &Interface, out: &mut Vec<Finding>) {
    let ifname = link.name.clone();
    if link.kind.as_deref() != Some("veth") {
        out.push(Finding::NotAVeth {
            ifname: ifname.clone(),
            kind: link.kind.clone().unwrap_or_default(),
        });
    }
    let found_mac = link.mac.as_ref().map(format_mac).unwrap_or_default();
    if let Some(mac) = &expected.mac {
        if !mac.eq_ignore_ascii_case(&found_mac) {
            out.push(Finding::Mac {
                ifname: ifname.clone(),
                found: found_mac,
                expected: mac.clone(),
            });
        }
    }
    // The result's MTU (1.1.0) or, for older versions, the configured one.
    if let Some(mtu) = expected.mtu.or(cfg.mtu) {
        if link.mtu != mtu {
            out.push(Finding::Mtu {
                ifname: ifname.clone(),
                found: link.mtu,
                expected: mtu,
            });
        }
    }
    if !link.up && !cfg.disable_container_interface {
        out.push(Finding::Down { ifname });
    }
}

fn check_port(cfg: &Config, bridge: Option<&Link>, port: &Link, out: &mut Vec<Finding>) {
    if let Some(bridge) = bridge {
        if port.master != Some(bridge.index) {
            out.push(Finding::NotEnslaved {
                veth: port.name.clone(),
                bridge: bridge.name.clone(),
            });
            return;
        }
    }
    let info = port.bridge_port.unwrap_or_default();
    if cfg.hairpin && !info.hairpin {
        out.push(Finding::PortOption {
            veth: port.name.clone(),
            option: "hairpinMode",
        });
    }
    if cfg.port_isolation && !info.isolated {
        out.push(Finding::PortOption {
            veth: port.name.clone(),
            option: "portIsolation",
        });
    }
}

/// The container's addresses: those of `prev` bound to the container interface (or to no
/// interface in particular).
fn check_addresses(
    ctr: &Netlink,
    link: &Link,
    prev: &CniResult,
    ctr_index: usize,
    out: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    let addrs = ctr
        .addrs(Some(link.index))
        .map_err(|source| CheckError::Addrs {
            name: link.name.clone(),
            source,
        })?;
    for ip in prev
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none_or(|i| i == ctr_index))
    {
        if !addrs.iter().any(|a| a.net == ip.address) {
            out.push(Finding::AddressMissing {
                address: ip.address,
                ifname: link.name.clone(),
            });
        }
    }
    Ok(())
}

/// Each route of `prev` exists in the container: same destination and table, through the
/// container interface, via the gateway ADD used.
fn check_routes(
    ctr: &Netlink,
    link: &Link,
    prev: &CniResult,
    out: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    let default_gw = |family: IpFamily| -> Option<IpAddr> {
        prev.ips
            .iter()
            .filter(|ip| IpFamily::of(ip.address.ip()) == family)
            .find_map(|ip| ip.gateway)
    };
    let mut tables: Vec<(IpFamily, Option<u32>, Vec<berth_netlink::Route>)> = Vec::new();
    for route in &prev.routes {
        let family = IpFamily::of(route.dst.ip());
        let want = kernel_route(route, link.index, default_gw(family));
        let slot = match tables
            .iter()
            .position(|(f, t, _)| *f == family && *t == route.table)
        {
            Some(slot) => slot,
            None => {
                let routes = ctr
                    .routes(family, route.table)
                    .map_err(|source| CheckError::Routes { family, source })?;
                tables.push((family, route.table, routes));
                tables.len() - 1
            }
        };
        let present = &tables[slot].2;
        let found = present.iter().any(|r| {
            r.dst == want.dst
                && r.oif == want.oif
                && (want.gateway.is_none() || r.gateway == want.gateway)
        });
        if !found {
            out.push(Finding::RouteMissing {
                route: format!("{} in the container", describe_route(&want, &link.name)),
            });
        }
    }
    Ok(())
}

fn describe_route(r: &berth_netlink::Route, ifname: &str) -> String {
    let mut s = r.dst.to_string();
    if let Some(gw) = r.gateway {
        s.push_str(&format!(" via {gw}"));
    }
    s.push_str(&format!(" dev {ifname}"));
    s
}

/// With `isGateway`, the bridge (or the VLAN gateway interface) holds each gateway address.
fn check_gateways(
    cfg: &Config,
    host: &Netlink,
    bridge: Option<&Link>,
    prev: &CniResult,
    ctr_index: usize,
    out: &mut Vec<Finding>,
) -> Result<(), CheckError> {
    let device = match cfg.vlan.access {
        Some(vid) => lookup(host, &format!("{}.{vid}", cfg.bridge))?,
        None => bridge.cloned(),
    };
    let Some(device) = device else {
        // Already reported as a missing bridge (or the VLAN interface is missing below).
        if cfg.vlan.access.is_none() {
            return Ok(());
        }
        out.push(Finding::BridgeMissing {
            bridge: format!("{}.{}", cfg.bridge, cfg.vlan.access.unwrap_or_default()),
        });
        return Ok(());
    };
    let addrs = host
        .addrs(Some(device.index))
        .map_err(|source| CheckError::Addrs {
            name: device.name.clone(),
            source,
        })?;
    for ip in prev
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none_or(|i| i == ctr_index))
    {
        let Some(gw) = ip.gateway else { continue };
        let Ok(net) = IpNetwork::new(gw, ip.address.prefix()) else {
            continue;
        };
        if !addrs.iter().any(|a| a.net == net) {
            out.push(Finding::GatewayMissing {
                gateway: net,
                bridge: device.name.clone(),
            });
        }
    }
    Ok(())
}
