//! The plugin's keys — at the top level of the configuration or in the `bandwidth` capability
//! (`runtimeConfig.bandwidth`) — and their validation into [`Limits`].
//!
//! Which entry counts follows the reference: the top-level one as soon as any of its keys is
//! present (Go allocates the embedded entry then), the capability's otherwise. The two are
//! never merged.

use std::net::IpAddr;

use berth_cni::NetConf;
use berth_netlink::ipnetwork::IpNetwork;
use serde::Deserialize;

/// The keys, as they appear at the top level and inside `runtimeConfig.bandwidth`. Rates in
/// bits per second, bursts in bits (the reference's units).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BandwidthConf {
    #[serde(default)]
    pub ingress_rate: Option<u64>,
    #[serde(default)]
    pub ingress_burst: Option<u64>,
    #[serde(default)]
    pub egress_rate: Option<u64>,
    #[serde(default)]
    pub egress_burst: Option<u64>,
    /// Only traffic to/from these subnets is shaped (newer reference).
    #[serde(default)]
    pub shaped_subnets: Option<Vec<String>>,
    /// Traffic to/from these subnets is not shaped (newer reference).
    #[serde(default)]
    pub unshaped_subnets: Option<Vec<String>>,
}

impl BandwidthConf {
    fn is_present(&self) -> bool {
        *self != BandwidthConf::default()
    }
}

/// The capability's key in `runtimeConfig`.
pub const CAPABILITY: &str = "bandwidth";

/// Which way traffic goes, seen from the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Into the container: shaped on the host end of the veth, as it leaves the host.
    Ingress,
    /// Out of the container: redirected from the host end to an ifb device and shaped there.
    Egress,
}

impl Direction {
    pub fn rate_key(self) -> &'static str {
        match self {
            Direction::Ingress => "ingressRate",
            Direction::Egress => "egressRate",
        }
    }

    pub fn burst_key(self) -> &'static str {
        match self {
            Direction::Ingress => "ingressBurst",
            Direction::Egress => "egressBurst",
        }
    }
}

/// One direction's limit, validated: both non-zero, the burst under 4 GB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub direction: Direction,
    /// Bits per second.
    pub rate: u64,
    /// Bits.
    pub burst: u64,
}

/// Which traffic the limits apply to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scope {
    /// Everything (the reference 1.1.1 layout: one tbf per direction).
    #[default]
    All,
    /// Only traffic exchanged with these subnets (`shapedSubnets`).
    Only(Vec<IpNetwork>),
    /// Everything except traffic exchanged with these subnets (`unshapedSubnets`).
    Except(Vec<IpNetwork>),
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Limits {
    pub ingress: Option<Limit>,
    pub egress: Option<Limit>,
    pub scope: Scope,
}

impl Limits {
    /// Nothing to shape: ADD passes `prevResult` through.
    pub fn is_zero(&self) -> bool {
        self.ingress.is_none() && self.egress.is_none()
    }

    /// The limits of a configuration: the top-level entry, else the capability's.
    pub fn from_netconf(conf: &NetConf<BandwidthConf>) -> Result<Limits, ConfigError> {
        let entry = if conf.plugin.is_present() {
            conf.plugin.clone()
        } else {
            conf.runtime_arg::<BandwidthConf>(CAPABILITY)
                .map_err(|e| ConfigError::Capability(e.msg))?
                .unwrap_or_default()
        };
        Limits::from_entry(&entry)
    }

    /// The reference's checks, in its order: rate and burst of each direction, then (only
    /// when something is shaped) the subnets.
    pub fn from_entry(entry: &BandwidthConf) -> Result<Limits, ConfigError> {
        let ingress = limit(
            Direction::Ingress,
            entry.ingress_rate.unwrap_or(0),
            entry.ingress_burst.unwrap_or(0),
        )?;
        let egress = limit(
            Direction::Egress,
            entry.egress_rate.unwrap_or(0),
            entry.egress_burst.unwrap_or(0),
        )?;
        let mut limits = Limits {
            ingress,
            egress,
            scope: Scope::All,
        };
        if !limits.is_zero() {
            limits.scope = scope(
                entry.shaped_subnets.as_deref().unwrap_or_default(),
                entry.unshaped_subnets.as_deref().unwrap_or_default(),
            )?;
        }
        Ok(limits)
    }
}

/// 4 GB in bytes: the kernel's fields are 32-bit.
const MAX_BURST_BYTES: u64 = u32::MAX as u64;

fn limit(direction: Direction, rate: u64, burst: u64) -> Result<Option<Limit>, ConfigError> {
    match (rate, burst) {
        (0, 0) => Ok(None),
        (_, 0) => Err(ConfigError::RateWithoutBurst {
            rate: direction.rate_key(),
            burst: direction.burst_key(),
        }),
        (0, _) => Err(ConfigError::BurstWithoutRate {
            rate: direction.rate_key(),
            burst: direction.burst_key(),
        }),
        (_, b) if b / 8 >= MAX_BURST_BYTES => Err(ConfigError::BurstTooLarge {
            burst: direction.burst_key(),
            value: b,
        }),
        // tc rates are whole bytes per second.
        (r, _) if r < 8 => Err(ConfigError::RateTooSmall {
            rate: direction.rate_key(),
            value: r,
        }),
        (rate, burst) => Ok(Some(Limit {
            direction,
            rate,
            burst,
        })),
    }
}

