//! A node definition as written in `topology.defaults`, `topology.kinds.<kind>` or
//! `topology.nodes.<name>`, before inheritance.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::command::split;
use crate::error::ErrorKind;
use crate::impair::decimal;
use crate::model::{Bind, NetworkMode, PortSpec, Protocol};
use crate::parse::read::{Cx, Entries};
use crate::yaml::{Node, Pos};

/// The node keys Berth reads.
pub const NODE_KEYS: &[&str] = &[
    "kind",
    "image",
    "cmd",
    "entrypoint",
    "exec",
    "env",
    "env-files",
    "binds",
    "labels",
    "sysctls",
    "mgmt-ipv4",
    "mgmt-ipv6",
    "ports",
    "user",
    "network-mode",
    "startup-delay",
    "group",
    "memory",
    "cpu",
];

/// containerlab node keys that change nothing about a Berth lab's wiring, and why.
pub const IGNORED_NODE_KEYS: &[(&str, &str)] = &[
    ("type", "it selects a hardware variant of network OS kinds"),
    (
        "startup-config",
        "linux and bridge nodes have no startup configuration",
    ),
    (
        "enforce-startup-config",
        "linux and bridge nodes have no startup configuration",
    ),
    (
        "suppress-startup-config",
        "linux and bridge nodes have no startup configuration",
    ),
    ("license", "linux and bridge nodes need no license"),
    (
        "position",
        "it only places the node in containerlab's graph",
    ),
    (
        "image-pull-policy",
        "Berth pulls an image only when it is missing",
    ),
    (
        "publish",
        "containerlab's tunnel service is not part of Berth",
    ),
    (
        "auto-remove",
        "lab nodes are removed by `berth lab destroy`",
    ),
    (
        "restart-policy",
        "lab nodes are not restarted automatically",
    ),
    (
        "cap-add",
        "linux nodes run privileged, with every capability",
    ),
    ("shm-size", "Berth gives nodes the default /dev/shm"),
    ("devices", "linux nodes run privileged"),
    ("dns", "nodes use the host's resolver configuration"),
    ("certificate", "Berth issues no node certificates"),
    ("healthcheck", "Berth runs no health checks"),
    ("stages", "nodes start once their links exist"),
    (
        "wait-for",
        "nodes start in name order, each once its links exist",
    ),
    ("aliases", "there is no management DNS"),
    ("extras", "it holds settings for other kinds"),
    (
        "config",
        "containerlab's config engine is not part of Berth",
    ),
    ("sandbox", "it is for VM-based kinds"),
    ("kernel", "it is for VM-based kinds"),
    ("runtime", "Berth is the runtime"),
    ("cpu-set", "Berth does not pin lab nodes to CPUs"),
    ("components", "it is for chassis-based kinds"),
];

/// A node definition with the position of each key that was set.
#[derive(Debug, Default, Clone)]
pub struct RawNode {
    pub kind: Option<(String, Pos)>,
    pub image: Option<String>,
    pub cmd: Option<String>,
    pub entrypoint: Option<String>,
    pub exec: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub env_files: Vec<String>,
    pub binds: Vec<Bind>,
    pub labels: BTreeMap<String, String>,
    pub sysctls: BTreeMap<String, String>,
    pub mgmt_ipv4: Option<(Ipv4Addr, Pos)>,
    pub mgmt_ipv6: Option<(Ipv6Addr, Pos)>,
    pub ports: Vec<PortSpec>,
    pub user: Option<String>,
    pub network_mode: Option<NetworkMode>,
    pub startup_delay: Option<u32>,
    pub group: Option<(String, Pos)>,
    pub memory: Option<u64>,
    pub cpu_millis: Option<u32>,
    /// Every known key that was set, for the bridge-kind check.
    pub keys: Vec<(String, Pos)>,
}

