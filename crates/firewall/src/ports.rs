//! Port mappings (`portmap`): what publishing a container port on the host means, validated
//! and split per address family, independent of iptables or nft syntax.
//!
//! A [`PortMap`] is one attachment's request; [`PortPlan::new`] checks every field and turns
//! it into one [`FamilyPorts`] per family the container has an address in. Nothing reaches a
//! backend unless the whole request is valid, so a bad mapping never leaves half its rules.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::Owner;
use crate::model::{Family, Tag};

/// Highest mark bit (`markMasqBit` is 0..=31).
pub const MAX_MARK_BIT: u8 = 31;
/// The reference's default `markMasqBit` (Kubernetes uses 14 and 15, Calico 20-31).
pub const DEFAULT_MARK_BIT: u8 = 13;
/// iptables' `multiport` match takes at most 15 ports (a range counts twice).
const MULTIPORT_MAX: usize = 15;

/// A transport protocol a port can be published for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    /// Case-insensitive, as runtimes send `TCP` as often as `tcp`.
    pub fn parse(s: &str) -> Option<Protocol> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }

    /// The IP protocol number, as conntrack reports it.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inclusive, non-empty range of ports, `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    first: u16,
    last: u16,
}

impl PortRange {
    pub fn single(port: u16) -> PortRange {
        PortRange {
            first: port,
            last: port,
        }
    }

    pub fn first(self) -> u16 {
        self.first
    }

    pub fn last(self) -> u16 {
        self.last
    }

    /// How many ports (never zero).
    pub fn count(self) -> u32 {
        u32::from(self.last - self.first) + 1
    }

    pub fn is_single(self) -> bool {
        self.first == self.last
    }

    pub fn contains(self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    pub fn ports(self) -> impl Iterator<Item = u16> {
        self.first..=self.last
    }

    /// `8080` or `8000:8010`, as iptables writes ports.
    pub fn iptables(self) -> String {
        if self.is_single() {
            self.first.to_string()
        } else {
            format!("{}:{}", self.first, self.last)
        }
    }

    /// `8080` or `8000-8010`, as nft writes ports.
    pub fn nft(self) -> String {
        if self.is_single() {
            self.first.to_string()
        } else {
            format!("{}-{}", self.first, self.last)
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.nft())
    }
}

/// One requested mapping, as it arrives (ports still unchecked, so that every mistake gets a
/// message naming the mapping rather than a decode error).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub protocol: String,
    pub host_port: i64,
    pub container_port: i64,
    /// Number of consecutive ports (netavark's `range`); `None` means 1.
    pub range: Option<i64>,
    /// Last host port of a range (alternative to `range`); must not be below `host_port`.
    pub host_port_end: Option<i64>,
    /// Only traffic to this host address; an unspecified address (`0.0.0.0`, `::`) means
    /// any address of that family only, as in the reference.
    pub host_ip: Option<IpAddr>,
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ip) = self.host_ip {
            match ip {
                IpAddr::V4(ip) => write!(f, "{ip}:")?,
                IpAddr::V6(ip) => write!(f, "[{ip}]:")?,
            }
        }
        write!(f, "{}", self.host_port)?;
        if let Some(end) = self.host_port_end {
            write!(f, "-{end}")?;
        }
        if let Some(n) = self.range {
            write!(f, " (range {n})")?;
        }
        write!(f, "->{}/{}", self.container_port, self.protocol)
    }
}

/// Where hairpin and localhost connections get their "masquerade me" mark.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MarkSpec {
    /// Our own mark chain setting this bit, and a masquerade rule for it (`markMasqBit`).
    Bit(u8),
    /// Someone else's chain that marks for masquerading, e.g. Kubernetes' `KUBE-MARK-MASQ`
    /// (`externalSetMarkChain`, iptables only); we only jump to it.
    ExternalChain(String),
}

