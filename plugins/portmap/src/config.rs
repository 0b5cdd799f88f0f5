//! The plugin's configuration: the `portmap` keys and the `runtimeConfig.portMappings`
//! capability as berth-firewall types them ([`PortmapConf`], [`WireMapping`]; `berth network
//! reload` reads the same structs), and the validated [`Config`].

use berth_cni::{CmdArgs, NetConf};
use berth_firewall::{BackendKind, Owner, PortMap};

/// The `portmap` keys of a network configuration (beside the spec's well-known ones).
pub type PortmapConf = berth_firewall::PortmapKeys;
/// One `runtimeConfig.portMappings` entry.
pub type WireMapping = berth_firewall::WirePortMapping;
/// Errors of the configuration: all of them are its fault (code 7).
pub type ConfigError = berth_firewall::KeyError;

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
        let keys = &conf.plugin;
        let owner = Owner::new(
            conf.name.as_str(),
            args.container_id.as_str(),
            args.ifname.as_str(),
        );
        let container_ips = conf
            .prev_result
            .as_ref()
            .map(|r| r.container_ips(args.ifname.as_str()))
            .unwrap_or_default();
        Ok(Config {
            backend: keys.backend()?,
            request: keys.port_map(owner, mappings, container_ips)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_cni::{Command, ContainerId, IfName};
    use berth_firewall::MarkSpec;
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
        let cases: [(serde_json::Value, Option<BackendKind>); 4] = [
            (
                json!({"conditionsV4": ["-s", "10.0.0.0/8"]}),
                Some(BackendKind::Iptables),
            ),
            (
                json!({"conditionsV4": ["ip saddr 10.0.0.0/8"]}),
                Some(BackendKind::Nftables),
            ),
            (json!({"backend": "nftables"}), Some(BackendKind::Nftables)),
            (
                json!({"externalSetMarkChain": "KUBE-MARK-MASQ"}),
                Some(BackendKind::Iptables),
            ),
        ];
        for (extra, want) in cases {
            let got = Config::new(&conf(extra.clone()), &args(), &[])
                .unwrap()
                .backend;
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
            Err(ConfigError::Value { key: "backend", .. })
        ));
    }

    #[test]
    fn mark_options() {
        assert!(matches!(
            Config::new(
                &conf(json!({"markMasqBit": 14, "externalSetMarkChain": "X"})),
                &args(),
                &[]
            ),
            Err(ConfigError::MarkAndChain)
        ));
        assert!(matches!(
            Config::new(&conf(json!({"markMasqBit": 32})), &args(), &[]),
            Err(ConfigError::MarkBit { bit: 32 })
        ));
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
