//! The plugin's configuration keys: the wire struct as it arrives on stdin, and the validated
//! [`Config`] the rest of the plugin works with.
//!
//! Host mode (no `peer`) takes ptp's keys: `ipMasq`, `mtu`, plus our `ipMasqBackend`.
//! Container-to-container mode is selected by `peer`; its container end takes its addresses
//! from `ipam` or from the static `addresses`, the peer end from `peer.addresses`.

use std::path::PathBuf;

use berth_cni::{Dns, IfName, NetConf};
use berth_firewall::{BackendKind, MasqKeys};
use ipnetwork::IpNetwork;
use serde::Deserialize;

/// The kernel's minimum MTU for an Ethernet device (IPv4 needs 68) and `ETH_MAX_MTU`.
const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65535;

/// The plugin's own keys, flattened beside the spec's well-known ones in [`NetConf`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
///
/// Host mode's `ipMasq` and `ipMasqBackend` are berth-firewall's `MasqKeys`, read beside these.
pub struct VethConf {
    /// Both ends; `0` or absent keeps the kernel's default (1500), as in ptp.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Container-to-container mode: where the other end goes.
    #[serde(default)]
    pub peer: Option<PeerConf>,
    /// Container-to-container mode without `ipam`: static addresses of the container end.
    #[serde(default)]
    pub addresses: Vec<IpNetwork>,
}

/// The `peer` object. It is ours alone, so unknown keys are refused here (a typo such as
/// `ifnmae` would otherwise silently name the peer after CNI_IFNAME; other casings of `ifname`
/// match it, as Go's rule has it).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerConf {
    /// The other container's network namespace (a `/run/netns/<name>` or `/proc/<pid>/ns/net`).
    pub netns: PathBuf,
    /// The peer end's name; CNI_IFNAME when absent.
    #[serde(default)]
    pub ifname: Option<IfName>,
    /// Static addresses (with prefix) of the peer end.
    #[serde(default)]
    pub addresses: Vec<IpNetwork>,
}

/// Errors of the `config` module: all of them are the configuration's fault (code 7).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{first} and {second} cannot be combined: {why}")]
    Combined {
        first: &'static str,
        second: &'static str,
        why: &'static str,
    },
    #[error(
        "ipam is required without peer: host mode takes the container's addresses and gateway from IPAM"
    )]
    HostModeNeedsIpam,
    #[error("addresses is only valid with peer: host mode takes its addresses from ipam")]
    AddressesWithoutPeer,
    #[error("ipam.type is missing")]
    IpamWithoutType,
    #[error("{reason}")]
    Masq { reason: String },
    #[error("mtu {mtu} is out of range ({}..={})", MTU_RANGE.start(), MTU_RANGE.end())]
    Mtu { mtu: u32 },
    #[error("peer.netns {path:?} must be an absolute path")]
    PeerNetnsNotAbsolute { path: PathBuf },
    #[error("address {address} is both in addresses and in peer.addresses")]
    SameAddressBothEnds { address: IpNetwork },
    #[error("address {address} is listed twice in {key}")]
    DuplicateAddress {
        address: IpNetwork,
        key: &'static str,
    },
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `None`: the kernel's default.
    pub mtu: Option<u32>,
    /// `dns` of the configuration, when it sets anything (it then wins over IPAM's, as in ptp).
    pub dns: Option<Dns>,
    pub mode: Mode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// The other end stays in the plugin's (host) namespace.
    Host(Host),
    /// The other end goes into another container's namespace.
    Peer(Peer),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The IPAM plugin (`ipam.type`): host mode needs one, for the addresses and gateways.
    pub ipam: String,
    pub masq: Option<Masq>,
}

/// `ipMasq: true`, with the requested backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Masq {
    pub backend: Option<BackendKind>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The IPAM plugin of the container end, if any.
    pub ipam: Option<String>,
    pub netns: PathBuf,
    /// `None`: the same name as the container end (CNI_IFNAME).
    pub ifname: Option<IfName>,
    pub addresses: Vec<IpNetwork>,
    /// Static addresses of the container end (only without ipam).
    pub own_addresses: Vec<IpNetwork>,
}

