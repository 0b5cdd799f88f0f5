//! From a [`Limit`] (bits) to the kernel's numbers (bytes, ticks), computed exactly as the
//! reference does, so that both program identical qdiscs: `tc` shows the same output for
//! either, and CHECK accepts what the other wrote.
//!
//! The reference (through the Go netlink library) computes, in floating point:
//! - `rate` = rate bits / 8, `burst` = burst bits / 8 (integer division);
//! - `buffer` = ticks(uint32(burst × 1e6 / rate)): the bucket as the microseconds it takes to
//!   fill, truncated to whole microseconds, then to ticks;
//! - `limit` = uint32(rate × 25 ms) + burst: 25 ms of queue on top of the bucket.
//!
//! Where its `uint32(...)` conversions would wrap around (a bucket longer than about 4.6
//! minutes, e.g. the kubelet's "unlimited" burst of 2^31 bits at 1 Mbit/s), Berth saturates.

use berth_netlink::ipnetwork::IpNetwork;
use berth_netlink::{ETH_P_IP, ETH_P_IPV6, Handle, Htb, HtbClass, Tbf, TcClock, U32Filter, U32Key};

use crate::config::{Direction, Limit, Scope};

/// The reference's queue latency on top of the bucket.
const LATENCY_USEC: f64 = 25_000.0;
/// The handle of the root shaper, on the host end and on the ifb (the reference's).
pub const ROOT_HANDLE: Handle = Handle::new(1, 0);
/// The newer reference's htb classes: shaped traffic, and traffic exempt from shaping.
pub const SHAPED_CLASS: Handle = Handle::new(1, 48);
pub const UNSHAPED_CLASS: Handle = Handle::new(1, 1);
/// The exempt class's rate (the newer reference's `UncappedRate`, in bytes/s: 800 Gbit/s).
pub const UNCAPPED_RATE: u64 = 100_000_000_000;
/// htb's default `r2q`; also what the newer reference sets.
const RATE2QUANTUM: u32 = 10;
/// The quantum bounds outside which the kernel warns and clamps.
const QUANTUM_MIN: u64 = 1_000;
const QUANTUM_MAX: u64 = 200_000;
/// Per-family priorities of the subnet filters (the newer reference's: a u32 priority can hold
/// only one protocol).
const PRIO_IPV6: u16 = 15;
const PRIO_IPV4: u16 = 16;
/// Ethernet header length: a frame on a veth or an ifb is MTU + 14 bytes, and tbf drops any
/// frame larger than its bucket.
pub const ETH_HLEN: u32 = 14;

impl Limit {
    pub fn rate_bytes(&self) -> u64 {
        self.rate / 8
    }

    /// Validated below 4 GB (see `config`).
    pub fn burst_bytes(&self) -> u32 {
        u32::try_from(self.burst / 8).unwrap_or(u32::MAX)
    }

    /// The bucket in ticks.
    pub fn buffer(&self, clock: &TcClock) -> u32 {
        let usec = f64::from(self.burst_bytes()) * 1e6 / self.rate_bytes() as f64;
        // uint32(): truncate, and saturate where Go would wrap.
        clock.usec_to_ticks(usec.min(f64::from(u32::MAX)).trunc())
    }

    /// Queue limit in bytes.
    pub fn limit(&self) -> u32 {
        let queue = (self.rate_bytes() as f64 * LATENCY_USEC / 1e6) as u32;
        queue.saturating_add(self.burst_bytes())
    }

    pub fn tbf(&self, clock: &TcClock) -> Tbf {
        Tbf {
            rate: self.rate_bytes(),
            buffer: self.buffer(clock),
            limit: self.limit(),
        }
    }
}

/// The htb layout of the newer reference, for a limit restricted to some subnets: two
/// classes under `1:` — [`SHAPED_CLASS`] at the limit, [`UNSHAPED_CLASS`] uncapped — the
/// default class for unmatched traffic, and one u32 filter per subnet sending its traffic to
/// the other class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HtbLayout {
    pub qdisc: Htb,
    pub classes: [HtbClass; 2],
    pub filters: Vec<U32Filter>,
}