/// One attachment's published ports (a [`crate::Desired`] of [`crate::Firewall::apply`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMap {
    pub owner: Owner,
    pub mappings: Vec<PortMapping>,
    /// The container's addresses with their subnet prefix (from the previous result): the
    /// first of each family is the DNAT target; its subnet is the hairpin source.
    pub container_ips: Vec<IpNetwork>,
    /// Masquerade hairpin and localhost connections (the reference's `snat`, default true).
    pub snat: bool,
    /// Masquerade every published-port connection, not only hairpin/localhost ones.
    pub masq_all: bool,
    pub mark: MarkSpec,
    /// Extra matches on the entry into this attachment's rules, in the backend's syntax
    /// (iptables arguments or nft expressions), per family.
    pub conditions_v4: Vec<String>,
    pub conditions_v6: Vec<String>,
}

/// Errors of the `ports` module: a port mapping request that cannot become rules.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortError {
    #[error("port mapping {mapping}: unknown protocol {protocol:?} (expected tcp, udp or sctp)")]
    Protocol { mapping: String, protocol: String },
    #[error("port mapping {mapping}: {field} {value} is out of range (1-65535)")]
    Port {
        mapping: String,
        field: &'static str,
        value: i64,
    },
    #[error("port mapping {mapping}: {reason}")]
    Range {
        mapping: String,
        reason: &'static str,
    },
    #[error(
        "port mapping {mapping}: hostIP {host_ip} is {family} but the container has no {family} address"
    )]
    HostIpFamily {
        mapping: String,
        host_ip: IpAddr,
        family: Family,
    },
    #[error("port mappings {first} and {second} publish the same host port")]
    Overlap { first: String, second: String },
    #[error("port mappings for {owner}: the container has no address to forward to")]
    NoContainerIp { owner: String },
    #[error("markMasqBit {bit} is out of range (0-{MAX_MARK_BIT})")]
    MarkBit { bit: u8 },
    #[error("externalSetMarkChain {chain:?} is not a valid chain name: {reason}")]
    MarkChain { chain: String, reason: &'static str },
    #[error("{key} entry {condition:?}: {reason}")]
    Condition {
        key: &'static str,
        condition: String,
        reason: &'static str,
    },
}

/// One validated mapping in one family.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mapping {
    pub protocol: Protocol,
    pub host: PortRange,
    /// Same length as `host`.
    pub container: PortRange,
    /// `None`: any local address of the family.
    pub host_ip: Option<IpAddr>,
}

impl Mapping {
    /// Container port for host port `port` (ranges map one to one, in order).
    pub fn container_port(&self, port: u16) -> u16 {
        self.container.first() + (port - self.host.first())
    }
}

/// Everything the backends need for one family of one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyPorts {
    pub family: Family,
    /// DNAT target.
    pub container_ip: IpAddr,
    /// Sources whose connections get the masquerade mark: the container's subnet (hairpin),
    /// plus the loopback net for IPv4 (localhost access); the whole family with `masqAll`.
    /// Empty without `snat`.
    pub masq_sources: Vec<IpNetwork>,
    pub mappings: Vec<Mapping>,
    pub conditions: Vec<String>,
}

impl FamilyPorts {
    /// The mappings' host ports grouped per protocol into `multiport`-sized chunks (a range
    /// counts as two entries), in a stable order: the iptables dispatch rules.
    pub fn multiport_groups(&self) -> Vec<(Protocol, Vec<PortRange>)> {
        let mut groups = Vec::new();
        for protocol in Protocol::ALL {
            let ranges: BTreeSet<PortRange> = self
                .mappings
                .iter()
                .filter(|m| m.protocol == protocol)
                .map(|m| m.host)
                .collect();
            let mut chunk: Vec<PortRange> = Vec::new();
            let mut weight = 0;
            for range in ranges {
                let w = if range.is_single() { 1 } else { 2 };
                if weight + w > MULTIPORT_MAX {
                    groups.push((protocol, std::mem::take(&mut chunk)));
                    weight = 0;
                }
                chunk.push(range);
                weight += w;
            }
            if !chunk.is_empty() {
                groups.push((protocol, chunk));
            }
        }
        groups
    }
}

