//! The plugin's keys: the wire struct as it arrives on stdin, and the validated [`Config`]
//! the verbs work with. What needs the kernel (the master, its MTU) is checked in `master`.

use berth_cni::{CmdArgs, Dns, IfName, NetConf};
use berth_netlink::{Mac, MacvlanMode};
use serde::Deserialize;

/// The plugin's own keys, beside the spec's well-known ones in [`NetConf`]. Every key is
/// optional and `null` means "unset", as in the reference's Go struct.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MacvlanConf {
    /// The parent link; unset or empty: the interface of the first default route.
    #[serde(default)]
    pub master: Option<String>,
    /// `bridge` (also when unset or empty), `private`, `vepa` or `passthru`.
    #[serde(default)]
    pub mode: Option<String>,
    /// Signed, so that a negative value gets the reference's range message rather than a
    /// decoding error; `0` keeps the kernel's default (the parent's MTU).
    #[serde(default)]
    pub mtu: Option<i64>,
    #[serde(default)]
    pub mac: Option<String>,
    /// The master lives in the container's namespace (an interface moved there before).
    #[serde(default)]
    pub link_in_container: Option<bool>,
}

/// Errors of the `config` module. The reference reports all of them with code 999.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("unknown macvlan mode: {mode:?} (expected bridge, private, vepa or passthru)")]
    UnknownMode { mode: String },
    #[error("invalid MAC address {value:?} from {source_key}: {reason}")]
    Mac {
        value: String,
        source_key: &'static str,
        reason: &'static str,
    },
    #[error("master {name:?} is not a valid interface name: {reason}")]
    MasterName { name: String, reason: String },
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `None`: the interface of the first default route (in the master's namespace).
    pub master: Option<IfName>,
    pub mode: MacvlanMode,
    /// As configured (`0`: unset); its upper bound is the master's MTU, checked in `master`.
    pub mtu: i64,
    pub mac: Option<Mac>,
    pub link_in_container: bool,
    /// `ipam.type`; `None` (no `ipam`, or one without a type) makes a layer-2-only link.
    pub ipam: Option<String>,
    /// The configuration's `dns`: the result's, whatever the IPAM plugin says (as the reference).
    pub dns: Dns,
}

impl Config {
    /// Validates what ADD and CHECK need. `args` is the source of `CNI_ARGS` `MAC=`.
    pub fn for_attach(conf: &NetConf<MacvlanConf>, args: &CmdArgs) -> Result<Config, ConfigError> {
        let own = &conf.plugin;
        Ok(Config {
            master: master_name(own.master.as_deref())?,
            mode: parse_mode(own.mode.as_deref().unwrap_or(""))?,
            mtu: own.mtu.unwrap_or(0),
            mac: container_mac(conf, args)?,
            link_in_container: own.link_in_container.unwrap_or(false),
            ipam: ipam_kind(conf),
            dns: conf.dns.clone().unwrap_or_default(),
        })
    }
}

/// `ipam.type`, when there is one: DEL, STATUS and GC need nothing else, so a configuration
/// whose other keys became invalid can still be torn down.
pub fn ipam_kind<C>(conf: &NetConf<C>) -> Option<String> {
    conf.ipam
        .as_ref()
        .map(|ipam| ipam.kind.clone())
        .filter(|kind| !kind.is_empty())
}

pub fn master_name(name: Option<&str>) -> Result<Option<IfName>, ConfigError> {
    match name {
        None | Some("") => Ok(None),
        Some(name) => IfName::try_from(name)
            .map(Some)
            .map_err(|e| ConfigError::MasterName {
                name: name.to_owned(),
                reason: e.to_string(),
            }),
    }
}

/// The reference's spelling, case included (`Bridge` is refused there too).
pub fn parse_mode(mode: &str) -> Result<MacvlanMode, ConfigError> {
    Ok(match mode {
        "" | "bridge" => MacvlanMode::Bridge,
        "private" => MacvlanMode::Private,
        "vepa" => MacvlanMode::Vepa,
        "passthru" => MacvlanMode::Passthru,
        other => {
            return Err(ConfigError::UnknownMode {
                mode: other.to_owned(),
            });
        }
    })
}