/// Reads one node definition; `section` names it in messages ("node r1",
/// "topology.defaults").
pub fn read(cx: &mut Cx, node: &Node, section: &str) -> RawNode {
    let mut raw = RawNode::default();
    let Some(entries) = cx.map(node, section) else {
        return raw;
    };
    cx.check_keys(entries, section, NODE_KEYS, IGNORED_NODE_KEYS);
    for (key, value) in entries {
        let Some(k) = key.key_text() else { continue };
        if !NODE_KEYS.contains(&k) {
            continue;
        }
        raw.keys.push((k.to_owned(), key.pos));
        let what = format!("{section}: {k}");
        match k {
            "kind" => raw.kind = cx.string(value, &what).map(|s| (s, value.pos)),
            "image" => raw.image = cx.string(value, &what),
            "cmd" => {
                let text = cx.string(value, &what);
                raw.cmd = command(cx, text, value.pos, &what);
            }
            "entrypoint" => {
                let text = cx.string(value, &what);
                raw.entrypoint = command(cx, text, value.pos, &what);
            }
            "exec" => {
                raw.exec = cx
                    .strings(value, &what)
                    .into_iter()
                    .filter_map(|(line, pos)| command(cx, Some(line), pos, &what))
                    .collect()
            }
            "env" => raw.env = cx.string_map(value, &what),
            "env-files" => {
                raw.env_files = cx.strings(value, &what).into_iter().map(|s| s.0).collect()
            }
            "binds" => {
                for (text, pos) in cx.strings(value, &what) {
                    if let Some(bind) = bind(cx, &text, pos, &what) {
                        raw.binds.push(bind);
                    }
                }
            }
            "labels" => raw.labels = cx.string_map(value, &what),
            "sysctls" => raw.sysctls = cx.string_map(value, &what),
            "mgmt-ipv4" => {
                raw.mgmt_ipv4 = cx
                    .number(value, &what, "an IPv4 address")
                    .map(|a| (a, value.pos))
            }
            "mgmt-ipv6" => {
                raw.mgmt_ipv6 = cx
                    .number(value, &what, "an IPv6 address")
                    .map(|a| (a, value.pos))
            }
            "ports" => {
                for (text, pos) in cx.strings(value, &what) {
                    match port(&text) {
                        Some(p) => raw.ports.push(p),
                        None => cx.error(
                            pos,
                            ErrorKind::BadValue {
                                what: what.clone(),
                                value: text,
                                expected: "a port mapping [host-ip:]host-port:container-port[/tcp|udp|sctp]",
                            },
                        ),
                    }
                }
            }
            "user" => raw.user = cx.string(value, &what),
            "network-mode" => {
                if let Some(text) = cx.string(value, &what) {
                    raw.network_mode = network_mode(cx, &text, value.pos, &what);
                }
            }
            "startup-delay" => raw.startup_delay = cx.number(value, &what, "a number of seconds"),
            "group" => raw.group = cx.string(value, &what).map(|g| (g, value.pos)),
            "memory" => {
                if let Some(text) = cx.string(value, &what) {
                    raw.memory = memory(&text);
                    if raw.memory.is_none() {
                        cx.error(
                            value.pos,
                            ErrorKind::BadValue {
                                what,
                                value: text,
                                expected: "a size such as 512mb or 1Gb (docker's units, binary)",
                            },
                        );
                    }
                }
            }
            "cpu" => {
                if let Some(text) = cx.string(value, &what) {
                    raw.cpu_millis = decimal(text.trim(), 1000)
                        .filter(|m| *m > 0)
                        .and_then(|m| u32::try_from(m).ok());
                    if raw.cpu_millis.is_none() {
                        cx.error(
                            value.pos,
                            ErrorKind::BadValue {
                                what,
                                value: text,
                                expected: "a number of CPUs above 0 with at most 3 decimals, such as 1.5",
                            },
                        );
                    }
                }
            }
            _ => {}
        }
    }
    raw
}

/// A command line, checked to split into words the way the deployer will split it, so a
/// stray quote is reported here with its line rather than when the node starts.
fn command(cx: &mut Cx, text: Option<String>, pos: Pos, what: &str) -> Option<String> {
    let text = text?;
    match split(&text) {
        Ok(_) => Some(text),
        Err(error) => {
            cx.error(
                pos,
                ErrorKind::Command {
                    what: what.to_owned(),
                    error,
                },
            );
            None
        }
    }
}

fn bind(cx: &mut Cx, text: &str, pos: Pos, what: &str) -> Option<Bind> {
    let parts: Vec<&str> = text.split(':').collect();
    let bind = match parts.as_slice() {
        [source, target] => Some(Bind {
            source: (*source).to_owned(),
            target: (*target).to_owned(),
            options: None,
        }),
        [source, target, options] => Some(Bind {
            source: (*source).to_owned(),
            target: (*target).to_owned(),
            options: Some((*options).to_owned()),
        }),
        _ => None,
    }
    .filter(|b| !b.source.is_empty() && b.target.starts_with('/'));
    if bind.is_none() {
        cx.error(
            pos,
            ErrorKind::BadValue {
                what: what.to_owned(),
                value: text.to_owned(),
                expected: "a bind source:/absolute/target[:options]",
            },
        );
    }
    bind
}

