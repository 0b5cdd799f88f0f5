//! What the host-local plugin calls: one function per CNI verb, each one store transaction
//! under a single `flock`, so the plugin crate stays a thin mapping of args and results.
//!
//! The `*_with` variants take any [`Store`] and an already held guard; the plain functions open
//! the [`DiskStore`] of `config.data_dir` / the key's network.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::ErrorKind;
use crate::allocator::{AllocError, Allocation, Allocator};
use crate::config::IpamConfig;
use crate::disk::DiskStore;
use crate::key::{Lease, LeaseKey};
use crate::range::canonical_ip;
use crate::range_set::RangeSet;
use crate::store::{Store, StoreError, StoreGuard};

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("requested IP address {ip} is in no configured range set")]
    RequestedMatchesNoSet { ip: IpAddr },
    #[error("requested IP addresses {first} and {second} are both in range set {set}")]
    RequestedTwiceInSet {
        set: usize,
        first: IpAddr,
        second: IpAddr,
    },
    #[error("failed to allocate for range set {set}")]
    Allocate {
        set: usize,
        #[source]
        source: AllocError,
    },
    #[error(
        "failed to allocate for range set {set}, and releasing {leaked:?} (reserved earlier in this ADD) failed too"
    )]
    AllocateRollback {
        set: usize,
        leaked: Vec<IpAddr>,
        #[source]
        source: AllocError,
    },
    #[error("release {count} stale reservation(s) during GC")]
    Gc {
        count: usize,
        #[source]
        source: StoreError,
    },
    #[error("{container_id}/{ifname} in network {network} holds {found:?}, expected {expected:?}")]
    CheckMismatch {
        network: String,
        container_id: String,
        ifname: String,
        expected: Vec<IpAddr>,
        found: Vec<IpAddr>,
    },
}

impl IpamError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            IpamError::Store(e) | IpamError::Gc { source: e, .. } => e.kind(),
            IpamError::RequestedMatchesNoSet { .. } | IpamError::RequestedTwiceInSet { .. } => {
                ErrorKind::InvalidConfig
            }
            IpamError::Allocate { source, .. } | IpamError::AllocateRollback { source, .. } => {
                source.kind()
            }
            IpamError::CheckMismatch { .. } => ErrorKind::CheckFailed,
        }
    }
}

/// Why STATUS says the plugin cannot serve ADD now (both map to CNI code 50).
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("IPAM store unusable")]
    StoreUnusable {
        #[source]
        source: StoreError,
    },
    #[error("range set {set} has no free address: {ranges}")]
    Exhausted { set: usize, ranges: String },
}

impl StatusError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            StatusError::StoreUnusable { .. } => ErrorKind::Io,
            StatusError::Exhausted { .. } => ErrorKind::Exhausted,
        }
    }
}

/// ADD: one address from every range set, in order, for `key`.
///
/// Each requested IP must fall in exactly one set (at most one per set). On any failure the
/// addresses reserved by this call are released before returning.
pub fn allocate_all(
    config: &IpamConfig,
    key: &LeaseKey,
    requested: &[IpAddr],
) -> Result<Vec<Allocation>, IpamError> {
    let store = DiskStore::open(&config.data_dir, &key.network)?;
    let guard = store.lock()?;
    allocate_all_with(&store, &guard, &config.range_sets, key, requested)
}

/// [`allocate_all`] over any store whose lock the caller holds.
pub fn allocate_all_with<S: Store>(
    store: &S,
    guard: &StoreGuard<'_>,
    range_sets: &[RangeSet],
    key: &LeaseKey,
    requested: &[IpAddr],
) -> Result<Vec<Allocation>, IpamError> {
    // Assign requests to sets before reserving anything. (The reference allocates first and
    // fails afterwards for an unmatched request, advancing the hint for nothing.)
    let mut per_set: Vec<Option<IpAddr>> = vec![None; range_sets.len()];
    for &ip in requested {
        let ip = canonical_ip(ip);
        let Some(set) = range_sets.iter().position(|s| s.contains(ip)) else {
            return Err(IpamError::RequestedMatchesNoSet { ip });
        };
        match per_set[set] {
            None => per_set[set] = Some(ip),
            Some(first) if first == ip => {}
            Some(first) => {
                return Err(IpamError::RequestedTwiceInSet {
                    set,
                    first,
                    second: ip,
                });
            }
        }
    }

    let allocator = Allocator::new(store, guard);
    let mut done: Vec<Allocation> = Vec::with_capacity(range_sets.len());
    for (set, (range_set, req)) in range_sets.iter().zip(per_set).enumerate() {
        match allocator.allocate(set, range_set, key, req) {
            Ok(a) => done.push(a),
            Err(source) => {
                // Release by address, not by key: only what this call reserved goes.
                let leaked: Vec<IpAddr> = done
                    .iter()
                    .map(|a| a.ip.ip())
                    .filter(|ip| store.release_ip(*ip).is_err())
                    .collect();
                return Err(if leaked.is_empty() {
                    IpamError::Allocate { set, source }
                } else {
                    IpamError::AllocateRollback {
                        set,
                        leaked,
                        source,
                    }
                });
            }
        }
    }
    Ok(done)
}