impl Config {
    /// Validates the plugin keys together with the spec's `ipam` and `dns`.
    pub fn from_netconf(conf: &NetConf<VethConf>) -> Result<Config, ConfigError> {
        let wire = &conf.plugin;
        let ipam = match &conf.ipam {
            Some(ipam) if ipam.kind.is_empty() => return Err(ConfigError::IpamWithoutType),
            Some(ipam) => Some(ipam.kind.clone()),
            None => None,
        };
        let mtu = match wire.mtu {
            None | Some(0) => None,
            Some(mtu) if MTU_RANGE.contains(&mtu) => Some(mtu),
            Some(mtu) => return Err(ConfigError::Mtu { mtu }),
        };
        let dns = conf.dns.clone().filter(|d| !d.is_empty());
        let masq_err = |reason: String| ConfigError::Masq { reason };
        let masq = conf
            .keys::<MasqKeys>()
            .map_err(|e| masq_err(e.msg))?
            .masquerade()
            .map_err(|e| masq_err(e.to_string()))?
            .map(|backend| Masq { backend });
        let mode = match &wire.peer {
            None => {
                if !wire.addresses.is_empty() {
                    return Err(ConfigError::AddressesWithoutPeer);
                }
                Mode::Host(Host {
                    ipam: ipam.ok_or(ConfigError::HostModeNeedsIpam)?,
                    masq,
                })
            }
            Some(peer) => Mode::Peer(validate_peer(wire, peer, ipam, masq.is_some())?),
        };
        Ok(Config { mtu, dns, mode })
    }

    /// The IPAM plugin, in either mode.
    pub fn ipam(&self) -> Option<&str> {
        match &self.mode {
            Mode::Host(host) => Some(&host.ipam),
            Mode::Peer(peer) => peer.ipam.as_deref(),
        }
    }
}

fn validate_peer(
    wire: &VethConf,
    peer: &PeerConf,
    ipam: Option<String>,
    ip_masq: bool,
) -> Result<Peer, ConfigError> {
    if ip_masq {
        return Err(ConfigError::Combined {
            first: "peer",
            second: "ipMasq",
            why: "a container-to-container link has no host side to masquerade from",
        });
    }
    if ipam.is_some() && !wire.addresses.is_empty() {
        return Err(ConfigError::Combined {
            first: "addresses",
            second: "ipam",
            why: "the container end takes its addresses from one of them",
        });
    }
    if !peer.netns.is_absolute() {
        return Err(ConfigError::PeerNetnsNotAbsolute {
            path: peer.netns.clone(),
        });
    }
    no_duplicates(&wire.addresses, "addresses")?;
    no_duplicates(&peer.addresses, "peer.addresses")?;
    if let Some(address) = wire
        .addresses
        .iter()
        .find(|a| peer.addresses.iter().any(|p| p.ip() == a.ip()))
    {
        return Err(ConfigError::SameAddressBothEnds { address: *address });
    }
    Ok(Peer {
        ipam,
        netns: peer.netns.clone(),
        ifname: peer.ifname.clone(),
        addresses: peer.addresses.clone(),
        own_addresses: wire.addresses.clone(),
    })
}

