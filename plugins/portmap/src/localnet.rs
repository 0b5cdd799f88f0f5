//! `route_localnet`: lets connections from 127.0.0.1 to a published port leave the host
//! towards the container (after DNAT their source is still 127.0.0.1, a martian anywhere
//! but on `lo`; the masquerade rule then gives them the host's address).
//!
//! Only where needed, unlike a host-wide switch: on the one interface the host routes the
//! container's IPv4 address through (the reference's `getRoutableHostIF`), and only when
//! SNAT is on and a mapping can be reached on 127.0.0.1 at all. IPv6 has no such knob:
//! `::1` cannot leave the host, so localhost access is IPv4 only, as in the reference.
//!
//! Writes the sysctl of the calling thread's namespace (the host's).

use std::net::IpAddr;

use berth_firewall::PortMap;
use berth_netlink::{IpFamily, LinkError, Netlink, OpenError, RouteError, SysctlError, sysctl};

/// Errors of the `localnet` module.
#[derive(Debug, thiserror::Error)]
pub enum LocalnetError {
    #[error("open netlink in the host namespace")]
    Open(#[source] OpenError),
    #[error("list IPv4 routes to find the interface towards {ip}")]
    Routes {
        ip: IpAddr,
        #[source]
        source: RouteError,
    },
    #[error("look up interface {index} (towards {ip})")]
    Link {
        index: u32,
        ip: IpAddr,
        #[source]
        source: LinkError,
    },
    #[error("enable route_localnet on {ifname}")]
    Sysctl {
        ifname: String,
        #[source]
        source: SysctlError,
    },
}

/// Whether localhost can reach one of `pm`'s IPv4 mappings (a mapping on any address, or
/// on a loopback address), and SNAT is on to make it work.
pub fn needed(pm: &PortMap) -> Option<IpAddr> {
    let v4 = pm.container_ips.iter().find(|ip| ip.is_ipv4())?.ip();
    let reachable = pm.mappings.iter().any(|m| match m.host_ip {
        None => true,
        Some(ip) => ip.is_ipv4() && (ip.is_unspecified() || ip.is_loopback()),
    });
    (pm.snat && reachable).then_some(v4)
}

/// Sets `net.ipv4.conf.<if>.route_localnet = 1` on the interface routing to `ip`; returns
/// it (None when no route leads there through an interface).
pub fn enable_towards(ip: IpAddr) -> Result<Option<String>, LocalnetError> {
    let nl = Netlink::open_current().map_err(LocalnetError::Open)?;
    let routes = nl
        .routes(IpFamily::V4, None)
        .map_err(|source| LocalnetError::Routes { ip, source })?;
    // Longest prefix match over the main table, as the kernel would choose.
    let Some(oif) = routes
        .iter()
        .filter(|r| r.dst.contains(ip))
        .filter_map(|r| r.oif.map(|oif| (r.dst.prefix(), oif)))
        .max_by_key(|(prefix, _)| *prefix)
        .map(|(_, oif)| oif)
    else {
        return Ok(None);
    };
    let link = nl
        .link_by_index(oif)
        .map_err(|source| LocalnetError::Link {
            index: oif,
            ip,
            source,
        })?;
    let Some(link) = link else { return Ok(None) };
    let key = format!("net/ipv4/conf/{}/route_localnet", link.name);
    // Read first: the common case (already on for this bridge) writes nothing.
    if sysctl::read(&key).is_ok_and(|v| v == "1") {
        return Ok(Some(link.name));
    }
    sysctl::write(&key, "1").map_err(|source| LocalnetError::Sysctl {
        ifname: link.name.clone(),
        source,
    })?;
    Ok(Some(link.name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_firewall::{MarkSpec, Owner, PortMapping};

    fn pm(host_ip: Option<&str>, snat: bool) -> PortMap {
        PortMap {
            owner: Owner {
                network: "n".into(),
                container_id: "c".into(),
                ifname: "eth0".into(),
            },
            mappings: vec![PortMapping {
                protocol: "tcp".into(),
                host_port: 80,
                container_port: 80,
                range: None,
                host_port_end: None,
                host_ip: host_ip.map(|s| s.parse().unwrap()),
            }],
            container_ips: vec![
                "10.88.0.5/16".parse().unwrap(),
                "fd00::5/64".parse().unwrap(),
            ],
            snat,
            masq_all: false,
            mark: MarkSpec::Bit(13),
            conditions_v4: vec![],
            conditions_v6: vec![],
        }
    }

    #[test]
    fn only_when_localhost_can_reach_a_mapping() {
        let ctr: IpAddr = "10.88.0.5".parse().unwrap();
        assert_eq!(needed(&pm(None, true)), Some(ctr));
        assert_eq!(needed(&pm(Some("127.0.0.1"), true)), Some(ctr));
        assert_eq!(needed(&pm(Some("0.0.0.0"), true)), Some(ctr));
        assert_eq!(needed(&pm(Some("192.0.2.1"), true)), None);
        assert_eq!(needed(&pm(Some("::"), true)), None);
        assert_eq!(needed(&pm(None, false)), None);
        let mut v6_only = pm(None, true);
        v6_only.container_ips.remove(0);
        assert_eq!(needed(&v6_only), None);
    }
}