/// A validated [`PortMap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPlan {
    pub tag: Tag,
    pub mark: MarkSpec,
    pub families: Vec<FamilyPorts>,
}

impl PortPlan {
    pub fn new(pm: &PortMap) -> Result<PortPlan, crate::FirewallError> {
        let tag = Tag::new(&pm.owner)?;
        let plan = Self::validate(pm, tag)?;
        Ok(plan)
    }

    fn validate(pm: &PortMap, tag: Tag) -> Result<PortPlan, PortError> {
        match &pm.mark {
            MarkSpec::Bit(bit) if *bit > MAX_MARK_BIT => {
                return Err(PortError::MarkBit { bit: *bit });
            }
            MarkSpec::ExternalChain(chain) => check_chain_name(chain)?,
            MarkSpec::Bit(_) => {}
        }
        for (key, conditions) in [
            ("conditionsV4", &pm.conditions_v4),
            ("conditionsV6", &pm.conditions_v6),
        ] {
            for c in conditions {
                check_condition(key, c)?;
            }
        }
        // The first address of each family is the target, as in the reference.
        let mut target: Vec<IpNetwork> = Vec::new();
        for ip in &pm.container_ips {
            if !target.iter().any(|t| t.is_ipv4() == ip.is_ipv4()) {
                target.push(*ip);
            }
        }
        if target.is_empty() && !pm.mappings.is_empty() {
            return Err(PortError::NoContainerIp {
                owner: tag.to_string(),
            });
        }
        let mut per_family: Vec<(Family, Vec<Mapping>)> =
            Family::ALL.into_iter().map(|f| (f, Vec::new())).collect();
        for raw in &pm.mappings {
            let mapping = validate_mapping(raw)?;
            let families: Vec<Family> = match raw.host_ip {
                Some(ip) => {
                    let family = Family::of(ip);
                    if !target.iter().any(|t| Family::of(t.ip()) == family) {
                        return Err(PortError::HostIpFamily {
                            mapping: raw.to_string(),
                            host_ip: ip,
                            family,
                        });
                    }
                    vec![family]
                }
                None => target.iter().map(|t| Family::of(t.ip())).collect(),
            };
            for family in families {
                if let Some((_, list)) = per_family.iter_mut().find(|(f, _)| *f == family) {
                    list.push(mapping.clone());
                }
            }
        }
        let mut families = Vec::new();
        for (family, mut mappings) in per_family {
            let Some(net) = target.iter().find(|t| Family::of(t.ip()) == family) else {
                continue;
            };
            if mappings.is_empty() {
                continue;
            }
            mappings.sort();
            mappings.dedup();
            check_overlaps(&mappings, pm)?;
            let masq_sources = if !pm.snat {
                Vec::new()
            } else if pm.masq_all {
                vec![family.any()]
            } else {
                let subnet = IpNetwork::new(net.network(), net.prefix())
                    // INVARIANT: the prefix comes from a valid network of the same family.
                    .expect("same prefix");
                match family {
                    Family::V4 => vec![subnet, family.loopback()],
                    // ::1 cannot leave the host (no route_localnet for IPv6): only hairpin.
                    Family::V6 => vec![subnet],
                }
            };
            families.push(FamilyPorts {
                family,
                container_ip: net.ip(),
                masq_sources,
                mappings,
                conditions: match family {
                    Family::V4 => pm.conditions_v4.clone(),
                    Family::V6 => pm.conditions_v6.clone(),
                },
            });
        }
        Ok(PortPlan {
            tag,
            mark: pm.mark.clone(),
            families,
        })
    }

    /// Host ports of UDP mappings per family: their stale conntrack entries go after ADD.
    pub fn udp_ports(&self) -> Vec<(Family, PortRange)> {
        self.families
            .iter()
            .flat_map(|fp| {
                fp.mappings
                    .iter()
                    .filter(|m| m.protocol == Protocol::Udp)
                    .map(move |m| (fp.family, m.host))
            })
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.families.is_empty()
    }
}

