//! The plugin's configuration: the reference `portmap` keys on the wire, the
//! `runtimeConfig.portMappings` capability, and the validated [`Config`].

use std::net::IpAddr;

use berth_cni::{CmdArgs, NetConf};
use berth_firewall::{
    BackendKind, DEFAULT_MARK_BIT, MAX_MARK_BIT, MarkSpec, Owner, PortMap, PortMapping,
    conditions_look_like_iptables,
};
use serde::Deserialize;

/// The `portmap` keys of a network configuration (beside the spec's well-known ones).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortmapConf {
    /// Masquerade hairpin and localhost connections; default true.
    #[serde(default)]
    pub snat: Option<bool>,
    #[serde(default)]
    pub masq_all: bool,
    /// Signed on the wire so a negative bit gets a clear message rather than a decode error.
    #[serde(default)]
    pub mark_masq_bit: Option<i64>,
    #[serde(default)]
    pub external_set_mark_chain: Option<String>,
    #[serde(default, rename = "conditionsV4")]
    pub conditions_v4: Option<Vec<String>>,
    #[serde(default, rename = "conditionsV6")]
    pub conditions_v6: Option<Vec<String>>,
    /// `iptables` or `nftables`; unset: what the options imply, else what the host uses.
    #[serde(default)]
    pub backend: Option<String>,
}

/// One `runtimeConfig.portMappings` entry (CONVENTIONS.md), plus port ranges as netavark
/// names them (`range`) or as an end port (`hostPortEnd`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireMapping {
    #[serde(default)]
    pub host_port: i64,
    #[serde(default)]
    pub container_port: i64,
    #[serde(default)]
    pub protocol: String,
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
    #[serde(default)]
    pub range: Option<i64>,
    #[serde(default)]
    pub host_port_end: Option<i64>,
}

/// Errors of the `config` module: all of them are the configuration's fault (code 7).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("cannot specify externalSetMarkChain and markMasqBit")]
    MarkAndChain,
    #[error("markMasqBit {bit} is out of range (0-{MAX_MARK_BIT})")]
    MarkBit { bit: i64 },
    #[error("unknown backend {backend:?} (expected iptables or nftables)")]
    Backend { backend: String },
    #[error("{requested} backend was requested but configuration contains {other}-specific options [{}]", .options.join(" "))]
    WrongBackend {
        requested: BackendKind,
        other: BackendKind,
        options: Vec<&'static str>,
    },
    #[error("configuration mixes iptables-specific options [{}] and nftables-specific options [{}]", .iptables.join(" "), .nftables.join(" "))]
    MixedBackends {
        iptables: Vec<&'static str>,
        nftables: Vec<&'static str>,
    },
    #[error("port mapping {index}: hostIP {value:?} is not an IP address")]
    HostIp { index: usize, value: String },
}

/// The validated configuration of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `None`: detect (iptables if the host uses it, else nftables).
    pub backend: Option<BackendKind>,
    /// The firewall request, with the container's addresses from the previous result (empty
    /// when there is none, as on a DEL without `prevResult`).
    pub request: PortMap,
}

