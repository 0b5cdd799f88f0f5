//! Network definitions: `berth network create` flags → validated [`NetworkSpec`] → the
//! conflist Berth writes, and the way back ([`NetworkSummary`]: what `ls`, `inspect`, the
//! subnet-overlap check and `run`'s capability checks read out of any conflist, ours or not).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use berth_cni::{NetConfList, NetworkName, gojson};
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

/// The CNI version of every conflist Berth writes.
pub const CNI_VERSION: &str = "1.1.0";
/// Subnets handed to `network create` without `--subnet`: the first free /24 of this /16
/// (the default network has 10.210.0.0/16; docker uses 172.17.0.0/16 and up, podman 10.88.0.0/16).
const AUTO_POOL_V4: Ipv4Addr = Ipv4Addr::new(10, 211, 0, 0);

/// Errors of `berth network create` input.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    #[error("invalid network name {name:?}: use [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 64 characters")]
    Name { name: String },
    #[error("{name} is reserved (it is a --network mode)")]
    Reserved { name: String },
    #[error("invalid --driver {input:?}: bridge or veth")]
    Driver { input: String },
    #[error("invalid --subnet {input:?}: expected a CIDR such as 10.211.5.0/24 (no host bits)")]
    Subnet { input: String },
    #[error("--subnet {input} is too small: at most /30 for IPv4, /126 for IPv6")]
    SubnetTooSmall { input: String },
    #[error(
        "--subnet {first} and --subnet {second} are of the same family: give at most one IPv4 and one IPv6 subnet"
    )]
    SubnetFamily { first: IpNetwork, second: IpNetwork },
    #[error("invalid --gateway {input:?}: not an IP address")]
    Gateway { input: String },
    #[error("--gateway {gateway} is not inside any --subnet ({subnets})")]
    GatewayOutside { gateway: IpAddr, subnets: String },
    #[error("--gateway needs --subnet")]
    GatewayWithoutSubnet,
    #[error("invalid --mtu {mtu}: the range is 68 to 65535")]
    Mtu { mtu: u32 },
    #[error(
        "invalid --bridge {input:?}: an interface name of at most 15 bytes without '/', ':' or spaces"
    )]
    Bridge { input: String },
    #[error("--bridge is for --driver bridge only")]
    BridgeWithVeth,
    #[error("--isolate isolates bridges from each other: it needs --driver bridge")]
    IsolateWithVeth,
    #[error("no free /24 left in {AUTO_POOL_V4}/16: give --subnet")]
    PoolExhausted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// Containers on a Linux bridge (`bridge` plugin).
    Bridge,
    /// A point-to-point veth per container, routed by the host (`veth` plugin, like `ptp`).
    Veth,
}

/// The flags of `berth network create`, as typed; the `berth` binary parses its command line
/// straight into this (clap).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NetworkRequest {
    /// bridge (default) or veth (a routed point-to-point link per container).
    #[arg(short, long)]
    pub driver: Option<String>,
    /// Subnet in CIDR form (at most one IPv4 and one IPv6; default: a free 10.211.x.0/24).
    #[arg(long = "subnet", value_name = "SUBNET")]
    pub subnets: Vec<String>,
    /// Gateway address (default: the subnet's first address).
    #[arg(long)]
    pub gateway: Option<String>,
    /// Add IPv6 (a ULA /64 derived from the name unless an IPv6 --subnet is given).
    #[arg(long)]
    pub ipv6: bool,
    /// No masquerading and no default route.
    #[arg(long)]
    pub internal: bool,
    /// MTU of the container interfaces.
    #[arg(long)]
    pub mtu: Option<u32>,
    /// Isolate this network's bridge from other isolated networks (firewall plugin).
    #[arg(long)]
    pub isolate: bool,
    /// Bridge name (default: br-<12 hex digits of the name's hash>).
    #[arg(long)]
    pub bridge: Option<String>,
    pub name: String,
}