/// DEL: release everything `key` holds. Idempotent: nothing held, or no state directory at
/// all, is success. Returns the released addresses.
///
/// When this leaves the network without any reservation, the round-robin hints go too (see
/// `forget_hints_if_empty` for why), so a DEL of everything leaves only the `lock` file.
pub fn release(config: &IpamConfig, key: &LeaseKey) -> Result<Vec<IpAddr>, IpamError> {
    let Some(store) = DiskStore::open_existing(&config.data_dir, &key.network)? else {
        return Ok(Vec::new());
    };
    let guard = store.lock()?;
    release_with(&store, &guard, key)
}

/// [`release`] over any store whose lock the caller holds.
pub fn release_with<S: Store>(
    store: &S,
    guard: &StoreGuard<'_>,
    key: &LeaseKey,
) -> Result<Vec<IpAddr>, IpamError> {
    let released = store.release_by_key(key)?;
    forget_hints_if_empty(store, guard)?;
    Ok(released)
}

/// Removes the `last_reserved_ip.*` hints once the store holds no reservation at all.
///
/// Why: a network whose containers are all gone should leave no state but its `lock` file, so
/// "DEL of everything cleans up" can be checked (and a leftover hint is not mistaken for a
/// leak). Why only then: while any reservation remains, the hint is what makes round-robin
/// move on instead of handing a just-released address straight back out, whose old holder may
/// still be in peers' ARP/neighbour caches and conntrack. With nothing reserved the next ADD
/// starts at `rangeStart` again, as on a fresh node; that may reuse the last released address,
/// the price of an empty directory. A missing hint means "start at `rangeStart`" to the
/// reference too, so both implementations still share the directory.
///
/// Runs under the caller's lock (`_guard`), so no ADD can reserve between the check and the
/// removal.
fn forget_hints_if_empty<S: Store>(store: &S, _guard: &StoreGuard<'_>) -> Result<(), StoreError> {
    if store.is_empty()? {
        store.forget_last_reserved()?;
    }
    Ok(())
}

/// GC: release every reservation of `network` whose holder is not in `valid`
/// (`(container id, ifname)` pairs). Old-format reservations (no ifname) stay when their
/// container id is valid. Returns the released leases. Like [`release`], drops the hints when
/// nothing is left reserved.
pub fn gc(
    config: &IpamConfig,
    network: &str,
    valid: &[(String, String)],
) -> Result<Vec<Lease>, IpamError> {
    let Some(store) = DiskStore::open_existing(&config.data_dir, network)? else {
        return Ok(Vec::new());
    };
    let guard = store.lock()?;
    gc_with(&store, &guard, valid)
}

/// [`gc`] over any store whose lock the caller holds. Keeps going after a failed removal and
/// reports the first failure with the count.
pub fn gc_with<S: Store>(
    store: &S,
    guard: &StoreGuard<'_>,
    valid: &[(String, String)],
) -> Result<Vec<Lease>, IpamError> {
    let is_valid = |l: &Lease| {
        valid
            .iter()
            .any(|(id, ifname)| l.is_exactly(id, ifname) || l.is_legacy_of(id))
    };
    let mut released = Vec::new();
    let mut failed: Option<(usize, StoreError)> = None;
    for lease in store.leases()? {
        if is_valid(&lease) {
            continue;
        }
        match store.release_ip(lease.ip) {
            Ok(_) => released.push(lease),
            Err(e) => {
                let (count, _) = failed.get_or_insert((0, e));
                *count += 1;
            }
        }
    }
    match failed {
        Some((count, source)) => Err(IpamError::Gc { count, source }),
        None => {
            forget_hints_if_empty(store, guard)?;
            Ok(released)
        }
    }
}

