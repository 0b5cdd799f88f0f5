//! The plugin's keys, from wire JSON to a validated [`Config`].

use std::path::PathBuf;

use berth_cni::{Dns, IfName, NetConf};
use berth_netlink::Mac;
use serde::Deserialize;

/// Where ADD records what DEL restores (see `state`): tmpfs, so it lives exactly as long as
/// the namespaces it describes.
pub const DEFAULT_DATA_DIR: &str = "/run/cni/host-device";

/// The plugin's own keys (the reference's, plus Berth's `dataDir`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostDeviceConf {
    /// The link's name in the host namespace.
    #[serde(default)]
    pub device: String,
    /// The link's MAC address.
    #[serde(default)]
    pub hwaddr: String,
    /// A device directory under `/sys/devices/`: its first network link.
    #[serde(default)]
    pub kernelpath: String,
    /// A PCI address (`0000:03:00.1`): its first network link.
    #[serde(default, rename = "pciBusID")]
    pub pci_bus_id: String,
    /// Berth: where the state ADD records for DEL is kept.
    #[serde(default)]
    pub data_dir: String,
}

/// Errors of the `config` module (all code 7: the configuration itself is wrong).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(r#"specify either "device", "hwaddr", "kernelpath" or "pciBusID""#)]
    NoSelector,
    #[error("device {value:?} is not an interface name")]
    Device {
        value: String,
        #[source]
        source: berth_cni::names::NameError,
    },
    #[error("hwaddr {value:?} is not a MAC address (aa:bb:cc:dd:ee:ff)")]
    Hwaddr { value: String },
    #[error("kernelpath {value:?} must be absolute and begin with /sys/devices/")]
    KernelPath { value: String },
    #[error("pciBusID {value:?} is not a PCI address")]
    PciAddress { value: String },
    #[error("dataDir {value:?} must be an absolute path")]
    DataDir { value: String },
}

/// How the host link is chosen. The reference takes the first key set, in this order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Name(IfName),
    Mac(Mac),
    KernelPath(PathBuf),
    Pci(String),
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub selector: Selector,
    /// `ipam.type`, when there is an IPAM plugin to run.
    pub ipam: Option<String>,
    /// The configuration's own `dns` (it wins over the IPAM plugin's, as in `bridge`).
    pub dns: Option<Dns>,
    pub data_dir: PathBuf,
}

/// `aa:bb:cc:dd:ee:ff`, `aa-bb-cc-dd-ee-ff` or `aabb.ccdd.eeff`, any case (Go's `ParseMAC`
/// for 6-byte addresses).
pub fn parse_mac(s: &str) -> Option<Mac> {
    let hex: String = if s.len() == 14 && s.as_bytes().get(4) == Some(&b'.') {
        let groups: Vec<&str> = s.split('.').collect();
        if groups.len() != 3 || groups.iter().any(|g| g.len() != 4) {
            return None;
        }
        groups.concat()
    } else {
        let sep = if s.contains('-') { '-' } else { ':' };
        let parts: Vec<&str> = s.split(sep).collect();
        if parts.len() != 6 || parts.iter().any(|p| p.len() != 2) {
            return None;
        }
        parts.concat()
    };
    if hex.len() != 12 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, byte) in mac.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(mac)
}

/// A PCI address is a directory name under `/sys/bus/pci/devices`: one path component.
fn valid_pci(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

impl Config {
    /// `runtimeConfig.deviceID` (the device plugin's choice) overrides `pciBusID`, as in the
    /// reference.
    pub fn from_conf(
        conf: &NetConf<HostDeviceConf>,
        device_id: Option<String>,
    ) -> Result<Config, ConfigError> {
        let c = &conf.plugin;
        let pci = device_id
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| c.pci_bus_id.clone());
        let selector = if !c.device.is_empty() {
            Selector::Name(IfName::try_from(c.device.as_str()).map_err(|source| {
                ConfigError::Device {
                    value: c.device.clone(),
                    source,
                }
            })?)
        } else if !c.hwaddr.is_empty() {
            Selector::Mac(parse_mac(&c.hwaddr).ok_or_else(|| ConfigError::Hwaddr {
                value: c.hwaddr.clone(),
            })?)
        } else if !c.kernelpath.is_empty() {
            if !c.kernelpath.starts_with("/sys/devices/") {
                return Err(ConfigError::KernelPath {
                    value: c.kernelpath.clone(),
                });
            }
            Selector::KernelPath(PathBuf::from(&c.kernelpath))
        } else if !pci.is_empty() {
            if !valid_pci(&pci) {
                return Err(ConfigError::PciAddress { value: pci });
            }
            Selector::Pci(pci)
        } else {
            return Err(ConfigError::NoSelector);
        };
        let data_dir = if c.data_dir.is_empty() {
            PathBuf::from(DEFAULT_DATA_DIR)
        } else if c.data_dir.starts_with('/') {
            PathBuf::from(&c.data_dir)
        } else {
            return Err(ConfigError::DataDir {
                value: c.data_dir.clone(),
            });
        };
        Ok(Config {
            selector,
            ipam: conf
                .ipam
                .as_ref()
                .map(|i| i.kind.clone())
                .filter(|k| !k.is_empty()),
            dns: conf.dns.clone().filter(|d| !d.is_empty()),
            data_dir,
        })
    }

    /// The PCI address, when the device was chosen by one (reported as `pciID` in 1.1.0).
    pub fn pci_id(&self) -> Option<&str> {
        match &self.selector {
            Selector::Pci(id) => Some(id),
            _ => None,
        }
    }
}

