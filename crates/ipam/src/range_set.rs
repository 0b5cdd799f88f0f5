//! A range set: the ranges one address is taken from (one address per set per ADD).

use std::fmt;
use std::net::IpAddr;

use crate::range::{Family, Range, RangeConf, RangeError};

#[derive(Debug, thiserror::Error)]
pub enum RangeSetError {
    #[error("empty range set")]
    Empty,
    #[error("range {index} of the set")]
    Range {
        index: usize,
        #[source]
        source: RangeError,
    },
    #[error(
        "mixed address families: range {first} is {first_family}, range {other} is {other_family}"
    )]
    MixedFamilies {
        first: Box<Range>,
        first_family: Family,
        other: Box<Range>,
        other_family: Family,
    },
    #[error("ranges {a} and {b} overlap")]
    Overlap { a: Box<Range>, b: Box<Range> },
}

/// Validated, non-empty, single-family list of non-overlapping ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<Range>,
}

impl RangeSet {
    /// Validate every range, then the set as a whole.
    pub fn from_confs(confs: &[RangeConf]) -> Result<RangeSet, RangeSetError> {
        let ranges = confs
            .iter()
            .enumerate()
            .map(|(index, c)| {
                c.validate()
                    .map_err(|source| RangeSetError::Range { index, source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        RangeSet::new(ranges)
    }

    /// Check the set-level invariants on already validated ranges.
    pub fn new(ranges: Vec<Range>) -> Result<RangeSet, RangeSetError> {
        let Some(first) = ranges.first() else {
            return Err(RangeSetError::Empty);
        };
        if let Some(other) = ranges.iter().find(|r| r.family() != first.family()) {
            return Err(RangeSetError::MixedFamilies {
                first: Box::new(first.clone()),
                first_family: first.family(),
                other: Box::new(other.clone()),
                other_family: other.family(),
            });
        }
        for (i, a) in ranges.iter().enumerate() {
            if let Some(b) = ranges[i + 1..].iter().find(|b| a.overlaps(b)) {
                return Err(RangeSetError::Overlap {
                    a: Box::new(a.clone()),
                    b: Box::new(b.clone()),
                });
            }
        }
        Ok(RangeSet { ranges })
    }

    pub fn ranges(&self) -> &[Range] {
        &self.ranges
    }

    pub fn family(&self) -> Family {
        self.ranges[0].family()
    }

    /// Whether any range's `[rangeStart, rangeEnd]` window holds `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some()
    }

    /// The range whose window holds `ip`.
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.ranges.iter().find(|r| r.contains(ip))
    }

    pub(crate) fn index_for(&self, ip: IpAddr) -> Option<usize> {
        self.ranges.iter().position(|r| r.contains(ip))
    }

    /// Whether the allocator may hand out `ip` from this set.
    pub fn is_allocatable(&self, ip: IpAddr) -> bool {
        self.range_for(ip).is_some_and(|r| !r.is_special(ip))
    }

    /// Total number of allocatable addresses (saturating).
    pub fn capacity(&self) -> u128 {
        self.ranges
            .iter()
            .fold(0u128, |acc, r| acc.saturating_add(r.capacity()))
    }

    /// Whether any range of `self` overlaps any range of `other`.
    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.ranges
            .iter()
            .any(|a| other.ranges.iter().any(|b| a.overlaps(b)))
    }
}

/// Comma-separated ranges, as the reference prints a set in its errors.
impl fmt::Display for RangeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rc(subnet: &str, start: Option<&str>, end: Option<&str>) -> RangeConf {
        RangeConf {
            subnet: subnet.into(),
            range_start: start.map(Into::into),
            range_end: end.map(Into::into),
            gateway: None,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn empty_mixed_overlap() {
        assert!(matches!(
            RangeSet::from_confs(&[]),
            Err(RangeSetError::Empty)
        ));
        let err = RangeSet::from_confs(&[
            rc("198.18.6.0/24", None, None),
            rc("2001:db8::/64", None, None),
        ])
        .unwrap_err();
        assert!(matches!(err, RangeSetError::MixedFamilies { .. }), "{err}");
        let err = RangeSet::from_confs(&[
            rc("198.18.6.0/24", None, None),
            rc("198.18.6.0/25", None, None),
        ])
        .unwrap_err();
        // Same wording of the ranges as the reference's "subnets … and … overlap".
        assert_eq!(
            err.to_string(),
            "ranges 198.18.6.1-198.18.6.254 and 198.18.6.1-198.18.6.126 overlap"
        );
        let err = RangeSet::from_confs(&[rc("198.18.6.0/31", None, None)]).unwrap_err();
        assert_eq!(err.to_string(), "range 0 of the set");
    }

    #[test]
    fn lookup() {
        let set = RangeSet::from_confs(&[
            rc("198.18.6.0/24", Some("198.18.6.10"), Some("198.18.6.20")),
            rc("198.18.7.0/24", None, None),
        ])
        .unwrap();
        assert_eq!(
            set.to_string(),
            "198.18.6.10-198.18.6.20,198.18.7.1-198.18.7.254"
        );
        assert!(set.contains(ip("198.18.6.10")));
        assert!(!set.contains(ip("198.18.6.9")));
        assert_eq!(
            set.range_for(ip("198.18.7.5"))
                .unwrap()
                .subnet()
                .to_string(),
            "198.18.7.0/24"
        );
        assert!(set.range_for(ip("2001:db8::1")).is_none());
        // The gateway .7.1 is in the window but not allocatable.
        assert!(set.contains(ip("198.18.7.1")) && !set.is_allocatable(ip("198.18.7.1")));
        assert_eq!(set.capacity(), 11 + 253);
    }
}
