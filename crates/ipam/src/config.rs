//! The host-local `ipam` section: wire struct and its validated form.
//!
//! Mirrors the reference's `LoadIPAMConfig` (v1.1.1):
//! - the single-range shorthand (`subnet`, `rangeStart`, `rangeEnd`, `gateway` at the top of
//!   `ipam`) becomes its own range set, *prepended* to `ranges`; it is only looked at when
//!   `subnet` is set (the other shorthand keys alone are ignored, as in the reference);
//! - runtime `ipRanges` (capability) are prepended before that;
//! - no range set at all is an error; range sets must not overlap each other;
//! - `dataDir` defaults to `/var/lib/cni/networks` (also when empty);
//! - unknown keys are ignored.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::ErrorKind;
use crate::disk::DEFAULT_DATA_DIR;
use crate::range::{RangeConf, RangeError, parse_ip, parse_subnet};
use crate::range_set::{RangeSet, RangeSetError};

/// Wire form of the `ipam` object of a host-local network config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostLocalConf {
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranges: Vec<Vec<RangeConf>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolv_conf: Option<PathBuf>,
}

/// Wire form of a route (`{"dst": "0.0.0.0/0", "gw": "198.18.5.1"}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteConf {
    #[serde(default)]
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// A validated route. `dst` keeps the address as written, as CNI's `types.IPNet` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
}

/// The validated `ipam` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConfig {
    /// One address is allocated from each set, in this order; the index is the `<set>` of
    /// `last_reserved_ip.<set>`.
    pub range_sets: Vec<RangeSet>,
    pub routes: Vec<Route>,
    pub data_dir: PathBuf,
    pub resolv_conf: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no IP ranges specified")]
    NoRanges,
    #[error("invalid range set {index}")]
    RangeSet {
        index: usize,
        #[source]
        source: RangeSetError,
    },
    #[error("range set {a} overlaps with range set {b}")]
    SetsOverlap { a: usize, b: usize },
    #[error("invalid route {index}: dst {value:?}")]
    RouteDst {
        index: usize,
        value: String,
        #[source]
        source: RangeError,
    },
    #[error("invalid route {index}: gw {value:?}")]
    RouteGw {
        index: usize,
        value: String,
        #[source]
        source: RangeError,
    },
}

impl ConfigError {
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidConfig
    }
}

impl HostLocalConf {
    /// Validate into [`IpamConfig`].
    pub fn validate(&self) -> Result<IpamConfig, ConfigError> {
        self.validate_with_runtime_ranges(&[])
    }