impl Config {
    pub fn new(
        conf: &NetConf<PortmapConf>,
        args: &CmdArgs,
        mappings: &[WireMapping],
    ) -> Result<Config, ConfigError> {
        let p = &conf.plugin;
        if p.mark_masq_bit.is_some() && p.external_set_mark_chain.is_some() {
            return Err(ConfigError::MarkAndChain);
        }
        let mark = match (&p.external_set_mark_chain, p.mark_masq_bit) {
            (Some(chain), _) => MarkSpec::ExternalChain(chain.clone()),
            (None, Some(bit)) => MarkSpec::Bit(
                u8::try_from(bit)
                    .ok()
                    .filter(|b| *b <= MAX_MARK_BIT)
                    .ok_or(ConfigError::MarkBit { bit })?,
            ),
            (None, None) => MarkSpec::Bit(DEFAULT_MARK_BIT),
        };
        let backend = backend(p)?;
        let mut parsed = Vec::with_capacity(mappings.len());
        for (index, m) in mappings.iter().enumerate() {
            let host_ip = match m.host_ip.as_deref() {
                None | Some("") => None,
                Some(text) => Some(text.parse::<IpAddr>().map_err(|_| ConfigError::HostIp {
                    index,
                    value: text.to_owned(),
                })?),
            };
            parsed.push(PortMapping {
                protocol: m.protocol.clone(),
                host_port: m.host_port,
                container_port: m.container_port,
                range: m.range,
                host_port_end: m.host_port_end,
                host_ip,
            });
        }
        let container_ips = conf
            .prev_result
            .as_ref()
            .map(|r| r.container_ips(args.ifname.as_str()))
            .unwrap_or_default();
        Ok(Config {
            backend,
            request: PortMap {
                owner: Owner::new(
                    conf.name.as_str(),
                    args.container_id.as_str(),
                    args.ifname.as_str(),
                ),
                mappings: parsed,
                container_ips,
                snat: p.snat.unwrap_or(true),
                masq_all: p.masq_all,
                mark,
                conditions_v4: p.conditions_v4.clone().unwrap_or_default(),
                conditions_v6: p.conditions_v6.clone().unwrap_or_default(),
            },
        })
    }
}