fn no_duplicates(list: &[IpNetwork], key: &'static str) -> Result<(), ConfigError> {
    for (i, a) in list.iter().enumerate() {
        if list[..i].iter().any(|b| b.ip() == a.ip()) {
            return Err(ConfigError::DuplicateAddress { address: *a, key });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use berth_cni::plugin::parse_conf;
    use serde_json::{Value, json};

    fn parse(extra: Value) -> Result<Config, ConfigError> {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "net", "type": "veth"});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        let conf: NetConf<VethConf> = parse_conf(conf.to_string().as_bytes()).unwrap();
        Config::from_netconf(&conf)
    }

    fn ipam() -> Value {
        json!({"type": "host-local", "subnet": "198.18.0.0/24"})
    }

    #[test]
    fn ptp_config_is_host_mode() {
        let c = parse(json!({"ipMasq": true, "mtu": 1400, "ipam": ipam(),
            "dns": {"nameservers": ["198.18.0.1"]}, "someRuntimeKey": {"x": 1}}))
        .unwrap();
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(c.ipam(), Some("host-local"));
        assert_eq!(c.dns.unwrap().nameservers, ["198.18.0.1"]);
        assert_eq!(
            c.mode,
            Mode::Host(Host {
                ipam: "host-local".into(),
                masq: Some(Masq { backend: None })
            })
        );
        let c = parse(
            json!({"ipMasq": true, "ipMasqBackend": "nftables", "ipam": ipam(),
            "mtu": 0, "dns": {}}),
        )
        .unwrap();
        assert_eq!(c.mtu, None);
        assert_eq!(c.dns, None);
        assert_eq!(
            c.mode,
            Mode::Host(Host {
                ipam: "host-local".into(),
                masq: Some(Masq {
                    backend: Some(BackendKind::Nftables)
                })
            })
        );
    }

    #[test]
    fn peer_mode_with_ipam_or_static_addresses() {
        let c = parse(json!({"ipam": ipam(), "peer": {"netns": "/run/netns/b",
            "ifname": "eth1", "addresses": ["198.18.0.2/30"]}}))
        .unwrap();
        let Mode::Peer(p) = c.mode else {
            panic!("peer mode expected")
        };
        assert_eq!(p.ifname.unwrap().as_str(), "eth1");
        assert_eq!(p.addresses, ["198.18.0.2/30".parse::<IpNetwork>().unwrap()]);
        let c = parse(json!({"addresses": ["198.18.0.1/30", "fd42:b347::1/64"],
            "peer": {"netns": "/run/netns/b"}}))
        .unwrap();
        let Mode::Peer(p) = c.mode else {
            panic!("peer mode expected")
        };
        assert_eq!(p.own_addresses.len(), 2);
        assert!(p.ifname.is_none());
        // A bare link (addresses configured later, e.g. by a routing daemon) is allowed.
        assert!(parse(json!({"peer": {"netns": "/run/netns/b"}})).is_ok());
    }

    #[test]
    fn cross_field_errors_name_both_fields() {
        let cases = [
            (
                json!({"ipMasq": true, "ipam": ipam(), "peer": {"netns": "/run/netns/b"}}),
                ["peer", "ipMasq"],
            ),
            (
                json!({"ipam": ipam(), "addresses": ["198.18.0.1/30"],
                    "peer": {"netns": "/run/netns/b"}}),
                ["addresses", "ipam"],
            ),
            (
                json!({"ipam": ipam(), "addresses": ["198.18.0.1/30"]}),
                ["addresses", "peer"],
            ),
            (json!({}), ["ipam", "peer"]),
            (
                json!({"addresses": ["198.18.0.1/30"],
                    "peer": {"netns": "/run/netns/b", "addresses": ["198.18.0.1/30"]}}),
                ["addresses", "peer.addresses"],
            ),
        ];
        for (conf, fields) in cases {
            let msg = parse(conf.clone()).unwrap_err().to_string();
            for field in fields {
                assert!(msg.contains(field), "{conf}: {msg:?} does not name {field}");
            }
        }
    }

    #[test]
    fn single_field_errors() {
        assert_eq!(
            parse(json!({"ipam": ipam(), "mtu": 67})),
            Err(ConfigError::Mtu { mtu: 67 })
        );
        assert_eq!(
            parse(json!({"ipam": {"type": "", "subnet": "198.18.0.0/24"}})),
            Err(ConfigError::IpamWithoutType)
        );
        assert!(matches!(
            parse(json!({"peer": {"netns": "run/netns/b"}})),
            Err(ConfigError::PeerNetnsNotAbsolute { .. })
        ));
        assert!(matches!(
            parse(json!({"addresses": ["198.18.0.1/30", "198.18.0.1/24"],
                "peer": {"netns": "/run/netns/b"}})),
            Err(ConfigError::DuplicateAddress { .. })
        ));
    }

    #[test]
    fn typos_in_peer_and_bad_values_do_not_decode() {
        let conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "veth",
            "peer": {"netns": "/run/netns/b", "ifnmae": "eth1"}});
        let err = parse_conf::<VethConf>(conf.to_string().as_bytes()).unwrap_err();
        assert!(err.msg.contains("ifnmae"), "{err}");
        // Another casing of a key is no typo: Go's rule reads it.
        let conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "veth",
            "peer": {"netns": "/run/netns/b", "ifName": "eth1"}});
        let conf = parse_conf::<VethConf>(conf.to_string().as_bytes()).unwrap();
        let peer = conf.plugin.peer.unwrap();
        assert_eq!(peer.ifname.unwrap().as_str(), "eth1");
        for bad in [
            json!({"cniVersion": "1.0.0", "name": "n", "peer": {"netns": "/x", "ifname": "a/b"}}),
            json!({"cniVersion": "1.0.0", "name": "n", "addresses": ["nope"]}),
        ] {
            assert!(parse_conf::<VethConf>(bad.to_string().as_bytes()).is_err());
        }
        // berth-firewall's MasqKeys are read beside the plugin's own keys, at validation.
        let pf = json!({"cniVersion": "1.0.0", "name": "n", "ipMasq": true, "ipMasqBackend": "pf",
            "ipam": {"type": "host-local"}});
        let conf = parse_conf::<VethConf>(pf.to_string().as_bytes()).unwrap();
        let err = Config::from_netconf(&conf).unwrap_err();
        assert!(err.to_string().contains("ipMasqBackend \"pf\""), "{err}");
    }
}