impl HtbLayout {
    pub fn new(limit: &Limit, scope: &Scope, clock: &TcClock) -> HtbLayout {
        let (subnets, matched, default) = match scope {
            Scope::Only(nets) => (nets.as_slice(), SHAPED_CLASS, UNSHAPED_CLASS),
            Scope::Except(nets) => (nets.as_slice(), UNSHAPED_CLASS, SHAPED_CLASS),
            Scope::All => (&[][..], SHAPED_CLASS, SHAPED_CLASS),
        };
        let buffer = limit.buffer(clock);
        let rate = limit.rate_bytes();
        // Ceil = rate: classes right under the qdisc have no parent to borrow from, so a higher
        // ceil (the newer reference sets 2 × rate) would change nothing.
        let shaped = HtbClass {
            classid: SHAPED_CLASS,
            parent: ROOT_HANDLE,
            rate,
            ceil: rate,
            buffer,
            cbuffer: buffer,
            quantum: quantum(rate),
        };
        // A one-second bucket: at 800 Gbit/s the exempt class never waits for tokens (the
        // reference leaves it 0, which throttles every packet until its tokens come back).
        let second = clock.usec_to_ticks(1e6);
        let unshaped = HtbClass {
            classid: UNSHAPED_CLASS,
            parent: ROOT_HANDLE,
            rate: UNCAPPED_RATE,
            ceil: UNCAPPED_RATE,
            buffer: second,
            cbuffer: second,
            quantum: quantum(UNCAPPED_RATE),
        };
        let filters = subnets
            .iter()
            .map(|net| subnet_filter(net, limit.direction, matched))
            .collect();
        HtbLayout {
            qdisc: Htb {
                default_class: default.minor(),
                rate2quantum: RATE2QUANTUM,
            },
            classes: [unshaped, shaped],
            filters,
        }
    }
}

/// What the kernel would pick from `r2q`, without its warnings about the bounds.
fn quantum(rate: u64) -> u32 {
    let q = (rate / u64::from(RATE2QUANTUM)).clamp(QUANTUM_MIN, QUANTUM_MAX);
    u32::try_from(q).unwrap_or(u32::MAX)
}

