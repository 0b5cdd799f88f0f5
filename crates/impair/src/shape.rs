//! Rate with `tbf` as the interface's root qdisc, as `tc qdisc add dev IF root tbf rate R
//! burst B latency L` would program it.
//!
//! The bucket must hold the largest frame the interface sends, or tbf drops it: lab links
//! default to containerlab's MTU of 9500, so the burst is at least two such frames. Beyond
//! that, 10 ms of traffic at the rate (tc's rule of thumb is rate/HZ), so a 10 Gbit/s link
//! is not held back by the per-packet timer either. The queue holds 50 ms of traffic on top
//! of the bucket: deep enough for TCP to reach the rate, shallow enough that a ping behind a
//! bulk transfer is not delayed by seconds.

use berth_netlink::{Handle, Tbf, TcClock};

/// The handle of the root qdisc Berth installs (`be27:`); `clear` deletes only a root qdisc
/// with this handle, never one somebody else put there.
pub const HANDLE: Handle = Handle::new(0xbe27, 0);

/// The tbf parameters for `bits_per_second` on an interface of `mtu`.
pub fn tbf(bits_per_second: u64, mtu: u32, clock: &TcClock) -> Tbf {
    let rate = (bits_per_second / 8).max(1);
    // Ethernet header and a VLAN tag on top of the MTU, twice.
    let frames = 2 * (u64::from(mtu) + 18);
    let burst = (rate / 100).max(frames).min(u64::from(u32::MAX));
    let queue = rate / 20;
    let usec = burst as f64 * 1e6 / rate as f64;
    Tbf {
        rate,
        buffer: clock.usec_to_ticks(usec),
        limit: u32::try_from(queue.saturating_add(burst)).unwrap_or(u32::MAX),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bucket_holds_two_frames_and_10ms() {
        // 64 ticks per microsecond, as on this kernel (`/proc/net/psched` 000003e8 00000040 …).
        let clock = TcClock::parse("000003e8 00000040 000f4240 3b9aca00").unwrap();
        let slow = tbf(10_000_000, 9500, &clock);
        assert_eq!(slow.rate, 1_250_000);
        // 10 ms at 1.25 MB/s is 12 500 bytes, less than two 9500-byte frames.
        assert_eq!(slow.max_size(), 19_036);
        assert_eq!(slow.limit, 62_500 + 19_036);
        let fast = tbf(10_000_000_000, 1500, &clock);
        assert_eq!(fast.max_size(), 12_500_000);
    }
}