/// A validated network definition. Subnets are complete (auto-picked ones filled in by
/// [`NetworkSpec::fill_subnets`]) before the conflist is rendered.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkSpec {
    pub name: NetworkName,
    pub driver: Driver,
    pub subnet_v4: Option<Ipv4Network>,
    pub subnet_v6: Option<Ipv6Network>,
    pub gateway: Option<IpAddr>,
    /// Want IPv6 (a ULA /64 derived from the name if no IPv6 subnet was given).
    pub ipv6: bool,
    /// No masquerading and no default route: reachable from the host and each other only.
    pub internal: bool,
    pub mtu: Option<u32>,
    /// The `firewall` plugin with `ingressPolicy: same-bridge`.
    pub isolate: bool,
    pub bridge: String,
}

/// Names that are `--network` modes, not networks.
pub const RESERVED: [&str; 3] = ["none", "host", "default"];

pub fn parse_network_name(name: &str) -> Result<NetworkName, DefinitionError> {
    if RESERVED.contains(&name) {
        return Err(DefinitionError::Reserved {
            name: name.to_owned(),
        });
    }
    if name.len() > 64 {
        return Err(DefinitionError::Name {
            name: name.to_owned(),
        });
    }
    NetworkName::try_from(name).map_err(|_| DefinitionError::Name {
        name: name.to_owned(),
    })
}

impl NetworkRequest {
    pub fn validate(self) -> Result<NetworkSpec, DefinitionError> {
        let name = parse_network_name(&self.name)?;
        let driver = match self.driver.as_deref() {
            None | Some("bridge") => Driver::Bridge,
            Some("veth") => Driver::Veth,
            Some(other) => {
                return Err(DefinitionError::Driver {
                    input: other.to_owned(),
                });
            }
        };
        let (mut subnet_v4, mut subnet_v6) = (None, None);
        for input in &self.subnets {
            let net = parse_subnet(input)?;
            let clash = match net {
                IpNetwork::V4(v4) => subnet_v4.replace(v4).map(IpNetwork::V4),
                IpNetwork::V6(v6) => subnet_v6.replace(v6).map(IpNetwork::V6),
            };
            if let Some(first) = clash {
                return Err(DefinitionError::SubnetFamily { first, second: net });
            }
        }
        let gateway = match self.gateway.as_deref() {
            None => None,
            Some(g) => {
                let ip: IpAddr = g.parse().map_err(|_| DefinitionError::Gateway {
                    input: g.to_owned(),
                })?;
                let inside = match ip {
                    IpAddr::V4(v4) => subnet_v4.is_some_and(|s| s.contains(v4)),
                    IpAddr::V6(v6) => subnet_v6.is_some_and(|s| s.contains(v6)),
                };
                if subnet_v4.is_none() && subnet_v6.is_none() {
                    return Err(DefinitionError::GatewayWithoutSubnet);
                }
                if !inside {
                    return Err(DefinitionError::GatewayOutside {
                        gateway: ip,
                        subnets: self.subnets.join(", "),
                    });
                }
                Some(ip)
            }
        };
        if let Some(mtu) = self.mtu {
            if !(68..=65535).contains(&mtu) {
                return Err(DefinitionError::Mtu { mtu });
            }
        }
        let bridge = match (driver, self.bridge) {
            (Driver::Veth, Some(_)) => return Err(DefinitionError::BridgeWithVeth),
            (_, Some(b)) => {
                if berth_cni::IfName::try_from(b.as_str()).is_err() {
                    return Err(DefinitionError::Bridge { input: b });
                }
                b
            }
            (_, None) => format!("br-{:012x}", fnv1a(name.as_str().as_bytes()) >> 16),
        };
        if self.isolate && driver == Driver::Veth {
            return Err(DefinitionError::IsolateWithVeth);
        }
        Ok(NetworkSpec {
            ipv6: self.ipv6 || subnet_v6.is_some(),
            name,
            driver,
            subnet_v4,
            subnet_v6,
            gateway,
            internal: self.internal,
            mtu: self.mtu,
            isolate: self.isolate,
            bridge,
        })
    }
}

