//! Network configurations (what a plugin reads on stdin) and configuration lists (what a
//! runtime loads from its config dir).

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{CniError, ErrorCode};
use crate::gojson;
use crate::names::{ContainerId, IfName, NetworkName};
use crate::result::{CniResult, Dns};
use crate::version::CniVersion;

/// The spec's GC key, and the pre-release name libcni still accepts.
pub const VALID_ATTACHMENTS_KEY: &str = "cni.dev/valid-attachments";
pub const LEGACY_ATTACHMENTS_KEY: &str = "cni.dev/attachments";

/// One plugin's configuration as it arrives on stdin: the well-known keys of the spec plus the
/// plugin's own keys in `plugin`. Unknown keys are ignored, because runtimes inject their own.
///
/// Keys are matched as Go matches them ([`crate::gojson`]): the spec's keys and the plugin's,
/// at every depth. The plugin's keys are read in a second pass over the same object rather than
/// through `#[serde(flatten)]`, which would match them case-sensitively.
#[derive(Debug, Clone)]
pub struct NetConf<P> {
    pub cni_version: CniVersion,
    pub name: NetworkName,
    pub kind: String,
    pub capabilities: BTreeMap<String, bool>,
    pub ipam: Option<IpamConf>,
    pub dns: Option<Dns>,
    pub runtime_config: Map<String, Value>,
    pub args: Map<String, Value>,
    pub prev_result: Option<CniResult>,
    /// GC only: the attachments the runtime still knows about (see `valid_attachments()`).
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The pre-release name of the same key, still sent by older libcni versions.
    pub legacy_attachments: Option<Vec<Attachment>>,
    pub plugin: P,
    /// The whole configuration object, for key sets read beside the plugin's own
    /// ([`NetConf::keys`]).
    raw: Value,
}

/// The spec's well-known keys of a [`NetConf`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecKeys {
    cni_version: CniVersion,
    name: NetworkName,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    capabilities: BTreeMap<String, bool>,
    #[serde(default)]
    ipam: Option<IpamConf>,
    #[serde(default)]
    dns: Option<Dns>,
    #[serde(default)]
    runtime_config: Map<String, Value>,
    #[serde(default)]
    args: Map<String, Value>,
    /// Kept raw here: how a broken one is treated depends on the verb (see `from_value_for`).
    #[serde(default)]
    prev_result: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<Attachment>>,
    #[serde(default, rename = "cni.dev/attachments")]
    legacy_attachments: Option<Vec<Attachment>>,
}

/// How a `prevResult` that does not parse is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrevResult {
    /// An error, as for ADD and CHECK, which build on it.
    Strict,
    /// Dropped, as for DEL: the spec's "DEL should not fail" — a DEL cleans up by the
    /// attachment's key and must not fail on a result it only uses to save a lookup. The
    /// reference's DEL mostly never parses it.
    Lenient,
}

impl<P: DeserializeOwned> NetConf<P> {
    /// Reads a configuration object with Go's key matching.
    pub fn from_value(value: &Value) -> Result<NetConf<P>, serde_json::Error> {
        NetConf::from_value_for(value, PrevResult::Strict)
    }

    /// [`NetConf::from_value`], with a broken `prevResult` treated as `prev`.
    pub fn from_value_for(
        value: &Value,
        prev: PrevResult,
    ) -> Result<NetConf<P>, serde_json::Error> {
        let spec: SpecKeys = gojson::from_value(value)?;
        let plugin: P = gojson::from_value(value)?;
        let prev_result = match spec.prev_result {
            None | Some(Value::Null) => None,
            Some(raw) => match CniResult::from_value(&raw) {
                Ok(result) => Some(result),
                Err(e) if prev == PrevResult::Lenient => {
                    eprintln!("ignoring a prevResult that does not parse: {}", e.msg);
                    None
                }
                Err(e) => return Err(serde::de::Error::custom(e.msg)),
            },
        };
        Ok(NetConf {
            cni_version: spec.cni_version,
            name: spec.name,
            kind: spec.kind,
            capabilities: spec.capabilities,
            ipam: spec.ipam,
            dns: spec.dns,
            runtime_config: spec.runtime_config,
            args: spec.args,
            prev_result,
            valid_attachments: spec.valid_attachments,
            legacy_attachments: spec.legacy_attachments,
            plugin,
            raw: value.clone(),
        })
    }
}

