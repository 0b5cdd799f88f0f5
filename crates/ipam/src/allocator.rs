//! Picking one address from a range set, with the reference host-local's order.
//!
//! Order: start right after the set's `last_reserved_ip` hint (if the hint lies in the set;
//! otherwise at the first range's `rangeStart`), walk each range up to its `rangeEnd`, go on
//! with the next range's `rangeStart` (round-robin, wrapping to the first range), and stop
//! after one full turn. The gateway, network and (IPv4) broadcast addresses are skipped.
//!
//! Cost: the first [`PROBES`] positions of the walk are tried directly, which is where
//! round-robin almost always finds a free address, so an ADD does not list the store. Past
//! them, the reserved addresses are listed once (one `readdir`), and the set is declared
//! exhausted by counting them against the set's capacity, so the walk is only entered when a
//! free address exists and visits at most `reserved + 3 × ranges + 1` addresses; a /64 is never
//! enumerated.

use std::collections::HashSet;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use crate::ErrorKind;
use crate::key::LeaseKey;
use crate::range::{Range, canonical_ip};
use crate::range_set::RangeSet;
use crate::store::{Store, StoreError, StoreGuard};

/// Walk positions tried before the reserved addresses are listed.
pub const PROBES: usize = 16;

/// One address handed out: the address with its range's prefix, and the range's gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocation {
    pub ip: IpNetwork,
    pub gateway: IpAddr,
}

#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    #[error("requested IP address {ip} is not in range set {set} ({ranges})")]
    RequestedNotInSet {
        ip: IpAddr,
        set: usize,
        ranges: String,
    },
    #[error("requested IP address {ip} is the gateway of range {range}")]
    RequestedGateway { ip: IpAddr, range: String },
    #[error("requested IP address {ip} is the network or broadcast address of {subnet}")]
    RequestedNotAllocatable { ip: IpAddr, subnet: IpNetwork },
    #[error("requested IP address {ip} is not available in range set {ranges}")]
    RequestedUnavailable { ip: IpAddr, ranges: String },
    #[error(
        "{ip} has been allocated to {container_id} ({ifname}), duplicate allocation is not allowed"
    )]
    Duplicate {
        ip: IpAddr,
        container_id: String,
        ifname: String,
    },
    #[error("no IP addresses available in range set {set}: {ranges}")]
    RangeSetExhausted { set: usize, ranges: String },
    #[error("reservation store, range set {set}")]
    Store {
        set: usize,
        #[source]
        source: StoreError,
    },
}

impl AllocError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            AllocError::RequestedNotInSet { .. }
            | AllocError::RequestedGateway { .. }
            | AllocError::RequestedNotAllocatable { .. } => ErrorKind::InvalidConfig,
            AllocError::RequestedUnavailable { .. } | AllocError::Duplicate { .. } => {
                ErrorKind::Unavailable
            }
            AllocError::RangeSetExhausted { .. } => ErrorKind::Exhausted,
            AllocError::Store { source, .. } => source.kind(),
        }
    }
}

/// Allocator over a locked store. Borrowing the guard ties the allocator's life to the lock:
/// every operation of one ADD runs under the same `flock`.
pub struct Allocator<'a, S: Store> {
    store: &'a S,
    _guard: &'a StoreGuard<'a>,
}

impl<'a, S: Store> Allocator<'a, S> {
    /// `guard` must be the lock of `store` (taken with [`Store::lock`]).
    pub fn new(store: &'a S, guard: &'a StoreGuard<'a>) -> Self {
        Allocator {
            store,
            _guard: guard,
        }
    }

    /// Reserve one address of range set `set_id` for `key`: `requested` if given (it must be
    /// in the set and free), else the next free one after the hint.
    ///
    /// Like the reference, a key may hold only one address per set: if it already holds one,
    /// this is [`AllocError::Duplicate`] (the reference checks that only without a requested
    /// address; we check always, so a retried ADD never hands out a second address).
    pub fn allocate(
        &self,
        set_id: usize,
        set: &RangeSet,
        key: &LeaseKey,
        requested: Option<IpAddr>,
    ) -> Result<Allocation, AllocError> {
        let store_err = |source| AllocError::Store {
            set: set_id,
            source,
        };
        let held = self.store.get_by_key(key).map_err(store_err)?;
        if let Some(ip) = held.into_iter().find(|ip| set.contains(*ip)) {
            return Err(AllocError::Duplicate {
                ip,
                container_id: key.container_id.clone(),
                ifname: key.ifname.clone(),
            });
        }
        match requested {
            Some(ip) => self.allocate_requested(set_id, set, key, canonical_ip(ip)),
            None => self.allocate_next(set_id, set, key),
        }
    }