fn network_mode(cx: &mut Cx, text: &str, pos: Pos, what: &str) -> Option<NetworkMode> {
    match text {
        "host" => Some(NetworkMode::Host),
        "none" => Some(NetworkMode::None),
        _ => match text.strip_prefix("container:") {
            Some(c) if !c.is_empty() => Some(NetworkMode::Container(c.to_owned())),
            _ => {
                cx.error(
                    pos,
                    ErrorKind::BadValue {
                        what: what.to_owned(),
                        value: text.to_owned(),
                        expected: "host, none or container:NAME",
                    },
                );
                None
            }
        },
    }
}

/// `[host-ip:]host-port:container-port[/proto]`, IPv6 host addresses in brackets.
fn port(text: &str) -> Option<PortSpec> {
    let (spec, protocol) = match text.rsplit_once('/') {
        Some((spec, "tcp")) => (spec, Protocol::Tcp),
        Some((spec, "udp")) => (spec, Protocol::Udp),
        Some((spec, "sctp")) => (spec, Protocol::Sctp),
        Some(_) => return None,
        None => (text, Protocol::Tcp),
    };
    let (host_ip, ports) = if let Some(rest) = spec.strip_prefix('[') {
        let (ip, ports) = rest.split_once("]:")?;
        (Some(IpAddr::V6(ip.parse().ok()?)), ports)
    } else {
        match spec.split(':').collect::<Vec<_>>().as_slice() {
            [_, _] => (None, spec),
            [ip, _, _] => {
                let (_, ports) = spec.split_at(ip.len() + 1);
                (Some(ip.parse().ok()?), ports)
            }
            _ => return None,
        }
    };
    let (host, container) = ports.split_once(':')?;
    let host_port: u16 = host.parse().ok()?;
    let container_port: u16 = container.parse().ok()?;
    if host_port == 0 || container_port == 0 {
        return None;
    }
    Some(PortSpec {
        host_ip,
        host_port,
        container_port,
        protocol,
    })
}

/// docker's `RAMInBytes`: a number, an optional unit k, m, g, t or p (binary), optional
/// `i` and `b`, any case.
pub fn memory(text: &str) -> Option<u64> {
    let t = text.trim().to_ascii_lowercase();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(end);
    let unit = unit.trim_start();
    let unit = unit.strip_suffix('b').unwrap_or(unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let scale: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return None,
    };
    decimal(number, scale).filter(|b| *b > 0)
}

/// Entries of `topology.kinds` or `topology.groups` (`section`), in file order, with each
/// entry's position.
pub fn named(cx: &mut Cx, node: &Node, section: &str) -> Vec<(String, Pos, RawNode)> {
    let mut out = Vec::new();
    let Some(entries): Option<&Entries> = cx.map(node, section) else {
        return out;
    };
    for (key, value) in entries {
        let Some(name) = key.key_text() else { continue };
        let raw = read(cx, value, &format!("{section}.{name}"));
        out.push((name.to_owned(), key.pos, raw));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        let p = port("8080:80").unwrap();
        assert_eq!((p.host_port, p.container_port), (8080, 80));
        assert_eq!(p.as_written(), "8080:80");
        let p = port("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(p.as_written(), "127.0.0.1:5353:53/udp");
        let p = port("[::1]:2222:22").unwrap();
        assert_eq!(p.as_written(), "[::1]:2222:22");
        for bad in [
            "80",
            "a:80",
            "80:80/icmp",
            "0:80",
            "1.2.3:80:80",
            "8000-8010:8000-8010",
        ] {
            assert!(port(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn memory_units() {
        assert_eq!(memory("512mb"), Some(512 << 20));
        assert_eq!(memory("1Gb"), Some(1 << 30));
        assert_eq!(memory("1.5GiB"), Some(3 << 29));
        assert_eq!(memory("1024"), Some(1024));
        assert_eq!(memory("1x"), None);
        assert_eq!(memory("0"), None);
    }
}