/// The addresses `key` holds (empty when the network has no state yet).
pub fn held(config: &IpamConfig, key: &LeaseKey) -> Result<Vec<IpAddr>, IpamError> {
    match DiskStore::open_existing(&config.data_dir, &key.network)? {
        Some(store) => {
            let _guard = store.lock()?;
            Ok(store.get_by_key(key)?)
        }
        None => Ok(Vec::new()),
    }
}

/// CHECK: the store holds exactly `expected` for `key` (order does not matter).
pub fn check(config: &IpamConfig, key: &LeaseKey, expected: &[IpAddr]) -> Result<(), IpamError> {
    let found: BTreeSet<IpAddr> = held(config, key)?.into_iter().collect();
    let expected: BTreeSet<IpAddr> = expected.iter().copied().map(canonical_ip).collect();
    if found == expected {
        return Ok(());
    }
    Err(IpamError::CheckMismatch {
        network: key.network.clone(),
        container_id: key.container_id.clone(),
        ifname: key.ifname.clone(),
        expected: expected.into_iter().collect(),
        found: found.into_iter().collect(),
    })
}

/// STATUS: the store is usable (directory creatable and writable, lock obtainable) and every
/// range set has at least one free address.
pub fn status(config: &IpamConfig, network: &str) -> Result<(), StatusError> {
    let unusable = |source| StatusError::StoreUnusable { source };
    let store = DiskStore::open(&config.data_dir, network).map_err(unusable)?;
    let guard = store.lock().map_err(unusable)?;
    store.check_writable().map_err(unusable)?;
    status_with(&store, &guard, &config.range_sets)
}

