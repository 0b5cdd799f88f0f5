//! Published ports: `-p [IP:]HOST:CTR[/tcp|udp]` with ranges (`8080-8081:80-81`), parsed
//! strictly, expanded into one [`PortMapping`] per port (the shape of the CNI `portMappings`
//! capability), and checked against the ports other containers already publish.

use std::fmt;
use std::net::IpAddr;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What is wrong with a `-p` value (the message follows `invalid -p "<input>": `).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortProblem {
    #[error("expected [IP:]HOST-PORT:CONTAINER-PORT[/tcp|udp]")]
    Syntax,
    #[error("unknown protocol {0:?} (tcp or udp)")]
    Protocol(String),
    #[error("{0:?} is not an IP address (IPv6 goes in brackets: [::1]:8080:80)")]
    Address(String),
    #[error("{0:?} is not a port or a port range (1-65535, e.g. 8080 or 8080-8081)")]
    Port(String),
    #[error("range {0:?} ends before it starts")]
    Backwards(String),
    #[error("the host range has {host} ports but the container range has {container}")]
    RangeLengths { host: usize, container: usize },
}

/// Why a set of `-p` values cannot be published together (or next to other containers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    #[error("invalid -p {input:?}: {problem}")]
    Invalid { input: String, problem: PortProblem },
    #[error("-p {first} and -p {second} publish the same host port")]
    Duplicate {
        first: PortMapping,
        second: PortMapping,
    },
    #[error(
        "-p {mapping}: host port {}/{} is already published by container {container}",
        mapping.host_port,
        mapping.protocol.as_str()
    )]
    InUse {
        mapping: PortMapping,
        container: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    /// The host address to listen on; `None`: every address of the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl PortMapping {
    /// The entry of the `portMappings` capability argument (keys as the CNI conventions spell
    /// them: `hostIP`, not `hostIp`).
    pub fn to_cni(&self) -> Value {
        let mut entry = json!({
            "hostPort": self.host_port,
            "containerPort": self.container_port,
            "protocol": self.protocol.as_str(),
        });
        if let (Some(ip), Some(map)) = (self.host_ip, entry.as_object_mut()) {
            map.insert("hostIP".into(), ip.to_string().into());
        }
        entry
    }

    /// Whether both would claim the same host socket. An unspecified address (`0.0.0.0`,
    /// `::`) covers its whole family; no address covers both families.
    pub fn conflicts_with(&self, other: &PortMapping) -> bool {
        if self.protocol != other.protocol || self.host_port != other.host_port {
            return false;
        }
        match (self.host_ip, other.host_ip) {
            (None, _) | (_, None) => true,
            (Some(a), Some(b)) if a.is_unspecified() || b.is_unspecified() => {
                a.is_ipv4() == b.is_ipv4()
            }
            (Some(a), Some(b)) => a == b,
        }
    }
}

impl fmt::Display for PortMapping {
    /// docker's notation: `0.0.0.0:8080->80/tcp`, `[::1]:8080->80/udp`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            None => write!(f, "0.0.0.0:")?,
            Some(IpAddr::V4(ip)) => write!(f, "{ip}:")?,
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
        }
        write!(
            f,
            "{}->{}/{}",
            self.host_port,
            self.container_port,
            self.protocol.as_str()
        )
    }
}

/// A port an image exposes (a key of its `ExposedPorts`), shown as `8080/tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExposedPort {
    pub port: u16,
    pub protocol: Protocol,
}

impl fmt::Display for ExposedPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol.as_str())
    }
}

/// A key of an image's `ExposedPorts`: `8080/tcp`, `53/udp`, `80` (tcp), or a range
/// `8000-8001/tcp` as `EXPOSE` allows.
pub fn parse_exposed(key: &str) -> Result<Vec<ExposedPort>, PortProblem> {
    let (ports, protocol) = match key.rsplit_once('/') {
        Some((ports, "tcp")) => (ports, Protocol::Tcp),
        Some((ports, "udp")) => (ports, Protocol::Udp),
        Some((_, other)) => return Err(PortProblem::Protocol(other.to_owned())),
        None => (key, Protocol::Tcp),
    };
    Ok(parse_range(ports)?
        .map(|port| ExposedPort { port, protocol })
        .collect())
}

/// Why `-P` could not publish the exposed ports.
#[derive(Debug, thiserror::Error)]
pub enum PublishAllError {
    #[error("-P: the image exposes {key:?}: {problem}")]
    Exposed { key: String, problem: PortProblem },
    #[error("-P: find a free host port for {exposed}")]
    Bind {
        exposed: ExposedPort,
        #[source]
        source: std::io::Error,
    },
    #[error("-P: every free host port the kernel offered for {exposed} is published already")]
    Exhausted { exposed: ExposedPort },
}