pub fn mode_name(mode: MacvlanMode) -> &'static str {
    match mode {
        MacvlanMode::Bridge => "bridge",
        MacvlanMode::Private => "private",
        MacvlanMode::Vepa => "vepa",
        MacvlanMode::Passthru => "passthru",
    }
}

/// The container MAC by the reference's precedence: `runtimeConfig.mac` (the `mac`
/// capability) over `CNI_ARGS` `MAC=` over the `mac` key. Empty values do not count.
fn container_mac(conf: &NetConf<MacvlanConf>, args: &CmdArgs) -> Result<Option<Mac>, ConfigError> {
    // A runtimeConfig.mac that is not a string is not a MAC either.
    let runtime = match conf.runtime_config.get("mac") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(ConfigError::Mac {
                value: other.to_string(),
                source_key: "runtimeConfig.mac",
                reason: "not a string",
            });
        }
    };
    let candidates = [
        (runtime, "runtimeConfig.mac"),
        (args.args.get("MAC").map(str::to_owned), "CNI_ARGS MAC"),
        (conf.plugin.mac.clone(), "mac"),
    ];
    for (value, source_key) in candidates {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            return parse_mac(&value)
                .map(Some)
                .map_err(|reason| ConfigError::Mac {
                    value,
                    source_key,
                    reason,
                });
        }
    }
    Ok(None)
}

