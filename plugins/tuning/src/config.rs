//! The plugin's keys (wire form) and their validation into [`Settings`], the only form the rest
//! of the plugin sees.
//!
//! Sources and precedence are the reference's (`parseConf`): the top-level keys, then
//! `CNI_ARGS` `MAC=`, then the `mac` capability (`runtimeConfig.mac`), then `args.cni`, each
//! overriding the one before.

use std::fmt;
use std::path::PathBuf;

use berth_cni::{CniArgs, CniError, NetConf};
use berth_netlink::Mac;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

use crate::sysctl::{self, Sysctl, SysctlKeyError};

/// Where the original interface values are kept between ADD and DEL: the reference's default,
/// so that a host can switch implementations with containers running.
pub const DEFAULT_DATA_DIR: &str = "/run/cni/tuning";

/// The plugin's own keys, as they arrive. Names and types follow the reference's JSON tags.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TuningConf {
    /// Where the original values are saved; empty or missing means [`DEFAULT_DATA_DIR`].
    #[serde(default)]
    pub data_dir: Option<String>,
    #[serde(default)]
    pub sysctl: Option<Sysctls>,
    #[serde(default)]
    pub mac: Option<String>,
    /// Only `true` does anything: the reference never turns promiscuous mode off.
    #[serde(default)]
    pub promisc: bool,
    /// Go `int`: 0 means "not set"; out-of-range values are refused in [`Settings`].
    #[serde(default)]
    pub mtu: Option<i64>,
    /// `false` is meaningful here: it turns all-multicast mode off.
    #[serde(default)]
    pub allmulti: Option<bool>,
    /// The key of newer reference versions (`txQLen`); 0 is a valid length.
    #[serde(default, rename = "txQLen")]
    pub tx_q_len: Option<i64>,
}

/// The `sysctl` object: key → value, in the order written (the reference applies them in Go's
/// random map order; any fixed order is a valid instance of that). A key written twice keeps
/// its first position and its last value, as a Go map would hold it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Sysctls(pub Vec<(String, String)>);

impl Sysctls {
    /// Sets `key`, replacing an existing entry in place (how `args.cni.sysctl` merges).
    fn set(&mut self, key: String, value: String) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(entry) => entry.1 = value,
            None => self.0.push((key, value)),
        }
    }
}

impl<'de> Deserialize<'de> for Sysctls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Sysctls, D::Error> {
        struct SysctlVisitor;
        impl<'de> Visitor<'de> for SysctlVisitor {
            type Value = Sysctls;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of sysctl names to string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Sysctls, A::Error> {
                let mut out = Sysctls::default();
                while let Some((key, value)) = map.next_entry::<String, String>()? {
                    out.set(key, value);
                }
                Ok(out)
            }
            // Go decodes `null` into a nil map: nothing to set.
            fn visit_unit<E>(self) -> Result<Sysctls, E> {
                Ok(Sysctls::default())
            }
        }
        d.deserialize_map(SysctlVisitor)
    }
}

/// Errors of the `config` module.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `args.cni.<key>` or `runtimeConfig.<key>` has the wrong type.
    #[error("read {key}")]
    Arg {
        key: &'static str,
        #[source]
        source: CniError,
    },
    #[error("invalid MAC address {value:?} (from {from}): {reason}")]
    Mac {
        value: String,
        from: &'static str,
        reason: &'static str,
    },
    #[error(
        "invalid mtu {value} (from {from}): must be between 1 and {}",
        u32::MAX
    )]
    Mtu { value: i64, from: &'static str },
    #[error(
        "invalid txQLen {value} (from {from}): must be between 0 and {}",
        u32::MAX
    )]
    TxQLen { value: i64, from: &'static str },
    #[error(transparent)]
    SysctlKey(#[from] SysctlKeyError),
}

/// The interface attributes to change. Empty (the default) means the interface is not touched
/// and need not even exist, as in the reference.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    pub mac: Option<Mac>,
    pub promisc: bool,
    pub mtu: Option<u32>,
    pub allmulti: Option<bool>,
    pub txqlen: Option<u32>,
}

