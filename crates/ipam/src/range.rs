//! One allocation range: a subnet, an inclusive `[rangeStart, rangeEnd]` window and a gateway.
//!
//! Canonicalisation follows the reference `host-local` (v1.1.1, checked by running it):
//! - `subnet` must be in CIDR form; a prefix longer than `bits - 2` (IPv4 /31 and /32, IPv6
//!   /127 and /128) is "too small to allocate from"; that check comes first;
//! - host bits must be zero (`198.18.5.7/24` is rejected, naming `198.18.5.0`);
//! - `gateway` defaults to network + 1, `rangeStart` to network + 1, `rangeEnd` to the
//!   broadcast − 1 (IPv4) or the last address (IPv6);
//! - IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are treated as IPv4, like Go's `To4()`.
//!
//! Stricter than the reference, on purpose: the gateway must lie inside the subnet (v1.1.1
//! accepts any gateway, even of the other family), and `rangeStart > rangeEnd` gets its own
//! error instead of a misleading "not in network".

use std::fmt;
use std::net::{AddrParseError, IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

/// Wire form of one range, as found in `ipam.ranges[i][j]` (or the single-range shorthand).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeConf {
    #[serde(default)]
    pub subnet: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range_end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RangeError {
    #[error("invalid subnet {value:?}: expected CIDR notation such as 198.18.5.0/24")]
    InvalidSubnet { value: String },
    #[error("invalid {field} {value:?}")]
    InvalidIp {
        field: &'static str,
        value: String,
        #[source]
        source: AddrParseError,
    },
    #[error("network {subnet} too small to allocate from")]
    TooSmall { subnet: IpNetwork },
    #[error("subnet {subnet} has host bits set: for a /{prefix} the network address is {network}")]
    HostBitsSet {
        subnet: IpNetwork,
        prefix: u8,
        network: IpAddr,
    },
    #[error("{field} {ip} is not in subnet {subnet}")]
    NotInSubnet {
        field: &'static str,
        ip: IpAddr,
        subnet: IpNetwork,
    },
    #[error("rangeStart {start} is after rangeEnd {end} in subnet {subnet}")]
    StartAfterEnd {
        start: IpAddr,
        end: IpAddr,
        subnet: IpNetwork,
    },
}

/// Address family of a range (all ranges of a set share one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    V4,
    V6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// A validated range. `range_start ≤ range_end`, both (and the gateway) inside `subnet`,
/// `subnet` has no host bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    subnet: IpNetwork,
    range_start: IpAddr,
    range_end: IpAddr,
    gateway: IpAddr,
}

impl RangeConf {
    /// Validate and fill in defaults.
    pub fn validate(&self) -> Result<Range, RangeError> {
        let subnet = parse_subnet(&self.subnet)?;
        let family = family_of(subnet.ip());
        let bits = family.bits();
        // Checked before host bits, as the reference does: a /31 or /32 never has room.
        if subnet.prefix() > bits - 2 {
            return Err(RangeError::TooSmall { subnet });
        }
        let network = subnet.network();
        if subnet.ip() != network {
            return Err(RangeError::HostBitsSet {
                subnet,
                prefix: subnet.prefix(),
                network,
            });
        }
        let net = to_u128(network);
        let first = from_u128(net + 1, family);
        let last = match family {
            // The reference leaves the IPv4 broadcast out of the default range, not the IPv6
            // all-ones address (IPv6 has no broadcast).
            Family::V4 => from_u128(to_u128(subnet.broadcast()) - 1, family),
            Family::V6 => subnet.broadcast(),
        };

        let in_subnet = |field: &'static str, value: &Option<String>, default: IpAddr| {
            match value.as_deref().map(str::trim) {
                // Go's net.IP unmarshals "" to nil, i.e. "not set".
                None | Some("") => Ok(default),
                Some(text) => {
                    let ip = parse_ip(field, text)?;
                    if subnet.contains(ip) && family_of(ip) == family {
                        Ok(ip)
                    } else {
                        Err(RangeError::NotInSubnet { field, ip, subnet })
                    }
                }
            }
        };
        let gateway = in_subnet("gateway", &self.gateway, first)?;
        let range_start = in_subnet("rangeStart", &self.range_start, first)?;
        let range_end = in_subnet("rangeEnd", &self.range_end, last)?;
        if to_u128(range_start) > to_u128(range_end) {
            return Err(RangeError::StartAfterEnd {
                start: range_start,
                end: range_end,
                subnet,
            });
        }
        Ok(Range {
            subnet,
            range_start,
            range_end,
            gateway,
        })
    }
}

impl Range {
    pub fn subnet(&self) -> IpNetwork {
        self.subnet
    }

    pub fn range_start(&self) -> IpAddr {
        self.range_start
    }