impl<'de, P: DeserializeOwned> Deserialize<'de> for NetConf<P> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        NetConf::from_value(&value).map_err(serde::de::Error::custom)
    }
}

impl<P> NetConf<P> {
    /// Another set of keys of the same configuration, read like the plugin's own (Go's key
    /// matching): what `#[serde(flatten)]` would do, which Go's rule cannot reach. For key
    /// sets a library owns, e.g. berth-firewall's `MasqKeys`.
    pub fn keys<T: DeserializeOwned>(&self) -> Result<T, CniError> {
        gojson::from_value(&self.raw)
            .map_err(|e| CniError::new(ErrorCode::Decode, format!("decode configuration: {e}")))
    }

    /// A capability argument the runtime put in `runtimeConfig`, e.g. `portMappings` or `ips`.
    pub fn runtime_arg<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CniError> {
        typed_entry(&self.runtime_config, key, "runtimeConfig")
    }

    /// A value from the `args.cni` object of the conventions document, e.g. `ips` or `mac`.
    pub fn cni_arg<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CniError> {
        match gojson::get(&self.args, "cni") {
            Some(Value::Object(cni)) => typed_entry(cni, key, "args.cni"),
            Some(_) => Err(CniError::invalid_config("args.cni must be an object")),
            None => Ok(None),
        }
    }

    /// The GC list: the spec's key, else the older one. A GC without either is refused rather
    /// than read as "nothing is valid", which would release every attachment of the network.
    pub fn valid_attachments(&self) -> Result<&[Attachment], CniError> {
        self.valid_attachments
            .as_deref()
            .or(self.legacy_attachments.as_deref())
            .ok_or_else(|| {
                CniError::invalid_config(format!(
                    "GC needs {VALID_ATTACHMENTS_KEY} (the attachments to keep)"
                ))
            })
    }

    pub fn prev_result(&self) -> Result<&CniResult, CniError> {
        self.prev_result.as_ref().ok_or_else(|| {
            CniError::invalid_config(format!(
                "plugin {:?} must be chained: prevResult is missing",
                self.kind
            ))
        })
    }
}

fn typed_entry<T: DeserializeOwned>(
    map: &Map<String, Value>,
    key: &str,
    section: &str,
) -> Result<Option<T>, CniError> {
    match gojson::get(map, key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => gojson::from_value(v)
            .map(Some)
            .map_err(|e| CniError::new(ErrorCode::Decode, format!("decode {section}.{key}: {e}"))),
    }
}

/// The `ipam` section: its `type` names the IPAM plugin, the rest belongs to that plugin.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IpamConf {
    /// Empty when missing: delegation then fails with code 7 naming the invalid type, rather
    /// than the whole configuration failing to decode.
    #[serde(rename = "type")]
    pub kind: String,
    /// Every other key, as written (the IPAM plugin reads them with Go's rule itself).
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl IpamConf {
    /// The IPAM plugin's own keys as its configuration type, with Go's key matching.
    pub fn typed<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        gojson::from_value(&Value::Object(self.rest.clone()))
    }
}

impl<'de> Deserialize<'de> for IpamConf {
    /// `type` matched as Go matches it (`"Type"` too); the rest kept unchanged.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut rest = Map::<String, Value>::deserialize(d)?;
        let kind = match gojson::get(&rest, "type") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(kind)) => kind.clone(),
            Some(other) => {
                return Err(serde::de::Error::custom(format!(
                    "ipam type must be a string, got {other}"
                )));
            }
        };
        rest.retain(|k, _| !gojson::fold_eq(k, "type"));
        Ok(IpamConf { kind, rest })
    }
}

/// An attachment as GC names it: `{"containerID": …, "ifname": …}`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: ContainerId,
    pub ifname: IfName,
}

