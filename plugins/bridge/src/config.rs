//! The plugin's configuration: the wire keys, named and defaulted as the reference `bridge`
//! names them, and the validated [`Config`] the rest of the plugin works with.

use std::collections::BTreeSet;

use berth_cni::{CniArgs, CniError, Dns, IfName, NetConf, NetworkName};
use berth_firewall::{BackendKind, KeyError, MasqKeys};
use berth_netlink::Mac;
use serde::Deserialize;

/// The reference's default bridge name.
pub const DEFAULT_BRIDGE: &str = "cni0";
/// Highest usable 802.1Q VLAN id (4095 is reserved).
const MAX_VLAN: i64 = 4094;

/// The `bridge` keys of a network configuration (beside the spec's well-known ones).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BridgeConf {
    #[serde(default)]
    pub bridge: Option<String>,
    #[serde(default)]
    pub is_gateway: bool,
    #[serde(default)]
    pub is_default_gateway: bool,
    #[serde(default)]
    pub force_address: bool,
    /// 0 (the reference's "unset") means the kernel default.
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub hairpin_mode: bool,
    #[serde(default)]
    pub promisc_mode: bool,
    /// Signed on the wire so a negative id gets a clear message rather than a decode error.
    #[serde(default)]
    pub vlan: Option<i64>,
    #[serde(default)]
    pub vlan_trunk: Option<Vec<VlanTrunk>>,
    #[serde(default = "default_true")]
    pub preserve_default_vlan: bool,
    #[serde(default, rename = "macspoofchk")]
    pub mac_spoof_chk: bool,
    #[serde(default, rename = "enabledad")]
    pub enable_dad: bool,
    #[serde(default)]
    pub disable_container_interface: bool,
    #[serde(default)]
    pub port_isolation: bool,
}

fn default_true() -> bool {
    true
}

/// One `vlanTrunk` entry: a single `id`, or a `minID`..=`maxID` range.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct VlanTrunk {
    #[serde(default, rename = "minID")]
    pub min_id: Option<i64>,
    #[serde(default, rename = "maxID")]
    pub max_id: Option<i64>,
    #[serde(default)]
    pub id: Option<i64>,
}

/// Errors of the `config` module (invalid configuration, code 7, unless an argument says otherwise).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("bridge: invalid bridge name {name:?}")]
    BridgeName {
        name: String,
        #[source]
        source: berth_cni::names::NameError,
    },
    #[error("bridge: invalid VLAN ID {vlan} (must be between 0 and 4094)")]
    Vlan { vlan: i64 },
    #[error("bridge: vlanTrunk: {field} {value} is invalid (must be between 1 and 4094)")]
    TrunkId { field: &'static str, value: i64 },
    #[error("bridge: vlanTrunk: minID {min} is greater than maxID {max}")]
    TrunkOrder { min: i64, max: i64 },
    #[error("bridge: vlanTrunk: minID and maxID must be set together ({missing} is missing)")]
    TrunkHalfRange { missing: &'static str },
    #[error("bridge: cannot set vlan ({vlan}) and vlanTrunk at the same time")]
    VlanAndTrunk { vlan: u16 },
    #[error("bridge: cannot set hairpinMode and promiscMode at the same time")]
    HairpinAndPromisc,
    #[error(
        "bridge: cannot use ipam (type {ipam:?}) when disableContainerInterface is set: \
         addresses need an interface that is up"
    )]
    IpamWithoutInterface { ipam: String },
    #[error("bridge: invalid MAC address {value:?} from {source_key}: {reason}")]
    Mac {
        value: String,
        source_key: &'static str,
        reason: &'static str,
    },
    #[error("bridge: {0}")]
    Masq(#[source] KeyError),
    #[error("bridge: cannot read {key}")]
    Arg {
        key: &'static str,
        #[source]
        source: CniError,
    },
}