/// A 6-byte Ethernet address in any of the spellings Go's `net.ParseMAC` accepts for one
/// (`02:00:5e:00:53:01`, `02-00-5e-00-53-01`, `0200.5e00.5301`), unicast and non-zero:
/// the kernel refuses anything else on a macvlan link.
pub fn parse_mac(s: &str) -> Result<Mac, &'static str> {
    let hex = |part: &str, digits: usize| -> Result<Vec<u8>, &'static str> {
        if part.len() != digits || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("expected hexadecimal groups such as 02:00:5e:00:53:01");
        }
        (0..digits)
            .step_by(2)
            .map(|i| u8::from_str_radix(&part[i..i + 2], 16).map_err(|_| "not hexadecimal"))
            .collect()
    };
    let bytes: Vec<u8> = if s.contains('.') {
        let groups: Vec<&str> = s.split('.').collect();
        if groups.len() != 3 {
            return Err("a macvlan link needs a 6-byte Ethernet address");
        }
        groups
            .iter()
            .map(|g| hex(g, 4))
            .collect::<Result<Vec<_>, _>>()?
            .concat()
    } else {
        let sep = if s.contains('-') { '-' } else { ':' };
        let groups: Vec<&str> = s.split(sep).collect();
        if groups.len() != 6 {
            return Err("a macvlan link needs a 6-byte Ethernet address");
        }
        groups
            .iter()
            .map(|g| hex(g, 2))
            .collect::<Result<Vec<_>, _>>()?
            .concat()
    };
    let mac: Mac = bytes
        .try_into()
        .map_err(|_| "a macvlan link needs a 6-byte Ethernet address")?;
    if mac[0] & 1 == 1 {
        return Err("multicast addresses cannot be assigned to an interface");
    }
    if mac == [0; 6] {
        return Err("the all-zero address cannot be assigned to an interface");
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use berth_cni::plugin::parse_conf;
    use berth_cni::{CniArgs, Command, ContainerId};
    use serde_json::json;

    fn netconf(extra: serde_json::Value) -> NetConf<MacvlanConf> {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "macvlan"});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        parse_conf(conf.to_string().as_bytes()).unwrap()
    }

    fn args(cni_args: &str) -> CmdArgs {
        let mut a = CmdArgs::new(
            Command::Add,
            ContainerId::try_from("c1").unwrap(),
            None,
            IfName::try_from("eth0").unwrap(),
            Vec::new(),
        );
        a.args = CniArgs::parse(cni_args).unwrap();
        a
    }

    #[test]
    fn defaults_match_the_reference() {
        let c = Config::for_attach(&netconf(json!({})), &args("")).unwrap();
        assert_eq!(c.master, None);
        assert_eq!(c.mode, MacvlanMode::Bridge);
        assert_eq!(c.mtu, 0);
        assert_eq!(c.mac, None);
        assert!(!c.link_in_container);
        assert_eq!(c.ipam, None);
        assert!(c.dns.is_empty());
        // null is unset, as in Go; an ipam object without a type is layer 2 only.
        let c = Config::for_attach(
            &netconf(json!({"master": null, "mode": "", "mtu": null, "mac": null,
                "linkInContainer": null, "ipam": {}})),
            &args(""),
        )
        .unwrap();
        assert_eq!(
            (c.master, c.mode, c.ipam),
            (None, MacvlanMode::Bridge, None)
        );
    }

    #[test]
    fn modes_are_spelled_as_in_the_reference() {
        for (s, m) in [
            ("bridge", MacvlanMode::Bridge),
            ("private", MacvlanMode::Private),
            ("vepa", MacvlanMode::Vepa),
            ("passthru", MacvlanMode::Passthru),
        ] {
            assert_eq!(parse_mode(s).unwrap(), m);
            assert_eq!(mode_name(m), s);
        }
        for bad in ["Bridge", "passthrough", "source", "foo"] {
            assert!(matches!(
                parse_mode(bad),
                Err(ConfigError::UnknownMode { .. })
            ));
        }
    }

    #[test]
    fn mac_precedence_runtime_then_cni_args_then_key() {
        let conf = netconf(json!({"mac": "02:00:00:00:00:01",
            "runtimeConfig": {"mac": "02:00:00:00:00:03"}}));
        let mac = |c: &NetConf<MacvlanConf>, a: &str| Config::for_attach(c, &args(a)).unwrap().mac;
        assert_eq!(
            mac(&conf, "IgnoreUnknown=1;MAC=02:00:00:00:00:02"),
            Some([2, 0, 0, 0, 0, 3])
        );
        let conf = netconf(json!({"mac": "02:00:00:00:00:01", "runtimeConfig": {"mac": ""}}));
        assert_eq!(
            mac(&conf, "IgnoreUnknown=1;MAC=02:00:00:00:00:02"),
            Some([2, 0, 0, 0, 0, 2])
        );
        assert_eq!(
            mac(&conf, "mac=02:00:00:00:00:02"),
            Some([2, 0, 0, 0, 0, 1])
        );
        // args.cni.mac is the bridge plugin's, not the reference macvlan's: ignored.
        let conf = netconf(json!({"args": {"cni": {"mac": "02:00:00:00:00:04"}}}));
        assert_eq!(mac(&conf, ""), None);
        let conf = netconf(json!({"mac": "zz"}));
        let err = Config::for_attach(&conf, &args("")).unwrap_err();
        assert!(err.to_string().contains("\"zz\" from mac"), "{err}");
    }

    #[test]
    fn macs_in_every_spelling_go_accepts_for_six_bytes() {
        for s in ["02:00:5e:00:53:01", "02-00-5E-00-53-01", "0200.5e00.5301"] {
            assert_eq!(parse_mac(s).unwrap(), [2, 0, 0x5e, 0, 0x53, 1], "{s}");
        }
        for bad in [
            "",
            "zz",
            "02:00:5e:00:53",
            "02:00:5e:00:53:01:02:03",
            "2:0:5e:0:53:1",
            "02:00:5e:00:53:0g",
            "0200.5e00",
            "02:00-5e:00:53:01",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn master_names_are_validated() {
        let conf = netconf(json!({"master": "a/b"}));
        assert!(matches!(
            Config::for_attach(&conf, &args("")),
            Err(ConfigError::MasterName { .. })
        ));
        let conf = netconf(json!({"master": "eth1", "linkInContainer": true, "mtu": -1}));
        let c = Config::for_attach(&conf, &args("")).unwrap();
        assert_eq!(c.master.unwrap().as_str(), "eth1");
        assert!(c.link_in_container);
        assert_eq!(c.mtu, -1);
    }
}