fn validate_mapping(raw: &PortMapping) -> Result<Mapping, PortError> {
    let name = raw.to_string();
    // A missing protocol is TCP, as podman and netavark read it.
    let protocol = if raw.protocol.is_empty() {
        Protocol::Tcp
    } else {
        Protocol::parse(&raw.protocol).ok_or_else(|| PortError::Protocol {
            mapping: name.clone(),
            protocol: raw.protocol.clone(),
        })?
    };
    let port = |field, value: i64| {
        u16::try_from(value)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| PortError::Port {
                mapping: name.clone(),
                field,
                value,
            })
    };
    let host_first = port("hostPort", raw.host_port)?;
    let container_first = port("containerPort", raw.container_port)?;
    let range_err = |reason| PortError::Range {
        mapping: name.clone(),
        reason,
    };
    let count: u32 = match (raw.range, raw.host_port_end) {
        (Some(_), Some(_)) => return Err(range_err("set either range or hostPortEnd, not both")),
        (Some(n), None) if n < 1 => return Err(range_err("range must be at least 1")),
        (Some(n), None) => u32::try_from(n).map_err(|_| range_err("range is too large"))?,
        (None, Some(end)) => {
            let end = port("hostPortEnd", end)?;
            if end < host_first {
                return Err(range_err("hostPortEnd is below hostPort (reversed range)"));
            }
            u32::from(end - host_first) + 1
        }
        (None, None) => 1,
    };
    let last = |first: u16, what| {
        u16::try_from(u32::from(first) + count - 1).map_err(|_| {
            range_err(match what {
                "host" => "the host port range runs past 65535",
                _ => "the container port range runs past 65535",
            })
        })
    };
    let host_last = last(host_first, "host")?;
    let container_last = last(container_first, "container")?;
    let host_ip = raw.host_ip.filter(|ip| !ip.is_unspecified());
    Ok(Mapping {
        protocol,
        host: PortRange {
            first: host_first,
            last: host_last,
        },
        container: PortRange {
            first: container_first,
            last: container_last,
        },
        host_ip,
    })
}

/// Two mappings of one family may not claim the same protocol, host address and port: the
/// kernel would only ever use one of them.
fn check_overlaps(mappings: &[Mapping], pm: &PortMap) -> Result<(), PortError> {
    for (i, a) in mappings.iter().enumerate() {
        for b in &mappings[i + 1..] {
            let same_ip = a.host_ip == b.host_ip || a.host_ip.is_none() || b.host_ip.is_none();
            let overlap = a.host.first() <= b.host.last() && b.host.first() <= a.host.last();
            // A specific address next to "any address" is allowed (the specific one wins),
            // as in the reference; only equal address scopes clash.
            if a.protocol == b.protocol && a.host_ip == b.host_ip && same_ip && overlap {
                let show = |m: &Mapping| {
                    pm.mappings
                        .iter()
                        .find(|raw| validate_mapping(raw).ok().as_ref() == Some(m))
                        .map_or_else(|| format!("{}/{}", m.host, m.protocol), ToString::to_string)
                };
                return Err(PortError::Overlap {
                    first: show(a),
                    second: show(b),
                });
            }
        }
    }
    Ok(())
}