fn parse_subnet(input: &str) -> Result<IpNetwork, DefinitionError> {
    let bad = || DefinitionError::Subnet {
        input: input.to_owned(),
    };
    let net: IpNetwork = input.parse().map_err(|_| bad())?;
    if !input.contains('/') || net.ip() != net.network() {
        return Err(bad());
    }
    let too_small = match net {
        IpNetwork::V4(n) => n.prefix() > 30,
        IpNetwork::V6(n) => n.prefix() > 126,
    };
    if too_small {
        return Err(DefinitionError::SubnetTooSmall {
            input: input.to_owned(),
        });
    }
    Ok(net)
}

/// FNV-1a, 64 bits: stable short names (bridges, ULAs) derived from a network name.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Whether two subnets share an address.
pub fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    match (a, b) {
        (IpNetwork::V4(a), IpNetwork::V4(b)) => a.contains(b.network()) || b.contains(a.network()),
        (IpNetwork::V6(a), IpNetwork::V6(b)) => a.contains(b.network()) || b.contains(a.network()),
        _ => false,
    }
}

impl NetworkSpec {
    /// The default network: `berth0` on `subnet`, masquerading, hairpin.
    pub fn default_network(name: NetworkName, bridge: String, subnet: Ipv4Network) -> NetworkSpec {
        NetworkSpec {
            name,
            driver: Driver::Bridge,
            subnet_v4: Some(subnet),
            subnet_v6: None,
            gateway: None,
            ipv6: false,
            internal: false,
            mtu: None,
            isolate: false,
            bridge,
        }
    }

    pub fn subnets(&self) -> Vec<IpNetwork> {
        self.subnet_v4
            .map(IpNetwork::V4)
            .into_iter()
            .chain(self.subnet_v6.map(IpNetwork::V6))
            .collect()
    }

    /// Picks what was not given: an IPv4 /24 from the pool that overlaps none of `taken`
    /// (unless only IPv6 was asked for), and a ULA /64 derived from the name with `--ipv6`.
    pub fn fill_subnets(&mut self, taken: &[IpNetwork]) -> Result<(), DefinitionError> {
        if self.subnet_v4.is_none() && self.subnet_v6.is_none() {
            let base = u32::from(AUTO_POOL_V4);
            let free = (0..=255u32)
                .filter_map(|i| Ipv4Network::new(Ipv4Addr::from(base + (i << 8)), 24).ok())
                .find(|n| !taken.iter().any(|t| overlaps(t, &IpNetwork::V4(*n))))
                .ok_or(DefinitionError::PoolExhausted)?;
            self.subnet_v4 = Some(free);
        }
        if self.ipv6 && self.subnet_v6.is_none() {
            // fdXX:XXXX:XXXX::/64, the 40-bit global id of RFC 4193 taken from the name's hash.
            let h = fnv1a(self.name.as_str().as_bytes());
            let word = |shift: u32| ((h >> shift) & 0xffff) as u16;
            let ip = Ipv6Addr::new(0xfd00 | (word(32) & 0xff), word(16), word(0), 0, 0, 0, 0, 0);
            self.subnet_v6 = Ipv6Network::new(ip, 64).ok();
        }
        Ok(())
    }