/// `-P`: publishes each of `exposed` that no `-p` of `ports` publishes already on a free
/// host port, appended to `ports`. A port is free when the kernel hands it out for a wildcard
/// bind of its protocol here (the runtime's network namespace, where portmap listens) and no
/// other container (`taken`) publishes it; docker's allocator takes the same ephemeral range.
pub fn publish_exposed(
    ports: &mut Vec<PortMapping>,
    exposed: &[ExposedPort],
    taken: &[PortMapping],
) -> Result<(), PublishAllError> {
    for e in exposed {
        let published = ports
            .iter()
            .any(|m| m.container_port == e.port && m.protocol == e.protocol);
        if published {
            continue;
        }
        let mut chosen = None;
        // The kernel rarely hands out a port another container publishes (portmap's DNAT
        // does not bind it), and then never twice in a row: a few attempts suffice.
        for _ in 0..16 {
            let host_port = free_port(e.protocol).map_err(|source| PublishAllError::Bind {
                exposed: *e,
                source,
            })?;
            let candidate = PortMapping {
                host_ip: None,
                host_port,
                container_port: e.port,
                protocol: e.protocol,
            };
            if !taken
                .iter()
                .chain(ports.iter())
                .any(|m| m.conflicts_with(&candidate))
            {
                chosen = Some(candidate);
                break;
            }
        }
        ports.push(chosen.ok_or(PublishAllError::Exhausted { exposed: *e })?);
    }
    Ok(())
}

/// A port the kernel considers free for `protocol` on every IPv4 address: bind port 0, read
/// what it chose, release it.
fn free_port(protocol: Protocol) -> std::io::Result<u16> {
    let any = (std::net::Ipv4Addr::UNSPECIFIED, 0);
    match protocol {
        Protocol::Tcp => std::net::TcpListener::bind(any)?.local_addr(),
        Protocol::Udp => std::net::UdpSocket::bind(any)?.local_addr(),
    }
    .map(|a| a.port())
}

/// Parses one `-p` value into its mappings, one per port of the range.
pub fn parse_publish(input: &str) -> Result<Vec<PortMapping>, PortError> {
    let invalid = |problem| PortError::Invalid {
        input: input.to_owned(),
        problem,
    };
    let (spec, protocol) = match input.rsplit_once('/') {
        Some((spec, "tcp")) => (spec, Protocol::Tcp),
        Some((spec, "udp")) => (spec, Protocol::Udp),
        Some((_, other)) => return Err(invalid(PortProblem::Protocol(other.to_owned()))),
        None => (input, Protocol::Tcp),
    };
    // `[v6]:HOST:CTR`, `IP:HOST:CTR` or `HOST:CTR`.
    let (host_ip, ports) = if let Some(rest) = spec.strip_prefix('[') {
        let (ip, ports) = rest
            .split_once("]:")
            .ok_or_else(|| invalid(PortProblem::Syntax))?;
        let ip = ip
            .parse::<std::net::Ipv6Addr>()
            .map_err(|_| invalid(PortProblem::Address(ip.to_owned())))?;
        (Some(IpAddr::V6(ip)), ports)
    } else {
        match spec.matches(':').count() {
            1 => (None, spec),
            2 => {
                let (ip, ports) = spec
                    .split_once(':')
                    .ok_or_else(|| invalid(PortProblem::Syntax))?;
                let ip = ip
                    .parse::<std::net::Ipv4Addr>()
                    .map_err(|_| invalid(PortProblem::Address(ip.to_owned())))?;
                (Some(IpAddr::V4(ip)), ports)
            }
            n if n > 2 => {
                let ip = spec.rsplitn(3, ':').nth(2).unwrap_or_default();
                return Err(invalid(PortProblem::Address(ip.to_owned())));
            }
            _ => return Err(invalid(PortProblem::Syntax)),
        }
    };
    let (host, container) = ports
        .split_once(':')
        .ok_or_else(|| invalid(PortProblem::Syntax))?;
    let host = parse_range(host).map_err(invalid)?;
    let container = parse_range(container).map_err(invalid)?;
    let (host_len, ctr_len) = (host.clone().count(), container.clone().count());
    if host_len != ctr_len {
        return Err(invalid(PortProblem::RangeLengths {
            host: host_len,
            container: ctr_len,
        }));
    }
    Ok(host
        .zip(container)
        .map(|(host_port, container_port)| PortMapping {
            host_ip,
            host_port,
            container_port,
            protocol,
        })
        .collect())
}

/// `8080` or `8080-8081`, ports 1 to 65535.
fn parse_range(input: &str) -> Result<RangeInclusive<u16>, PortProblem> {
    let port = |s: &str| {
        s.parse::<u16>()
            .ok()
            .filter(|p| *p > 0 && s.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| PortProblem::Port(input.to_owned()))
    };
    let (start, end) = match input.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(input)?;
            (p, p)
        }
    };
    if end < start {
        return Err(PortProblem::Backwards(input.to_owned()));
    }
    Ok(start..=end)
}