impl Attrs {
    pub fn is_empty(&self) -> bool {
        *self == Attrs::default()
    }
}

/// A validated configuration: everything ADD and CHECK act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub sysctls: Vec<Sysctl>,
    pub attrs: Attrs,
    pub data_dir: PathBuf,
}

/// The keys `args.cni` may carry (the reference's `IPAMArgs`, plus `txQLen` of newer versions).
const ARG_SYSCTL: &str = "sysctl";
const ARG_MAC: &str = "mac";
const ARG_PROMISC: &str = "promisc";
const ARG_MTU: &str = "mtu";
const ARG_ALLMULTI: &str = "allmulti";
const ARG_TXQLEN: &str = "txQLen";

impl Settings {
    /// Validates `conf` for an attachment whose interface is `ifname`, with `cni_args` from
    /// `CNI_ARGS` (`None` for STATUS, which has no attachment). Nothing is touched here, so a
    /// refused configuration leaves the system as it was.
    pub fn new(
        conf: &NetConf<TuningConf>,
        cni_args: Option<&CniArgs>,
        ifname: &str,
    ) -> Result<Settings, ConfigError> {
        let keys = &conf.plugin;
        let arg = |key: &'static str| move |source| ConfigError::Arg { key, source };

        // MAC: each later source overrides the earlier ones. The reference ignores an empty
        // CNI_ARGS or runtimeConfig value, but lets an empty `args.cni.mac` clear the setting.
        let mut mac = keys.mac.clone().map(|m| (m, "mac"));
        if let Some(m) = cni_args
            .and_then(|a| a.get("MAC"))
            .filter(|m| !m.is_empty())
        {
            mac = Some((m.to_owned(), "CNI_ARGS MAC"));
        }
        let runtime: Option<String> = conf.runtime_arg("mac").map_err(arg("runtimeConfig.mac"))?;
        if let Some(m) = runtime.filter(|m| !m.is_empty()) {
            mac = Some((m, "runtimeConfig.mac"));
        }
        if let Some(m) = conf
            .cni_arg::<String>(ARG_MAC)
            .map_err(arg("args.cni.mac"))?
        {
            mac = Some((m, "args.cni.mac"));
        }
        let mac = match mac.filter(|(m, _)| !m.is_empty()) {
            Some((value, from)) => Some(parse_mac(&value).map_err(|reason| ConfigError::Mac {
                value,
                from,
                reason,
            })?),
            None => None,
        };

        let mut sysctls = keys.sysctl.clone().unwrap_or_default();
        if let Some(extra) = conf
            .cni_arg::<Sysctls>(ARG_SYSCTL)
            .map_err(arg("args.cni.sysctl"))?
        {
            for (key, value) in extra.0 {
                sysctls.set(key, value);
            }
        }
        let sysctls = sysctls
            .0
            .into_iter()
            .map(|(key, value)| {
                let path = sysctl::resolve(&key, ifname)?;
                Ok(Sysctl { key, path, value })
            })
            .collect::<Result<Vec<_>, SysctlKeyError>>()?;

        let promisc = conf
            .cni_arg::<bool>(ARG_PROMISC)
            .map_err(arg("args.cni.promisc"))?
            .unwrap_or(keys.promisc);

        let (mtu, mtu_from) = match conf.cni_arg::<i64>(ARG_MTU).map_err(arg("args.cni.mtu"))? {
            Some(v) => (Some(v), "args.cni.mtu"),
            None => (keys.mtu, "mtu"),
        };
        let mtu = match mtu {
            None | Some(0) => None,
            Some(v) => Some(u32::try_from(v).map_err(|_| ConfigError::Mtu {
                value: v,
                from: mtu_from,
            })?),
        };

        let allmulti = conf
            .cni_arg::<bool>(ARG_ALLMULTI)
            .map_err(arg("args.cni.allmulti"))?
            .or(keys.allmulti);

        let (txqlen, txqlen_from) = match conf
            .cni_arg::<i64>(ARG_TXQLEN)
            .map_err(arg("args.cni.txQLen"))?
        {
            Some(v) => (Some(v), "args.cni.txQLen"),
            None => (keys.tx_q_len, "txQLen"),
        };
        let txqlen = match txqlen {
            None => None,
            Some(v) => Some(u32::try_from(v).map_err(|_| ConfigError::TxQLen {
                value: v,
                from: txqlen_from,
            })?),
        };

        Ok(Settings {
            sysctls,
            attrs: Attrs {
                mac,
                promisc,
                mtu,
                allmulti,
                txqlen,
            },
            data_dir: data_dir(keys),
        })
    }
}