    fn allocate_requested(
        &self,
        set_id: usize,
        set: &RangeSet,
        key: &LeaseKey,
        ip: IpAddr,
    ) -> Result<Allocation, AllocError> {
        let Some(range) = set.range_for(ip) else {
            return Err(AllocError::RequestedNotInSet {
                ip,
                set: set_id,
                ranges: set.to_string(),
            });
        };
        if ip == range.gateway() {
            return Err(AllocError::RequestedGateway {
                ip,
                range: range.to_string(),
            });
        }
        if range.is_special(ip) {
            return Err(AllocError::RequestedNotAllocatable {
                ip,
                subnet: range.subnet(),
            });
        }
        let reserved = self
            .store
            .reserve(key, ip)
            .map_err(|source| AllocError::Store {
                set: set_id,
                source,
            })?;
        if !reserved {
            return Err(AllocError::RequestedUnavailable {
                ip,
                ranges: set.to_string(),
            });
        }
        self.finish(set_id, range, ip)
    }

    fn allocate_next(
        &self,
        set_id: usize,
        set: &RangeSet,
        key: &LeaseKey,
    ) -> Result<Allocation, AllocError> {
        let store_err = |source| AllocError::Store {
            set: set_id,
            source,
        };
        let exhausted = || AllocError::RangeSetExhausted {
            set: set_id,
            ranges: set.to_string(),
        };
        let hint = self
            .store
            .last_reserved(set_id)
            .map_err(store_err)?
            .filter(|ip| set.contains(*ip));
        // Fast path: round-robin usually finds the address after the hint free, so try the
        // first few positions of the walk directly (a failed `reserve` costs one `lstat` on
        // disk), without listing the store. Same order as the full walk below, so the same
        // address comes out.
        for (idx, ip) in Walk::new(set, hint).take(PROBES) {
            let range = &set.ranges()[idx];
            if !range.is_special(ip) && self.store.reserve(key, ip).map_err(store_err)? {
                return self.finish(set_id, range, ip);
            }
        }
        let reserved: HashSet<IpAddr> = self
            .store
            .reserved_ips()
            .map_err(store_err)?
            .into_iter()
            .collect();
        let taken = reserved
            .iter()
            .filter(|ip| set.is_allocatable(**ip))
            .count();
        if taken as u128 >= set.capacity() {
            return Err(exhausted());
        }
        for (idx, ip) in Walk::new(set, hint) {
            let range = &set.ranges()[idx];
            if range.is_special(ip) || reserved.contains(&ip) {
                continue;
            }
            // `false` means someone reserved it after our listing, which the lock rules out;
            // treat it as taken anyway.
            if self.store.reserve(key, ip).map_err(store_err)? {
                return self.finish(set_id, range, ip);
            }
        }
        Err(exhausted())
    }

    /// Record the hint (as the reference does on every reservation) and build the result.
    /// If the hint cannot be written the store is failing: give the address back.
    fn finish(&self, set_id: usize, range: &Range, ip: IpAddr) -> Result<Allocation, AllocError> {
        if let Err(source) = self.store.set_last_reserved(set_id, ip) {
            let _ = self.store.release_ip(ip);
            return Err(AllocError::Store {
                set: set_id,
                source,
            });
        }
        // INVARIANT: `ip` comes from `range`, so it has the family of `range.subnet()` and
        // that subnet's prefix is valid for it.
        let ip_net = IpNetwork::new(ip, range.subnet().prefix())
            .expect("prefix of the range's own subnet fits its family");
        Ok(Allocation {
            ip: ip_net,
            gateway: range.gateway(),
        })
    }

    /// Release every address held by `key`; returns how many.
    pub fn release(&self, key: &LeaseKey) -> Result<usize, StoreError> {
        self.store.release_by_key(key).map(|ips| ips.len())
    }
}

/// One turn over a set: `(range index, address)` from the start position through every
/// window, round-robin, until the start position comes round again.
struct Walk<'s> {
    set: &'s RangeSet,
    idx: usize,
    cur: IpAddr,
    start: IpAddr,
    done: bool,
}

impl<'s> Walk<'s> {
    fn new(set: &'s RangeSet, hint: Option<IpAddr>) -> Self {
        let (idx, cur) = match hint.and_then(|h| set.index_for(h).map(|i| (i, h))) {
            // The hint itself was handed out last time; begin with the address after it.
            Some((i, h)) => advance(set, i, h),
            None => (0, set.ranges()[0].range_start()),
        };
        Walk {
            set,
            idx,
            cur,
            start: cur,
            done: false,
        }
    }
}