    /// The conflist: `loopback`, the main plugin with `host-local` (state in `ipam_dir`), then
    /// `portmap` and the isolating `firewall` when asked for and available.
    pub fn conflist(&self, ipam_dir: &Path, portmap: bool) -> Value {
        let mut ranges = Vec::new();
        let mut routes = Vec::new();
        if let Some(v4) = self.subnet_v4 {
            let mut range = json!({"subnet": v4.to_string()});
            if let (Some(IpAddr::V4(gw)), Some(r)) = (self.gateway, range.as_object_mut()) {
                r.insert("gateway".into(), gw.to_string().into());
            }
            ranges.push(json!([range]));
            routes.push(json!({"dst": "0.0.0.0/0"}));
        }
        if let Some(v6) = self.subnet_v6 {
            let mut range = json!({"subnet": v6.to_string()});
            if let (Some(IpAddr::V6(gw)), Some(r)) = (self.gateway, range.as_object_mut()) {
                r.insert("gateway".into(), gw.to_string().into());
            }
            ranges.push(json!([range]));
            routes.push(json!({"dst": "::/0"}));
        }
        let mut ipam = json!({
            "type": "host-local",
            "ranges": ranges,
            "dataDir": ipam_dir.to_string_lossy(),
        });
        if !self.internal {
            if let Some(i) = ipam.as_object_mut() {
                i.insert("routes".into(), Value::Array(routes));
            }
        }
        let mut main = Map::new();
        match self.driver {
            Driver::Bridge => {
                main.insert("type".into(), "bridge".into());
                main.insert("bridge".into(), self.bridge.clone().into());
                main.insert("isGateway".into(), true.into());
                main.insert("ipMasq".into(), (!self.internal).into());
                main.insert("hairpinMode".into(), true.into());
                main.insert("capabilities".into(), json!({"mac": true, "ips": true}));
            }
            Driver::Veth => {
                main.insert("type".into(), "veth".into());
                main.insert("ipMasq".into(), (!self.internal).into());
                main.insert("capabilities".into(), json!({"ips": true}));
            }
        }
        if let Some(mtu) = self.mtu {
            main.insert("mtu".into(), mtu.into());
        }
        main.insert("ipam".into(), ipam);
        let mut plugins = vec![json!({"type": "loopback"}), Value::Object(main)];
        if portmap {
            plugins.push(json!({
                "type": "portmap",
                "capabilities": {"portMappings": true},
                "snat": true,
            }));
        }
        if self.isolate {
            plugins.push(json!({"type": "firewall", "ingressPolicy": "same-bridge"}));
        }
        json!({
            "cniVersion": CNI_VERSION,
            "name": self.name.as_str(),
            "plugins": plugins,
        })
    }
}

/// What Berth reads back out of a conflist (its own or a hand-written one).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSummary {
    pub name: String,
    /// The main plugin's type (the first that is not `loopback`).
    pub driver: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    pub subnets: Vec<IpNetwork>,
    pub gateways: Vec<IpAddr>,
    /// Masquerading and a default route (not `--internal`).
    pub internal: bool,
    pub isolated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u64>,
    /// Capabilities declared by any plugin (`portMappings`, `mac`, `ips`, …).
    pub capabilities: Vec<String>,
    pub plugins: Vec<String>,
    pub file: PathBuf,
}

