//! Test-only subnets: IPv4 from 198.18.0.0/15 (RFC 2544, benchmarking) and IPv6 from one
//! Berth ULA /48. Each call hands out a fresh one.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};

use ipnetwork::{Ipv4Network, Ipv6Network};

/// 198.18.0.0/15 holds 512 /24s.
const V4_BASE: u32 = u32::from_be_bytes([198, 18, 0, 0]);
const V4_SLOTS: u32 = 512;
/// The Berth ULA /48; its 65536 /64s are handed out.
const V6_PREFIX: [u16; 3] = [0xfd42, 0xb347, 0x0000];
const V6_SLOTS: u32 = 1 << 16;

static V4_COUNTER: AtomicU32 = AtomicU32::new(0);
static V6_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A /24 from 198.18.0.0/15, distinct from every other one this process got.
///
/// The starting slot is derived from the pid, so concurrently running test binaries are
/// unlikely to pick the same subnets (harmless anyway: every test has its own namespaces).
///
/// # Panics
/// After 512 calls in one process (the range is exhausted).
pub fn test_subnet_v4() -> Ipv4Network {
    let slot = next_slot(&V4_COUNTER, V4_SLOTS);
    let ip = Ipv4Addr::from(V4_BASE + (slot << 8));
    Ipv4Network::new(ip, 24).unwrap_or_else(|e| panic!("{ip}/24: {e}"))
}

/// A /64 from the Berth ULA `fd42:b347:0::/48`, distinct from every other one this process
/// got.
///
/// # Panics
/// After 65536 calls in one process.
pub fn test_subnet_v6() -> Ipv6Network {
    let slot = next_slot(&V6_COUNTER, V6_SLOTS);
    let [a, b, c] = V6_PREFIX;
    // slot < 2^16 by construction of next_slot.
    let subnet = u16::try_from(slot).unwrap_or_else(|_| panic!("slot {slot} exceeds 16 bits"));
    let ip = Ipv6Addr::new(a, b, c, subnet, 0, 0, 0, 0);
    Ipv6Network::new(ip, 64).unwrap_or_else(|e| panic!("{ip}/64: {e}"))
}

fn next_slot(counter: &AtomicU32, slots: u32) -> u32 {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    assert!(
        n < slots,
        "test subnets exhausted: more than {slots} requested by one process"
    );
    slot(std::process::id(), n, slots)
}

/// Slot `n` of a process: a pid-derived start (Knuth's multiplicative hash spreads nearby pids)
/// plus `n`, modulo the range. Distinct for distinct `n < slots`.
fn slot(pid: u32, n: u32, slots: u32) -> u32 {
    let start = pid.wrapping_mul(2_654_435_761) % slots;
    (start + n) % slots
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn v4_subnets_are_inside_the_benchmark_range_and_distinct() {
        let range: Ipv4Network = "198.18.0.0/15".parse().expect("range");
        let nets: Vec<_> = (0..20).map(|_| test_subnet_v4()).collect();
        assert!(
            nets.iter()
                .all(|n| n.prefix() == 24 && range.contains(n.ip()))
        );
        assert!(nets.iter().all(|n| n.ip() == n.network()));
        assert_eq!(nets.iter().collect::<HashSet<_>>().len(), nets.len());
    }

    #[test]
    fn v6_subnets_are_inside_the_berth_ula_and_distinct() {
        let ula: Ipv6Network = "fd42:b347::/48".parse().expect("ula");
        let nets: Vec<_> = (0..20).map(|_| test_subnet_v6()).collect();
        assert!(
            nets.iter()
                .all(|n| n.prefix() == 64 && ula.contains(n.ip()))
        );
        assert_eq!(nets.iter().collect::<HashSet<_>>().len(), nets.len());
    }

    #[test]
    fn every_slot_is_used_once_per_process() {
        let slots: HashSet<_> = (0..V4_SLOTS).map(|n| slot(4242, n, V4_SLOTS)).collect();
        assert_eq!(slots.len(), V4_SLOTS as usize);
    }
}