/// Exhaustion part of [`status`], over any store whose lock the caller holds.
pub fn status_with<S: Store>(
    store: &S,
    _guard: &StoreGuard<'_>,
    range_sets: &[RangeSet],
) -> Result<(), StatusError> {
    let reserved = store
        .reserved_ips()
        .map_err(|source| StatusError::StoreUnusable { source })?;
    for (set, range_set) in range_sets.iter().enumerate() {
        let taken = reserved
            .iter()
            .filter(|ip| range_set.is_allocatable(**ip))
            .count();
        if taken as u128 >= range_set.capacity() {
            return Err(StatusError::Exhausted {
                set,
                ranges: range_set.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fs;
    use std::path::Path;

    use super::*;
    use crate::config::HostLocalConf;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn config(dir: &Path, ipam: &str) -> IpamConfig {
        let mut conf: HostLocalConf = serde_json::from_str(ipam).unwrap();
        conf.data_dir = Some(dir.to_owned());
        conf.validate().unwrap()
    }

    fn names(dir: &Path) -> BTreeSet<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    const DUAL: &str = r#"{"ranges":[[{"subnet":"198.18.5.0/30"}],[{"subnet":"2001:db8::/64"}]]}"#;

    #[test]
    fn allocate_release_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(tmp.path(), DUAL);
        let key = LeaseKey::new("net", "c1", "eth0");
        // DEL before anything exists: success, and no state is created.
        assert!(release(&cfg, &key).unwrap().is_empty());
        assert!(!tmp.path().join("net").exists());

        let got = allocate_all(&cfg, &key, &[]).unwrap();
        let text: Vec<String> = got.iter().map(|a| a.ip.to_string()).collect();
        assert_eq!(text, ["198.18.5.2/30", "2001:db8::2/64"]);
        check(&cfg, &key, &[ip("2001:db8::2"), ip("198.18.5.2")]).unwrap();
        let err = check(&cfg, &key, &[ip("198.18.5.2")]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CheckFailed);

        assert_eq!(release(&cfg, &key).unwrap().len(), 2);
        assert!(release(&cfg, &key).unwrap().is_empty());
        check(&cfg, &key, &[]).unwrap();
        // Nothing reserved any more: the hints went with the last reservation.
        assert_eq!(names(&tmp.path().join("net")), ["lock".to_owned()].into());
    }

    #[test]
    fn hints_stay_while_anything_is_reserved() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(tmp.path(), r#"{"subnet":"198.18.5.0/24"}"#);
        let dir = tmp.path().join("net");
        let add = |c: &str| {
            allocate_all(&cfg, &LeaseKey::new("net", c, "eth0"), &[]).unwrap()[0]
                .ip
                .ip()
                .to_string()
        };
        let del = |c: &str| release(&cfg, &LeaseKey::new("net", c, "eth0")).unwrap();
        assert_eq!([add("c1"), add("c2")], ["198.18.5.2", "198.18.5.3"]);
        // c2 still holds .3: the hint stays, and round-robin does not reuse .2 at once.
        assert_eq!(del("c1"), [ip("198.18.5.2")]);
        assert_eq!(
            fs::read_to_string(dir.join("last_reserved_ip.0")).unwrap(),
            "198.18.5.3"
        );
        assert_eq!(add("c3"), "198.18.5.4");
        del("c2");
        assert!(dir.join("last_reserved_ip.0").exists());
        // A DEL of something not held, with c3 still there, keeps the hint too.
        assert!(del("nobody").is_empty());
        assert!(dir.join("last_reserved_ip.0").exists());
        del("c3");
        assert_eq!(names(&dir), ["lock".to_owned()].into());
        // Without a hint the walk starts at rangeStart again, as on a fresh node.
        assert_eq!(add("c4"), "198.18.5.2");

        // Hints of sets the current config no longer has, and a crash's tmp file, go too;
        // files that are neither hints nor reservations stay.
        fs::write(dir.join("last_reserved_ip.7"), "198.18.9.9").unwrap();
        fs::write(dir.join(".last_reserved_ip.0.tmp"), "198.18.").unwrap();
        fs::write(dir.join("README"), "not ours").unwrap();
        del("c4");
        assert_eq!(names(&dir), ["README", "lock"].map(String::from).into());
    }

    #[test]
    fn failure_rolls_back_earlier_sets() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(tmp.path(), DUAL);
        // Same sets, v6 first: set 0 (v6) succeeds, then set 1 (the /30) is exhausted.
        let cfg_rev = IpamConfig {
            range_sets: cfg.range_sets.iter().rev().cloned().collect(),
            ..cfg.clone()
        };
        allocate_all(&cfg, &LeaseKey::new("net", "c0", "eth0"), &[]).unwrap();
        let dir = tmp.path().join("net");
        assert!(dir.join("2001:db8::2").exists());
        let err = allocate_all(&cfg_rev, &LeaseKey::new("net", "c1", "eth0"), &[]).unwrap_err();
        assert!(
            matches!(
                err,
                IpamError::Allocate {
                    set: 1,
                    source: AllocError::RangeSetExhausted { set: 1, .. }
                }
            ),
            "{err:?}"
        );
        assert_eq!(err.kind(), ErrorKind::Exhausted);
        // 2001:db8::3 was reserved for set 0 and released again; c0's addresses stay.
        assert!(!dir.join("2001:db8::3").exists());
        assert_eq!(
            names(&dir),
            [
                "198.18.5.2",
                "2001:db8::2",
                "last_reserved_ip.0",
                "last_reserved_ip.1",
                "lock"
            ]
            .map(String::from)
            .into()
        );
    }

    #[test]
    fn requested_ips() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(
            tmp.path(),
            r#"{"ranges":[[{"subnet":"198.18.5.0/24"}],[{"subnet":"2001:db8::/64"}]]}"#,
        );
        let key = LeaseKey::new("net", "c1", "eth0");
        let err = allocate_all(&cfg, &key, &[ip("198.18.7.1")]).unwrap_err();
        assert!(matches!(err, IpamError::RequestedMatchesNoSet { .. }));
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        let err = allocate_all(&cfg, &key, &[ip("2001:db8::5"), ip("2001:db8::6")]).unwrap_err();
        assert!(matches!(err, IpamError::RequestedTwiceInSet { set: 1, .. }));
        assert!(!tmp.path().join("net").join("2001:db8::5").exists());

        let got = allocate_all(&cfg, &key, &[ip("2001:db8::5")]).unwrap();
        assert_eq!(got[1].ip.to_string(), "2001:db8::5/64");
        let other = LeaseKey::new("net", "c2", "eth0");
        let err = allocate_all(&cfg, &other, &[ip("2001:db8::5")]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable);
        // c2's v4 reservation from set 0 was rolled back.
        check(&cfg, &other, &[]).unwrap();
        // Duplicate ADD for the same key.
        let err = allocate_all(&cfg, &key, &[]).unwrap_err();
        assert!(matches!(
            err,
            IpamError::Allocate {
                source: AllocError::Duplicate { .. },
                ..
            }
        ));
        check(&cfg, &key, &[ip("198.18.5.2"), ip("2001:db8::5")]).unwrap();
    }

    #[test]
    fn gc_releases_unknown_holders() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(tmp.path(), r#"{"subnet":"198.18.5.0/24"}"#);
        for (c, i) in [
            ("c1", "eth0"),
            ("c1", "eth1"),
            ("c2", "eth0"),
            ("c3", "eth0"),
        ] {
            allocate_all(&cfg, &LeaseKey::new("net", c, i), &[]).unwrap();
        }
        // Old-format file of c4 and of c9.
        let dir = tmp.path().join("net");
        fs::write(dir.join("198.18.5.100"), "c4").unwrap();
        fs::write(dir.join("198.18.5.101"), "c9").unwrap();
        let valid = [
            ("c1".to_owned(), "eth0".to_owned()),
            ("c4".into(), "eth0".into()),
        ];
        let mut gone: Vec<String> = gc(&cfg, "net", &valid)
            .unwrap()
            .into_iter()
            .map(|l| format!("{} {} {:?}", l.ip, l.container_id, l.ifname))
            .collect();
        gone.sort();
        assert_eq!(
            gone,
            [
                "198.18.5.101 c9 None",
                "198.18.5.3 c1 Some(\"eth1\")",
                "198.18.5.4 c2 Some(\"eth0\")",
                "198.18.5.5 c3 Some(\"eth0\")",
            ]
        );
        assert!(dir.join("198.18.5.2").exists() && dir.join("198.18.5.100").exists());
        // Reservations remain: the hint stays.
        assert!(dir.join("last_reserved_ip.0").exists());
        assert!(gc(&cfg, "other-net", &valid).unwrap().is_empty());
        assert!(!tmp.path().join("other-net").exists());
        // Nothing valid any more: everything goes, the hint with it.
        assert_eq!(gc(&cfg, "net", &[]).unwrap().len(), 2);
        assert_eq!(names(&dir), ["lock".to_owned()].into());
    }

    #[test]
    fn status_reports_exhaustion_and_unusable_store() {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = config(tmp.path(), DUAL);
        status(&cfg, "net").unwrap();
        allocate_all(&cfg, &LeaseKey::new("net", "c1", "eth0"), &[]).unwrap();
        let err = status(&cfg, "net").unwrap_err();
        assert!(
            matches!(err, StatusError::Exhausted { set: 0, .. }),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "range set 0 has no free address: 198.18.5.1-198.18.5.2"
        );
        assert_eq!(err.kind(), ErrorKind::Exhausted);

        // A data dir that is a regular file cannot hold state.
        let file = tmp.path().join("file");
        fs::write(&file, "").unwrap();
        let bad = IpamConfig {
            data_dir: file,
            ..cfg
        };
        let err = status(&bad, "net").unwrap_err();
        assert!(matches!(err, StatusError::StoreUnusable { .. }), "{err}");
        assert_eq!(err.kind(), ErrorKind::Io);
    }

    #[test]
    fn with_variants_work_on_memory_store() {
        use crate::store::mem::MemStore;
        let store = MemStore::default();
        let cfg = config(Path::new("/unused"), DUAL);
        let guard = store.lock().unwrap();
        let key = LeaseKey::new("net", "c1", "eth0");
        allocate_all_with(&store, &guard, &cfg.range_sets, &key, &[]).unwrap();
        assert!(status_with(&store, &guard, &cfg.range_sets).is_err());
        assert_eq!(gc_with(&store, &guard, &[]).unwrap().len(), 2);
        assert!(store.last.borrow().is_empty());
        status_with(&store, &guard, &cfg.range_sets).unwrap();

        let other = LeaseKey::new("net", "c2", "eth0");
        allocate_all_with(&store, &guard, &cfg.range_sets, &key, &[]).unwrap();
        allocate_all_with(&store, &guard, &cfg.range_sets[1..], &other, &[]).unwrap();
        assert_eq!(release_with(&store, &guard, &key).unwrap().len(), 2);
        assert_eq!(store.last.borrow().len(), 2, "c2 still holds an address");
        assert_eq!(release_with(&store, &guard, &other).unwrap().len(), 1);
        assert!(store.last.borrow().is_empty());
    }
}