/// The keys of a plugin entry the summary reads, typed and matched as the plugins match them
/// (Go's rule, [`gojson`]), so a hand-written `"IPMasq"` reads as the plugin will read it.
/// Values of unexpected types read as absent: a summary never refuses a list.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PluginKeys {
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    bridge: Option<Value>,
    #[serde(default)]
    ip_masq: Option<Value>,
    #[serde(default)]
    mtu: Option<Value>,
    #[serde(default)]
    capabilities: Map<String, Value>,
    #[serde(default)]
    ipam: Option<IpamKeys>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IpamKeys {
    #[serde(default)]
    subnet: Option<Value>,
    #[serde(default)]
    gateway: Option<Value>,
    #[serde(default)]
    ranges: Vec<Vec<RangeKeys>>,
    #[serde(default)]
    routes: Vec<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RangeKeys {
    #[serde(default)]
    subnet: Option<Value>,
    #[serde(default)]
    gateway: Option<Value>,
}

impl PluginKeys {
    fn of(plugin: &Map<String, Value>) -> PluginKeys {
        gojson::from_value(&Value::Object(plugin.clone())).unwrap_or_default()
    }
}

impl NetworkSummary {
    pub fn of(list: &NetConfList, file: PathBuf) -> NetworkSummary {
        let entries: Vec<PluginKeys> = list.plugins.iter().map(PluginKeys::of).collect();
        let main = entries.iter().find(|p| p.kind != "loopback");
        let mut subnets = Vec::new();
        let mut gateways = Vec::new();
        let mut has_routes = false;
        if let Some(ipam) = main.and_then(|m| m.ipam.as_ref()) {
            let shorthand = RangeKeys {
                subnet: ipam.subnet.clone(),
                gateway: ipam.gateway.clone(),
            };
            let ranges = std::iter::once(&shorthand).chain(ipam.ranges.iter().flatten());
            for range in ranges {
                let Some(net) = range
                    .subnet
                    .as_ref()
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<IpNetwork>().ok())
                else {
                    continue;
                };
                let gw = range
                    .gateway
                    .as_ref()
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<IpAddr>().ok())
                    .or_else(|| first_host(&net));
                subnets.push(net);
                gateways.extend(gw);
            }
            has_routes = !ipam.routes.is_empty();
        }
        let masq = main
            .and_then(|m| m.ip_masq.as_ref())
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mut capabilities: Vec<String> = entries
            .iter()
            .flat_map(|p| {
                p.capabilities
                    .iter()
                    .filter(|(_, on)| on.as_bool() == Some(true))
                    .map(|(cap, _)| cap.clone())
            })
            .collect();
        capabilities.sort();
        capabilities.dedup();
        let plugins: Vec<String> = entries.iter().map(|p| p.kind.clone()).collect();
        NetworkSummary {
            name: list.name.as_str().to_owned(),
            driver: main.map(|m| m.kind.clone()).unwrap_or_default(),
            bridge: main
                .and_then(|m| m.bridge.as_ref())
                .and_then(Value::as_str)
                .map(str::to_owned),
            subnets,
            gateways,
            internal: !masq && !has_routes,
            isolated: plugins.iter().any(|p| p == "firewall"),
            mtu: main.and_then(|m| m.mtu.as_ref()).and_then(Value::as_u64),
            capabilities,
            plugins,
            file,
        }
    }

    pub fn has_capability(&self, cap: &str) -> bool {
        self.capabilities.iter().any(|c| c == cap)
    }
}