/// A u32 filter matching the remote end's address in `net`: the source of traffic into the
/// container (shaped as it leaves the host end), the destination of traffic out of it (shaped
/// on the ifb). The newer reference matches the destination in both directions, which on the
/// ingress side tests the container's own address instead.
pub fn subnet_filter(net: &IpNetwork, direction: Direction, class: Handle) -> U32Filter {
    // Offsets in the IP header: IPv4 source 12, destination 16; IPv6 source 8, destination 24.
    let (protocol, priority, words, offset) = match (net, direction) {
        (IpNetwork::V4(n), d) => (
            ETH_P_IP,
            PRIO_IPV4,
            vec![u32::from(n.network())],
            if d == Direction::Ingress { 12 } else { 16 },
        ),
        (IpNetwork::V6(n), d) => {
            let bits = u128::from(n.network());
            let words = (0..4)
                .map(|i| (bits >> (96 - 32 * i)) as u32)
                .collect::<Vec<_>>();
            (
                ETH_P_IPV6,
                PRIO_IPV6,
                words,
                if d == Direction::Ingress { 8 } else { 24 },
            )
        }
    };
    let prefix = u32::from(net.prefix());
    let keys = words
        .iter()
        .enumerate()
        .filter_map(|(i, &word)| {
            let covered = prefix.saturating_sub(32 * i as u32).min(32);
            // A word the prefix does not reach matches anything: no key for it (and /0 gets
            // none at all, matching every packet of the family).
            (covered > 0).then(|| {
                let mask = u32::MAX << (32 - covered);
                U32Key {
                    mask,
                    value: word & mask,
                    offset: offset + 4 * i as i32,
                }
            })
        })
        .collect();
    U32Filter {
        parent: ROOT_HANDLE,
        priority,
        protocol,
        classid: Some(class),
        keys,
        redirect_to: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> TcClock {
        TcClock::parse("000003e8 00000040 000f4240 3b9aca00").unwrap()
    }

    fn limit(rate: u64, burst: u64) -> Limit {
        Limit {
            direction: Direction::Ingress,
            rate,
            burst,
        }
    }

    /// Numbers read back with `tc` from what the reference programmed on this kernel.
    #[test]
    fn tbf_like_the_reference() {
        let tbf = limit(20_000_000, 400_000).tbf(&clock());
        assert_eq!(
            tbf,
            Tbf {
                rate: 2_500_000,
                buffer: 312_500,
                limit: 112_500
            }
        );
        assert_eq!(tbf.max_size(), 50_000); // "burst 50000b"
        let tbf = limit(50_000_000, 800_000).tbf(&clock());
        assert_eq!(
            (tbf.rate, tbf.max_size(), tbf.limit),
            (6_250_000, 100_000, 256_250)
        );
    }

    #[test]
    fn microseconds_are_truncated_like_the_reference() {
        // 1500 bytes at 10 Gbit/s is 1.2 µs: one whole microsecond is kept.
        let tbf = limit(10_000_000_000, 12_000).tbf(&clock());
        assert_eq!(tbf.buffer, 15);
        assert_eq!(tbf.max_size(), 1_200);
        // Under one microsecond: an empty bucket, which the kernel refuses.
        assert_eq!(limit(1_000_000_000, 8).tbf(&clock()).max_size(), 0);
    }

    #[test]
    fn huge_buckets_saturate() {
        // The kubelet's "unlimited" burst (2^31 - 1 bits) at 1 Mbit/s: 2147 s of bucket.
        let tbf = limit(1_000_000, i32::MAX as u64).tbf(&clock());
        assert_eq!(tbf.buffer, u32::MAX);
        assert_eq!(tbf.limit, 3_125 + 268_435_455);
    }

    #[test]
    fn subnet_filters_match_the_remote_end() {
        let net: IpNetwork = "10.0.0.0/8".parse().unwrap();
        let f = subnet_filter(&net, Direction::Egress, UNSHAPED_CLASS);
        assert_eq!((f.protocol, f.priority), (ETH_P_IP, 16));
        assert_eq!(
            f.keys,
            [U32Key {
                mask: 0xff00_0000,
                value: 0x0a00_0000,
                offset: 16
            }]
        );
        assert_eq!(
            subnet_filter(&net, Direction::Ingress, UNSHAPED_CLASS).keys[0].offset,
            12
        );

        // The newer reference's own example: three keys, the fourth word unconstrained.
        let net: IpNetwork = "fd00:db8:abcd:1234:e000::/68".parse().unwrap();
        let f = subnet_filter(&net, Direction::Egress, UNSHAPED_CLASS);
        assert_eq!((f.protocol, f.priority), (ETH_P_IPV6, 15));
        let keys: Vec<_> = f.keys.iter().map(|k| (k.offset, k.value, k.mask)).collect();
        assert_eq!(
            keys,
            [
                (24, 4_244_639_160, u32::MAX),
                (28, 2_882_343_476, u32::MAX),
                (32, 3_758_096_384, 4_026_531_840)
            ]
        );
        let all: IpNetwork = "::/0".parse().unwrap();
        assert!(
            subnet_filter(&all, Direction::Egress, SHAPED_CLASS)
                .keys
                .is_empty()
        );
    }

    #[test]
    fn htb_layout_classes_and_default() {
        let l = limit(8_000_000, 80_000);
        let nets = vec!["198.18.0.0/15".parse().unwrap()];
        let only = HtbLayout::new(&l, &Scope::Only(nets.clone()), &clock());
        assert_eq!(only.qdisc.default_class, 1);
        assert_eq!(only.filters[0].classid, Some(SHAPED_CLASS));
        let except = HtbLayout::new(&l, &Scope::Except(nets), &clock());
        assert_eq!(except.qdisc.default_class, 48);
        assert_eq!(except.filters[0].classid, Some(UNSHAPED_CLASS));
        let shaped = except.classes[1];
        assert_eq!(
            (shaped.rate, shaped.ceil, shaped.quantum),
            (1_000_000, 1_000_000, 100_000)
        );
        assert_eq!(except.classes[0].quantum, 200_000);
    }
}