/// `dataDir`, or the reference's default. DEL reads only this key, so that a configuration
/// with a bad value elsewhere can still be torn down.
pub fn data_dir(keys: &TuningConf) -> PathBuf {
    match keys.data_dir.as_deref() {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(DEFAULT_DATA_DIR),
    }
}

/// Parses a MAC address the way Go's `net.ParseMAC` writes a 48-bit one (`aa:bb:cc:dd:ee:ff`,
/// `aa-bb-cc-dd-ee-ff` or `aabb.ccdd.eeff`), and refuses what the kernel would refuse on an
/// Ethernet device (multicast, all zeros) before anything has been changed.
pub fn parse_mac(s: &str) -> Result<Mac, &'static str> {
    let octets: Vec<String> = if s.contains('.') {
        let groups: Vec<&str> = s.split('.').collect();
        if groups.len() != 3 || groups.iter().any(|g| g.len() != 4) {
            return Err("expected 3 groups of 4 hexadecimal digits separated by '.'");
        }
        groups
            .iter()
            .flat_map(|g| [g[..2].to_owned(), g[2..].to_owned()])
            .collect()
    } else {
        s.split([':', '-']).map(str::to_owned).collect()
    };
    if octets.len() != 6 {
        return Err("expected 6 octets separated by ':' or '-'");
    }
    let mut mac = [0u8; 6];
    for (byte, octet) in mac.iter_mut().zip(&octets) {
        if octet.len() != 2 || !octet.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("each octet must be 2 hexadecimal digits");
        }
        *byte = u8::from_str_radix(octet, 16).map_err(|_| "not hexadecimal")?;
    }
    if mac[0] & 1 == 1 {
        return Err("a multicast address cannot be assigned to an interface");
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
    use serde_json::{Value, json};

    fn netconf(extra: Value) -> NetConf<TuningConf> {
        let mut conf = json!({"cniVersion": "1.0.0", "name": "n", "type": "tuning"});
        for (k, v) in extra.as_object().unwrap() {
            conf[k] = v.clone();
        }
        berth_cni::plugin::parse_conf(conf.to_string().as_bytes()).unwrap()
    }

    fn settings(extra: Value, cni_args: &str) -> Result<Settings, ConfigError> {
        let args = CniArgs::parse(cni_args).unwrap();
        Settings::new(&netconf(extra), Some(&args), "eth0")
    }

    #[test]
    fn no_keys_is_a_no_op() {
        let s = settings(json!({}), "").unwrap();
        assert!(s.sysctls.is_empty());
        assert!(s.attrs.is_empty());
        assert_eq!(s.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    }

    #[test]
    fn mac_precedence_is_the_reference_one() {
        let all = json!({"mac": "02:00:00:00:00:01",
            "runtimeConfig": {"mac": "02:00:00:00:00:03"},
            "args": {"cni": {"mac": "02:00:00:00:00:04"}}});
        let mac = |extra: Value, args: &str| settings(extra, args).unwrap().attrs.mac;
        assert_eq!(
            mac(all.clone(), "MAC=02:00:00:00:00:02"),
            Some([2, 0, 0, 0, 0, 4])
        );
        let mut no_args = all.clone();
        no_args.as_object_mut().unwrap().remove("args");
        assert_eq!(
            mac(no_args.clone(), "MAC=02:00:00:00:00:02"),
            Some([2, 0, 0, 0, 0, 3])
        );
        no_args.as_object_mut().unwrap().remove("runtimeConfig");
        assert_eq!(
            mac(no_args.clone(), "IgnoreUnknown=1;MAC=02:00:00:00:00:02"),
            Some([2, 0, 0, 0, 0, 2])
        );
        assert_eq!(mac(no_args.clone(), "MAC="), Some([2, 0, 0, 0, 0, 1]));
        // An empty args.cni.mac clears it, as in the reference.
        assert_eq!(
            mac(
                json!({"mac": "02:00:00:00:00:01",
            "args": {"cni": {"mac": ""}}}),
                ""
            ),
            None
        );
    }

    #[test]
    fn args_cni_overrides_and_merges() {
        let s = settings(
            json!({"sysctl": {"net.core.somaxconn": "500", "net.ipv4.ip_forward": "1"},
                   "mtu": 1400, "promisc": true, "allmulti": true, "txQLen": 100,
                   "args": {"cni": {"sysctl": {"net.core.somaxconn": "600",
                                               "net.ipv4.conf.IFNAME.arp_filter": "1"},
                                    "mtu": 1300, "promisc": false, "allmulti": false,
                                    "txQLen": 0}}}),
            "",
        )
        .unwrap();
        let got: Vec<(&str, &str)> = s
            .sysctls
            .iter()
            .map(|s| (s.path.as_str(), s.value.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("net/core/somaxconn", "600"),
                ("net/ipv4/ip_forward", "1"),
                ("net/ipv4/conf/eth0/arp_filter", "1"),
            ]
        );
        assert_eq!(
            s.attrs,
            Attrs {
                mac: None,
                promisc: false,
                mtu: Some(1300),
                allmulti: Some(false),
                txqlen: Some(0),
            }
        );
    }

    #[test]
    fn args_cni_sysctl_without_top_level_sysctl() {
        // The reference panics here (assignment to a nil map).
        let s = settings(
            json!({"args": {"cni": {"sysctl": {"net.core.somaxconn": "600"}}}}),
            "",
        )
        .unwrap();
        assert_eq!(s.sysctls.len(), 1);
    }

    #[test]
    fn numbers_out_of_range_are_refused() {
        for extra in [
            json!({"mtu": -1}),
            json!({"mtu": 1_i64 << 40}),
            json!({"txQLen": -1}),
            json!({"args": {"cni": {"mtu": -5}}}),
        ] {
            assert!(settings(extra.clone(), "").is_err(), "{extra}");
        }
        assert_eq!(settings(json!({"mtu": 0}), "").unwrap().attrs.mtu, None);
    }

    #[test]
    fn wrong_arg_types_keep_the_decode_code() {
        let err = settings(json!({"args": {"cni": {"mtu": "1400"}}}), "").unwrap_err();
        match err {
            ConfigError::Arg { source, .. } => {
                assert_eq!(source.code, berth_cni::ErrorCode::Decode)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn macs_in_go_forms() {
        for s in ["c2:b0:57:49:47:f1", "C2-B0-57-49-47-F1", "c2b0.5749.47f1"] {
            assert_eq!(
                parse_mac(s),
                Ok([0xc2, 0xb0, 0x57, 0x49, 0x47, 0xf1]),
                "{s}"
            );
        }
        for s in [
            "",
            "zz",
            "c2:b0:57:49:47",
            "c2:b0:57:49:47:f1:00",
            "c2:b0:57:49:47:g1",
            "c2:b0:57:49:47:1",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "c2b0.5749.47f",
            "+2:b0:57:49:47:f1",
        ] {
            assert!(parse_mac(s).is_err(), "{s}");
        }
    }

    #[test]
    fn sysctl_keys_written_twice_keep_the_last_value() {
        let conf: TuningConf =
            serde_json::from_str(r#"{"sysctl": {"net.a": "1", "net.b": "2", "net.a": "3"}}"#)
                .unwrap();
        assert_eq!(
            conf.sysctl.unwrap().0,
            [("net.a".into(), "3".into()), ("net.b".into(), "2".into())]
        );
    }

    #[test]
    fn sysctl_values_must_be_strings() {
        assert!(serde_json::from_str::<TuningConf>(r#"{"sysctl": {"net.a": 1}}"#).is_err());
        let conf: TuningConf = serde_json::from_str(r#"{"sysctl": null}"#).unwrap();
        assert_eq!(conf.sysctl.unwrap_or_default(), Sysctls::default());
    }
}