/// VLAN settings of the container's bridge port.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VlanConf {
    /// `vlan`: the port's PVID, untagged.
    pub access: Option<u16>,
    /// `vlanTrunk`: tagged VLANs, sorted and without duplicates.
    pub trunk: Vec<u16>,
    /// `vlanTrunk` was present (even empty): the reference then turns VLAN filtering on.
    pub trunk_configured: bool,
    /// `preserveDefaultVlan`: keep VLAN 1 on the port.
    pub preserve_default: bool,
}

impl VlanConf {
    /// Whether the bridge needs VLAN filtering (the reference: `vlan != 0 || vlanTrunk != nil`).
    pub fn filtering(&self) -> bool {
        self.access.is_some() || self.trunk_configured
    }

    /// Whether the port gets VLAN entries (and so may lose the default VLAN).
    pub fn has_port_vlans(&self) -> bool {
        self.access.is_some() || !self.trunk.is_empty()
    }

    /// The configuration key to blame when the kernel refuses VLAN filtering.
    pub fn key(&self) -> String {
        match self.access {
            Some(vid) => format!("vlan={vid}"),
            None => format!("vlanTrunk={:?}", self.trunk),
        }
    }
}

/// A validated configuration for ADD and CHECK.
#[derive(Debug, Clone)]
pub struct Config {
    pub network: NetworkName,
    pub bridge: IfName,
    /// `isGateway` (implied by `isDefaultGateway`).
    pub is_gateway: bool,
    pub is_default_gateway: bool,
    pub force_address: bool,
    /// `ipMasq`, with the requested backend (`None`: detect).
    pub masquerade: Option<Option<BackendKind>>,
    pub mtu: Option<u32>,
    pub hairpin: bool,
    pub promisc: bool,
    pub vlan: VlanConf,
    pub enable_dad: bool,
    /// The container interface's MAC (`runtimeConfig.mac` > `args.cni.mac` > `CNI_ARGS MAC`).
    pub mac: Option<Mac>,
    pub disable_container_interface: bool,
    pub port_isolation: bool,
    /// `macspoofchk`: frames from the container must carry its own MAC.
    pub mac_spoof_check: bool,
    /// The IPAM plugin (`ipam.type`); `None` for a layer-2-only attachment.
    pub ipam: Option<String>,
    /// `dns` from the configuration; when set it wins over the IPAM plugin's.
    pub dns: Option<Dns>,
}

/// What DEL and GC need: the subset that cannot be invalid, so an attachment can always be
/// torn down, whatever else is wrong with the configuration.
#[derive(Debug, Clone)]
pub struct TeardownConfig {
    pub network: NetworkName,
    pub ipam: Option<String>,
    pub masquerade: Option<Option<BackendKind>>,
    pub mac_spoof_check: bool,
}

fn ipam_kind(conf: &NetConf<BridgeConf>) -> Option<String> {
    conf.ipam
        .as_ref()
        .map(|i| i.kind.clone())
        .filter(|k| !k.is_empty())
}

impl TeardownConfig {
    pub fn from_conf(conf: &NetConf<BridgeConf>) -> TeardownConfig {
        TeardownConfig {
            network: conf.name.clone(),
            ipam: ipam_kind(conf),
            // Keys that do not read still mean "look for rules": removing what is not there
            // costs a lookup, keeping what is there would leak.
            masquerade: conf
                .keys::<MasqKeys>()
                .ok()
                .map_or(Ok(Some(None)), |k| k.masquerade())
                .unwrap_or(Some(None)),
            mac_spoof_check: conf.plugin.mac_spoof_chk,
        }
    }
}