/// iptables chain names: 1-28 bytes, printable, no whitespace, not an option.
fn check_chain_name(chain: &str) -> Result<(), PortError> {
    match crate::model::chain_name_problem(chain) {
        Some(reason) => Err(PortError::MarkChain {
            chain: chain.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Conditions are spliced into an iptables-restore line or an nft script: one line each,
/// no quotes that could end our own quoting, no statement separators.
fn check_condition(key: &'static str, condition: &str) -> Result<(), PortError> {
    let err = |reason| PortError::Condition {
        key,
        condition: condition.to_owned(),
        reason,
    };
    if condition.trim().is_empty() {
        return Err(err("is empty"));
    }
    if condition.contains(['\n', '\r', ';', '#', '{', '}', '"', '\'', '`', '\\']) {
        return Err(err("contains a newline, quote, brace, ; or #"));
    }
    Ok(())
}

/// Which backend's syntax a list of conditions is written in: iptables conditions are
/// options (`-s 10.0.0.0/8`, `! -d …`), nft conditions expressions (`ip saddr …`). The
/// reference tells them apart the same way.
pub fn conditions_look_like_iptables(conditions: &[String]) -> Option<bool> {
    let first = conditions.first()?.trim_start();
    Some(first.starts_with('-') || first.starts_with('!'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            network: "net".into(),
            container_id: "ctr".into(),
            ifname: "eth0".into(),
        }
    }

    fn mapping(protocol: &str, host: i64, container: i64) -> PortMapping {
        PortMapping {
            protocol: protocol.into(),
            host_port: host,
            container_port: container,
            range: None,
            host_port_end: None,
            host_ip: None,
        }
    }

    fn port_map(mappings: Vec<PortMapping>, ips: &[&str]) -> PortMap {
        PortMap {
            owner: owner(),
            mappings,
            container_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            snat: true,
            masq_all: false,
            mark: MarkSpec::Bit(DEFAULT_MARK_BIT),
            conditions_v4: vec![],
            conditions_v6: vec![],
        }
    }

    fn plan(pm: &PortMap) -> Result<PortPlan, PortError> {
        PortPlan::validate(pm, Tag::new(&pm.owner).unwrap())
    }

    #[test]
    fn dual_stack_gets_both_families_and_hostip_picks_one() {
        let mut v4_only = mapping("udp", 53, 5353);
        v4_only.host_ip = Some("192.0.2.1".parse().unwrap());
        let mut v6_any = mapping("tcp", 443, 443);
        v6_any.host_ip = Some("::".parse().unwrap());
        let pm = port_map(
            vec![mapping("TCP", 8080, 80), v4_only, v6_any],
            &["198.18.0.5/24", "fd42:b347::5/64"],
        );
        let p = plan(&pm).unwrap();
        assert_eq!(p.families.len(), 2);
        let v4 = &p.families[0];
        assert_eq!(v4.container_ip.to_string(), "198.18.0.5");
        assert_eq!(v4.mappings.len(), 2);
        assert_eq!(
            v4.masq_sources
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["198.18.0.0/24", "127.0.0.0/8"]
        );
        let v6 = &p.families[1];
        // "::" is "any IPv6 address": the mapping goes to IPv6 only, unrestricted.
        assert_eq!(v6.mappings.len(), 2);
        assert!(v6.mappings.iter().all(|m| m.host_ip.is_none()));
        assert_eq!(v6.masq_sources.len(), 1);
        assert_eq!(
            p.udp_ports(),
            [(Family::V4, PortRange::single(53))],
            "UDP conntrack cleanup"
        );
    }

    #[test]
    fn ranges_map_one_to_one() {
        let mut m = mapping("tcp", 8000, 9000);
        m.range = Some(11);
        let p = plan(&port_map(vec![m.clone()], &["198.18.0.5/24"])).unwrap();
        let got = &p.families[0].mappings[0];
        assert_eq!((got.host.first(), got.host.last()), (8000, 8010));
        assert_eq!(got.container_port(8005), 9005);
        m.range = None;
        m.host_port_end = Some(8010);
        let p2 = plan(&port_map(vec![m], &["198.18.0.5/24"])).unwrap();
        assert_eq!(p2.families, p.families);
    }

    #[test]
    fn bad_mappings_are_named() {
        let ips = ["198.18.0.5/24"];
        let mut reversed = mapping("tcp", 8010, 80);
        reversed.host_port_end = Some(8000);
        let mut too_long = mapping("tcp", 65530, 80);
        too_long.range = Some(10);
        let mut wrong_family = mapping("tcp", 80, 80);
        wrong_family.host_ip = Some("2001:db8::1".parse().unwrap());
        let mut both = mapping("tcp", 80, 80);
        both.range = Some(2);
        both.host_port_end = Some(81);
        let cases: Vec<(PortMapping, &str)> = vec![
            (mapping("icmp", 80, 80), "unknown protocol \"icmp\""),
            (mapping("tcp", 0, 80), "hostPort 0 is out of range"),
            (
                mapping("tcp", 80, 65536),
                "containerPort 65536 is out of range",
            ),
            (mapping("tcp", -1, 80), "hostPort -1"),
            (reversed, "reversed range"),
            (too_long, "runs past 65535"),
            (
                wrong_family,
                "hostIP 2001:db8::1 is IPv6 but the container has no IPv6",
            ),
            (both, "either range or hostPortEnd"),
        ];
        for (m, want) in cases {
            let err = plan(&port_map(vec![m.clone()], &ips)).unwrap_err();
            assert!(err.to_string().contains(want), "{m}: {err}");
        }
    }

    #[test]
    fn overlapping_host_ports_are_refused() {
        let mut a = mapping("tcp", 8000, 80);
        a.range = Some(5);
        let b = mapping("tcp", 8004, 81);
        let err = plan(&port_map(vec![a.clone(), b], &["198.18.0.5/24"])).unwrap_err();
        assert!(matches!(err, PortError::Overlap { .. }), "{err}");
        // Other protocol, or a specific address beside "any": fine.
        let mut c = mapping("tcp", 8004, 81);
        c.host_ip = Some("198.18.0.1".parse().unwrap());
        plan(&port_map(
            vec![a.clone(), mapping("udp", 8004, 81), c],
            &["198.18.0.5/24"],
        ))
        .unwrap();
        // The same mapping twice is one mapping.
        let p = plan(&port_map(vec![a.clone(), a], &["198.18.0.5/24"])).unwrap();
        assert_eq!(p.families[0].mappings.len(), 1);
    }

    #[test]
    fn multiport_groups_respect_the_limit() {
        let mappings: Vec<PortMapping> = (0..20).map(|i| mapping("tcp", 1000 + i, 80)).collect();
        let p = plan(&port_map(mappings, &["198.18.0.5/24"])).unwrap();
        let groups = p.families[0].multiport_groups();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].1.len(), 15);
        assert_eq!(groups[1].1.len(), 5);
    }

    #[test]
    fn options_are_checked() {
        let mut pm = port_map(vec![mapping("tcp", 80, 80)], &["198.18.0.5/24"]);
        pm.mark = MarkSpec::Bit(32);
        assert!(matches!(plan(&pm), Err(PortError::MarkBit { bit: 32 })));
        pm.mark = MarkSpec::ExternalChain("-j ACCEPT".into());
        assert!(matches!(plan(&pm), Err(PortError::MarkChain { .. })));
        pm.mark = MarkSpec::Bit(13);
        pm.conditions_v4 = vec!["-s 10.0.0.0/8\n-j ACCEPT".into()];
        assert!(matches!(plan(&pm), Err(PortError::Condition { .. })));
        pm.conditions_v4 = vec![];
        pm.container_ips = vec![];
        assert!(matches!(plan(&pm), Err(PortError::NoContainerIp { .. })));
    }

    #[test]
    fn snat_off_and_masq_all() {
        let mut pm = port_map(vec![mapping("tcp", 80, 80)], &["198.18.0.5/24"]);
        pm.snat = false;
        assert!(plan(&pm).unwrap().families[0].masq_sources.is_empty());
        pm.snat = true;
        pm.masq_all = true;
        assert_eq!(
            plan(&pm).unwrap().families[0].masq_sources[0].to_string(),
            "0.0.0.0/0"
        );
    }

    #[test]
    fn condition_syntax_is_recognised() {
        assert_eq!(
            conditions_look_like_iptables(&["-s".into(), "10.0.0.0/8".into()]),
            Some(true)
        );
        assert_eq!(
            conditions_look_like_iptables(&["! -d 10.0.0.1".into()]),
            Some(true)
        );
        assert_eq!(
            conditions_look_like_iptables(&["ip saddr 10.0.0.0/8".into()]),
            Some(false)
        );
        assert_eq!(conditions_look_like_iptables(&[]), None);
    }
}