    pub fn range_end(&self) -> IpAddr {
        self.range_end
    }

    pub fn gateway(&self) -> IpAddr {
        self.gateway
    }

    pub fn family(&self) -> Family {
        family_of(self.range_start)
    }

    /// Whether `ip` lies in `[range_start, range_end]` (the reference's `Range.Contains`).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        family_of(ip) == self.family()
            && (to_u128(self.range_start)..=to_u128(self.range_end)).contains(&to_u128(ip))
    }

    /// Addresses inside the subnet that are never handed out: the gateway, the network address
    /// and (IPv4) the broadcast. The reference skips only the gateway; the other two can only
    /// fall in the window when `rangeStart`/`rangeEnd` are set to them explicitly.
    pub fn is_special(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        ip == self.gateway
            || ip == self.subnet.network()
            || (self.family() == Family::V4 && ip == self.subnet.broadcast())
    }

    /// Whether the allocator may hand out `ip` from this range.
    pub fn is_allocatable(&self, ip: IpAddr) -> bool {
        self.contains(ip) && !self.is_special(ip)
    }

    /// Number of allocatable addresses (saturating at `u128::MAX` for an IPv6 /0).
    pub fn capacity(&self) -> u128 {
        let window = (to_u128(self.range_end) - to_u128(self.range_start)).saturating_add(1);
        let mut specials = vec![self.gateway, self.subnet.network()];
        if self.family() == Family::V4 {
            specials.push(self.subnet.broadcast());
        }
        specials.sort();
        specials.dedup();
        let inside = specials.iter().filter(|ip| self.contains(**ip)).count();
        // `inside` ≤ 3 and every one of them is in the window, so this cannot underflow.
        window - inside as u128
    }

    /// Whether the two windows share an address (different families never overlap).
    pub fn overlaps(&self, other: &Range) -> bool {
        self.family() == other.family()
            && to_u128(self.range_start) <= to_u128(other.range_end)
            && to_u128(other.range_start) <= to_u128(self.range_end)
    }

    /// The address after `ip` inside this window, or `None` at `range_end`.
    pub(crate) fn next_after(&self, ip: IpAddr) -> Option<IpAddr> {
        let v = to_u128(ip);
        (v < to_u128(self.range_end)).then(|| from_u128(v + 1, self.family()))
    }
}

/// Same text as the reference (`start-end`), which appears in its error messages.
impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.range_start, self.range_end)
    }
}

