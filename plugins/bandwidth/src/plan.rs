//! What ADD will program for one attachment, computed and checked before anything is touched:
//! a shaper per limited direction — tbf for all traffic (the reference 1.1.1 layout), htb when
//! the limit applies to some subnets only (the newer reference's layout).

use berth_netlink::{Link, Netlink, Tbf, TcClock, TcError};

use crate::config::{Direction, Limit, Limits, Scope};
use crate::shape::{ETH_HLEN, HtbLayout, ROOT_HANDLE};

/// The root qdisc of one direction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shaper {
    Tbf(Tbf),
    Htb(HtbLayout),
}

impl Shaper {
    fn new(limit: &Limit, scope: &Scope, clock: &TcClock) -> Shaper {
        match scope {
            Scope::All => Shaper::Tbf(limit.tbf(clock)),
            Scope::Only(_) | Scope::Except(_) => Shaper::Htb(HtbLayout::new(limit, scope, clock)),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Shaper::Tbf(_) => "tbf",
            Shaper::Htb(_) => "htb",
        }
    }

    /// Programs the shaper as the root qdisc of link `index`: the qdisc, then (htb) its
    /// classes and filters. `created` runs once the qdisc exists, before the rest, so that a
    /// caller can register its undo: a qdisc that could not be created (e.g. EEXIST: someone
    /// else's is there) must not be deleted, one half set up must.
    pub fn install(
        &self,
        netlink: &Netlink,
        index: u32,
        created: impl FnOnce(),
    ) -> Result<(), TcError> {
        match self {
            Shaper::Tbf(tbf) => {
                netlink.add_tbf(index, ROOT_HANDLE, berth_netlink::Handle::ROOT, tbf)?;
                created();
                Ok(())
            }
            Shaper::Htb(layout) => {
                netlink.add_htb(
                    index,
                    ROOT_HANDLE,
                    berth_netlink::Handle::ROOT,
                    &layout.qdisc,
                )?;
                created();
                for class in &layout.classes {
                    netlink.add_htb_class(index, class)?;
                }
                for filter in &layout.filters {
                    netlink.add_u32_filter(index, filter)?;
                }
                Ok(())
            }
        }
    }
}

/// The shapers of both directions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub ingress: Option<Shaper>,
    pub egress: Option<Shaper>,
}

impl Plan {
    /// Refuses a burst whose bucket cannot hold one full-size frame of `link` (the ifb gets
    /// the same MTU): tbf drops every frame larger than its bucket, so such a limit would cut
    /// the container off rather than slow it down. The reference programs it anyway (the
    /// kernel only warns), or fails with EINVAL when the bucket rounds down to nothing.
    pub fn new(limits: &Limits, link: &Link, clock: &TcClock) -> Result<Plan, BucketTooSmall> {
        let shaper = |limit: &Option<Limit>| -> Result<Option<Shaper>, BucketTooSmall> {
            let Some(limit) = limit else {
                return Ok(None);
            };
            check_bucket(limit, link, clock)?;
            Ok(Some(Shaper::new(limit, &limits.scope, clock)))
        };
        Ok(Plan {
            ingress: shaper(&limits.ingress)?,
            egress: shaper(&limits.egress)?,
        })
    }
}

/// A burst too small for the link's frames (see [`Plan::new`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{burst_key} {burst} bits at {rate_key} {rate} bits/s gives a bucket of {bucket} bytes \
     (the kernel counts it in whole microseconds), smaller than one full-size frame on {link} \
     ({frame} bytes: MTU {mtu} + {ETH_HLEN}): {}",
    match .min_burst {
        Some(b) => format!("{burst_key} must be at least {b} bits"),
        None => format!("no burst is enough at this {rate_key}"),
    }
)]
pub struct BucketTooSmall {
    pub burst_key: &'static str,
    pub burst: u64,
    pub rate_key: &'static str,
    pub rate: u64,
    pub bucket: u64,
    pub link: String,
    pub mtu: u32,
    pub frame: u32,
    pub min_burst: Option<u64>,
}

fn check_bucket(limit: &Limit, link: &Link, clock: &TcClock) -> Result<(), BucketTooSmall> {
    let frame = link.mtu.saturating_add(ETH_HLEN);
    let bucket = limit.tbf(clock).max_size();
    if bucket >= u64::from(frame) {
        return Ok(());
    }
    Err(BucketTooSmall {
        burst_key: limit.direction.burst_key(),
        burst: limit.burst,
        rate_key: limit.direction.rate_key(),
        rate: limit.rate,
        bucket,
        link: link.name.clone(),
        mtu: link.mtu,
        frame,
        min_burst: min_burst(limit.rate, limit.direction, frame, clock),
    })
}

/// The smallest burst (in bits, a multiple of 8) whose bucket holds `frame` bytes at `rate`,
/// if any does (a bucket holds at most `u32::MAX` ticks, about 275 s). The bucket grows with
/// the burst, so a binary search over the burst in bytes finds it.
fn min_burst(rate: u64, direction: Direction, frame: u32, clock: &TcClock) -> Option<u64> {
    let fits = |bytes: u64| {
        Limit {
            direction,
            rate,
            burst: bytes * 8,
        }
        .tbf(clock)
        .max_size()
            >= u64::from(frame)
    };
    let (mut lo, mut hi) = (1u64, u64::from(u32::MAX) - 1);
    if !fits(hi) {
        return None;
    }
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Some(lo * 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> TcClock {
        TcClock::parse("000003e8 00000040 000f4240 3b9aca00").unwrap()
    }

    #[test]
    fn smallest_burst_holds_a_frame() {
        // 1 Gbit/s, MTU 1500: 1514 bytes; whole microseconds of 125 bytes each: 13 µs.
        let b = min_burst(1_000_000_000, Direction::Ingress, 1514, &clock()).unwrap();
        assert_eq!(b, 13 * 125 * 8);
        let fits = |bits| {
            Limit {
                direction: Direction::Ingress,
                rate: 1_000_000_000,
                burst: bits,
            }
            .tbf(&clock())
            .max_size()
        };
        assert!(fits(b) >= 1514 && fits(b - 8) < 1514);
        // 1 byte/s: 275 s of bucket hold 274 bytes, never a frame.
        assert_eq!(min_burst(8, Direction::Egress, 1514, &clock()), None);
        assert!(min_burst(800, Direction::Egress, 1514, &clock()).is_some());
    }
}
