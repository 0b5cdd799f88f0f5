//! Results of ADD, for every version from 0.3.0 to 1.1.0.
//!
//! One internal model, a superset of 1.1.0, is parsed from any supported version and written
//! out in the version a configuration asks for: fields a version does not know are dropped,
//! and results before 1.0.0 gain the per-IP `version` field.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{CniError, ErrorCode};
use crate::version::CniVersion;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for container-side interfaces; absent for host-side ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    /// 1.1.0
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpConfig {
    /// Address with the subnet's prefix length, e.g. `10.1.0.5/24`.
    pub address: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces` of the interface this address is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub dst: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// 1.1.0
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    /// 1.1.0: the route scope as a number (0 universe, 253 link, 254 host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl Route {
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Route {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self == &Dns::default()
    }
}

const INTERFACE_1_1_KEYS: [&str; 3] = ["mtu", "socketPath", "pciID"];
const ROUTE_1_1_KEYS: [&str; 5] = ["mtu", "advmss", "priority", "table", "scope"];

impl CniResult {
    /// The addresses of the container's `ifname`: every IP except those bound to a known
    /// interface that is not `ifname` in a sandbox (how the reference's chained plugins read
    /// `prevResult`).
    pub fn container_ips(&self, ifname: &str) -> Vec<IpNetwork> {
        self.ips
            .iter()
            .filter(
                |ip| match ip.interface.and_then(|i| self.interfaces.get(i)) {
                    Some(iface) => {
                        iface.name == ifname
                            && iface.sandbox.as_deref().is_some_and(|s| !s.is_empty())
                    }
                    None => true,
                },
            )
            .map(|ip| ip.address)
            .collect()
    }

    /// Parses a result (or a `prevResult`) written in any supported version.
    ///
    /// The `cniVersion` and per-IP `version` keys are informational here: the model is the
    /// same for every version from 0.3.0 on.
    pub fn from_value(value: &Value) -> Result<CniResult, CniError> {
        let version = value
            .as_object()
            .and_then(|o| crate::gojson::get(o, "cniVersion"));
        if let Some(v) = version.and_then(Value::as_str) {
            CniVersion::try_from(v)?;
        }
        crate::gojson::from_value(value)
            .map_err(|e| CniError::new(ErrorCode::Decode, format!("decode CNI result: {e}")))
    }

    /// Writes the result in `version`, the version the configuration asked for.
    pub fn to_value(&self, version: CniVersion) -> Value {
        let mut out = Map::new();
        out.insert("cniVersion".into(), version.as_str().into());
        // INVARIANT: every field type serializes infallibly (strings, numbers, addresses).
        let Ok(Value::Object(body)) = serde_json::to_value(self) else {
            unreachable!("CniResult always serializes to an object")
        };
        for (key, mut val) in body {
            if !version.has_1_1_fields() {
                let drop: &[&str] = match key.as_str() {
                    "interfaces" => &INTERFACE_1_1_KEYS,
                    "routes" => &ROUTE_1_1_KEYS,
                    _ => &[],
                };
                strip_keys(&mut val, drop);
            }
            if key == "ips" && version.ip_has_version_field() {
                add_ip_versions(&mut val);
            }
            out.insert(key, val);
        }
        Value::Object(out)
    }

    /// The addresses of one interface (by index in `interfaces`).
    pub fn ips_of(&self, interface: usize) -> impl Iterator<Item = &IpConfig> {
        self.ips
            .iter()
            .filter(move |ip| ip.interface == Some(interface))
    }
}

fn strip_keys(list: &mut Value, keys: &[&str]) {
    if let Value::Array(items) = list {
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            for key in keys {
                item.remove(*key);
            }
        }
    }
}

fn add_ip_versions(ips: &mut Value) {
    if let Value::Array(items) = ips {
        for item in items.iter_mut().filter_map(Value::as_object_mut) {
            let v6 = item
                .get("address")
                .and_then(Value::as_str)
                .is_some_and(|a| a.contains(':'));
            item.insert("version".into(), if v6 { "6" } else { "4" }.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![Interface {
                name: "eth0".into(),
                mac: Some("0a:58:0a:01:00:05".into()),
                mtu: Some(1400),
                sandbox: Some("/run/netns/x".into()),
                socket_path: None,
                pci_id: None,
            }],
            ips: vec![
                IpConfig {
                    address: "10.1.0.5/24".parse().unwrap(),
                    gateway: Some("10.1.0.1".parse().unwrap()),
                    interface: Some(0),
                },
                IpConfig {
                    address: "fd00::5/64".parse().unwrap(),
                    gateway: None,
                    interface: Some(0),
                },
            ],
            routes: vec![Route {
                table: Some(100),
                ..Route::new(
                    "0.0.0.0/0".parse().unwrap(),
                    Some("10.1.0.1".parse().unwrap()),
                )
            }],
            dns: Dns {
                nameservers: vec!["10.1.0.1".into()],
                ..Dns::default()
            },
        }
    }

    #[test]
    fn writes_1_1_fields_only_in_1_1() {
        let v11 = sample().to_value(CniVersion::V1_1_0);
        assert_eq!(v11["interfaces"][0]["mtu"], 1400);
        assert_eq!(v11["routes"][0]["table"], 100);
        assert!(v11["ips"][0].get("version").is_none());
        let v10 = sample().to_value(CniVersion::V1_0_0);
        assert!(v10["interfaces"][0].get("mtu").is_none());
        assert!(v10["routes"][0].get("table").is_none());
        assert_eq!(v10["cniVersion"], "1.0.0");
    }

    #[test]
    fn pre_1_0_results_carry_ip_version() {
        for v in [CniVersion::V0_3_0, CniVersion::V0_3_1, CniVersion::V0_4_0] {
            let out = sample().to_value(v);
            assert_eq!(out["ips"][0]["version"], "4");
            assert_eq!(out["ips"][1]["version"], "6");
        }
    }

    #[test]
    fn parses_every_version_back() {
        for v in CniVersion::ALL {
            let out = sample().to_value(v);
            let back = CniResult::from_value(&out).unwrap();
            assert_eq!(back.ips, sample().ips, "{v}");
            assert_eq!(back.interfaces[0].name, "eth0");
        }
    }

    #[test]
    fn parses_spec_example() {
        let spec = json!({
          "cniVersion": "1.1.0",
          "interfaces": [
              {"name": "cni0", "mac": "00:11:22:33:44:55"},
              {"name": "veth3243", "mac": "55:44:33:22:11:11"},
              {"name": "eth0", "mac": "99:88:77:66:55:44", "sandbox": "/var/run/netns/blue"}
          ],
          "ips": [{"address": "10.10.0.5/16", "gateway": "10.10.0.1", "interface": 2}],
          "routes": [{"dst": "0.0.0.0/0"}],
          "dns": {"nameservers": ["10.1.0.1"]}
        });
        let r = CniResult::from_value(&spec).unwrap();
        assert_eq!(r.ips_of(2).count(), 1);
        assert_eq!(r.to_value(CniVersion::V1_1_0), spec);
    }

    #[test]
    fn rejects_unknown_version_and_garbage() {
        let e = CniResult::from_value(&json!({"cniVersion": "0.2.0"})).unwrap_err();
        assert_eq!(e.code, ErrorCode::IncompatibleVersion);
        let e = CniResult::from_value(&json!({"ips": [{"address": "nope"}]})).unwrap_err();
        assert_eq!(e.code, ErrorCode::Decode);
    }
}