impl Config {
    /// Validates the wire configuration of an ADD or CHECK; `cni_args` is `CNI_ARGS` (for
    /// `MAC=`).
    pub fn validate(conf: &NetConf<BridgeConf>, cni_args: &CniArgs) -> Result<Config, ConfigError> {
        let wire = &conf.plugin;
        let bridge_name = wire.bridge.as_deref().unwrap_or(DEFAULT_BRIDGE);
        let bridge = IfName::try_from(bridge_name).map_err(|source| ConfigError::BridgeName {
            name: bridge_name.to_owned(),
            source,
        })?;
        if wire.hairpin_mode && wire.promisc_mode {
            return Err(ConfigError::HairpinAndPromisc);
        }
        let ipam = ipam_kind(conf);
        if let (Some(ipam), true) = (&ipam, wire.disable_container_interface) {
            return Err(ConfigError::IpamWithoutInterface { ipam: ipam.clone() });
        }
        let vlan = vlan_conf(wire)?;
        let mac = container_mac(conf, cni_args)?;
        let masquerade = conf
            .keys::<MasqKeys>()
            .map_err(|source| ConfigError::Arg {
                key: "ipMasq",
                source,
            })?
            .masquerade()
            .map_err(ConfigError::Masq)?;
        Ok(Config {
            network: conf.name.clone(),
            bridge,
            is_gateway: wire.is_gateway || wire.is_default_gateway,
            is_default_gateway: wire.is_default_gateway,
            force_address: wire.force_address,
            masquerade,
            mtu: wire.mtu.filter(|&m| m != 0),
            hairpin: wire.hairpin_mode,
            promisc: wire.promisc_mode,
            vlan,
            enable_dad: wire.enable_dad,
            mac,
            disable_container_interface: wire.disable_container_interface,
            port_isolation: wire.port_isolation,
            mac_spoof_check: wire.mac_spoof_chk,
            ipam,
            dns: conf.dns.clone().filter(|d| !d.is_empty()),
        })
    }

    pub fn teardown(&self) -> TeardownConfig {
        TeardownConfig {
            network: self.network.clone(),
            ipam: self.ipam.clone(),
            masquerade: self.masquerade,
            mac_spoof_check: self.mac_spoof_check,
        }
    }
}

fn vlan_conf(wire: &BridgeConf) -> Result<VlanConf, ConfigError> {
    let access = match wire.vlan.unwrap_or(0) {
        0 => None,
        v @ 1..=MAX_VLAN => Some(to_vid(v)),
        v => return Err(ConfigError::Vlan { vlan: v }),
    };
    let trunk = collect_trunk(wire.vlan_trunk.as_deref().unwrap_or_default())?;
    if let (Some(vlan), false) = (access, trunk.is_empty()) {
        return Err(ConfigError::VlanAndTrunk { vlan });
    }
    Ok(VlanConf {
        access,
        trunk,
        trunk_configured: wire.vlan_trunk.is_some(),
        preserve_default: wire.preserve_default_vlan,
    })
}

/// Callers check `1..=4094` first.
fn to_vid(v: i64) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

/// The reference's `collectVlanTrunk`: ranges and single ids, merged, sorted, deduplicated.
fn collect_trunk(items: &[VlanTrunk]) -> Result<Vec<u16>, ConfigError> {
    let check = |field, value: i64| {
        if (1..=MAX_VLAN).contains(&value) {
            Ok(to_vid(value))
        } else {
            Err(ConfigError::TrunkId { field, value })
        }
    };
    let mut vids = BTreeSet::new();
    for item in items {
        match (item.min_id, item.max_id) {
            (Some(min), Some(max)) => {
                let lo = check("minID", min)?;
                let hi = check("maxID", max)?;
                if hi < lo {
                    return Err(ConfigError::TrunkOrder { min, max });
                }
                vids.extend(lo..=hi);
            }
            (None, Some(_)) => return Err(ConfigError::TrunkHalfRange { missing: "minID" }),
            (Some(_), None) => return Err(ConfigError::TrunkHalfRange { missing: "maxID" }),
            (None, None) => {}
        }
        if let Some(id) = item.id {
            vids.insert(check("id", id)?);
        }
    }
    Ok(vids.into_iter().collect())
}