/// Parses every `-p` and refuses two that claim the same host port.
pub fn parse_all(inputs: &[String]) -> Result<Vec<PortMapping>, PortError> {
    let mut all: Vec<PortMapping> = Vec::new();
    for input in inputs {
        for mapping in parse_publish(input)? {
            if let Some(first) = all.iter().find(|m| m.conflicts_with(&mapping)) {
                return Err(PortError::Duplicate {
                    first: *first,
                    second: mapping,
                });
            }
            all.push(mapping);
        }
    }
    Ok(all)
}

/// Fails if any of `wanted` is already published by one of `others` (container name and its
/// mappings).
pub fn check_free<'a>(
    wanted: &[PortMapping],
    others: impl IntoIterator<Item = (&'a str, &'a [PortMapping])>,
) -> Result<(), PortError> {
    for (container, published) in others {
        for mapping in wanted {
            if published.iter().any(|p| p.conflicts_with(mapping)) {
                return Err(PortError::InUse {
                    mapping: *mapping,
                    container: container.to_owned(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(input: &str) -> PortMapping {
        let all = parse_publish(input).unwrap();
        assert_eq!(all.len(), 1, "{input}");
        all[0]
    }

    #[test]
    fn forms() {
        assert_eq!(one("8080:80").to_string(), "0.0.0.0:8080->80/tcp");
        assert_eq!(
            one("127.0.0.1:8080:80/udp").to_string(),
            "127.0.0.1:8080->80/udp"
        );
        assert_eq!(one("[::1]:8080:80").to_string(), "[::1]:8080->80/tcp");
        let range = parse_publish("8080-8082:80-82").unwrap();
        assert_eq!(
            range
                .iter()
                .map(|m| (m.host_port, m.container_port))
                .collect::<Vec<_>>(),
            [(8080, 80), (8081, 81), (8082, 82)]
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "",
            "80",
            "a:80",
            "8080:",
            ":80",
            "0:80",
            "65536:80",
            "8080:80/sctp",
            "8080:80/",
            "1.2.3:8080:80",
            "::1:8080:80",
            "[::1]8080:80",
            "[zz]:8080:80",
            "8082-8080:80-82",
            "8080-8081:80",
            "+80:80",
            "8080:80:90:100",
        ] {
            assert!(
                matches!(parse_publish(bad), Err(PortError::Invalid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn exposed_ports_and_publish_all() {
        let keys = |k: &str| {
            parse_exposed(k)
                .unwrap()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(keys("8080/tcp"), ["8080/tcp"]);
        assert_eq!(keys("53/udp"), ["53/udp"]);
        assert_eq!(keys("80"), ["80/tcp"]);
        assert_eq!(keys("8000-8001/tcp"), ["8000/tcp", "8001/tcp"]);
        for bad in ["", "80/sctp", "x/tcp", "0/tcp", "70000"] {
            assert!(parse_exposed(bad).is_err(), "{bad}");
        }
        // 80/tcp is published by -p already: nothing to allocate (allocation itself binds
        // sockets, so it is tested end to end in a throwaway namespace: image_config.rs).
        let exposed = [ExposedPort {
            port: 80,
            protocol: Protocol::Tcp,
        }];
        let mut ports = vec![one("8080:80")];
        publish_exposed(&mut ports, &exposed, &[]).unwrap();
        assert_eq!(ports, [one("8080:80")]);
    }

    #[test]
    fn cni_entry() {
        assert_eq!(
            one("127.0.0.1:8080:80").to_cni(),
            json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"})
        );
        assert_eq!(
            one("53:53/udp").to_cni(),
            json!({"hostPort": 53, "containerPort": 53, "protocol": "udp"})
        );
    }

    #[test]
    fn conflicts() {
        let any = one("8080:80");
        let local = one("127.0.0.1:8080:81");
        let other = one("127.0.0.2:8080:81");
        let all_v4 = one("0.0.0.0:8080:80");
        let v6 = one("[::1]:8080:80");
        assert!(any.conflicts_with(&local));
        assert!(!local.conflicts_with(&other));
        assert!(all_v4.conflicts_with(&local));
        assert!(!all_v4.conflicts_with(&v6));
        assert!(!any.conflicts_with(&one("8080:80/udp")));
        assert!(!any.conflicts_with(&one("8081:80")));
        assert!(matches!(
            parse_all(&["8080:80".into(), "127.0.0.1:8080:90".into()]),
            Err(PortError::Duplicate { .. })
        ));
        assert!(parse_all(&["8080:80".into(), "8080:80/udp".into()]).is_ok());
        let published = [local];
        let err = check_free(&[any], [("web", &published[..])]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "-p 0.0.0.0:8080->80/tcp: host port 8080/tcp is already published by container web"
        );
    }
}