impl Family {
    fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// Go's `To4()` canonicalisation: an IPv4-mapped IPv6 address is the IPv4 address.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Parse an IP address field, canonicalised.
pub(crate) fn parse_ip(field: &'static str, text: &str) -> Result<IpAddr, RangeError> {
    text.trim()
        .parse::<IpAddr>()
        .map(canonical_ip)
        .map_err(|source| RangeError::InvalidIp {
            field,
            value: text.to_owned(),
            source,
        })
}

/// Parse `addr/prefix`, keeping the address as written (host bits are checked by the caller).
pub(crate) fn parse_subnet(text: &str) -> Result<IpNetwork, RangeError> {
    let invalid = || RangeError::InvalidSubnet {
        value: text.to_owned(),
    };
    let (addr, prefix) = text.trim().split_once('/').ok_or_else(invalid)?;
    let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
    let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
    IpNetwork::new(addr, prefix).map_err(|_| invalid())
}

pub(crate) fn family_of(ip: IpAddr) -> Family {
    match ip {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Inverse of [`to_u128`]. For IPv4 the value must fit in 32 bits, which holds for every
/// caller because they step inside a validated IPv4 window.
pub(crate) fn from_u128(v: u128, family: Family) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(subnet: &str) -> RangeConf {
        RangeConf {
            subnet: subnet.into(),
            ..Default::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_v4() {
        let r = conf("198.18.5.0/24").validate().unwrap();
        assert_eq!(r.range_start(), ip("198.18.5.1"));
        assert_eq!(r.range_end(), ip("198.18.5.254"));
        assert_eq!(r.gateway(), ip("198.18.5.1"));
        assert_eq!(r.to_string(), "198.18.5.1-198.18.5.254");
        // .1 .. .254 minus the gateway.
        assert_eq!(r.capacity(), 253);
    }

    #[test]
    fn defaults_v6_end_is_last_address() {
        let r = conf("2001:db8::/126").validate().unwrap();
        assert_eq!(r.range_start(), ip("2001:db8::1"));
        assert_eq!(r.range_end(), ip("2001:db8::3"));
        assert_eq!(r.gateway(), ip("2001:db8::1"));
        assert_eq!(r.capacity(), 2);
        let big = conf("2001:db8::/64").validate().unwrap();
        assert_eq!(big.range_end(), ip("2001:db8::ffff:ffff:ffff:ffff"));
        assert_eq!(big.capacity(), (1u128 << 64) - 2);
    }

    #[test]
    fn too_small_and_host_bits() {
        for s in [
            "198.18.5.0/31",
            "198.18.5.0/32",
            "2001:db8::/127",
            "2001:db8::/128",
        ] {
            let err = conf(s).validate().unwrap_err();
            assert!(matches!(err, RangeError::TooSmall { .. }), "{s}: {err}");
            assert_eq!(
                err.to_string(),
                format!("network {s} too small to allocate from")
            );
        }
        // Too small wins over host bits, as in the reference.
        assert!(matches!(
            conf("2001:db8::5/127").validate(),
            Err(RangeError::TooSmall { .. })
        ));
        let err = conf("198.18.5.7/24").validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "subnet 198.18.5.7/24 has host bits set: for a /24 the network address is 198.18.5.0"
        );
        assert!(conf("198.18.5.0/30").validate().is_ok());
    }

    #[test]
    fn invalid_text() {
        for s in ["", "198.18.5.0", "198.18.5.0/33", "nope/24", "198.18.5.0/x"] {
            assert!(
                matches!(conf(s).validate(), Err(RangeError::InvalidSubnet { .. })),
                "{s}"
            );
        }
        let mut c = conf("198.18.5.0/24");
        c.range_start = Some("198.18.5.x".into());
        let err = c.validate().unwrap_err();
        assert_eq!(err.to_string(), "invalid rangeStart \"198.18.5.x\"");
    }

    #[test]
    fn fields_must_be_inside_subnet() {
        for (field, value) in [
            ("gateway", "198.18.6.1"),
            ("gateway", "2001:db8::1"),
            ("rangeStart", "198.18.6.1"),
            ("rangeStart", "2001:db8::1"),
            ("rangeEnd", "198.18.6.1"),
        ] {
            let mut c = conf("198.18.5.0/24");
            match field {
                "gateway" => c.gateway = Some(value.into()),
                "rangeStart" => c.range_start = Some(value.into()),
                _ => c.range_end = Some(value.into()),
            }
            let err = c.validate().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("{field} {value} is not in subnet 198.18.5.0/24")
            );
        }
    }

    #[test]
    fn start_after_end_and_empty_strings() {
        let mut c = conf("198.18.5.0/24");
        c.range_start = Some("198.18.5.100".into());
        c.range_end = Some("198.18.5.50".into());
        assert!(matches!(
            c.validate(),
            Err(RangeError::StartAfterEnd { .. })
        ));
        let mut c = conf("198.18.5.0/24");
        c.range_start = Some(String::new());
        c.gateway = Some(String::new());
        assert_eq!(
            c.validate().unwrap(),
            conf("198.18.5.0/24").validate().unwrap()
        );
    }

    #[test]
    fn gateway_default_ignores_range_start() {
        // Reference: gateway is network + 1 even when rangeStart moves.
        let mut c = conf("198.18.5.0/24");
        c.range_start = Some("198.18.5.10".into());
        let r = c.validate().unwrap();
        assert_eq!(r.gateway(), ip("198.18.5.1"));
        assert!(!r.contains(ip("198.18.5.1")));
        assert_eq!(r.capacity(), 245);
    }

    #[test]
    fn mapped_v4_is_v4() {
        let mut c = conf("198.18.5.0/24");
        c.gateway = Some("::ffff:198.18.5.9".into());
        let r = c.validate().unwrap();
        assert_eq!(r.gateway(), ip("198.18.5.9"));
        assert!(r.contains(ip("::ffff:198.18.5.20")));
    }

    #[test]
    fn specials_and_capacity_of_full_window() {
        let mut c = conf("198.18.5.0/30");
        c.range_start = Some("198.18.5.0".into());
        c.range_end = Some("198.18.5.3".into());
        let r = c.validate().unwrap();
        let allocatable: Vec<_> = (0..4)
            .map(|i| ip(&format!("198.18.5.{i}")))
            .filter(|a| r.is_allocatable(*a))
            .collect();
        assert_eq!(allocatable, [ip("198.18.5.2")]);
        assert_eq!(r.capacity(), 1);
    }

    #[test]
    fn overlap() {
        let a = conf("198.18.6.0/24").validate().unwrap();
        let b = conf("198.18.6.0/25").validate().unwrap();
        let mut c = conf("198.18.6.0/24");
        c.range_start = Some("198.18.6.200".into());
        let c = c.validate().unwrap();
        let mut d = conf("198.18.6.0/24");
        d.range_end = Some("198.18.6.199".into());
        let d = d.validate().unwrap();
        let v6 = conf("2001:db8::/64").validate().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!c.overlaps(&d) && !d.overlaps(&c));
        assert!(!a.overlaps(&v6));
    }
}