/// The container MAC, by the reference's precedence: `runtimeConfig.mac` over `args.cni.mac`
/// over `CNI_ARGS` `MAC=`.
fn container_mac(
    conf: &NetConf<BridgeConf>,
    cni_args: &CniArgs,
) -> Result<Option<Mac>, ConfigError> {
    let runtime: Option<String> = conf.runtime_arg("mac").map_err(|source| ConfigError::Arg {
        key: "runtimeConfig.mac",
        source,
    })?;
    let args: Option<String> = conf.cni_arg("mac").map_err(|source| ConfigError::Arg {
        key: "args.cni.mac",
        source,
    })?;
    let candidates = [
        (runtime, "runtimeConfig.mac"),
        (args, "args.cni.mac"),
        (cni_args.get("MAC").map(str::to_owned), "CNI_ARGS MAC"),
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

/// `aa:bb:cc:dd:ee:ff` (or with `-`), unicast only: the kernel refuses multicast addresses on
/// an Ethernet device.
pub fn parse_mac(s: &str) -> Result<Mac, &'static str> {
    let mut mac = [0u8; 6];
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return Err("expected 6 hexadecimal octets separated by ':'");
    }
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return Err("each octet must be 2 hexadecimal digits");
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| "not hexadecimal")?;
    }
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
    use super::*;
    use serde_json::{Value, json};

    fn parse(extra: Value) -> NetConf<BridgeConf> {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "net1", "type": "bridge"});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        berth_cni::plugin::parse_conf(conf.to_string().as_bytes()).unwrap()
    }

    fn validate(extra: Value) -> Result<Config, ConfigError> {
        Config::validate(&parse(extra), &CniArgs::default())
    }

    #[test]
    fn defaults_match_the_reference() {
        let c = validate(json!({})).unwrap();
        assert_eq!(c.bridge.as_str(), "cni0");
        assert!(!c.is_gateway && !c.is_default_gateway && !c.force_address);
        assert!(c.masquerade.is_none() && c.mtu.is_none() && c.mac.is_none());
        assert!(c.vlan.preserve_default && !c.vlan.filtering());
        assert!(!c.enable_dad && !c.hairpin && !c.promisc && !c.port_isolation);
        assert!(c.ipam.is_none() && c.dns.is_none());
    }

    #[test]
    fn keys_are_read_with_reference_names() {
        let c = validate(json!({
            "bridge": "br-x", "isDefaultGateway": true, "forceAddress": true, "ipMasq": true,
            "ipMasqBackend": "nftables", "mtu": 1400, "hairpinMode": true, "enabledad": true,
            "portIsolation": true, "preserveDefaultVlan": false, "vlan": 10,
            "ipam": {"type": "host-local", "subnet": "198.18.0.0/24"},
            "dns": {"nameservers": ["198.18.0.1"]}
        }))
        .unwrap();
        assert_eq!(c.bridge.as_str(), "br-x");
        assert!(c.is_gateway, "isDefaultGateway implies isGateway");
        assert!(c.force_address && c.hairpin && c.enable_dad && c.port_isolation);
        assert_eq!(c.masquerade, Some(Some(BackendKind::Nftables)));
        assert_eq!(c.mtu, Some(1400));
        assert_eq!(c.vlan.access, Some(10));
        assert!(!c.vlan.preserve_default);
        assert_eq!(c.ipam.as_deref(), Some("host-local"));
        assert_eq!(c.dns.unwrap().nameservers, ["198.18.0.1"]);
        assert!(validate(json!({"mtu": 0})).unwrap().mtu.is_none());
    }

    #[test]
    fn cross_field_errors_name_both_fields() {
        let e = validate(json!({"hairpinMode": true, "promiscMode": true})).unwrap_err();
        assert!(e.to_string().contains("hairpinMode and promiscMode"), "{e}");
        let e = validate(json!({"disableContainerInterface": true, "ipam": {"type": "x"}}))
            .unwrap_err();
        assert!(
            e.to_string().contains("ipam") && e.to_string().contains("disableContainerInterface"),
            "{e}"
        );
        let e = validate(json!({"vlan": 5, "vlanTrunk": [{"id": 6}]})).unwrap_err();
        assert!(e.to_string().contains("vlan (5) and vlanTrunk"), "{e}");
    }

    #[test]
    fn vlan_ranges_are_checked() {
        for (extra, needle) in [
            (json!({"vlan": -1}), "invalid VLAN ID -1"),
            (json!({"vlan": 4095}), "invalid VLAN ID 4095"),
            (json!({"vlanTrunk": [{"id": 0}]}), "id 0"),
            (json!({"vlanTrunk": [{"minID": 5}]}), "maxID is missing"),
            (json!({"vlanTrunk": [{"maxID": 5}]}), "minID is missing"),
            (json!({"vlanTrunk": [{"minID": 9, "maxID": 5}]}), "greater"),
            (
                json!({"vlanTrunk": [{"minID": 1, "maxID": 4095}]}),
                "maxID 4095",
            ),
        ] {
            let e = validate(extra.clone()).unwrap_err();
            assert!(e.to_string().contains(needle), "{extra}: {e}");
        }
        let c = validate(json!({"vlanTrunk": [{"minID": 3, "maxID": 5}, {"id": 4}, {"id": 9}]}))
            .unwrap();
        assert_eq!(c.vlan.trunk, [3, 4, 5, 9]);
        assert!(c.vlan.filtering() && c.vlan.has_port_vlans());
        let empty = validate(json!({"vlanTrunk": []})).unwrap();
        assert!(empty.vlan.filtering() && !empty.vlan.has_port_vlans());
    }

    #[test]
    fn mac_precedence_and_errors() {
        let args = CniArgs::parse("IgnoreUnknown=1;MAC=02:00:00:00:00:03").unwrap();
        let conf = parse(json!({
            "runtimeConfig": {"mac": "02:00:00:00:00:01"},
            "args": {"cni": {"mac": "02:00:00:00:00:02"}}
        }));
        assert_eq!(
            Config::validate(&conf, &args).unwrap().mac,
            Some([2, 0, 0, 0, 0, 1])
        );
        let conf = parse(json!({"args": {"cni": {"mac": "02:00:00:00:00:02"}}}));
        assert_eq!(
            Config::validate(&conf, &args).unwrap().mac,
            Some([2, 0, 0, 0, 0, 2])
        );
        let conf = parse(json!({}));
        assert_eq!(
            Config::validate(&conf, &args).unwrap().mac,
            Some([2, 0, 0, 0, 0, 3])
        );
        let e = validate(json!({"runtimeConfig": {"mac": "01:00:5e:00:00:01"}})).unwrap_err();
        assert!(e.to_string().contains("runtimeConfig.mac"), "{e}");
        for bad in [
            "02:00:00:00:00",
            "zz:00:00:00:00:01",
            "00:00:00:00:00:00",
            "2:0:0:0:0:1",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn macspoofchk_is_read_and_bridge_name_checked() {
        assert!(
            validate(json!({"macspoofchk": true}))
                .unwrap()
                .mac_spoof_check
        );
        assert!(!validate(json!({})).unwrap().mac_spoof_check);
        assert!(validate(json!({"bridge": "a-name-that-is-too-long"})).is_err());
    }

    #[test]
    fn teardown_config_ignores_what_add_would_refuse() {
        let conf = parse(
            json!({"hairpinMode": true, "promiscMode": true, "vlan": 99999,
            "ipMasq": true, "ipam": {"type": "host-local"}}),
        );
        let t = TeardownConfig::from_conf(&conf);
        assert_eq!(t.ipam.as_deref(), Some("host-local"));
        assert_eq!(t.masquerade, Some(None));
        let t = TeardownConfig::from_conf(&parse(json!({"macspoofchk": true})));
        assert!(t.mac_spoof_check);
    }
}