/// The backend the options call for. As in the reference: conditions starting with `-` or
/// `!` are iptables arguments, others nft expressions; `externalSetMarkChain` is iptables.
fn backend(p: &PortmapConf) -> Result<Option<BackendKind>, ConfigError> {
    let mut ipt: Vec<&'static str> = Vec::new();
    let mut nft: Vec<&'static str> = Vec::new();
    if p.external_set_mark_chain.is_some() {
        ipt.push("externalSetMarkChain");
    }
    for (key, conditions) in [
        ("conditionsV4", &p.conditions_v4),
        ("conditionsV6", &p.conditions_v6),
    ] {
        match conditions
            .as_deref()
            .and_then(conditions_look_like_iptables)
        {
            Some(true) => ipt.push(key),
            Some(false) => nft.push(key),
            None => {}
        }
    }
    let requested = match p.backend.as_deref() {
        None | Some("") => None,
        Some("iptables") => Some(BackendKind::Iptables),
        Some("nftables") => Some(BackendKind::Nftables),
        Some(other) => {
            return Err(ConfigError::Backend {
                backend: other.to_owned(),
            });
        }
    };
    match requested {
        Some(BackendKind::Iptables) if !nft.is_empty() => Err(ConfigError::WrongBackend {
            requested: BackendKind::Iptables,
            other: BackendKind::Nftables,
            options: nft,
        }),
        Some(BackendKind::Nftables) if !ipt.is_empty() => Err(ConfigError::WrongBackend {
            requested: BackendKind::Nftables,
            other: BackendKind::Iptables,
            options: ipt,
        }),
        Some(kind) => Ok(Some(kind)),
        None if !ipt.is_empty() && !nft.is_empty() => Err(ConfigError::MixedBackends {
            iptables: ipt,
            nftables: nft,
        }),
        None if !ipt.is_empty() => Ok(Some(BackendKind::Iptables)),
        None if !nft.is_empty() => Ok(Some(BackendKind::Nftables)),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_cni::{Command, ContainerId, IfName};
    use serde_json::json;

    fn args() -> CmdArgs {
        CmdArgs::new(
            Command::Add,
            ContainerId::try_from("ctr1").unwrap(),
            Some("/run/netns/x".into()),
            IfName::try_from("eth0").unwrap(),
            vec![],
        )
    }

    fn conf(extra: serde_json::Value) -> NetConf<PortmapConf> {
        let mut base = json!({"cniVersion": "1.0.0", "name": "net1", "type": "portmap",
            "prevResult": {"cniVersion": "1.0.0",
                "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
                "ips": [{"address": "10.88.0.1/16", "interface": 0},
                        {"address": "10.88.0.5/16", "interface": 2},
                        {"address": "fd00::5/64"}]}});
        for (k, v) in extra.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn defaults_and_container_ips() {
        let c = Config::new(&conf(json!({})), &args(), &[]).unwrap();
        assert_eq!(c.backend, None);
        assert!(c.request.snat);
        assert_eq!(c.request.mark, MarkSpec::Bit(13));
        let ips: Vec<String> = c
            .request
            .container_ips
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ips, ["10.88.0.5/16", "fd00::5/64"]);
        assert_eq!(c.request.owner.network, "net1");
    }

    #[test]
    fn backend_follows_the_options() {
        let cases = [
            (
                json!({"conditionsV4": ["-s", "10.0.0.0/8"]}),
                Ok(Some(BackendKind::Iptables)),
            ),
            (
                json!({"conditionsV4": ["ip saddr 10.0.0.0/8"]}),
                Ok(Some(BackendKind::Nftables)),
            ),
            (
                json!({"backend": "nftables"}),
                Ok(Some(BackendKind::Nftables)),
            ),
            (
                json!({"externalSetMarkChain": "KUBE-MARK-MASQ"}),
                Ok(Some(BackendKind::Iptables)),
            ),
        ];
        for (extra, want) in cases {
            let got = Config::new(&conf(extra.clone()), &args(), &[]).map(|c| c.backend);
            assert_eq!(got, want, "{extra}");
        }
        let err = Config::new(
            &conf(json!({"backend": "iptables", "conditionsV4": ["aaa"], "conditionsV6": ["ccc"]})),
            &args(),
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "iptables backend was requested but configuration contains nftables-specific options [conditionsV4 conditionsV6]"
        );
        let err = Config::new(
            &conf(json!({"backend": "nftables", "externalSetMarkChain": "X", "conditionsV4": ["-a", "b"]})),
            &args(),
            &[],
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "nftables backend was requested but configuration contains iptables-specific options [externalSetMarkChain conditionsV4]"
        );
        assert!(matches!(
            Config::new(&conf(json!({"backend": "firewalld"})), &args(), &[]),
            Err(ConfigError::Backend { .. })
        ));
    }

    #[test]
    fn mark_options() {
        assert_eq!(
            Config::new(
                &conf(json!({"markMasqBit": 14, "externalSetMarkChain": "X"})),
                &args(),
                &[]
            ),
            Err(ConfigError::MarkAndChain)
        );
        assert_eq!(
            Config::new(&conf(json!({"markMasqBit": 32})), &args(), &[]),
            Err(ConfigError::MarkBit { bit: 32 })
        );
        let c = Config::new(&conf(json!({"markMasqBit": 0})), &args(), &[]).unwrap();
        assert_eq!(c.request.mark, MarkSpec::Bit(0));
    }

    #[test]
    fn mappings_parse_host_ips() {
        let wire: Vec<WireMapping> = serde_json::from_value(json!([
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "192.0.2.1"},
            {"hostPort": 9000, "containerPort": 9000, "protocol": "udp", "range": 3, "hostIP": ""}
        ]))
        .unwrap();
        let c = Config::new(&conf(json!({})), &args(), &wire).unwrap();
        assert_eq!(
            c.request.mappings[0].host_ip,
            Some("192.0.2.1".parse().unwrap())
        );
        assert_eq!(c.request.mappings[1].range, Some(3));
        let bad: Vec<WireMapping> =
            serde_json::from_value(json!([{"hostPort": 1, "containerPort": 1, "hostIP": "x"}]))
                .unwrap();
        assert!(matches!(
            Config::new(&conf(json!({})), &args(), &bad),
            Err(ConfigError::HostIp { index: 0, .. })
        ));
    }
}