impl Iterator for Walk<'_> {
    type Item = (usize, IpAddr);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let out = (self.idx, self.cur);
        let (idx, cur) = advance(self.set, self.idx, self.cur);
        // Ranges do not overlap, so an address identifies the position.
        if cur == self.start {
            self.done = true;
        }
        (self.idx, self.cur) = (idx, cur);
        Some(out)
    }
}

/// The position after `ip` in range `i`: the next address, or the next range's start.
fn advance(set: &RangeSet, i: usize, ip: IpAddr) -> (usize, IpAddr) {
    let ranges = set.ranges();
    match ranges[i].next_after(ip) {
        Some(next) => (i, next),
        None => {
            let j = (i + 1) % ranges.len();
            (j, ranges[j].range_start())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::range::RangeConf;
    use crate::store::mem::MemStore;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn set(ranges: &[(&str, Option<&str>, Option<&str>)]) -> RangeSet {
        let confs: Vec<RangeConf> = ranges
            .iter()
            .map(|(subnet, start, end)| RangeConf {
                subnet: (*subnet).into(),
                range_start: start.map(Into::into),
                range_end: end.map(Into::into),
                gateway: None,
            })
            .collect();
        RangeSet::from_confs(&confs).unwrap()
    }

    fn key(c: &str) -> LeaseKey {
        LeaseKey::new("n", c, "eth0")
    }

    /// Allocate for fresh keys c0, c1, … and return the addresses as text.
    fn alloc_n(store: &MemStore, s: &RangeSet, n: usize, tag: &str) -> Vec<String> {
        let guard = store.lock().unwrap();
        let a = Allocator::new(store, &guard);
        (0..n)
            .map(|i| {
                a.allocate(0, s, &key(&format!("{tag}{i}")), None)
                    .unwrap()
                    .ip
                    .ip()
                    .to_string()
            })
            .collect()
    }

    #[test]
    fn first_allocations_skip_gateway() {
        let store = MemStore::default();
        let s = set(&[("198.18.5.0/24", None, None)]);
        let guard = store.lock().unwrap();
        let a = Allocator::new(&store, &guard);
        let got = a.allocate(0, &s, &key("c0"), None).unwrap();
        assert_eq!(got.ip.to_string(), "198.18.5.2/24");
        assert_eq!(got.gateway, ip("198.18.5.1"));
        assert_eq!(store.last_reserved(0).unwrap(), Some(ip("198.18.5.2")));
        drop(guard);
        assert_eq!(alloc_n(&store, &s, 2, "d"), ["198.18.5.3", "198.18.5.4"]);
    }

    #[test]
    fn round_robin_after_hint_and_wrap() {
        let store = MemStore::default();
        let s = set(&[("198.18.5.0/24", None, None)]);
        store.set_last_reserved(0, ip("198.18.5.252")).unwrap();
        // After .254 comes the start again (.1 is the gateway).
        assert_eq!(
            alloc_n(&store, &s, 4, "c"),
            ["198.18.5.253", "198.18.5.254", "198.18.5.2", "198.18.5.3"]
        );
        // A released address is not reused until the walk comes round to it.
        store.release_ip(ip("198.18.5.253")).unwrap();
        assert_eq!(alloc_n(&store, &s, 1, "d"), ["198.18.5.4"]);
    }

    #[test]
    fn hint_outside_set_starts_at_beginning() {
        let store = MemStore::default();
        let s = set(&[("198.18.5.0/24", Some("198.18.5.10"), None)]);
        store.set_last_reserved(0, ip("198.18.9.9")).unwrap();
        assert_eq!(alloc_n(&store, &s, 1, "c"), ["198.18.5.10"]);
        // A hint in the subnet but before rangeStart is outside the set too.
        store.set_last_reserved(0, ip("198.18.5.3")).unwrap();
        assert_eq!(alloc_n(&store, &s, 1, "d"), ["198.18.5.11"]);
    }

    #[test]
    fn round_robin_across_ranges() {
        let store = MemStore::default();
        let s = set(&[
            ("198.18.6.0/24", Some("198.18.6.252"), None),
            ("198.18.7.0/24", None, Some("198.18.7.3")),
        ]);
        assert_eq!(
            alloc_n(&store, &s, 5, "c"),
            [
                "198.18.6.252",
                "198.18.6.253",
                "198.18.6.254",
                "198.18.7.2",
                "198.18.7.3"
            ]
        );
        let guard = store.lock().unwrap();
        let a = Allocator::new(&store, &guard);
        let err = a.allocate(0, &s, &key("x"), None).unwrap_err();
        assert!(matches!(err, AllocError::RangeSetExhausted { set: 0, .. }));
        assert_eq!(err.kind(), ErrorKind::Exhausted);
        assert_eq!(
            err.to_string(),
            "no IP addresses available in range set 0: \
             198.18.6.252-198.18.6.254,198.18.7.1-198.18.7.3"
        );
        // Free one in the first range: the walk wraps round to it.
        a.release(&key("c1")).unwrap();
        assert_eq!(
            a.allocate(0, &s, &key("y"), None).unwrap().ip.ip(),
            ip("198.18.6.253")
        );
    }

    #[test]
    fn exhaustion_of_small_ranges() {
        // A /30 has one allocatable address: .2 (.1 gateway, .0/.3 network/broadcast).
        let store = MemStore::default();
        let s = set(&[("198.18.5.0/30", None, None)]);
        assert_eq!(alloc_n(&store, &s, 1, "c"), ["198.18.5.2"]);
        let guard = store.lock().unwrap();
        let a = Allocator::new(&store, &guard);
        assert!(matches!(
            a.allocate(0, &s, &key("x"), None),
            Err(AllocError::RangeSetExhausted { .. })
        ));
        drop(guard);

        // rangeStart/rangeEnd spanning the whole /30: still only .2.
        let store = MemStore::default();
        let s = set(&[("198.18.5.0/30", Some("198.18.5.0"), Some("198.18.5.3"))]);
        assert_eq!(alloc_n(&store, &s, 1, "c"), ["198.18.5.2"]);
        let guard = store.lock().unwrap();
        assert!(matches!(
            Allocator::new(&store, &guard).allocate(0, &s, &key("x"), None),
            Err(AllocError::RangeSetExhausted { .. })
        ));
        drop(guard);

        let store = MemStore::default();
        let s = set(&[("198.18.5.0/29", Some("198.18.5.2"), Some("198.18.5.4"))]);
        assert_eq!(
            alloc_n(&store, &s, 3, "c"),
            ["198.18.5.2", "198.18.5.3", "198.18.5.4"]
        );
        let guard = store.lock().unwrap();
        assert!(matches!(
            Allocator::new(&store, &guard).allocate(0, &s, &key("x"), None),
            Err(AllocError::RangeSetExhausted { .. })
        ));
    }

    #[test]
    fn requested_addresses() {
        let store = MemStore::default();
        let s = set(&[("198.18.5.0/24", None, None)]);
        let guard = store.lock().unwrap();
        let a = Allocator::new(&store, &guard);
        let got = a
            .allocate(0, &s, &key("c1"), Some(ip("198.18.5.7")))
            .unwrap();
        assert_eq!(got.ip.to_string(), "198.18.5.7/24");
        // The hint follows requested addresses too, as in the reference.
        assert_eq!(store.last_reserved(0).unwrap(), Some(ip("198.18.5.7")));

        let err = a
            .allocate(0, &s, &key("c2"), Some(ip("198.18.5.7")))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "requested IP address 198.18.5.7 is not available in range set 198.18.5.1-198.18.5.254"
        );
        assert_eq!(err.kind(), ErrorKind::Unavailable);

        for (req, kind) in [
            ("198.18.6.1", "RequestedNotInSet"),
            ("198.18.5.255", "RequestedNotInSet"),
            ("198.18.5.0", "RequestedNotInSet"),
            ("2001:db8::1", "RequestedNotInSet"),
            ("198.18.5.1", "RequestedGateway"),
        ] {
            let err = a.allocate(0, &s, &key("c2"), Some(ip(req))).unwrap_err();
            let got = match err {
                AllocError::RequestedNotInSet { .. } => "RequestedNotInSet",
                AllocError::RequestedGateway { .. } => "RequestedGateway",
                ref e => panic!("{req}: {e}"),
            };
            assert_eq!(got, kind, "{req}");
            assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        }
        // Mapped IPv4 is IPv4.
        let got = a
            .allocate(0, &s, &key("c3"), Some(ip("::ffff:198.18.5.8")))
            .unwrap();
        assert_eq!(got.ip.to_string(), "198.18.5.8/24");

        // Network address explicitly inside the window is still refused.
        let s2 = set(&[("198.18.8.0/30", Some("198.18.8.0"), None)]);
        assert!(matches!(
            a.allocate(1, &s2, &key("c4"), Some(ip("198.18.8.0"))),
            Err(AllocError::RequestedNotAllocatable { .. })
        ));
    }

    #[test]
    fn duplicate_allocation_is_refused() {
        let store = MemStore::default();
        let s = set(&[("198.18.5.0/24", None, None)]);
        let other = set(&[("198.18.6.0/24", None, None)]);
        let guard = store.lock().unwrap();
        let a = Allocator::new(&store, &guard);
        a.allocate(0, &s, &key("c1"), None).unwrap();
        let err = a.allocate(0, &s, &key("c1"), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "198.18.5.2 has been allocated to c1 (eth0), duplicate allocation is not allowed"
        );
        assert!(matches!(
            a.allocate(0, &s, &key("c1"), Some(ip("198.18.5.9"))),
            Err(AllocError::Duplicate { .. })
        ));
        // Another ifname of the same container, or another set, is fine.
        let eth1 = LeaseKey::new("n", "c1", "eth1");
        assert_eq!(
            a.allocate(0, &s, &eth1, None).unwrap().ip.to_string(),
            "198.18.5.3/24"
        );
        a.allocate(1, &other, &key("c1"), None).unwrap();
        assert_eq!(a.release(&key("c1")).unwrap(), 2);
        assert_eq!(a.release(&key("c1")).unwrap(), 0);
    }

    #[test]
    fn big_ipv6_range_is_not_enumerated() {
        use std::cell::Cell;

        /// Counts reserve() calls to bound the walk.
        struct Counting {
            inner: MemStore,
            reserves: Cell<usize>,
        }
        impl Store for Counting {
            fn lock(&self) -> Result<StoreGuard<'_>, StoreError> {
                self.inner.lock()
            }
            fn reserve(&self, key: &LeaseKey, ip: IpAddr) -> Result<bool, StoreError> {
                self.reserves.set(self.reserves.get() + 1);
                self.inner.reserve(key, ip)
            }
            fn release_ip(&self, ip: IpAddr) -> Result<bool, StoreError> {
                self.inner.release_ip(ip)
            }
            fn release_by_key(&self, key: &LeaseKey) -> Result<Vec<IpAddr>, StoreError> {
                self.inner.release_by_key(key)
            }
            fn reserved(&self, ip: IpAddr) -> Result<bool, StoreError> {
                self.inner.reserved(ip)
            }
            fn reserved_ips(&self) -> Result<Vec<IpAddr>, StoreError> {
                self.inner.reserved_ips()
            }
            fn leases(&self) -> Result<Vec<crate::Lease>, StoreError> {
                self.inner.leases()
            }
            fn last_reserved(&self, set: usize) -> Result<Option<IpAddr>, StoreError> {
                self.inner.last_reserved(set)
            }
            fn set_last_reserved(&self, set: usize, ip: IpAddr) -> Result<(), StoreError> {
                self.inner.set_last_reserved(set, ip)
            }
            fn forget_last_reserved(&self) -> Result<(), StoreError> {
                self.inner.forget_last_reserved()
            }
        }

        let store = Counting {
            inner: MemStore::default(),
            reserves: Cell::new(0),
        };
        let s = set(&[("2001:db8::/64", None, None)]);
        // 500 reservations right after the start, and a hint at the very end of the /64.
        for i in 2..502u128 {
            let addr = IpAddr::V6((0x2001_0db8_u128 << 96 | i).into());
            store.inner.reserve(&key(&format!("old{i}")), addr).unwrap();
        }
        store
            .set_last_reserved(0, ip("2001:db8::ffff:ffff:ffff:ffff"))
            .unwrap();
        let guard = store.lock().unwrap();
        let a = Allocator::new(&store, &guard);
        let got = a.allocate(0, &s, &key("new"), None).unwrap();
        assert_eq!(got.ip.to_string(), "2001:db8::1f6/64");
        assert_eq!(got.gateway, ip("2001:db8::1"));
        // Past the first PROBES positions of the walk (tried directly, all taken here),
        // reserved and gateway addresses are skipped without a reserve() attempt.
        assert_eq!(
            store.reserves.get(),
            PROBES - 1 + 1,
            "15 probes (one is the gateway) + 1"
        );
    }

    #[test]
    fn walk_single_address_range() {
        let s = set(&[("198.18.5.0/24", Some("198.18.5.9"), Some("198.18.5.9"))]);
        let all: Vec<_> = Walk::new(&s, None).collect();
        assert_eq!(all, [(0, ip("198.18.5.9"))]);
        let all: Vec<_> = Walk::new(&s, Some(ip("198.18.5.9"))).collect();
        assert_eq!(all, [(0, ip("198.18.5.9"))]);
    }
}