/// host-local's default gateway: the subnet's first address.
fn first_host(net: &IpNetwork) -> Option<IpAddr> {
    match net {
        IpNetwork::V4(n) => Some(IpAddr::V4(Ipv4Addr::from(
            u32::from(n.network()).checked_add(1)?,
        ))),
        IpNetwork::V6(n) => Some(IpAddr::V6(Ipv6Addr::from(
            u128::from(n.network()).checked_add(1)?,
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(name: &str) -> NetworkRequest {
        NetworkRequest {
            name: name.into(),
            ..NetworkRequest::default()
        }
    }

    fn summary(spec: &NetworkSpec, portmap: bool) -> NetworkSummary {
        let bytes = serde_json::to_vec(&spec.conflist(Path::new("/ipam"), portmap)).unwrap();
        NetworkSummary::of(&NetConfList::from_bytes(&bytes).unwrap(), "/f".into())
    }

    #[test]
    fn bridge_with_picked_subnet_round_trips() {
        let mut spec = request("web").validate().unwrap();
        assert_eq!(spec.bridge.len(), 15);
        assert!(spec.bridge.starts_with("br-"));
        let taken = [
            "10.211.0.0/24".parse().unwrap(),
            "10.210.0.0/16".parse().unwrap(),
        ];
        spec.fill_subnets(&taken).unwrap();
        assert_eq!(spec.subnet_v4.unwrap().to_string(), "10.211.1.0/24");
        let s = summary(&spec, true);
        assert_eq!(s.driver, "bridge");
        assert_eq!(s.bridge.as_deref(), Some(spec.bridge.as_str()));
        assert_eq!(
            s.subnets,
            vec!["10.211.1.0/24".parse::<IpNetwork>().unwrap()]
        );
        assert_eq!(s.gateways, vec!["10.211.1.1".parse::<IpAddr>().unwrap()]);
        assert!(!s.internal && !s.isolated);
        assert_eq!(s.capabilities, ["ips", "mac", "portMappings"]);
        assert_eq!(s.plugins, ["loopback", "bridge", "portmap"]);
    }

    #[test]
    fn dual_stack_internal_isolated_with_gateway_and_mtu() {
        let mut spec = NetworkRequest {
            subnets: vec!["198.18.7.0/24".into(), "fd42:b347:7::/64".into()],
            gateway: Some("198.18.7.254".into()),
            internal: true,
            isolate: true,
            mtu: Some(1400),
            bridge: Some("lab0".into()),
            ..request("lab")
        }
        .validate()
        .unwrap();
        spec.fill_subnets(&[]).unwrap();
        let s = summary(&spec, false);
        assert_eq!(s.subnets.len(), 2);
        assert_eq!(s.gateways[0], "198.18.7.254".parse::<IpAddr>().unwrap());
        assert!(s.internal && s.isolated);
        assert_eq!(s.mtu, Some(1400));
        assert_eq!(s.plugins, ["loopback", "bridge", "firewall"]);
    }

    #[test]
    fn ipv6_only_flag_derives_a_ula() {
        let mut spec = NetworkRequest {
            ipv6: true,
            driver: Some("veth".into()),
            ..request("six")
        }
        .validate()
        .unwrap();
        spec.fill_subnets(&[]).unwrap();
        let v6 = spec.subnet_v6.unwrap();
        assert_eq!(v6.prefix(), 64);
        assert_eq!(v6.ip().segments()[0] & 0xff00, 0xfd00);
        assert!(spec.subnet_v4.is_some());
        assert_eq!(summary(&spec, false).driver, "veth");
    }

    #[test]
    fn bad_definitions() {
        let cases: Vec<NetworkRequest> = vec![
            request("none"),
            request("bad/name"),
            request(&"x".repeat(65)),
            NetworkRequest {
                driver: Some("macvlan".into()),
                ..request("n")
            },
            NetworkRequest {
                subnets: vec!["10.0.0.1/24".into()],
                ..request("n")
            },
            NetworkRequest {
                subnets: vec!["10.0.0.0".into()],
                ..request("n")
            },
            NetworkRequest {
                subnets: vec!["10.0.0.0/31".into()],
                ..request("n")
            },
            NetworkRequest {
                subnets: vec!["10.0.0.0/24".into(), "10.1.0.0/24".into()],
                ..request("n")
            },
            NetworkRequest {
                gateway: Some("10.0.0.1".into()),
                ..request("n")
            },
            NetworkRequest {
                subnets: vec!["10.0.0.0/24".into()],
                gateway: Some("10.9.0.1".into()),
                ..request("n")
            },
            NetworkRequest {
                mtu: Some(20),
                ..request("n")
            },
            NetworkRequest {
                bridge: Some("way-too-long-bridge".into()),
                ..request("n")
            },
            NetworkRequest {
                driver: Some("veth".into()),
                isolate: true,
                ..request("n")
            },
        ];
        for case in cases {
            assert!(case.clone().validate().is_err(), "{case:?}");
        }
    }

    #[test]
    fn overlap() {
        let a: IpNetwork = "10.0.0.0/16".parse().unwrap();
        assert!(overlaps(&a, &"10.0.5.0/24".parse().unwrap()));
        assert!(!overlaps(&a, &"10.1.0.0/24".parse().unwrap()));
        assert!(!overlaps(&a, &"fd00::/64".parse().unwrap()));
    }
}