fn scope(shaped: &[String], unshaped: &[String]) -> Result<Scope, ConfigError> {
    if !shaped.is_empty() && !unshaped.is_empty() {
        return Err(ConfigError::BothSubnetLists);
    }
    let parse = |list: &[String]| -> Result<Vec<IpNetwork>, ConfigError> {
        list.iter().map(|s| subnet(s)).collect()
    };
    Ok(if !shaped.is_empty() {
        Scope::Only(parse(shaped)?)
    } else if !unshaped.is_empty() {
        Scope::Except(parse(unshaped)?)
    } else {
        Scope::All
    })
}

/// A CIDR as Go's `net.ParseCIDR` takes it: the prefix length is required; host bits are
/// allowed and dropped.
fn subnet(text: &str) -> Result<IpNetwork, ConfigError> {
    let bad = |reason: String| ConfigError::BadSubnet {
        subnet: text.to_owned(),
        reason,
    };
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| bad("missing the prefix length".to_owned()))?;
    let addr: IpAddr = addr.parse().map_err(|e| bad(format!("{e}")))?;
    let prefix: u8 = prefix
        .parse()
        .map_err(|_| bad(format!("invalid prefix length {prefix:?}")))?;
    let net = IpNetwork::new(addr, prefix).map_err(|e| bad(e.to_string()))?;
    IpNetwork::new(net.network(), prefix).map_err(|e| bad(e.to_string()))
}

/// Configuration errors, with the reference's messages where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("if rate is set, burst must also be set ({rate} without {burst})")]
    RateWithoutBurst {
        rate: &'static str,
        burst: &'static str,
    },
    #[error("if burst is set, rate must also be set ({burst} without {rate})")]
    BurstWithoutRate {
        rate: &'static str,
        burst: &'static str,
    },
    #[error("burst cannot be more than 4GB ({burst} is {value} bits)")]
    BurstTooLarge { burst: &'static str, value: u64 },
    #[error("{rate} {value} bits/s is below one byte per second, the smallest rate tc has")]
    RateTooSmall { rate: &'static str, value: u64 },
    #[error(
        "unshapedSubnets and shapedSubnets cannot be both specified, one of them should be discarded"
    )]
    BothSubnetLists,
    #[error("bad subnet {subnet:?} provided, details {reason}")]
    BadSubnet { subnet: String, reason: String },
    #[error("runtimeConfig.bandwidth: {0}")]
    Capability(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_cni::plugin::parse_conf;
    use serde_json::{Value, json};

    fn limits(conf: Value) -> Result<Limits, ConfigError> {
        let mut base = json!({"cniVersion": "1.0.0", "name": "n", "type": "bandwidth"});
        for (k, v) in conf.as_object().unwrap() {
            base[k] = v.clone();
        }
        let nc: NetConf<BandwidthConf> = parse_conf(base.to_string().as_bytes()).unwrap();
        Limits::from_netconf(&nc)
    }

    #[test]
    fn top_level_entry_wins_whole() {
        let l = limits(json!({"egressRate": 2000, "egressBurst": 80,
            "runtimeConfig": {"bandwidth": {"ingressRate": 1000, "ingressBurst": 80}}}))
        .unwrap();
        assert_eq!(l.ingress, None, "never merged with the capability");
        assert_eq!(l.egress.unwrap().rate, 2000);

        let l = limits(json!({"runtimeConfig": {"bandwidth":
            {"ingressRate": 1000, "ingressBurst": 80}}}))
        .unwrap();
        assert_eq!(
            l.ingress,
            Some(Limit {
                direction: Direction::Ingress,
                rate: 1000,
                burst: 80
            })
        );
        assert!(limits(json!({})).unwrap().is_zero());
        // Present but zero: still the top-level entry (and nothing to shape).
        assert!(
            limits(json!({"ingressRate": 0, "runtimeConfig": {"bandwidth":
                {"ingressRate": 1000, "ingressBurst": 80}}}))
            .unwrap()
            .is_zero()
        );
    }

    #[test]
    fn rate_and_burst_go_together() {
        let e = limits(json!({"ingressRate": 1000})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "if rate is set, burst must also be set (ingressRate without ingressBurst)"
        );
        let e = limits(json!({"egressBurst": 1000})).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("if burst is set, rate must also be set")
        );
        let e =
            limits(json!({"ingressRate": 1000, "ingressBurst": 34_359_738_368u64})).unwrap_err();
        assert!(e.to_string().starts_with("burst cannot be more than 4GB"));
        let e = limits(json!({"ingressRate": 7, "ingressBurst": 8000})).unwrap_err();
        assert!(matches!(e, ConfigError::RateTooSmall { .. }));
    }

    #[test]
    fn subnets() {
        let l = limits(json!({"ingressRate": 8000, "ingressBurst": 8000,
            "unshapedSubnets": ["10.1.2.3/8", "fd00:db8:abcd:1234:e000::/68"]}))
        .unwrap();
        let Scope::Except(nets) = l.scope else {
            panic!("{:?}", l.scope)
        };
        assert_eq!(nets[0].to_string(), "10.0.0.0/8");
        assert_eq!(nets[1].to_string(), "fd00:db8:abcd:1234:e000::/68");

        let e = limits(json!({"ingressRate": 8000, "ingressBurst": 8000,
            "shapedSubnets": ["10.0.0.0/8"], "unshapedSubnets": ["10.0.0.0/8"]}))
        .unwrap_err();
        assert_eq!(e, ConfigError::BothSubnetLists);
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "::/129"] {
            let e = limits(json!({"ingressRate": 8000, "ingressBurst": 8000,
                "shapedSubnets": [bad]}))
            .unwrap_err();
            assert!(matches!(e, ConfigError::BadSubnet { .. }), "{bad}: {e}");
        }
        // Not validated when nothing is shaped (the reference's order).
        assert!(
            limits(json!({"shapedSubnets": ["nonsense"]}))
                .unwrap()
                .is_zero()
        );
    }
}