/// The configuration and `runtimeConfig.deviceID` of a call.
pub fn load(conf: &NetConf<HostDeviceConf>) -> Result<Config, berth_cni::CniError> {
    let device_id: Option<String> = conf.runtime_arg("deviceID")?;
    Config::from_conf(conf, device_id)
        .map_err(|e| berth_cni::CniError::from_error(berth_cni::ErrorCode::InvalidConfig, &e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn config(extra: serde_json::Value) -> Result<Config, ConfigError> {
        let mut raw = json!({"cniVersion": "1.0.0", "name": "n", "type": "host-device"});
        for (k, v) in extra.as_object().unwrap() {
            raw[k] = v.clone();
        }
        let conf: NetConf<HostDeviceConf> = serde_json::from_value(raw).unwrap();
        let device_id = conf.runtime_arg("deviceID").unwrap();
        Config::from_conf(&conf, device_id)
    }

    #[test]
    fn first_key_set_wins_and_device_id_overrides_pci() {
        let c = config(json!({"hwaddr": "02:00:00:00:00:01", "pciBusID": "0000:00:01.0"})).unwrap();
        assert_eq!(c.selector, Selector::Mac([2, 0, 0, 0, 0, 1]));
        let c = config(json!({"pciBusID": "0000:00:01.0",
            "runtimeConfig": {"deviceID": "0000:00:02.0"}}))
        .unwrap();
        assert_eq!(c.selector, Selector::Pci("0000:00:02.0".into()));
        assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        assert!(matches!(config(json!({})), Err(ConfigError::NoSelector)));
    }

    #[test]
    fn keys_match_like_go() {
        let c = config(json!({"Device": "eth1", "DataDir": "/tmp/x", "IPAM": {"Type": "static"}}))
            .unwrap();
        assert_eq!(
            c.selector,
            Selector::Name(IfName::try_from("eth1").unwrap())
        );
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.ipam.as_deref(), Some("static"));
        let c = config(json!({"PCIBUSID": "0000:00:03.0"})).unwrap();
        assert_eq!(c.pci_id(), Some("0000:00:03.0"));
    }

    #[test]
    fn bad_values() {
        assert!(matches!(
            config(json!({"device": "a/b"})),
            Err(ConfigError::Device { .. })
        ));
        assert!(matches!(
            config(json!({"hwaddr": "zz"})),
            Err(ConfigError::Hwaddr { .. })
        ));
        assert!(matches!(
            config(json!({"kernelpath": "devices/x"})),
            Err(ConfigError::KernelPath { .. })
        ));
        assert!(matches!(
            config(json!({"pciBusID": "../../x"})),
            Err(ConfigError::PciAddress { .. })
        ));
        assert!(matches!(
            config(json!({"device": "eth1", "dataDir": "rel"})),
            Err(ConfigError::DataDir { .. })
        ));
    }

    #[test]
    fn mac_forms() {
        let want = Some([0x9e, 0xdf, 0x0e, 0x99, 0x65, 0xc9]);
        for s in ["9e:df:0e:99:65:c9", "9E-DF-0E-99-65-C9", "9edf.0e99.65c9"] {
            assert_eq!(parse_mac(s), want, "{s}");
        }
        for s in [
            "9e:df:0e:99:65",
            "9e:df:0e:99:65:c9:00",
            "9e:df:0e:99:65:cg",
            "9edf0e9965c9",
            "",
        ] {
            assert_eq!(parse_mac(s), None, "{s}");
        }
    }
}