    /// Validate, with `runtimeConfig.ipRanges` (the `ipRanges` capability) prepended before
    /// every configured set, as the reference does.
    pub fn validate_with_runtime_ranges(
        &self,
        runtime_ranges: &[Vec<RangeConf>],
    ) -> Result<IpamConfig, ConfigError> {
        let shorthand = self
            .subnet
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(|subnet| {
                vec![RangeConf {
                    subnet: subnet.to_owned(),
                    range_start: self.range_start.clone(),
                    range_end: self.range_end.clone(),
                    gateway: self.gateway.clone(),
                }]
            });
        let confs: Vec<&Vec<RangeConf>> = runtime_ranges
            .iter()
            .chain(shorthand.as_ref())
            .chain(&self.ranges)
            .collect();
        if confs.is_empty() {
            return Err(ConfigError::NoRanges);
        }
        let range_sets = confs
            .iter()
            .enumerate()
            .map(|(index, c)| {
                RangeSet::from_confs(c).map_err(|source| ConfigError::RangeSet { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (a, sa) in range_sets.iter().enumerate() {
            if let Some(off) = range_sets[a + 1..].iter().position(|sb| sa.overlaps(sb)) {
                return Err(ConfigError::SetsOverlap { a, b: a + 1 + off });
            }
        }

        let routes = self
            .routes
            .iter()
            .enumerate()
            .map(|(index, r)| {
                let dst = parse_subnet(&r.dst).map_err(|source| ConfigError::RouteDst {
                    index,
                    value: r.dst.clone(),
                    source,
                })?;
                let gw = match r.gw.as_deref().map(str::trim) {
                    None | Some("") => None,
                    Some(text) => {
                        Some(parse_ip("gw", text).map_err(|source| ConfigError::RouteGw {
                            index,
                            value: text.to_owned(),
                            source,
                        })?)
                    }
                };
                Ok(Route { dst, gw })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;

        let data_dir = match &self.data_dir {
            Some(d) if !d.as_os_str().is_empty() => d.clone(),
            _ => PathBuf::from(DEFAULT_DATA_DIR),
        };
        let resolv_conf = self
            .resolv_conf
            .clone()
            .filter(|p| !p.as_os_str().is_empty());
        Ok(IpamConfig {
            range_sets,
            routes,
            data_dir,
            resolv_conf,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<IpamConfig, ConfigError> {
        serde_json::from_str::<HostLocalConf>(json)
            .unwrap()
            .validate()
    }

    fn sets(cfg: &IpamConfig) -> Vec<String> {
        cfg.range_sets.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn shorthand_is_prepended_to_ranges() {
        // Reference output for this config: 198.18.5.2, 198.18.6.2, 2001:db8::2, in that order.
        let cfg = parse(
            r#"{"type":"host-local","subnet":"198.18.5.0/24",
                "ranges":[[{"subnet":"198.18.6.0/24"}],[{"subnet":"2001:db8::/64"}]],
                "dataDir":"/tmp/x","someRuntimeKey":{"a":1}}"#,
        )
        .unwrap();
        assert_eq!(
            sets(&cfg),
            [
                "198.18.5.1-198.18.5.254",
                "198.18.6.1-198.18.6.254",
                "2001:db8::1-2001:db8::ffff:ffff:ffff:ffff"
            ]
        );
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(cfg.resolv_conf, None);
    }

    #[test]
    fn runtime_ranges_come_first() {
        let conf: HostLocalConf = serde_json::from_str(
            r#"{"subnet":"198.18.5.0/24","ranges":[[{"subnet":"198.18.6.0/24"}]]}"#,
        )
        .unwrap();
        let rt = vec![vec![RangeConf {
            subnet: "198.18.7.0/24".into(),
            ..Default::default()
        }]];
        let cfg = conf.validate_with_runtime_ranges(&rt).unwrap();
        assert_eq!(
            sets(&cfg),
            [
                "198.18.7.1-198.18.7.254",
                "198.18.5.1-198.18.5.254",
                "198.18.6.1-198.18.6.254"
            ]
        );
    }

    #[test]
    fn shorthand_keys_without_subnet_are_ignored() {
        let cfg = parse(r#"{"rangeStart":"198.18.5.3","ranges":[[{"subnet":"198.18.6.0/24"}]]}"#)
            .unwrap();
        assert_eq!(sets(&cfg), ["198.18.6.1-198.18.6.254"]);
    }

    #[test]
    fn defaults_and_errors() {
        let cfg = parse(r#"{"subnet":"198.18.5.0/24","dataDir":""}"#).unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("/var/lib/cni/networks"));
        assert!(matches!(parse(r#"{}"#), Err(ConfigError::NoRanges)));
        assert_eq!(
            parse(r#"{}"#).unwrap_err().to_string(),
            "no IP ranges specified"
        );
        assert!(matches!(
            parse(r#"{"subnet":""}"#),
            Err(ConfigError::NoRanges)
        ));
        let err = parse(r#"{"ranges":[[]]}"#).unwrap_err();
        assert!(matches!(
            err,
            ConfigError::RangeSet {
                index: 0,
                source: RangeSetError::Empty
            }
        ));
        let err =
            parse(r#"{"ranges":[[{"subnet":"198.18.6.0/24"}],[{"subnet":"198.18.6.0/25"}]]}"#)
                .unwrap_err();
        assert_eq!(err.to_string(), "range set 0 overlaps with range set 1");
        let err = parse(r#"{"subnet":"198.18.6.0/24","ranges":[[{"subnet":"198.18.7.0/24"}],[{"subnet":"198.18.6.128/25"}]]}"#)
            .unwrap_err();
        assert!(matches!(err, ConfigError::SetsOverlap { a: 0, b: 2 }));
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        // Error chain names the set, the range and the field.
        let err = parse(r#"{"ranges":[[{"subnet":"198.18.6.0/24"}],[{"subnet":"198.18.7.0/24"},{"subnet":"198.18.8.0/24","rangeEnd":"198.18.9.1"}]]}"#)
            .unwrap_err();
        let mut chain = vec![err.to_string()];
        let mut src = std::error::Error::source(&err);
        while let Some(s) = src {
            chain.push(s.to_string());
            src = s.source();
        }
        assert_eq!(
            chain.join(": "),
            "invalid range set 1: range 1 of the set: \
             rangeEnd 198.18.9.1 is not in subnet 198.18.8.0/24"
        );
    }

    #[test]
    fn routes_and_resolv_conf() {
        let cfg = parse(
            r#"{"subnet":"2001:db8::/64","resolvConf":"/etc/resolv.conf",
                "routes":[{"dst":"0.0.0.0/0"},{"dst":"198.18.0.0/15","gw":"198.18.5.1"},
                          {"dst":"::/0","gw":""}]}"#,
        )
        .unwrap();
        assert_eq!(cfg.resolv_conf, Some(PathBuf::from("/etc/resolv.conf")));
        assert_eq!(cfg.routes.len(), 3);
        assert_eq!(cfg.routes[1].dst.to_string(), "198.18.0.0/15");
        assert_eq!(cfg.routes[1].gw, Some("198.18.5.1".parse().unwrap()));
        assert_eq!(cfg.routes[2].gw, None);
        let err = parse(r#"{"subnet":"198.18.5.0/24","routes":[{"dst":"nope"}]}"#).unwrap_err();
        assert!(matches!(err, ConfigError::RouteDst { index: 0, .. }));
        let err = parse(r#"{"subnet":"198.18.5.0/24","routes":[{"dst":"0.0.0.0/0","gw":"x"}]}"#)
            .unwrap_err();
        assert!(matches!(err, ConfigError::RouteGw { index: 0, .. }));
    }

    #[test]
    fn wire_round_trip() {
        let json = r#"{"type":"host-local","ranges":[[{"subnet":"198.18.6.0/24","rangeStart":"198.18.6.10","rangeEnd":"198.18.6.20","gateway":"198.18.6.1"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":"/d"}"#;
        let conf: HostLocalConf = serde_json::from_str(json).unwrap();
        assert_eq!(serde_json::to_string(&conf).unwrap(), json);
    }
}