/// A configuration list (`*.conflist`), kept close to the wire: plugin entries stay raw JSON
/// objects so that keys unknown to us reach the plugins unchanged, as the spec requires.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfList {
    pub cni_version: CniVersion,
    pub name: NetworkName,
    pub disable_check: bool,
    pub disable_gc: bool,
    pub plugins: Vec<Map<String, Value>>,
    /// The bytes the list was parsed from, cached beside results like libcni does.
    pub bytes: Vec<u8>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireConfList {
    #[serde(default)]
    cni_version: Option<String>,
    #[serde(default)]
    cni_versions: Option<Vec<String>>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient_bool")]
    disable_check: bool,
    #[serde(default, rename = "disableGC", deserialize_with = "lenient_bool")]
    disable_gc: bool,
    #[serde(default)]
    plugins: Option<Vec<Map<String, Value>>>,
}

/// libcni accepts `"disableCheck": "true"` as well as `true`.
fn lenient_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Value::deserialize(d)? {
        Value::Bool(b) => Ok(b),
        Value::String(s) => s
            .parse::<bool>()
            .map_err(|_| serde::de::Error::custom(format!("expected a boolean, got {s:?}"))),
        other => Err(serde::de::Error::custom(format!(
            "expected a boolean, got {other}"
        ))),
    }
}

impl NetConfList {
    /// Parses a `.conflist`. With `cniVersions` (1.1), the newest version we support wins.
    pub fn from_bytes(bytes: &[u8]) -> Result<NetConfList, CniError> {
        let wire: WireConfList = serde_json::from_slice(bytes)?;
        let cni_version = match (&wire.cni_versions, &wire.cni_version) {
            (Some(list), _) if !list.is_empty() => crate::version::newest_supported(
                list.iter().map(String::as_str),
            )
            .ok_or_else(|| {
                CniError::new(ErrorCode::IncompatibleVersion, "incompatible CNI versions")
                    .with_details(format!("cniVersions {list:?}: none is supported"))
            })?,
            (_, Some(v)) => CniVersion::try_from(v.as_str())?,
            _ => {
                return Err(CniError::invalid_config(
                    "configuration list has neither cniVersion nor cniVersions",
                ));
            }
        };
        let name = NetworkName::try_from(wire.name.unwrap_or_default().as_str())?;
        let plugins = wire.plugins.unwrap_or_default();
        if plugins.is_empty() {
            return Err(CniError::invalid_config(format!(
                "configuration list {name} has no plugins"
            )));
        }
        for (i, plugin) in plugins.iter().enumerate() {
            // libcni reads the list's own keys by exact name but each entry into a Go struct.
            let has_type = gojson::get(plugin, "type")
                .and_then(Value::as_str)
                .is_some_and(|t| !t.is_empty());
            if !has_type {
                return Err(CniError::invalid_config(format!(
                    "plugin {i} of list {name} has no type"
                )));
            }
        }
        Ok(NetConfList {
            cni_version,
            name,
            disable_check: wire.disable_check,
            disable_gc: wire.disable_gc,
            plugins,
            bytes: bytes.to_vec(),
        })
    }

    /// Wraps a single `.conf` into a list of one, as libcni's `ConfListFromConf` does.
    pub fn from_single_conf(bytes: &[u8]) -> Result<NetConfList, CniError> {
        let conf: Map<String, Value> = serde_json::from_slice(bytes)?;
        let mut list = Map::new();
        // libcni takes them from the parsed entry, so any casing counts.
        for key in ["cniVersion", "name"] {
            if let Some(v) = gojson::get(&conf, key) {
                list.insert(key.into(), v.clone());
            }
        }
        list.insert("plugins".into(), Value::Array(vec![Value::Object(conf)]));
        let list_bytes = serde_json::to_vec(&Value::Object(list))?;
        NetConfList::from_bytes(&list_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, Deserialize, Default)]
    #[serde(rename_all = "camelCase")]
    struct Bridge {
        bridge: Option<String>,
        #[serde(default)]
        is_gateway: bool,
    }

    #[test]
    fn spec_example_conf_parses_with_plugin_keys() {
        let raw = json!({
            "cniVersion": "1.1.0",
            "name": "dbnet",
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "keyUnknownToUs": {"a": 1},
            "ipam": {"type": "host-local", "subnet": "10.1.0.0/16", "gateway": "10.1.0.1"},
            "dns": {"nameservers": ["10.1.0.1"]},
            "runtimeConfig": {"mac": "00:11:22:33:44:55"},
            "args": {"cni": {"ips": ["10.1.0.9"]}}
        });
        let conf: NetConf<Bridge> = serde_json::from_value(raw).unwrap();
        assert_eq!(conf.plugin.bridge.as_deref(), Some("cni0"));
        assert!(conf.plugin.is_gateway);
        assert_eq!(conf.ipam.as_ref().unwrap().kind, "host-local");
        assert_eq!(conf.ipam.as_ref().unwrap().rest["subnet"], "10.1.0.0/16");
        assert_eq!(
            conf.runtime_arg::<String>("mac").unwrap().as_deref(),
            Some("00:11:22:33:44:55")
        );
        assert_eq!(
            conf.cni_arg::<Vec<String>>("ips").unwrap(),
            Some(vec!["10.1.0.9".to_string()])
        );
    }

    #[test]
    fn gc_attachments_both_keys() {
        for key in [VALID_ATTACHMENTS_KEY, LEGACY_ATTACHMENTS_KEY] {
            let raw = json!({"cniVersion": "1.1.0", "name": "n", "type": "t",
                key: [{"containerID": "c1", "ifname": "eth0"}]});
            let conf: NetConf<Map<String, Value>> = serde_json::from_value(raw).unwrap();
            assert_eq!(conf.valid_attachments().unwrap()[0].ifname.as_str(), "eth0");
        }
        // Both keys at once (a runtime writing both for compatibility): the spec key wins.
        let raw = json!({"cniVersion": "1.1.0", "name": "n", "type": "t",
            VALID_ATTACHMENTS_KEY: [{"containerID": "new", "ifname": "eth0"}],
            LEGACY_ATTACHMENTS_KEY: [{"containerID": "old", "ifname": "eth0"}]});
        let conf: NetConf<Map<String, Value>> = serde_json::from_value(raw).unwrap();
        assert_eq!(
            conf.valid_attachments().unwrap()[0].container_id.as_str(),
            "new"
        );
        // Neither: refused, never "release everything".
        let raw = json!({"cniVersion": "1.1.0", "name": "n", "type": "t"});
        let conf: NetConf<Map<String, Value>> = serde_json::from_value(raw).unwrap();
        assert_eq!(
            conf.valid_attachments().unwrap_err().code,
            ErrorCode::InvalidConfig
        );
    }

    #[test]
    fn prev_result_of_any_version() {
        let raw = json!({"cniVersion": "0.3.1", "name": "n", "type": "t",
            "prevResult": {"cniVersion": "0.3.1", "ips": [{"version": "4", "address": "10.0.0.2/24"}]}});
        let conf: NetConf<Map<String, Value>> = serde_json::from_value(raw).unwrap();
        assert_eq!(conf.prev_result().unwrap().ips.len(), 1);
    }

    #[test]
    fn conflist_versions_and_flags() {
        let list = NetConfList::from_bytes(
            br#"{"cniVersions": ["0.4.0", "1.1.0", "7.0.0"], "name": "n", "disableCheck": "true",
                 "disableGC": true, "plugins": [{"type": "loopback", "extra": 1}]}"#,
        )
        .unwrap();
        assert_eq!(list.cni_version, CniVersion::V1_1_0);
        assert!(list.disable_check && list.disable_gc);
        assert_eq!(list.plugins[0]["extra"], 1);

        let e = NetConfList::from_bytes(br#"{"cniVersion": "1.0.0", "name": "n", "plugins": []}"#)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
        let e = NetConfList::from_bytes(
            br#"{"cniVersion": "9.0.0", "name": "n", "plugins": [{"type":"x"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::IncompatibleVersion);
        let e = NetConfList::from_bytes(
            br#"{"cniVersion": "1.0.0", "name": "../n", "plugins": [{"type":"x"}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidConfig);
    }

    #[test]
    fn single_conf_becomes_list() {
        let list = NetConfList::from_single_conf(
            br#"{"cniVersion": "0.4.0", "name": "n", "type": "bridge", "bridge": "b0"}"#,
        )
        .unwrap();
        assert_eq!(list.plugins.len(), 1);
        assert_eq!(list.plugins[0]["bridge"], "b0");
    }
}
